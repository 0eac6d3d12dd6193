//! `start --foreground`: the host runs inside this process, and every service's log is printed here, each line
//! prefixed with its target and service. Ctrl-C stops everything in reverse dependency order; a second Ctrl-C
//! skips the grace period.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envctl_contracts::control::{Reply, Request, StartRequest};

use super::super::report_start;
use crate::host::client::HostClient;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::supervisor::logs::read_new_lines;
use crate::ui::lifecycle::show_progress;

/// Runs the host here (a task on this command's runtime), starts the request through it, and follows the logs
/// until the host ends.
pub fn run(rt: &EngineRuntime, request: StartRequest) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?.clone();
    let printer = *rt.printer();
    if HostClient::connect(&paths).is_some() {
        return Err(EngineError::Failed(
            "a detached envctl host already runs for this repository\nhint: stop it with `envctl stop-all`, or run `envctl start` without --foreground".into(),
        ));
    }
    let parts = rt.host_parts()?;
    rt.block_on(async move {
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let ready_tx = move || {
            let _ = ready_tx.send(());
        };
        let mut host = tokio::spawn(EngineRuntime::run_host(parts, ready_tx, std::future::pending()));
        let serving = tokio::select! {
            served = tokio::time::timeout(Duration::from_secs(10), ready) => matches!(served, Ok(Ok(()))),
            ended = &mut host => {
                return match ended {
                    Ok(Err(e)) => Err(e),
                    _ => Err(EngineError::Failed("the in-process host did not start".into())),
                };
            }
        };
        let client = match HostClient::connect(&paths) {
            Some(client) if serving => client,
            _ => return Err(EngineError::Failed("the in-process host did not start".into())),
        };
        let reply = tokio::task::spawn_blocking(move || {
            client.request(&Request::Start(request), |p| show_progress(printer, p))
        })
        .await
        .map_err(|e| EngineError::Failed(e.to_string()))??;
        let logs: Vec<(String, PathBuf)> = match &reply {
            Reply::Started(outcome) => outcome
                .services
                .iter()
                .filter_map(|r| {
                    r.log_path.as_ref().map(|p| (format!("{}/{}", r.target, r.service), PathBuf::from(p)))
                })
                .collect(),
            _ => Vec::new(),
        };
        let started = report_start(rt, Some(reply), super::super::Urls::FromHost);
        if started.is_err() {
            let _ = host.await;
            return started;
        }
        printer.note("following logs; Ctrl-C stops everything (press it twice to skip the grace period)");
        // The follower reads and prints on a thread of its own: a slow terminal or a paused pager blocks it, never
        // the host it shares this runtime with.
        let done = Arc::new(AtomicBool::new(false));
        let follower = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || follow(&logs, printer, &done))
        };
        let ended = (&mut host).await;
        done.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || follower.join()).await;
        match ended {
            Ok(Ok(())) => Ok(Outcome::Interrupted),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(EngineError::Failed("the in-process host panicked".into())),
        }
    })?
}

/// Prints every new line of `logs`, prefixed with its `target/service`, until `done` (then what is left).
fn follow(logs: &[(String, PathBuf)], printer: crate::ui::Printer, done: &AtomicBool) {
    let mut offsets: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let width = logs.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    loop {
        let last = done.load(Ordering::Relaxed);
        for (label, path) in logs {
            let offset = offsets.entry(path.clone()).or_insert(0);
            for line in read_new_lines(path, offset) {
                printer.data(&format!("{label:<width$} | {line}"));
            }
        }
        if last {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
