//! The resolved configuration (what `.envctl`, `ENVCTL_*` variables and command-line overrides add up to) and
//! `envctl show-config --json`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which targets `start` runs when no target flag is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Only the main checkout.
    #[default]
    Main,
    /// Every worktree.
    Trees,
}

/// Which kinds of target a service or requirement runs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum TargetScope {
    /// The main checkout and every worktree.
    #[default]
    All,
    /// Only the main checkout.
    Main,
    /// Only worktrees.
    Trees,
}

/// What the supervisor does when a service exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Leave it stopped.
    #[default]
    No,
    /// Restart it when it exits with a non-zero status or a signal.
    OnFailure,
    /// Restart it whenever it exits.
    Always,
}

/// How readiness is decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// A TCP connection to the service's port succeeds.
    Tcp,
    /// An HTTP GET of `path` on the service's port answers `status` (any 2xx or 3xx when unset).
    Http {
        /// Request path, starting with `/`.
        path: String,
        /// Expected status code.
        status: Option<u16>,
    },
    /// A shell command exits 0.
    Exec {
        /// The command, run with `sh -c` in the service's directory and environment.
        command: String,
    },
    /// A line of the service's log matches a regular expression.
    Log {
        /// The regular expression.
        pattern: String,
    },
    /// A Postgres connection as `user` to `database` answers `SELECT 1` (built-in, for postgres requirements).
    Postgres {
        /// Role.
        user: String,
        /// Database.
        database: String,
    },
    /// Redis answers `PING` (built-in, for redis requirements).
    Redis,
}

/// A readiness probe and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReadyProbe {
    /// What is probed.
    pub probe: ProbeKind,
    /// How long to wait before the service counts as failed, in milliseconds.
    pub timeout_ms: u64,
}

/// One app service (`[services.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceConfig {
    /// Shell command line; `{port}` and references such as `{backend.url}` are filled in at start.
    pub command: String,
    /// Working directory relative to the target's root; the root itself when unset.
    pub cwd: Option<String>,
    /// Base port (main's port; worktrees get their own). None means the service opens no listener.
    pub port: Option<u16>,
    /// More base ports by name (`ports = { smtp = 1025, web = 1080 }`), each planned and leased like `port`; the
    /// service gets `PORT_<NAME>`, and `{ports.<name>}` / `{<service>.ports.<name>}` fill them in.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// Readiness probe; none means ready once running (or once the port listens, when it has one).
    pub ready: Option<ReadyProbe>,
    /// Services and requirements that must be ready first.
    pub depends_on: Vec<String>,
    /// Extra environment, with the same placeholders as `command`.
    pub env: BTreeMap<String, String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Which targets run it.
    pub targets: TargetScope,
    /// False turns the service off without deleting its section.
    pub enabled: bool,
    /// The service's test command, run by `envctl test` (`test.run` jobs).
    pub test: Option<String>,
    /// The service's migration command, run by `migrate.run` jobs.
    pub migrate: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    pub stop_grace_secs: u64,
    /// Dotenv files (relative to the target's root) loaded in order under `env`, after the project's.
    #[serde(default)]
    pub env_file: Vec<String>,
    /// Shell command that prepares a checkout for the service (`uv sync`, `npm ci`), run in its directory.
    #[serde(default)]
    pub setup: Option<String>,
    /// Files (relative to the service's directory) whose contents decide whether `setup` runs again.
    #[serde(default)]
    pub setup_inputs: Vec<String>,
    /// Time limit of `setup`, in seconds.
    #[serde(default = "default_setup_timeout")]
    pub setup_timeout_secs: u64,
    /// Time limit of one run of `test`, in seconds.
    #[serde(default = "default_suite_timeout")]
    pub test_timeout_secs: u64,
    /// Time limit of one run of `migrate`, in seconds.
    #[serde(default = "default_suite_timeout")]
    pub migrate_timeout_secs: u64,
    /// Which database `test` runs against when the service uses a Postgres requirement.
    #[serde(default)]
    pub test_database: TestDatabase,
}

/// The default time limit of a `test` or `migrate` run: 30 minutes.
pub const DEFAULT_SUITE_TIMEOUT_SECS: u64 = 30 * 60;

fn default_suite_timeout() -> u64 {
    DEFAULT_SUITE_TIMEOUT_SECS
}

/// The default time limit of a setup step: 10 minutes.
pub const DEFAULT_SETUP_TIMEOUT_SECS: u64 = 10 * 60;

fn default_setup_timeout() -> u64 {
    DEFAULT_SETUP_TIMEOUT_SECS
}

impl ServiceConfig {
    /// The service's setup step, when it has one.
    pub fn setup_step(&self) -> Option<SetupConfig> {
        self.setup.as_ref().map(|command| SetupConfig {
            command: command.clone(),
            inputs: self.setup_inputs.clone(),
            timeout_secs: self.setup_timeout_secs,
        })
    }
}

/// A step that prepares a checkout (`uv sync`, `npm ci`): run before the first start of a checkout and again
/// whenever one of its inputs changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SetupConfig {
    /// Shell command line, run in the service's directory (the target's root for `[setup]`).
    pub command: String,
    /// Files (relative to that directory) whose contents decide whether it runs again.
    pub inputs: Vec<String>,
    /// Time limit, in seconds.
    pub timeout_secs: u64,
}

/// Which database a service's `test` runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum TestDatabase {
    /// A fresh copy of the target's database, dropped afterwards: tests never touch development data.
    #[default]
    Clone,
    /// The target's own database.
    Target,
}

/// Built-in requirement adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Adapter {
    /// Native PostgreSQL (initdb / pg_ctl / postgres).
    Postgres,
    /// Native redis-server.
    Redis,
    /// Any server started from a command.
    Command,
}

/// How a requirement is shared between targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// One server per target.
    Server,
    /// One Postgres server, one database per target.
    Database,
    /// One Redis server, one database index per target.
    DbIndex,
}

/// One backing server (`[requirements.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RequirementConfig {
    /// The adapter that runs it.
    pub adapter: Adapter,
    /// How it is shared between targets.
    pub isolation: Isolation,
    /// Base port (main's port).
    pub port: u16,
    /// More base ports by name, for the `command` adapter (a mail catcher's SMTP and web ports), each planned like
    /// `port`; its server gets `PORT_<NAME>`, and `{<requirement>.ports.<name>}` fills them in.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// Command line, for the `command` adapter.
    pub command: Option<String>,
    /// Readiness probe, for the `command` adapter.
    pub ready: Option<ReadyProbe>,
    /// Environment the requirement exports to services.
    pub env: BTreeMap<String, String>,
    /// Which targets run it.
    pub targets: TargetScope,
    /// False turns the requirement off without deleting its section.
    pub enabled: bool,
    /// SQL file or command run once when a database is created (postgres).
    pub seed: Option<String>,
    /// Seconds a seed may run before it is stopped and the start fails.
    #[serde(default = "default_seed_timeout_secs")]
    pub seed_timeout_secs: u64,
}

/// A seed's time limit when `seed_timeout` is not set: ten minutes.
pub const DEFAULT_SEED_TIMEOUT_SECS: u64 = 600;

fn default_seed_timeout_secs() -> u64 {
    DEFAULT_SEED_TIMEOUT_SECS
}

/// Where jobs are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum JobsBackend {
    /// SQLite in the scope's data directory.
    #[default]
    Embedded,
    /// A Redis server, shared by workers on any machine.
    Redis,
}

/// Job priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Runs after everything else.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Runs before normal jobs.
    High,
    /// Runs first.
    Critical,
}

/// A user job type (`[jobs.types.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobTypeConfig {
    /// Shell command line the job runs.
    pub command: String,
    /// Attempts before the job is dead.
    pub max_attempts: u32,
    /// Time limit per attempt, in seconds.
    pub timeout_secs: Option<u64>,
    /// Default priority.
    pub priority: Priority,
}

/// `[jobs]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobsConfig {
    /// Where jobs are stored.
    pub backend: JobsBackend,
    /// Redis URL for the redis backend.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key envctl writes.
    pub redis_prefix: String,
    /// Length of a worker's lease on a claimed job, in seconds.
    pub lease_secs: u64,
    /// The address the managed job server listens on (`backend = "redis"` with no URL).
    #[serde(default = "default_jobs_bind")]
    pub bind: String,
    /// The port the managed job server asks for first.
    #[serde(default = "default_jobs_port")]
    pub port: u16,
    /// User job types.
    pub types: BTreeMap<String, JobTypeConfig>,
}

/// The managed job server's default address: loopback only.
pub const DEFAULT_JOBS_BIND: &str = "127.0.0.1";
/// The port the managed job server asks for first.
pub const DEFAULT_JOBS_PORT: u16 = 6390;

fn default_jobs_bind() -> String {
    DEFAULT_JOBS_BIND.to_owned()
}

fn default_jobs_port() -> u16 {
    DEFAULT_JOBS_PORT
}

/// `[project]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectConfig {
    /// Display name; the repository directory's name when unset.
    pub name: String,
    /// Targets `start` runs when no target flag is given.
    pub default_mode: Mode,
    /// Directory, relative to the repository root, where `worktree add` creates worktrees.
    pub trees_dir: String,
    /// Dotenv files (relative to the target's root) every service loads, before its own.
    #[serde(default)]
    pub env_file: Vec<String>,
}

/// The whole resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Config {
    /// `[project]`.
    pub project: ProjectConfig,
    /// `[services.<name>]`, by name.
    pub services: BTreeMap<String, ServiceConfig>,
    /// `[setup]`: what prepares every checkout before its services start.
    #[serde(default)]
    pub setup: Option<SetupConfig>,
    /// `[requirements.<name>]`, by name.
    pub requirements: BTreeMap<String, RequirementConfig>,
    /// `[jobs]`.
    pub jobs: JobsConfig,
}

/// What kind of file the configuration was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConfigFormat {
    /// A TOML `.envctl`.
    Toml,
    /// A Python-era KEY=VALUE `.envctl`, read through the importer.
    Legacy,
    /// No file: defaults only.
    None,
}

/// Where one effective value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigValue {
    /// Dotted key (`services.backend.port`).
    pub key: String,
    /// The effective value.
    pub value: serde_json::Value,
    /// `default`, `file:<path>:<line>`, `legacy:<path>:<line> (<KEY>)`, `env:<VAR>` or `cli:--set`.
    pub source: String,
}

/// `envctl show-config --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConfigReport {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The repository root that owns the configuration.
    pub repo_root: String,
    /// The file read, if any.
    pub config_file: Option<String>,
    /// What kind of file it was.
    pub format: ConfigFormat,
    /// The resolved configuration.
    pub config: Config,
    /// Every effective leaf value with its source.
    pub values: Vec<ConfigValue>,
    /// Problems that did not stop loading (legacy keys that could not be mapped, …).
    pub warnings: Vec<String>,
}
