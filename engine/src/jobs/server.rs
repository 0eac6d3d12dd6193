//! The managed job server's life: every command that opens the Redis job store without a URL ([`ensure`]) finds
//! the repository's server by its record (pid **and** start time) and reuses it, or starts it on its data — on a
//! leased port, with its password, its queue in an append-only file — and records it; `stop-all` stops it
//! ([`stop`]) and keeps its data. Commands racing to start it agree on one server through a file lock.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::jobs::{JobServer, JobServerStatus};

use super::StoreError;
use crate::config::Paths;
use crate::ports::{Ledger, PortRequest, is_free};
use crate::requirements::job_server::{self, NAME, ROLE};
use crate::state::{FileLock, create_private_dir_all, now_rfc3339, write_atomic};
use crate::supervisor::proc_info;

/// Longest a new server may take to answer `PING`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// What starting the job server needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// The repository's paths (scope directory, ledger, repository root).
    pub paths: Paths,
    /// `jobs.bind`.
    pub bind: String,
    /// `jobs.port`: the port asked for the first time.
    pub port: u16,
    /// Where to look for `redis-server` (`PATH`).
    pub path_var: Option<String>,
}

/// A running job server and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Its record.
    pub record: JobServer,
    /// Its password.
    pub password: String,
    /// Whether this call started it.
    pub started: bool,
}

impl Running {
    /// The URL envctl's own store connects with: loopback, whatever it binds to.
    pub fn local_url(&self) -> String {
        let host = match self.record.bind.as_str() {
            "0.0.0.0" | "127.0.0.1" => "127.0.0.1",
            "::" | "::1" => "[::1]",
            other => other,
        };
        format!("redis://:{}@{host}:{}/0", self.password, self.record.port)
    }
}

fn failed(detail: impl Into<String>) -> StoreError {
    StoreError::Backend { store: "redis (the job server envctl runs)".into(), detail: detail.into() }
}

/// The recorded server when its process (pid and start time) still runs.
fn live_record(scope_dir: &Path) -> Option<JobServer> {
    job_server::read_record(scope_dir).filter(|r| {
        r.status == JobServerStatus::Running
            && r.pid
                .zip(r.pid_start_time)
                .is_some_and(|(pid, started)| proc_info::is_same_process(pid, started))
    })
}

/// The repository's job server: the running one, or one started now (blocking; call it off an async thread).
pub fn ensure(spec: &ServerSpec) -> Result<Running, StoreError> {
    let scope_dir = &spec.paths.scope_dir;
    let password =
        || job_server::password(scope_dir).map_err(|e| failed(format!("cannot read its password: {e}")));
    if let Some(record) = live_record(scope_dir) {
        return Ok(Running { password: password()?, record, started: false });
    }
    create_private_dir_all(scope_dir).map_err(|e| failed(format!("{}: {e}", scope_dir.display())))?;
    let lock_path = job_server::lock_path(scope_dir);
    let _lock = FileLock::acquire(&lock_path).map_err(|e| failed(format!("{}: {e}", lock_path.display())))?;
    // Another command may have started it while this one waited for the lock.
    if let Some(record) = live_record(scope_dir) {
        return Ok(Running { password: password()?, record, started: false });
    }
    // Its record lost (deleted, torn) while it runs: found by its marks and recorded again, never started twice.
    if let Some(record) = adopt(spec) {
        return Ok(Running { password: password()?, record, started: false });
    }
    let binary = crate::requirements::find_binary("redis-server", spec.path_var.as_deref()).ok_or_else(|| {
        failed(
            "redis-server was not found on PATH (jobs.backend is redis and no URL is set, so envctl runs one)\nhint: apt-get install redis-server, or set [jobs].redis_url to a server you run",
        )
    })?;
    let secret =
        job_server::password(scope_dir).map_err(|e| failed(format!("cannot keep its password: {e}")))?;
    let data_dir = job_server::data_dir(scope_dir);
    create_private_dir_all(&data_dir).map_err(|e| failed(format!("{}: {e}", data_dir.display())))?;
    let config = data_dir.join(crate::requirements::redis::CONFIG_FILE);
    if std::fs::read_to_string(&config).ok() != Some(crate::requirements::redis::config_text(Some(&secret))) {
        crate::requirements::redis::write_config(&data_dir, Some(&secret))
            .map_err(|e| failed(format!("cannot write its config file in {}: {e}", data_dir.display())))?;
    }
    let previous = job_server::read_record(scope_dir).map(|r| r.port);
    let mut last_error = String::new();
    // A port taken between planning and binding is given up once and another one planned.
    for _ in 0..2 {
        let port = plan_port(spec, previous)?;
        match start_on(spec, &binary, &data_dir, port, &secret) {
            Ok(record) => return Ok(Running { record, password: secret, started: true }),
            Err(Start::PortTaken(detail)) => last_error = detail,
            Err(Start::Failed(e)) => return Err(e),
        }
    }
    Err(failed(last_error))
}

/// The repository's job server running without a record (found by its marks, answering on the port its argv
/// names), recorded again.
fn adopt(spec: &ServerSpec) -> Option<JobServer> {
    let scope = crate::plan::scope_of(&spec.paths);
    let (pid, started) = proc_info::with_role(&scope, ROLE).into_iter().next()?;
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()?
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let port: u16 = argv.iter().position(|a| a == "--port").and_then(|i| argv.get(i + 1))?.parse().ok()?;
    let secret = job_server::password(&spec.paths.scope_dir).ok()?;
    if !proc_info::listening_ports(&[pid]).contains(&port) {
        return None;
    }
    ping(port, &secret).ok()?;
    let (record, saved) = record_running(spec, port, (pid, started), argv.first().cloned(), None);
    if let Err(e) = saved {
        tracing::warn!(error = %e, "the adopted job server could not be recorded");
    }
    tracing::info!(pid, port, "job server adopted (its record was lost)");
    Some(record)
}

/// Plans the server's port: the one it had (so a worker pointed at it elsewhere keeps reaching it), else
/// `jobs.port` or the next free one. Its lease is written for the server once it listens ([`start_on`]); a port
/// another repository took in between makes the server fail to bind, and the next attempt plans past it.
fn plan_port(spec: &ServerSpec, previous: Option<u16>) -> Result<u16, StoreError> {
    let ledger = Ledger::new(&spec.paths.ledger_dir);
    let request = PortRequest {
        owner: job_server::lease_owner(&spec.paths),
        base: previous.unwrap_or(spec.port),
        slot: 0,
    };
    let plans = ledger.plan(std::slice::from_ref(&request), &is_free).map_err(|e| failed(e.to_string()))?;
    plans.first().map(|p| p.assigned).ok_or_else(|| failed("no port was planned"))
}

enum Start {
    PortTaken(String),
    Failed(StoreError),
}

fn start_on(
    spec: &ServerSpec,
    binary: &Path,
    data_dir: &Path,
    port: u16,
    secret: &str,
) -> Result<JobServer, Start> {
    let scope_dir = &spec.paths.scope_dir;
    let log_path = job_server::log_path(scope_dir);
    let argv = job_server::argv(binary, data_dir, &spec.bind, port);
    let log = crate::state::open_private_append(&log_path)
        .and_then(|out| Ok((out.try_clone()?, out)))
        .map_err(|e| Start::Failed(failed(format!("{}: {e}", log_path.display()))))?;
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(data_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.0)
        .stderr(log.1)
        // Marked as this repository's, in a role no target's service has, so recovery never adopts it into a run.
        .env("ENVCTL_SCOPE", crate::plan::scope_of(&spec.paths))
        .env("ENVCTL_TARGET", job_server::OWNER)
        .env("ENVCTL_SERVICE", NAME)
        .env(proc_info::ROLE_VAR, ROLE)
        .env(crate::requirements::REDIS_AUTH_VAR, secret);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let began = Instant::now();
    let mut child =
        cmd.spawn().map_err(|e| Start::Failed(failed(format!("cannot run {}: {e}", binary.display()))))?;
    let pid = child.id();
    let ready = wait_ready(&mut child, port, secret);
    if let Err(why) = ready {
        let _ = child.kill();
        let _ = child.wait();
        let tail = crate::supervisor::logs::tail(&log_path, 10).join("\n");
        let detail = format!(
            "redis-server on port {port} did not start: {why}\nlog {} ends with:\n{tail}",
            log_path.display()
        );
        return Err(if tail.contains("Address already in use") {
            Start::PortTaken(detail)
        } else {
            Start::Failed(failed(detail))
        });
    }
    let started = proc_info::start_time(pid).unwrap_or_default();
    let binary = Some(binary.display().to_string());
    let (record, saved) = record_running(spec, port, (pid, started), binary, Some(now_rfc3339()));
    saved.map_err(|e| Start::Failed(failed(format!("cannot record it: {e}"))))?;
    tracing::info!(port, pid, elapsed_ms = began.elapsed().as_millis(), "job server started");
    // Reap it when it ends while this process lives on (a host or a worker), so it never lingers as a zombie.
    std::thread::spawn(move || child.wait());
    Ok(record)
}

/// Leases `port` to the running server (`pid`, its start time) and writes its record; returns the record and
/// whether it was written.
fn record_running(
    spec: &ServerSpec,
    port: u16,
    (pid, started): (u32, u64),
    binary: Option<String>,
    started_at: Option<String>,
) -> (JobServer, std::io::Result<()>) {
    let scope_dir = &spec.paths.scope_dir;
    let ledger = Ledger::new(&spec.paths.ledger_dir);
    if let Err(e) = ledger.claim(&[(port, job_server::lease_owner(&spec.paths))], pid, started) {
        tracing::warn!(error = %e, port, "the job server's port could not be leased to it");
    }
    let record = JobServer {
        schema_version: SCHEMA_VERSION,
        status: JobServerStatus::Running,
        port,
        bind: spec.bind.clone(),
        url: job_server::url(&spec.bind, port, None),
        data_dir: job_server::data_dir(scope_dir).display().to_string(),
        log_path: job_server::log_path(scope_dir).display().to_string(),
        binary,
        pid: Some(pid),
        pid_start_time: Some(started),
        started_at,
    };
    let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
    // Atomic, not synced: it names a running process, which a power loss ends anyway (and the pid and start time
    // a torn record would name then are checked before anything trusts them).
    let saved = crate::state::write_atomic_with(
        &job_server::record_path(scope_dir),
        &bytes,
        crate::state::Durability::None,
    );
    (record, saved)
}

/// Waits until the server answers `PING` with its password (it replays its append-only file first).
fn wait_ready(child: &mut std::process::Child, port: u16, secret: &str) -> Result<(), String> {
    let deadline = Instant::now() + READY_WITHIN;
    // A refused connect costs microseconds: looking every millisecond finds it listening as soon as it does.
    let pause = Duration::from_millis(1);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status})"));
        }
        // The password goes only to the server this call started: whatever else listens on the port (another
        // user's process that took it first) gets nothing.
        let ours = proc_info::listening_ports(&[child.id()]).contains(&port);
        match if ours { ping(port, secret) } else { Err("not listening yet".into()) } {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("no answer within {READY_WITHIN:?}: {e}"));
            }
            Err(_) => {}
        }
        std::thread::sleep(pause);
    }
}

/// `AUTH` and `PING` over one short connection.
fn ping(port: u16, secret: &str) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    // A server still starting may hold a connection unanswered: give up on it soon and try a fresh one.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(25)));
    let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{secret}\r\n*1\r\n$4\r\nPING\r\n", secret.len());
    stream.write_all(auth.as_bytes()).map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while !reply.ends_with(b"+PONG\r\n") {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.starts_with(b"-") || reply.windows(2).any(|w| w == b"\n-") {
            // An error to either command — `-LOADING` while it replays its data (`AUTH` is answered even then),
            // or a wrong password: either way not ready.
            return Err(String::from_utf8_lossy(&reply).trim().to_owned());
        }
    }
    Ok(())
}

/// What [`stop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedServer {
    /// Its pid.
    pub pid: u32,
    /// Its port.
    pub port: u16,
    /// Where its queue stays.
    pub data_dir: PathBuf,
}

/// Stops the repository's job server when its recorded process (pid and start time) runs — `SIGTERM`, so it
/// writes out its append-only file, `SIGKILL` after 10 s — releases its port lease and marks its record stopped.
/// Its data stays.
pub async fn stop(paths: &Paths) -> Result<Option<StoppedServer>, StoreError> {
    let scope = crate::plan::scope_of(paths);
    let marked = crate::supervisor::signal::scan(move || proc_info::with_role(&scope, ROLE)).await;
    let record = job_server::read_record(&paths.scope_dir);
    let mut stopped = None;
    // The recorded server, and any of this repository's found by its marks (one whose record was lost).
    let recorded = record.as_ref().and_then(|r| r.pid.zip(r.pid_start_time));
    for (pid, started) in recorded.into_iter().chain(marked) {
        if stopped.as_ref().is_some_and(|s: &StoppedServer| s.pid == pid)
            || !proc_info::is_same_process(pid, started)
        {
            continue;
        }
        crate::supervisor::signal::stop_unowned(pid, started, Duration::from_secs(10)).await;
        let port = record.as_ref().map_or(0, |r| r.port);
        stopped = Some(StoppedServer { pid, port, data_dir: job_server::data_dir(&paths.scope_dir) });
    }
    let Some(mut record) = record else { return Ok(stopped) };
    let owner = job_server::lease_owner(paths);
    let ledger = Ledger::new(&paths.ledger_dir);
    let _ = ledger.release(|o| *o == owner);
    record.status = JobServerStatus::Stopped;
    record.pid = None;
    record.pid_start_time = None;
    let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
    write_atomic(&job_server::record_path(&paths.scope_dir), &bytes)
        .map_err(|e| failed(format!("cannot record that it stopped: {e}")))?;
    Ok(stopped)
}
