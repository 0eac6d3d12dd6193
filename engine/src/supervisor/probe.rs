//! Readiness probes: `tcp` (a connection succeeds), `http` (a GET answers the expected status, any 2xx/3xx by
//! default), `exec` (a command exits 0) and `log` (a log line matches a regular expression). One attempt at a
//! time; the caller repeats with backoff until the probe's timeout. An `exec` attempt leaves nothing behind: its
//! command runs in a process group of its own, killed when the attempt ends, and every process of it is waited for.

use std::path::Path;
use std::time::{Duration, Instant};

use envctl_contracts::config::ProbeKind;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{SupervisorError, proc_info, reap, signal};

/// The host probes connect to.
const HOST: &str = "127.0.0.1";
/// Longest a single attempt may take.
pub const ATTEMPT_LIMIT: Duration = Duration::from_secs(2);

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Whether it passed.
    pub ok: bool,
    /// What it saw.
    pub detail: String,
}

impl Attempt {
    fn pass(detail: impl Into<String>) -> Self {
        Self { ok: true, detail: detail.into() }
    }

    fn fail(detail: impl Into<String>) -> Self {
        Self { ok: false, detail: detail.into() }
    }
}

/// A compiled probe.
#[derive(Debug, Clone)]
pub enum Probe {
    /// Connect to the port.
    Tcp(u16),
    /// GET `path` on the port.
    Http { port: u16, path: String, status: Option<u16> },
    /// Run a command.
    Exec { command: String, cwd: std::path::PathBuf, env: Vec<(String, String)> },
    /// Match the log.
    Log { regex: regex_lite::Regex, log: std::path::PathBuf },
    /// `SELECT 1` over a real Postgres connection (with the cluster's password).
    Postgres { port: u16, user: String, database: String, password: Option<String> },
    /// Redis `PING`, with the server's password.
    Redis { port: u16, password: Option<String> },
}

impl Probe {
    /// Compiles a configured probe for a service on `port` logging to `log`.
    pub fn new(
        kind: &ProbeKind,
        port: Option<u16>,
        cwd: &Path,
        env: Vec<(String, String)>,
        log: &Path,
    ) -> Result<Self, SupervisorError> {
        let need_port = || port.ok_or(SupervisorError::ProbeNeedsPort);
        Ok(match kind {
            ProbeKind::Tcp => Self::Tcp(need_port()?),
            ProbeKind::Http { path, status } => {
                Self::Http { port: need_port()?, path: path.clone(), status: *status }
            }
            ProbeKind::Exec { command } => {
                Self::Exec { command: command.clone(), cwd: cwd.to_path_buf(), env }
            }
            ProbeKind::Log { pattern } => Self::Log {
                regex: regex_lite::Regex::new(pattern).map_err(|e| SupervisorError::BadPattern {
                    pattern: pattern.clone(),
                    detail: e.to_string(),
                })?,
                log: log.to_path_buf(),
            },
            ProbeKind::Postgres { user, database } => Self::Postgres {
                port: need_port()?,
                user: user.clone(),
                database: database.clone(),
                password: env.iter().rev().find(|(k, _)| k == "PGPASSWORD").map(|(_, v)| v.clone()),
            },
            ProbeKind::Redis => {
                let password = env
                    .iter()
                    .rev()
                    .find(|(k, _)| k == crate::requirements::REDIS_AUTH_VAR)
                    .map(|(_, v)| v.clone());
                Self::Redis { port: need_port()?, password }
            }
        })
    }

    /// One attempt, at most [`ATTEMPT_LIMIT`] long.
    pub async fn attempt(&self) -> Attempt {
        if let Self::Exec { command, cwd, env } = self {
            // Not cancelled by a timeout: it kills and waits for its command itself.
            return exec(command, cwd, env).await;
        }
        match tokio::time::timeout(ATTEMPT_LIMIT, self.attempt_inner()).await {
            Ok(attempt) => attempt,
            Err(_) => no_answer(),
        }
    }

    async fn attempt_inner(&self) -> Attempt {
        match self {
            Self::Tcp(port) => match TcpStream::connect((HOST, *port)).await {
                Ok(_) => Attempt::pass(format!("connected to {HOST}:{port}")),
                Err(e) => Attempt::fail(format!("{HOST}:{port}: {e}")),
            },
            Self::Http { port, path, status } => http(*port, path, *status).await,
            Self::Exec { command, cwd, env } => exec(command, cwd, env).await,
            Self::Log { regex, log } => match std::fs::read(log) {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    match text.lines().find(|l| regex.is_match(l)) {
                        Some(line) => {
                            Attempt::pass(format!("log: {}", line.chars().take(200).collect::<String>()))
                        }
                        None => Attempt::fail(format!("no log line matches `{}` yet", regex.as_str())),
                    }
                }
                Err(e) => Attempt::fail(format!("{}: {e}", log.display())),
            },
            Self::Postgres { port, user, database, password } => {
                let login = crate::requirements::pgwire::Login::new(user, password.as_deref());
                match crate::requirements::pgwire::query(*port, login, database, "SELECT 1").await {
                    Ok(_) => Attempt::pass("SELECT 1 answered"),
                    Err(e) => Attempt::fail(e.to_string()),
                }
            }
            Self::Redis { port, password } => {
                match crate::requirements::redis::ping(*port, password.as_deref()).await {
                    Ok(()) => Attempt::pass("PONG"),
                    Err(e) => Attempt::fail(e.to_string()),
                }
            }
        }
    }
}

fn no_answer() -> Attempt {
    Attempt::fail(format!("no answer within {} ms", ATTEMPT_LIMIT.as_millis()))
}

/// Runs `sh -c command` as the leader of a new process group, for at most [`ATTEMPT_LIMIT`]. Then whatever of the
/// group still runs (all of it on a timeout) is killed, the shell is waited for here rather than left to tokio's
/// best-effort reaping of a dropped `Child`, and so are the processes of the group that were handed to this
/// process when their parent died ([`reap::strays`]).
async fn exec(command: &str, cwd: &Path, env: &[(String, String)]) -> Attempt {
    let spawned = tokio::process::Command::new("sh")
        .args(["-c", command])
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(super::proc_info::ROLE_VAR, "probe")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        // Only if this attempt is dropped half-way (the runtime shutting down).
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Attempt::fail(format!("`{command}`: {e}")),
    };
    let group = child.id().unwrap_or_default();
    let started = proc_info::start_time(group).unwrap_or_default();
    let exited = tokio::time::timeout(ATTEMPT_LIMIT, child.wait()).await.ok();
    signal::signal_all(group, started, &[], Signal::SIGKILL);
    if exited.is_none() {
        let _ = child.wait().await;
    }
    wait_group_gone(group).await;
    match exited {
        None => no_answer(),
        Some(Ok(s)) if s.success() => Attempt::pass("exit 0"),
        Some(Ok(s)) => Attempt::fail(format!("`{command}` exited with {s}")),
        Some(Err(e)) => Attempt::fail(format!("`{command}`: {e}")),
    }
}

/// Waits (half a second at most) until nothing of the killed process group `group` is left, zombies included,
/// waiting for those handed to this process.
async fn wait_group_gone(group: u32) {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        reap::strays(group);
        if !signal::group_exists(group) || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A GET of `path` on the port; the answer reads `http 500 from http://127.0.0.1:8000/health, expected 2xx or 3xx`.
async fn http(port: u16, path: &str, expected: Option<u16>) -> Attempt {
    let url = format!("http://{HOST}:{port}{path}");
    let mut stream = match TcpStream::connect((HOST, port)).await {
        Ok(s) => s,
        Err(e) => return Attempt::fail(format!("GET {url}: {e}")),
    };
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {HOST}:{port}\r\nUser-Agent: envctl\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Attempt::fail(format!("GET {url}: {e}"));
    }
    let mut head = vec![0u8; 256];
    let mut filled = 0;
    while filled < head.len() && !head[..filled].contains(&b'\n') {
        match stream.read(&mut head[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Attempt::fail(format!("GET {url}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..filled]);
    let code = line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    let answer = |code: u16| format!("http {code} from {url}");
    match (code, expected) {
        (Some(code), Some(want)) if code == want => Attempt::pass(answer(code)),
        (Some(code), None) if (200..400).contains(&code) => Attempt::pass(answer(code)),
        (Some(code), Some(want)) => Attempt::fail(format!("{}, expected {want}", answer(code))),
        (Some(code), None) => Attempt::fail(format!("{}, expected 2xx or 3xx", answer(code))),
        (None, _) => Attempt::fail(format!("GET {url}: not an HTTP answer")),
    }
}

/// Backoff between attempts: 2 ms, growing by half, at most 50 ms (a probe of a local port costs microseconds;
/// a slow start should not be noticed late).
pub fn next_pause(previous: Duration) -> Duration {
    (previous * 3 / 2).clamp(Duration::from_millis(2), Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_and_http_probes_see_a_real_server() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let answer = if req.starts_with("GET /health") {
                    "HTTP/1.0 200 OK\r\n\r\n"
                } else {
                    "HTTP/1.0 404 Not Found\r\n\r\n"
                };
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        assert!(Probe::Tcp(port).attempt().await.ok);
        let ok = Probe::Http { port, path: "/health".into(), status: None }.attempt().await;
        assert!(ok.ok, "{ok:?}");
        let missing = Probe::Http { port, path: "/nope".into(), status: None }.attempt().await;
        assert!(!missing.ok && missing.detail.contains("404"), "{missing:?}");
    }

    /// Whether `pid` is a child of this process that exited and was never waited for.
    fn unreaped(pid: u32) -> bool {
        proc_info::zombie(pid).is_some_and(|s| s.ppid == std::process::id())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_exec_probe_that_hangs_is_killed_with_what_it_started_and_reaped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let probe = Probe::Exec {
            command: "echo $$ > shell; sleep 30 & echo $! > sleeper; wait".into(),
            cwd: dir.path().to_path_buf(),
            env: Vec::new(),
        };
        let attempt = probe.attempt().await;
        assert!(!attempt.ok && attempt.detail.contains("no answer"), "{attempt:?}");
        let read = |name: &str| -> u32 {
            std::fs::read_to_string(dir.path().join(name)).expect("pid file").trim().parse().expect("pid")
        };
        let (shell, sleeper) = (read("shell"), read("sleeper"));
        let deadline = Instant::now() + Duration::from_secs(2);
        while (unreaped(shell) || proc_info::stat(sleeper).is_some()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!unreaped(shell), "the probe's shell {shell} was never waited for");
        assert!(proc_info::stat(sleeper).is_none(), "the probe's child {sleeper} outlived it");
    }

    #[tokio::test]
    async fn exec_and_log_probes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("svc.log");
        let probe = Probe::new(
            &ProbeKind::Log { pattern: "ready on \\d+".into() },
            None,
            dir.path(),
            Vec::new(),
            &log,
        )
        .expect("probe");
        assert!(!probe.attempt().await.ok);
        std::fs::write(&log, "starting\nready on 8000\n").expect("write");
        assert!(probe.attempt().await.ok);
        let exec = Probe::new(
            &ProbeKind::Exec { command: "test -f svc.log".into() },
            None,
            dir.path(),
            Vec::new(),
            &log,
        )
        .expect("probe");
        assert!(exec.attempt().await.ok);
        assert!(
            Probe::new(&ProbeKind::Log { pattern: "(".into() }, None, dir.path(), Vec::new(), &log).is_err()
        );
    }
}
