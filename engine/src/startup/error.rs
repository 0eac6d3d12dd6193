//! [`StartupError`]: why a start or resume could not be carried out at all (a service that fails to start is a
//! `StartFailure` in the outcome, with its log tail, not an error).

use crate::ports::PortError;

/// A start or resume could not begin.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The ports could not be leased.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The plan has problems (a placeholder that cannot be filled in, a dependency that does not run there).
    #[error("{}", problems.join("\n"))]
    Plan {
        /// Each problem, naming its target and key.
        problems: Vec<String>,
    },
    /// There is nothing to resume.
    #[error(
        "there is no saved state to resume (nothing has been started in this repository)\nhint: `envctl start` starts it"
    )]
    NothingToResume,
    /// The last run ended with nothing left running (it was stopped, or ran in the foreground).
    #[error(
        "nothing to resume: the last run ({run_id}, `envctl {command}`) has nothing left running\nhint: `envctl start` starts it again"
    )]
    NothingRunning {
        /// The last run.
        run_id: String,
        /// The command that made it.
        command: String,
    },
    /// A blocking step of the start could not be run.
    #[error("the host could not run a step of the start: {0}")]
    Task(String),
}
