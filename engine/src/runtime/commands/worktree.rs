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
#[command(defer = true)]
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
    #[command(visible_alias = "ls")]
    List(ListTargetsArgs),
    /// Stop a worktree's services, remove it, free its ports and drop its data (refused, touching nothing, when
    /// it has uncommitted changes, unless --force).
    Remove {
        /// Worktree name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every worktree.
        #[arg(long)]
        all: bool,
        /// Remove it even with uncommitted changes (they are lost, with its data).
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
            let trees_dir = &settings.config.project.trees_dir;
            match worktree::exclude_trees_dir(&settings.paths.repo_root, trees_dir) {
                Ok(true) => rt.printer().note(&format!(
                    "added `{}` to the repository's .git/info/exclude",
                    worktree::exclude_line(trees_dir)
                )),
                Ok(false) => {}
                Err(e) => rt.printer().warn(&e.to_string()),
            }
            rt.printer().note(&format!("start it with `envctl start --tree {name}`"));
            Ok(Outcome::Success)
        }
        WorktreeCommand::Remove { name, all, force } => {
            let names: Vec<String> = if *all {
                rt.targets()?
                    .all
                    .iter()
                    .filter(|t| t.kind == TargetKind::Worktree)
                    .map(|t| t.name.clone())
                    .collect()
            } else {
                name.iter().cloned().collect()
            };
            if names.is_empty() && *all {
                rt.printer().note("there are no worktrees to remove");
            }
            for name in &names {
                remove(rt, name, *force)?;
            }
            Ok(Outcome::Success)
        }
    }
}

/// Removes one worktree. Nothing is stopped or deleted until git would agree: a dirty worktree is refused first
/// (unless `force`); its data is dropped only after git removed it.
fn remove(rt: &EngineRuntime, name: &str, force: bool) -> Result<(), EngineError> {
    validate_name(name)?;
    let settings = rt.settings()?;
    let Some(target) = rt.targets()?.all.iter().find(|t| t.name == name) else {
        return Err(EngineError::Failed(format!(
            "no worktree named `{name}`\nhint: `envctl worktree list` shows them"
        )));
    };
    if target.kind == TargetKind::Main {
        return Err(EngineError::Failed("the main checkout cannot be removed".into()));
    }
    if !force && worktree::is_dirty(&target.root)? {
        return Err(EngineError::Failed(format!(
            "{name} has uncommitted changes or untracked files ({}); nothing was stopped or deleted\nhint: commit or stash them, or run `envctl worktree remove {name} --force` to discard them with its data",
            target.root.display()
        )));
    }
    let stopped = rt.block_on(direct::stop(&settings.paths, &[name.to_owned()], &[]))??;
    worktree::remove(&settings.paths.repo_root, &target.root, force)?;
    let repo = settings.paths.repo_root.display().to_string();
    let released = rt.ledger()?.release(|o| o.repo == repo && o.target == name)?;
    let saved = rt.state()?.run_state().ok().flatten();
    for note in rt.block_on(drop_target_data(settings, saved.as_ref(), is_same_process, name))? {
        rt.printer().note(&note.to_string());
    }
    rt.printer().note(&format!(
        "removed {name} (stopped {} service(s), released {released} port lease(s))",
        stopped.stopped.len()
    ));
    Ok(())
}
