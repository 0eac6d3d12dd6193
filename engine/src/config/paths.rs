//! [`Paths`]: every directory and file envctl uses for one repository, resolved once.
//!
//! The project is found by walking up from the working directory: the first directory holding `.envctl` is the
//! project directory, and the first holding `.git` is the checkout (when no `.envctl` was met on the way, the
//! checkout is the project). A project below the checkout's root (a monorepo's `services/shop/.envctl`) keeps
//! that relative directory in every target. A linked worktree (`.git` is a file pointing into the main
//! repository's `.git/worktrees/<name>`) resolves to its main repository, so every worktree shares the main
//! checkout's `.envctl`, scope directory and state. Git's files are read directly rather than by running `git`,
//! which keeps inspection commands in the low milliseconds.

use std::path::{Path, PathBuf};

use super::{ConfigError, EnvVars};
use crate::state::fnv1a;

/// Longest control-socket path envctl will create (the kernel's limit is 108 bytes, including the NUL).
const MAX_SOCKET_PATH: usize = 100;

/// Resolved locations for one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The project's directory in the main checkout (the scope of all state); usually the checkout's root.
    pub repo_root: PathBuf,
    /// The main repository's git directory, when the project is in a git repository.
    pub git_common_dir: Option<PathBuf>,
    /// The project's directory relative to a checkout's root (empty unless `.envctl` sits below the root).
    pub project_subdir: PathBuf,
    /// The project's directory in the checkout the command was run from (`repo_root` or inside a worktree).
    pub current_root: PathBuf,
    /// The config file that applies, when there is one.
    pub config_file: Option<PathBuf>,
    /// Root of envctl's state for this user.
    pub runtime_root: PathBuf,
    /// This repository's scope directory.
    pub scope_dir: PathBuf,
    /// The machine-wide port lease ledger.
    pub ledger_dir: PathBuf,
    /// Where the control socket goes when the scope directory's path is too long for one: the user's runtime
    /// directory (`$XDG_RUNTIME_DIR/envctl`) when there is one, else `/tmp/envctl-<uid>`.
    pub socket_fallback_dir: PathBuf,
}

impl Paths {
    /// Finds the repository around `start` and resolves every location.
    pub fn discover(
        start: &Path,
        config_override: Option<&Path>,
        env: &EnvVars,
    ) -> Result<Self, ConfigError> {
        let start = absolute(start)?;
        let found = find_project(&start)?;
        let main_checkout = found
            .git_common_dir
            .as_deref()
            .filter(|dir| dir.file_name().is_some_and(|n| n == ".git"))
            .and_then(Path::parent)
            .map_or_else(|| found.checkout.clone(), Path::to_path_buf);
        let repo_root = join_subdir(&main_checkout, &found.subdir);
        let current_root = join_subdir(&found.checkout, &found.subdir);
        let (git_common_dir, project_subdir) = (found.git_common_dir, found.subdir);
        let config_file = match config_override
            .map(Path::to_path_buf)
            .or_else(|| env.get("ENVCTL_CONFIG_FILE").map(PathBuf::from))
        {
            Some(file) => {
                let file = if file.is_absolute() { file } else { start.join(file) };
                if !file.is_file() {
                    return Err(ConfigError::single(
                        file.display().to_string(),
                        "the config file named by --config or ENVCTL_CONFIG_FILE does not exist",
                        "point it at an existing file, or unset it to use <repo>/.envctl",
                    ));
                }
                Some(file)
            }
            None => Some(repo_root.join(".envctl")).filter(|f| f.is_file()),
        };
        let runtime_root = runtime_root(env);
        let scope_dir = runtime_root.join("scopes").join(scope_id(&repo_root));
        let ledger_dir = runtime_root.join("ports");
        let socket_fallback_dir = match env.get("XDG_RUNTIME_DIR") {
            Some(dir) if Path::new(dir).is_absolute() => Path::new(dir).join("envctl"),
            _ => PathBuf::from(format!("/tmp/envctl-{}", nix::unistd::getuid())),
        };
        Ok(Self {
            repo_root,
            git_common_dir,
            project_subdir,
            current_root,
            config_file,
            runtime_root,
            scope_dir,
            ledger_dir,
            socket_fallback_dir,
        })
    }

    /// Where `.envctl` is (or would be written) for this repository.
    pub fn default_config_file(&self) -> PathBuf {
        self.repo_root.join(".envctl")
    }

    /// The host's control socket: inside the scope directory when the path is short enough, otherwise in
    /// [`Self::socket_fallback_dir`].
    pub fn control_socket(&self) -> PathBuf {
        let preferred = self.scope_dir.join("host.sock");
        if preferred.as_os_str().len() <= MAX_SOCKET_PATH {
            return preferred;
        }
        self.socket_fallback_dir.join(format!("{}.sock", short_hash(&self.scope_dir)))
    }
}

fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    let path = std::path::absolute(path).map_err(|e| io_problem(path, &e))?;
    Ok(path.canonicalize().unwrap_or(path))
}

fn io_problem(path: &Path, err: &std::io::Error) -> ConfigError {
    ConfigError::single(
        path.display().to_string(),
        &err.to_string(),
        "check that the directory exists and is readable",
    )
}

/// `base/subdir`, without the trailing separator `Path::join("")` would add.
pub fn join_subdir(base: &Path, subdir: &Path) -> PathBuf {
    if subdir.as_os_str().is_empty() { base.to_path_buf() } else { base.join(subdir) }
}

/// Where the project is.
struct Found {
    /// The checkout's root (or the project directory when there is no git repository).
    checkout: PathBuf,
    /// The common git directory, if any.
    git_common_dir: Option<PathBuf>,
    /// The project directory relative to `checkout`.
    subdir: PathBuf,
}

/// Walks up from `start`: the first `.envctl` marks the project, the first `.git` the checkout.
fn find_project(start: &Path) -> Result<Found, ConfigError> {
    let mut project: Option<&Path> = None;
    for dir in start.ancestors() {
        let dot_git = dir.join(".git");
        let git_common_dir = if dot_git.is_dir() {
            Some(dot_git)
        } else if dot_git.is_file() {
            Some(common_dir(&read_gitdir_file(&dot_git)?))
        } else {
            None
        };
        if let Some(git_common_dir) = git_common_dir {
            let subdir =
                project.and_then(|p| p.strip_prefix(dir).ok()).map(Path::to_path_buf).unwrap_or_default();
            return Ok(Found { checkout: dir.to_path_buf(), git_common_dir: Some(git_common_dir), subdir });
        }
        if project.is_none() && dir.join(".envctl").is_file() {
            project = Some(dir);
        }
    }
    match project {
        Some(dir) => Ok(Found { checkout: dir.to_path_buf(), git_common_dir: None, subdir: PathBuf::new() }),
        None => Err(ConfigError::single(
            start.display().to_string(),
            "not inside a git repository or an envctl project",
            "run envctl inside a git repository (or pass --repo PATH): `git init` makes one here; then `envctl config init` writes its .envctl",
        )),
    }
}

/// Reads a `.git` file (`gitdir: <path>`) and returns the absolute git directory it names.
pub(crate) fn read_gitdir_file(dot_git: &Path) -> Result<PathBuf, ConfigError> {
    let text = std::fs::read_to_string(dot_git).map_err(|e| io_problem(dot_git, &e))?;
    let Some(target) = text.trim().strip_prefix("gitdir:") else {
        return Err(ConfigError::single(
            dot_git.display().to_string(),
            "this .git file does not start with `gitdir:`",
            "repair the worktree with `git worktree repair`",
        ));
    };
    let target = PathBuf::from(target.trim());
    let base = dot_git.parent().unwrap_or(Path::new("/"));
    let target = if target.is_absolute() { target } else { base.join(target) };
    Ok(target.canonicalize().unwrap_or(target))
}

/// The common git directory of a (possibly linked) git directory, from its `commondir` file.
fn common_dir(gitdir: &Path) -> PathBuf {
    match std::fs::read_to_string(gitdir.join("commondir")) {
        Ok(text) => {
            let common = PathBuf::from(text.trim());
            let common = if common.is_absolute() { common } else { gitdir.join(common) };
            common.canonicalize().unwrap_or(common)
        }
        Err(_) => gitdir.to_path_buf(),
    }
}

fn runtime_root(env: &EnvVars) -> PathBuf {
    if let Some(dir) = env.get("ENVCTL_RUNTIME_DIR") {
        return PathBuf::from(dir);
    }
    directories::ProjectDirs::from("", "", "envctl").map_or_else(
        || std::env::temp_dir().join(format!("envctl-{}", nix::unistd::getuid())),
        |dirs| dirs.state_dir().unwrap_or_else(|| dirs.data_local_dir()).to_path_buf(),
    )
}

/// `<repo dir name, sanitised, ≤ 24 chars>-<12 hex of the path's hash>`: readable and unique per checkout.
pub fn scope_id(repo_root: &Path) -> String {
    let name: String = repo_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(24)
        .collect();
    format!("{}-{}", if name.is_empty() { "repo" } else { &name }, short_hash(repo_root))
}

/// 12 hex digits of a stable 64-bit FNV-1a hash of a path.
fn short_hash(path: &Path) -> String {
    format!("{:012x}", fnv1a(path.as_os_str().as_encoded_bytes()) & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_id_is_readable_and_stable() {
        let id = scope_id(Path::new("/home/me/src/my shop"));
        assert!(id.starts_with("my_shop-"), "{id}");
        assert_eq!(id, scope_id(Path::new("/home/me/src/my shop")));
        assert_ne!(id, scope_id(Path::new("/home/you/src/my shop")));
    }

    #[test]
    fn long_scope_dirs_get_a_short_socket_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join(".git")).expect("mkdir");
        let long = "x".repeat(120);
        let env = EnvVars::from_pairs([("ENVCTL_RUNTIME_DIR", long.as_str())]);
        let paths = Paths::discover(dir.path(), None, &env).expect("discover");
        let socket = paths.control_socket();
        assert!(socket.as_os_str().len() <= MAX_SOCKET_PATH, "{}", socket.display());
        assert!(socket.starts_with("/tmp"));
    }

    #[test]
    fn outside_a_repository_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Paths::discover(dir.path(), None, &EnvVars::default()).expect_err("no repo");
        assert!(err.to_string().contains("not inside a git repository"), "{err}");
    }

    #[test]
    fn a_project_below_the_checkout_root_keeps_its_subdirectory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        std::fs::create_dir_all(root.join("apps/shop/src")).expect("mkdir");
        std::fs::write(root.join("apps/shop/.envctl"), "").expect("write");
        let paths =
            Paths::discover(&root.join("apps/shop/src"), None, &EnvVars::default()).expect("discover");
        assert_eq!(paths.repo_root, root.join("apps/shop"));
        assert_eq!(paths.project_subdir, Path::new("apps/shop"));
        assert_eq!(paths.config_file, Some(root.join("apps/shop/.envctl")));
        assert_eq!(paths.git_common_dir, Some(root.join(".git")));
    }
}
