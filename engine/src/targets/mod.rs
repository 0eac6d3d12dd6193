//! Targets: the main checkout plus every linked git worktree, read from the main repository's
//! `.git/worktrees/*` (no `git` process needed). Each worktree gets a name, validated so it is safe in paths,
//! URLs and shell commands, and a stable port slot derived from that name.

pub mod worktree;

use std::path::{Path, PathBuf};

use envctl_contracts::config::{Mode, TargetScope};
use envctl_contracts::control::SelectedTarget;
use envctl_contracts::targets::TargetKind;

use crate::config::Paths;
use crate::state::fnv1a;

/// Number of distinct worktree slots; a worktree's ports are the base ports plus its slot (1..=SLOT_SPAN).
pub const SLOT_SPAN: u16 = 200;

/// One environment envctl can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `main` or the worktree's name.
    pub name: String,
    /// Main or worktree.
    pub kind: TargetKind,
    /// The checkout's directory.
    pub root: PathBuf,
    /// Checked-out branch, when not detached.
    pub branch: Option<String>,
    /// Port slot: 0 for main.
    pub slot: u16,
}

impl Target {
    /// The target as a start request carries it to the host.
    pub fn to_selected(&self) -> SelectedTarget {
        SelectedTarget {
            name: self.name.clone(),
            kind: self.kind,
            root: self.root.display().to_string(),
            branch: self.branch.clone(),
            slot: self.slot,
        }
    }

    /// The target a start request carries.
    pub fn from_selected(selected: &SelectedTarget) -> Self {
        Self {
            name: selected.name.clone(),
            kind: selected.kind,
            root: PathBuf::from(&selected.root),
            branch: selected.branch.clone(),
            slot: selected.slot,
        }
    }

    /// Whether a service or requirement with this scope runs here.
    pub fn in_scope(&self, scope: TargetScope) -> bool {
        matches!(
            (scope, self.kind),
            (TargetScope::All, _)
                | (TargetScope::Main, TargetKind::Main)
                | (TargetScope::Trees, TargetKind::Worktree)
        )
    }
}

/// A target name or selection was not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The name has characters that are not allowed.
    #[error(
        "`{name}` is not a valid target name: {why}\nhint: target names use letters, digits, `.`, `_` and `-` (at most 64)"
    )]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// No target has that name.
    #[error("no worktree named `{name}`{}\nhint: `envctl list-targets` shows the targets; `envctl worktree add {name}` makes one", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    Unknown {
        /// The name given.
        name: String,
        /// A close match.
        suggestion: Option<String>,
    },
    /// `--trees` or the trees mode found no worktree.
    #[error("there are no worktrees\nhint: create one with `envctl worktree add NAME`, or use --main")]
    NoWorktrees,
}

/// Checks a target name typed by a user or derived from a worktree path.
pub fn validate_name(name: &str) -> Result<(), TargetError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 64 {
        Some("it is longer than 64 characters")
    } else if name.starts_with(['.', '-']) {
        Some("it starts with `.` or `-`")
    } else if name.contains("..") {
        Some("it contains `..`")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        Some("it contains a character other than letters, digits, `.`, `_` and `-`")
    } else {
        None
    };
    match why {
        Some(why) => Err(TargetError::InvalidName { name: name.to_owned(), why }),
        None => Ok(()),
    }
}

/// The worktree slot for a target name: stable across runs and machines.
pub fn slot_for(name: &str) -> u16 {
    let span = u64::from(SLOT_SPAN);
    1 + u16::try_from(fnv1a(name.as_bytes()) % span).unwrap_or(0)
}

/// Every target of the repository, and the worktrees that were skipped (with why).
#[derive(Debug, Clone)]
pub struct Targets {
    /// Main first, then worktrees by name.
    pub all: Vec<Target>,
    /// Worktrees that could not be used.
    pub skipped: Vec<String>,
}

fn read_branch(head_file: &Path) -> Option<String> {
    let head = std::fs::read_to_string(head_file).ok()?;
    head.trim().strip_prefix("ref: refs/heads/").map(str::to_owned)
}

/// A name from a worktree's path: relative to the trees directory when inside it (`trees/feat/1` → `feat-1`),
/// otherwise its directory name; characters outside the allowed set become `-`.
fn derive_name(root: &Path, trees_dir: &Path) -> String {
    let raw = match root.strip_prefix(trees_dir) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("-"),
        _ => root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect();
    let cleaned = cleaned.trim_start_matches(['.', '-']).replace("..", ".");
    cleaned.chars().take(64).collect()
}

impl Targets {
    /// Reads main and the linked worktrees of the repository.
    pub fn discover(paths: &Paths, trees_dir: &str) -> Self {
        let mut all = vec![Target {
            name: "main".into(),
            kind: TargetKind::Main,
            root: paths.repo_root.clone(),
            branch: paths.git_common_dir.as_ref().and_then(|git| read_branch(&git.join("HEAD"))),
            slot: 0,
        }];
        let mut skipped = Vec::new();
        let trees_root = paths.repo_root.join(trees_dir);
        let mut worktrees = Vec::new();
        let admin_dirs =
            paths.git_common_dir.as_ref().and_then(|git| std::fs::read_dir(git.join("worktrees")).ok());
        for entry in admin_dirs.into_iter().flatten().filter_map(Result::ok) {
            let admin = entry.path();
            let Ok(gitdir) = std::fs::read_to_string(admin.join("gitdir")) else {
                continue;
            };
            let dot_git = PathBuf::from(gitdir.trim());
            let Some(checkout) = dot_git.parent().map(Path::to_path_buf) else {
                continue;
            };
            if !checkout.is_dir() {
                skipped.push(format!(
                    "{}: the directory is gone (run `git worktree prune`)",
                    checkout.display()
                ));
                continue;
            }
            let checkout = checkout.canonicalize().unwrap_or(checkout);
            let root = crate::config::join_subdir(&checkout, &paths.project_subdir);
            if !root.is_dir() {
                skipped.push(format!(
                    "{}: this worktree has no {}",
                    checkout.display(),
                    paths.project_subdir.display()
                ));
                continue;
            }
            worktrees.push((derive_name(&checkout, &trees_root), root, read_branch(&admin.join("HEAD"))));
        }
        worktrees.sort();
        for (name, root, branch) in worktrees {
            let mut unique = name.clone();
            let mut n = 2;
            while unique == "main" || all.iter().any(|t: &Target| t.name == unique) {
                unique = format!("{name}-{n}");
                n += 1;
            }
            if let Err(err) = validate_name(&unique) {
                skipped.push(format!(
                    "{}: {}",
                    root.display(),
                    err.to_string().lines().next().unwrap_or_default()
                ));
                continue;
            }
            let slot = slot_for(&unique);
            all.push(Target { name: unique, kind: TargetKind::Worktree, root, branch, slot });
        }
        Self { all, skipped }
    }

    /// The target whose checkout contains `dir`, if any.
    pub fn containing(&self, dir: &Path) -> Option<&Target> {
        self.all.iter().filter(|t| dir.starts_with(&t.root)).max_by_key(|t| t.root.as_os_str().len())
    }

    /// The targets a command acts on.
    pub fn select(&self, selection: &Selection, mode: Mode) -> Result<Vec<&Target>, TargetError> {
        let worktrees = || self.all.iter().filter(|t| t.kind == TargetKind::Worktree).collect::<Vec<_>>();
        match selection {
            Selection::All => Ok(self.all.iter().collect()),
            Selection::Main => Ok(self.all.iter().take(1).collect()),
            Selection::Default if mode == Mode::Main => Ok(self.all.iter().take(1).collect()),
            Selection::Default => {
                let trees = worktrees();
                if trees.is_empty() { Err(TargetError::NoWorktrees) } else { Ok(trees) }
            }
            Selection::Trees(names) => names
                .iter()
                .map(|name| {
                    validate_name(name)?;
                    self.all.iter().find(|t| &t.name == name).ok_or_else(|| {
                        let names: Vec<&str> = self.all.iter().map(|t| t.name.as_str()).collect();
                        TargetError::Unknown {
                            name: name.clone(),
                            suggestion: crate::config::suggest(name, &names).map(str::to_owned),
                        }
                    })
                })
                .collect(),
        }
    }
}

/// Which targets the user asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selection {
    /// No flag: the configured default mode.
    #[default]
    Default,
    /// `--main`.
    Main,
    /// `--tree NAME` (repeatable).
    Trees(Vec<String>),
    /// `--all`.
    All,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_path_tricks_and_shell_characters() {
        for bad in ["", "../x", "a/b", "a b", "x;rm", "$(x)", ".hidden", "-flag", "a..b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["feature-1", "fix_2.0", "A"] {
            assert!(validate_name(good).is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn slots_are_stable_and_in_range() {
        assert_eq!(slot_for("feature-a"), slot_for("feature-a"));
        assert!((1..=SLOT_SPAN).contains(&slot_for("feature-a")));
        let distinct: std::collections::BTreeSet<u16> =
            (0..50).map(|i| slot_for(&format!("tree-{i}"))).collect();
        assert!(distinct.len() > 35, "slots cluster: {distinct:?}");
    }

    #[test]
    fn derived_names_follow_the_trees_layout() {
        let trees = Path::new("/r/trees");
        assert_eq!(derive_name(Path::new("/r/trees/feat/1"), trees), "feat-1");
        assert_eq!(derive_name(Path::new("/elsewhere/my wt"), trees), "my-wt");
        assert_eq!(derive_name(Path::new("/r/trees/..x"), trees), "x");
    }
}
