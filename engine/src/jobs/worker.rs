//! The worker: claims jobs under a lease, runs their handlers (up to `concurrency` at once), renews the leases of
//! what it runs with a heartbeat that also brings cancellation requests back, and records every outcome.
//!
//! How it works: one loop claims as many due jobs as it has free slots (one transaction), starts a task per job,
//! and waits for the first of: a job finishing (finishes are recorded in batches), the heartbeat tick (every second,
//! or every third of a shorter lease), shutdown, or — when nothing was claimed — a short poll pause that grows while idle. A worker
//! killed with SIGKILL simply stops renewing: its leases run out and the jobs go back to the queue for another
//! worker. With `drain` it exits once nothing is queued, scheduled or running anywhere in the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::handlers::{self, HandlerContext};
use super::store::{Finish, JobStore, StoreError};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs at once.
    pub concurrency: usize,
    /// Only these types (all when empty).
    pub types: Vec<String>,
    /// Exit once nothing is queued, scheduled or running.
    pub drain: bool,
    /// Lease length.
    pub lease: Duration,
}

/// What a worker did.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    /// Its id.
    pub id: String,
    /// Jobs it finished (any outcome).
    pub finished: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// `<host>:<pid>:<start time>`.
pub fn worker_id() -> String {
    let host =
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "host".into());
    let (pid, started) = crate::supervisor::proc_info::current();
    format!("{host}:{pid}:{started}")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Backend { store: "worker".into(), detail: e.to_string() }))
}

/// Runs until `shutdown` completes (finishing what it runs, stopping them if a second `force` arrives) or, with
/// `drain`, until the store has nothing left to do.
pub async fn run(
    store: Arc<dyn JobStore>,
    ctx: Arc<HandlerContext>,
    options: WorkerOptions,
    shutdown: CancellationToken,
    force: CancellationToken,
) -> Result<WorkerReport, StoreError> {
    let began = Instant::now();
    let id = worker_id();
    let concurrency = options.concurrency.max(1);
    let mut running: HashMap<String, CancellationToken> = HashMap::new();
    let mut tasks: JoinSet<(String, Finish)> = JoinSet::new();
    let mut finished = 0u64;
    let mut idle = Duration::from_millis(1);
    // Leases are renewed (and cancellations picked up) every second, or every third of a shorter lease.
    let mut heartbeat = tokio::time::interval((options.lease / 3).min(Duration::from_secs(1)));
    heartbeat.tick().await;
    {
        let (s, w) = (Arc::clone(&store), id.clone());
        blocking(move || s.worker_heartbeat(&w, Some(0))).await?;
    }
    loop {
        let mut claimed = 0;
        if !shutdown.is_cancelled() && running.len() < concurrency {
            let (s, w, types, free, lease) = (
                Arc::clone(&store),
                id.clone(),
                options.types.clone(),
                concurrency - running.len(),
                options.lease,
            );
            let jobs = blocking(move || s.claim(&w, &types, free, lease)).await?;
            claimed = jobs.len();
            for job in jobs {
                let token = CancellationToken::new();
                running.insert(job.id.clone(), token.clone());
                let (ctx, store) = (Arc::clone(&ctx), Arc::clone(&store));
                tasks.spawn(async move {
                    let finish = handlers::run(&ctx, &store, &job, token).await;
                    (job.id, finish)
                });
            }
        }
        if running.is_empty() {
            if shutdown.is_cancelled() {
                break;
            }
            if options.drain && claimed == 0 {
                let (s, types) = (Arc::clone(&store), options.types.clone());
                if !blocking(move || s.pending(&types)).await? {
                    break;
                }
            }
        }
        let wait = if claimed > 0 { Duration::ZERO } else { idle };
        tokio::select! {
            biased;
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let mut results = Vec::new();
                if let Ok(result) = done { results.push(result); }
                while let Some(more) = tasks.try_join_next() {
                    if let Ok(result) = more { results.push(result); }
                }
                for (job, _) in &results { running.remove(job); }
                finished += results.len() as u64;
                let (s, w) = (Arc::clone(&store), id.clone());
                blocking(move || s.finish(&w, &results)).await?;
                idle = Duration::from_millis(1);
            }
            _ = heartbeat.tick() => {
                let ids: Vec<String> = running.keys().cloned().collect();
                let (s, w, lease, n) = (Arc::clone(&store), id.clone(), options.lease, u32::try_from(running.len()).unwrap_or(u32::MAX));
                let cancelled = blocking(move || { s.worker_heartbeat(&w, Some(n))?; s.heartbeat(&w, &ids, lease) }).await?;
                for job in cancelled {
                    if let Some(token) = running.get(&job) { token.cancel(); }
                }
            }
            () = force.cancelled(), if shutdown.is_cancelled() && !force.is_cancelled() => {}
            () = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
            () = tokio::time::sleep(wait), if !running.is_empty() && (running.len() >= concurrency || claimed == 0) => {
                if claimed == 0 { idle = (idle * 2).min(Duration::from_millis(100)); }
            }
            // Idle: block on the store's wake-up (Redis tells an idle worker about new jobs at once).
            _ = blocking({ let s = Arc::clone(&store); move || { s.wait_for_work(Duration::from_millis(100)); Ok(()) } }), if running.is_empty() && claimed == 0 && !options.drain => {}
            () = tokio::time::sleep(wait), if running.is_empty() && claimed == 0 && options.drain => {
                idle = (idle * 2).min(Duration::from_millis(100));
            }
        }
        if force.is_cancelled() {
            for token in running.values() {
                token.cancel();
            }
        }
    }
    let (s, w) = (Arc::clone(&store), id.clone());
    let _ = blocking(move || s.worker_heartbeat(&w, None)).await;
    Ok(WorkerReport { id, finished, elapsed: began.elapsed() })
}
