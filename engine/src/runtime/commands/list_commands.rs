//! `envctl list-commands [--json]`: read from the command tree itself, so it lists exactly what exists.

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::commands::{CommandInfo, CommandList};

use crate::runtime::{EngineError, EngineRuntime, Outcome, cli};

// Arguments of `list-commands`.
#[derive(Debug, clap::Args)]
pub struct ListCommandsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn collect(command: &clap::Command, prefix: &str, out: &mut Vec<CommandInfo>) {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let name = if prefix.is_empty() {
            sub.get_name().to_owned()
        } else {
            format!("{prefix} {}", sub.get_name())
        };
        if sub.has_subcommands() {
            collect(sub, &name, out);
        } else {
            out.push(CommandInfo {
                name,
                aliases: sub.get_all_aliases().map(str::to_owned).collect(),
                about: sub.get_about().map(ToString::to_string).unwrap_or_default(),
            });
        }
    }
}

/// The commands of this build.
pub fn command_list() -> CommandList {
    let mut commands = Vec::new();
    collect(&cli::command_tree(), "", &mut commands);
    CommandList { schema_version: SCHEMA_VERSION, commands }
}

/// Prints the command list.
#[allow(clippy::unnecessary_wraps)]
pub fn exec(rt: &EngineRuntime, args: &ListCommandsArgs) -> Result<Outcome, EngineError> {
    let list = command_list();
    if args.json {
        rt.printer().json(&list);
    } else {
        let names: Vec<&str> = list.commands.iter().map(|c| c.name.as_str()).collect();
        rt.printer().data(&names.join("\n"));
    }
    Ok(Outcome::Success)
}
