//! `envctl explain-startup --json`: what `start` would do, without starting anything.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Adapter, Isolation, Mode, ReadyProbe, RestartPolicy};
use crate::ports::PortPlan;

/// A binary a requirement needs, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BinaryCheck {
    /// Program name (`initdb`, `redis-server`, …).
    pub name: String,
    /// Full path, when found.
    pub path: Option<String>,
    /// How to install it, when missing.
    pub install_hint: Option<String>,
}

/// One requirement of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RequirementPlan {
    /// Requirement name.
    pub name: String,
    /// Adapter.
    pub adapter: Adapter,
    /// Isolation.
    pub isolation: Isolation,
    /// Target whose server this target uses (itself, or `main` for a shared server).
    pub server_owner: String,
    /// Port plan of the server this target uses.
    pub port: PortPlan,
    /// Plans of its named ports (`ports = { … }`), by name.
    #[serde(default)]
    pub ports: BTreeMap<String, PortPlan>,
    /// Binaries the adapter needs.
    pub binaries: Vec<BinaryCheck>,
    /// Environment it exports to services.
    pub env: BTreeMap<String, String>,
    /// URL services use to reach it.
    pub url: String,
    /// Data directory of its server.
    pub data_dir: String,
    /// The process that runs the server.
    pub process: ServicePlan,
    /// The seed for this target's database (postgres), placeholders filled in and shell-quoted.
    #[serde(default)]
    pub seed: Option<String>,
}

/// One service of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServicePlan {
    /// Service name.
    pub name: String,
    /// Dependency layer: layer 0 starts first; services of one layer start together.
    pub layer: u32,
    /// Working directory.
    pub cwd: String,
    /// The exact argv spawned.
    pub argv: Vec<String>,
    /// How `argv` runs the configured command: exec'd directly, or through `sh`.
    #[serde(default)]
    pub launch: Launch,
    /// The environment added to the inherited one.
    pub env: BTreeMap<String, String>,
    /// Port plan, when the service listens.
    pub port: Option<PortPlan>,
    /// Plans of its named ports (`ports = { … }`), by name; each is also in `env` as `PORT_<NAME>`.
    #[serde(default)]
    pub ports: BTreeMap<String, PortPlan>,
    /// URL, when the service listens.
    pub url: Option<String>,
    /// Readiness probe.
    pub ready: Option<ReadyProbe>,
    /// Dependencies.
    pub depends_on: Vec<String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Seconds between the stop signal and SIGKILL when stopping.
    pub stop_grace_secs: u64,
    /// The signal that asks it to stop (`TERM`; `INT` for Postgres, whose fast shutdown it is).
    #[serde(default = "default_stop_signal")]
    pub stop_signal: String,
    /// The user it runs as, when not the one running envctl (Postgres refuses to run as root).
    #[serde(default)]
    pub user: Option<String>,
    /// Where each variable of `env` that came from a dotenv file was read (`.env:3`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_sources: BTreeMap<String, String>,
}

/// How a configured command is run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Launch {
    /// The command has no shell syntax: its words are the argv, exec'd with no shell in between.
    Direct,
    /// A single command with shell syntax (quotes, `$VAR`, redirects, globs): `sh -c 'exec …'`, so the shell
    /// expands it and is then replaced by the command.
    ShellExec,
    /// A compound command (`|`, `&&`, `;`, `&`, subshells, a leading assignment or builtin): `sh -c …`, the shell
    /// stays as the process's leader.
    #[default]
    Shell,
}

fn default_stop_signal() -> String {
    "TERM".to_owned()
}

impl ServicePlan {
    /// A plan that runs `argv` in `cwd` as `name` and nothing else: no port, probe, dependency or extra
    /// environment, no restarts, stopped with SIGTERM and 5 s of grace.
    pub fn new(name: &str, cwd: &str, argv: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            layer: 0,
            cwd: cwd.to_owned(),
            argv,
            launch: Launch::Direct,
            env: BTreeMap::new(),
            port: None,
            ports: BTreeMap::new(),
            url: None,
            ready: None,
            depends_on: Vec::new(),
            restart: crate::config::RestartPolicy::No,
            stop_grace_secs: 5,
            stop_signal: default_stop_signal(),
            user: None,
            env_sources: BTreeMap::new(),
        }
    }
}

/// One target's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetPlan {
    /// Target name.
    pub name: String,
    /// Target root.
    pub root: String,
    /// Requirements, in start order.
    pub requirements: Vec<RequirementPlan>,
    /// Services, in start order.
    pub services: Vec<ServicePlan>,
}

/// `envctl explain-startup --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StartupPlan {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The repository root.
    pub repo_root: String,
    /// The configuration file, if any.
    pub config_file: Option<String>,
    /// The mode used to pick targets when no target flag was given.
    pub mode: Mode,
    /// The selected targets.
    pub targets: Vec<TargetPlan>,
    /// Problems `start` would hit (a missing binary, …).
    pub problems: Vec<String>,
    /// The job runtime's managed Redis server (`[jobs] backend = "redis"` with no URL), when it is the job store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_server: Option<crate::jobs::JobServer>,
}
