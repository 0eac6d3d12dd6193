//! `envctl stop [targets] [--service S]` and `envctl stop-all`: through the host when it answers; otherwise
//! directly, from the saved state (each process checked by pid and start time first).

use crate::host::direct;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

/// Arguments of `stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Which targets (default: every running target).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these services (repeatable).
    #[arg(long = "service", value_name = "S", add = super::completions::services())]
    pub services: Vec<String>,
}

/// Arguments of `stop-all`.
#[derive(Debug, clap::Args)]
pub struct StopAllArgs {
    /// Also delete the requirements' data (every target's databases and Redis data).
    #[arg(long)]
    pub remove_data: bool,
}

fn say(rt: &EngineRuntime, report: &direct::Stopped) {
    if let Some(note) = &report.recovered {
        rt.printer().warn(note);
    }
    let stopped = &report.stopped;
    if stopped.is_empty() {
        rt.printer().note("nothing was running");
    } else {
        rt.printer().note(&format!("stopped {}", stopped.join(", ")));
    }
    if let Some(why) = &report.stale {
        rt.printer().warn(&format!(
            "the saved state could not be updated ({why}); it still names what was stopped and is stale until envctl's runtime directory is writable again (then run `envctl stop-all` once more)"
        ));
    }
}

/// Stops the selected services.
pub fn exec(rt: &EngineRuntime, args: &StopArgs) -> Result<Outcome, EngineError> {
    // No flag (or --all) stops every target; naming them needs no saved state, so a torn one stops nothing here.
    let any_flag = args.targets.main || !args.targets.tree.is_empty();
    let targets = if any_flag && !args.targets.all { args.targets.names_among(&[])? } else { Vec::new() };
    let stopped = rt.block_on(direct::stop(rt.paths()?, &targets, &args.services))??;
    say(rt, &stopped);
    Ok(Outcome::Success)
}

/// Stops everything.
pub fn exec_all(rt: &EngineRuntime, args: &StopAllArgs) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    say(rt, &rt.block_on(direct::stop(paths, &[], &[]))??);
    if args.remove_data {
        for dir in crate::requirements::remove_all_data(paths)? {
            rt.printer().note(&format!("removed {}", dir.display()));
        }
    }
    Ok(Outcome::Success)
}
