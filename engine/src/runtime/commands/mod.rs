//! One file per command: its clap arguments and an `exec` that calls the engine and prints the result.

pub mod config_cmd;
pub mod explain_startup;
pub mod list_commands;
pub mod list_targets;
pub mod show_config;
pub mod show_state;

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
    }
}
