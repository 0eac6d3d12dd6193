//! The Redis store: jobs shared by workers on any machine. Every state transition is one Lua script (enqueue,
//! claim, finish, heartbeat, cancel/retry), so it is atomic; the scripts read the server's clock, so leases and
//! schedules do not depend on the workers' clocks. (A test clock that
//! [overrides](super::Clock::overrides_server_clock) the server's is passed to every script as its second
//! argument instead; an empty one means `TIME`.)
//!
//! Keys (under the prefix, `envctl` by default): `job:<id>` (a hash per job), `queue:<type>` (a sorted set per
//! type, scored priority-major then FIFO), `types`, `scheduled` and `leases` (sorted by due time and lease expiry),
//! `all` (every job by sequence), `finished` (by finish time), `counts` (jobs per status), `logs:<id>`, `workers`
//! (a hash: worker id → `<started>:<last heartbeat>:<running>:<stale at>`, times in milliseconds), `waiting` (jobs
//! waiting for their parents, by sequence; a job's `parents` field is their ids joined by commas) and `vars` (a
//! hash: `<target>\t<key>` → value, the target empty for the repository's variables), `status:<s>` (the jobs in
//! status s by sequence, kept by the scripts that move a job, so a list by status reads only its own) and
//! `stats:<minute>` (aggregates of the jobs that finished in that minute: finished, succeeded, run_n, run_ms and
//! `l:<bin>` start latencies to two significant digits; `stats` sums the last hour's, expiring after two hours).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::config::Priority;
use envctl_contracts::jobs::{Job, JobLogLine, JobProgress, JobStats, JobStatus, Variable, WorkerInfo};
use redis::{Commands, Script};

use super::clock::{Clock, SystemClock};
use super::store::{
    DEFAULT_STALE_AFTER, Finish, GONE_WORKERS_LISTED, JobStore, ListFilter, NewJob, StoreError,
    histogram_percentiles, liveness, millis, new_id, rfc3339, variable_field, variable_of,
};

const COMMON: &str = include_str!("lua/common.lua");
/// Log lines kept per job.
const LOG_LINES_KEPT: isize = 5000;
/// Jobs per enqueue script call.
const ENQUEUE_BATCH: usize = 1000;
/// How long a command may wait for the server's answer: a server that stops answering without closing the
/// connection (paused, partitioned away) fails the call after this instead of holding its thread, and the
/// connection with it, for good. Far above what any of the scripts takes.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections a store keeps open while unused: a worker uses two at once, the runtime API up to its
/// `STORE_CALLS`.
const IDLE_CONNECTIONS: usize = 8;

/// Bounds the reads and writes of `conn` by `limit`.
fn bounded(conn: &redis::Connection, limit: Duration) -> redis::RedisResult<()> {
    conn.set_read_timeout(Some(limit))?;
    conn.set_write_timeout(Some(limit))
}

/// Redis-backed [`JobStore`].
pub struct RedisStore {
    /// The URL, its password removed (it is only shown, in errors and logs).
    url: String,
    prefix: String,
    /// Connections not in use. A call takes one, or opens another when all are taken (so calls from several threads,
    /// like a worker's claim ahead and its finish, run side by side), and puts it back after; one that broke is
    /// dropped. At most [`IDLE_CONNECTIONS`] are kept.
    idle: Mutex<Vec<redis::Connection>>,
    /// A connection of its own for blocking waits, so they never hold up a call.
    wake: Mutex<Option<redis::Connection>>,
    client: redis::Client,
    clock: Arc<dyn Clock>,
    enqueue: Script,
    claim: Script,
    finish: Script,
    heartbeat: Script,
    control: Script,
    requeue: Script,
    release: Script,
    set_field: Script,
    migrate: Script,
    forget: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

/// A call of `script` by its hash, with no keys (every script names its keys from the prefix it is given).
fn evalsha(script: &Script) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(0);
    cmd
}

fn rank(priority: Priority) -> u8 {
    match priority {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Critical => 3,
    }
}

fn priority_of(rank: &str) -> Priority {
    match rank {
        "0" => Priority::Low,
        "2" => Priority::High,
        "3" => Priority::Critical,
        _ => Priority::Normal,
    }
}

/// The fields of a job's hash that make a [`Job`], in the order [`job_of`] takes them (the hash's bookkeeping
/// fields, `seq`, `queued_us`, `agg` and the like, are not shown).
const JOB_FIELDS: [&str; 22] = [
    "id",
    "type",
    "target",
    "payload",
    "status",
    "priority",
    "attempts",
    "max_attempts",
    "created_at",
    "updated_at",
    "scheduled_at",
    "started_at",
    "finished_at",
    "worker_id",
    "progress",
    "result",
    "error",
    "metadata",
    "input",
    "output",
    "parents",
    "condition",
];

/// A job from the values of its hash's [`JOB_FIELDS`] (empty and missing fields are absent); `None` when the hash
/// is gone.
fn job_of(values: Vec<Option<String>>) -> Option<Job> {
    let [
        id,
        job_type,
        target,
        payload,
        status,
        priority,
        attempts,
        max_attempts,
        created_at,
        updated_at,
        scheduled_at,
        started_at,
        finished_at,
        worker_id,
        progress,
        result,
        error,
        metadata,
        input,
        output,
        parents,
        condition,
    ] = <[Option<String>; JOB_FIELDS.len()]>::try_from(values).ok()?.map(|v| v.filter(|v| !v.is_empty()));
    let ms = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
    let count = |v: Option<String>| ms(v).and_then(|v| u32::try_from(v).ok());
    let json = |v: Option<String>| v.and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok());
    Some(Job {
        id: id?,
        job_type: job_type?,
        target,
        payload: json(payload).unwrap_or(serde_json::Value::Null),
        status: JobStatus::parse(&status?)?,
        priority: priority_of(priority.as_deref().unwrap_or_default()),
        attempts: count(attempts).unwrap_or(0),
        max_attempts: count(max_attempts).unwrap_or(1),
        created_at: rfc3339(ms(created_at).unwrap_or(0)),
        updated_at: rfc3339(ms(updated_at).unwrap_or(0)),
        scheduled_at: ms(scheduled_at).map(rfc3339),
        started_at: ms(started_at).map(rfc3339),
        finished_at: ms(finished_at).map(rfc3339),
        worker_id,
        progress: progress.and_then(|v| serde_json::from_str(&v).ok()),
        result: json(result),
        error,
        metadata: json(metadata).unwrap_or_default(),
        input: json(input),
        output: json(output),
        parents: parents.map(|p| p.split(',').map(str::to_owned).collect()).unwrap_or_default(),
        condition: condition.map(|c| c == "true"),
    })
}

impl RedisStore {
    /// Connects to `url`, keeping every key under `prefix`.
    pub fn open(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::open_with_clock(url, prefix, Arc::new(SystemClock))
    }

    /// Connects to `url`, keeping every key under `prefix` and reading the time from `clock` (the scripts keep
    /// the server's clock unless `clock` [overrides](Clock::overrides_server_clock) it).
    pub fn open_with_clock(url: &str, prefix: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        // The URL as errors and logs show it: without its password.
        let shown = crate::state::redact::redact_urls(url);
        let fail =
            |e: &dyn std::fmt::Display| StoreError::Backend { store: shown.clone(), detail: e.to_string() };
        let client = redis::Client::open(url).map_err(|e| fail(&e))?;
        let conn = client.get_connection_with_timeout(Duration::from_secs(5)).map_err(|e| fail(&e))?;
        bounded(&conn, COMMAND_TIMEOUT).map_err(|e| fail(&e))?;
        let store = Self {
            url: shown.clone(),
            prefix: prefix.to_owned(),
            idle: Mutex::new(vec![conn]),
            wake: Mutex::new(None),
            client,
            clock,
            enqueue: script(include_str!("lua/enqueue.lua")),
            claim: script(include_str!("lua/claim.lua")),
            finish: script(include_str!("lua/finish.lua")),
            heartbeat: script(include_str!("lua/heartbeat.lua")),
            control: script(include_str!("lua/control.lua")),
            requeue: script(include_str!("lua/requeue.lua")),
            release: script(include_str!("lua/release.lua")),
            migrate: script(include_str!("lua/migrate.lua")),
            // A purged job's end leaves the aggregates of its minute.
            forget: script("for i = 3, #ARGV do unrecord(ARGV[i]) end"),
            set_field: Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return 1 end; return 0",
            ),
        };
        store.with(|c| store.migrate(c))?;
        Ok(store)
    }

    /// Brings a store written by an older envctl up to [`STORE_SCHEMA`](super::store::STORE_SCHEMA): before 4,
    /// the per-status indexes and the last hour's per-minute aggregates are built from its jobs (see
    /// `lua/migrate.lua`). A store without jobs is simply marked current.
    fn migrate(&self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        let current = super::store::STORE_SCHEMA;
        let (version, jobs): (Option<u32>, u64) =
            redis::pipe().get(self.key("schema")).zcard(self.key("all")).query(conn)?;
        if version.is_some_and(|v| v >= current) {
            return Ok(());
        }
        if version.is_none() && jobs == 0 {
            let _: bool = conn.set_nx(self.key("schema"), current)?;
            return Ok(());
        }
        let mut start = 0i64;
        while start >= 0 {
            start = self.migrate.arg(&self.prefix).arg(self.script_now()).arg(start).invoke(conn)?;
        }
        // Every layout change before 4 was additive in Redis (fields read as absent), so 4 is all there is to do.
        conn.set(self.key("schema"), current)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The scripts' second argument: the clock's time when it overrides the server's, else empty (`TIME`).
    fn script_now(&self) -> String {
        if self.clock.overrides_server_clock() { self.now_ms().to_string() } else { String::new() }
    }

    fn key(&self, k: &str) -> String {
        format!("{}:{k}", self.prefix)
    }

    fn fail(&self, e: &redis::RedisError) -> StoreError {
        StoreError::Backend { store: self.url.clone(), detail: e.to_string() }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.call(f).map_err(|e| self.fail(&e))
    }

    /// Runs `f` on a connection of the pool (see `idle`), returning the server's error as it is. After a
    /// connection-level failure (the server restarted, the network went away) the pool is emptied and the next call
    /// opens a fresh connection; the failed call is not repeated here (whether it ran is unknown: the caller decides,
    /// as the worker does by calling again, at least once).
    fn call<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let taken = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut conn = if let Some(conn) = taken {
            conn
        } else {
            let fresh = self.client.get_connection_with_timeout(Duration::from_secs(2))?;
            bounded(&fresh, COMMAND_TIMEOUT)?;
            fresh
        };
        let reply = f(&mut conn);
        let broken = reply.as_ref().is_err_and(|e| {
            e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
        });
        if broken {
            // The others most likely broke with it (the server restarted): they are dropped too, so the calls after
            // this one do not each fail once on a stale connection.
            self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
            tracing::info!(store = %self.url, "a connection to the job store broke; the next call opens another");
        } else {
            let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < IDLE_CONNECTIONS {
                idle.push(conn);
            }
        }
        reply
    }

    /// Calls `script` (its call `cmd`, from [`evalsha`]); one the server does not know (it restarted, or its
    /// scripts were flushed) is loaded and called again.
    fn evalsha_call(&self, script: &Script, cmd: &redis::Cmd) -> Result<redis::Value, StoreError> {
        self.with(|c| match cmd.query(c) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script.load(c)?;
                cmd.query(c)
            }
            reply => reply,
        })
    }

    /// The jobs a claim's reply (their ids) names, read right after it, as the store has them then (a cancel asked
    /// for in between reads `cancelling`, which the worker handles as it would a cancel arriving a moment later).
    fn claimed(&self, ids: redis::Value) -> Result<Vec<Job>, StoreError> {
        self.jobs(&self.parsed::<Vec<String>>(ids)?)
    }

    /// A script's reply as `T`.
    fn parsed<T: redis::FromRedisValue>(&self, reply: redis::Value) -> Result<T, StoreError> {
        redis::from_redis_value(reply)
            .map_err(|e| StoreError::Backend { store: self.url.clone(), detail: e.to_string() })
    }

    /// The connection an idle worker's wait blocks on (opened on first use, kept while it answers), its socket
    /// bounded for a wait of `timeout`; `None` when the server cannot be reached.
    fn wake_connection(&self, timeout: Duration) -> std::sync::MutexGuard<'_, Option<redis::Connection>> {
        let mut wake = self.wake.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if wake.is_none() {
            *wake = self.client.get_connection_with_timeout(Duration::from_secs(5)).ok();
        }
        // The wait itself is bounded by the server; the socket's bound covers a server that stopped answering.
        if let Some(conn) = wake.as_ref()
            && bounded(conn, timeout + COMMAND_TIMEOUT).is_err()
        {
            *wake = None;
        }
        wake
    }

    /// The claim script's call: see `lua/claim.lua`.
    fn claim_call(&self, worker: &str, types: &[String], max: usize, lease: Duration) -> redis::Cmd {
        let mut cmd = evalsha(&self.claim);
        cmd.arg(&self.prefix)
            .arg(self.script_now())
            .arg(worker)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .arg(max)
            .arg(types);
        cmd
    }

    /// The finish script's call: see `lua/finish.lua`.
    fn finish_call(&self, worker: &str, results: &[(String, Finish)]) -> redis::Cmd {
        let mut cmd = evalsha(&self.finish);
        cmd.arg(&self.prefix).arg(self.script_now()).arg(worker);
        for (id, finish) in results {
            let (kind, value) = match finish {
                Finish::Succeeded(result) => ("succeeded", result.to_string()),
                Finish::Cancelled => ("cancelled", String::new()),
                Finish::Failed { error, retry: true } => ("retry", error.clone()),
                Finish::Failed { error, retry: false } => ("failed", error.clone()),
            };
            cmd.arg(id).arg(kind).arg(value);
        }
        cmd
    }

    fn jobs(&self, ids: &[String]) -> Result<Vec<Job>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.key(&format!("job:{id}")));
        }
        // HGETALL, not HMGET of the fields a job shows: Redis scans a small hash's entries for each field it is
        // asked for, so reading them all costs the server less (it is the one shared by every worker), and the
        // names are matched here.
        let jobs: Vec<Vec<(String, String)>> = self.with(|c| pipe.query(c))?;
        Ok(jobs
            .into_iter()
            .filter_map(|fields| {
                let mut values: Vec<Option<String>> = vec![None; JOB_FIELDS.len()];
                for (k, v) in fields {
                    if let Some(at) = JOB_FIELDS.iter().position(|f| *f == k) {
                        values[at] = Some(v);
                    }
                }
                job_of(values)
            })
            .collect())
    }

    /// When `id`'s lease runs out (milliseconds), while it has one.
    fn lease_until(&self, id: &str) -> Option<i64> {
        self.with(|c| c.zscore(self.key("leases"), id)).ok().flatten()
    }

    fn control(&self, action: &str, id: &str) -> Result<JobStatus, StoreError> {
        let reply: redis::RedisResult<String> = self
            .call(|c| self.control.arg(&self.prefix).arg(self.script_now()).arg(action).arg(id).invoke(c));
        match reply {
            Ok(status) => JobStatus::parse(&status)
                .ok_or_else(|| StoreError::Backend { store: self.url.clone(), detail: status }),
            Err(e) if e.to_string().contains("missing") => Err(StoreError::NotFound(id.to_owned())),
            Err(e) if e.to_string().contains("state:") => {
                let status = e.to_string().rsplit("state:").next().unwrap_or_default().trim().to_owned();
                let status = JobStatus::parse(&status).map_or("unknown", JobStatus::as_str);
                let what = if action == "cancel" {
                    "it has already finished"
                } else {
                    "only failed, dead or cancelled jobs can be retried"
                };
                Err(StoreError::State { id: id.to_owned(), status, what: what.into() })
            }
            Err(e) => Err(self.fail(&e)),
        }
    }
}

impl JobStore for RedisStore {
    fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<String>, StoreError> {
        // Every job is checked before the first batch is written.
        let targets = jobs.iter().map(NewJob::resolved_target).collect::<Result<Vec<_>, _>>()?;
        let mut ids = Vec::with_capacity(jobs.len());
        for (batch, targets) in jobs.chunks(ENQUEUE_BATCH).zip(targets.chunks(ENQUEUE_BATCH)) {
            let mut invocation = self.enqueue.prepare_invoke();
            invocation.arg(&self.prefix).arg(self.script_now());
            for (job, target) in batch.iter().zip(targets) {
                let id = new_id();
                invocation
                    .arg(&id)
                    .arg(&job.job_type)
                    .arg(target.unwrap_or(""))
                    .arg(job.payload.to_string())
                    .arg(rank(job.priority))
                    .arg(job.max_attempts.max(1))
                    .arg(job.delay.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
                    .arg(job.input.as_ref().map(serde_json::Value::to_string).unwrap_or_default())
                    .arg(job.after.join(","));
                ids.push(id);
            }
            let enqueued: redis::RedisResult<i64> = self.call(|c| invocation.invoke(c));
            match enqueued {
                Ok(_) => {}
                Err(e) if e.code() == Some("MISSINGPARENT") => {
                    return Err(StoreError::NotFound(e.detail().unwrap_or_default().trim().to_owned()));
                }
                Err(e) => return Err(self.fail(&e)),
            }
        }
        Ok(ids)
    }

    fn claim(
        &self,
        worker: &str,
        types: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        let ids = self.evalsha_call(&self.claim, &self.claim_call(worker, types, max, lease))?;
        self.claimed(ids)
    }

    fn parallel_calls(&self) -> bool {
        true
    }

    fn finish_and_claim(
        &self,
        worker: &str,
        results: &[(String, Finish)],
        types: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<(usize, Vec<Job>), StoreError> {
        if results.is_empty() {
            return Ok((0, self.claim(worker, types, max, lease)?));
        }
        // One round trip for both scripts, the ends first.
        let (finish, claim) = (self.finish_call(worker, results), self.claim_call(worker, types, max, lease));
        let (done, jobs): (redis::Value, redis::Value) = self.with(|c| {
            redis::pipe().ignore_errors().add_command(finish.clone()).add_command(claim.clone()).query(c)
        })?;
        let refused = |reply: &redis::Value| matches!(reply, redis::Value::ServerError(_));
        if !refused(&done) && !refused(&jobs) {
            let done = usize::try_from(self.parsed::<i64>(done)?).unwrap_or(0);
            return Ok((done, self.claimed(jobs)?));
        }
        // One of them was refused: the server forgot its scripts (a restart, SCRIPT FLUSH), or a script failed. A
        // pipeline is not one transaction, so the claim may have run while the finish did not: what it took is
        // given back (their attempts taken back), then both are made again, one after the other, so no claim ever
        // runs before the ends it follows (it could otherwise take back a job whose end is still to be recorded).
        if !refused(&jobs) {
            let ids: Vec<String> = self.parsed(jobs)?;
            self.release(worker, &ids)?;
        }
        let done =
            usize::try_from(self.parsed::<i64>(self.evalsha_call(&self.finish, &finish)?)?).unwrap_or(0);
        Ok((done, self.claimed(self.evalsha_call(&self.claim, &claim)?)?))
    }

    fn release(&self, worker: &str, jobs: &[String]) -> Result<usize, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let released: i64 = self.with(|c| {
            let mut invocation = self.release.prepare_invoke();
            invocation.arg(&self.prefix).arg(self.script_now()).arg(worker);
            for id in jobs {
                invocation.arg(id);
            }
            invocation.invoke(c)
        })?;
        Ok(usize::try_from(released).unwrap_or(0))
    }

    fn heartbeat(&self, worker: &str, jobs: &[String], lease: Duration) -> Result<Vec<String>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|c| {
            let mut invocation = self.heartbeat.prepare_invoke();
            invocation
                .arg(&self.prefix)
                .arg(self.script_now())
                .arg(worker)
                .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
            for id in jobs {
                invocation.arg(id);
            }
            invocation.invoke(c)
        })
    }

    fn finish(&self, worker: &str, results: &[(String, Finish)]) -> Result<usize, StoreError> {
        if results.is_empty() {
            return Ok(0);
        }
        let done = self.evalsha_call(&self.finish, &self.finish_call(worker, results))?;
        Ok(usize::try_from(self.parsed::<i64>(done)?).unwrap_or(0))
    }

    fn progress(&self, id: &str, progress: &JobProgress) -> Result<(), StoreError> {
        let text = serde_json::to_string(progress).unwrap_or_default();
        self.with(|c| c.hset(self.key(&format!("job:{id}")), "progress", text))
    }

    fn log(&self, id: &str, lines: &[String]) -> Result<(), StoreError> {
        let now = self.now_ms();
        let key = self.key(&format!("logs:{id}"));
        let stamped: Vec<String> = lines.iter().map(|l| format!("{now}\t{l}")).collect();
        self.with(|c| {
            redis::pipe().rpush(&key, stamped).ignore().ltrim(&key, -LOG_LINES_KEPT, -1).ignore().query(c)
        })
    }

    fn get(&self, id: &str) -> Result<Job, StoreError> {
        self.jobs(&[id.to_owned()])?.pop().ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    fn logs(&self, id: &str, skip: usize) -> Result<Vec<JobLogLine>, StoreError> {
        self.get(id)?;
        let lines: Vec<String> =
            self.with(|c| c.lrange(self.key(&format!("logs:{id}")), isize::try_from(skip).unwrap_or(0), -1))?;
        Ok(lines
            .into_iter()
            .map(|l| {
                let (at, line) = l.split_once('\t').unwrap_or(("0", &l));
                JobLogLine { at: rfc3339(at.parse().unwrap_or(0)), line: line.to_owned() }
            })
            .collect())
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Job>, StoreError> {
        // A status has its own index (scored like `all`), so a list by status reads only its jobs.
        let index =
            self.key(&filter.status.map_or_else(|| "all".to_owned(), |s| format!("status:{}", s.as_str())));
        let limit = filter.limit.max(1);
        let offset = isize::try_from(filter.offset).unwrap_or(isize::MAX);
        if filter.job_type.is_none() && filter.target.is_none() {
            let end = offset.saturating_add(isize::try_from(limit).unwrap_or(isize::MAX) - 1);
            let ids: Vec<String> = self.with(|c| c.zrevrange(&index, offset, end))?;
            return self.jobs(&ids);
        }
        let mut out = Vec::new();
        let mut skipped = 0;
        let mut start = 0isize;
        loop {
            let ids: Vec<String> = self.with(|c| c.zrevrange(&index, start, start + 499))?;
            if ids.is_empty() {
                return Ok(out);
            }
            start += 500;
            for job in self.jobs(&ids)? {
                let keep = filter.status.is_none_or(|s| s == job.status)
                    && filter.job_type.as_ref().is_none_or(|t| *t == job.job_type)
                    && filter.target.as_ref().is_none_or(|t| Some(t) == job.target.as_ref());
                if !keep {
                    continue;
                }
                if skipped < filter.offset {
                    skipped += 1;
                    continue;
                }
                out.push(job);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }

    fn cancel(&self, id: &str) -> Result<JobStatus, StoreError> {
        self.control("cancel", id)
    }

    fn retry(&self, id: &str) -> Result<(), StoreError> {
        self.control("retry", id).map(|_| ())
    }

    fn stats(&self) -> Result<JobStats, StoreError> {
        let now = self.now_ms();
        let counts: HashMap<String, i64> = self.with(|c| c.hgetall(self.key("counts")))?;
        let n = |s: &str| u64::try_from(counts.get(s).copied().unwrap_or(0)).unwrap_or(0);
        let (minute, hour): (u64, u64) = self.with(|c| {
            redis::pipe()
                .zcount(self.key("finished"), now - 60_000, "+inf")
                .zcount(self.key("finished"), now - 3_600_000, "+inf")
                .query(c)
        })?;
        // The last hour's jobs are summed from its per-minute aggregates (kept by the scripts that finish them),
        // not read one by one.
        let mut pipe = redis::pipe();
        for m in (now - 3_600_000).div_euclid(60_000)..=now.div_euclid(60_000) {
            pipe.hgetall(self.key(&format!("stats:{m}")));
        }
        let buckets: Vec<HashMap<String, i64>> = self.with(|c| pipe.query(c))?;
        let (mut finished, mut ok, mut run_n, mut run_ms) = (0i64, 0i64, 0i64, 0i64);
        let mut bins: HashMap<String, i64> = HashMap::new();
        for bucket in buckets {
            for (field, n) in bucket {
                match field.as_str() {
                    "finished" => finished += n,
                    "succeeded" => ok += n,
                    "run_n" => run_n += n,
                    "run_ms" => run_ms += n,
                    other => {
                        if let Some(bin) = other.strip_prefix("l:") {
                            *bins.entry(bin.to_owned()).or_default() += n;
                        }
                    }
                }
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let mean_run_ms = (run_n > 0).then(|| run_ms as f64 / run_n as f64);
        #[allow(clippy::cast_precision_loss)]
        let success_rate = (finished > 0).then(|| ok as f64 / finished as f64);
        let (start_latency_p50_ms, start_latency_p99_ms) = histogram_percentiles(
            bins.into_iter()
                .filter_map(|(bin, n)| Some((bin.parse::<f64>().ok()?, u64::try_from(n).ok()?)))
                .collect(),
        );
        let workers: HashMap<String, String> = self.with(|c| c.hgetall(self.key("workers")))?;
        let mut workers: Vec<WorkerInfo> = workers
            .into_iter()
            .filter_map(|(id, v)| {
                let mut parts = v.split(':').map(|p| p.parse::<i64>().unwrap_or(0));
                let (started, beat, running) = (parts.next()?, parts.next()?, parts.next()?);
                // An older worker's entry has no fourth part.
                let stale_at =
                    parts.next().unwrap_or_else(|| beat.saturating_add(millis(DEFAULT_STALE_AFTER)));
                let (state, running) = liveness(now, stale_at, u32::try_from(running).unwrap_or(0));
                (stale_at >= now - millis(GONE_WORKERS_LISTED)).then(|| WorkerInfo {
                    id,
                    started_at: rfc3339(started),
                    heartbeat_at: rfc3339(beat),
                    state,
                    running,
                })
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(JobStats {
            schema_version: SCHEMA_VERSION,
            waiting: n("waiting"),
            skipped: n("skipped"),
            queued: n("queued"),
            scheduled: n("scheduled"),
            running: n("running") + n("cancelling"),
            succeeded: n("succeeded"),
            failed: n("failed"),
            cancelled: n("cancelled"),
            dead: n("dead"),
            finished_last_minute: minute,
            finished_last_hour: hour,
            mean_run_ms,
            success_rate,
            start_latency_p50_ms,
            start_latency_p99_ms,
            workers,
        })
    }

    fn pending(&self, types: &[String]) -> Result<bool, StoreError> {
        if types.is_empty() {
            let counts: HashMap<String, i64> = self.with(|c| c.hgetall(self.key("counts")))?;
            return Ok(["waiting", "queued", "scheduled", "running", "cancelling"]
                .iter()
                .any(|s| counts.get(*s).copied().unwrap_or(0) > 0));
        }
        for t in types {
            let queued: u64 = self.with(|c| c.zcard(self.key(&format!("queue:{t}"))))?;
            if queued > 0 {
                return Ok(true);
            }
        }
        let mut waiting: Vec<String> = self.with(|c| c.zrange(self.key("scheduled"), 0, -1))?;
        waiting.extend(self.with(|c| c.zrange::<_, Vec<String>>(self.key("waiting"), 0, -1))?);
        waiting.extend(self.with(|c| c.zrange::<_, Vec<String>>(self.key("leases"), 0, -1))?);
        Ok(self.jobs(&waiting)?.iter().any(|j| types.contains(&j.job_type) && !j.status.is_final()))
    }

    fn purge(&self, older_than: Option<Duration>, dead: bool) -> Result<u64, StoreError> {
        let mut doomed: Vec<String> = Vec::new();
        if let Some(age) = older_than {
            let cutoff = self.now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            doomed.extend(
                self.with(|c| c.zrangebyscore::<_, _, _, Vec<String>>(self.key("finished"), "-inf", cutoff))?,
            );
        }
        if dead {
            let finished: Vec<String> = self.with(|c| c.zrange(self.key("finished"), 0, -1))?;
            doomed.extend(
                self.jobs(&finished)?.into_iter().filter(|j| j.status == JobStatus::Dead).map(|j| j.id),
            );
        }
        doomed.sort();
        doomed.dedup();
        let jobs = self.jobs(&doomed)?;
        if jobs.is_empty() {
            return Ok(0);
        }
        for chunk in jobs.chunks(1000) {
            self.with(|c| {
                let mut invocation = self.forget.prepare_invoke();
                invocation.arg(&self.prefix).arg(self.script_now());
                for job in chunk {
                    invocation.arg(&job.id);
                }
                invocation.invoke::<()>(c)
            })?;
        }
        let mut pipe = redis::pipe();
        for job in &jobs {
            pipe.zrem(self.key(&format!("status:{}", job.status.as_str())), &job.id).ignore();
            pipe.hincr(self.key("counts"), job.status.as_str(), -1).ignore();
            pipe.del(self.key(&format!("job:{}", job.id))).ignore();
            pipe.del(self.key(&format!("logs:{}", job.id))).ignore();
            pipe.zrem(self.key("all"), &job.id).ignore();
            pipe.zrem(self.key("finished"), &job.id).ignore();
        }
        self.with(|c| pipe.query::<()>(c))?;
        Ok(jobs.len() as u64)
    }

    fn wait_for_work(&self, timeout: Duration) {
        let mut wake = self.wake_connection(timeout);
        let Some(conn) = wake.as_mut() else {
            return std::thread::sleep(timeout);
        };
        let popped: redis::RedisResult<Option<(String, String)>> =
            conn.blpop(self.key("wake"), timeout.as_secs_f64());
        if popped.is_err() {
            *wake = None;
        }
    }

    fn wait_then_claim(
        &self,
        timeout: Duration,
        worker: &str,
        types: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        let mut wake = self.wake_connection(timeout);
        let Some(conn) = wake.as_mut() else {
            drop(wake);
            std::thread::sleep(timeout);
            return self.claim(worker, types, max, lease);
        };
        // redis-server leaves the commands a blocked client sent after its BLPOP in its buffer until the BLPOP
        // returns, then runs them at once: the claim sent behind the wait runs right after the enqueue that woke
        // it, in the same pass of the server, instead of after the wake-up's trip to this worker and back.
        let mut wait = redis::cmd("BLPOP");
        wait.arg(self.key("wake")).arg(timeout.as_secs_f64());
        let claim = self.claim_call(worker, types, max, lease);
        let replied: redis::RedisResult<(redis::Value, redis::Value)> =
            redis::pipe().ignore_errors().add_command(wait).add_command(claim).query(conn);
        if replied.is_err() {
            *wake = None;
        }
        drop(wake);
        match replied {
            Ok((_, ids)) if !matches!(ids, redis::Value::ServerError(_)) => self.claimed(ids),
            // Refused (the server forgot its scripts: a restart, SCRIPT FLUSH), it took nothing; or the connection
            // broke (a claim the server ran anyway holds its jobs until their lease runs out): the claim alone,
            // which loads its script again.
            _ => self.claim(worker, types, max, lease),
        }
    }

    fn orphans(&self, dead_workers: &[String]) -> Result<Vec<Job>, StoreError> {
        let now = self.now_ms();
        let leased: Vec<(String, i64)> = self.with(|c| c.zrange_withscores(self.key("leases"), 0, -1))?;
        let ids: Vec<String> = leased.into_iter().map(|(id, _)| id).collect();
        let expired = |j: &Job| {
            j.worker_id.as_ref().is_some_and(|w| dead_workers.contains(w))
                || self.lease_until(&j.id).is_some_and(|until| until < now)
        };
        Ok(self
            .jobs(&ids)?
            .into_iter()
            .filter(|j| matches!(j.status, JobStatus::Running | JobStatus::Cancelling) && expired(j))
            .collect())
    }

    fn requeue_orphans(&self, dead_workers: &[String]) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut invocation = self.requeue.prepare_invoke();
            invocation.arg(&self.prefix).arg(self.script_now());
            for w in dead_workers {
                invocation.arg(w);
            }
            invocation.invoke(c)
        })
    }

    fn forget_workers(&self, workers: &[String]) -> Result<usize, StoreError> {
        if workers.is_empty() {
            return Ok(0);
        }
        self.with(|c| c.hdel(self.key("workers"), workers))
    }

    fn oldest_queued_age(&self) -> Result<Option<Duration>, StoreError> {
        let types: Vec<String> = self.with(|c| c.smembers(self.key("types")))?;
        let mut heads = Vec::new();
        // A queue is scored priority-major, then FIFO: the first of each priority's band is its oldest.
        for t in types {
            for band in 0..4u64 {
                let (low, high) = (band * 1_000_000_000_000, (band + 1) * 1_000_000_000_000 - 1);
                let head: Vec<String> =
                    self.with(|c| c.zrangebyscore_limit(self.key(&format!("queue:{t}")), low, high, 0, 1))?;
                heads.extend(head);
            }
        }
        let now_us = self.now_ms().saturating_mul(1000);
        let mut pipe = redis::pipe();
        for id in &heads {
            pipe.hget(self.key(&format!("job:{id}")), "queued_us");
        }
        let queued: Vec<Option<i64>> =
            if heads.is_empty() { Vec::new() } else { self.with(|c| pipe.query(c))? };
        let oldest = queued.into_iter().flatten().min();
        Ok(oldest.map(|us| Duration::from_micros(u64::try_from(now_us - us).unwrap_or(0))))
    }

    fn schema_version(&self) -> Result<u32, StoreError> {
        let version: Option<u32> = self.with(|c| c.get(self.key("schema")))?;
        Ok(version.unwrap_or(1))
    }

    fn worker_heartbeat(
        &self,
        worker: &str,
        running: Option<u32>,
        stale_after: Duration,
    ) -> Result<(), StoreError> {
        let key = self.key("workers");
        match running {
            None => self.with(|c| c.hdel(&key, worker)),
            Some(n) => {
                let now = self.now_ms();
                let current: Option<String> = self.with(|c| c.hget(&key, worker))?;
                let started = current
                    .and_then(|v| v.split(':').next().and_then(|s| s.parse::<i64>().ok()))
                    .unwrap_or(now);
                let stale_at = now.saturating_add(millis(stale_after));
                self.with(|c| c.hset(&key, worker, format!("{started}:{now}:{n}:{stale_at}")))
            }
        }
    }

    fn set_output(&self, id: &str, output: &serde_json::Value) -> Result<(), StoreError> {
        self.set_job_field(id, "output", &output.to_string())
    }

    fn set_condition(&self, id: &str, condition: bool) -> Result<(), StoreError> {
        self.set_job_field(id, "condition", if condition { "true" } else { "false" })
    }

    fn var_get(&self, target: Option<&str>, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| c.hget(self.key("vars"), variable_field(target, key)))
    }

    fn var_set(&self, target: Option<&str>, key: &str, value: &str) -> Result<(), StoreError> {
        self.with(|c| c.hset(self.key("vars"), variable_field(target, key), value))
    }

    fn var_delete(&self, target: Option<&str>, key: &str) -> Result<bool, StoreError> {
        let removed: i64 = self.with(|c| c.hdel(self.key("vars"), variable_field(target, key)))?;
        Ok(removed > 0)
    }

    fn var_incr(&self, target: Option<&str>, key: &str, by: i64) -> Result<i64, StoreError> {
        // HINCRBY is atomic on the server, and refuses a value that is not a whole number.
        let reply: redis::RedisResult<i64> =
            self.call(|c| c.hincr(self.key("vars"), variable_field(target, key), by));
        match reply {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
                Err(StoreError::Variable { key: key.to_owned(), detail: format!("{e}") })
            }
            Err(e) => Err(self.fail(&e)),
        }
    }

    fn var_list(&self) -> Result<Vec<Variable>, StoreError> {
        let all: HashMap<String, String> = self.with(|c| c.hgetall(self.key("vars")))?;
        let mut vars: Vec<Variable> =
            all.into_iter().map(|(field, value)| variable_of(&field, value)).collect();
        vars.sort_by(|a, b| (&a.target, &a.key).cmp(&(&b.target, &b.key)));
        Ok(vars)
    }
}

impl RedisStore {
    /// Sets one field of job `id`'s hash; `NotFound` when there is no such job.
    fn set_job_field(&self, id: &str, field: &str, value: &str) -> Result<(), StoreError> {
        let set: i64 = self
            .with(|c| self.set_field.key(self.key(&format!("job:{id}"))).arg(field).arg(value).invoke(c))?;
        if set == 0 { Err(StoreError::NotFound(id.to_owned())) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::conformance::TestRedis;

    #[test]
    fn a_store_made_before_the_status_indexes_gains_them_from_its_jobs() {
        let server = TestRedis::start(false);
        let job = NewJob::one_attempt("a");
        {
            let store = RedisStore::open(&server.url(), "old").expect("connect");
            store.enqueue(&[job.clone(), job.clone(), job]).expect("enqueue");
            let ids: Vec<String> = store
                .claim("w", &[], 2, Duration::from_secs(30))
                .expect("claim")
                .into_iter()
                .map(|j| j.id)
                .collect();
            store
                .finish("w", &[(ids[0].clone(), Finish::Succeeded(serde_json::Value::Null))])
                .expect("finish");
            store
                .with(|c| {
                    let keys: Vec<String> = c.keys("old:status:*")?;
                    let mut stats: Vec<String> = c.keys("old:stats:*")?;
                    stats.extend(keys);
                    let _: () = c.del(stats)?;
                    for (id, _) in c.zrange_withscores::<_, Vec<(String, f64)>>("old:all", 0, -1)? {
                        let _: () = c.hdel(format!("old:job:{id}"), "agg")?;
                    }
                    c.set::<_, _, ()>("old:schema", 3)
                })
                .expect("the layout before schema 4");
        }
        let store = RedisStore::open(&server.url(), "old").expect("connect migrates");
        assert_eq!(store.schema_version().expect("version"), super::super::store::STORE_SCHEMA);
        let by = |status| {
            store
                .list(&ListFilter { status: Some(status), limit: 10, ..ListFilter::default() })
                .expect("list")
                .len()
        };
        assert_eq!((by(JobStatus::Queued), by(JobStatus::Running), by(JobStatus::Succeeded)), (1, 1, 1));
        let stats = store.stats().expect("stats");
        assert_eq!(
            (stats.finished_last_hour, stats.success_rate, stats.mean_run_ms.is_some()),
            (1, Some(1.0), true)
        );
        assert!(stats.start_latency_p50_ms.is_some(), "the last hour's latencies are counted again");
    }

    /// The server forgets its scripts (SCRIPT FLUSH, as a restart does) between calls: a finish and claim in one
    /// round trip loads them and still does each once, the finish first. When only the finish was forgotten (a claim
    /// alone loaded its own script again), the pipeline's claim runs while its finish is refused: what it took is
    /// given back before both are made again, so the finish still comes first (its result for a job that claim
    /// would have handed the worker is ignored, and that job's attempt is counted once).
    #[test]
    fn a_pipeline_of_scripts_the_server_forgot_loads_them_and_runs_each_once_in_order() {
        let server = TestRedis::start(false);
        let store = RedisStore::open(&server.url(), "p").expect("connect");
        let ids = store.enqueue(&vec![NewJob::one_attempt("a"); 6]).expect("enqueue");
        let lease = Duration::from_secs(30);
        let ids_of = |jobs: &[Job]| jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
        let first = store.claim("w", &[], 1, lease).expect("claim");
        let flush = || store.with(|c| redis::cmd("SCRIPT").arg("FLUSH").query::<()>(c)).expect("flush");
        flush();
        let ok = |id: &str| (id.to_owned(), Finish::Succeeded(serde_json::json!(1)));
        let (done, next) =
            store.finish_and_claim("w", &[ok(&first[0].id)], &[], 2, lease).expect("both forgotten");
        assert_eq!((done, ids_of(&next)), (1, ids[1..3].to_vec()));
        flush();
        assert!(store.claim("nobody", &["none".to_owned()], 1, lease).expect("claim").is_empty());
        let mut ends: Vec<_> = next.iter().map(|j| ok(&j.id)).collect();
        ends.push(ok(&ids[3]));
        let (done, last) = store.finish_and_claim("w", &ends, &[], 1, lease).expect("after a claim alone");
        assert_eq!((done, ids_of(&last)), (2, vec![ids[3].clone()]), "the finish ran before the claim");
        assert_eq!(last[0].attempts, 1, "the claim the refused pipeline made was given back");
        let stats = store.stats().expect("stats");
        assert_eq!(
            (stats.succeeded, stats.running, stats.queued),
            (3, 1, 2),
            "one claim of one job, not two"
        );
    }

    /// An idle worker's wait and claim: while the wait blocks, the claim is already at the server, queued behind it
    /// (the blocked client's query buffer holds it), and the job an enqueue then wakes it for is what it returns,
    /// claimed. After the server forgot its scripts the same call still claims (the claim alone loads them), and a
    /// wait that nothing wakes returns an empty claim.
    #[test]
    fn an_idle_wait_sends_its_claim_with_it_and_returns_the_job_an_enqueue_woke_it_for() {
        let server = TestRedis::start(false);
        let store = Arc::new(RedisStore::open(&server.url(), "i").expect("connect"));
        let lease = Duration::from_secs(30);
        let idle =
            store.wait_then_claim(Duration::from_millis(20), "w", &[], 4, lease).expect("nothing came");
        assert!(idle.is_empty());
        for forgotten in [false, true] {
            if forgotten {
                store.with(|c| redis::cmd("SCRIPT").arg("FLUSH").query::<()>(c)).expect("flush");
            }
            let waiting = Arc::clone(&store);
            let waiter = std::thread::spawn(move || {
                waiting.wait_then_claim(Duration::from_secs(20), "w", &[], 4, lease)
            });
            let blocked = loop {
                let clients: String =
                    store.with(|c| redis::cmd("CLIENT").arg("LIST").query(c)).expect("clients");
                if let Some(line) =
                    clients.lines().find(|l| l.contains(" cmd=blpop ") && l.contains(" flags=b "))
                {
                    break line.to_owned();
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            let queued: u64 = blocked
                .split(' ')
                .find_map(|f| f.strip_prefix("qbuf="))
                .and_then(|n| n.parse().ok())
                .expect("qbuf");
            assert!(queued > 0, "the claim waits at the server behind the BLPOP: {blocked}");
            let ids = store.enqueue(&[NewJob::one_attempt("a")]).expect("enqueue");
            let claimed = waiter.join().expect("join").expect("claim");
            let got: Vec<_> = claimed.iter().map(|j| (j.id.clone(), j.status, j.worker_id.clone())).collect();
            assert_eq!(
                got,
                vec![(ids[0].clone(), JobStatus::Running, Some("w".to_owned()))],
                "forgotten: {forgotten}"
            );
        }
    }

    /// Calls from two threads run side by side, each on a connection of the pool: one blocked on the server does
    /// not hold up the other. And calls made one after another reuse one connection.
    #[test]
    fn calls_from_two_threads_run_side_by_side_and_later_calls_reuse_the_connections() {
        let server = TestRedis::start(false);
        let store = Arc::new(RedisStore::open(&server.url(), "c").expect("connect"));
        let opened = || -> i64 {
            let info: String = store.with(|c| redis::cmd("INFO").arg("stats").query(c)).expect("info");
            info.lines()
                .find_map(|l| l.strip_prefix("total_connections_received:"))
                .and_then(|n| n.trim().parse().ok())
                .expect("total_connections_received")
        };
        let before = opened();
        for _ in 0..50 {
            store.stats().expect("stats");
        }
        assert_eq!(opened(), before, "fifty calls in a row open no connection");
        let (blocked_store, (started, is_started)) = (Arc::clone(&store), std::sync::mpsc::channel());
        let blocked = std::thread::spawn(move || {
            blocked_store.with(|c| {
                started.send(()).expect("send");
                redis::cmd("BLPOP").arg("c:never").arg(20).query::<Option<(String, String)>>(c)
            })
        });
        is_started.recv().expect("the blocking call started");
        store
            .enqueue(&[NewJob::one_attempt("a")])
            .expect("an enqueue while another call waits on the server");
        assert!(!blocked.is_finished(), "the enqueue did not wait for the blocked call");
        store.with(|c| c.lpush::<_, _, ()>("c:never", "x")).expect("unblock");
        assert!(blocked.join().expect("join").expect("blpop").is_some());
    }
}
