//! The CLI's side of the control socket: find the host (spawning one detached when none answers), send one
//! request, read progress lines until the final reply.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use envctl_contracts::control::{HostView, Progress, Reply, Request};

use super::launch;
use crate::config::Paths;
use crate::supervisor::logs;

/// How long a freshly spawned host may take to answer.
const SPAWN_WAIT: Duration = Duration::from_secs(10);

/// The host could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// It could not be started.
    #[error("cannot start the envctl host: {0}\nhint: see {1}")]
    Spawn(String, String),
    /// The conversation broke.
    #[error(
        "lost the connection to the envctl host: {0}\nhint: run `envctl resume` to reconnect; the host log is {1}"
    )]
    Io(String, String),
    /// The host closed the connection without answering (it was exiting).
    #[error(
        "the envctl host closed the connection without answering\nhint: run the command again; the host log is {0}"
    )]
    Unanswered(String),
}

/// A connection to the host.
#[derive(Debug)]
pub struct HostClient {
    stream: UnixStream,
    log: PathBuf,
    /// The claim on a host this command started, let go of once its request is answered (see [`launch`]).
    _claim: Option<std::os::fd::OwnedFd>,
}

/// Whether `dir` is a real directory owned by this user that no one else can write to.
fn trusted_dir(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    std::fs::symlink_metadata(dir).is_ok_and(|m| {
        m.file_type().is_dir()
            && m.uid() == nix::unistd::geteuid().as_raw()
            && m.permissions().mode() & 0o022 == 0
    })
}

/// The host's own log file.
pub fn host_log(paths: &Paths) -> PathBuf {
    paths.scope_dir.join("host.log")
}

/// Waits (up to [`SPAWN_WAIT`]) on this thread for the spawned host's readiness line: `Some(true)` when it said
/// it serves, `Some(false)` when it closed the pipe (exited) without saying so, `None` on a timeout.
fn read_ready(mut stdout: &std::fs::File) -> Option<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    let deadline = std::time::Instant::now() + SPAWN_WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => return None,
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return Some(false),
        }
    }
    let mut line = [0u8; 6];
    Some(std::io::Read::read(&mut stdout, &mut line).is_ok_and(|n| n > 0))
}

impl HostClient {
    /// Connects to the running host, if one answers — and only when its socket lies in a directory that is the
    /// user's own and nobody else can write to (a request carries the user's whole environment).
    pub fn connect(paths: &Paths) -> Option<Self> {
        let socket = paths.control_socket();
        if !socket.parent().is_some_and(trusted_dir) {
            return None;
        }
        UnixStream::connect(socket).ok().map(|stream| Self { stream, log: host_log(paths), _claim: None })
    }

    /// Connects, first spawning a detached host (`<exe> host -C <repo>`) when none answers. The connection holds
    /// the claim on a host it started: should this command end before its request, the host goes too.
    pub fn connect_or_spawn(paths: &Paths) -> Result<Self, ClientError> {
        if let Some(client) = Self::connect(paths) {
            return Ok(client);
        }
        let log = host_log(paths);
        let spawn_error =
            |e: &dyn std::fmt::Display| ClientError::Spawn(e.to_string(), log.display().to_string());
        let exe = std::env::current_exe().map_err(|e| spawn_error(&e))?;
        let started = launch::start(&exe, &paths.current_root, &log, crate::runtime::host_process)
            .map_err(|e| spawn_error(&e))?;
        // The claim goes with the connection to the host that serves, whichever host that is.
        let mut claim = Some(started.claim);
        let mut connect = || Self::connect(paths).map(|client| Self { _claim: claim.take(), ..client });
        let said_ready = read_ready(&started.ready);
        if let Some(client) = connect() {
            return Ok(client);
        }
        match said_ready {
            None => return Err(spawn_error(&"it did not answer within 10 s")),
            // It said it serves: a connection refused now is passing (a full backlog), so try a little longer.
            Some(true) => {
                for _ in 0..100 {
                    std::thread::sleep(Duration::from_millis(10));
                    if let Some(client) = connect() {
                        return Ok(client);
                    }
                }
                return Err(spawn_error(&"it said it serves, but its socket does not answer"));
            }
            Some(false) => {}
        }
        // It exited without serving: another host may have won the race for the lock and answers soon.
        let status = started.process.wait().map_err(|e| spawn_error(&e))?;
        if let Some(client) = connect() {
            return Ok(client);
        }
        let tail = logs::tail(&log, 5).join("\n");
        Err(spawn_error(&format!("it exited with {status}: {tail}")))
    }

    /// Sends `request`; calls `progress` for each progress line; returns the final reply.
    pub fn request(
        mut self,
        request: &Request,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Reply, ClientError> {
        let io = |e: &dyn std::fmt::Display, log: &PathBuf| {
            ClientError::Io(e.to_string(), log.display().to_string())
        };
        let mut line = serde_json::to_vec(request).map_err(|e| io(&e, &self.log))?;
        line.push(b'\n');
        self.stream.write_all(&line).map_err(|e| io(&e, &self.log))?;
        let reader = BufReader::new(self.stream.try_clone().map_err(|e| io(&e, &self.log))?);
        let mut answered = false;
        for line in reader.lines() {
            let line = match line {
                Ok(line) => line,
                Err(_) if !answered => return Err(ClientError::Unanswered(self.log.display().to_string())),
                Err(e) => return Err(io(&e, &self.log)),
            };
            answered = true;
            match Reply::from_line(&line) {
                Ok(Reply::Progress(p)) => progress(&p),
                Ok(reply) => return Ok(reply),
                Err(e) => return Err(io(&format!("unreadable reply ({e})"), &self.log)),
            }
        }
        if answered {
            Err(io(&"the host closed the connection", &self.log))
        } else {
            Err(ClientError::Unanswered(self.log.display().to_string()))
        }
    }

    /// Sends `watch` and hands every view the host pushes to `view` until it returns false (`Ok`) or the host
    /// hangs up (an error saying so).
    pub fn watch(mut self, mut view: impl FnMut(HostView) -> bool) -> Result<(), ClientError> {
        let io = |e: &dyn std::fmt::Display, log: &PathBuf| {
            ClientError::Io(e.to_string(), log.display().to_string())
        };
        let mut line = serde_json::to_vec(&Request::Watch).map_err(|e| io(&e, &self.log))?;
        line.push(b'\n');
        self.stream.write_all(&line).map_err(|e| io(&e, &self.log))?;
        let reader = BufReader::new(self.stream.try_clone().map_err(|e| io(&e, &self.log))?);
        for line in reader.lines() {
            let line = line.map_err(|e| io(&e, &self.log))?;
            match Reply::from_line(&line) {
                Ok(Reply::View(v)) => {
                    if !view(v) {
                        return Ok(());
                    }
                }
                Ok(Reply::Error { message }) => return Err(io(&message, &self.log)),
                Ok(other) => return Err(io(&format!("unexpected reply {other:?}"), &self.log)),
                Err(e) => return Err(io(&format!("unreadable reply ({e})"), &self.log)),
            }
        }
        Err(io(&"the host exited", &self.log))
    }

    /// Waits until a running host has written what it is still writing (the run copy a start writes after its
    /// reply), for commands that read the run copies; returns at once when no host answers.
    pub fn settle(paths: &Paths) {
        if let Some(client) = Self::connect(paths) {
            let _ = client.request(&Request::Status, |_| {});
        }
    }

    /// Sends `request` to the host (spawning one when `spawn` and none answers). A host that was exiting and
    /// closed the connection unanswered is replaced once. `Ok(None)`: no host and `spawn` was false.
    pub fn call(
        paths: &Paths,
        spawn: bool,
        request: &Request,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Option<Reply>, ClientError> {
        for attempt in 0..3 {
            let client = if spawn { Some(Self::connect_or_spawn(paths)?) } else { Self::connect(paths) };
            let Some(client) = client else { return Ok(None) };
            match client.request(request, &mut progress) {
                Err(ClientError::Unanswered(_)) if attempt < 2 => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other.map(Some),
            }
        }
        Err(ClientError::Unanswered(host_log(paths).display().to_string()))
    }
}
