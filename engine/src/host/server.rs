//! The control socket: one JSON request line per connection, answered by progress lines and a final reply.

use std::collections::BTreeSet;
use std::sync::Arc;

use envctl_contracts::state::ProcessKind;

use envctl_contracts::control::{Reply, Request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::{Host, HostError, Key};
use crate::config::Paths;
use crate::startup;

/// Binds the control socket (any file left at its path is stale: the caller holds the host lock).
pub fn bind(paths: &Paths) -> Result<UnixListener, HostError> {
    let socket = paths.control_socket();
    let io = |source| HostError::Io { path: socket.display().to_string(), source };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let _ = std::fs::remove_file(&socket);
    UnixListener::bind(&socket).map_err(io)
}

/// Removes the socket file.
pub fn unbind(paths: &Paths) {
    let _ = std::fs::remove_file(paths.control_socket());
}

/// Accepts connections until the host's token is cancelled.
pub async fn serve(host: Arc<Host>, listener: UnixListener) {
    loop {
        tokio::select! {
            () = host.token.cancelled() => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    host.tracker.spawn(connection(Arc::clone(&host), stream));
                }
            }
        }
    }
}

async fn connection(host: Arc<Host>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Reply>(64);
    let handler = {
        let host = Arc::clone(&host);
        tokio::spawn(async move {
            match serde_json::from_str::<Request>(&line) {
                Ok(request) => handle(&host, request, &tx).await,
                Err(e) => {
                    let _ = tx.send(Reply::Error { message: format!("malformed request: {e}") }).await;
                }
            }
        })
    };
    while let Some(reply) = rx.recv().await {
        let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = handler.await;
}

async fn handle(host: &Arc<Host>, request: Request, tx: &mpsc::Sender<Reply>) {
    let reply = match request {
        Request::Start(start) => startup::start(host, start, tx).await,
        Request::Resume(resume) => startup::resume(host, resume, tx).await,
        Request::Stop(stop) => {
            let keys = stop_keys(host, &stop.targets, &stop.services).await;
            let stopped = host.stop(keys).await;
            let _ = host.save(true).await;
            let host_exiting = host.services.lock().await.is_empty();
            Reply::Stopped { stopped: labels(&stopped), host_exiting }
        }
        Request::Status => Reply::Status {
            host: host.record,
            run_id: host.run_id(),
            services: host
                .services
                .lock()
                .await
                .values()
                .map(crate::supervisor::service::ServiceHandle::record)
                .collect(),
        },
        Request::Shutdown => {
            let stopped = host.stop_all().await;
            let _ = host.save(true).await;
            Reply::Stopped { stopped: labels(&stopped), host_exiting: true }
        }
    };
    let exiting = matches!(reply, Reply::Stopped { host_exiting: true, .. });
    let _ = tx.send(reply).await;
    if exiting || host.services.lock().await.is_empty() {
        host.token.cancel();
    }
}

/// `target/service` of each key.
fn labels(keys: &[Key]) -> Vec<String> {
    keys.iter().map(|(t, s)| format!("{t}/{s}")).collect()
}

/// What a stop of `targets` (all when empty) and `services` (all when empty) stops: the matching services and the
/// requirement servers those targets own, except a server another target that keeps running still uses.
async fn stop_keys(host: &Host, targets: &[String], services: &[String]) -> Vec<Key> {
    let all = host.services.lock().await;
    let selected = |(t, s): &Key| {
        (targets.is_empty() || targets.contains(t)) && (services.is_empty() || services.contains(s))
    };
    let mut keys: Vec<Key> = all.keys().filter(|k| selected(k)).cloned().collect();
    let remaining: BTreeSet<&String> = all
        .iter()
        .filter(|(k, h)| h.spec.kind == ProcessKind::Service && !selected(k))
        .map(|((t, _), _)| t)
        .collect();
    let uses = host.uses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    keys.retain(|key| {
        all.get(key).is_none_or(|h| h.spec.kind == ProcessKind::Service)
            || !remaining.iter().any(|t| uses.get(*t).is_some_and(|used| used.contains(key)))
    });
    keys
}
