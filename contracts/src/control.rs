//! The host's control protocol: newline-delimited JSON over the scope's Unix socket. The CLI writes one
//! [`Request`] line; the host answers with zero or more [`Reply::Progress`] lines and one final reply.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::state::{HostRecord, ServiceRecord, ServiceStatus};

/// What the CLI asks the host.
#[allow(clippy::large_enum_variant)] // a wire message, built once per command
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start (or reuse) services of some targets.
    Start(StartRequest),
    /// Adopt what still runs from the saved state and restart what does not.
    Resume(ResumeRequest),
    /// Stop services.
    Stop(StopRequest),
    /// Report what runs.
    Status,
    /// Stop everything and exit.
    Shutdown,
    /// Follow what runs: the host answers with a [`Reply::View`] at once and another each time something changes
    /// (a status, a restart, a probe result, a job's progress), until the client hangs up. Never a final reply.
    Watch,
}

impl Request {
    /// Reads one request line. A `start` or `resume`, which carries the whole configuration, is read straight into
    /// its type once its tag is known: the derived reader of a tagged enum first copies the whole message into a
    /// generic tree, which for a configuration of many services costs more than reading it.
    pub fn from_line(line: &str) -> serde_json::Result<Self> {
        // The tag alone, every other field skipped unread; when it cannot be read, the derived reader says why.
        #[derive(Deserialize)]
        struct Tag {
            op: String,
        }
        match serde_json::from_str::<Tag>(line).ok().map(|t| t.op).as_deref() {
            Some("start") => serde_json::from_str(line).map(Self::Start),
            Some("resume") => serde_json::from_str(line).map(Self::Resume),
            _ => serde_json::from_str(line),
        }
    }
}

impl Reply {
    /// Reads one reply line; a start's outcome and a dashboard's view, which carry every service, straight into
    /// their types (as [`Request::from_line`]).
    pub fn from_line(line: &str) -> serde_json::Result<Self> {
        #[derive(Deserialize)]
        struct Tag {
            reply: String,
        }
        match serde_json::from_str::<Tag>(line).ok().map(|t| t.reply).as_deref() {
            Some("started") => serde_json::from_str(line).map(Self::Started),
            Some("view") => serde_json::from_str(line).map(Self::View),
            _ => serde_json::from_str(line),
        }
    }
}

/// `start`, `restart` and `resume`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StartRequest {
    /// The command the user ran (`start`, `restart`, `resume`).
    pub command: String,
    /// The resolved configuration of the CLI that asks; none when the host is to use the one it holds under
    /// `config_digest` (it answers [`Reply::ConfigNeeded`] when it holds none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
    /// A digest of everything the configuration was read from (the file's text, the overrides, envctl's version):
    /// the same digest, the same configuration. With `config`, the host keeps the pair for the next request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    /// The warnings reading the configuration gave, which the host repeats when it uses the one it holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_warnings: Vec<String>,
    /// Targets to start, as the CLI selected them.
    pub targets: Vec<SelectedTarget>,
    /// The host selects the targets itself: every target it has services of (`targets` is then empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub running_targets: bool,
    /// Only these services (and what they depend on); all when empty.
    pub services: Vec<String>,
    /// The environment services inherit (the asking shell's).
    pub env: BTreeMap<String, String>,
    /// Restart services even when an identical one already runs.
    pub no_resume: bool,
    /// Restart exactly these services (of `services`) even when identical ones run; what they depend on is
    /// reused when it runs.
    #[serde(default)]
    pub restart: Vec<String>,
    /// Also restart the services that depend on `restart`'s, directly or not.
    #[serde(default)]
    pub with_dependents: bool,
    /// Start no requirements (services only).
    #[serde(default)]
    pub no_deps: bool,
    /// Start only the requirements.
    #[serde(default)]
    pub deps_only: bool,
}

/// A target the CLI selected, with what the host needs to plan it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SelectedTarget {
    /// `main` or the worktree's name.
    pub name: String,
    /// Main or worktree.
    pub kind: crate::targets::TargetKind,
    /// The checkout's directory.
    pub root: String,
    /// Checked-out branch, if any.
    pub branch: Option<String>,
    /// Port slot (0 for main).
    pub slot: u16,
}

/// `resume`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ResumeRequest {
    /// The environment restarted services inherit (the asking shell's).
    pub env: BTreeMap<String, String>,
    /// The configuration as the asking command loaded it (the host's job worker runs with it); none when it
    /// does not load.
    #[serde(default)]
    pub config: Option<crate::config::Config>,
}

/// `stop`, `stop-all`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StopRequest {
    /// Targets to stop; every target when empty.
    pub targets: Vec<String>,
    /// Only these services; all when empty.
    pub services: Vec<String>,
}

/// One step of progress.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Progress {
    /// Target.
    pub target: String,
    /// Service.
    pub service: String,
    /// New status.
    pub status: ServiceStatus,
    /// Detail (URL, reason).
    pub detail: String,
    /// Milliseconds since the request arrived.
    pub elapsed_ms: u64,
    /// A line a step printed while it runs (a seed's output), shown as it comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Why a start failed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StartFailure {
    /// Target.
    pub target: String,
    /// The service that failed.
    pub service: String,
    /// Why.
    pub reason: String,
    /// Its log file.
    pub log_path: Option<String>,
    /// Its last log lines.
    pub log_tail: Vec<String>,
}

/// The answer to a start or a resume.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct StartOutcome {
    /// The run this start belongs to.
    pub run_id: String,
    /// Services of the requested targets after the start, without their specs; after a restart of named
    /// services, only the services it started.
    pub services: Vec<ServiceRecord>,
    /// `target/service` of services that were already running identically and were kept (or adopted).
    pub reused: Vec<String>,
    /// `target/service` of services that were started (or restarted by a resume).
    pub started: Vec<String>,
    /// Problems that did not fail the command (a live service whose port nothing of it listens on, …).
    pub warnings: Vec<String>,
    /// What the start did that is worth knowing (how a database was made and how long it took, …).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The failure, when the start failed.
    pub failure: Option<StartFailure>,
    /// The URL of each requirement of each planned target (target → requirement → URL).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requirement_urls: BTreeMap<String, BTreeMap<String, String>>,
}

/// The final reply.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// A step of progress (not final).
    Progress(Progress),
    /// A start finished.
    Started(StartOutcome),
    /// A stop finished.
    Stopped {
        /// `target/service` of each stopped service.
        stopped: Vec<String>,
        /// Whether the host exits now that nothing runs.
        host_exiting: bool,
    },
    /// What runs.
    Status {
        /// The host.
        host: HostRecord,
        /// The current run.
        run_id: String,
        /// Every supervised service.
        services: Vec<ServiceRecord>,
    },
    /// What runs now (the answer to [`Request::Watch`], sent again on every change).
    View(HostView),
    /// The host holds no configuration under the request's digest (or cannot select its targets with the one
    /// it holds): ask again with the configuration.
    ConfigNeeded,
    /// The request could not be carried out.
    Error {
        /// Why.
        message: String,
    },
}

/// Everything the dashboard shows, as the host sees it at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HostView {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Grows by one with every view the host sends on this connection.
    pub seq: u64,
    /// The host; none when no host runs (a view read from the saved state).
    pub host: Option<HostRecord>,
    /// The current run.
    pub run_id: String,
    /// Every service and requirement process, supervised or retained with its last status, without its spec
    /// (which carries the environment and its secrets).
    pub services: Vec<ServiceRecord>,
    /// The job store's queue; none when the host has not opened it (no start yet) or it cannot be read.
    pub jobs: Option<JobsView>,
}

/// The job queue as the dashboard shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobsView {
    /// Jobs waiting for a worker.
    pub queued: u64,
    /// Jobs waiting for their time.
    pub scheduled: u64,
    /// Jobs running (including cancelling).
    pub running: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Jobs dead after every attempt failed.
    pub dead: u64,
    /// The running jobs with their progress (at most 20).
    pub active: Vec<crate::jobs::Job>,
    /// The latest failed or dead jobs, newest first (at most 5).
    pub failures: Vec<crate::jobs::Job>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message reads back as the derived reader reads it, whichever path `from_line` takes, and with its
    /// tag anywhere in the object.
    #[test]
    fn a_message_reads_the_same_by_its_tag_as_by_the_derived_reader() {
        let requests = [
            serde_json::json!({"op": "status"}),
            serde_json::json!({"op": "stop", "targets": ["main"], "services": []}),
            serde_json::json!({"env": {"A": "1"}, "config": null, "op": "resume"}),
        ];
        for line in requests.iter().map(serde_json::Value::to_string) {
            let ours = serde_json::to_value(Request::from_line(&line).expect("reads")).expect("json");
            let derived =
                serde_json::to_value(serde_json::from_str::<Request>(&line).expect("reads")).expect("json");
            assert_eq!(ours, derived, "{line}");
        }
        let started = serde_json::to_string(&Reply::Started(StartOutcome {
            run_id: "run-1".into(),
            started: vec!["main/web".into()],
            ..StartOutcome::default()
        }))
        .expect("json");
        let stopped = serde_json::json!({"host_exiting": true, "reply": "stopped", "stopped": ["main/web"]})
            .to_string();
        for line in [started, stopped] {
            let ours = serde_json::to_value(Reply::from_line(&line).expect("reads")).expect("json");
            let derived =
                serde_json::to_value(serde_json::from_str::<Reply>(&line).expect("reads")).expect("json");
            assert_eq!(ours, derived, "{line}");
        }
    }

    /// A start that is not one (a field of the wrong type) and an unknown tag are refused, as before.
    #[test]
    fn a_malformed_message_is_refused_whichever_path_reads_it() {
        assert!(Request::from_line(r#"{"op": "start", "command": 5}"#).is_err());
        assert!(Request::from_line(r#"{"op": "explode"}"#).is_err());
        assert!(Request::from_line("not json").is_err());
        assert!(Reply::from_line(r#"{"reply": "started", "run_id": []}"#).is_err());
    }
}
