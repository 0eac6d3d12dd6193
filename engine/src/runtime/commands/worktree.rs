//! `envctl worktree add NAME [--from BRANCH] | list [--json] | remove NAME [--force]`.

use envctl_contracts::targets::TargetKind;

use crate::host::direct;
use crate::requirements::drop_target_data;
use crate::runtime::cli::ListTargetsArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::supervisor::proc_info::is_same_process;
use crate::targets::{validate_name, worktree};

/// `envctl worktree …`.
#[derive(Debug, clap::Subcommand)]
pub enum WorktreeCommand {
    /// Create a worktree under the trees directory, on a new branch NAME (or the existing branch NAME).
    Add {
        /// Worktree (and branch) name.
        name: String,
        /// Start the new branch from this branch or commit (default: the current HEAD).
        #[arg(long, value_name = "BRANCH")]
        from: Option<String>,
    },
    /// List main and the worktrees with their ports.
    List(ListTargetsArgs),
    /// Stop a worktree's services, free its ports, then remove it.
    Remove {
        /// Worktree name.
        name: String,
        /// Remove it even with uncommitted changes.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `worktree add` and `worktree remove` (`list` is `list-targets`).
pub fn exec(rt: &EngineRuntime, command: &WorktreeCommand) -> Result<Outcome, EngineError> {
    match command {
        WorktreeCommand::List(_) => Ok(Outcome::Success),
        WorktreeCommand::Add { name, from } => {
            validate_name(name)?;
            let settings = rt.settings()?;
            let path = worktree::add(
                &settings.paths.repo_root,
                &settings.config.project.trees_dir,
                name,
                from.as_deref(),
            )?;
            rt.printer().note(&format!("created worktree {name} at {}", path.display()));
            rt.printer().note(&format!("start it with `envctl start --tree {name}`"));
            Ok(Outcome::Success)
        }
        WorktreeCommand::Remove { name, force } => {
            validate_name(name)?;
            let settings = rt.settings()?;
            let Some(target) = rt.targets()?.all.iter().find(|t| &t.name == name) else {
                return Err(EngineError::Failed(format!(
                    "no worktree named `{name}`\nhint: `envctl worktree list` shows them"
                )));
            };
            if target.kind == TargetKind::Main {
                return Err(EngineError::Failed("the main checkout cannot be removed".into()));
            }
            let state = rt.state()?;
            let stopped = rt.block_on(direct::stop(&settings.paths, std::slice::from_ref(name), &[]))??;
            let repo = settings.paths.repo_root.display().to_string();
            let released = rt.ledger()?.release(|o| o.repo == repo && &o.target == name)?;
            let saved = state.run_state().ok().flatten();
            for note in rt.block_on(drop_target_data(settings, saved.as_ref(), is_same_process, name))? {
                rt.printer().note(&note.to_string());
            }
            worktree::remove(&settings.paths.repo_root, &target.root, *force)?;
            rt.printer().note(&format!(
                "removed {name} (stopped {} service(s), released {released} port lease(s))",
                stopped.len()
            ));
            Ok(Outcome::Success)
        }
    }
}
