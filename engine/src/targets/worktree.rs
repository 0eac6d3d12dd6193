//! `git worktree add` and `git worktree remove` for envctl's worktrees (under the trees directory).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A git command failed.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    /// git could not be run.
    #[error("cannot run git: {0}\nhint: install git")]
    NoGit(String),
    /// git refused.
    #[error("git {args} failed: {detail}{}", hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default())]
    Git {
        /// Its arguments.
        args: String,
        /// What it said.
        detail: String,
        /// What to do.
        hint: Option<String>,
    },
    /// The worktree's directory is already there.
    #[error("{} already exists\nhint: pick another name", .0.display())]
    Exists(PathBuf),
}

fn git(repo: &Path, args: &[&str]) -> Result<String, WorktreeError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| WorktreeError::NoGit(e.to_string()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(WorktreeError::Git {
            args: args.join(" "),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            hint: None,
        })
    }
}

/// Creates worktree `name` at `trees_dir/name` of `repo`: on branch `name` when it exists, otherwise on a new
/// branch `name` started from `from` (default: HEAD). Returns its path.
pub fn add(repo: &Path, trees_dir: &str, name: &str, from: Option<&str>) -> Result<PathBuf, WorktreeError> {
    let path = repo.join(trees_dir).join(name);
    if path.exists() {
        return Err(WorktreeError::Exists(path));
    }
    let path_str = path.display().to_string();
    let branch_exists =
        git(repo, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{name}")]).is_ok();
    if branch_exists {
        git(repo, &["worktree", "add", &path_str, name])?;
    } else {
        let mut args = vec!["worktree", "add", "-b", name, &path_str];
        args.extend(from);
        git(repo, &args)?;
    }
    Ok(path)
}

/// Whether the worktree at `checkout` has uncommitted changes or untracked files (what `git worktree remove`
/// refuses without `--force`).
pub fn is_dirty(checkout: &Path) -> Result<bool, WorktreeError> {
    Ok(!git(checkout, &["status", "--porcelain", "--untracked-files=normal"])?.trim().is_empty())
}

/// Removes the worktree checked out at `checkout` (with `force`, even with uncommitted changes).
pub fn remove(repo: &Path, checkout: &Path, force: bool) -> Result<(), WorktreeError> {
    let checkout = checkout.display().to_string();
    let mut args = vec!["worktree", "remove"];
    if force {
        args.push("--force");
    }
    args.push(&checkout);
    git(repo, &args).map(|_| ()).map_err(|e| match e {
        WorktreeError::Git { args, detail, .. } if !force => WorktreeError::Git {
            args,
            detail,
            hint: Some("commit or stash its changes, or pass --force".into()),
        },
        other => other,
    })
}
