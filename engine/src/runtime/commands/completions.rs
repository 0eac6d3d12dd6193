//! `envctl completions bash|zsh|fish|powershell [--static]`: a shell's completion script. By default the script
//! asks envctl itself on every Tab (`COMPLETE=<shell> envctl -- …`), so worktree, service and job-type names come
//! from the repository the shell is in; `--static` prints a script of the commands and flags only.

use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{Bash, EnvCompleter, Fish, Powershell, Zsh};

use crate::config::{EnvVars, LoadOptions, Settings};
use crate::runtime::{EngineError, EngineRuntime, Outcome, cli};

/// The variable the dynamic scripts set to ask envctl for candidates.
pub const COMPLETE_VAR: &str = "COMPLETE";

/// A shell envctl writes completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
    /// PowerShell.
    Powershell,
}

// Arguments of `completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
    /// Commands and flags only: no names from the repository (and no call back into envctl on Tab).
    #[arg(long = "static")]
    pub static_only: bool,
}

/// Prints the script.
pub fn exec(rt: &EngineRuntime, args: &CompletionsArgs) -> Result<Outcome, EngineError> {
    let mut buf = Vec::new();
    let io = |e: std::io::Error| EngineError::Failed(format!("cannot write the completion script: {e}"));
    if args.static_only {
        let shell = match args.shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
            Shell::Powershell => clap_complete::Shell::PowerShell,
        };
        clap_complete::generate(shell, &mut cli::command_tree(), "envctl", &mut buf);
    } else {
        let shell: &dyn EnvCompleter = match args.shell {
            Shell::Bash => &Bash,
            Shell::Zsh => &Zsh,
            Shell::Fish => &Fish,
            Shell::Powershell => &Powershell,
        };
        shell.write_registration(COMPLETE_VAR, "envctl", "envctl", "envctl", &mut buf).map_err(io)?;
    }
    rt.printer().data(&String::from_utf8_lossy(&buf));
    Ok(Outcome::Success)
}

/// Completes `--tree` with the repository's worktree names.
pub fn worktrees() -> ArgValueCandidates {
    ArgValueCandidates::new(worktree_names)
}

/// Completes `--service` with the configuration's service names.
pub fn services() -> ArgValueCandidates {
    ArgValueCandidates::new(service_names)
}

/// Completes a job type.
pub fn types() -> ArgValueCandidates {
    ArgValueCandidates::new(job_types)
}

/// The repository's settings as seen from the working directory (none when there is no readable config).
fn settings_here() -> Option<(Settings, crate::targets::Targets)> {
    let env = EnvVars::from_process();
    let start_dir = std::env::current_dir().ok()?;
    let settings =
        Settings::load(&LoadOptions { start_dir, config_file: None, sets: Vec::new() }, &env).ok()?;
    let targets = crate::targets::Targets::discover(&settings.paths, &settings.config.project.trees_dir);
    Some((settings, targets))
}

/// Worktree names of the repository the shell is in (for `--tree`).
pub fn worktree_names() -> Vec<CompletionCandidate> {
    settings_here()
        .map(|(_, targets)| {
            targets
                .all
                .iter()
                .filter(|t| t.name != "main")
                .map(|t| CompletionCandidate::new(t.name.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Service names of the repository's configuration (for `--service`).
pub fn service_names() -> Vec<CompletionCandidate> {
    settings_here()
        .map(|(s, _)| s.config.services.keys().map(|k| CompletionCandidate::new(k.clone())).collect())
        .unwrap_or_default()
}

/// Job types: the built-in ones and the configuration's `[jobs.types.*]` (for `jobs enqueue`, `--type`).
pub fn job_types() -> Vec<CompletionCandidate> {
    let mut names: Vec<String> =
        ["command.exec", "test.run", "migrate.run", "noop"].iter().map(|s| (*s).to_owned()).collect();
    if let Some((settings, _)) = settings_here() {
        names.extend(settings.config.jobs.types.keys().cloned());
    }
    names.into_iter().map(CompletionCandidate::new).collect()
}
