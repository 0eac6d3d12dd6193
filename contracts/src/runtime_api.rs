//! The bodies of the runtime API that running jobs (and services) call: `docs/runtime-api.md` lists the endpoints.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::jobs::JobStatus;

/// `GET /executions/{id}/context`: what an attempt knows about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionContext {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// This attempt (`<job id>.<attempt>`).
    pub execution_id: String,
    /// The job.
    pub job_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// The target it runs for, if any.
    pub target: Option<String>,
    /// Which attempt this is (1-based).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The repository (its root, or its scope when the worker runs outside it).
    pub repository: String,
    /// The worker running it.
    pub worker: String,
    /// The jobs it waited for (`--after`), with their outputs.
    pub parents: Vec<ParentOutput>,
}

/// One parent in an [`ExecutionContext`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ParentOutput {
    /// Its id.
    pub id: String,
    /// How it ended.
    pub status: Option<JobStatus>,
    /// What it reported (`POST /executions/{id}/output`).
    pub output: Option<serde_json::Value>,
}

/// `GET /executions/{id}/variables/{key}` and the reply of an increment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VariableValue {
    /// Its name.
    pub key: String,
    /// The target it belongs to (`?target=`); none for the repository's.
    pub target: Option<String>,
    /// Its value (an increment's reply: the new number, as text).
    pub value: String,
}

/// `PUT /executions/{id}/variables/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetVariable {
    /// The new value.
    pub value: String,
}

/// `POST /executions/{id}/variables/{key}/incr` (an empty body adds 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Increment {
    /// How much to add (default 1; negative subtracts).
    #[serde(default)]
    pub by: Option<i64>,
}

/// `POST /executions/{id}/condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Whether the jobs after this one may run.
    pub condition: bool,
}

/// `POST /executions/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogMessage {
    /// The line to add to the job's log.
    pub message: String,
}

/// `POST /jobs`: a job to enqueue (a service's token enqueues for its own target only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// Its type (`command.exec`, a `[jobs.types.<name>]` name, …).
    #[serde(rename = "type")]
    pub job_type: String,
    /// The target it runs for (default: the caller's).
    #[serde(default)]
    pub target: Option<String>,
    /// Its payload.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// What it reads as input.
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    /// `low`, `normal`, `high` or `critical` (default normal).
    #[serde(default)]
    pub priority: Option<crate::config::Priority>,
    /// Attempts allowed (default 3).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// The jobs it waits for.
    #[serde(default)]
    pub after: Vec<String>,
}

/// The reply of `POST /jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Enqueued {
    /// The new job's id.
    pub id: String,
}

/// The reply of `POST /jobs/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Cancelled {
    /// The job's status now (`cancelled`, or `cancelling` while its worker stops it).
    pub status: JobStatus,
}

/// Every error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiError {
    /// What went wrong, for a person.
    pub error: String,
}
