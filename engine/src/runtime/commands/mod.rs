//! One file per command: its clap arguments and an `exec` that calls the engine and prints the result.

pub mod blast_all;
pub mod config_cmd;
pub mod endpoints;
pub mod env_cmd;
pub mod errors;
pub mod explain_startup;
mod foreground;
pub mod health;
pub mod host_cmd;
pub mod jobs;
pub mod list_commands;
pub mod list_targets;
pub mod logs;
pub mod restart;
pub mod resume;
pub mod show_config;
pub mod show_state;
pub mod start;
pub mod stop;
pub mod test_cmd;
pub mod worker_cmd;
pub mod worktree;

use super::{Command, EngineError, EngineRuntime, Outcome};

/// Runs one command.
pub fn dispatch(rt: &EngineRuntime, command: &Command) -> Result<Outcome, EngineError> {
    match command {
        Command::ListCommands(args) => list_commands::exec(rt, args),
        Command::ShowConfig(args) => show_config::exec(rt, args),
        Command::ListTargets(args) => list_targets::exec(rt, args),
        Command::ShowState(args) => show_state::exec(rt, args),
        Command::ExplainStartup(args) => explain_startup::exec(rt, args),
        Command::Config(sub) => config_cmd::exec(rt, sub),
        Command::Start(args) => start::exec(rt, args),
        Command::Stop(args) => stop::exec(rt, args),
        Command::StopAll(args) => stop::exec_all(rt, args),
        Command::Restart(args) => restart::exec(rt, args),
        Command::Resume(args) => resume::exec(rt, args),
        Command::BlastAll(args) => blast_all::exec(rt, args),
        Command::Logs(args) => logs::exec(rt, args),
        Command::ClearLogs(args) => logs::exec_clear(rt, args),
        Command::Health(args) => health::exec(rt, args),
        Command::Errors(args) => errors::exec(rt, args),
        Command::Endpoints(args) => endpoints::exec(rt, args),
        Command::Env(args) => env_cmd::exec(rt, args),
        Command::Worktree(sub) => worktree::exec(rt, sub),
        Command::Host(args) => host_cmd::exec(rt, args),
        Command::Jobs(sub) => jobs::exec(rt, sub),
        Command::Worker(args) => worker_cmd::exec(rt, args),
        Command::Test(args) => test_cmd::exec(rt, args),
    }
}
