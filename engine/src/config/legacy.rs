//! The importer for Python-era `.envctl` files (KEY=VALUE lines, an optional managed block, `export` prefixes,
//! quotes, launch-env sections). It writes the equivalent TOML, remembering which legacy line each TOML line
//! came from so problems point at the user's own file, and lists every key it could not map as a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::detect;
use super::toml_string;

/// The result of importing a legacy file.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// Equivalent TOML.
    pub toml: String,
    /// For each TOML line, the legacy line number and key it came from (0 and "" for boilerplate).
    pub lines: Vec<(usize, String)>,
    /// Keys and lines that could not be mapped, and choices the importer made.
    pub warnings: Vec<String>,
}

/// Whether `text` is a legacy KEY=VALUE file rather than TOML: it has the managed-block marker, or it has no
/// `[table]` headers and every assignment's key is an upper-case variable name.
pub fn is_legacy(text: &str) -> bool {
    if text.contains(">>> envctl managed startup config >>>") {
        return true;
    }
    let mut assignments = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if line.starts_with('[') {
            return false;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        match line.split_once('=') {
            Some((key, _)) if is_env_name(key.trim()) && !key.ends_with(' ') => assignments += 1,
            _ => return false,
        }
    }
    assignments > 0
}

fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn unquote(value: &str) -> &str {
    let value = value.trim();
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// One `KEY=VALUE` and its line.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    value: String,
}

/// The parsed legacy file.
#[derive(Debug, Default)]
struct Legacy {
    keys: BTreeMap<String, Entry>,
    /// Launch-env section lines, by service name.
    launch_env: BTreeMap<String, Vec<(usize, String, String)>>,
    used: BTreeSet<String>,
    warnings: Vec<String>,
}

impl Legacy {
    fn parse(text: &str) -> Self {
        let mut out = Self::default();
        let mut section: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if let Some(rest) =
                line.strip_prefix("# >>> envctl ").and_then(|r| r.strip_suffix(" launch env >>>"))
            {
                section = Some(rest.rsplit(' ').next().unwrap_or(rest).to_owned());
                continue;
            }
            if line.starts_with("# <<<") {
                section = None;
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                out.warnings.push(format!("line {line_no}: `{line}` is not KEY=VALUE and was skipped"));
                continue;
            };
            let key = key.trim().to_owned();
            match &section {
                Some(service) => {
                    let value = value.split("  #").next().unwrap_or(value);
                    out.launch_env.entry(service.clone()).or_default().push((
                        line_no,
                        key,
                        unquote(value).to_owned(),
                    ));
                }
                None => {
                    out.keys.insert(key, Entry { line: line_no, value: unquote(value).to_owned() });
                }
            }
        }
        out
    }

    fn get(&mut self, key: &str) -> Option<Entry> {
        let entry = self.keys.get(key).cloned()?;
        self.used.insert(key.to_owned());
        Some(entry)
    }

    fn flag(&mut self, keys: &[&str]) -> Option<(bool, Entry)> {
        for key in keys {
            if let Some(entry) = self.get(key) {
                match parse_bool(&entry.value) {
                    Some(b) => return Some((b, entry)),
                    None => self.warnings.push(format!(
                        "line {}: {key}=`{}` is not true or false; ignored",
                        entry.line, entry.value
                    )),
                }
            }
        }
        None
    }
}

/// TOML text plus its line map.
#[derive(Debug, Default)]
struct Writer {
    toml: String,
    lines: Vec<(usize, String)>,
}

impl Writer {
    fn line(&mut self, text: &str, source: Option<(&Entry, &str)>) {
        self.toml.push_str(text);
        self.toml.push('\n');
        self.lines.push(source.map_or((0, String::new()), |(e, k)| (e.line, k.to_owned())));
    }

    fn string(&mut self, key: &str, entry: &Entry, legacy_key: &str) {
        self.line(&format!("{key} = {}", toml_string(&entry.value)), Some((entry, legacy_key)));
    }
}

/// Which targets a pair of MAIN/TREES enable flags leaves on.
fn scope(main: Option<bool>, trees: Option<bool>, default: bool) -> Option<&'static str> {
    match (main.unwrap_or(default), trees.unwrap_or(default)) {
        (true, true) => Some("all"),
        (true, false) => Some("main"),
        (false, true) => Some("trees"),
        (false, false) => None,
    }
}

/// Imports a legacy file; `repo_root` is used to detect commands the file leaves out.
pub fn import(text: &str, repo_root: &Path) -> Imported {
    let mut legacy = Legacy::parse(text);
    let mut w = Writer::default();
    w.line(
        "# Imported from a Python-era .envctl by envctl; run `envctl config migrate` to make this the file.",
        None,
    );
    project(&mut legacy, &mut w);
    let mut service_names = Vec::new();
    for (name, prefix, default_port) in [("backend", "BACKEND", 8000), ("frontend", "FRONTEND", 9000)] {
        if app_service(&mut legacy, &mut w, repo_root, name, prefix, default_port) {
            service_names.push(name.to_owned());
        }
    }
    additional_services(&mut legacy, &mut w, &mut service_names);
    requirements(&mut legacy, &mut w);
    for (key, entry) in &legacy.keys {
        if !legacy.used.contains(key) {
            legacy.warnings.push(format!(
                "line {}: {key} has no equivalent in envctl's TOML config and was not imported",
                entry.line
            ));
        }
    }
    legacy.warnings.sort_by_key(|w| {
        w.split(':').next().and_then(|l| l.trim_start_matches("line ").parse::<usize>().ok())
    });
    Imported { toml: w.toml, lines: w.lines, warnings: legacy.warnings }
}

fn project(legacy: &mut Legacy, w: &mut Writer) {
    let mode = legacy.get("ENVCTL_DEFAULT_MODE");
    let trees = legacy.get("TREES_DIR_NAME");
    if mode.is_none() && trees.is_none() {
        return;
    }
    w.line("", None);
    w.line("[project]", None);
    if let Some(entry) = mode {
        w.string("default_mode", &entry, "ENVCTL_DEFAULT_MODE");
    }
    if let Some(entry) = trees {
        w.string("trees_dir", &entry, "TREES_DIR_NAME");
    }
}

/// `backend` or `frontend`. Returns whether a service was written.
fn app_service(
    legacy: &mut Legacy,
    w: &mut Writer,
    repo_root: &Path,
    name: &str,
    prefix: &str,
    default_port: u16,
) -> bool {
    let main = legacy.flag(&[&format!("MAIN_{prefix}_ENABLE")]).map(|(b, _)| b);
    let trees = legacy.flag(&[&format!("TREES_{prefix}_ENABLE")]).map(|(b, _)| b);
    let explicit = main.is_some() || trees.is_some();
    let command_key = format!("ENVCTL_{prefix}_START_CMD");
    let command = legacy.get(&command_key);
    let dir = legacy.get(&format!("{prefix}_DIR"));
    let port = legacy.get(&format!("{prefix}_PORT_BASE"));
    let test = legacy.get(&format!("ENVCTL_{prefix}_TEST_CMD"));
    let listens =
        legacy.flag(&[&format!("MAIN_{prefix}_EXPECT_LISTENER"), &format!("TREES_{prefix}_EXPECT_LISTENER")]);
    let Some(targets) = scope(main, trees, true) else {
        return false;
    };
    let dir_name = dir.as_ref().map_or_else(|| name.to_owned(), |d| d.value.clone());
    let command_text = match &command {
        Some(entry) => Some((entry.value.clone(), Some(entry.clone()))),
        None => detect::detect_service(&repo_root.join(&dir_name)).map(|found| {
            legacy
                .warnings
                .push(format!("{command_key} is not set; detected `{}` in {dir_name}/", found.command));
            (found.command, None)
        }),
    };
    let Some((command_text, command_entry)) = command_text else {
        if explicit || dir.is_some() || port.is_some() {
            legacy.warnings.push(format!(
                "the {name} is enabled but {command_key} is not set and nothing runnable was found in {dir_name}/; add `[services.{name}] command = \"…\"`"
            ));
        }
        return false;
    };
    w.line("", None);
    w.line(&format!("[services.{name}]"), None);
    let line = format!("command = {}", toml_string(&command_text));
    w.line(&line, command_entry.as_ref().map(|e| (e, command_key.as_str())));
    if let Some(entry) = &dir {
        w.string("cwd", entry, &format!("{prefix}_DIR"));
    } else if repo_root.join(&dir_name).is_dir() {
        w.line(&format!("cwd = {}", toml_string(&dir_name)), None);
    }
    if !matches!(listens, Some((false, _))) {
        match &port {
            Some(entry) => {
                let key = format!("{prefix}_PORT_BASE");
                w.line(&format!("port = {}", port_literal(entry)), Some((entry, &key)));
            }
            None => w.line(&format!("port = {default_port}"), None),
        }
    }
    if let Some(entry) = &test {
        w.string("test", entry, &format!("ENVCTL_{prefix}_TEST_CMD"));
    }
    if targets != "all" {
        w.line(&format!("targets = \"{targets}\""), None);
    }
    launch_env(legacy, w, name);
    true
}

/// A port value as TOML: a number when it is one (range problems are the validator's to report, at this line),
/// otherwise text (reported as the wrong type).
fn port_literal(entry: &Entry) -> String {
    if entry.value.trim().parse::<i64>().is_ok() {
        entry.value.trim().to_owned()
    } else {
        toml_string(&entry.value)
    }
}

/// Launch-env section lines become the service's `env`, with the common `${ENVCTL_SOURCE_*}` inputs translated.
fn launch_env(legacy: &mut Legacy, w: &mut Writer, service: &str) {
    let Some(lines) = legacy.launch_env.remove(service) else {
        return;
    };
    let mut pairs = Vec::new();
    for (line, key, value) in lines {
        let translated = value
            .replace("${ENVCTL_SOURCE_DATABASE_URL}", "{postgres.url}")
            .replace("${ENVCTL_SOURCE_REDIS_URL}", "{redis.url}")
            .replace("${ENVCTL_SOURCE_DB_PORT}", "{postgres.port}")
            .replace("${ENVCTL_SOURCE_REDIS_PORT}", "{redis.port}");
        if translated.contains("${ENVCTL_SOURCE_") {
            legacy.warnings.push(format!(
                "line {line}: {key} uses an ENVCTL_SOURCE input envctl does not provide; kept as written"
            ));
        }
        pairs.push(format!("{key} = {}", toml_string(&translated)));
    }
    if !pairs.is_empty() {
        w.line(&format!("env = {{ {} }}", pairs.join(", ")), None);
    }
}

fn additional_services(legacy: &mut Legacy, w: &mut Writer, names: &mut Vec<String>) {
    let Some(list) = legacy.get("ENVCTL_ADDITIONAL_SERVICES") else {
        return;
    };
    for raw_name in list.value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let name: String = raw_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '_' })
            .collect();
        let suffix: String = raw_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
            .collect();
        let key = |field: &str| format!("ENVCTL_SERVICE_{suffix}_{field}");
        let enabled = legacy.flag(&[&key("ENABLE")]).map(|(b, _)| b);
        let main = legacy.flag(&[&key("MAIN_ENABLE")]).map(|(b, _)| b).or(enabled);
        let trees = legacy.flag(&[&key("TREES_ENABLE")]).map(|(b, _)| b).or(enabled);
        let command = legacy.get(&key("START_CMD"));
        let dir = legacy.get(&key("DIR"));
        let port = legacy.get(&key("PORT_BASE"));
        let depends = legacy.get(&key("DEPENDS_ON"));
        let health = legacy.get(&key("HEALTH_URL"));
        let listens = legacy.flag(&[&key("EXPECT_LISTENER")]);
        let test = legacy.get(&key("TEST_CMD"));
        let Some(targets) = scope(main, trees, true) else {
            continue;
        };
        let Some(command) = command else {
            legacy.warnings.push(format!(
                "line {}: additional service `{raw_name}` has no {}; not imported",
                list.line,
                key("START_CMD")
            ));
            continue;
        };
        w.line("", None);
        w.line(&format!("[services.{name}]"), None);
        w.string("command", &command, &key("START_CMD"));
        if let Some(entry) = &dir {
            w.string("cwd", entry, &key("DIR"));
        }
        let listening = !matches!(listens, Some((false, _)));
        if let (Some(entry), true) = (&port, listening) {
            w.line(&format!("port = {}", port_literal(entry)), Some((entry, &key("PORT_BASE"))));
        }
        if let Some(entry) = &depends {
            let deps: Vec<String> =
                entry.value.split(',').map(|d| toml_string(d.trim())).filter(|d| d != "\"\"").collect();
            w.line(&format!("depends_on = [{}]", deps.join(", ")), Some((entry, &key("DEPENDS_ON"))));
        }
        if let (Some(entry), false) = (&health, listening) {
            legacy.warnings.push(format!(
                "line {}: {} ignored: the service expects no listener",
                entry.line,
                key("HEALTH_URL")
            ));
        }
        if let (Some(entry), true) = (&health, listening) {
            let path = health_path(&entry.value);
            w.line(
                &format!("ready = {{ http = {} }}", toml_string(&path)),
                Some((entry, &key("HEALTH_URL"))),
            );
        }
        if let Some(entry) = &test {
            w.string("test", entry, &key("TEST_CMD"));
        }
        if targets != "all" {
            w.line(&format!("targets = \"{targets}\""), None);
        }
        for unmapped in ["START_ORDER", "CRITICAL", "PUBLIC_URL"] {
            if let Some(entry) = legacy.get(&key(unmapped)) {
                legacy.warnings.push(format!(
                    "line {}: {} is not supported and was not imported",
                    entry.line,
                    key(unmapped)
                ));
            }
        }
        launch_env(legacy, w, &name);
        names.push(name);
    }
}

/// The path part of a health URL (`http://localhost:{port}/health` → `/health`); a bare path stays as it is.
fn health_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = if url.contains("://") { rest.find('/').map_or("/", |i| &rest[i..]) } else { rest };
    if path.starts_with('/') { path.to_owned() } else { format!("/{path}") }
}

fn requirements(legacy: &mut Legacy, w: &mut Writer) {
    let pg_main = legacy.flag(&["MAIN_POSTGRES_ENABLE", "POSTGRES_MAIN_ENABLE"]).map(|(b, _)| b);
    let pg_trees = legacy.flag(&["TREES_POSTGRES_ENABLE"]).map(|(b, _)| b);
    let redis_both = legacy.flag(&["REDIS_ENABLE"]).map(|(b, _)| b);
    let redis_main = legacy.flag(&["MAIN_REDIS_ENABLE", "REDIS_MAIN_ENABLE"]).map(|(b, _)| b).or(redis_both);
    let redis_trees = legacy.flag(&["TREES_REDIS_ENABLE"]).map(|(b, _)| b).or(redis_both);
    let db_port = legacy.get("DB_PORT");
    let redis_port = legacy.get("REDIS_PORT");
    for (name, main, trees, port) in
        [("postgres", pg_main, pg_trees, db_port), ("redis", redis_main, redis_trees, redis_port)]
    {
        let Some(targets) = scope(main, trees, false) else {
            continue;
        };
        w.line("", None);
        w.line(&format!("[requirements.{name}]"), None);
        if let Some(entry) = &port {
            let key = if name == "postgres" { "DB_PORT" } else { "REDIS_PORT" };
            w.line(&format!("port = {}", port_literal(entry)), Some((entry, key)));
        }
        if targets != "all" {
            w.line(&format!("targets = \"{targets}\""), None);
        }
    }
    for (name, keys) in [
        ("supabase", &["MAIN_SUPABASE_ENABLE", "TREES_SUPABASE_ENABLE", "SUPABASE_MAIN_ENABLE"][..]),
        ("n8n", &["MAIN_N8N_ENABLE", "TREES_N8N_ENABLE", "N8N_MAIN_ENABLE", "N8N_ENABLE"][..]),
    ] {
        for key in keys {
            if let Some((true, entry)) = legacy.flag(&[key]) {
                legacy.warnings.push(format!(
                    "line {}: {key}: envctl has no built-in {name}; run it as `[requirements.{name}]` with `command` and `port`",
                    entry.line
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_legacy_files_and_not_toml() {
        assert!(is_legacy("export ENVCTL_DEFAULT_MODE=main\nBACKEND_PORT_BASE=8000\n"));
        assert!(is_legacy("# >>> envctl managed startup config >>>\nX=1\n"));
        assert!(!is_legacy("[project]\nname = \"x\"\n"));
        assert!(!is_legacy("# only a comment\n"));
        assert!(!is_legacy("services.web.command = \"x\"\n"));
    }

    #[test]
    fn health_urls_become_paths() {
        assert_eq!(health_path("http://localhost:{port}/api/health"), "/api/health");
        assert_eq!(health_path("http://localhost:8000"), "/");
        assert_eq!(health_path("healthz"), "/healthz");
    }
}
