//! `envctl list-commands --json`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The commands this build of envctl implements.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CommandList {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// One entry per command, in help order.
    pub commands: Vec<CommandInfo>,
}

/// One command of the command line.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CommandInfo {
    /// The name typed after `envctl`, with subcommands joined by a space (`config init`).
    pub name: String,
    /// Other names that run the same command.
    pub aliases: Vec<String>,
    /// One line on what it does.
    pub about: String,
}
