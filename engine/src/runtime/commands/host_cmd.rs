//! `envctl host` (hidden): the per-repository host process that `start` spawns detached.

use crate::runtime::{EngineError, EngineRuntime, Outcome};

/// Arguments of `host`.
#[derive(Debug, clap::Args)]
pub struct HostArgs {}

/// Runs the host until it has nothing left to supervise or is told to stop.
pub fn exec(rt: &EngineRuntime, _args: &HostArgs) -> Result<Outcome, EngineError> {
    // A session of its own before anything else: the terminal `start` ran in never signals the host.
    crate::supervisor::spawn::detach();
    let parts = rt.host_parts()?;
    // The `start` that spawned this host waits for this line on the host's stdout, then connects.
    let ready = || rt.printer().data("ready");
    rt.block_on(EngineRuntime::run_host(parts, ready, std::future::pending()))??;
    Ok(Outcome::Success)
}
