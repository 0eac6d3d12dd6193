//! The command line (clap derive). Each command's arguments live next to its implementation in
//! `runtime/commands/`; this file holds the top level, the global flags and the Python-era `--command` spellings.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use super::commands::{
    blast_all, completions, config_cmd, dashboard, debug, doctor, endpoints, env_cmd, errors,
    explain_startup, health, host_cmd, job_cmd, jobs, list_commands, logs, man, migrate, ports, restart,
    resume, show_config, show_state, start, stop, test_cmd, vars, worker_cmd, worktree,
};

/// envctl runs a repository's whole development environment for the main checkout and every git worktree.
#[derive(Debug, Parser)]
#[command(name = "envctl", version, propagate_version = true, disable_help_subcommand = false)]
pub struct Cli {
    /// Flags every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Default, Args)]
pub struct GlobalArgs {
    /// Run as if started in DIR.
    #[arg(short = 'C', long = "repo", value_name = "DIR", global = true)]
    pub repo: Option<PathBuf>,
    /// Read this config file instead of <repo>/.envctl (also ENVCTL_CONFIG_FILE).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Override one config key for this command (repeatable), e.g. --set services.web.port=8100.
    #[arg(long, value_name = "KEY=VALUE", global = true)]
    pub set: Vec<String>,
    /// Nothing on stderr but errors (a command's output on stdout, such as the URLs `start` prints, is kept).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more detail (repeatable).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No colour in the output; strip ANSI sequences from the service logs `logs` prints (also NO_COLOR).
    #[arg(long, global = true)]
    pub no_color: bool,
}

// Target selection shared by commands that act on targets.
#[derive(Debug, Clone, Args, Default)]
pub struct TargetArgs {
    /// The main checkout.
    #[arg(long, conflicts_with_all = ["tree", "all"])]
    pub main: bool,
    /// A worktree by name (repeatable).
    #[arg(long = "tree", value_name = "NAME", add = super::commands::completions::worktrees())]
    pub tree: Vec<String>,
    /// Main and every worktree.
    #[arg(long, conflicts_with = "tree")]
    pub all: bool,
}

impl TargetArgs {
    /// The target names a command on running targets acts on: the named ones, or every one in `running` when no
    /// flag (or `--all`) is given.
    pub fn names_among(&self, running: &[String]) -> Result<Vec<String>, crate::targets::TargetError> {
        if self.main {
            return Ok(vec!["main".to_owned()]);
        }
        if !self.tree.is_empty() {
            for name in &self.tree {
                crate::targets::validate_name(name)?;
            }
            return Ok(self.tree.clone());
        }
        Ok(running.to_vec())
    }

    /// The selection these flags make.
    pub fn selection(&self) -> crate::targets::Selection {
        use crate::targets::Selection;
        if self.all {
            Selection::All
        } else if self.main {
            Selection::Main
        } else if !self.tree.is_empty() {
            Selection::Trees(self.tree.clone())
        } else {
            Selection::Default
        }
    }
}

// Arguments of `list-targets` (and `worktree list`).
#[derive(Debug, clap::Args)]
pub struct ListTargetsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Every command. Each one's arguments are built only when it runs (`defer`; building all of them cost 0.5 ms of
/// every command's start). The arguments structs therefore carry plain comments: a doc comment there would become
/// the command's about once its arguments are built, replacing the variant's.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Start main and/or worktrees; exits once every service is ready, printing their URLs.
    Start(start::StartArgs),
    /// Stop services (every running target by default).
    #[command(visible_aliases = ["s", "kill"])]
    Stop(stop::StopArgs),
    /// Stop every service of this repository.
    #[command(visible_aliases = ["stopall", "kill-all", "killall"])]
    StopAll(stop::StopAllArgs),
    /// Stop and start services again (every running target by default).
    #[command(visible_alias = "r")]
    Restart(restart::RestartArgs),
    /// Adopt what still runs from the saved state, restart what is gone.
    Resume(resume::ResumeArgs),
    /// Stop every process envctl recorded for this repository, the host, and free every port lease.
    #[command(visible_alias = "blastall")]
    BlastAll(blast_all::BlastAllArgs),
    /// Print (or follow) service logs.
    #[command(visible_alias = "l")]
    Logs(logs::LogsArgs),
    /// Empty service log files.
    #[command(visible_alias = "logs-clear")]
    ClearLogs(logs::ClearLogsArgs),
    /// What runs, live: targets × services, requirements, jobs and a log pane; keys restart, stop, start, test
    /// (--snapshot, or no terminal: print it once).
    #[command(visible_alias = "dash")]
    Dashboard(dashboard::DashboardArgs),
    /// Check that every service runs and listens (exit 1 when not).
    #[command(visible_alias = "h")]
    Health(health::HealthArgs),
    /// Readiness gates: config, prerequisites, state truth, requirements, services, job runtime, artifacts
    /// (exit 1 when a gate fails).
    Doctor(doctor::DoctorArgs),
    /// Write one redacted .tar.gz of everything needed to triage an incident (its path on stdout).
    DebugPack(debug::DebugPackArgs),
    /// Probable causes of what went wrong, most likely first, from a bundle (or the live scope).
    DebugReport(debug::DebugReportArgs),
    /// The newest bundle: path, size, age and top finding (exit 1 when there is none).
    DebugLast(debug::DebugLastArgs),
    /// This run's failures and error lines from the logs (exit 1 when there are any).
    #[command(visible_alias = "e")]
    Errors(errors::ErrorsArgs),
    /// URLs and ports of the running services.
    Endpoints(endpoints::EndpointsArgs),
    /// The variables envctl gives a target's services (shell `export` lines, or --json).
    Env(env_cmd::EnvArgs),
    /// Create, list and remove worktrees.
    #[command(subcommand)]
    Worktree(worktree::WorktreeCommand),
    /// Forget port leases (`ports reset`).
    #[command(subcommand)]
    Ports(ports::PortsCommand),
    /// Enqueue, inspect, cancel and retry jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// List, read, set and delete the variables jobs keep across runs.
    #[command(subcommand)]
    Vars(vars::VarsCommand),
    /// Run every selected target's service test suites as jobs and summarise them (exit 1 when any failed).
    #[command(visible_aliases = ["tests", "t"])]
    Test(test_cmd::TestArgs),
    /// Run every selected target's service `migrate` commands as jobs and summarise them (exit 1 when any failed).
    Migrate(migrate::MigrateArgs),
    /// Run jobs from the repository's job store.
    Worker(worker_cmd::WorkerArgs),
    /// Inside a job: read its input, report output, progress and logs, keep variables, set its condition (the
    /// runtime API's client; exit 3 when a variable or job does not exist).
    #[command(subcommand)]
    Job(job_cmd::JobCommand),
    /// The per-repository host process (started by `start`).
    #[command(hide = true)]
    Host(host_cmd::HostArgs),
    /// List the commands (one per line, or --json).
    ListCommands(list_commands::ListCommandsArgs),
    /// Show the effective configuration and where each value came from.
    ShowConfig(show_config::ShowConfigArgs),
    /// List main and the worktrees with their planned ports.
    #[command(visible_alias = "list-trees")]
    ListTargets(ListTargetsArgs),
    /// Show the saved state of the last run (exit 1 when there is none).
    ShowState(show_state::ShowStateArgs),
    /// Explain what `start` would do: targets, ports, requirements, each service's argv and env.
    ExplainStartup(explain_startup::ExplainStartupArgs),
    /// Create, migrate or edit the .envctl file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Print a shell completion script (bash, zsh, fish, powershell).
    Completions(completions::CompletionsArgs),
    /// Write envctl's man pages (one per command) into a directory.
    Man(man::ManArgs),
}

/// Python-era spellings (`envctl --show-config`) and their commands.
const DASHED: &[(&str, &[&str])] = &[
    ("--list-commands", &["list-commands"]),
    ("--show-config", &["show-config"]),
    ("--list-targets", &["list-targets"]),
    ("--show-state", &["show-state"]),
    ("--explain-startup", &["explain-startup"]),
    ("--init", &["config", "init"]),
    ("--stop", &["stop"]),
    ("--kill", &["stop"]),
    ("--stop-all", &["stop-all"]),
    ("--kill-all", &["stop-all"]),
    ("--restart", &["restart"]),
    ("--resume", &["resume"]),
    ("--blast-all", &["blast-all"]),
    ("--logs", &["logs"]),
    ("--clear-logs", &["clear-logs"]),
    ("--health", &["health"]),
    ("--doctor", &["doctor"]),
    ("--debug-pack", &["debug-pack"]),
    ("--debug-report", &["debug-report"]),
    ("--debug-last", &["debug-last"]),
    ("--errors", &["errors"]),
    ("--endpoints", &["endpoints"]),
    ("--test", &["test"]),
    ("--tests", &["test"]),
];

/// Rewrites Python-era `--command` spellings into subcommands, leaving everything else as it was.
pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut replaced = false;
    for arg in args {
        match DASHED.iter().find(|(flag, _)| !replaced && arg == *flag) {
            Some((_, words)) => {
                out.extend(words.iter().map(OsString::from));
                replaced = true;
            }
            None => out.push(arg),
        }
    }
    out
}

/// Parses the command line. `Err` carries clap's message and the exit code to use: 0 for `--help` and
/// `--version`, 1 for a usage error.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, (clap::Error, u8)> {
    Cli::try_parse_from(normalize(args)).map_err(|e| {
        let code = u8::from(e.use_stderr());
        (e, code)
    })
}

/// Shell completion on Tab: when the dynamic scripts of `envctl completions` set `COMPLETE`, the binary answers
/// with candidates (worktree, service and job-type names of the repository the shell is in) and exits.
pub fn completion_env() -> clap_complete::env::CompleteEnv<'static, fn() -> clap::Command> {
    clap_complete::env::CompleteEnv::with_factory(command_tree as fn() -> clap::Command)
        .var(super::commands::completions::COMPLETE_VAR)
}

/// The clap command tree (for `list-commands`).
pub fn command_tree() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each command's arguments are built only when that command runs (`defer`), so its about is set twice: by
    /// the `Command` variant when the tree is made, and by its arguments struct when they are built. The second
    /// must not replace the first, or `envctl start --help` would say something else than `envctl --help` does
    /// of `start` (a doc comment on an arguments struct becomes an about).
    #[test]
    fn every_command_says_the_same_of_itself_before_and_after_its_arguments_are_built() {
        fn walk(unbuilt: &clap::Command, built: &clap::Command, path: &str, checked: &mut usize) {
            for sub in unbuilt.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                let done = built.find_subcommand(sub.get_name()).expect("the built tree has every command");
                assert_eq!(
                    sub.get_about().map(ToString::to_string),
                    done.get_about().map(ToString::to_string),
                    "about of `{name}`"
                );
                assert_eq!(
                    sub.get_long_about().map(ToString::to_string),
                    done.get_long_about().map(ToString::to_string),
                    "long about of `{name}`"
                );
                *checked += 1;
                walk(sub, done, &name, checked);
            }
        }
        let unbuilt = Cli::command();
        let mut built = Cli::command();
        built.build();
        assert!(
            built
                .find_subcommand("start")
                .is_some_and(|start| start.get_arguments().any(|a| a.get_id() == "tree")),
            "building the tree builds each command's arguments"
        );
        let mut checked = 0;
        walk(&unbuilt, &built, "envctl", &mut checked);
        assert!(checked > 60, "every command is walked, not {checked}");
    }
}
