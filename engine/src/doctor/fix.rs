//! `doctor --fix`: the safe repairs, each reported. It never signals a process: it releases leases whose holder
//! (pid and start time) is gone, removes a control socket nobody answers on, requeues jobs whose worker is gone,
//! and forgets gone workers.

use std::path::PathBuf;

use envctl_contracts::doctor::FixReport;
use envctl_contracts::ports::PortLease;

use super::Ctx;
use crate::config::Paths;
use crate::ports::Ledger;

/// This repository's leases whose holder is gone.
pub fn stale_leases(ledger: &Ledger, paths: &Paths) -> Vec<PortLease> {
    let repo = paths.repo_root.display().to_string();
    ledger.stale().into_iter().filter(|l| l.owner.repo == repo).collect()
}

/// The control socket, when it exists but nothing answers on it.
pub fn stale_socket(paths: &Paths) -> Option<PathBuf> {
    let socket = paths.control_socket();
    let exists = std::fs::symlink_metadata(&socket).is_ok();
    (exists && std::os::unix::net::UnixStream::connect(&socket).is_err()).then_some(socket)
}

fn fixed(action: &str, subject: &dyn std::fmt::Display, detail: impl Into<String>) -> FixReport {
    FixReport { action: action.to_owned(), subject: subject.to_string(), detail: detail.into() }
}

/// Applies every safe repair; returns what was done (and what could not be, as `failed:` details).
pub fn fix(ctx: &Ctx<'_>) -> Vec<FixReport> {
    let mut done = Vec::new();
    if let (Some(ledger), Some(paths)) = (&ctx.ledger, ctx.paths) {
        let repo = paths.repo_root.display().to_string();
        match ledger.release_stale(|o| o.repo == repo) {
            Ok(ports) => {
                done.extend(ports.into_iter().map(|p| fixed("release_lease", &p, "its holder is gone")));
            }
            Err(e) => done.push(fixed("release_lease", &"-", format!("failed: {e}"))),
        }
        if let Some(socket) = stale_socket(paths) {
            let detail = match std::fs::remove_file(&socket) {
                Ok(()) => "no host answered on it".to_owned(),
                Err(e) => format!("failed: {e}"),
            };
            done.push(fixed("remove_socket", &socket.display(), detail));
        }
    }
    if super::unconfigured(ctx).is_some() {
        return done;
    }
    let Ok(store) = ctx.store() else { return done };
    let dead = store.stats().map(|s| super::job_runtime::dead_workers(&s)).unwrap_or_default();
    // What the dead workers' attempts left running is stopped first, while their jobs are still leased to them:
    // once requeued, a live worker may start a job again at once, and its new attempt must not be taken for a stray.
    let orphans: Vec<String> =
        store.orphans(&dead).unwrap_or_default().into_iter().map(|job| job.id).collect();
    let stopped = crate::jobs::handlers::stop_earlier_attempts(&orphans);
    if stopped > 0 {
        done.push(fixed("stop_job_processes", &stopped, "left running by a dead worker's attempts"));
    }
    match store.requeue_orphans(&dead) {
        Ok(ids) => done.extend(ids.into_iter().map(|id| fixed("requeue_job", &id, "its worker is gone"))),
        Err(e) => done.push(fixed("requeue_job", &"-", format!("failed: {e}"))),
    }
    match store.forget_workers(&dead) {
        Ok(_) => done.extend(dead.into_iter().map(|w| fixed("forget_worker", &w, "it no longer heartbeats"))),
        Err(e) => done.push(fixed("forget_worker", &"-", format!("failed: {e}"))),
    }
    done
}
