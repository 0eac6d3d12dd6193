//! The worker: claims jobs under a lease, runs their handlers (up to `concurrency` at once), renews the leases of
//! what it runs with a heartbeat that also brings cancellation requests back, and records every outcome.
//!
//! How it works: one loop claims as many due jobs as it has free slots, plus a bounded prefetch while its jobs are
//! short (one call; see [`run`]), starts a task per job (or runs an in-process handler in the loop itself), and
//! waits for the first of: a job finishing (finishes are recorded in batches), the heartbeat tick (every second,
//! or every third of a shorter lease), shutdown, or — when nothing was claimed — a short poll pause that grows while
//! busy or draining. An idle worker instead waits on the store's wake-up through its one `Waiter`: a blocking
//! thread that runs one [`JobStore::wait_then_claim`] at a time (on Redis the claim rides behind the wait), armed
//! when the worker goes idle and re-armed only after that wait returned (a pass that ends for another reason leaves
//! it outstanding, never starts a second; a claim it made meanwhile joins the held jobs, and one made as the worker
//! stops is given back). A worker killed with SIGKILL simply stops renewing: its leases run out and the jobs go back to the queue for
//! another worker, and once it has been silent for [`STALE_LEASES`] leases the store reports it gone. With `drain` it exits once nothing is queued, scheduled or running anywhere in the store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envctl_contracts::jobs::Job;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::handlers::{self, HandlerContext};
use super::store::{Finish, JobStore, StoreError};

/// A worker silent for this many of its leases is gone (`jobs stats` says so, and counts nothing as running on it).
pub const STALE_LEASES: u32 = 3;

/// Longest one wait on the store's wake-up lasts (a store that cannot be told sleeps this long: the idle poll).
const IDLE_WAIT: Duration = Duration::from_millis(100);

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
    /// Store calls that found the store unreachable and were made again.
    pub outages: u64,
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

/// The idle worker's one outstanding wait on the store's wake-up, run by one blocking thread for the worker's life.
/// When a wait returns (a wake-up, or [`IDLE_WAIT`] passed) the same thread claims at once, so a job enqueued to an
/// idle worker is claimed by the thread the wake-up reached instead of after two more hand-offs (to the worker's
/// loop, then to a thread for the claim). While a wait is outstanding the loop makes no claim of its own, so the
/// waiter's claims keep their order and size. [`stop`](Self::stop) ends the thread and returns what it claimed that
/// the loop never took.
struct Waiter {
    /// Asks the thread for one wait and a claim of that many jobs; dropped to stop it.
    arm: Option<std::sync::mpsc::Sender<usize>>,
    /// One claim per wait that returned, with when it was made.
    woke: tokio::sync::mpsc::Receiver<(Instant, Result<Vec<Job>, StoreError>)>,
    /// Whether a wait was asked for and has not been seen to return.
    armed: bool,
    thread: tokio::task::JoinHandle<()>,
}

impl Waiter {
    fn start(store: Arc<dyn JobStore>, worker: String, types: Vec<String>, lease: Duration) -> Self {
        let (arm, requests) = std::sync::mpsc::channel::<usize>();
        let (woke_tx, woke) = tokio::sync::mpsc::channel(1);
        let thread = tokio::task::spawn_blocking(move || {
            while let Ok(want) = requests.recv() {
                let jobs = store.wait_then_claim(IDLE_WAIT, &worker, &types, want, lease);
                let claimed = (Instant::now(), jobs);
                if let Err(tokio::sync::mpsc::error::SendError((_, unseen))) = woke_tx.blocking_send(claimed)
                {
                    if let Ok(jobs) = unseen {
                        let ids: Vec<String> = jobs.into_iter().map(|job| job.id).collect();
                        let _ = store.release(&worker, &ids);
                    }
                    break;
                }
            }
        });
        Self { arm: Some(arm), woke, armed: false, thread }
    }

    /// Completes when the store may have work, with the thread's claim of up to `want` jobs (`None` when the thread
    /// is gone): arms a wait unless one is outstanding, then waits for it to return. Cancel-safe: dropped early, the
    /// wait stays outstanding and the next call (or [`take`](Self::take)) receives its claim.
    async fn work_may_have_arrived(
        &mut self,
        want: usize,
    ) -> Option<(Instant, Result<Vec<Job>, StoreError>)> {
        if !self.armed {
            self.armed = self.arm.as_ref().is_some_and(|arm| arm.send(want).is_ok());
        }
        if self.armed
            && let Some(claimed) = self.woke.recv().await
        {
            self.armed = false;
            return Some(claimed);
        }
        // The thread is gone (its store call panicked): poll instead.
        self.armed = false;
        tokio::time::sleep(IDLE_WAIT).await;
        None
    }

    /// The claim of a wait that returned while the loop was busy, if any.
    fn take(&mut self) -> Option<(Instant, Result<Vec<Job>, StoreError>)> {
        let claimed = self.woke.try_recv().ok()?;
        self.armed = false;
        Some(claimed)
    }

    /// Stops the thread, after the wait in progress (at most [`IDLE_WAIT`]) and its claim return; returns the jobs
    /// that claim took, for the worker to give back.
    async fn stop(mut self) -> Vec<Job> {
        drop(self.arm.take());
        let _ = self.thread.await;
        let mut unstarted = Vec::new();
        while let Ok((_, claimed)) = self.woke.try_recv() {
            unstarted.extend(claimed.unwrap_or_default());
        }
        unstarted
    }
}

/// Runs a store call on the blocking pool, calling it again while the store is unreachable (a Redis restart, a
/// network outage), with a pause doubling from 100 ms to 5 s, until it answers or `stop` fires. Each outage is
/// logged and counted in `outages`. Jobs stay safe meanwhile: a lease that lapses returns its job to the queue.
async fn patiently<T: Send + 'static>(
    call: impl Fn() -> Result<T, StoreError> + Clone + Send + 'static,
    stop: &CancellationToken,
    outages: &mut u64,
) -> Result<T, StoreError> {
    let mut pause = Duration::from_millis(100);
    loop {
        match blocking(call.clone()).await {
            Err(StoreError::Backend { store, detail }) if !stop.is_cancelled() => {
                *outages += 1;
                tracing::warn!(%store, %detail, retry_in_ms = pause.as_millis(), "job store unreachable; trying again");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Most jobs a worker holds claimed beyond its free slots (its prefetch). 64 makes the store's fixed cost per
/// claim and per finish (a round trip, a script call or a transaction) a sixty-fourth of a short job's, while one
/// claim of 64 keeps the store busy well under a millisecond (a Redis script blocks every other client meanwhile).
pub const PREFETCH_MAX: usize = 64;

/// A worker prefetches only as many jobs as it expects to start within this, by the mean run time of its recent
/// jobs: jobs that take a while are not prefetched at all (another worker may be free for them), and a job of higher
/// priority that arrives meanwhile waits behind a prefetched batch for about this long at most.
const PREFETCH_HOLD: Duration = Duration::from_millis(20);

/// A claim sent ahead: a worker whose store takes calls side by side ([`JobStore::parallel_calls`]) sends its next
/// claim (of [`prefetch`] jobs) as it starts a held batch, so the store works on it while the worker runs the batch
/// and records its ends. Its jobs join the held ones when it returns.
struct Ahead {
    sent: Instant,
    call: tokio::task::JoinHandle<Result<Vec<Job>, StoreError>>,
}

impl Ahead {
    /// Waits for the claim and adds its jobs to `held` (see [`hold`]).
    async fn join(self, held: &mut VecDeque<(Job, Instant)>) -> Result<Option<usize>, StoreError> {
        let claimed = self
            .call
            .await
            .unwrap_or_else(|e| Err(StoreError::Backend { store: "worker".into(), detail: e.to_string() }));
        hold(claimed, self.sent, held)
    }
}

/// Adds the jobs of a claim made off the loop (by the waiter, or sent ahead) at `at` to `held` and returns how
/// many. `None` when the store could not be reached: the claim then counts as not made, and the loop makes its own,
/// which waits for the store patiently (and says so); whatever the lost claim did take comes back when its lease
/// runs out.
fn hold(
    claimed: Result<Vec<Job>, StoreError>,
    at: Instant,
    held: &mut VecDeque<(Job, Instant)>,
) -> Result<Option<usize>, StoreError> {
    let jobs = match claimed {
        Ok(jobs) => jobs,
        Err(StoreError::Backend { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let n = jobs.len();
    held.extend(jobs.into_iter().map(|job| (job, at)));
    Ok(Some(n))
}

/// A prefetched job that waited longer than this since its claim (or the last look) has its cancellation looked at
/// again before it starts: a job cancelled while it waited is not run.
const HELD_CHECK: Duration = Duration::from_millis(20);

/// How many jobs beyond its free slots a worker whose recent jobs ran `mean` each claims at once.
fn prefetch(mean: Option<Duration>) -> usize {
    mean.map_or(0, |mean| {
        usize::try_from(PREFETCH_HOLD.as_nanos() / mean.as_nanos().max(1))
            .unwrap_or(usize::MAX)
            .min(PREFETCH_MAX)
    })
}

/// The running mean of run times: each new one weighs an eighth.
fn averaged(mean: Option<Duration>, took: Duration) -> Duration {
    mean.map_or(took, |mean| (mean * 7 + took) / 8)
}

/// Acts on the cancels asked for among `cancelled`: a running job is told to stop; a held one never starts (it is
/// given back, which cancels it without an attempt counted).
async fn give_back(
    store: &Arc<dyn JobStore>,
    worker: &str,
    cancelled: Vec<String>,
    running: &HashMap<String, (CancellationToken, Instant)>,
    held: &mut VecDeque<(Job, Instant)>,
    force: &CancellationToken,
    outages: &mut u64,
) -> Result<(), StoreError> {
    let mut unstarted = Vec::new();
    for job in cancelled {
        if let Some((token, _)) = running.get(&job) {
            token.cancel();
        } else if let Some(at) = held.iter().position(|(held, _)| held.id == job) {
            held.remove(at);
            unstarted.push(job);
        }
    }
    if !unstarted.is_empty() {
        let (s, w) = (Arc::clone(store), worker.to_owned());
        patiently(move || s.release(&w, &unstarted), force, outages).await?;
    }
    Ok(())
}

/// Runs until `shutdown` completes (finishing what it runs, stopping them if a second `force` arrives) or, with
/// `drain`, until the store has nothing left to do.
///
/// A worker whose jobs are short claims a batch beyond its free slots (see [`prefetch`]) and holds it under the
/// same lease (renewed by its heartbeat; a killed worker's batch comes back when the lease runs out); handlers that
/// finish at once ([`handlers::immediate`]) run in the loop itself, and their ends are recorded in one call per
/// batch. Stopping, it gives back the held jobs it never started ([`JobStore::release`]).
#[allow(clippy::too_many_lines)]
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
    // Claimed, not started yet (in claim order: priority, then first in, first out), and when.
    let mut held: VecDeque<(Job, Instant)> = VecDeque::new();
    let mut running: HashMap<String, (CancellationToken, Instant)> = HashMap::new();
    let mut tasks: JoinSet<(String, Finish)> = JoinSet::new();
    // The job each task runs, for a task that panicked (its job id is not in what it returns).
    let mut task_jobs: HashMap<tokio::task::Id, String> = HashMap::new();
    // Ends not recorded yet.
    let mut done: Vec<(String, Finish)> = Vec::new();
    let mut mean_run: Option<Duration> = None;
    let mut looked = Instant::now();
    let mut finished = 0u64;
    let mut idle = Duration::from_millis(1);
    let mut waiter = Waiter::start(Arc::clone(&store), id.clone(), options.types.clone(), options.lease);
    // Leases are renewed (and cancellations picked up) every second, or every third of a shorter lease.
    let mut heartbeat = tokio::time::interval((options.lease / 3).min(Duration::from_secs(1)));
    heartbeat.tick().await;
    let stale_after = options.lease * STALE_LEASES;
    let mut outages = 0u64;
    {
        let (s, w) = (Arc::clone(&store), id.clone());
        patiently(move || s.worker_heartbeat(&w, Some(0), stale_after), &force, &mut outages).await?;
    }
    let mut ahead: Option<Ahead> = None;
    // How many jobs the waiter's claim brought in the last pass (the loop then makes no claim of its own).
    let mut woken_claim: Option<usize> = None;
    let outcome: Result<(), StoreError> = async {
    loop {
        // A claim the waiter made while the loop was busy joins the held jobs.
        if let Some((at, claimed)) = waiter.take() {
            hold(claimed, at, &mut held)?;
        }
        // A claim sent ahead joins the held jobs once it returns (so their leases are renewed with the others),
        // and at once when stopping (so they are given back).
        if let Some(claim) = ahead.take_if(|a| a.call.is_finished() || shutdown.is_cancelled()) {
            claim.join(&mut held).await?;
        }
        if shutdown.is_cancelled() && !held.is_empty() {
            let ids: Vec<String> = held.drain(..).map(|(job, _)| job.id).collect();
            let (s, w) = (Arc::clone(&store), id.clone());
            patiently(move || s.release(&w, &ids), &force, &mut outages).await?;
        }
        // Ends are recorded before another job starts: a worker killed now loses only the attempts it runs. When
        // the worker would claim next (nothing held, a slot free), the claim goes with them, in one call.
        let mut claimed = woken_claim.take();
        if !done.is_empty() {
            let results = std::mem::take(&mut done);
            finished += results.len() as u64;
            let (s, w) = (Arc::clone(&store), id.clone());
            if ahead.is_none()
                && !waiter.armed
                && !shutdown.is_cancelled()
                && held.is_empty()
                && running.len() < concurrency
            {
                let (types, want, lease) =
                    (options.types.clone(), concurrency - running.len() + prefetch(mean_run), options.lease);
                let (_, jobs) = patiently(
                    move || s.finish_and_claim(&w, &results, &types, want, lease),
                    &force,
                    &mut outages,
                )
                .await?;
                claimed = Some(jobs.len());
                let now = Instant::now();
                held.extend(jobs.into_iter().map(|job| (job, now)));
            } else {
                patiently(move || s.finish(&w, &results), &force, &mut outages).await?;
            }
            idle = Duration::from_millis(1);
        }
        // Sent ahead while the held jobs are at most one batch beyond the free slots, so a worker holds at most two.
        if ahead.is_none() && !held.is_empty() && !shutdown.is_cancelled() && store.parallel_calls() {
            let want = prefetch(mean_run);
            if want > 0 && held.len() <= concurrency.saturating_sub(running.len()) + want {
                let (s, w, types, lease) =
                    (Arc::clone(&store), id.clone(), options.types.clone(), options.lease);
                // On the blocking pool now, not when this task next yields: the store has it before the finish.
                let call = tokio::task::spawn_blocking(move || s.claim(&w, &types, want, lease));
                ahead = Some(Ahead { sent: Instant::now(), call });
            }
        }
        // Start what the free slots take from the held jobs.
        while running.len() < concurrency
            && let Some((_, claimed_at)) = held.front()
        {
            if claimed_at.max(&looked).elapsed() > HELD_CHECK {
                let ids: Vec<String> =
                    held.iter().map(|(job, _)| job.id.clone()).chain(running.keys().cloned()).collect();
                let (s, w, lease) = (Arc::clone(&store), id.clone(), options.lease);
                let cancelled = patiently(move || s.heartbeat(&w, &ids, lease), &force, &mut outages).await?;
                looked = Instant::now();
                give_back(&store, &id, cancelled, &running, &mut held, &force, &mut outages).await?;
                continue;
            }
            let Some((job, _)) = held.pop_front() else { break };
            let started = Instant::now();
            if let Some(finish) = handlers::immediate(&job) {
                mean_run = Some(averaged(mean_run, started.elapsed()));
                done.push((job.id, finish));
                continue;
            }
            let token = CancellationToken::new();
            running.insert(job.id.clone(), (token.clone(), started));
            let (ctx, store, job_id) = (Arc::clone(&ctx), Arc::clone(&store), job.id.clone());
            let task = tasks.spawn(async move {
                let finish = handlers::run(&ctx, &store, &job, token).await;
                (job.id, finish)
            });
            task_jobs.insert(task.id(), job_id);
        }
        if !done.is_empty() {
            // Ends that ran in the loop (a batch of them): recorded at once, before anything is claimed.
            continue;
        }
        if claimed.is_none()
            && held.is_empty()
            && running.len() < concurrency
            && let Some(claim) = ahead.take()
        {
            claimed = claim.join(&mut held).await?;
        }
        // While the waiter's wait is outstanding, its claim is the one to come (see `Waiter`).
        if claimed.is_none()
            && !waiter.armed
            && !shutdown.is_cancelled()
            && held.is_empty()
            && running.len() < concurrency
        {
            let (s, w, types, want, lease) = (
                Arc::clone(&store),
                id.clone(),
                options.types.clone(),
                concurrency - running.len() + prefetch(mean_run),
                options.lease,
            );
            let jobs = patiently(move || s.claim(&w, &types, want, lease), &shutdown, &mut outages).await?;
            claimed = Some(jobs.len());
            let now = Instant::now();
            held.extend(jobs.into_iter().map(|job| (job, now)));
        }
        if claimed.is_some_and(|n| n > 0) {
            continue;
        }
        if running.is_empty() && held.is_empty() {
            if shutdown.is_cancelled() {
                break;
            }
            if options.drain && claimed == Some(0) {
                let (s, types) = (Arc::clone(&store), options.types.clone());
                if !patiently(move || s.pending(&types), &shutdown, &mut outages).await? {
                    break;
                }
            }
        }
        tokio::select! {
            biased;
            Some(first) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let mut joined = vec![first];
                while let Some(more) = tasks.try_join_next_with_id() {
                    joined.push(more);
                }
                for ended in joined {
                    let (job, finish) = match ended {
                        Ok((task, ended)) => {
                            task_jobs.remove(&task);
                            ended
                        }
                        // A handler that panicked (release builds abort instead): its job fails, its slot is freed.
                        Err(e) => {
                            let Some(job) = task_jobs.remove(&e.id()) else { continue };
                            (job, Finish::Failed { error: format!("its handler panicked: {e}"), retry: false })
                        }
                    };
                    if let Some((_, started)) = running.remove(&job) {
                        mean_run = Some(averaged(mean_run, started.elapsed()));
                    }
                    done.push((job, finish));
                }
            }
            _ = heartbeat.tick() => {
                let ids: Vec<String> =
                    running.keys().cloned().chain(held.iter().map(|(job, _)| job.id.clone())).collect();
                let (s, w, lease, n) = (Arc::clone(&store), id.clone(), options.lease, u32::try_from(ids.len()).unwrap_or(u32::MAX));
                let cancelled = patiently(move || { s.worker_heartbeat(&w, Some(n), stale_after)?; s.heartbeat(&w, &ids, lease) }, &force, &mut outages).await?;
                looked = Instant::now();
                give_back(&store, &id, cancelled, &running, &mut held, &force, &mut outages).await?;
            }
            () = force.cancelled(), if shutdown.is_cancelled() && !force.is_cancelled() => {}
            () = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
            () = tokio::time::sleep(idle), if !running.is_empty() => {
                idle = (idle * 2).min(Duration::from_millis(100));
            }
            // Idle: the store's wake-up (Redis tells an idle worker about new jobs at once).
            claimed = waiter.work_may_have_arrived(concurrency + prefetch(mean_run)), if running.is_empty() && held.is_empty() && !options.drain => {
                if let Some((at, claimed)) = claimed {
                    woken_claim = hold(claimed, at, &mut held)?;
                }
            }
            () = tokio::time::sleep(idle), if running.is_empty() && held.is_empty() && options.drain => {
                idle = (idle * 2).min(Duration::from_millis(100));
            }
        }
        if force.is_cancelled() {
            for (token, _) in running.values() {
                token.cancel();
            }
        }
    }
    Ok(())
    }
    .await;
    // However the loop ended (a store error too), nothing claimed and never started stays leased to this worker: the
    // waiter's last claim, a claim sent ahead and the held jobs are given back.
    let mut unstarted: Vec<String> = waiter.stop().await.into_iter().map(|job| job.id).collect();
    if let Some(claim) = ahead.take()
        && let Ok(Ok(jobs)) = claim.call.await
    {
        unstarted.extend(jobs.into_iter().map(|job| job.id));
    }
    unstarted.extend(held.drain(..).map(|(job, _)| job.id));
    if !unstarted.is_empty() {
        let (s, w) = (Arc::clone(&store), id.clone());
        if outcome.is_ok() {
            patiently(move || s.release(&w, &unstarted), &force, &mut outages).await?;
        } else {
            let _ = blocking(move || s.release(&w, &unstarted)).await;
        }
    }
    outcome?;
    let (s, w) = (Arc::clone(&store), id.clone());
    let _ = blocking(move || s.worker_heartbeat(&w, None, stale_after)).await;
    Ok(WorkerReport { id, finished, elapsed: began.elapsed(), outages })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use envctl_contracts::jobs::{Job, JobLogLine, JobProgress, JobStats, JobStatus};

    use super::*;
    use crate::jobs::EmbeddedStore;
    use crate::jobs::store::{ListFilter, NewJob};

    /// An embedded store that counts the waits on its wake-up in progress.
    struct Watched {
        inner: EmbeddedStore,
        waiting: AtomicUsize,
        most: AtomicUsize,
        waits: AtomicUsize,
        /// When set, a wait lasts until the test opens the gate (sets it to false), not its timeout.
        gate: (std::sync::Mutex<bool>, std::sync::Condvar),
        /// What it answers to `parallel_calls`.
        parallel: bool,
        /// Jobs claimed and not yet finished or given back, and the most there were at once.
        outstanding: std::sync::atomic::AtomicI64,
        most_outstanding: std::sync::atomic::AtomicI64,
    }

    impl Watched {
        fn open(dir: &std::path::Path, gated: bool) -> Self {
            Self {
                inner: EmbeddedStore::open(&dir.join("jobs.sqlite3")).expect("open"),
                waiting: AtomicUsize::new(0),
                most: AtomicUsize::new(0),
                waits: AtomicUsize::new(0),
                gate: (std::sync::Mutex::new(gated), std::sync::Condvar::new()),
                parallel: false,
                outstanding: std::sync::atomic::AtomicI64::new(0),
                most_outstanding: std::sync::atomic::AtomicI64::new(0),
            }
        }

        /// Returns once a worker waits on the store's wake-up.
        async fn until_waiting(&self) {
            let waiting = Instant::now();
            while self.waiting.load(Ordering::SeqCst) == 0 {
                assert!(waiting.elapsed() < Duration::from_secs(10), "the idle worker never waited");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        /// Ends the gated wait in progress, and makes the later ones last their timeout.
        fn open_gate(&self) {
            *self.gate.0.lock().expect("gate") = false;
            self.gate.1.notify_all();
        }

        fn holding(&self, by: usize) {
            let now = self.outstanding.fetch_add(i64::try_from(by).expect("count"), Ordering::SeqCst)
                + i64::try_from(by).expect("count");
            self.most_outstanding.fetch_max(now, Ordering::SeqCst);
        }

        fn let_go(&self, by: usize) {
            self.outstanding.fetch_sub(i64::try_from(by).expect("count"), Ordering::SeqCst);
        }
    }

    impl JobStore for Watched {
        fn wait_for_work(&self, timeout: Duration) {
            let now = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            self.waits.fetch_add(1, Ordering::SeqCst);
            let (gated, opened) = &self.gate;
            let gated = gated.lock().expect("gate");
            if *gated {
                drop(
                    opened
                        .wait_timeout_while(gated, Duration::from_secs(30), |closed| *closed)
                        .expect("gate"),
                );
            } else {
                drop(gated);
                std::thread::sleep(timeout);
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<String>, StoreError> {
            self.inner.enqueue(jobs)
        }
        fn claim(&self, w: &str, t: &[String], max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
            let claimed = self.inner.claim(w, t, max, lease)?;
            self.holding(claimed.len());
            Ok(claimed)
        }
        fn parallel_calls(&self) -> bool {
            self.parallel
        }
        fn heartbeat(&self, w: &str, jobs: &[String], lease: Duration) -> Result<Vec<String>, StoreError> {
            self.inner.heartbeat(w, jobs, lease)
        }
        fn release(&self, w: &str, jobs: &[String]) -> Result<usize, StoreError> {
            self.let_go(jobs.len());
            self.inner.release(w, jobs)
        }
        fn finish(&self, w: &str, results: &[(String, Finish)]) -> Result<usize, StoreError> {
            self.let_go(results.len());
            self.inner.finish(w, results)
        }
        fn progress(&self, id: &str, progress: &JobProgress) -> Result<(), StoreError> {
            self.inner.progress(id, progress)
        }
        fn log(&self, id: &str, lines: &[String]) -> Result<(), StoreError> {
            self.inner.log(id, lines)
        }
        fn get(&self, id: &str) -> Result<Job, StoreError> {
            self.inner.get(id)
        }
        fn logs(&self, id: &str, skip: usize) -> Result<Vec<JobLogLine>, StoreError> {
            self.inner.logs(id, skip)
        }
        fn list(&self, filter: &ListFilter) -> Result<Vec<Job>, StoreError> {
            self.inner.list(filter)
        }
        fn cancel(&self, id: &str) -> Result<JobStatus, StoreError> {
            self.inner.cancel(id)
        }
        fn retry(&self, id: &str) -> Result<(), StoreError> {
            self.inner.retry(id)
        }
        fn stats(&self) -> Result<JobStats, StoreError> {
            self.inner.stats()
        }
        fn pending(&self, types: &[String]) -> Result<bool, StoreError> {
            self.inner.pending(types)
        }
        fn purge(&self, older_than: Option<Duration>, dead: bool) -> Result<u64, StoreError> {
            self.inner.purge(older_than, dead)
        }
        fn worker_heartbeat(&self, w: &str, running: Option<u32>, stale: Duration) -> Result<(), StoreError> {
            self.inner.worker_heartbeat(w, running, stale)
        }
        fn orphans(&self, dead: &[String]) -> Result<Vec<Job>, StoreError> {
            self.inner.orphans(dead)
        }
        fn requeue_orphans(&self, dead: &[String]) -> Result<Vec<String>, StoreError> {
            self.inner.requeue_orphans(dead)
        }
        fn forget_workers(&self, workers: &[String]) -> Result<usize, StoreError> {
            self.inner.forget_workers(workers)
        }
        fn oldest_queued_age(&self) -> Result<Option<Duration>, StoreError> {
            self.inner.oldest_queued_age()
        }
        fn schema_version(&self) -> Result<u32, StoreError> {
            self.inner.schema_version()
        }
        fn set_output(&self, id: &str, output: &serde_json::Value) -> Result<(), StoreError> {
            self.inner.set_output(id, output)
        }
        fn set_condition(&self, id: &str, condition: bool) -> Result<(), StoreError> {
            self.inner.set_condition(id, condition)
        }
        fn var_get(&self, target: Option<&str>, key: &str) -> Result<Option<String>, StoreError> {
            self.inner.var_get(target, key)
        }
        fn var_set(&self, target: Option<&str>, key: &str, value: &str) -> Result<(), StoreError> {
            self.inner.var_set(target, key, value)
        }
        fn var_delete(&self, target: Option<&str>, key: &str) -> Result<bool, StoreError> {
            self.inner.var_delete(target, key)
        }
        fn var_incr(&self, target: Option<&str>, key: &str, by: i64) -> Result<i64, StoreError> {
            self.inner.var_incr(target, key, by)
        }
        fn var_list(&self) -> Result<Vec<envctl_contracts::jobs::Variable>, StoreError> {
            self.inner.var_list()
        }
    }

    /// Runs a worker without a configuration on `store` until the returned token is cancelled.
    fn spawn_worker(
        store: &Arc<Watched>,
        options: WorkerOptions,
    ) -> (tokio::task::JoinHandle<Result<WorkerReport, StoreError>>, CancellationToken) {
        let ctx = Arc::new(HandlerContext::new(None, std::collections::BTreeMap::new()));
        let (shutdown, force) = (CancellationToken::new(), CancellationToken::new());
        let worker =
            tokio::spawn(run(Arc::clone(store) as Arc<dyn JobStore>, ctx, options, shutdown.clone(), force));
        (worker, shutdown)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_worker_keeps_one_wait_outstanding_and_stops_it_on_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Watched::open(dir.path(), false));
        // A 30 ms lease ticks the heartbeat every 10 ms: each tick ends a loop pass while a 100 ms wait is out.
        let options = WorkerOptions {
            concurrency: 1,
            types: Vec::new(),
            drain: false,
            lease: Duration::from_millis(30),
        };
        let (worker, shutdown) = spawn_worker(&store, options);
        tokio::time::sleep(Duration::from_millis(350)).await;
        shutdown.cancel();
        worker.await.expect("join").expect("worker");
        assert_eq!(store.most.load(Ordering::SeqCst), 1, "waits at once");
        assert!(store.waits.load(Ordering::SeqCst) >= 2, "re-armed after each wait returned");
        assert_eq!(store.waiting.load(Ordering::SeqCst), 0, "no wait outlives the worker");
    }

    /// A job enqueued as an idle worker stops is taken by the claim its waiter makes when the wait in progress
    /// returns, after the loop has ended: the worker gives it back unstarted, so it is queued again with no attempt
    /// counted, not left leased to a worker that is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_the_waiter_makes_as_the_worker_stops_is_given_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Watched::open(dir.path(), true));
        let options =
            WorkerOptions { concurrency: 1, types: Vec::new(), drain: false, lease: Duration::from_secs(60) };
        let (worker, shutdown) = spawn_worker(&store, options);
        store.until_waiting().await;
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let id = store.inner.enqueue(&[NewJob::one_attempt("noop")]).expect("enqueue").remove(0);
        store.open_gate();
        worker.await.expect("join").expect("worker");
        let job = store.inner.get(&id).expect("get");
        assert_eq!(
            (job.status, job.attempts),
            (JobStatus::Queued, 0),
            "given back, not held by a stopped worker"
        );
    }

    /// A worker on a store whose calls run side by side sends claims ahead, but holds at most two batches beyond
    /// its free slots however many passes its loop makes (here a pass per job: jobs of an unknown type fail at once,
    /// each as a task of its own, so the held jobs never empty within a pass).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_sent_ahead_hold_at_most_two_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut watched = Watched::open(dir.path(), false);
        watched.parallel = true;
        let store = Arc::new(watched);
        store.inner.enqueue(&vec![NewJob::one_attempt("no.such.type"); 1500]).expect("enqueue");
        let ctx = Arc::new(HandlerContext::new(None, std::collections::BTreeMap::new()));
        let options =
            WorkerOptions { concurrency: 1, types: Vec::new(), drain: true, lease: Duration::from_secs(60) };
        let (shutdown, force) = (CancellationToken::new(), CancellationToken::new());
        let report = run(Arc::clone(&store) as Arc<dyn JobStore>, ctx, options, shutdown, force)
            .await
            .expect("worker");
        assert_eq!(report.finished, 1500);
        let most = store.most_outstanding.load(Ordering::SeqCst);
        assert!(most > 2, "claims were sent ahead: at most {most} held at once");
        let bound = i64::try_from(1 + 2 * PREFETCH_MAX).expect("bound");
        assert!(most <= bound, "{most} jobs held at once, more than {bound}");
    }

    /// While an idle worker's wait on the store's wake-up is outstanding, its loop (woken meanwhile by its heartbeat
    /// ticks) claims nothing of its own: the waiter's claim is the one to come, so a worker never holds both the
    /// loop's claim and the waiter's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_worker_claims_only_through_its_waiter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Watched::open(dir.path(), true));
        // A 30 ms lease ticks the heartbeat every 10 ms.
        let options = WorkerOptions {
            concurrency: 1,
            types: Vec::new(),
            drain: false,
            lease: Duration::from_millis(30),
        };
        let (worker, shutdown) = spawn_worker(&store, options);
        store.until_waiting().await;
        store.inner.enqueue(&vec![NewJob::one_attempt("no.such.type"); 5]).expect("enqueue");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(store.most_outstanding.load(Ordering::SeqCst), 0, "nothing claimed while the wait is out");
        assert_eq!(store.inner.stats().expect("stats").queued, 5);
        store.open_gate();
        let ending = Instant::now();
        while store.inner.stats().expect("stats").failed < 5 {
            assert!(ending.elapsed() < Duration::from_secs(10), "the waiter's claims never ran the jobs");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        worker.await.expect("join").expect("worker");
    }

    /// A handler that panics (a development build: release builds abort) ends its job `failed`, saying so, and
    /// frees its slot: the worker goes on to the next job instead of holding the first as running for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_that_panics_fails_its_job_and_frees_its_slot() {
        #[derive(Debug)]
        struct Panics;
        impl handlers::Executions for Panics {
            fn begin(&self, _: &Job, _: Option<Duration>) -> std::collections::BTreeMap<String, String> {
                panic!("a handler that panics");
            }
            fn end(&self, _: &Job, _: &Finish) {}
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("jobs.sqlite3")).expect("open"));
        let job =
            NewJob { payload: serde_json::json!({"command": "true"}), ..NewJob::one_attempt("command.exec") };
        let ids = store.enqueue(&[job.clone(), job]).expect("enqueue");
        let ctx = Arc::new(
            HandlerContext::new(None, std::collections::BTreeMap::new()).with_executions(Arc::new(Panics)),
        );
        let options =
            WorkerOptions { concurrency: 1, types: Vec::new(), drain: true, lease: Duration::from_secs(60) };
        let (shutdown, force) = (CancellationToken::new(), CancellationToken::new());
        let worker = run(Arc::clone(&store) as Arc<dyn JobStore>, ctx, options, shutdown, force);
        let report = tokio::time::timeout(Duration::from_secs(20), worker)
            .await
            .expect("the worker went on after the panic")
            .expect("worker");
        assert_eq!(report.finished, 2);
        for id in ids {
            let job = store.get(&id).expect("get");
            assert_eq!(job.status, JobStatus::Failed, "{id}");
            assert!(job.error.as_deref().is_some_and(|e| e.contains("panicked")), "{:?}", job.error);
        }
    }
}
