//! The one seam for ambient inputs: every environment variable envctl reads is listed in [`ENV_VARS`], and the
//! process environment is read once, in [`EnvVars::from_process`]. The reference table in
//! `docs/reference/config.md` is generated from the list (a test keeps it fresh).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How an override variable's value becomes a config value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Taken as a string.
    String,
    /// Parsed as an integer.
    Integer,
}

/// One environment variable envctl reads.
#[derive(Debug, Clone, Copy)]
pub struct EnvVarSpec {
    /// Variable name.
    pub name: &'static str,
    /// The config key it overrides, if it overrides one.
    pub config_key: Option<&'static str>,
    /// How its value is read.
    pub kind: ValueKind,
    /// What it does.
    pub doc: &'static str,
}

const fn var(
    name: &'static str,
    config_key: Option<&'static str>,
    kind: ValueKind,
    doc: &'static str,
) -> EnvVarSpec {
    EnvVarSpec { name, config_key, kind, doc }
}

/// Every environment variable envctl reads.
pub const ENV_VARS: &[EnvVarSpec] = &[
    var(
        "ENVCTL_CONFIG_FILE",
        None,
        ValueKind::String,
        "Path of the config file to read instead of `<repo>/.envctl`.",
    ),
    var(
        "ENVCTL_RUNTIME_DIR",
        None,
        ValueKind::String,
        "Root of envctl's state: scope directories and the port lease ledger. Default: `$XDG_STATE_HOME/envctl` (`~/.local/state/envctl`).",
    ),
    var(
        "ENVCTL_DEFAULT_MODE",
        Some("project.default_mode"),
        ValueKind::String,
        "Overrides `project.default_mode`.",
    ),
    var("ENVCTL_TREES_DIR", Some("project.trees_dir"), ValueKind::String, "Overrides `project.trees_dir`."),
    var(
        "ENVCTL_JOBS_BACKEND",
        Some("jobs.backend"),
        ValueKind::String,
        "Overrides `jobs.backend` (`embedded` or `redis`).",
    ),
    var("ENVCTL_REDIS_URL", Some("jobs.redis_url"), ValueKind::String, "Overrides `jobs.redis_url`."),
    var(
        "ENVCTL_REDIS_PREFIX",
        Some("jobs.redis_prefix"),
        ValueKind::String,
        "Overrides `jobs.redis_prefix`.",
    ),
    var(
        "ENVCTL_JOBS_LEASE_SECS",
        Some("jobs.lease_secs"),
        ValueKind::Integer,
        "Overrides `jobs.lease_secs`.",
    ),
    var(
        "REDIS_URL",
        None,
        ValueKind::String,
        "Used for `jobs.redis_url` when neither the file nor `ENVCTL_REDIS_URL` sets it.",
    ),
    var(
        "PATH",
        None,
        ValueKind::String,
        "Searched for the binaries requirements need (`initdb`, `redis-server`, …).",
    ),
    var(
        "ENVCTL_KEEP_RUNS",
        None,
        ValueKind::Integer,
        "How many per-run state copies (`<scope>/runs/<run-id>/`) are kept; older ones are deleted. Default: 50.",
    ),
    var(
        "XDG_RUNTIME_DIR",
        None,
        ValueKind::String,
        "The user's runtime directory: the host's control socket goes to `$XDG_RUNTIME_DIR/envctl/` when the scope directory's path is too long for a socket (else `/tmp/envctl-<uid>/`, which must be the user's own, a real directory, mode 0700).",
    ),
    var(
        "NO_COLOR",
        None,
        ValueKind::String,
        "Any non-empty value: no colour in envctl's output (progress, the dashboard), and ANSI sequences are stripped from service logs that `envctl logs` prints (as `--no-color`).",
    ),
    var(
        "ENVCTL_LOG",
        None,
        ValueKind::String,
        "Diagnostic log level on stderr (the host's goes to `host.log`): `error`, `warn`, `info`, `debug` or `trace`. Default: `warn` for commands (`-v`: `info`, `-vv`: `debug`), `info` for the host.",
    ),
    var(
        "ENVCTL_RUNTIME_URL",
        None,
        ValueKind::String,
        "Set by envctl in a job's process (and a service's): the runtime API's `http://127.0.0.1:<port>`, which `envctl job` calls.",
    ),
    var(
        "ENVCTL_EXECUTION_ID",
        None,
        ValueKind::String,
        "Set by envctl in a job's process: this attempt's id (`<job id>.<attempt>`), which `envctl job` names.",
    ),
    var(
        "ENVCTL_EXECUTION_TOKEN",
        None,
        ValueKind::String,
        "Set by envctl in a job's process: this attempt's runtime API token (valid while the attempt runs; never recorded, logged or bundled), which `envctl job` sends.",
    ),
];

/// A snapshot of the environment, taken once: the variables envctl reads ([`ENV_VARS`]) and the whole environment
/// that services and jobs inherit (they get the environment of the shell that ran `envctl start`; nothing in it
/// configures envctl itself).
#[derive(Debug, Clone, Default)]
pub struct EnvVars {
    values: BTreeMap<&'static str, String>,
    inherited: BTreeMap<String, String>,
}

impl EnvVars {
    /// Reads every variable of [`ENV_VARS`] from the process environment. The only place that does.
    #[allow(clippy::disallowed_methods)]
    pub fn from_process() -> Self {
        let inherited: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::from_inherited(inherited)
    }

    /// A snapshot of an environment given whole (the host receives the CLI's with each request).
    pub fn from_inherited(inherited: BTreeMap<String, String>) -> Self {
        let values = ENV_VARS
            .iter()
            .filter_map(|spec| inherited.get(spec.name).map(|value| (spec.name, value.clone())))
            .filter(|(_, value)| !value.is_empty())
            .collect();
        Self { values, inherited }
    }

    /// A snapshot from explicit pairs (tests). Names not in [`ENV_VARS`] are ignored.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut values = BTreeMap::new();
        for (name, value) in pairs {
            if let Some(spec) = ENV_VARS.iter().find(|spec| spec.name == name) {
                values.insert(spec.name, value.to_owned());
            }
        }
        Self { values, inherited: BTreeMap::new() }
    }

    /// The whole environment, as services and jobs inherit it.
    pub fn inherited(&self) -> &BTreeMap<String, String> {
        &self.inherited
    }

    /// The value of one variable, if set and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The set variables that override config keys, in registry order.
    pub fn overrides(&self) -> impl Iterator<Item = (&'static EnvVarSpec, &str)> {
        ENV_VARS
            .iter()
            .filter(|spec| spec.config_key.is_some())
            .filter_map(|spec| self.get(spec.name).map(|v| (spec, v)))
    }
}

/// The Markdown table of [`ENV_VARS`] kept in `docs/reference/config.md`.
pub fn reference_table() -> String {
    let mut out = String::from("| variable | overrides | what it does |\n|---|---|---|\n");
    for spec in ENV_VARS {
        let key = spec.config_key.map_or_else(|| "—".to_owned(), |k| format!("`{k}`"));
        let _ = writeln!(out, "| `{}` | {key} | {} |", spec.name, spec.doc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pairs_ignores_unknown_and_keeps_known() {
        let vars = EnvVars::from_pairs([("ENVCTL_DEFAULT_MODE", "trees"), ("NOT_OURS", "x")]);
        assert_eq!(vars.get("ENVCTL_DEFAULT_MODE"), Some("trees"));
        assert_eq!(vars.get("NOT_OURS"), None);
        assert_eq!(vars.overrides().count(), 1);
    }

    #[test]
    fn reference_doc_lists_every_variable() {
        let doc = include_str!("../../../docs/reference/config.md");
        let table = reference_table();
        assert!(
            doc.contains(&table),
            "docs/reference/config.md is missing the current variable table; paste this in:\n{table}"
        );
    }
}
