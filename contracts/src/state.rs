//! Run state artifacts: `run_state.json`, `runtime_map.json`, `error_report.json`, `events.jsonl`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::startup::ServicePlan;

/// Where a service or requirement is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Not started yet.
    Pending,
    /// Spawned, waiting for readiness.
    Starting,
    /// Ready.
    Ready,
    /// Exited and waiting to be started again by its restart policy.
    Restarting,
    /// Failed to start or to become ready, or gave up restarting.
    Failed,
    /// Exited on its own.
    Exited,
    /// Stopped by envctl.
    Stopped,
}

/// The host process that owns a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostRecord {
    /// Host pid.
    pub pid: u32,
    /// Host start time (clock ticks since boot).
    pub start_time: u64,
}

/// One readiness probe attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProbeRecord {
    /// When (RFC 3339).
    pub at: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it saw (status code, error, exit code).
    pub detail: String,
}

/// App service or backing server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    /// A `[services.*]` entry.
    #[default]
    Service,
    /// A `[requirements.*]` server.
    Requirement,
}

/// One process envctl started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceRecord {
    /// Service or requirement.
    #[serde(default)]
    pub kind: ProcessKind,
    /// Target name (for a requirement: the target whose server it is; `main` for a shared one).
    pub target: String,
    /// Service or requirement name.
    pub service: String,
    /// Process id of the service's session and group leader, while it runs.
    pub pid: Option<u32>,
    /// Its start time (clock ticks since boot), to tell it from a reused pid.
    pub pid_start_time: Option<u64>,
    /// Port it serves on.
    pub port: Option<u16>,
    /// Its named ports (`ports = { … }`), by name.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// URL, when it listens.
    pub url: Option<String>,
    /// Status.
    pub status: ServiceStatus,
    /// Log file.
    pub log_path: Option<String>,
    /// When the current process was started (RFC 3339).
    pub started_at: Option<String>,
    /// When it became ready (RFC 3339).
    pub ready_at: Option<String>,
    /// How many times its restart policy restarted it.
    pub restarts: u32,
    /// Exit code of the last exit (none for a signal or while running).
    pub exit_code: Option<i32>,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// The last readiness probe attempts, newest last.
    pub probes: Vec<ProbeRecord>,
    /// What was started: argv, cwd, env, probe, restart policy (used to restart it and to decide reuse). Shared,
    /// not copied: the host snapshots every record for each save, and a plan is most of a record.
    pub spec: Option<std::sync::Arc<ServicePlan>>,
}

impl ServiceRecord {
    /// A record of `service` of `target` with `status` and nothing else known yet.
    pub fn new(kind: ProcessKind, target: &str, service: &str, status: ServiceStatus) -> Self {
        Self {
            kind,
            target: target.to_owned(),
            service: service.to_owned(),
            pid: None,
            pid_start_time: None,
            port: None,
            ports: BTreeMap::new(),
            url: None,
            status,
            log_path: None,
            started_at: None,
            ready_at: None,
            restarts: 0,
            exit_code: None,
            failure: None,
            probes: Vec::new(),
            spec: None,
        }
    }
}

/// `run_state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RunState {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `run-YYYYMMDDhhmmss-<8 hex>`.
    pub run_id: String,
    /// The command that made this run.
    pub command: String,
    /// Targets of the run.
    pub targets: Vec<String>,
    /// The host that owns the run, while one does.
    pub host: Option<HostRecord>,
    /// Services and requirements.
    pub services: Vec<ServiceRecord>,
    /// Whether this run failed.
    pub failed: bool,
    /// Why, when it did.
    pub failure: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last update (RFC 3339).
    pub updated_at: String,
    /// Which requirement servers (`owner/name`) each target uses, so a shared server is not stopped while a
    /// target that uses it runs — also after a new host adopted them.
    #[serde(default)]
    pub requirement_users: BTreeMap<String, Vec<String>>,
}

/// One endpoint in `runtime_map.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Endpoint {
    /// Port.
    pub port: Option<u16>,
    /// Named ports, by name.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// URL.
    pub url: Option<String>,
    /// Status.
    pub status: ServiceStatus,
}

/// `runtime_map.json`: URLs and status by target and service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RuntimeMap {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run.
    pub run_id: String,
    /// Target → service → endpoint.
    pub targets: BTreeMap<String, BTreeMap<String, Endpoint>>,
}

/// At most this many lines of a failed step's log are kept in `error_report.json` (and of a setup program's
/// output in a message), never the whole log.
pub const ERROR_TAIL_LINES: usize = 50;

/// One failure of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorEntry {
    /// Target, when the failure belongs to one.
    pub target: Option<String>,
    /// Service or requirement, when the failure belongs to one.
    pub service: Option<String>,
    /// Short machine-readable class (`exited`, `probe_timeout`, `port_conflict`, …).
    pub kind: String,
    /// What happened, for a person.
    pub message: String,
    /// The log of the service or server that failed, when it has one.
    #[serde(default)]
    pub log_path: Option<String>,
    /// The last lines of that log as the step failed, at most [`ERROR_TAIL_LINES`].
    #[serde(default)]
    pub log_tail: Vec<String>,
}

/// `error_report.json`: this run's failures only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorReport {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run.
    pub run_id: String,
    /// When it was written (RFC 3339).
    pub generated_at: String,
    /// Failures.
    pub errors: Vec<ErrorEntry>,
}

/// One line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When (RFC 3339).
    pub at: String,
    /// The run.
    pub run_id: String,
    /// Target, if any.
    pub target: Option<String>,
    /// Service, if any.
    pub service: Option<String>,
    /// Dotted event name (`service.ready`, `port.leased`, …).
    pub event: String,
    /// Free-form detail.
    pub detail: serde_json::Value,
}

/// `envctl show-state --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ShowState {
    /// False when no run has been saved for this repository.
    pub found: bool,
    /// The scope directory the state lives in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope_dir: Option<String>,
    /// The latest run state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_state: Option<RunState>,
    /// The latest runtime map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_map: Option<RuntimeMap>,
}
