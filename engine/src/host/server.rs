//! The control socket: one JSON request line per connection, answered by progress lines and a final reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use envctl_contracts::control::{Reply, Request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::{Host, HostError, Key};
use crate::config::Paths;
use crate::supervisor::service::ServiceHandle;

/// Binds the control socket (any file left at its path is stale: the caller holds the host lock) in a private
/// directory (0700, the user's own), the socket itself 0600 whatever the umask.
pub fn bind(paths: &Paths) -> Result<UnixListener, HostError> {
    use std::os::unix::fs::PermissionsExt as _;
    let socket = paths.control_socket();
    let io = |source| HostError::Io { path: socket.display().to_string(), source };
    for dir in [&paths.runtime_root, &paths.scope_dir] {
        crate::state::ensure_private_dir(dir).map_err(io)?;
    }
    if let Some(dir) = socket.parent() {
        crate::state::ensure_private_dir(dir).map_err(io)?;
    }
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(io)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Whether the peer of `stream` runs as this process's user (`SO_PEERCRED`); anyone else is refused.
fn same_user(stream: &UnixStream) -> Result<(), String> {
    let me = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(peer) if peer.uid() == me => Ok(()),
        Ok(peer) => Err(format!("refused: uid {} is not this host's user (uid {me})", peer.uid())),
        Err(e) => Err(format!("refused: the peer's credentials cannot be read ({e})")),
    }
}

/// One open control connection, counted while it lasts.
struct Open<'a>(&'a AtomicUsize);

impl<'a> Open<'a> {
    fn count(connections: &'a AtomicUsize) -> Self {
        connections.fetch_add(1, Ordering::SeqCst);
        Self(connections)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Removes the socket file.
pub fn unbind(paths: &Paths) {
    let _ = std::fs::remove_file(paths.control_socket());
}

/// Accepts connections until the host's token is cancelled.
pub async fn serve(host: Arc<Host>, listener: UnixListener) {
    loop {
        tokio::select! {
            () = host.parts.token.cancelled() => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    host.parts.tracker.spawn(connection(Arc::clone(&host), stream));
                }
            }
        }
    }
}

async fn connection(host: Arc<Host>, stream: UnixStream) {
    let _open = Open::count(&host.connections);
    if let Err(why) = same_user(&stream) {
        tracing::warn!(reason = %why, "control connection refused");
        let (_, mut write) = stream.into_split();
        let mut bytes = serde_json::to_vec(&Reply::Error { message: why }).unwrap_or_default();
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Reply>(64);
    let handler = {
        let host = Arc::clone(&host);
        tokio::spawn(async move {
            match Request::from_line(&line) {
                Ok(request) => handle(&host, request, &tx).await,
                Err(e) => {
                    let _ = tx.send(Reply::Error { message: format!("malformed request: {e}") }).await;
                }
            }
        })
    };
    let mut rest = Vec::new();
    loop {
        let reply = tokio::select! {
            reply = rx.recv() => reply,
            // The client hung up (a dashboard that quit): what is still to say has no one to hear it.
            _ = read.read_until(b'\n', &mut rest) => break,
        };
        let Some(reply) = reply else { break };
        let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() {
            break;
        }
    }
    // A handler still sending (a watch) sees the channel closed and ends.
    drop(rx);
    let _ = handler.await;
}

/// Answers one request: `start` and `resume` through the host's orchestrator, the rest here. The host exits
/// once a reply says so or nothing is supervised any more.
pub async fn handle(host: &Arc<Host>, request: Request, tx: &mpsc::Sender<Reply>) {
    let changes = !matches!(request, Request::Status | Request::Watch);
    let _one_at_a_time = if changes { Some(host.orchestrating().await) } else { None };
    if changes && host.parts.token.is_cancelled() {
        // The host began to exit while this waited: no answer, so the client asks the next host.
        return;
    }
    let reply = match request {
        Request::Start(start) => host.orchestrator.start(host, start, tx).await,
        Request::Resume(resume) => host.orchestrator.resume(host, resume, tx).await,
        Request::Stop(stop) => {
            let keys = host.stop_keys(&stop.targets, &stop.services).await;
            let stopped = host.stop_for_good(keys).await;
            host.drop_retained(&stop.targets, &stop.services);
            // Failures are logged and recorded by `save`.
            let _ = host.save(true).await;
            Reply::Stopped { stopped: labels(&stopped), host_exiting: host.is_idle().await }
        }
        Request::Status => {
            // A reader that needs the run copies (a bundle, doctor's report beside them) asks this first.
            host.flush().await;
            Reply::Status {
                host: host.record(),
                run_id: host.run_id(),
                services: host.snapshot().await.values().map(ServiceHandle::record).collect(),
            }
        }
        Request::Watch => {
            // Views until the client hangs up or the host exits; it changes nothing, so it never decides that
            // the host exits either.
            super::watch::serve(host, tx).await;
            return;
        }
        Request::Shutdown => {
            let stopped = host.stop_all().await;
            let _ = host.save(true).await;
            Reply::Stopped { stopped: labels(&stopped), host_exiting: true }
        }
    };
    let exiting = matches!(reply, Reply::Stopped { host_exiting: true, .. });
    let _ = tx.send(reply).await;
    // A status request changes nothing, so it never decides that the host exits.
    if exiting || (changes && host.is_idle().await) {
        host.exit();
    }
}

/// `target/service` of each key.
fn labels(keys: &[Key]) -> Vec<String> {
    keys.iter().map(|(t, s)| format!("{t}/{s}")).collect()
}
