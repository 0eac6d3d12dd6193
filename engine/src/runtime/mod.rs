//! The composition root: [`EngineRuntime`] holds the ambient inputs (environment snapshot, working directory,
//! printer), loads [`Settings`] for the commands that need them, and dispatches each command to its module.
//! Outcomes map to exit codes in one place ([`exit_code`]).

pub mod cli;
mod commands;
mod error;
pub mod logging;

use std::path::PathBuf;

pub use cli::{Cli, Command, parse};
pub use error::EngineError;

use crate::config::{EnvVars, LoadOptions, Settings};
use crate::ui::{Printer, Verbosity};

/// How a command ended when it did not fail with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1; the command already said why (for example `show-state` with no state prints `{"found": false}`).
    Failure,
    /// Exit 2: interrupted or a controlled quit.
    Interrupted,
}

/// The exit code of a command's result: 0 success, 1 actionable failure, 2 interrupted.
pub fn exit_code(result: &Result<Outcome, EngineError>) -> u8 {
    match result {
        Ok(Outcome::Success) => 0,
        Ok(Outcome::Failure) | Err(_) => 1,
        Ok(Outcome::Interrupted) => 2,
    }
}

/// Runs a future to completion on a single-threaded runtime (commands are synchronous; the few that wait on
/// processes or sockets use this).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => panic!("cannot build the async runtime: {e}"),
    }
}

/// Everything a command needs from the outside world, gathered once.
#[derive(Debug, Clone)]
pub struct EngineRuntime {
    env: EnvVars,
    cwd: PathBuf,
    printer: Printer,
    load: LoadOptions,
}

impl EngineRuntime {
    /// Reads the process environment and working directory; applies the global flags of `cli`.
    pub fn from_process(cli: &Cli) -> Self {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let verbosity = match (cli.global.quiet, cli.global.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, _) => Verbosity::Verbose,
        };
        let start_dir = cli.global.repo.as_ref().map_or_else(|| cwd.clone(), |r| cwd.join(r));
        let load =
            LoadOptions { start_dir, config_file: cli.global.config.clone(), sets: cli.global.set.clone() };
        let env = EnvVars::from_process();
        let default = if matches!(cli.command, Command::Host(_)) {
            logging::LevelFilter::INFO
        } else {
            logging::LevelFilter::WARN
        };
        logging::init(logging::level(&env, cli.global.verbose, default));
        Self { env, cwd, printer: Printer::new(verbosity), load }
    }

    /// Runs one command.
    pub fn run(&self, command: &Command) -> Result<Outcome, EngineError> {
        commands::dispatch(self, command)
    }

    /// The printer.
    pub fn printer(&self) -> &Printer {
        &self.printer
    }

    /// The environment snapshot.
    pub fn env(&self) -> &EnvVars {
        &self.env
    }

    /// The directory the command runs in.
    pub fn cwd(&self) -> &PathBuf {
        &self.cwd
    }

    /// Loads the settings, printing their warnings.
    pub fn settings(&self) -> Result<Settings, EngineError> {
        let settings = Settings::load(&self.load, &self.env)?;
        for warning in &settings.warnings {
            self.printer.warn(warning);
        }
        Ok(settings)
    }

    /// Finds the repository's paths without reading the config (for commands that write it).
    pub fn paths(&self) -> Result<crate::config::Paths, EngineError> {
        Ok(crate::config::Paths::discover(&self.load.start_dir, self.load.config_file.as_deref(), &self.env)?)
    }
}
