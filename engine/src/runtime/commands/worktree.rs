//! `envctl worktree add NAME [--from BRANCH] | list [--json] | remove NAME [--force]`.

use std::process::Command;

use super::list_targets;
use super::stop::stop;
use crate::ports::Ledger;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use envctl_contracts::targets::TargetKind;

use crate::targets::{Targets, validate_name};

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
    List(list_targets::ListTargetsArgs),
    /// Stop a worktree's services, free its ports, then remove it.
    Remove {
        /// Worktree name.
        name: String,
        /// Remove it even with uncommitted changes.
        #[arg(long)]
        force: bool,
    },
}

fn git(repo: &std::path::Path, args: &[&str]) -> Result<String, EngineError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| EngineError::Failed(format!("cannot run git: {e}\nhint: install git")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(EngineError::Failed(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Runs a `worktree` subcommand.
pub fn exec(rt: &EngineRuntime, command: &WorktreeCommand) -> Result<Outcome, EngineError> {
    match command {
        WorktreeCommand::List(args) => list_targets::exec(rt, args),
        WorktreeCommand::Add { name, from } => {
            validate_name(name)?;
            let settings = rt.settings()?;
            let repo = &settings.paths.repo_root;
            let path = repo.join(&settings.config.project.trees_dir).join(name);
            if path.exists() {
                return Err(EngineError::Failed(format!(
                    "{} already exists\nhint: pick another name",
                    path.display()
                )));
            }
            let path_str = path.display().to_string();
            let branch_exists =
                git(repo, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{name}")]).is_ok();
            if branch_exists {
                git(repo, &["worktree", "add", &path_str, name])?;
            } else {
                let mut args = vec!["worktree", "add", "-b", name, &path_str];
                if let Some(from) = from {
                    args.push(from);
                }
                git(repo, &args)?;
            }
            rt.printer().note(&format!("created worktree {name} at {path_str}"));
            rt.printer().note(&format!("start it with `envctl start --tree {name}`"));
            Ok(Outcome::Success)
        }
        WorktreeCommand::Remove { name, force } => {
            validate_name(name)?;
            let settings = rt.settings()?;
            let targets = Targets::discover(&settings.paths, &settings.config.project.trees_dir);
            let Some(target) = targets.all.iter().find(|t| &t.name == name) else {
                return Err(EngineError::Failed(format!(
                    "no worktree named `{name}`\nhint: `envctl worktree list` shows them"
                )));
            };
            if target.kind == TargetKind::Main {
                return Err(EngineError::Failed("the main checkout cannot be removed".into()));
            }
            let stopped = stop(&settings.paths, std::slice::from_ref(name), &[])?;
            let repo = settings.paths.repo_root.display().to_string();
            let released =
                Ledger::new(&settings.paths.ledger_dir).release(|o| o.repo == repo && &o.target == name)?;
            for note in drop_data(&settings, name) {
                rt.printer().note(&note);
            }
            let checkout = target.root.display().to_string();
            let mut args = vec!["worktree", "remove"];
            if *force {
                args.push("--force");
            }
            args.push(&checkout);
            git(&settings.paths.repo_root, &args).map_err(|e| match e {
                EngineError::Failed(m) if !force => {
                    EngineError::Failed(format!("{m}\nhint: commit or stash its changes, or pass --force"))
                }
                other => other,
            })?;
            rt.printer().note(&format!(
                "removed {name} (stopped {} service(s), released {released} port lease(s))",
                stopped.len()
            ));
            Ok(Outcome::Success)
        }
    }
}

/// Drops a worktree's requirement data: its database in a shared Postgres (when that runs), its index in a shared
/// Redis (when that runs), its own servers' data directories. Returns what it did, for the user.
fn drop_data(settings: &crate::config::Settings, target: &str) -> Vec<String> {
    use envctl_contracts::config::{Adapter, Isolation};
    use envctl_contracts::state::ProcessKind;

    use crate::requirements::{self, PG_USER, postgres, redis};

    let state = crate::state::StateRepository::new(&settings.paths.scope_dir).run_state().ok().flatten();
    let running_port = |name: &str| {
        state.as_ref()?.services.iter().find_map(|r| {
            let alive = r
                .pid
                .zip(r.pid_start_time)
                .is_some_and(|(p, s)| crate::supervisor::proc_info::is_same_process(p, s));
            (r.kind == ProcessKind::Requirement && r.target == "main" && r.service == name && alive)
                .then_some(r.port)
                .flatten()
        })
    };
    let mut notes = Vec::new();
    for (name, req) in settings.config.requirements.iter().filter(|(_, r)| r.enabled) {
        match (req.adapter, req.isolation) {
            (Adapter::Postgres, Isolation::Database) => {
                let database = requirements::database_name(&settings.config.project.name, target);
                match running_port(name) {
                    Some(port) => match crate::runtime::block_on(postgres::drop_database(port, PG_USER, &database)) {
                        Ok(()) => notes.push(format!("dropped database {database}")),
                        Err(e) => notes.push(format!("could not drop database {database}: {e}")),
                    },
                    None => notes.push(format!(
                        "database {database} stays in main's Postgres, which is not running; `envctl stop-all --remove-data` deletes all data"
                    )),
                }
            }
            (Adapter::Redis, Isolation::DbIndex) => {
                let index = requirements::redis_index(req.isolation, crate::targets::slot_for(target));
                if let Some(port) = running_port(name) {
                    match crate::runtime::block_on(redis::flush_database(port, index)) {
                        Ok(()) => notes.push(format!("emptied Redis database {index}")),
                        Err(e) => notes.push(format!("could not empty Redis database {index}: {e}")),
                    }
                }
            }
            _ => {
                if let Ok(dir) = requirements::data_dir(&settings.paths, req, name, target)
                    && std::fs::remove_dir_all(&dir).is_ok()
                {
                    notes.push(format!("removed {}", dir.display()));
                }
            }
        }
    }
    notes
}
