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
    /// The repository's exclude file could not be updated.
    #[error("cannot add `{line}` to {}: {detail}\nhint: add that line to it yourself, so `git status` does not list the worktrees", path.display())]
    Exclude {
        /// The exclude file.
        path: PathBuf,
        /// The line.
        line: String,
        /// Why.
        detail: String,
    },
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

/// The exclude pattern of `trees_dir` (`trees` → `/trees/`, `./a/b/` → `/a/b/`): that directory at the root only.
pub fn exclude_line(trees_dir: &str) -> String {
    let parts: Vec<String> = Path::new(trees_dir)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    format!("/{}/", parts.join("/"))
}

/// Makes sure the repository's `info/exclude` (in the directory `git rev-parse --git-common-dir` names, so a
/// worktree's command reaches the main repository's) ignores `trees_dir`, adding its line only when no spelling of
/// it (`/trees/`, `/trees`, `trees/`, `trees`) is there. Returns whether the line was added.
pub fn exclude_trees_dir(repo: &Path, trees_dir: &str) -> Result<bool, WorktreeError> {
    let common = PathBuf::from(git(repo, &["rev-parse", "--git-common-dir"])?.trim());
    let path = if common.is_absolute() { common } else { repo.join(common) }.join("info").join("exclude");
    let line = exclude_line(trees_dir);
    let failed = |e: std::io::Error| WorktreeError::Exclude {
        path: path.clone(),
        line: line.clone(),
        detail: e.to_string(),
    };
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(failed(e)),
    };
    let bare = line.trim_matches('/');
    let spellings = [line.clone(), format!("/{bare}"), format!("{bare}/"), bare.to_owned()];
    if existing.lines().any(|l| spellings.iter().any(|s| s == l.trim())) {
        return Ok(false);
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&line);
    text.push('\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    crate::state::write_user_file(&path, text.as_bytes()).map_err(failed)?;
    Ok(true)
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

#[cfg(test)]
mod tests {
    use super::exclude_line;

    #[test]
    fn the_exclude_line_anchors_the_trees_dir_at_the_root() {
        assert_eq!(exclude_line("trees"), "/trees/");
        assert_eq!(exclude_line("./work/trees/"), "/work/trees/");
    }
}
