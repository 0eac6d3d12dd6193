//! Configuration: finding `.envctl` (a linked worktree uses its main repository's), reading it (TOML, or a
//! Python-era KEY=VALUE file through the [`legacy`] importer), layering `ENVCTL_*` variables and `--set` flags
//! over it, and validating the result into [`Settings`], the only form the rest of the engine sees.
//!
//! Precedence, highest first: `--set KEY=VALUE` > `ENVCTL_*` variables > the file > defaults.

pub mod command_line;
pub mod detect;
pub mod dotenv;
pub mod edit;
mod env_vars;
mod error;
mod layers;
pub mod legacy;
mod load;
mod paths;
mod raw;
pub mod template;
mod validate;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envctl_contracts::config::{Config, ConfigFormat, ConfigReport, ConfigValue};

pub use env_vars::{ENV_VARS, EnvVarSpec, EnvVars, ValueKind, reference_table};
pub use error::{ConfigError, Problem};
pub use layers::{Layer, Origin};
pub use paths::{Paths, join_subdir, scope_id};
pub(crate) use validate::valid_env_key;
pub use validate::valid_name;

/// Where to look and what to override.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Directory to start the repository search from (the working directory, or `--repo`).
    pub start_dir: PathBuf,
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--set KEY=VALUE` flags, in order.
    pub sets: Vec<String>,
}

/// The resolved configuration plus everything known about where it came from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration.
    pub config: Config,
    /// Resolved locations.
    pub paths: Paths,
    /// What kind of file was read.
    pub format: ConfigFormat,
    /// Dotted key → source label for every key a layer set.
    pub provenance: BTreeMap<String, String>,
    /// Problems that did not stop loading.
    pub warnings: Vec<String>,
    /// [`Settings::digest`] of what was read (empty for a configuration resolved elsewhere).
    pub digest: String,
}

const HINT: &str = "fix the values above, then check with `envctl show-config`";

impl Settings {
    /// Finds the repository and loads its configuration with every override applied.
    pub fn load(options: &LoadOptions, env: &EnvVars) -> Result<Self, ConfigError> {
        let paths = Paths::discover(&options.start_dir, options.config_file.as_deref(), env)?;
        let mut layers = Vec::new();
        let mut warnings = Vec::new();
        let mut digest = None;
        let format = match &paths.config_file {
            None => ConfigFormat::None,
            Some(file) => {
                let text = read_config_text(file)?;
                digest = Some(digest_of(&paths, Some(text.as_bytes()), options, env));
                if legacy::is_legacy(&text) {
                    let imported = legacy::import(&text, &paths.repo_root);
                    warnings.extend(imported.warnings.iter().map(|w| format!("{}: {w}", file.display())));
                    layers.push(Layer {
                        origin: Origin::Legacy { path: file.clone(), lines: imported.lines },
                        text: imported.toml,
                    });
                    ConfigFormat::Legacy
                } else {
                    layers.push(Layer { origin: Origin::File(file.clone()), text });
                    ConfigFormat::Toml
                }
            }
        };
        for (spec, value) in env.overrides() {
            let key = spec.config_key.unwrap_or_default();
            let literal = match spec.kind {
                ValueKind::Integer if value.trim().parse::<i64>().is_ok() => value.trim().to_owned(),
                _ => toml_string(value),
            };
            layers.push(Layer { origin: Origin::Env(spec.name), text: format!("{key} = {literal}") });
        }
        for set in &options.sets {
            layers.push(Layer { origin: Origin::Cli(set.clone()), text: set_to_toml(set)? });
        }
        let repo_name = paths
            .repo_root
            .file_name()
            .map_or_else(|| "repo".to_owned(), |n| n.to_string_lossy().into_owned());
        let loaded = load::load(&layers, &repo_name, HINT)?;
        let digest = digest.unwrap_or_else(|| digest_of(&paths, None, options, env));
        let mut settings =
            Self { config: loaded.config, paths, format, provenance: loaded.provenance, warnings, digest };
        if settings.config.jobs.redis_url.is_none()
            && let Some(url) = env.get("REDIS_URL")
        {
            settings.config.jobs.redis_url = Some(url.to_owned());
            settings.provenance.insert("jobs.redis_url".into(), "env:REDIS_URL".into());
        }
        Ok(settings)
    }

    /// A digest of everything [`Self::load`] reads (the paths it finds, the file's bytes, the overriding variables
    /// and `--set` flags, `REDIS_URL`) and of this envctl's version: two loads with the same digest give the same
    /// settings, so a host holding the configuration of one needs no copy for the next. Costs a read of the file
    /// (refused as [`Self::load`] refuses it) and a hash of its bytes, not a parse.
    pub fn digest(options: &LoadOptions, env: &EnvVars) -> Result<String, ConfigError> {
        let paths = Paths::discover(&options.start_dir, options.config_file.as_deref(), env)?;
        let text = paths.config_file.as_deref().map(read_config_text).transpose()?;
        Ok(digest_of(&paths, text.as_ref().map(String::as_bytes), options, env))
    }

    /// Settings for a configuration resolved elsewhere (the host gets the asking CLI's with each request):
    /// where each value came from stayed with the CLI.
    pub fn resolved(config: Config, paths: Paths) -> Self {
        Self {
            config,
            paths,
            format: ConfigFormat::Toml,
            provenance: BTreeMap::new(),
            warnings: Vec::new(),
            digest: String::new(),
        }
    }

    /// The `show-config` report: the resolved config and the source of every effective value.
    pub fn report(&self) -> ConfigReport {
        let view = self.report_view();
        ConfigReport {
            schema_version: view.schema_version,
            repo_root: view.repo_root,
            config_file: view.config_file,
            format: view.format,
            config: view.config.clone(),
            values: view.values.to_vec(),
            warnings: view.warnings.to_vec(),
        }
    }

    /// [`Self::report`] borrowing the config rather than copying it, for printing: it serializes to the same JSON.
    pub fn report_view(&self) -> ConfigReportView<'_> {
        ConfigReportView {
            schema_version: envctl_contracts::SCHEMA_VERSION,
            repo_root: self.paths.repo_root.display().to_string(),
            config_file: self.paths.config_file.as_ref().map(|f| f.display().to_string()),
            format: self.format,
            config: &self.config,
            values: ConfigValues {
                tree: match serde_json::to_value(&self.config) {
                    Ok(serde_json::Value::Object(root)) => root,
                    _ => serde_json::Map::new(),
                },
                sources: Sources::new(&self.provenance),
            },
            warnings: &self.warnings,
        }
    }
}

/// [`Settings::digest`] of what was read.
fn digest_of(paths: &Paths, text: Option<&[u8]>, options: &LoadOptions, env: &EnvVars) -> String {
    use std::hash::{Hash as _, Hasher as _};
    // Two independent 64-bit hashes: a 128-bit digest.
    let mut halves = [std::hash::DefaultHasher::new(), std::hash::DefaultHasher::new()];
    for (seed, hasher) in halves.iter_mut().enumerate() {
        seed.hash(hasher);
        env!("CARGO_PKG_VERSION").hash(hasher);
        format!("{paths:?}").hash(hasher);
        text.hash(hasher);
        for (spec, value) in env.overrides() {
            (spec.name, value).hash(hasher);
        }
        options.sets.hash(hasher);
        env.get("REDIS_URL").hash(hasher);
    }
    format!("{:016x}{:016x}", halves[0].finish(), halves[1].finish())
}

/// [`ConfigReport`] with the config and warnings borrowed: the same fields in the same order (see
/// [`ConfigReport`] for what each holds).
#[derive(Debug, serde::Serialize)]
pub struct ConfigReportView<'a> {
    pub schema_version: u32,
    pub repo_root: String,
    pub config_file: Option<String>,
    pub format: ConfigFormat,
    pub config: &'a Config,
    pub values: ConfigValues<'a>,
    pub warnings: &'a [String],
}

/// Every effective leaf value with its file spelling and source, found as it is visited: printing a config of
/// many services writes each entry straight from the resolved tree, without a key, a source and a value copied
/// into a list first.
#[derive(Debug)]
pub struct ConfigValues<'a> {
    /// The resolved config as JSON, one entry per section.
    tree: serde_json::Map<String, serde_json::Value>,
    sources: Sources<'a>,
}

impl ConfigValues<'_> {
    /// Calls `visit` with each leaf's file key, value and source, in the report's order; stops at its first error.
    pub fn try_for_each<E>(
        &self,
        mut visit: impl FnMut(&str, &serde_json::Value, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut path = String::with_capacity(64);
        for (section, body) in &self.tree {
            path.clear();
            path.push_str(section);
            self.walk(&mut path, body, 1, leaf_depth(section), &mut visit)?;
        }
        Ok(())
    }

    /// The leaves as owned values (the report a bundle keeps).
    pub fn to_vec(&self) -> Vec<ConfigValue> {
        let mut values = Vec::new();
        let _ = self.try_for_each(|key, value, source| {
            values.push(ConfigValue { key: key.to_owned(), value: value.clone(), source: source.to_owned() });
            Ok::<(), std::convert::Infallible>(())
        });
        values
    }

    /// Descends one level of the tree, growing `path` and cutting it back, down to the section's leaf depth.
    fn walk<E>(
        &self,
        path: &mut String,
        value: &serde_json::Value,
        here: usize,
        depth: usize,
        visit: &mut impl FnMut(&str, &serde_json::Value, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        let depth = if path == "jobs.types" { 4 } else { depth };
        match value {
            serde_json::Value::Object(map) if here < depth => {
                let len = path.len();
                for (key, inner) in map {
                    path.push('.');
                    path.push_str(key);
                    self.walk(path, inner, here + 1, depth, visit)?;
                    path.truncate(len);
                }
                Ok(())
            }
            value => {
                let (key, value) = file_spelling(path, value);
                visit(key, &value, self.sources.of(path))
            }
        }
    }
}

impl serde::Serialize for ConfigValues<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;

        /// One entry as [`ConfigValue`] prints it, borrowed.
        #[derive(serde::Serialize)]
        struct Entry<'e> {
            key: &'e str,
            value: &'e serde_json::Value,
            source: &'e str,
        }

        let mut seq = serializer.serialize_seq(None)?;
        self.try_for_each(|key, value, source| seq.serialize_element(&Entry { key, value, source }))?;
        seq.end()
    }
}

/// Reads a config file, naming it in any error; bytes that are not UTF-8 are reported at their line and column.
pub fn read_config_text(file: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(file).map_err(|e| {
        ConfigError::single(
            file.display().to_string(),
            &format!("cannot read the config file: {e}"),
            "check the file's permissions and encoding (UTF-8)",
        )
    })?;
    String::from_utf8(bytes).map_err(|e| invalid_utf8(file, e.as_bytes()))
}

/// At most this many lines with invalid UTF-8 are listed (a binary file would have thousands).
const MAX_UTF8_PROBLEMS: usize = 10;

/// The first invalid byte of each line that is not UTF-8, located like any other problem. (`\n` never occurs
/// inside a multi-byte UTF-8 sequence, so splitting the bytes into lines is safe.)
fn invalid_utf8(file: &Path, bytes: &[u8]) -> ConfigError {
    let mut problems: Vec<Problem> = bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(index, line)| {
            let valid = std::str::from_utf8(line).err()?.valid_up_to();
            let col = std::str::from_utf8(&line[..valid]).map_or(0, |s| s.chars().count()) + 1;
            Some(Problem {
                location: format!("{}:{}:{col}", file.display(), index + 1),
                key: None,
                message: format!("invalid UTF-8 (byte 0x{:02x})", line[valid]),
            })
        })
        .collect();
    if problems.len() > MAX_UTF8_PROBLEMS {
        let more = problems.len() - MAX_UTF8_PROBLEMS;
        problems.truncate(MAX_UTF8_PROBLEMS);
        problems.push(Problem {
            location: file.display().to_string(),
            key: None,
            message: format!("and {more} more lines with invalid UTF-8"),
        });
    }
    ConfigError { problems, hint: "save the file as UTF-8, then check with `envctl show-config`".into() }
}

/// A TOML string literal.
pub fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// `KEY=VALUE` → `KEY = <literal>`: the value is used as TOML when it parses as a TOML value, else as a string.
pub fn set_to_toml(set: &str) -> Result<String, ConfigError> {
    let Some((key, value)) = set.split_once('=') else {
        return Err(ConfigError::single(
            format!("--set {set}"),
            "expected KEY=VALUE",
            "write the dotted key and its value, e.g. --set services.backend.port=8100",
        ));
    };
    let key = key.trim();
    let valid_key = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !valid_key {
        return Err(ConfigError::single(
            format!("--set {set}"),
            &format!("`{key}` is not a dotted key"),
            "keys look like services.backend.port",
        ));
    }
    let literal = if toml::de::ValueDeserializer::parse(value.trim()).is_ok() {
        value.trim().to_owned()
    } else {
        toml_string(value)
    };
    Ok(format!("{key} = {literal}"))
}

/// The closest of `candidates` to `word`, when close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// How deep a section's keys go before the value is a leaf: `project.name` is 2, `services.web.port` is 3,
/// `jobs.types.lint.command` is 4.
fn leaf_depth(section: &str) -> usize {
    match section {
        "services" | "requirements" => 3,
        _ => 2,
    }
}

/// Milliseconds as the file writes a duration: `"30s"`, or `"1500ms"` when not whole seconds.
fn duration_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// A resolved readiness probe as the file spells it: `{ "http": "/health", "timeout": "30s" }`.
fn ready_spelling(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    let mut out = serde_json::Map::new();
    match value.get("probe") {
        Some(Value::String(kind)) if kind == "tcp" => {
            out.insert("tcp".into(), Value::Bool(true));
        }
        Some(Value::Object(probe)) => {
            for (kind, fields) in probe {
                match kind.as_str() {
                    "http" => {
                        out.insert("http".into(), fields.get("path").cloned().unwrap_or(Value::Null));
                        if let Some(status) = fields.get("status").filter(|s| !s.is_null()) {
                            out.insert("status".into(), status.clone());
                        }
                    }
                    "exec" => {
                        out.insert("exec".into(), fields.get("command").cloned().unwrap_or(Value::Null));
                    }
                    "log" => {
                        out.insert("log".into(), fields.get("pattern").cloned().unwrap_or(Value::Null));
                    }
                    _ => return value.clone(),
                }
            }
        }
        _ => return value.clone(),
    }
    if let Some(ms) = value.get("timeout_ms").and_then(Value::as_u64) {
        out.insert("timeout".into(), json!(duration_text(ms)));
    }
    Value::Object(out)
}

/// A resolved key and value as the file spells them, so `show-config` output pastes into `--set`: durations kept
/// in milliseconds (`ready.timeout_ms`) become `timeout = "30s"`, ones kept in seconds (`stop_grace_secs`) become
/// `stop_grace = 5`. `jobs.lease_secs` is spelled that way in the file too.
fn file_spelling<'p, 'v>(
    path: &'p str,
    value: &'v serde_json::Value,
) -> (&'p str, Cow<'v, serde_json::Value>) {
    if path == "jobs.lease_secs" {
        return (path, Cow::Borrowed(value));
    }
    if path.rsplit('.').next() == Some("ready") {
        return (path, Cow::Owned(ready_spelling(value)));
    }
    if let Some(key) = path.strip_suffix("_ms") {
        let text = value.as_u64().map(|ms| serde_json::Value::String(duration_text(ms)));
        return (key, text.map_or(Cow::Borrowed(value), Cow::Owned));
    }
    if let Some(key) = path.strip_suffix("_secs") {
        return (key, Cow::Borrowed(value));
    }
    (path, Cow::Borrowed(value))
}

/// Where each recorded key came from, and for every key above a recorded one (`services.api.env` above
/// `services.api.env.TOKEN`) the source of the first recorded key under it. Both are borrowed from the
/// provenance, so indexing a config of many services allocates nothing per key.
#[derive(Debug)]
struct Sources<'a> {
    /// Each recorded key's source, and each key above one the source of the first recorded key under it.
    by_key: std::collections::HashMap<&'a str, &'a str>,
}

impl<'a> Sources<'a> {
    fn new(exact: &'a BTreeMap<String, String>) -> Self {
        let mut by_key = std::collections::HashMap::with_capacity(exact.len() * 4);
        for (key, source) in exact {
            by_key.insert(key.as_str(), source.as_str());
        }
        // In sorted order, so the first recorded key under a parent is the one that names its source; a key that
        // is itself recorded keeps its own.
        for (key, source) in exact {
            for (at, _) in key.match_indices('.') {
                by_key.entry(&key[..at]).or_insert(source.as_str());
            }
        }
        Self { by_key }
    }

    /// The source of a resolved key: the key itself, its file spelling (`stop_grace` for `stop_grace_secs`), or
    /// a key under it; otherwise the default.
    fn of(&self, path: &str) -> &'a str {
        let file_key = path.strip_suffix("_secs").or_else(|| path.strip_suffix("_ms")).unwrap_or(path);
        let keys: &[&str] = if file_key == path { &[path] } else { &[path, file_key] };
        keys.iter().find_map(|key| self.by_key.get(key).copied()).unwrap_or("default")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn the_borrowed_report_prints_as_the_report_does() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).expect("git dir");
        let config = "[services.api]\ncommand = \"run api\"\nport = 8000\nstop_grace = \"2s\"\nenv = { TOKEN = \"x\" }\n\n\
                      [services.web]\ncommand = \"run web\"\ndepends_on = [\"api\"]\nready = { http = \"/\" }\n\n\
                      [requirements.db]\nadapter = \"postgres\"\n";
        std::fs::write(repo.join(".envctl"), config).expect("config");
        let runtime = dir.path().join("runtime").display().to_string();
        let env = super::EnvVars::from_pairs([("ENVCTL_RUNTIME_DIR", runtime.as_str())]);
        let load = super::LoadOptions {
            start_dir: repo,
            config_file: None,
            sets: vec!["services.web.port=9000".into()],
        };
        let settings = super::Settings::load(&load, &env).expect("settings");
        let report = serde_json::to_string_pretty(&settings.report()).expect("json");
        let view = serde_json::to_string_pretty(&settings.report_view()).expect("json");
        assert_eq!(view, report);
        // Sources of each kind came through: a file's line, a --set, a key under a parent, the default.
        let values = settings.report().values;
        let source =
            |key: &str| values.iter().find(|v| v.key == key).map(|v| v.source.clone()).unwrap_or_default();
        assert!(source("services.api.stop_grace").ends_with(".envctl:4"), "{report}");
        assert_eq!(source("services.web.port"), "cli:--set");
        assert!(source("services.api.env").ends_with(".envctl:5"), "{report}");
        assert_eq!(source("services.web.restart"), "default");
    }

    #[test]
    fn invalid_utf8_lists_at_most_ten_lines() {
        let bytes = b"ok = \"\xff\"\n".repeat(12);
        let err = super::invalid_utf8(Path::new("/r/.envctl"), &bytes);
        assert_eq!(err.problems.len(), 11, "{err}");
        assert_eq!(err.problems[0].to_string(), "/r/.envctl:1:7: invalid UTF-8 (byte 0xff)");
        assert_eq!(err.problems[10].to_string(), "/r/.envctl: and 2 more lines with invalid UTF-8");
    }

    #[test]
    fn a_source_is_the_key_its_file_spelling_or_a_key_under_it_never_a_sibling_sharing_its_prefix() {
        let provenance: std::collections::BTreeMap<String, String> = [
            ("services.api-x.port", "file:sibling"),
            ("services.api.env.TOKEN", "file:env"),
            ("services.api.stop_grace", "file:grace"),
            ("services.web-2.command", "file:web-2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let sources = super::Sources::new(&provenance);
        let source = |key| sources.of(key);
        assert_eq!(source("services.api.env"), "file:env", "a key under it");
        assert_eq!(source("services.api.stop_grace_secs"), "file:grace", "its file spelling");
        assert_eq!(source("services.api.port"), "default", "`api-x` sorts between `api` and `api.`");
        assert_eq!(source("services.web.command"), "default", "`web-2` is another service");
        assert_eq!(source("services.web-2.command"), "file:web-2");
    }
}
