//! `envctl host` (hidden): the per-repository host process that `start` spawns detached.

use std::path::Path;

use crate::runtime::cli::GlobalArgs;
use crate::runtime::{Cli, Command, EngineError, EngineRuntime, Outcome};

// Arguments of `host`.
#[derive(Debug, clap::Args)]
pub struct HostArgs {}

/// Runs the host until it has nothing left to supervise or is told to stop.
pub fn exec(rt: &EngineRuntime, _args: &HostArgs) -> Result<Outcome, EngineError> {
    // Nothing of the command that started it, and a session of its own, before anything else: the terminal
    // `start` ran in never signals the host.
    crate::host::launch::close_inherited();
    crate::supervisor::spawn::detach();
    let parts = rt.host_parts()?;
    // The `start` that spawned this host waits for this line on the host's stdout, then connects.
    let ready = || rt.printer().data("ready");
    rt.block_on(EngineRuntime::run_host(parts, ready, std::future::pending()))??;
    Ok(Outcome::Success)
}

/// What a host forked from a command runs ([`launch`](crate::host::launch)): `envctl host -C <repo>`, on a runtime
/// of its own built from the environment; its exit code.
pub fn forked(repo: &Path) -> u8 {
    let global = GlobalArgs { repo: Some(repo.to_owned()), ..GlobalArgs::default() };
    crate::runtime::run_cli(&Cli { global, command: Command::Host(HostArgs {}) })
}
