//! `envctl host` (hidden): the per-repository host process that `start` spawns detached.

use std::io::Write as _;
use std::path::Path;

use crate::config::{EnvVars, LoadOptions};
use crate::runtime::{Command, EngineError, EngineRuntime, Outcome, exit_code, logging};
use crate::ui::{Printer, Verbosity};

/// Arguments of `host`.
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

/// What a host forked from a command runs ([`launch`](crate::host::launch)): what `envctl host -C <repo>` runs, on
/// a runtime of its own built from the environment, logging at the host's level; its exit code.
pub fn forked(repo: &Path) -> u8 {
    let env = EnvVars::from_process();
    logging::set_level(logging::level(&env, 0, logging::LevelFilter::INFO));
    let cwd = std::env::current_dir().unwrap_or_else(|_| repo.to_owned());
    let load = LoadOptions { start_dir: repo.to_owned(), config_file: None, sets: Vec::new() };
    let rt = EngineRuntime::new(env, cwd, Printer::new(Verbosity::Normal), load);
    let result = rt.run(&Command::Host(HostArgs {}));
    if let Err(err) = &result {
        // As `main` says it, into the host log the command that forked this host quotes when it does not start.
        let _ = writeln!(std::io::stderr(), "error: {err}");
    }
    exit_code(&result)
}
