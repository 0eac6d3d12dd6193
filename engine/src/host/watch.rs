//! `watch` connections: the host pushes a [`HostView`] at once and again whenever something changed, so a
//! dashboard redraws on change instead of asking over and over.
//!
//! How it works: every event the host records and every nudge of a service task (a status, a restart, a probe
//! result) bumps the host's change counter. A watch waits on that counter, lets a burst settle for a moment, builds
//! the view and sends it when it differs from the last one sent. The job queue lives in the job store, which other
//! processes write too (`envctl test`, workers elsewhere): while a watch is open the host reads the queue once a
//! second on the blocking pool and pushes it when it changed.

use std::sync::Arc;
use std::time::Duration;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::control::{HostView, JobsView, Reply};
use envctl_contracts::jobs::{Job, JobStatus};
use tokio::sync::mpsc;

use super::Host;
use crate::jobs::store::{JobStore, ListFilter};

/// How long a burst of changes may settle before the view is sent.
const SETTLE: Duration = Duration::from_millis(15);
/// How often the job queue is read while a watch is open.
const JOBS_EVERY: Duration = Duration::from_secs(1);

/// Sends views on `tx` until the client hangs up or the host exits.
pub async fn serve(host: &Arc<Host>, tx: &mpsc::Sender<Reply>) {
    let mut changes = host.changes.subscribe();
    let mut store: Option<Arc<dyn JobStore>> = None;
    let mut jobs: Option<JobsView> = None;
    let mut last: Option<HostView> = None;
    let mut seq = 0;
    let mut tick = tokio::time::interval(JOBS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first view carries the queue already (a snapshot takes only that one).
    tick.tick().await;
    read_queue(host, &mut store, &mut jobs).await;
    loop {
        let mut view = HostView {
            schema_version: SCHEMA_VERSION,
            seq: 0,
            host: Some(host.record()),
            run_id: host.run_id(),
            services: host
                .records()
                .await
                .into_iter()
                .map(|r| envctl_contracts::state::ServiceRecord { spec: None, ..r })
                .collect(),
            jobs: jobs.clone(),
        };
        if last.as_ref() != Some(&view) {
            last = Some(view.clone());
            seq += 1;
            view.seq = seq;
            if tx.send(Reply::View(view)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            () = host.parts.token.cancelled() => return,
            () = tx.closed() => return,
            seen = changes.changed() => {
                if seen.is_err() {
                    return;
                }
                tokio::time::sleep(SETTLE).await;
                changes.mark_unchanged();
            }
            _ = tick.tick() => read_queue(host, &mut store, &mut jobs).await,
        }
    }
}

/// Reads the job queue into `jobs` (opening the store first, once the host knows it), on the blocking pool.
async fn read_queue(host: &Host, store: &mut Option<Arc<dyn JobStore>>, jobs: &mut Option<JobsView>) {
    if store.is_none()
        && let Some(factory) = host.job_stores.get().cloned()
    {
        *store = tokio::task::spawn_blocking(move || factory.open().ok()).await.ok().flatten();
    }
    if let Some(open) = store.clone() {
        *jobs = tokio::task::spawn_blocking(move || queue(open.as_ref())).await.ok().flatten();
    }
}

/// The queue's counts, its running jobs and its latest failures; none when the store cannot be read.
fn queue(store: &dyn JobStore) -> Option<JobsView> {
    let stats = store.stats().ok()?;
    let of = |status, limit| {
        store.list(&ListFilter { status: Some(status), limit, ..ListFilter::default() }).unwrap_or_default()
    };
    let mut failures: Vec<Job> = of(JobStatus::Failed, 5);
    failures.extend(of(JobStatus::Dead, 5));
    failures.sort_by(|a, b| b.finished_at.cmp(&a.finished_at).then_with(|| b.updated_at.cmp(&a.updated_at)));
    failures.truncate(5);
    let mut active = of(JobStatus::Running, 20);
    active.extend(of(JobStatus::Cancelling, 20));
    active.truncate(20);
    for job in active.iter_mut().chain(failures.iter_mut()) {
        // The payload and metadata can be large and the dashboard shows neither.
        job.payload = serde_json::Value::Null;
        job.metadata = serde_json::Value::Null;
        job.result = None;
    }
    Some(JobsView {
        queued: stats.queued,
        scheduled: stats.scheduled,
        running: stats.running,
        failed: stats.failed,
        dead: stats.dead,
        active,
        failures,
    })
}
