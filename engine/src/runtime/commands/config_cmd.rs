//! `envctl config init | migrate | set KEY=VALUE`.

use crate::config::edit;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

/// `envctl config …`.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum ConfigCommand {
    /// Write a .envctl from what is detected in the repository (pyproject/uvicorn, package.json scripts).
    Init {
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Rewrite a Python-era KEY=VALUE .envctl as TOML, keeping the original as .envctl.legacy.bak.
    Migrate,
    /// Set one key in .envctl, keeping comments and layout; the result is validated before it is written.
    Set {
        /// The dotted key and value, e.g. services.backend.port=8100.
        #[arg(value_name = "KEY=VALUE")]
        assignment: String,
    },
}

/// Runs a `config` subcommand.
pub fn exec(rt: &EngineRuntime, command: &ConfigCommand) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    let printer = rt.printer();
    match command {
        ConfigCommand::Init { force } => {
            let outcome = edit::init(paths, *force)?;
            for service in &outcome.detected {
                printer.note(&format!("detected {}: {} ({})", service.name, service.command, service.reason));
            }
            if outcome.detected.is_empty() {
                printer.note("nothing runnable was detected; the file has a commented example service");
            }
            printer.note(&format!("wrote {}", outcome.file.display()));
        }
        ConfigCommand::Migrate => {
            let outcome = edit::migrate(paths)?;
            match &outcome.backup {
                None => printer.note(&format!("{} is already TOML; nothing to do", outcome.file.display())),
                Some(backup) => {
                    for warning in &outcome.warnings {
                        printer.warn(warning);
                    }
                    printer.note(&format!(
                        "wrote {} (the original is kept as {})",
                        outcome.file.display(),
                        backup.display()
                    ));
                }
            }
        }
        ConfigCommand::Set { assignment } => {
            let file = edit::set(paths, assignment)?;
            printer.note(&format!("set {assignment} in {}", file.display()));
        }
    }
    Ok(Outcome::Success)
}
