//! The `contracts` gate: every artifact in the scope directory (the latest view, each `runs/<run-id>/` copy,
//! `test_results.json`, the last readiness report, the newest `events.jsonl` lines) validates against its JSON
//! Schema embedded in the binary ([`ARTIFACT_SCHEMAS`]), never one looked up in the user's repository. The
//! validation is structural (types, required fields, enums, `$ref`, `anyOf`/`oneOf`), then the artifact must
//! deserialize into its `contracts` type.

use std::path::{Path, PathBuf};

use envctl_contracts::doctor::ARTIFACT_SCHEMAS;
use serde_json::Value;

use super::{Check, Ctx, listing};

/// The newest lines of `events.jsonl` that are checked.
const EVENT_LINES: usize = 200;
/// The deepest a schema is followed.
const MAX_DEPTH: usize = 64;

/// Every artifact validates.
pub fn artifacts(ctx: &Ctx<'_>) -> Check {
    let Some(state) = &ctx.state else { return Check::skip("no repository found") };
    let scope = state.scope_dir();
    let files = artifact_files(scope);
    let mut bad = Vec::new();
    for (stem, path) in &files {
        let Ok(bytes) = std::fs::read(path) else { continue };
        if let Err(why) = validate_file(stem, &bytes) {
            bad.push(format!("{}: {why}", path.display()));
        }
    }
    let events = scope.join("events.jsonl");
    let mut event_count = 0;
    if let Ok(text) = std::fs::read_to_string(&events) {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for (i, line) in lines.iter().enumerate().skip(lines.len().saturating_sub(EVENT_LINES)) {
            event_count += 1;
            if let Err(why) = validate_file("event", line.as_bytes()) {
                bad.push(format!("{}:{}: {why}", events.display(), i + 1));
            }
        }
    }
    if bad.is_empty() {
        return Check::pass(format!(
            "{} artifact(s) and {event_count} event line(s) match their schemas",
            files.len()
        ))
        .with("scope_dir", scope.display());
    }
    let mut found = Check::fail(
        format!("does not match its schema: {}", listing(&bad)),
        "move the file aside (envctl rewrites its artifacts on the next start), or `envctl stop-all` and start again",
    );
    for (i, why) in bad.iter().enumerate() {
        found = found.with(format!("invalid {}", i + 1), why);
    }
    found
}

/// `(schema stem, path)` of every artifact in `scope` and its run copies.
fn artifact_files(scope: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut dirs = vec![scope.to_path_buf()];
    if let Ok(runs) = std::fs::read_dir(scope.join("runs")) {
        let mut runs: Vec<PathBuf> = runs.filter_map(Result::ok).map(|e| e.path()).collect();
        runs.sort();
        dirs.extend(runs);
    }
    let mut out = Vec::new();
    for dir in dirs {
        for (stem, _) in ARTIFACT_SCHEMAS.iter().filter(|(s, _)| !matches!(*s, "event" | "port_lease")) {
            let path = dir.join(format!("{stem}.json"));
            if path.is_file() {
                out.push((*stem, path));
            }
        }
    }
    out
}

/// Validates one artifact's bytes against the schema `stem` and its type.
pub fn validate_file(stem: &str, bytes: &[u8]) -> Result<(), String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    let schema =
        ARTIFACT_SCHEMAS.iter().find(|(s, _)| *s == stem).map(|(_, text)| *text).ok_or("no schema")?;
    let schema: Value =
        serde_json::from_str(schema).map_err(|e| format!("embedded schema unreadable ({e})"))?;
    let mut errors = Vec::new();
    validate(&value, &schema, &schema, "$", 0, &mut errors);
    if let Some(first) = errors.first() {
        return Err(first.clone());
    }
    deserializes(stem, value)
}

/// The value deserializes into its `contracts` type with a known `schema_version`.
fn deserializes(stem: &str, value: Value) -> Result<(), String> {
    use envctl_contracts::{bundle, doctor, jobs, ports, state};
    if let Some(v) = value.get("schema_version").and_then(Value::as_u64)
        && v > u64::from(envctl_contracts::SCHEMA_VERSION)
    {
        return Err(format!(
            "schema_version {v} is newer than this envctl's {}",
            envctl_contracts::SCHEMA_VERSION
        ));
    }
    let result = match stem {
        "run_state" => serde_json::from_value::<state::RunState>(value).map(drop),
        "runtime_map" => serde_json::from_value::<state::RuntimeMap>(value).map(drop),
        "ports_manifest" => serde_json::from_value::<ports::PortsManifest>(value).map(drop),
        "error_report" => serde_json::from_value::<state::ErrorReport>(value).map(drop),
        "test_results" => serde_json::from_value::<jobs::TestResults>(value).map(drop),
        "event" => serde_json::from_value::<state::Event>(value).map(drop),
        "port_lease" => serde_json::from_value::<ports::PortLease>(value).map(drop),
        "runtime_readiness_report" => serde_json::from_value::<doctor::ReadinessReport>(value).map(drop),
        "config_report" => serde_json::from_value::<envctl_contracts::config::ConfigReport>(value).map(drop),
        "bundle_manifest" => serde_json::from_value::<bundle::BundleManifest>(value).map(drop),
        "bundle_facts" => serde_json::from_value::<bundle::BundleFacts>(value).map(drop),
        "bundle_job" => serde_json::from_value::<bundle::BundleJob>(value).map(drop),
        "debug_report" => serde_json::from_value::<bundle::DebugReport>(value).map(drop),
        "job_server" => serde_json::from_value::<jobs::JobServer>(value).map(drop),
        _ => Ok(()),
    };
    result.map_err(|e| e.to_string())
}

/// Collects what in `value` (at `at`) breaks `schema` (resolving `$ref`s in `root`).
fn validate(value: &Value, schema: &Value, root: &Value, at: &str, depth: usize, errors: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = reference.strip_prefix('#').and_then(|p| root.pointer(p));
        if let Some(target) = target {
            validate(value, target, root, at, depth + 1, errors);
        }
        return;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            let fits = branches.iter().any(|b| {
                let mut inner = Vec::new();
                validate(value, b, root, at, depth + 1, &mut inner);
                inner.is_empty()
            });
            if !fits {
                errors.push(format!("{at}: matches none of the allowed shapes"));
            }
            return;
        }
    }
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !allowed.is_empty() && !allowed.iter().any(|t| is_type(value, t)) {
            errors.push(format!("{at}: expected {}, found {}", allowed.join(" or "), type_of(value)));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of the allowed values"));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        errors.push(format!("{at}: expected {constant}"));
    }
    if let Value::Object(fields) = value {
        for name in
            schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                errors.push(format!("{at}: missing required field `{name}`"));
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in properties {
                if let Some(field) = fields.get(name) {
                    validate(field, sub, root, &format!("{at}.{name}"), depth + 1, errors);
                }
            }
        }
    }
    if let (Value::Array(items), Some(sub)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(item, sub, root, &format!("{at}[{i}]"), depth + 1, errors);
        }
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_type_and_a_missing_field_are_named_with_where_they_are() {
        let ok = r#"{"schema_version":1,"run_id":"r","generated_at":"t","errors":[]}"#;
        assert_eq!(validate_file("error_report", ok.as_bytes()), Ok(()));
        let wrong = r#"{"schema_version":"1","run_id":"r","generated_at":"t","errors":[]}"#;
        let why = validate_file("error_report", wrong.as_bytes()).expect_err("a string version");
        assert!(why.contains("$.schema_version: expected integer, found string"), "{why}");
        let missing = r#"{"schema_version":1,"generated_at":"t","errors":[{"kind":"x"}]}"#;
        let why = validate_file("error_report", missing.as_bytes()).expect_err("no run_id");
        assert!(why.contains("missing required field `run_id`"), "{why}");
        assert!(validate_file("run_state", b"{\"schema_version\": 1, \"run_").is_err());
    }
}
