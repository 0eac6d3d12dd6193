//! `envctl stop [targets] [--service S]` and `envctl stop-all`: through the host when it answers; otherwise
//! directly, from the saved state (each process checked by pid and start time first).

use crate::host::direct;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

// Arguments of `stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Which targets (default: every running target).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these services (repeatable).
    #[arg(long = "service", value_name = "S", add = super::completions::services())]
    pub services: Vec<String>,
}

// Arguments of `stop-all`.
#[derive(Debug, clap::Args)]
pub struct StopAllArgs {
    /// Also delete the requirements' data (every target's databases and Redis data, and the job queue of the
    /// managed job server); asks first.
    #[arg(long)]
    pub remove_data: bool,
    /// With `--remove-data`: do not ask (needed when there is no terminal to ask on).
    #[arg(long, requires = "remove_data")]
    pub yes: bool,
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

/// Stops everything (the managed job server too, keeping its queue unless `--remove-data`).
pub fn exec_all(rt: &EngineRuntime, args: &StopAllArgs) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    // Asked before anything stops: a refusal leaves everything as it was.
    if args.remove_data && !args.yes {
        let roots: Vec<String> =
            crate::requirements::data_roots(paths).iter().map(|d| d.display().to_string()).collect();
        let question = format!(
            "stop everything and delete every target's databases, Redis data and the job queue ({})?",
            roots.join(", ")
        );
        match rt.printer().confirm(&question) {
            Some(true) => {}
            Some(false) => {
                rt.printer().note("nothing stopped, nothing removed");
                return Ok(Outcome::Failure);
            }
            None => {
                return Err(EngineError::Failed(
                    "stop-all --remove-data deletes every target's databases, Redis data and the job queue, and there is no terminal to confirm on; nothing was stopped or removed\nhint: add --yes to confirm".into(),
                ));
            }
        }
    }
    say(rt, &rt.block_on(direct::stop(paths, &[], &[]))??);
    if let Some(server) = rt.block_on(crate::jobs::server::stop(paths))?? {
        let kept = if args.remove_data {
            String::new()
        } else {
            format!("; its queue stays in {}", server.data_dir.display())
        };
        rt.printer()
            .note(&format!("stopped the job server (pid {}, port {}){kept}", server.pid, server.port));
    }
    if args.remove_data {
        for dir in crate::requirements::remove_all_data(paths)? {
            rt.printer().note(&format!("removed {}", dir.display()));
        }
    }
    Ok(Outcome::Success)
}
