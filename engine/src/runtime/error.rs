//! [`EngineError`]: every domain's error, so the binary prints one message and maps one exit code.

use crate::config::ConfigError;
use crate::host::HostError;
use crate::host::client::ClientError;
use crate::jobs::StoreError;
use crate::plan::PlanError;
use crate::ports::PortError;
use crate::requirements::RequirementError;
use crate::startup::StartupError;
use crate::state::StateError;
use crate::targets::TargetError;

/// A command failed; the message says what, where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad or unreadable configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad target name or selection.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Ports could not be planned.
    #[error(transparent)]
    Port(#[from] PortError),
    /// A plan could not be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// State could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// A requirement's data could not be changed.
    #[error(transparent)]
    Requirement(#[from] RequirementError),
    /// A start could not begin.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The host could not run.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The host could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A debug bundle could not be written or read.
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// The job store failed.
    #[error(transparent)]
    Jobs(#[from] StoreError),
    /// The runtime API could not start.
    #[error(transparent)]
    RuntimeApi(#[from] crate::runtime_api::ApiError),
    /// The host answered with an error (its message is already the user's).
    #[error("{0}")]
    HostReply(String),
    /// The async runtime could not be built.
    #[error("cannot build the async runtime: {0}\nhint: check the process's limits (threads, open files)")]
    Runtime(std::io::Error),
    /// A named service does not exist.
    #[error("there is no service `{name}`{}\nhint: the services are: {}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default(), known.join(", "))]
    NoService {
        /// The name given.
        name: String,
        /// The closest known name.
        suggestion: Option<String>,
        /// Every service.
        known: Vec<String>,
    },
    /// A worktree could not be created or removed.
    #[error(transparent)]
    Worktree(#[from] crate::targets::worktree::WorktreeError),
    /// A service or requirement did not start (its reason and last log lines).
    #[error("{}", start_failure(.0))]
    StartFailed(Box<envctl_contracts::control::StartFailure>),
    /// A flag's value is not acceptable.
    #[error("{flag} `{value}` {why}\nhint: {hint}")]
    BadFlag {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: String,
        /// What is accepted.
        hint: String,
    },
    /// A command failed for a reason it explains (a service that did not start, an unhealthy target, …).
    #[error("{0}")]
    Failed(String),
}

impl From<crate::host::direct::StopError> for EngineError {
    fn from(e: crate::host::direct::StopError) -> Self {
        use crate::host::direct::StopError;
        match e {
            StopError::Client(e) => e.into(),
            StopError::State(e) => e.into(),
            StopError::Port(e) => e.into(),
            StopError::Host(message) => Self::HostReply(message),
        }
    }
}

/// A start failure as the user reads it: what failed and why, the last log lines, what to do.
fn start_failure(failure: &envctl_contracts::control::StartFailure) -> String {
    use std::fmt::Write as _;
    let mut message = format!("{}/{} failed: {}", failure.target, failure.service, failure.reason);
    if let Some(path) = &failure.log_path {
        let _ = write!(message, "\nlast log lines ({path}):");
        if failure.log_tail.is_empty() {
            message.push_str("\n  (the log is empty)");
        }
        for line in &failure.log_tail {
            let _ = write!(message, "\n  {line}");
        }
    }
    let _ = write!(
        message,
        "\nhint: fix it and run `envctl start` again; `envctl logs --service {}` shows the whole log",
        failure.service
    );
    message
}
