//! `envctl ports reset [--main | --tree NAME ... | --all]`: forgets the port leases of targets that do not run, so
//! their next start asks for the configured ports again.

use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

/// `envctl ports …`.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum PortsCommand {
    /// Forget the port leases of the selected targets (default: every target of this repository).
    Reset(ResetArgs),
}

// Arguments of `ports reset`.
#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// Which targets (default: all of them).
    #[command(flatten)]
    pub targets: TargetArgs,
}

/// Runs a `ports` subcommand.
pub fn exec(rt: &EngineRuntime, command: &PortsCommand) -> Result<Outcome, EngineError> {
    let PortsCommand::Reset(args) = command;
    let any_flag = args.targets.main || !args.targets.tree.is_empty();
    let names: Vec<String> = if any_flag {
        rt.select(&args.targets.selection())?.iter().map(|t| t.name.clone()).collect()
    } else {
        rt.targets()?.all.iter().map(|t| t.name.clone()).collect()
    };
    let running = rt.state()?.running_targets()?;
    if let Some(busy) = names.iter().find(|n| running.contains(n)) {
        return Err(EngineError::Failed(format!(
            "{busy} is running: its services hold their ports\nhint: `envctl stop --tree {busy}` (or `--main`) first, then reset its ports"
        )));
    }
    let repo = rt.paths()?.repo_root.display().to_string();
    let released = rt.ledger()?.release(|o| o.repo == repo && names.contains(&o.target))?;
    rt.printer().note(&format!("released {released} port lease(s) of {}", names.join(", ")));
    Ok(Outcome::Success)
}
