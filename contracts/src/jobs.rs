//! Jobs: the records the job runtime keeps, and `envctl jobs … --json`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Priority;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its parents (`--after`) to end.
    Waiting,
    /// Waiting for a worker.
    Queued,
    /// Waiting until `scheduled_at` (delayed, or a retry backing off).
    Scheduled,
    /// Claimed by a worker, under a lease.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished unsuccessfully and will not be retried (bad payload, unknown type, one attempt only).
    Failed,
    /// Cancel requested; its worker is stopping it.
    Cancelling,
    /// Cancelled.
    Cancelled,
    /// Failed on every one of its `max_attempts`.
    Dead,
    /// Never ran: a parent did not succeed, or set `condition = false` (the reason is in `error`).
    Skipped,
}

impl JobStatus {
    /// Every status, in display order.
    pub const ALL: [Self; 10] = [
        Self::Waiting,
        Self::Queued,
        Self::Scheduled,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelling,
        Self::Cancelled,
        Self::Dead,
        Self::Skipped,
    ];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
            Self::Dead => "dead",
            Self::Waiting => "waiting",
            Self::Skipped => "skipped",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the job is finished for good.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::Dead | Self::Skipped)
    }
}

/// How far a running job is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobProgress {
    /// 0–100.
    pub percent: Option<f64>,
    /// Current step.
    pub step: Option<String>,
    /// Free text.
    pub detail: Option<String>,
}

/// One job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Job {
    /// Id.
    pub id: String,
    /// `<namespace>.<operation>` (`command.exec`, `test.run`) or a user type.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Target it runs for, if any.
    pub target: Option<String>,
    /// Input.
    pub payload: serde_json::Value,
    /// Status.
    pub status: JobStatus,
    /// Priority.
    pub priority: Priority,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// When a scheduled job becomes due (RFC 3339).
    pub scheduled_at: Option<String>,
    /// When the current or last attempt started (RFC 3339).
    pub started_at: Option<String>,
    /// When it finished (RFC 3339).
    pub finished_at: Option<String>,
    /// The worker holding or last holding it.
    pub worker_id: Option<String>,
    /// Progress reported while running.
    pub progress: Option<JobProgress>,
    /// Output of a successful run.
    pub result: Option<serde_json::Value>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Free-form metadata.
    pub metadata: serde_json::Value,
    /// What the job was given to read (`jobs enqueue --input`, `GET /executions/{id}/input`).
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    /// What the job reported (`POST /executions/{id}/output`); its children read it in their context.
    #[serde(default)]
    pub output: Option<serde_json::Value>,
    /// The jobs it waits for (`jobs enqueue --after`).
    #[serde(default)]
    pub parents: Vec<String>,
    /// Whether the jobs after it may run (`POST /executions/{id}/condition`); unset counts as true.
    #[serde(default)]
    pub condition: Option<bool>,
}

/// One log line of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobLogLine {
    /// When (RFC 3339).
    pub at: String,
    /// The line.
    pub line: String,
}

/// `envctl jobs list --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobList {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
}

/// Whether a worker is still heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// It heartbeats.
    Alive,
    /// Its heartbeat is older than a few of its leases: it was killed or lost the store. It holds no job any more
    /// (the jobs it held go back to the queue as their leases run out).
    Gone,
}

/// A worker that heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerInfo {
    /// `<host>:<pid>:<start time>`.
    pub id: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its last heartbeat (RFC 3339).
    pub heartbeat_at: String,
    /// Alive, or gone once its heartbeat is older than three of its leases (`jobs.lease_secs`).
    pub state: WorkerState,
    /// Jobs it holds now (0 when it is gone).
    pub running: u32,
}

/// `envctl jobs stats --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobStats {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Jobs waiting for their parents.
    #[serde(default)]
    pub waiting: u64,
    /// Jobs waiting for a worker.
    pub queued: u64,
    /// Jobs waiting for their time.
    pub scheduled: u64,
    /// Jobs running (including cancelling).
    pub running: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Jobs dead after every attempt failed.
    pub dead: u64,
    /// Jobs skipped because a parent did not succeed or set `condition = false`.
    #[serde(default)]
    pub skipped: u64,
    /// Jobs finished in the last minute.
    pub finished_last_minute: u64,
    /// Jobs finished in the last hour.
    pub finished_last_hour: u64,
    /// Mean run time of the jobs finished in the last hour, in milliseconds.
    pub mean_run_ms: Option<f64>,
    /// Share of the jobs finished in the last hour that succeeded (0–1).
    pub success_rate: Option<f64>,
    /// Median time from queued (or due) to started, over the jobs finished in the last hour, in milliseconds.
    pub start_latency_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub start_latency_p99_ms: Option<f64>,
    /// Workers alive now, and those gone within the last hour, by id.
    pub workers: Vec<WorkerInfo>,
}

/// One test suite's result in `test_results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SuiteResult {
    /// Target.
    pub target: String,
    /// Service whose `test` command ran.
    pub service: String,
    /// The `test.run` job that ran it.
    pub job: String,
    /// Whether it passed.
    pub passed: bool,
    /// How long it ran, in seconds, when it started and finished.
    #[serde(default)]
    pub duration_secs: Option<f64>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
    /// The failing tests' names, when the runner printed them (pytest, cargo test, go test, jest, vitest).
    #[serde(default)]
    pub failed_tests: Vec<String>,
}

/// `test_results.json`: the last `envctl test` run's suites (what `test --failed` reruns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TestResults {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the run finished (RFC 3339).
    pub finished_at: String,
    /// Every suite, in the order they were enqueued.
    pub suites: Vec<SuiteResult>,
}

/// Whether the job runtime's managed Redis server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobServerStatus {
    /// Its recorded process (pid and start time) runs.
    Running,
    /// It ran, and its process is gone; the next command that opens the store starts it again on its data.
    Stopped,
    /// It has never run for this repository; the first command that opens the store starts it.
    NotStarted,
}

/// The Redis server envctl runs for a repository's job runtime when `[jobs] backend = "redis"` names no URL:
/// `job_server.json` in the scope directory (0600), and the `job_server` of `explain-startup`, `health`,
/// `endpoints` and `list-targets`. It carries no secret: the password is in `secrets/repository.jobs.password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobServer {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Running, stopped or not started yet.
    pub status: JobServerStatus,
    /// Its port (the port it would get, when not started).
    pub port: u16,
    /// The address it listens on (`jobs.bind`).
    pub bind: String,
    /// Its URL without the password.
    pub url: String,
    /// Where it keeps the queue (append-only file, fsync every second).
    pub data_dir: String,
    /// Its log.
    pub log_path: String,
    /// The `redis-server` it runs (or would run), when found.
    pub binary: Option<String>,
    /// Its process, while it runs.
    pub pid: Option<u32>,
    /// That process's start time (clock ticks since boot), so a reused pid is not mistaken for it.
    pub pid_start_time: Option<u64>,
    /// When it was last started (RFC 3339).
    pub started_at: Option<String>,
}

/// One variable jobs keep across runs (`envctl vars`, `/executions/{id}/variables/{key}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Variable {
    /// Its name.
    pub key: String,
    /// The target it belongs to; none for the whole repository.
    pub target: Option<String>,
    /// Its value.
    pub value: String,
}

/// `envctl vars list --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VariableList {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The variables, by target then key.
    pub variables: Vec<Variable>,
}
