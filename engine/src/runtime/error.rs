//! [`EngineError`]: every domain's error, so the binary prints one message and maps one exit code.

use crate::config::ConfigError;
use crate::host::HostError;
use crate::host::client::ClientError;
use crate::ports::PortError;
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
    /// State could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The host could not run.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The host could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A command failed for a reason it explains (a service that did not start, an unhealthy target, …).
    #[error("{0}")]
    Failed(String),
}
