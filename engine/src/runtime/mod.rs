//! The composition root: [`EngineRuntime`] gathers the ambient inputs once (environment snapshot, working
//! directory, global flags), builds what operations need — [`Settings`], the repository's [`Targets`], the
//! [`StateRepository`], the port [`Ledger`], the job-store factory, one tokio runtime, a root
//! [`CancellationToken`] and [`TaskTracker`] — each once and on first use, and composes the host process. Commands
//! (`runtime/commands/`) turn their arguments into options and call one engine operation with what this hands
//! them. Outcomes map to exit codes in one place ([`exit_code`]).

pub mod cli;
mod commands;
mod error;
pub mod logging;

use std::cell::OnceCell;
use std::path::PathBuf;
use std::sync::Arc;

pub use cli::{Cli, Command, completion_env, parse};
pub use commands::host_cmd::forked as host_process;
pub use error::EngineError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{EnvVars, LoadOptions, Paths, Settings};
use crate::host::HostParts;
use crate::jobs::{JobStore, StoreFactory};
use crate::ports::Ledger;
use crate::state::StateRepository;
use crate::targets::{Selection, Target, Targets};
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
    /// Exit 3: what was asked for does not exist (`envctl job var get` of a missing variable); the command
    /// already said so.
    NotFound,
}

/// Runs `cli` as the `envctl` binary does: a runtime from the process's environment, the command, its error on
/// stderr; its exit code. `main` and a host forked from a command ([`crate::host::launch`]) both run this.
pub fn run_cli(cli: &Cli) -> u8 {
    use std::io::Write as _;
    let result = EngineRuntime::from_process(cli).run(&cli.command);
    if let Err(err) = &result {
        let _ = writeln!(std::io::stderr(), "error: {err}");
    }
    exit_code(&result)
}

/// The exit code of a command's result: 0 success, 1 actionable failure, 2 interrupted, 3 not found.
pub fn exit_code(result: &Result<Outcome, EngineError>) -> u8 {
    match result {
        Ok(Outcome::Success) => 0,
        Ok(Outcome::Failure) | Err(_) => 1,
        Ok(Outcome::Interrupted) => 2,
        Ok(Outcome::NotFound) => 3,
    }
}

/// Builds `cell`'s value once with `build`, keeping it only when it succeeds.
fn once<T, E>(cell: &OnceCell<T>, build: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
    if let Some(value) = cell.get() {
        return Ok(value);
    }
    let value = build()?;
    Ok(cell.get_or_init(|| value))
}

/// Everything a command needs from the outside world, gathered once, and what is built from it, built once.
pub struct EngineRuntime {
    env: EnvVars,
    cwd: PathBuf,
    printer: Printer,
    load: LoadOptions,
    settings: OnceCell<Settings>,
    paths: OnceCell<Paths>,
    targets: OnceCell<Targets>,
    store: OnceCell<Arc<dyn JobStore>>,
    tokio: OnceCell<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for EngineRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineRuntime")
            .field("env", &self.env)
            .field("cwd", &self.cwd)
            .field("load", &self.load)
            .field("settings", &self.settings.get().map(|s| &s.paths))
            .field("store_open", &self.store.get().is_some())
            .finish_non_exhaustive()
    }
}

/// The most threads a command's runtime runs blocking work on (fork and exec, `/proc` scans, store calls, a
/// requirement's start). Tokio's default, 512, is what a host starting 1,000 services at once would create — and
/// then keep, since its idle threads are woken in turn by the periodic store polls and never reach their idle
/// timeout. 32 leaves room for every requirement of several targets starting side by side.
pub const BLOCKING_THREADS: usize = 32;

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
        Self::new(env, cwd, Printer::new(verbosity).with_color(!cli.global.no_color), load)
    }

    /// A runtime over explicit inputs (tests).
    pub fn new(env: EnvVars, cwd: PathBuf, printer: Printer, load: LoadOptions) -> Self {
        Self {
            env,
            cwd,
            printer,
            load,
            settings: OnceCell::new(),
            paths: OnceCell::new(),
            targets: OnceCell::new(),
            store: OnceCell::new(),
            tokio: OnceCell::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Runs one command.
    pub fn run(&self, command: &Command) -> Result<Outcome, EngineError> {
        let result = commands::dispatch(self, command);
        self.shutdown.cancel();
        self.tracker.close();
        result
    }

    /// Whether output may be coloured: not with `--no-color`, nor when NO_COLOR is set (to anything but "").
    pub fn color(&self) -> bool {
        self.printer.color() && self.env.get("NO_COLOR").is_none_or(str::is_empty)
    }

    /// The config file `--config` named, if any.
    pub fn config_file(&self) -> Option<&std::path::Path> {
        self.load.config_file.as_deref()
    }

    /// The printer.
    pub fn printer(&self) -> &Printer {
        &self.printer
    }

    /// The environment snapshot: the only way the engine sees the environment.
    pub fn env(&self) -> &EnvVars {
        &self.env
    }

    /// The directory the command runs in.
    pub fn cwd(&self) -> &std::path::Path {
        &self.cwd
    }

    /// The settings, loaded once (their warnings printed once).
    /// The `--set` overrides this command was given (kept by long-running workers across a reload).
    pub fn sets(&self) -> &[String] {
        &self.load.sets
    }

    /// The settings.
    pub fn settings(&self) -> Result<&Settings, EngineError> {
        once(&self.settings, || {
            let settings = Settings::load(&self.load, &self.env)?;
            for warning in &settings.warnings {
                self.printer.warn(warning);
            }
            Ok(settings)
        })
    }

    /// [`Settings::digest`] of the configuration: the loaded settings', or found without parsing the file.
    pub fn config_digest(&self) -> Result<String, EngineError> {
        match self.settings.get() {
            Some(settings) => Ok(settings.digest.clone()),
            None => Ok(Settings::digest(&self.load, &self.env)?),
        }
    }

    /// The repository's paths: the settings' when they are loaded, otherwise found without reading the config
    /// (commands that must work with a broken config: `stop`, `logs`, `config set`).
    pub fn paths(&self) -> Result<&Paths, EngineError> {
        if let Some(settings) = self.settings.get() {
            return Ok(&settings.paths);
        }
        once(&self.paths, || {
            Ok(Paths::discover(&self.load.start_dir, self.load.config_file.as_deref(), &self.env)?)
        })
    }

    /// Main and every worktree, read once.
    pub fn targets(&self) -> Result<&Targets, EngineError> {
        let settings = self.settings()?;
        once(&self.targets, || Ok(Targets::discover(&settings.paths, &settings.config.project.trees_dir)))
    }

    /// The targets `selection` names (the configured default mode when it names none).
    pub fn select(&self, selection: &Selection) -> Result<Vec<&Target>, EngineError> {
        let mode = self.settings()?.config.project.default_mode;
        Ok(self.targets()?.select(selection, mode)?)
    }

    /// The scope's artifacts.
    pub fn state(&self) -> Result<StateRepository, EngineError> {
        Ok(StateRepository::new(&self.paths()?.scope_dir).keeping(self.keep_runs()))
    }

    /// How many run copies to keep (`ENVCTL_KEEP_RUNS`).
    fn keep_runs(&self) -> usize {
        self.env
            .get("ENVCTL_KEEP_RUNS")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(crate::state::KEEP_RUNS)
    }

    /// The machine-wide port leases.
    pub fn ledger(&self) -> Result<Ledger, EngineError> {
        Ok(Ledger::new(&self.paths()?.ledger_dir))
    }

    /// Which job store the settings name.
    pub fn job_stores(&self) -> Result<StoreFactory, EngineError> {
        Ok(StoreFactory::from_settings(self.settings()?, self.env.get("PATH"))?)
    }

    /// The repository's job store, opened once.
    pub fn job_store(&self) -> Result<Arc<dyn JobStore>, EngineError> {
        let stores = self.job_stores()?;
        once(&self.store, || stores.open()).map(Arc::clone).map_err(EngineError::from)
    }

    /// Runs `future` to completion on this command's one tokio runtime (built on first use).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> Result<F::Output, EngineError> {
        Ok(self.tokio()?.block_on(future))
    }

    /// This command's one tokio runtime (current-thread, built on first use).
    pub fn tokio(&self) -> Result<&tokio::runtime::Runtime, EngineError> {
        once(&self.tokio, || {
            crate::host::launch::building_async_runtime();
            tokio::runtime::Builder::new_current_thread()
                .max_blocking_threads(BLOCKING_THREADS)
                .enable_all()
                .build()
                .map_err(EngineError::Runtime)
        })
    }

    /// What the host process is built from.
    pub fn host_parts(&self) -> Result<HostParts, EngineError> {
        let paths = self.paths()?.clone();
        Ok(HostParts {
            state: StateRepository::new(&paths.scope_dir).keeping(self.keep_runs()),
            ledger: Ledger::new(&paths.ledger_dir),
            paths,
            env: self.env.clone(),
            token: self.shutdown.child_token(),
            tracker: self.tracker.clone(),
        })
    }

    /// Runs the host of this repository, composed with the startup orchestrator, until `stop` completes or it has
    /// nothing left to do.
    /// `ready` runs once the control socket accepts connections.
    pub async fn run_host(
        parts: HostParts,
        ready: impl FnOnce(),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), EngineError> {
        let orchestrator = Arc::new(crate::startup::Startup);
        Ok(crate::host::run(parts, orchestrator, ready, stop).await?)
    }
}
