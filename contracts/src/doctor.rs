//! `runtime_readiness_report.json` and `envctl doctor --json`: every readiness check, its gate, outcome, finding,
//! evidence and fix; and the schemas embedded in the binary so `doctor` validates artifacts without reading any
//! file of the user's repository.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How one check (or one gate) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to check here (not configured, nothing running, or an earlier gate failed).
    Skip,
    /// It holds.
    Pass,
    /// It holds, but something needs attention (fails with `--strict`).
    Warn,
    /// It does not hold.
    Fail,
}

impl Outcome {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckReport {
    /// The gate it belongs to (`config`, `prerequisites`, `state_truth`, `requirements`, `services`,
    /// `job_runtime`, `contracts`).
    pub gate: String,
    /// Its name within the gate.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// One line on what it found.
    pub finding: String,
    /// What it looked at: path, pid, port, job id, version, latency — by name.
    pub evidence: BTreeMap<String, String>,
    /// What to do (a command to run), when it did not pass.
    pub hint: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
}

/// One gate: the worst outcome of its checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GateReport {
    /// Gate name.
    pub name: String,
    /// The worst outcome of its checks (skip when every check skipped).
    pub outcome: Outcome,
}

/// A safe repair `doctor --fix` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FixReport {
    /// `release_lease`, `remove_socket`, `requeue_job`, `forget_worker`.
    pub action: String,
    /// What it acted on (a port, a path, a job id, a worker id).
    pub subject: String,
    /// What was done.
    pub detail: String,
}

/// `runtime_readiness_report.json`, and `envctl doctor --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReadinessReport {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When it was made (RFC 3339).
    pub generated_at: String,
    /// The run of the saved state it checked, if any.
    pub run_id: Option<String>,
    /// The repository's scope directory, when one was found.
    pub scope_dir: Option<String>,
    /// Whether `--strict` was given (warnings fail).
    pub strict: bool,
    /// True when no gate failed (with `--strict`: none warned either).
    pub ok: bool,
    /// `ready`, `ready with warnings` or `not ready`.
    pub verdict: String,
    /// Every gate, in order.
    pub gates: Vec<GateReport>,
    /// Every check, in order.
    pub checks: Vec<CheckReport>,
    /// The repairs `--fix` made before this report's checks ran.
    #[serde(default)]
    pub fixes: Vec<FixReport>,
    /// How long the whole run took, in milliseconds.
    pub duration_ms: f64,
}

/// The checked-in JSON Schema of every artifact envctl keeps in a scope directory or a debug bundle, by file stem,
/// embedded in the binary (a test keeps `contracts/schemas/` fresh, so these are the types' schemas).
pub const ARTIFACT_SCHEMAS: &[(&str, &str)] = &[
    ("run_state", include_str!("../schemas/run_state.json")),
    ("runtime_map", include_str!("../schemas/runtime_map.json")),
    ("ports_manifest", include_str!("../schemas/ports_manifest.json")),
    ("error_report", include_str!("../schemas/error_report.json")),
    ("test_results", include_str!("../schemas/test_results.json")),
    ("event", include_str!("../schemas/event.json")),
    ("port_lease", include_str!("../schemas/port_lease.json")),
    ("runtime_readiness_report", include_str!("../schemas/runtime_readiness_report.json")),
    ("config_report", include_str!("../schemas/config_report.json")),
    ("bundle_manifest", include_str!("../schemas/bundle_manifest.json")),
    ("bundle_facts", include_str!("../schemas/bundle_facts.json")),
    ("bundle_job", include_str!("../schemas/bundle_job.json")),
    ("debug_report", include_str!("../schemas/debug_report.json")),
    ("job_server", include_str!("../schemas/job_server.json")),
];
