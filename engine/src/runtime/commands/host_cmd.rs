//! `envctl host` (hidden): the per-repository host process that `start` spawns detached.

use crate::host;
use crate::runtime::{EngineError, EngineRuntime, Outcome, block_on};

/// Arguments of `host`.
#[derive(Debug, clap::Args)]
pub struct HostArgs {}

/// Runs the host until it has nothing left to supervise or is told to stop.
pub fn exec(rt: &EngineRuntime, _args: &HostArgs) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    block_on(host::run(paths, std::future::pending()))?;
    Ok(Outcome::Success)
}
