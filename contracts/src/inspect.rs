//! Bodies of the commands that inspect a running environment: `health`, `errors`, `endpoints`, `env`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::state::{Endpoint, ErrorEntry, ProbeRecord, ServiceStatus};

/// One service in `health`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ServiceHealth {
    /// Target.
    pub target: String,
    /// Service.
    pub service: String,
    /// Recorded status.
    pub status: ServiceStatus,
    /// What `/proc` says now: `running`, `not-listening`, `gone` or `down`.
    pub truth: String,
    /// Whether this service counts as healthy.
    pub healthy: bool,
    /// Pid.
    pub pid: Option<u32>,
    /// Port.
    pub port: Option<u16>,
    /// URL.
    pub url: Option<String>,
    /// Restarts so far.
    pub restarts: u32,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Recent readiness probes.
    pub probes: Vec<ProbeRecord>,
    /// The readiness probe `health` ran just now, when it ran one (a ready, running service whose probe can be
    /// asked again; not with `--no-probe`). A failed one makes the service unhealthy.
    #[serde(default)]
    pub probe: Option<ProbeRecord>,
}

/// `envctl health --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HealthReport {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// True when every service is healthy (and, with `--strict`, none is degraded).
    pub ok: bool,
    /// `healthy`, `degraded` (running, but restarted or still starting) or `unhealthy`.
    pub overall: String,
    /// Every selected service.
    pub services: Vec<ServiceHealth>,
    /// One line per problem.
    pub issues: Vec<String>,
    /// Whether a live host supervises what runs (restart policies, probes). False when the recorded host is gone:
    /// services may still run, but nothing restarts them; `envctl resume` adopts them.
    #[serde(default = "default_true")]
    pub supervised: bool,
    /// The job runtime's managed Redis server (`[jobs] backend = "redis"` with no URL), when it is the job store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_server: Option<crate::jobs::JobServer>,
}

fn default_true() -> bool {
    true
}

/// An error-looking line in a service's log.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogError {
    /// Target.
    pub target: String,
    /// Service.
    pub service: String,
    /// The line.
    pub line: String,
}

/// `envctl errors --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorsReport {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run the failures belong to.
    pub run_id: Option<String>,
    /// This run's recorded failures.
    pub errors: Vec<ErrorEntry>,
    /// Error-looking lines from the end of each selected service's log.
    pub log_errors: Vec<LogError>,
}

/// `envctl endpoints --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EndpointList {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Target → service → endpoint.
    pub targets: BTreeMap<String, BTreeMap<String, Endpoint>>,
    /// Target → requirement → URL as that target's services reach it (a worktree's own database, say).
    #[serde(default)]
    pub requirements: BTreeMap<String, BTreeMap<String, String>>,
    /// The job runtime's managed Redis server (`[jobs] backend = "redis"` with no URL), when it is the job store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_server: Option<crate::jobs::JobServer>,
}

/// `envctl env --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvReport {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Target.
    pub target: String,
    /// Service → the variables envctl adds to its environment.
    pub services: BTreeMap<String, BTreeMap<String, String>>,
    /// Service → variable → the dotenv `file:line` it was read from (only variables that came from one).
    #[serde(default)]
    pub sources: BTreeMap<String, BTreeMap<String, String>>,
    /// The repository's Redis job store, password included (`ENVCTL_JOBS_URL`); absent for the embedded store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_url: Option<String>,
}
