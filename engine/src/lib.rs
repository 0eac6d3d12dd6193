//! The envctl engine.
//!
//! Module map (one folder per domain, each with one public entry type):
//!
//! | module | owns |
//! |---|---|
//! | [`runtime`] | `EngineRuntime`, the composition root; the command line; dispatch; exit codes |
//! | [`config`] | finding and reading `.envctl` (TOML or legacy), precedence, validation, `Paths`, `EnvVars` |
//! | [`targets`] | main + worktrees, names, slots, selection |
//! | [`ports`] | the port planner and the machine-wide lease ledger |
//! | [`requirements`] | what postgres / redis / command requirements export and need |
//! | [`startup`] | the plan of what `start` does |
//! | [`state`] | run artifacts, atomic writes, the scope's repository |
//! | [`supervisor`] | process truth (pid + start time) |
//! | [`ui`] | the printer and tables (the only module that writes to the terminal) |

pub mod config;
pub mod host;
pub mod jobs;
pub mod plan;
pub mod ports;
pub mod requirements;
pub mod runtime;
pub mod startup;
pub mod state;
pub mod supervisor;
pub mod targets;
pub mod ui;

pub use runtime::{Cli, EngineError, EngineRuntime, Outcome, exit_code, parse};
