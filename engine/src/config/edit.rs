//! Commands that write `.envctl`: `config init` (from what [`super::detect`] finds), `config set KEY=VALUE`
//! (comments and layout kept, the result validated before anything is written) and `config migrate` (legacy →
//! TOML, the original kept as a backup). Every write is atomic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::detect::{Detected, detect_all};
use super::layers::{Layer, Origin};
use super::{ConfigError, Paths, legacy, load, read_config_text, toml_string};
use crate::state::write_user_file;

/// What `config init` wrote.
#[derive(Debug, Clone)]
pub struct InitOutcome {
    /// The file written.
    pub file: PathBuf,
    /// The services it found.
    pub detected: Vec<Detected>,
}

/// What `config migrate` did.
#[derive(Debug, Clone)]
pub struct MigrateOutcome {
    /// The rewritten file.
    pub file: PathBuf,
    /// Where the original went; `None` when the file was already TOML and nothing was done.
    pub backup: Option<PathBuf>,
    /// Keys that could not be mapped.
    pub warnings: Vec<String>,
}

fn write_error(path: &Path, err: &std::io::Error) -> ConfigError {
    ConfigError::single(
        path.display().to_string(),
        &format!("cannot write: {err}"),
        "check the directory's permissions",
    )
}

fn repo_name(paths: &Paths) -> String {
    paths.repo_root.file_name().map_or_else(|| "repo".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// Validates `text` as the config file at `file`.
fn validate(paths: &Paths, file: &Path, text: &str) -> Result<(), ConfigError> {
    let layers = [Layer { origin: Origin::File(file.to_path_buf()), text: text.to_owned() }];
    load::load(&layers, &repo_name(paths), "nothing was written; fix the value and run the command again")
        .map(|_| ())
}

/// Writes a new `.envctl` from what is detected in the repository.
pub fn init(paths: &Paths, force: bool) -> Result<InitOutcome, ConfigError> {
    let file = paths.config_file.clone().unwrap_or_else(|| paths.default_config_file());
    if file.exists() && !force {
        return Err(ConfigError::single(
            file.display().to_string(),
            "a config file already exists",
            "edit it, change one value with `envctl config set KEY=VALUE`, or pass --force to replace it",
        ));
    }
    let detected = detect_all(&paths.repo_root);
    let text = render_init(&repo_name(paths), &detected);
    validate(paths, &file, &text)?;
    write_user_file(&file, text.as_bytes()).map_err(|e| write_error(&file, &e))?;
    Ok(InitOutcome { file, detected })
}

fn render_init(name: &str, detected: &[Detected]) -> String {
    let mut out = String::from("# envctl configuration. Reference: docs/reference/config.md\n\n[project]\n");
    let _ = writeln!(out, "name = {}", toml_string(name));
    out.push_str("default_mode = \"main\"   # main | trees\n");
    if detected.is_empty() {
        out.push_str("\n# Nothing runnable was detected. Describe a service like this:\n");
        out.push_str("# [services.web]\n# command = \"python3 -m http.server {port} --bind 127.0.0.1\"\n# port = 8000\n# ready = { http = \"/\" }\n");
    }
    for service in detected {
        let _ = write!(out, "\n# {}\n[services.{}]\n", service.reason, service.name);
        let _ = writeln!(out, "command = {}", toml_string(&service.command));
        if let Some(cwd) = &service.cwd {
            let _ = writeln!(out, "cwd = {}", toml_string(cwd));
        }
        let _ = write!(out, "port = {}\nready = {{ tcp = true }}\n", service.port);
    }
    out.push_str("\n# Backing servers, one per target:\n# [requirements.postgres]\n# [requirements.redis]\n");
    out
}

/// Sets one dotted key in the config file, keeping everything else as it was.
pub fn set(paths: &Paths, assignment: &str) -> Result<PathBuf, ConfigError> {
    let file = paths.config_file.clone().unwrap_or_else(|| paths.default_config_file());
    let old = if file.exists() { read_config_text(&file)? } else { String::new() };
    if legacy::is_legacy(&old) {
        return Err(ConfigError::single(
            file.display().to_string(),
            "this is a Python-era KEY=VALUE file",
            "run `envctl config migrate` to turn it into TOML first",
        ));
    }
    let line = super::set_to_toml(assignment)?;
    let (key, literal) = line.split_once(" = ").unwrap_or((&line, ""));
    let mut doc: toml_edit::DocumentMut = old.parse().map_err(|e: toml_edit::TomlError| {
        ConfigError::single(
            file.display().to_string(),
            &format!("invalid TOML: {}", e.message()),
            "fix the file's syntax first",
        )
    })?;
    let value: toml_edit::Value = literal.parse().map_err(|_| {
        ConfigError::single(format!("config set {assignment}"), "the value is not valid", "quote text values")
    })?;
    let parts: Vec<&str> = key.split('.').collect();
    let (last, parents) = parts.split_last().unwrap_or((&"", &[]));
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    for part in parents {
        let item = table.entry(part).or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        });
        table = item.as_table_like_mut().ok_or_else(|| {
            ConfigError::single(
                format!("config set {assignment}"),
                &format!("`{part}` is a value, not a table"),
                "set a key inside a table",
            )
        })?;
    }
    table.insert(last, toml_edit::Item::Value(value));
    let text = doc.to_string();
    validate(paths, &file, &text)?;
    write_user_file(&file, text.as_bytes()).map_err(|e| write_error(&file, &e))?;
    Ok(file)
}

/// Rewrites a legacy file as TOML, keeping the original next to it.
pub fn migrate(paths: &Paths) -> Result<MigrateOutcome, ConfigError> {
    let Some(file) = paths.config_file.clone() else {
        return Err(ConfigError::single(
            paths.default_config_file().display().to_string(),
            "there is no config file to migrate",
            "run `envctl config init` to create one",
        ));
    };
    let old = read_config_text(&file)?;
    if !legacy::is_legacy(&old) {
        return Ok(MigrateOutcome { file, backup: None, warnings: Vec::new() });
    }
    let imported = legacy::import(&old, &paths.repo_root);
    let mut text = imported.toml.replacen(
        "# Imported from a Python-era .envctl by envctl; run `envctl config migrate` to make this the file.",
        "# Migrated from a Python-era .envctl by `envctl config migrate`. Reference: docs/reference/config.md",
        1,
    );
    if !imported.warnings.is_empty() {
        text.push_str("\n# Not imported (see the backup):\n");
        for warning in &imported.warnings {
            let _ = writeln!(text, "#   {warning}");
        }
    }
    validate(paths, &file, &text)?;
    let backup = (0..1000)
        .map(|n| {
            if n == 0 {
                file.with_extension("legacy.bak")
            } else {
                file.with_extension(format!("legacy.bak.{n}"))
            }
        })
        .find(|candidate| !candidate.exists())
        .unwrap_or_else(|| file.with_extension("legacy.bak"));
    write_user_file(&backup, old.as_bytes()).map_err(|e| write_error(&backup, &e))?;
    write_user_file(&file, text.as_bytes()).map_err(|e| write_error(&file, &e))?;
    Ok(MigrateOutcome { file, backup: Some(backup), warnings: imported.warnings })
}
