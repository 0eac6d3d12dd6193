//! Spawning a service: its argv (the command's own words, or `sh -c …` for one with shell syntax; see
//! [`command_line`](crate::config::command_line)) in its own process group, stdin from `/dev/null`, stdout and
//! stderr appended to its log file, environment exactly the inherited one plus the service's projection. Because
//! output goes straight to a file, services keep running (and logging) if the host dies.
//!
//! The host itself runs in a session of its own with no controlling terminal ([`detach`]), so no
//! terminal signal reaches a service; a process group (rather than a session per service) lets the standard
//! library spawn with `posix_spawn`, which on this kind of machine starts ten services in about half the time
//! of fork + exec. The program is looked up on the service's own `PATH` here, so the standard library gets an
//! absolute path (which keeps it on `posix_spawn`) and a missing program is named before anything is started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::SupervisorError;

/// The search path `execvp` uses when the environment has no `PATH`.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// What to spawn.
#[derive(Debug, Clone, Copy)]
pub struct SpawnSpec<'a> {
    /// argv (`["sleep", "1000"]`, `["/bin/sh", "-c", "exec …"]`).
    pub argv: &'a [String],
    /// Working directory.
    pub cwd: &'a Path,
    /// The inherited environment.
    pub base_env: &'a BTreeMap<String, String>,
    /// The service's own variables (win over `base_env`).
    pub env: &'a BTreeMap<String, String>,
    /// Log file (appended to; created with its directory).
    pub log_path: &'a Path,
    /// Run as this user instead of envctl's own.
    pub user: Option<&'a str>,
}

/// Spawns the process. The error names the program (one not found on `PATH` as such) and the working directory.
pub fn spawn(spec: &SpawnSpec<'_>) -> Result<tokio::process::Child, SupervisorError> {
    let failed = |source: std::io::Error| SupervisorError::Spawn {
        program: spec.argv.first().cloned().unwrap_or_default(),
        source,
    };
    let (program, args) =
        spec.argv.split_first().ok_or_else(|| failed(std::io::Error::other("empty command line")))?;
    let path_var =
        spec.env.get("PATH").or_else(|| spec.base_env.get("PATH")).map_or(DEFAULT_PATH, String::as_str);
    let resolved = find_program(program, spec.cwd, path_var)
        .ok_or_else(|| SupervisorError::NotFound { program: program.clone(), path: path_var.to_owned() })?;
    if let Some(dir) = spec.log_path.parent() {
        crate::state::create_private_dir_all(dir).map_err(failed)?;
    }
    let log = crate::state::open_private_append(spec.log_path).map_err(failed)?;
    let err = log.try_clone().map_err(failed)?;
    let mut cmd = if is_script_without_interpreter(&resolved) {
        // What `execvp` and `sh` do with an executable text file that names no interpreter: run it with `sh`.
        let mut cmd = tokio::process::Command::new(crate::config::command_line::SHELL);
        cmd.arg(&resolved);
        cmd
    } else {
        let mut cmd = tokio::process::Command::new(&resolved);
        std::os::unix::process::CommandExt::arg0(cmd.as_std_mut(), program);
        cmd
    };
    cmd.args(args)
        .current_dir(spec.cwd)
        .env_clear()
        .envs(spec.base_env)
        .envs(spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .kill_on_drop(false);
    cmd.process_group(0);
    if let Some(name) = spec.user {
        let user = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| failed(std::io::Error::other(format!("no user `{name}` to run as"))))?;
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    cmd.spawn().map_err(|e| {
        failed(std::io::Error::new(
            e.kind(),
            format!("cannot run `{}` in {}: {e}", spec.argv.join(" "), spec.cwd.display()),
        ))
    })
}

/// Where `program` is: a name with a `/` relative to `cwd` (or absolute), a bare name the first executable file of
/// that name in `path_var`'s directories (an empty entry is the working directory, as for `sh`).
pub fn find_program(program: &str, cwd: &Path, path_var: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = cwd.join(program);
        return path.exists().then_some(path);
    }
    path_var
        .split(':')
        .map(|dir| if dir.is_empty() { cwd.to_path_buf() } else { cwd.join(dir) })
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is neither a binary nor a script with a `#!` line (the kernel would refuse to exec it).
fn is_script_without_interpreter(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| f.read(&mut head));
    read.is_ok_and(|n| !head[..n].starts_with(b"#!") && !head[..n].starts_with(b"\x7fELF"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Puts this process in a session of its own, with no controlling terminal: the host
/// ([`launch`](crate::host::launch)) calls it before anything else, so no signal of the terminal it was started
/// from reaches it or what it starts.
pub fn detach() {
    // Fails only for a process group leader, which a process spawned into its parent's group is not.
    if let Err(e) = nix::unistd::setsid() {
        tracing::debug!(error = %e, "already a session of its own");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, argv: &[&str]) -> String {
        let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
        let base_env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let log = dir.join("out.log");
        let _ = std::fs::remove_file(&log);
        let spec = SpawnSpec {
            argv: &argv,
            cwd: dir,
            base_env: &base_env,
            env: &BTreeMap::new(),
            log_path: &log,
            user: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let status = runtime.block_on(async { spawn(&spec).expect("spawned").wait().await.expect("waited") });
        assert!(status.success(), "{status}");
        std::fs::read_to_string(&log).expect("log")
    }

    #[test]
    fn a_program_runs_as_itself_and_a_script_without_a_shebang_through_sh() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(run(dir.path(), &["echo", "direct", "words"]), "direct words\n");
        let script = dir.path().join("plain-script");
        std::fs::write(&script, "echo \"from a script: $1\"\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(run(dir.path(), &["./plain-script", "arg"]), "from a script: arg\n");
    }

    #[test]
    fn a_program_not_on_path_is_named_before_anything_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let argv = vec!["nosuchprogram-envctl".to_owned()];
        let env = BTreeMap::new();
        let log = dir.path().join("out.log");
        let spec =
            SpawnSpec { argv: &argv, cwd: dir.path(), base_env: &env, env: &env, log_path: &log, user: None };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let err = runtime.block_on(async { spawn(&spec).map(|_| ()) }).expect_err("not found");
        assert!(matches!(err, SupervisorError::NotFound { .. }), "{err}");
        assert!(err.to_string().starts_with("`nosuchprogram-envctl`: command not found"), "{err}");
        assert!(!log.exists(), "no log file is made for a program that cannot run");
    }
}
