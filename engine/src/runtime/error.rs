//! [`EngineError`]: every domain's error, so the binary prints one message and maps one exit code.

use crate::config::ConfigError;
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
}
