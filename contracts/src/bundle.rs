//! Debug bundles: `manifest.json` and `facts.json` inside a `debug-pack` bundle, each job's file in it, and
//! `envctl debug-report --json`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::jobs::{Job, JobLogLine};

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BundleFile {
    /// Its path inside the bundle, below the bundle's top directory (`logs/main.web.log`).
    pub path: String,
    /// Its size in bytes, as stored (after redaction).
    pub size: u64,
    /// The sha256 of its bytes, lower-case hex.
    pub sha256: String,
}

/// What redaction replaced while the bundle was made: how many values each rule replaced, never the values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RedactionSummary {
    /// Replacements by rule name (`secret_key`, `url_userinfo`, `jwt`, `github_token`, …); every rule is listed,
    /// with 0 when it replaced nothing.
    pub rules: BTreeMap<String, u64>,
    /// The sum of `rules`.
    pub total: u64,
}

/// `manifest.json`: what a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BundleManifest {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The envctl that made it.
    pub envctl_version: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// The run it describes, when one was saved.
    pub run_id: Option<String>,
    /// That run's targets.
    pub targets: Vec<String>,
    /// The repository root.
    pub repo_root: Option<String>,
    /// The scope directory it was read from.
    pub scope_dir: String,
    /// At most this many bytes were taken from the end of each log.
    pub log_bytes: u64,
    /// Every other file of the bundle, in the order they were written.
    pub files: Vec<BundleFile>,
    /// What redaction replaced.
    pub redaction: RedactionSummary,
    /// What could not be collected, and why (a store that did not open, a log that could not be read…).
    pub notes: Vec<String>,
}

/// One process envctl started (or a descendant of one), as `/proc` showed it when the bundle was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessFact {
    /// Whose it is: `target/service`, or `host`.
    pub owner: String,
    /// Process id.
    pub pid: u32,
    /// Parent process id (when it runs).
    pub ppid: Option<u32>,
    /// Start time in clock ticks since boot.
    pub start_time: Option<u64>,
    /// Whether the recorded pid still runs with its recorded start time (descendants: whether they run).
    pub alive: bool,
    /// The kernel's state letter (`S` sleeping, `R` running, `Z` zombie, …), when it runs.
    pub state: Option<String>,
    /// Resident memory in bytes, when it runs.
    pub rss_bytes: Option<u64>,
    /// Its command line, redacted.
    pub argv: Vec<String>,
}

/// A process listening on a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Listener {
    /// Process id.
    pub pid: u32,
    /// Its command line, redacted.
    pub argv: Vec<String>,
    /// Whether envctl started it (a recorded process, a descendant of one, or the host).
    pub ours: bool,
}

/// One port the run planned or this repository leases, and who holds and listens on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortFact {
    /// The port.
    pub port: u16,
    /// The target it is planned or leased for.
    pub target: String,
    /// The service or requirement it is planned or leased for.
    pub service: String,
    /// The pid holding its lease in the ledger, when leased.
    pub lease_pid: Option<u32>,
    /// Whether that holder still runs (pid and start time).
    pub lease_alive: Option<bool>,
    /// The processes listening on it now (empty when none, or when they are another user's).
    pub listeners: Vec<Listener>,
}

/// The machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SystemFacts {
    /// Operating system and version.
    pub os: Option<String>,
    /// Kernel version.
    pub kernel: Option<String>,
    /// Logical CPUs available to envctl.
    pub cpus: usize,
    /// Physical cores.
    pub physical_cores: Option<usize>,
    /// Memory in bytes.
    pub memory_total_bytes: u64,
    /// Memory available in bytes.
    pub memory_available_bytes: u64,
    /// The mount point of the file system holding the scope directory.
    pub disk_mount: Option<String>,
    /// Its size in bytes.
    pub disk_total_bytes: Option<u64>,
    /// Its free space in bytes.
    pub disk_available_bytes: Option<u64>,
}

/// `facts.json`: what the machine said when the bundle was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BundleFacts {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The process tree of what envctl started, and the host.
    pub processes: Vec<ProcessFact>,
    /// Every planned or leased port of the repository, with its owner and listeners.
    pub ports: Vec<PortFact>,
    /// `git`, `postgres` and `redis-server` versions (`None` when not found).
    pub versions: BTreeMap<String, Option<String>>,
    /// The machine.
    pub system: SystemFacts,
}

/// `jobs/<id>.json`: one job record and its log, redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BundleJob {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The job.
    pub job: Job,
    /// Its log lines.
    pub logs: Vec<JobLogLine>,
}

/// One probable cause in a debug report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// Its class: `missing_binary`, `port_conflict`, `disk_full`, `crash_loop`, `requirement_failed`,
    /// `readiness_timeout`, `stuck_jobs`, `dead_jobs`, `stale_state`, `failure`, `doctor_check` (any other failing
    /// doctor check), `bundle_damaged`.
    pub kind: String,
    /// How sure the report is, 0–100; findings are sorted by it, most likely first.
    pub score: u32,
    /// One line: what is wrong and where.
    pub title: String,
    /// What points to it (lines of artifacts, logs, facts).
    pub evidence: Vec<String>,
    /// What to do.
    pub fix: String,
}

/// One event of the run's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TimelineEntry {
    /// When (RFC 3339).
    pub at: String,
    /// `target/service`, or empty for the run itself.
    pub subject: String,
    /// The event's name (`service.ready`, `run.failed`, …).
    pub event: String,
}

/// How long one phase of the run took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Phase {
    /// `run`, or `target/service` (from its first `service.starting` to its `service.ready`).
    pub name: String,
    /// Milliseconds.
    pub ms: f64,
}

/// `envctl debug-report --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DebugReport {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The bundle read.
    pub bundle: String,
    /// The run it describes.
    pub run_id: Option<String>,
    /// Probable causes, most likely first (empty when nothing looks wrong).
    pub findings: Vec<Finding>,
    /// The run's events in order.
    pub timeline: Vec<TimelineEntry>,
    /// The slowest phases, slowest first.
    pub slowest: Vec<Phase>,
}
