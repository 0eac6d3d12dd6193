//! The [`JobStore`] contract both stores implement, and the values that cross it.

use std::time::Duration;

use envctl_contracts::config::Priority;
use envctl_contracts::jobs::{Job, JobLogLine, JobProgress, JobStats, JobStatus, Variable, WorkerState};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store itself failed (disk, database, connection).
    #[error(
        "job store {store}: {detail}\nhint: check that the store is reachable and writable (`envctl show-config` shows jobs.backend)"
    )]
    Backend {
        /// Which store (a path or a URL).
        store: String,
        /// What went wrong.
        detail: String,
    },
    /// No job has that id.
    #[error("no job `{0}`\nhint: `envctl jobs list` shows the jobs")]
    NotFound(String),
    /// A job names one target and its payload another.
    #[error(
        "the job's target `{target}` and its payload's target `{payload}` differ\nhint: give the target once (`--target` or the payload's \"target\"), or the same in both"
    )]
    TargetConflict {
        /// The job's target (`--target`).
        target: String,
        /// The payload's `target`.
        payload: String,
    },
    /// A variable cannot take the operation (an increment of a value that is not a whole number).
    #[error("variable `{key}`: {detail}")]
    Variable {
        /// The variable.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The job is not in a state that allows the operation.
    #[error("job `{id}` is {status}; {what}")]
    State {
        /// Job id.
        id: String,
        /// Its status.
        status: &'static str,
        /// What cannot be done.
        what: String,
    },
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Type.
    pub job_type: String,
    /// Target.
    pub target: Option<String>,
    /// Input.
    pub payload: serde_json::Value,
    /// Priority.
    pub priority: Priority,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Run no earlier than this from now.
    pub delay: Option<Duration>,
    /// What the job reads through the runtime API (`GET /executions/{id}/input`).
    pub input: Option<serde_json::Value>,
    /// Jobs it waits for: it is `waiting` until every one has ended, then `queued` when all succeeded and none set
    /// `condition = false`, else `skipped` (see [`JobStore::claim`]). Each must exist.
    pub after: Vec<String>,
}

#[cfg(test)]
impl NewJob {
    /// A job of type `kind`: no target, payload `{}`, normal priority, one attempt (for tests).
    pub fn one_attempt(kind: &str) -> Self {
        Self {
            job_type: kind.into(),
            target: None,
            payload: serde_json::json!({}),
            priority: envctl_contracts::config::Priority::Normal,
            max_attempts: 1,
            delay: None,
            input: None,
            after: Vec::new(),
        }
    }
}

impl NewJob {
    /// The target the job runs for: [`target`](Self::target), else the payload's `"target"` (when it is a string).
    /// Both, naming different targets, is an error. Every store enqueues a job with this as its target, so the
    /// job's `target` is right whichever way the caller gave it.
    pub fn resolved_target(&self) -> Result<Option<&str>, StoreError> {
        let in_payload = self.payload.get("target").and_then(serde_json::Value::as_str);
        match (self.target.as_deref(), in_payload) {
            (Some(target), Some(payload)) if target != payload => {
                Err(StoreError::TargetConflict { target: target.to_owned(), payload: payload.to_owned() })
            }
            (Some(target), _) => Ok(Some(target)),
            (None, payload) => Ok(payload),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Finish {
    /// It succeeded with this result.
    Succeeded(serde_json::Value),
    /// It failed; `retry` says whether another attempt may follow (when attempts remain).
    Failed {
        /// Why.
        error: String,
        /// Whether the failure is worth retrying (false for a bad payload or an unknown type).
        retry: bool,
    },
    /// It was cancelled while running.
    Cancelled,
}

/// Which jobs `list` returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this type.
    pub job_type: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// At most this many.
    pub limit: usize,
    /// Skipping this many.
    pub offset: usize,
}

/// Where jobs live: one machine (embedded) or many (Redis). Every method is atomic with respect to every other
/// process using the same store.  Every time-dependent decision (leases, due times, backoff, timestamps,
/// staleness, purge ages) reads the store's [`Clock`](super::Clock).
pub trait JobStore: Send + Sync {
    /// Enqueues jobs; returns their ids in order. Each job's target is its
    /// [`resolved_target`](NewJob::resolved_target); when a job names two different targets, nothing is enqueued.
    fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<String>, StoreError>;
    /// Claims up to `max` due jobs (priority first, then FIFO; `types` filters) for `worker` under a lease of
    /// `lease`. Expired leases are returned to the queue first (or made dead when no attempt remains), and
    /// `waiting` jobs whose parents have all ended are released (see [`release_verdict`]).
    fn claim(
        &self,
        worker: &str,
        types: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError>;
    /// Gives back jobs `worker` claimed and never started (a worker stopping with jobs it prefetched): each is queued
    /// again in its place (its priority, then first in, first out), the attempt its claim counted taken back; one
    /// whose cancel was asked for meanwhile is cancelled instead. A job `worker` no longer holds is left alone.
    /// Returns how many were given back.
    fn release(&self, worker: &str, jobs: &[String]) -> Result<usize, StoreError>;
    /// Renews `worker`'s leases on `jobs`; returns the ids among them whose cancellation was requested.
    fn heartbeat(&self, worker: &str, jobs: &[String], lease: Duration) -> Result<Vec<String>, StoreError>;
    /// Records how attempts ended (one transaction); an entry whose job `worker` no longer holds is ignored.
    /// Returns how many were recorded.
    fn finish(&self, worker: &str, results: &[(String, Finish)]) -> Result<usize, StoreError>;
    /// Records how attempts ended, as [`finish`](Self::finish) does, then claims as [`claim`](Self::claim) does: a
    /// worker's ends and its next claim in one call, which a store may answer in one round trip. Returns what each
    /// returns.
    fn finish_and_claim(
        &self,
        worker: &str,
        results: &[(String, Finish)],
        types: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<(usize, Vec<Job>), StoreError> {
        let done = self.finish(worker, results)?;
        Ok((done, self.claim(worker, types, max, lease)?))
    }
    /// Whether calls from several threads run side by side: a worker then sends its next claim while it runs the
    /// jobs it holds. A store whose calls wait for one another gains nothing from that, so the default is no.
    fn parallel_calls(&self) -> bool {
        false
    }
    /// Records progress.
    fn progress(&self, id: &str, progress: &JobProgress) -> Result<(), StoreError>;
    /// Appends log lines (the store keeps the last few thousand per job).
    fn log(&self, id: &str, lines: &[String]) -> Result<(), StoreError>;
    /// One job.
    fn get(&self, id: &str) -> Result<Job, StoreError>;
    /// A job's log lines after the first `skip`.
    fn logs(&self, id: &str, skip: usize) -> Result<Vec<JobLogLine>, StoreError>;
    /// Jobs, newest first.
    fn list(&self, filter: &ListFilter) -> Result<Vec<Job>, StoreError>;
    /// Cancels a queued or scheduled job at once; asks the worker of a running one to stop it.
    fn cancel(&self, id: &str) -> Result<JobStatus, StoreError>;
    /// Queues a failed, dead or cancelled job again with fresh attempts.
    fn retry(&self, id: &str) -> Result<(), StoreError>;
    /// Counts, throughput and workers.
    fn stats(&self) -> Result<JobStats, StoreError>;
    /// Whether anything (of `types`, all when empty) is queued, scheduled or running.
    fn pending(&self, types: &[String]) -> Result<bool, StoreError>;
    /// Deletes finished jobs older than `older_than` (and, with `dead`, every dead job); returns how many.
    fn purge(&self, older_than: Option<Duration>, dead: bool) -> Result<u64, StoreError>;
    /// Compacts the store (the embedded file; Redis needs nothing).
    fn vacuum(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Blocks until work may have arrived or `timeout` passes (a store that can be told waits for that).
    fn wait_for_work(&self, timeout: Duration) {
        std::thread::sleep(timeout);
    }
    /// [`wait_for_work`](Self::wait_for_work), then [`claim`](Self::claim) of up to `max` jobs, whether the wait
    /// was woken or ran out: an idle worker's one call. A store that can queue the claim behind the wait on its
    /// server (Redis) sends both at once, so the claim runs the moment an enqueue wakes the wait, without a round
    /// trip to the worker between them.
    fn wait_then_claim(
        &self,
        timeout: Duration,
        worker: &str,
        types: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        self.wait_for_work(timeout);
        self.claim(worker, types, max, lease)
    }
    /// Records that `worker` is alive and holds `running` jobs (`running = None`: it left, and is no longer
    /// listed). Unless it beats again within `stale_after`, [`stats`](Self::stats) shows it gone, running nothing,
    /// for an hour ([`GONE_WORKERS_LISTED`]).
    fn worker_heartbeat(
        &self,
        worker: &str,
        running: Option<u32>,
        stale_after: Duration,
    ) -> Result<(), StoreError>;
    /// Running (or cancelling) jobs nobody works on any more: their lease ran out, or their worker is one of
    /// `dead_workers` (a worker of this machine whose process is gone).
    fn orphans(&self, dead_workers: &[String]) -> Result<Vec<Job>, StoreError>;
    /// Returns every [`orphan`](Self::orphans) to the queue (dead when no attempt remains, cancelled when a
    /// cancel was pending), as a claim does with expired leases; returns their ids.
    fn requeue_orphans(&self, dead_workers: &[String]) -> Result<Vec<String>, StoreError>;
    /// Forgets the heartbeats of `workers` (gone ones: they are no longer listed); returns how many were known.
    fn forget_workers(&self, workers: &[String]) -> Result<usize, StoreError>;
    /// How long the oldest queued job has waited since it was queued (or became due), by the store's clock.
    fn oldest_queued_age(&self) -> Result<Option<Duration>, StoreError>;
    /// The layout version the store was written with ([`STORE_SCHEMA`] for a store this envctl made or migrated).
    fn schema_version(&self) -> Result<u32, StoreError>;

    // What a running job reports about itself through the runtime API, and the variables jobs keep across runs.
    // Variables belong to the repository (the store is the repository's), or to one of its targets (`target`);
    // their values are text, and an increment treats a missing one as 0.

    /// Records a job's output on its record (what its children read in their context).
    fn set_output(&self, id: &str, output: &serde_json::Value) -> Result<(), StoreError>;
    /// Records whether the jobs after `id` may run.
    fn set_condition(&self, id: &str, condition: bool) -> Result<(), StoreError>;
    /// A variable's value.
    fn var_get(&self, target: Option<&str>, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a variable.
    fn var_set(&self, target: Option<&str>, key: &str, value: &str) -> Result<(), StoreError>;
    /// Deletes a variable; returns whether it existed.
    fn var_delete(&self, target: Option<&str>, key: &str) -> Result<bool, StoreError>;
    /// Adds `by` to a variable atomically and returns the new value ([`StoreError::Variable`] when its value is
    /// not a whole number).
    fn var_incr(&self, target: Option<&str>, key: &str, by: i64) -> Result<i64, StoreError>;
    /// Every variable, by target (the repository's first) then key.
    fn var_list(&self) -> Result<Vec<Variable>, StoreError>;
}

/// What becomes of a `waiting` job once each of its parents has the given status (`None`: the parent is gone) and
/// condition: `None` while one has not ended, `Some(None)` to run it, `Some(Some(reason))` to skip it. Both stores
/// release waiting jobs by this rule (the Redis store in `lua/claim.lua`, which mirrors it).
pub fn release_verdict<'a>(
    parents: impl IntoIterator<Item = (&'a str, Option<JobStatus>, Option<bool>)>,
) -> Option<Option<String>> {
    let mut skip = None;
    for (id, status, condition) in parents {
        match status {
            Some(status) if !status.is_final() => return None,
            Some(JobStatus::Succeeded) if condition == Some(false) => {
                skip.get_or_insert_with(|| format!("skipped: parent {id} set condition = false"));
            }
            Some(JobStatus::Succeeded) => {}
            Some(status) => {
                skip.get_or_insert_with(|| format!("skipped: parent {id} ended {}", status.as_str()));
            }
            None => {
                skip.get_or_insert_with(|| format!("skipped: parent {id} is gone"));
            }
        }
    }
    Some(skip)
}

/// The key under which a variable of `target` (none: the repository's) is kept: `<target>\t<key>`.
pub fn variable_field(target: Option<&str>, key: &str) -> String {
    format!("{}\t{key}", target.unwrap_or(""))
}

/// The variable kept under `field` ([`variable_field`]) with `value`.
pub fn variable_of(field: &str, value: String) -> Variable {
    let (target, key) = field.split_once('\t').unwrap_or(("", field));
    Variable { key: key.to_owned(), target: (!target.is_empty()).then(|| target.to_owned()), value }
}

/// The store layout this envctl reads and writes (2: workers record when their heartbeat goes stale; 3: jobs
/// carry input, output, parents and condition, and the store keeps variables; 4: an index of jobs per status and
/// per-minute aggregates of finished jobs, so `list --status` and `stats` cost the same at any store size).
pub const STORE_SCHEMA: u32 = 4;

/// A start latency in milliseconds kept to two significant digits: the bin of the per-minute latency histograms
/// (the Redis scripts' `latency_bin` computes the same).
pub fn latency_bin(ms: f64) -> f64 {
    if ms <= 0.0 {
        return 0.0;
    }
    let mut e = ms.log10().floor();
    let mut m = (ms / 10f64.powf(e - 1.0) + 0.5).floor();
    if m >= 100.0 {
        m = 10.0;
        e += 1.0;
    }
    m * 10f64.powf(e - 1.0)
}

/// The median and 99th percentile of a histogram of `(value, count)` bins, picked as [`percentiles`] picks them
/// from the samples the bins count.
pub fn histogram_percentiles(mut bins: Vec<(f64, u64)>) -> (Option<f64>, Option<f64>) {
    bins.retain(|(_, n)| *n > 0);
    let total: u64 = bins.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return (None, None);
    }
    bins.sort_by(|a, b| a.0.total_cmp(&b.0));
    let at = |q: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let index = ((total - 1) as f64 * q).round() as u64;
        let mut seen = 0;
        for (value, n) in &bins {
            seen += n;
            if index < seen {
                return *value;
            }
        }
        bins[bins.len() - 1].0
    };
    (Some(at(0.5)), Some(at(0.99)))
}

/// How long after it went gone a worker is still listed by [`JobStore::stats`].
pub const GONE_WORKERS_LISTED: Duration = Duration::from_secs(3600);

/// The staleness assumed for a worker whose heartbeat did not record one (a worker of an older envctl): three of
/// the default 30 s leases.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(90);

/// A worker's liveness at `now_ms`, from the time its heartbeat goes stale (both milliseconds since the epoch), and
/// the jobs it holds: none once it is gone.
pub fn liveness(now_ms: i64, stale_at_ms: i64, running: u32) -> (WorkerState, u32) {
    if now_ms <= stale_at_ms { (WorkerState::Alive, running) } else { (WorkerState::Gone, 0) }
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 of milliseconds since the epoch.
pub fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// The pause before retry number `attempt` (1-based): 1 s doubling to at most 5 minutes, with ±25 % jitter.
pub fn backoff(attempt: u32, jitter_seed: u64) -> Duration {
    let base = 1000u64.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(300_000);
    // 750‰ to 1249‰ of the base.
    let per_mille = 750 + crate::state::fnv1a(&jitter_seed.to_le_bytes()) % 500;
    Duration::from_millis(base * per_mille / 1000)
}

/// The 50th and 99th percentiles of `samples` (milliseconds).
pub fn percentiles(mut samples: Vec<f64>) -> (Option<f64>, Option<f64>) {
    if samples.is_empty() {
        return (None, None);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let index = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[index]
    };
    (Some(at(0.5)), Some(at(0.99)))
}

/// A new job id: ordered by the wall clock (not the store's: an id only has to be unique), unique across processes.
pub fn new_id() -> String {
    use super::clock::{Clock as _, SystemClock};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt =
        crate::state::fnv1a(format!("{}-{n}-{:?}", std::process::id(), std::time::Instant::now()).as_bytes());
    format!("j{:011x}{:08x}", SystemClock.now_ms(), salt & 0xffff_ffff)
}
