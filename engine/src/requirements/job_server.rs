//! The job runtime's own Redis server, the requirement every job command shares when `[jobs] backend = "redis"`
//! names no URL: one per repository (main and every worktree use it, since jobs span targets), its queue kept in
//! an append-only file (written before each reply) under the scope directory, a generated password, loopback unless
//! `jobs.bind` says otherwise. This module is what the server is — where it lives, its argv, its URL, its record;
//! starting and stopping it is the job runtime's (`jobs::server`).

use std::path::{Path, PathBuf};

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::jobs::{JobServer, JobServerStatus};
use envctl_contracts::ports::LeaseOwner;

use crate::config::{Paths, Settings};

/// The name it goes by in leases, logs, secrets and process marks.
pub const NAME: &str = "jobs";

/// The target a repository-wide server's lease names (no worktree can have this name).
pub const OWNER: &str = "(repository)";

/// The role its process carries in `ENVCTL_ROLE`, so it is never taken for a target's service.
pub const ROLE: &str = "jobs-server";

/// Where its record lives in the scope directory.
pub fn record_path(scope_dir: &Path) -> PathBuf {
    scope_dir.join("job_server.json")
}

/// The lock that serializes commands starting it at once.
pub fn lock_path(scope_dir: &Path) -> PathBuf {
    scope_dir.join("job_server.lock")
}

/// Where it keeps the queue (under `data/`, so `stop-all --remove-data` removes it).
pub fn data_dir(scope_dir: &Path) -> PathBuf {
    scope_dir.join("data").join(NAME)
}

/// Its log.
pub fn log_path(scope_dir: &Path) -> PathBuf {
    scope_dir.join("logs").join("jobs-server.log")
}

/// Its password, made and kept (0600) the first time it is asked for.
pub fn password(scope_dir: &Path) -> std::io::Result<String> {
    super::secrets::password(scope_dir, "repository", NAME)
}

/// Who holds its port in the lease ledger.
pub fn lease_owner(paths: &Paths) -> LeaseOwner {
    LeaseOwner { repo: paths.repo_root.display().to_string(), target: OWNER.into(), service: NAME.into() }
}

/// The host a client reaches it on: its bind address, or this machine's name when it listens everywhere.
pub fn reach_host(bind: &str) -> String {
    match bind {
        "0.0.0.0" | "::" => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| super::HOST.to_owned()),
        ip if ip.contains(':') => format!("[{ip}]"),
        ip => ip.to_owned(),
    }
}

/// Its URL, with the password when one is given.
pub fn url(bind: &str, port: u16, password: Option<&str>) -> String {
    let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
    format!("redis://{auth}{}:{port}/0", reach_host(bind))
}

/// argv of the server: the password is in its config file (never on argv, which every local user can read),
/// every write goes to the append-only file before its reply, and nothing else is snapshotted.
///
/// `appendfsync no`, not `everysec`: with `everysec` the server postpones its write to the file (not only the
/// fsync) for up to 2 s while an earlier fsync is still running, and answers meanwhile, so on a slow disk a
/// killed server lost jobs it had acknowledged. With `no` the write always comes before the reply: a killed
/// server loses nothing, and only a power loss could lose what the kernel had not yet written back.
pub fn argv(binary: &Path, data_dir: &Path, bind: &str, port: u16) -> Vec<String> {
    [
        binary.display().to_string(),
        data_dir.join(super::redis::CONFIG_FILE).display().to_string(),
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        bind.into(),
        "--protected-mode".into(),
        "yes".into(),
        "--dir".into(),
        data_dir.display().to_string(),
        "--appendonly".into(),
        "yes".into(),
        "--appendfsync".into(),
        "no".into(),
        "--save".into(),
        String::new(),
        "--daemonize".into(),
        "no".into(),
        "--databases".into(),
        "1".into(),
        // Keeps its environment (and so envctl's marks) readable in `/proc`: see `redis::argv`.
        "--set-proc-title".into(),
        "no".into(),
    ]
    .into()
}

/// Its record, as the last command that started it wrote it (`None`: it never ran, or the file is unreadable).
pub fn read_record(scope_dir: &Path) -> Option<JobServer> {
    let bytes = std::fs::read(record_path(scope_dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What `settings` would run, when the job backend is the managed server: its record (status as recorded) or,
/// before it ever ran, `port` (the one it would get) and where it would live.
pub fn describe(settings: &Settings, port: u16, binary: Option<String>) -> JobServer {
    let scope_dir = &settings.paths.scope_dir;
    let bind = settings.config.jobs.bind.clone();
    read_record(scope_dir).unwrap_or_else(|| JobServer {
        schema_version: SCHEMA_VERSION,
        status: JobServerStatus::NotStarted,
        url: url(&bind, port, None),
        port,
        bind,
        data_dir: data_dir(scope_dir).display().to_string(),
        log_path: log_path(scope_dir).display().to_string(),
        binary,
        pid: None,
        pid_start_time: None,
        started_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_url_reaches_the_bind_address_and_carries_the_password_only_when_given() {
        assert_eq!(url("127.0.0.1", 6390, Some("pw")), "redis://:pw@127.0.0.1:6390/0");
        assert_eq!(url("127.0.0.1", 6390, None), "redis://127.0.0.1:6390/0");
        assert_eq!(url("::1", 7000, None), "redis://[::1]:7000/0");
        assert!(!url("0.0.0.0", 7000, None).contains("0.0.0.0"), "a wildcard is no address to reach");
    }

    #[test]
    fn its_argv_never_carries_the_password_and_keeps_every_write() {
        let argv = argv(Path::new("/usr/bin/redis-server"), Path::new("/d"), "127.0.0.1", 6390);
        let joined = argv.join(" ");
        assert!(!joined.contains("requirepass"), "{joined}");
        assert!(joined.contains("--appendonly yes --appendfsync no"), "{joined}");
        assert!(joined.contains("--bind 127.0.0.1"), "{joined}");
    }
}
