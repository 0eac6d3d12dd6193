//! Spawning a service: `sh -c <command>` in its own process group, stdin from `/dev/null`, stdout and stderr
//! appended to its log file, environment exactly the inherited one plus the service's projection. Because output
//! goes straight to a file, services keep running (and logging) if the host dies.
//!
//! The host itself runs in a session of its own with no controlling terminal ([`spawn_detached`]), so no
//! terminal signal reaches a service; a process group (rather than a session per service) lets the standard
//! library spawn with `posix_spawn`, which on this kind of machine starts ten services in about half the time
//! of fork + exec.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

/// What to spawn.
#[derive(Debug, Clone, Copy)]
pub struct SpawnSpec<'a> {
    /// argv (`["sh", "-c", "…"]`).
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

/// Spawns the process. The error names the command and the working directory.
pub fn spawn(spec: &SpawnSpec<'_>) -> std::io::Result<tokio::process::Child> {
    let (program, args) =
        spec.argv.split_first().ok_or_else(|| std::io::Error::other("empty command line"))?;
    if let Some(dir) = spec.log_path.parent() {
        crate::state::create_private_dir_all(dir)?;
    }
    let log = crate::state::open_private_append(spec.log_path)?;
    let err = log.try_clone()?;
    let mut cmd = tokio::process::Command::new(program);
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
            .ok_or_else(|| std::io::Error::other(format!("no user `{name}` to run as")))?;
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    cmd.spawn().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot run `{}` in {}: {e}", spec.argv.join(" "), spec.cwd.display()),
        )
    })
}

/// Starts `program args` detached from the terminal (own session, stdin from `/dev/null`, stderr appended to
/// `log_path`, stdout a pipe the caller reads the program's readiness from) and returns it without waiting.
#[allow(unsafe_code)]
pub fn spawn_detached(
    program: &Path,
    args: &[&std::ffi::OsStr],
    log_path: &Path,
) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt as _;
    if let Some(dir) = log_path.parent() {
        crate::state::create_private_dir_all(dir)?;
    }
    let log = crate::state::open_private_append(log_path)?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log));
    // SAFETY: only the async-signal-safe `setsid` runs between fork and exec; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    cmd.spawn()
}
