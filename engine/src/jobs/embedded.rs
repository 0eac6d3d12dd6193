//! The embedded store: SQLite in WAL mode in the scope's directory, shared safely by every process of the machine
//! (CLI, host, workers). Each operation is one transaction (`BEGIN IMMEDIATE` where it reads then writes), so a
//! process killed mid-write leaves the previous state, and two workers never claim the same job.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::config::Priority;
use envctl_contracts::jobs::{Job, JobLogLine, JobProgress, JobStats, JobStatus, Variable, WorkerInfo};
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::clock::{Clock, SystemClock};
use super::store::{
    DEFAULT_STALE_AFTER, Finish, GONE_WORKERS_LISTED, JobStore, ListFilter, NewJob, StoreError, backoff,
    histogram_percentiles, liveness, millis, new_id, release_verdict, rfc3339,
};

/// Log lines kept per job.
const LOG_LINES_KEPT: i64 = 5000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    target TEXT,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    scheduled_at INTEGER,
    started_at INTEGER,
    finished_at INTEGER,
    worker_id TEXT,
    lease_until INTEGER,
    progress TEXT,
    result TEXT,
    error TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    input TEXT,
    output TEXT,
    parents TEXT NOT NULL DEFAULT '[]',
    condition INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs(priority DESC, seq) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs(scheduled_at) WHERE status = 'scheduled';
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs(lease_until) WHERE status IN ('running', 'cancelling');
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS job_logs (job_seq INTEGER NOT NULL, at INTEGER NOT NULL, line TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS job_logs_job ON job_logs(job_seq);
CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, started_at INTEGER NOT NULL, heartbeat_at INTEGER NOT NULL, running INTEGER NOT NULL, stale_at INTEGER);
CREATE TABLE IF NOT EXISTS variables (target TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (target, key));
";

/// Jobs per status and per-minute aggregates of the jobs that finished (by `finished_at`'s minute), kept by
/// triggers in the transaction that changes a job, so `stats` reads a few rows whatever the store's size. A job
/// that stops being finished (a retry) or is purged takes back what it added. Start latencies are kept to two
/// significant digits (exact below 100 ms) in `job_latency`.
const AGGREGATES: &str = "
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE job_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE job_minutes (minute INTEGER PRIMARY KEY, finished INTEGER NOT NULL, succeeded INTEGER NOT NULL, run_n INTEGER NOT NULL, run_ms INTEGER NOT NULL);
CREATE TABLE job_latency (minute INTEGER NOT NULL, bin INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (minute, bin)) WITHOUT ROWID;
CREATE TABLE job_seconds (second INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
  INSERT INTO job_counts VALUES (NEW.status, 1) ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER job_counts_update AFTER UPDATE OF status ON jobs WHEN OLD.status IS NOT NEW.status BEGIN
  UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
  INSERT INTO job_counts VALUES (NEW.status, 1) ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
  UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
END;
CREATE TRIGGER job_minutes_unfinish BEFORE UPDATE OF finished_at ON jobs \
  WHEN OLD.finished_at IS NOT NULL AND OLD.finished_at IS NOT NEW.finished_at BEGIN
  UPDATE job_minutes SET finished = finished - 1, succeeded = succeeded - (OLD.status = 'succeeded'), \
    run_n = run_n - (OLD.started_at IS NOT NULL), run_ms = run_ms - COALESCE(OLD.finished_at - OLD.started_at, 0) \
    WHERE minute = OLD.finished_at / 60000;
  UPDATE job_seconds SET n = n - 1 WHERE second = OLD.finished_at / 1000;
  UPDATE job_latency SET n = n - 1 WHERE minute = OLD.finished_at / 60000 AND OLD.started_at - max(OLD.created_at, COALESCE(OLD.scheduled_at, 0)) IS NOT NULL \
    AND bin = (SELECT CASE WHEN w < 100 THEN w WHEN w < 1000 THEN (w + 5) / 10 * 10 WHEN w < 10000 THEN (w + 50) / 100 * 100 WHEN w < 100000 THEN (w + 500) / 1000 * 1000 WHEN w < 1000000 THEN (w + 5000) / 10000 * 10000 ELSE (w + 50000) / 100000 * 100000 END FROM (SELECT OLD.started_at - max(OLD.created_at, COALESCE(OLD.scheduled_at, 0)) AS w));
END;
CREATE TRIGGER job_minutes_finish AFTER UPDATE OF finished_at ON jobs \
  WHEN NEW.finished_at IS NOT NULL AND OLD.finished_at IS NOT NEW.finished_at BEGIN
  INSERT INTO job_minutes VALUES (NEW.finished_at / 60000, 1, NEW.status = 'succeeded', NEW.started_at IS NOT NULL, COALESCE(NEW.finished_at - NEW.started_at, 0)) \
    ON CONFLICT (minute) DO UPDATE SET finished = finished + 1, succeeded = succeeded + excluded.succeeded, \
    run_n = run_n + excluded.run_n, run_ms = run_ms + excluded.run_ms;
  INSERT INTO job_latency SELECT NEW.finished_at / 60000, CASE WHEN w < 100 THEN w WHEN w < 1000 THEN (w + 5) / 10 * 10 WHEN w < 10000 THEN (w + 50) / 100 * 100 WHEN w < 100000 THEN (w + 500) / 1000 * 1000 WHEN w < 1000000 THEN (w + 5000) / 10000 * 10000 ELSE (w + 50000) / 100000 * 100000 END, 1 \
    FROM (SELECT NEW.started_at - max(NEW.created_at, COALESCE(NEW.scheduled_at, 0)) AS w) WHERE w IS NOT NULL ON CONFLICT (minute, bin) DO UPDATE SET n = n + 1;
  INSERT INTO job_seconds VALUES (NEW.finished_at / 1000, 1) ON CONFLICT (second) DO UPDATE SET n = n + 1;
  DELETE FROM job_seconds WHERE second < NEW.finished_at / 1000 - 120;
  DELETE FROM job_minutes WHERE minute < NEW.finished_at / 60000 - 120;
  DELETE FROM job_latency WHERE minute < NEW.finished_at / 60000 - 120;
END;
CREATE TRIGGER job_minutes_delete BEFORE DELETE ON jobs WHEN OLD.finished_at IS NOT NULL BEGIN
  UPDATE job_minutes SET finished = finished - 1, succeeded = succeeded - (OLD.status = 'succeeded'), \
    run_n = run_n - (OLD.started_at IS NOT NULL), run_ms = run_ms - COALESCE(OLD.finished_at - OLD.started_at, 0) \
    WHERE minute = OLD.finished_at / 60000;
  UPDATE job_seconds SET n = n - 1 WHERE second = OLD.finished_at / 1000;
  UPDATE job_latency SET n = n - 1 WHERE minute = OLD.finished_at / 60000 AND OLD.started_at - max(OLD.created_at, COALESCE(OLD.scheduled_at, 0)) IS NOT NULL \
    AND bin = (SELECT CASE WHEN w < 100 THEN w WHEN w < 1000 THEN (w + 5) / 10 * 10 WHEN w < 10000 THEN (w + 50) / 100 * 100 WHEN w < 100000 THEN (w + 500) / 1000 * 1000 WHEN w < 1000000 THEN (w + 5000) / 10000 * 10000 ELSE (w + 50000) / 100000 * 100000 END FROM (SELECT OLD.started_at - max(OLD.created_at, COALESCE(OLD.scheduled_at, 0)) AS w));
END;
";

/// Fills the aggregates from the jobs of a store made before them (its counts, and the last two hours' ends).
const BACKFILL: &str = "
INSERT INTO job_counts SELECT status, count(*) FROM jobs GROUP BY status;
INSERT INTO job_seconds SELECT finished_at / 1000, count(*) FROM jobs WHERE finished_at >= ?1 GROUP BY 1;
INSERT INTO job_minutes SELECT finished_at / 60000, count(*), count(CASE WHEN status = 'succeeded' THEN 1 END), \
  count(started_at), COALESCE(sum(finished_at - started_at), 0) FROM jobs WHERE finished_at >= ?1 GROUP BY 1;
INSERT INTO job_latency SELECT minute, bin, count(*) FROM (SELECT finished_at / 60000 AS minute, CASE WHEN w < 100 THEN w WHEN w < 1000 THEN (w + 5) / 10 * 10 WHEN w < 10000 THEN (w + 50) / 100 * 100 WHEN w < 100000 THEN (w + 500) / 1000 * 1000 WHEN w < 1000000 THEN (w + 5000) / 10000 * 10000 ELSE (w + 50000) / 100000 * 100000 END AS bin \
  FROM (SELECT finished_at, started_at - max(created_at, COALESCE(scheduled_at, 0)) AS w FROM jobs WHERE finished_at >= ?1) WHERE w IS NOT NULL) GROUP BY 1, 2;
";

/// Made after [`migrate`] (an older store gains `status`'s new values only once its columns exist).
const WAITING_INDEX: &str = "CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs(seq) WHERE status = 'waiting';";

/// Brings a store made by an older envctl up to [`SCHEMA`]: `workers.stale_at` (when the worker's heartbeat goes
/// stale; NULL in the rows of an older worker, which [`DEFAULT_STALE_AFTER`] stands in for), and the runtime API's
/// columns of `jobs` (input, output, parents, condition).
fn migrate(conn: &mut Connection, now: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let has = |table: &str, column: &str| -> rusqlite::Result<bool> {
        tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
            [table, column],
            |r| r.get(0),
        )
    };
    let added = [
        ("workers", "stale_at", "INTEGER"),
        ("jobs", "input", "TEXT"),
        ("jobs", "output", "TEXT"),
        ("jobs", "parents", "TEXT NOT NULL DEFAULT '[]'"),
        ("jobs", "condition", "INTEGER"),
    ];
    for (table, column, kind) in added {
        if !has(table, column)? {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    let aggregated: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'job_counts')", [], |r| {
            r.get(0)
        })?;
    if !aggregated {
        tx.execute_batch(AGGREGATES)?;
        tx.execute_batch(&BACKFILL.replace("?1", &(now - 7_200_000).to_string()))?;
    }
    tx.commit()
}

const COLUMNS: &str = "id, type, target, payload, status, priority, attempts, max_attempts, created_at, updated_at, \
scheduled_at, started_at, finished_at, worker_id, progress, result, error, metadata, input, output, parents, condition";

/// SQLite-backed [`JobStore`].
#[derive(Debug)]
pub struct EmbeddedStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    /// An idle worker's wake-up, made by its first wait.
    wake: Mutex<Option<Wake>>,
}

/// How an idle worker learns that work may have arrived: an inotify watch on the store's directory, whose events
/// for the store's own files (a commit writes the `-wal` file) end its wait.
#[derive(Debug)]
struct Wake {
    inotify: nix::sys::inotify::Inotify,
}

fn priority_rank(priority: Priority) -> i64 {
    match priority {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Critical => 3,
    }
}

fn priority_of(rank: i64) -> Priority {
    match rank {
        0 => Priority::Low,
        2 => Priority::High,
        3 => Priority::Critical,
        _ => Priority::Normal,
    }
}

fn json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn job_of(row: &Row<'_>) -> rusqlite::Result<Job> {
    let opt_time = |i: usize| row.get::<_, Option<i64>>(i).map(|v| v.map(rfc3339));
    Ok(Job {
        id: row.get(0)?,
        job_type: row.get(1)?,
        target: row.get(2)?,
        payload: json(Some(row.get(3)?)).unwrap_or(serde_json::Value::Null),
        status: JobStatus::parse(&row.get::<_, String>(4)?).unwrap_or(JobStatus::Queued),
        priority: priority_of(row.get(5)?),
        attempts: row.get(6)?,
        max_attempts: row.get(7)?,
        created_at: rfc3339(row.get(8)?),
        updated_at: rfc3339(row.get(9)?),
        scheduled_at: opt_time(10)?,
        started_at: opt_time(11)?,
        finished_at: opt_time(12)?,
        worker_id: row.get(13)?,
        progress: json(row.get(14)?),
        result: json(row.get(15)?),
        error: row.get(16)?,
        metadata: json(Some(row.get(17)?)).unwrap_or_default(),
        input: json(row.get(18)?),
        output: json(row.get(19)?),
        parents: json(Some(row.get(20)?)).unwrap_or_default(),
        condition: row.get(21)?,
    })
}

/// Releases `waiting` jobs whose parents have all ended: queued, or skipped with the reason
/// ([`release_verdict`]).
fn release_waiting(tx: &rusqlite::Transaction<'_>, now: i64) -> rusqlite::Result<()> {
    let waiting: Vec<(String, String)> = tx
        .prepare_cached("SELECT id, parents FROM jobs WHERE status = 'waiting' ORDER BY seq LIMIT 1000")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut parent_of = tx.prepare_cached("SELECT status, condition FROM jobs WHERE id = ?")?;
    for (id, parents) in waiting {
        let parents: Vec<String> = serde_json::from_str(&parents).unwrap_or_default();
        let mut seen = Vec::with_capacity(parents.len());
        for parent in &parents {
            let found: Option<(String, Option<bool>)> =
                parent_of.query_row([parent], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            let (status, condition) = found.map_or((None, None), |(s, c)| (JobStatus::parse(&s), c));
            seen.push((parent.as_str(), status, condition));
        }
        match release_verdict(seen) {
            None => {}
            Some(None) => {
                tx.execute(
                    "UPDATE jobs SET status = 'queued', updated_at = ?1 WHERE id = ?2",
                    params![now, id],
                )?;
            }
            Some(Some(reason)) => {
                tx.execute(
                    "UPDATE jobs SET status = 'skipped', error = ?1, finished_at = ?2, updated_at = ?2 WHERE id = ?3",
                    params![reason, now, id],
                )?;
            }
        }
    }
    Ok(())
}

/// The condition of an orphaned job (`?1` is now, `?2…` the dead workers).
fn orphaned(dead_workers: usize) -> String {
    let dead = if dead_workers == 0 {
        String::new()
    } else {
        let list: Vec<String> = (2..2 + dead_workers).map(|i| format!("?{i}")).collect();
        format!(" OR worker_id IN ({})", list.join(", "))
    };
    format!("status IN ('running', 'cancelling') AND (lease_until < ?1{dead})")
}

fn orphan_params(now: i64, dead_workers: &[String]) -> Vec<rusqlite::types::Value> {
    let mut values: Vec<rusqlite::types::Value> = vec![now.into()];
    values.extend(dead_workers.iter().map(|w| w.clone().into()));
    values
}

/// Returns orphaned jobs to the queue (dead with no attempt left, cancelled when a cancel was pending).
fn requeue(
    tx: &rusqlite::Transaction<'_>,
    now: i64,
    dead_workers: &[String],
) -> rusqlite::Result<Vec<String>> {
    let sql = format!(
        "UPDATE jobs SET status = CASE WHEN status = 'cancelling' THEN 'cancelled' \
         WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
         finished_at = CASE WHEN status = 'cancelling' OR attempts >= max_attempts THEN ?1 END, \
         error = 'its worker stopped renewing the lease', worker_id = NULL, lease_until = NULL, updated_at = ?1 \
         WHERE {} RETURNING id",
        orphaned(dead_workers.len())
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    stmt.query_map(params_from_iter(orphan_params(now, dead_workers)), |r| r.get(0))?.collect()
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl EmbeddedStore {
    /// Opens (creating when needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// Opens the store at `path`, reading the time from `clock`.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let fail = |e: &dyn std::fmt::Display| StoreError::Backend {
            store: path.display().to_string(),
            detail: e.to_string(),
        };
        // A store already at this layout opens without writing anything (no lock, no schema statements, no
        // version written): a read-only command costs the same whatever the store holds.
        if path.exists()
            && let Some(conn) = Self::current(path)
        {
            return Ok(Self {
                path: path.to_path_buf(),
                conn: Mutex::new(conn),
                clock,
                wake: Mutex::new(None),
            });
        }
        if let Some(dir) = path.parent() {
            crate::state::create_private_dir_all(dir).map_err(|e| fail(&e))?;
        }
        // Two commands opening a new store at once (a worker and an `enqueue`) would race to switch it to WAL and
        // create its tables, and one would get "database is locked": opening is one at a time.
        let lock_path = path.with_extension("sqlite3.lock");
        let _opening = crate::state::FileLock::acquire(&lock_path).map_err(|e| fail(&e))?;
        // Jobs hold payloads and logs: the file is the user's alone, and SQLite gives its `-wal` and `-shm` files
        // the database file's mode.
        {
            use std::os::unix::fs::PermissionsExt as _;
            crate::state::open_private_append(path).map_err(|e| fail(&e))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| fail(&e))?;
        }
        let mut conn = Connection::open(path).map_err(|e| fail(&e))?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(|e| fail(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| fail(&e))?;
        Self::tune(&conn).map_err(|e| fail(&e))?;
        conn.execute_batch(SCHEMA).map_err(|e| fail(&e))?;
        migrate(&mut conn, clock.now_ms()).map_err(|e| fail(&e))?;
        conn.execute_batch(WAITING_INDEX).map_err(|e| fail(&e))?;
        conn.pragma_update(None, "user_version", super::store::STORE_SCHEMA).map_err(|e| fail(&e))?;
        Ok(Self { path: path.to_path_buf(), conn: Mutex::new(conn), clock, wake: Mutex::new(None) })
    }

    /// Watches the store's directory for writes; `None` when inotify is not available (the wait then sleeps).
    fn watch(&self) -> Option<Wake> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        inotify
            .add_watch(dir, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
            .ok()?;
        Some(Wake { inotify })
    }

    /// A connection to the store at `path` when it is already in WAL mode at [`STORE_SCHEMA`] (read, not written),
    /// its file the user's alone; `None` when it needs the full open.
    fn current(path: &Path) -> Option<Connection> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        if meta.mode() & 0o077 != 0 {
            return None;
        }
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(Duration::from_secs(30)).ok()?;
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).ok()?;
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).ok()?;
        if version != super::store::STORE_SCHEMA || !mode.eq_ignore_ascii_case("wal") {
            return None;
        }
        Self::tune(&conn).ok()?;
        Some(conn)
    }

    /// Per-connection settings (nothing written to the file).
    fn tune(conn: &Connection) -> rusqlite::Result<()> {
        conn.pragma_update(None, "synchronous", "NORMAL")
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn fail(&self, e: &rusqlite::Error) -> StoreError {
        StoreError::Backend { store: self.path.display().to_string(), detail: e.to_string() }
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.fail(&e))?;
        let value = f(&tx).map_err(|e| self.fail(&e))?;
        tx.commit().map_err(|e| self.fail(&e))?;
        Ok(value)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&conn).map_err(|e| self.fail(&e))
    }

    fn status_of(&self, id: &str) -> Result<JobStatus, StoreError> {
        let status: Option<String> = self
            .read(|c| c.query_row("SELECT status FROM jobs WHERE id = ?", [id], |r| r.get(0)).optional())?;
        status.and_then(|s| JobStatus::parse(&s)).ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }
}

/// Claims up to `max` due jobs for `worker` under a lease of `lease` from `now`, in `tx`: see [`JobStore::claim`].
fn claim_in(
    tx: &rusqlite::Transaction<'_>,
    now: i64,
    worker: &str,
    types: &[String],
    max: usize,
    lease: Duration,
) -> rusqlite::Result<Vec<Job>> {
    let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    // Leases that ran out: the worker died; the job goes back (or is dead with no attempt left).
    requeue(tx, now, &[])?;
    tx.prepare_cached(
        "UPDATE jobs INDEXED BY jobs_scheduled SET status = 'queued', updated_at = ?1 WHERE status = 'scheduled' AND scheduled_at <= ?1",
    )?
    .execute([now])?;
    release_waiting(tx, now)?;
    let filter = if types.is_empty() {
        String::new()
    } else {
        format!(" AND type IN ({})", placeholders(types.len()))
    };
    // The queue's own index, in claim order: SQLite would otherwise pick `jobs_status` and sort every queued
    // job on each claim (a cost growing with the queue).
    let sql = format!(
        "UPDATE jobs SET status = 'running', worker_id = ?, lease_until = ?, attempts = attempts + 1, \
         started_at = ?, updated_at = ?, progress = NULL \
         WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_queued WHERE status = 'queued'{filter} ORDER BY priority DESC, seq LIMIT ?) \
         RETURNING {COLUMNS}, seq"
    );
    let mut values: Vec<rusqlite::types::Value> =
        vec![worker.to_owned().into(), until.into(), now.into(), now.into()];
    values.extend(types.iter().map(|t| t.clone().into()));
    values.push(i64::try_from(max).unwrap_or(i64::MAX).into());
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut claimed: Vec<(i64, i64, Job)> = stmt
        .query_map(params_from_iter(values), |row| {
            Ok((priority_rank(priority_of(row.get(5)?)), row.get(22)?, job_of(row)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    claimed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(claimed.into_iter().map(|(_, _, job)| job).collect())
}

/// Records how `worker`'s attempts ended, in `tx`: see [`JobStore::finish`].
fn finish_in(
    tx: &rusqlite::Transaction<'_>,
    now: i64,
    worker: &str,
    results: &[(String, Finish)],
) -> rusqlite::Result<usize> {
    let mut done = 0;
    for (id, finish) in results {
        let held: Option<(i64, i64, String)> = tx
            .prepare_cached(
                "SELECT attempts, max_attempts, status FROM jobs WHERE id = ? AND worker_id = ? AND status IN ('running', 'cancelling')",
            )?
            .query_row(
                params![id, worker],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((attempts, max_attempts, status)) = held else { continue };
        // A cancel asked for while the attempt ran stops any retry.
        let cancelling = status == "cancelling";
        done += match finish {
            Finish::Succeeded(result) => tx.prepare_cached(
                "UPDATE jobs SET status = 'succeeded', result = ?, error = NULL, finished_at = ?, updated_at = ?, lease_until = NULL WHERE id = ?",
            )?.execute(
                params![result.to_string(), now, now, id],
            )?,
            Finish::Cancelled => tx.prepare_cached(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, updated_at = ?, lease_until = NULL WHERE id = ?",
            )?.execute(
                params![now, now, id],
            )?,
            Finish::Failed { error, retry } if *retry && attempts < max_attempts && !cancelling => {
                let pause = backoff(u32::try_from(attempts).unwrap_or(1), u64::try_from(now).unwrap_or(0) ^ id.len() as u64);
                let due = now + i64::try_from(pause.as_millis()).unwrap_or(0);
                tx.prepare_cached(
                    "UPDATE jobs SET status = 'scheduled', scheduled_at = ?, error = ?, updated_at = ?, worker_id = NULL, lease_until = NULL WHERE id = ?",
                )?.execute(
                    params![due, error, now, id],
                )?
            }
            Finish::Failed { error, retry } => tx.prepare_cached(
                "UPDATE jobs SET status = ?, error = ?, finished_at = ?, updated_at = ?, lease_until = NULL WHERE id = ?",
            )?.execute(
                params![
                    match (*retry, cancelling && attempts < max_attempts) {
                        (true, true) => "cancelled",
                        (true, false) => "dead",
                        (false, _) => "failed",
                    },
                    error,
                    now,
                    now,
                    id
                ],
            )?,
        };
    }
    Ok(done)
}

impl JobStore for EmbeddedStore {
    /// Returns as soon as the store's `-wal` file (or the database file) is written — by an enqueue, a cancel, a
    /// retry, another worker's finish —, or after `timeout`. The worker's own writes (its heartbeat, its finishes)
    /// wake it too, once each: it then claims nothing and waits again, and a claim that finds nothing writes
    /// nothing, so an idle worker does not spin.
    fn wait_for_work(&self, timeout: Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd as _;
        let deadline = std::time::Instant::now() + timeout;
        let mut wake = self.wake.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if wake.is_none() {
            *wake = self.watch();
        }
        let Some(wake) = wake.as_ref() else {
            return std::thread::sleep(timeout);
        };
        let ours = self.path.file_name().map(std::ffi::OsStr::to_owned).unwrap_or_default();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let mut fds = [PollFd::new(wake.inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)) {
                Ok(0) => return,
                Ok(_) => {
                    // Other files of the directory (the run's state, its events) are not the store's.
                    let events = wake.inotify.read_events().unwrap_or_default();
                    if events.iter().any(|e| {
                        e.name
                            .as_ref()
                            .is_some_and(|n| n.as_encoded_bytes().starts_with(ours.as_encoded_bytes()))
                    }) {
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return std::thread::sleep(left),
            }
        }
    }

    fn vacuum(&self) -> Result<(), StoreError> {
        self.read(|c| c.execute_batch("VACUUM"))
    }

    fn enqueue(&self, jobs: &[NewJob]) -> Result<Vec<String>, StoreError> {
        let targets = jobs.iter().map(NewJob::resolved_target).collect::<Result<Vec<_>, _>>()?;
        let now = self.now_ms();
        self.write(|tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO jobs (id, type, target, payload, status, priority, max_attempts, created_at, updated_at, scheduled_at, input, parents) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?;
            // Every parent must exist; nothing is written otherwise.
            for parent in jobs.iter().flat_map(|job| &job.after) {
                let known: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?)", [parent], |r| r.get(0))?;
                if !known {
                    return Ok(Err(StoreError::NotFound(parent.clone())));
                }
            }
            let mut ids = Vec::with_capacity(jobs.len());
            for (job, target) in jobs.iter().zip(targets) {
                let id = new_id();
                let due = job.delay.map(|d| now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                let status = if !job.after.is_empty() { "waiting" } else if due.is_some() { "scheduled" } else { "queued" };
                insert.execute(params![
                    id,
                    job.job_type,
                    target,
                    job.payload.to_string(),
                    status,
                    priority_rank(job.priority),
                    job.max_attempts.max(1),
                    now,
                    now,
                    due,
                    job.input.as_ref().map(serde_json::Value::to_string),
                    serde_json::to_string(&job.after).unwrap_or_else(|_| "[]".into())
                ])?;
                ids.push(id);
            }
            Ok(Ok(ids))
        })?
    }

    fn claim(
        &self,
        worker: &str,
        types: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        let now = self.now_ms();
        self.write(|tx| claim_in(tx, now, worker, types, max, lease))
    }

    fn release(&self, worker: &str, jobs: &[String]) -> Result<usize, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let now = self.now_ms();
        self.write(|tx| {
            let mut values: Vec<rusqlite::types::Value> = vec![now.into(), worker.to_owned().into()];
            values.extend(jobs.iter().map(|j| j.clone().into()));
            // Every SET reads the row as it was: `status` is still the claimed one on the right-hand side.
            tx.execute(
                &format!(
                    "UPDATE jobs SET status = CASE WHEN status = 'cancelling' THEN 'cancelled' ELSE 'queued' END, \
                     finished_at = CASE WHEN status = 'cancelling' THEN ?1 END, attempts = attempts - 1, \
                     started_at = NULL, worker_id = NULL, lease_until = NULL, updated_at = ?1 \
                     WHERE worker_id = ?2 AND status IN ('running', 'cancelling') AND id IN ({})",
                    placeholders(jobs.len())
                ),
                params_from_iter(values),
            )
        })
    }

    fn heartbeat(&self, worker: &str, jobs: &[String], lease: Duration) -> Result<Vec<String>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let until = self.now_ms() + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.write(|tx| {
            let list = placeholders(jobs.len());
            let mut values: Vec<rusqlite::types::Value> = vec![until.into(), worker.to_owned().into()];
            values.extend(jobs.iter().map(|j| j.clone().into()));
            tx.execute(
                &format!("UPDATE jobs SET lease_until = ? WHERE worker_id = ? AND status IN ('running', 'cancelling') AND id IN ({list})"),
                params_from_iter(values.iter()),
            )?;
            let mut stmt =
                tx.prepare(&format!("SELECT id FROM jobs WHERE worker_id = ? AND status = 'cancelling' AND id IN ({list})"))?;
            stmt.query_map(params_from_iter(values[1..].iter()), |r| r.get(0))?.collect()
        })
    }

    fn finish(&self, worker: &str, results: &[(String, Finish)]) -> Result<usize, StoreError> {
        let now = self.now_ms();
        self.write(|tx| finish_in(tx, now, worker, results))
    }

    fn finish_and_claim(
        &self,
        worker: &str,
        results: &[(String, Finish)],
        types: &[String],
        max: usize,
        lease: Duration,
    ) -> Result<(usize, Vec<Job>), StoreError> {
        // One transaction, so one commit, for both.
        let now = self.now_ms();
        self.write(|tx| {
            Ok((finish_in(tx, now, worker, results)?, claim_in(tx, now, worker, types, max, lease)?))
        })
    }

    fn progress(&self, id: &str, progress: &JobProgress) -> Result<(), StoreError> {
        let text = serde_json::to_string(progress).unwrap_or_default();
        self.write(|tx| {
            tx.execute(
                "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ?",
                params![text, self.now_ms(), id],
            )
            .map(|_| ())
        })
    }

    fn log(&self, id: &str, lines: &[String]) -> Result<(), StoreError> {
        let now = self.now_ms();
        self.write(|tx| {
            let Some(seq): Option<i64> = tx.query_row("SELECT seq FROM jobs WHERE id = ?", [id], |r| r.get(0)).optional()? else {
                return Ok(());
            };
            let mut insert = tx.prepare_cached("INSERT INTO job_logs (job_seq, at, line) VALUES (?, ?, ?)")?;
            for line in lines {
                insert.execute(params![seq, now, line])?;
            }
            tx.execute(
                "DELETE FROM job_logs WHERE job_seq = ?1 AND rowid NOT IN (SELECT rowid FROM job_logs WHERE job_seq = ?1 ORDER BY rowid DESC LIMIT ?2)",
                params![seq, LOG_LINES_KEPT],
            )?;
            Ok(())
        })
    }

    fn get(&self, id: &str) -> Result<Job, StoreError> {
        let job = self.read(|c| {
            c.query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?"), [id], job_of).optional()
        })?;
        job.ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    fn logs(&self, id: &str, skip: usize) -> Result<Vec<JobLogLine>, StoreError> {
        self.get(id)?;
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT l.at, l.line FROM job_logs l JOIN jobs j ON j.seq = l.job_seq WHERE j.id = ? ORDER BY l.rowid LIMIT -1 OFFSET ?",
            )?;
            stmt.query_map(params![id, i64::try_from(skip).unwrap_or(0)], |r| Ok(JobLogLine { at: rfc3339(r.get(0)?), line: r.get(1)? }))?
                .collect()
        })
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<Job>, StoreError> {
        let mut conditions = Vec::new();
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(status) = filter.status {
            conditions.push("status = ?");
            values.push(status.as_str().to_owned().into());
        }
        if let Some(t) = &filter.job_type {
            conditions.push("type = ?");
            values.push(t.clone().into());
        }
        if let Some(t) = &filter.target {
            conditions.push("target = ?");
            values.push(t.clone().into());
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        values.push(i64::try_from(filter.limit.max(1)).unwrap_or(i64::MAX).into());
        values.push(i64::try_from(filter.offset).unwrap_or(0).into());
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs{filter_sql} ORDER BY seq DESC LIMIT ? OFFSET ?"
            ))?;
            stmt.query_map(params_from_iter(values), job_of)?.collect()
        })
    }

    fn cancel(&self, id: &str) -> Result<JobStatus, StoreError> {
        let status = self.status_of(id)?;
        let next = match status {
            JobStatus::Waiting | JobStatus::Queued | JobStatus::Scheduled => JobStatus::Cancelled,
            JobStatus::Running | JobStatus::Cancelling => JobStatus::Cancelling,
            done => {
                return Err(StoreError::State {
                    id: id.to_owned(),
                    status: done.as_str(),
                    what: "it has already finished".into(),
                });
            }
        };
        let now = self.now_ms();
        let changed = self.write(|tx| {
            tx.execute(
                "UPDATE jobs SET status = ?, updated_at = ?, finished_at = CASE WHEN ? = 'cancelled' THEN ? END WHERE id = ? AND status = ?",
                params![next.as_str(), now, next.as_str(), now, id, status.as_str()],
            )
        })?;
        if changed == 0 { self.cancel(id) } else { Ok(next) }
    }

    fn retry(&self, id: &str) -> Result<(), StoreError> {
        let status = self.status_of(id)?;
        if !matches!(status, JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled) {
            return Err(StoreError::State {
                id: id.to_owned(),
                status: status.as_str(),
                what: "only failed, dead or cancelled jobs can be retried".into(),
            });
        }
        let now = self.now_ms();
        self.write(|tx| {
            tx.execute(
                "UPDATE jobs SET status = 'queued', attempts = 0, error = NULL, result = NULL, output = NULL, condition = NULL, finished_at = NULL, worker_id = NULL, updated_at = ? WHERE id = ?",
                params![now, id],
            )
            .map(|_| ())
        })
    }

    fn stats(&self) -> Result<JobStats, StoreError> {
        let now = self.now_ms();
        self.read(|c| {
            let mut stats = JobStats {
                schema_version: SCHEMA_VERSION,
                waiting: 0,
                queued: 0,
                scheduled: 0,
                running: 0,
                succeeded: 0,
                failed: 0,
                cancelled: 0,
                dead: 0,
                skipped: 0,
                finished_last_minute: 0,
                finished_last_hour: 0,
                mean_run_ms: None,
                success_rate: None,
                start_latency_p50_ms: None,
                start_latency_p99_ms: None,
                workers: Vec::new(),
            };
            // Counts and the last hour's figures come from the aggregates the triggers keep, not from the jobs.
            let mut stmt = c.prepare("SELECT status, n FROM job_counts")?;
            for entry in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
                let (name, tally) = entry?;
                let n = count(tally);
                match JobStatus::parse(&name) {
                    Some(JobStatus::Queued) => stats.queued += n,
                    Some(JobStatus::Scheduled) => stats.scheduled += n,
                    Some(JobStatus::Running | JobStatus::Cancelling) => stats.running += n,
                    Some(JobStatus::Succeeded) => stats.succeeded += n,
                    Some(JobStatus::Failed) => stats.failed += n,
                    Some(JobStatus::Cancelled) => stats.cancelled += n,
                    Some(JobStatus::Dead) => stats.dead += n,
                    Some(JobStatus::Waiting) => stats.waiting += n,
                    Some(JobStatus::Skipped) => stats.skipped += n,
                    None => {}
                }
            }
            let first_minute = (now - 3_600_000).div_euclid(60_000);
            // The last minute: its whole seconds from `job_seconds`, the jobs of the second it starts in counted.
            let cut = now - 60_000;
            let first_second = cut.div_euclid(1000) + 1;
            let minute: i64 = c.query_row(
                "SELECT (SELECT COALESCE(sum(n), 0) FROM job_seconds WHERE second >= ?1) + \
                 (SELECT count(*) FROM jobs WHERE finished_at >= ?2 AND finished_at < ?3)",
                params![first_second, cut, first_second * 1000],
                |r| r.get(0),
            )?;
            let (hour, ok, run_n, run_ms): (i64, i64, i64, i64) = c.query_row(
                "SELECT COALESCE(sum(finished), 0), COALESCE(sum(succeeded), 0), COALESCE(sum(run_n), 0), \
                 COALESCE(sum(run_ms), 0) FROM job_minutes WHERE minute >= ?1",
                [first_minute],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            stats.finished_last_minute = count(minute);
            stats.finished_last_hour = count(hour);
            #[allow(clippy::cast_precision_loss)]
            let mean = (run_n > 0).then(|| run_ms as f64 / run_n as f64);
            stats.mean_run_ms = mean;
            #[allow(clippy::cast_precision_loss)]
            let rate = (hour > 0).then(|| ok as f64 / hour as f64);
            stats.success_rate = rate;
            let mut stmt = c.prepare(
                "SELECT bin, sum(n) FROM job_latency WHERE minute >= ?1 GROUP BY bin",
            )?;
            #[allow(clippy::cast_precision_loss)]
            let bins: Vec<(f64, u64)> = stmt
                .query_map([first_minute], |r| Ok((r.get::<_, i64>(0)? as f64, count(r.get(1)?))))?
                .collect::<rusqlite::Result<_>>()?;
            (stats.start_latency_p50_ms, stats.start_latency_p99_ms) = histogram_percentiles(bins);
            let mut stmt = c.prepare(
                "SELECT id, started_at, heartbeat_at, running, COALESCE(stale_at, heartbeat_at + ?1) FROM workers \
                 WHERE COALESCE(stale_at, heartbeat_at + ?1) >= ?2 ORDER BY id",
            )?;
            stats.workers = stmt
                .query_map(params![millis(DEFAULT_STALE_AFTER), now - millis(GONE_WORKERS_LISTED)], |r| {
                    let (worker_state, running) = liveness(now, r.get(4)?, r.get(3)?);
                    Ok(WorkerInfo {
                        id: r.get(0)?,
                        started_at: rfc3339(r.get(1)?),
                        heartbeat_at: rfc3339(r.get(2)?),
                        state: worker_state,
                        running,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(stats)
        })
    }

    fn pending(&self, types: &[String]) -> Result<bool, StoreError> {
        let filter = if types.is_empty() {
            String::new()
        } else {
            format!(" AND type IN ({})", placeholders(types.len()))
        };
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE status IN ('waiting', 'queued', 'scheduled', 'running', 'cancelling'){filter})"
        );
        self.read(|c| c.query_row(&sql, params_from_iter(types.iter()), |r| r.get(0)))
    }

    fn purge(&self, older_than: Option<Duration>, dead: bool) -> Result<u64, StoreError> {
        let cutoff = older_than.map(|d| self.now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.write(|tx| {
            let mut removed = 0;
            if let Some(cutoff) = cutoff {
                removed += tx.execute(
                    "DELETE FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled', 'dead', 'skipped') AND finished_at <= ?",
                    [cutoff],
                )?;
            }
            if dead {
                removed += tx.execute("DELETE FROM jobs WHERE status = 'dead'", [])?;
            }
            tx.execute("DELETE FROM job_logs WHERE job_seq NOT IN (SELECT seq FROM jobs)", [])?;
            Ok(removed as u64)
        })
    }

    fn worker_heartbeat(
        &self,
        worker: &str,
        running: Option<u32>,
        stale_after: Duration,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let stale_at = now.saturating_add(millis(stale_after));
        self.write(|tx| {
            match running {
                Some(n) => tx.execute(
                    "INSERT INTO workers (id, started_at, heartbeat_at, running, stale_at) VALUES (?1, ?2, ?2, ?3, ?4) \
                     ON CONFLICT(id) DO UPDATE SET heartbeat_at = ?2, running = ?3, stale_at = ?4",
                    params![worker, now, n, stale_at],
                )?,
                None => tx.execute("DELETE FROM workers WHERE id = ?", [worker])?,
            };
            Ok(())
        })
    }

    fn orphans(&self, dead_workers: &[String]) -> Result<Vec<Job>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE {} ORDER BY seq", orphaned(dead_workers.len()));
        let values = orphan_params(self.now_ms(), dead_workers);
        self.read(|c| c.prepare(&sql)?.query_map(params_from_iter(values), job_of)?.collect())
    }

    fn requeue_orphans(&self, dead_workers: &[String]) -> Result<Vec<String>, StoreError> {
        let now = self.now_ms();
        self.write(|tx| requeue(tx, now, dead_workers))
    }

    fn forget_workers(&self, workers: &[String]) -> Result<usize, StoreError> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached("DELETE FROM workers WHERE id = ?")?;
            workers.iter().map(|w| stmt.execute([w])).sum()
        })
    }

    fn oldest_queued_age(&self) -> Result<Option<Duration>, StoreError> {
        let now = self.now_ms();
        let since: Option<i64> = self.read(|c| {
            c.query_row(
                "SELECT min(max(created_at, COALESCE(scheduled_at, 0))) FROM jobs WHERE status = 'queued'",
                [],
                |r| r.get(0),
            )
        })?;
        Ok(since.map(|t| Duration::from_millis(u64::try_from(now - t).unwrap_or(0))))
    }

    fn schema_version(&self) -> Result<u32, StoreError> {
        self.read(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
    }

    fn set_output(&self, id: &str, output: &serde_json::Value) -> Result<(), StoreError> {
        self.set_column(id, "output", &output.to_string())
    }

    fn set_condition(&self, id: &str, condition: bool) -> Result<(), StoreError> {
        self.set_column(id, "condition", &condition)
    }

    fn var_get(&self, target: Option<&str>, key: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT value FROM variables WHERE target = ? AND key = ?")?
                .query_row(params![target.unwrap_or(""), key], |r| r.get(0))
                .optional()
        })
    }

    fn var_set(&self, target: Option<&str>, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO variables (target, key, value) VALUES (?1, ?2, ?3) ON CONFLICT(target, key) DO UPDATE SET value = ?3",
            )?
            .execute(params![target.unwrap_or(""), key, value])
            .map(|_| ())
        })
    }

    fn var_delete(&self, target: Option<&str>, key: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM variables WHERE target = ? AND key = ?",
                params![target.unwrap_or(""), key],
            )
            .map(|n| n > 0)
        })
    }

    fn var_incr(&self, target: Option<&str>, key: &str, by: i64) -> Result<i64, StoreError> {
        let target = target.unwrap_or("");
        self.write(|tx| {
            let current: Option<String> = tx
                .query_row("SELECT value FROM variables WHERE target = ? AND key = ?", params![target, key], |r| r.get(0))
                .optional()?;
            let Some(next) = current.as_deref().map_or(Some(0), |v| v.trim().parse::<i64>().ok()).and_then(|n| n.checked_add(by)) else {
                return Ok(Err(StoreError::Variable { key: key.to_owned(), detail: format!("its value {current:?} is not a whole number, or the sum overflows") }));
            };
            tx.execute(
                "INSERT INTO variables (target, key, value) VALUES (?1, ?2, ?3) ON CONFLICT(target, key) DO UPDATE SET value = ?3",
                params![target, key, next.to_string()],
            )?;
            Ok(Ok(next))
        })?
    }

    fn var_list(&self) -> Result<Vec<Variable>, StoreError> {
        self.read(|c| {
            c.prepare("SELECT target, key, value FROM variables ORDER BY target, key")?
                .query_map([], |r| {
                    let target: String = r.get(0)?;
                    Ok(Variable {
                        target: (!target.is_empty()).then_some(target),
                        key: r.get(1)?,
                        value: r.get(2)?,
                    })
                })?
                .collect()
        })
    }
}

impl EmbeddedStore {
    /// Sets one column of job `id` (a fixed name, never user input); `NotFound` when there is no such job.
    fn set_column(&self, id: &str, column: &str, value: &dyn rusqlite::ToSql) -> Result<(), StoreError> {
        let now = self.now_ms();
        let changed = self.write(|tx| {
            tx.execute(
                &format!("UPDATE jobs SET {column} = ?1, updated_at = ?2 WHERE id = ?3"),
                params![value, now, id],
            )
        })?;
        if changed == 0 { Err(StoreError::NotFound(id.to_owned())) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use envctl_contracts::jobs::WorkerState;

    use super::*;
    use crate::jobs::ManualClock;

    #[test]
    fn a_store_of_an_older_envctl_gains_the_runtime_api_columns_and_keeps_its_jobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.sqlite3");
        {
            let old = Connection::open(&path).expect("open");
            old.execute_batch(
                "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, \
                 target TEXT, payload TEXT NOT NULL, status TEXT NOT NULL, priority INTEGER NOT NULL, \
                 attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, created_at INTEGER NOT NULL, \
                 updated_at INTEGER NOT NULL, scheduled_at INTEGER, started_at INTEGER, finished_at INTEGER, \
                 worker_id TEXT, lease_until INTEGER, progress TEXT, result TEXT, error TEXT, metadata TEXT NOT NULL DEFAULT '{}');
                 INSERT INTO jobs (id, type, payload, status, priority, max_attempts, created_at, updated_at) \
                 VALUES ('old', 'noop', '{}', 'queued', 1, 3, 1, 1);",
            )
            .expect("old schema");
        }
        let store = EmbeddedStore::open(&path).expect("open migrates");
        let old = store.get("old").expect("the old job");
        assert_eq!((old.input, old.output, old.parents, old.condition), (None, None, Vec::new(), None));
        assert_eq!(store.claim("w", &[], 5, Duration::from_secs(30)).expect("claim").len(), 1);
        store.set_output("old", &serde_json::json!(1)).expect("output");
        assert_eq!(store.schema_version().expect("version"), super::super::store::STORE_SCHEMA);
    }

    #[test]
    fn a_store_of_an_older_envctl_gains_worker_staleness_and_its_workers_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.sqlite3");
        let clock = Arc::new(ManualClock::default());
        let now = clock.now_ms();
        {
            let old = Connection::open(&path).expect("open");
            old.execute_batch(
                "CREATE TABLE workers (id TEXT PRIMARY KEY, started_at INTEGER NOT NULL, heartbeat_at INTEGER NOT NULL, running INTEGER NOT NULL);",
            )
            .expect("old schema");
            old.execute("INSERT INTO workers VALUES ('old', ?1, ?1, 2)", [now]).expect("an older worker");
        }
        let store = EmbeddedStore::open_with_clock(&path, clock.clone()).expect("open");
        EmbeddedStore::open_with_clock(&path, clock.clone()).expect("opening again migrates nothing twice");
        let state = || {
            store
                .stats()
                .expect("stats")
                .workers
                .into_iter()
                .map(|w| (w.state, w.running))
                .collect::<Vec<_>>()
        };
        assert_eq!(state(), vec![(WorkerState::Alive, 2)]);
        clock.advance(DEFAULT_STALE_AFTER + Duration::from_millis(1));
        assert_eq!(state(), vec![(WorkerState::Gone, 0)]);
    }
    #[test]
    fn a_store_made_before_the_aggregates_gains_them_from_its_jobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.sqlite3");
        let clock = Arc::new(ManualClock::default());
        let now = clock.now_ms();
        {
            let store = EmbeddedStore::open_with_clock(&path, clock.clone()).expect("open");
            let job = NewJob {
                job_type: "a".into(),
                target: None,
                payload: serde_json::json!({}),
                priority: Priority::Normal,
                max_attempts: 1,
                delay: None,
                input: None,
                after: Vec::new(),
            };
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
            let old = store.conn.lock().expect("conn");
            old.execute_batch(
                "DROP TRIGGER job_counts_insert; DROP TRIGGER job_counts_update; DROP TRIGGER job_counts_delete; \
                 DROP TRIGGER job_minutes_unfinish; DROP TRIGGER job_minutes_finish; DROP TRIGGER job_minutes_delete; \
                 DROP TABLE job_counts; DROP TABLE job_minutes; DROP TABLE job_latency; DROP TABLE job_seconds; DROP INDEX jobs_status; \
                 PRAGMA user_version = 3;",
            )
            .expect("the layout before schema 4");
            old.execute("UPDATE jobs SET finished_at = ?1 WHERE finished_at IS NOT NULL", [now])
                .expect("finished now");
        }
        let store = EmbeddedStore::open_with_clock(&path, clock).expect("open migrates");
        let stats = store.stats().expect("stats");
        assert_eq!((stats.queued, stats.running, stats.succeeded, stats.finished_last_hour), (1, 1, 1, 1));
        assert_eq!(stats.success_rate, Some(1.0));
        let filter = ListFilter { status: Some(JobStatus::Running), limit: 10, ..ListFilter::default() };
        assert_eq!(store.list(&filter).expect("list").len(), 1);
        let plan: String = {
            let conn = store.conn.lock().expect("conn");
            let mut stmt = conn
                .prepare(
                    "EXPLAIN QUERY PLAN SELECT seq FROM jobs WHERE status = 'succeeded' ORDER BY seq DESC \
                     LIMIT 10 OFFSET 900",
                )
                .expect("plan");
            stmt.query_map([], |r| r.get::<_, String>(3))
                .expect("plan")
                .collect::<rusqlite::Result<Vec<_>>>()
                .expect("plan")
                .join(" ")
        };
        assert!(
            plan.contains("jobs_status") && !plan.contains("TEMP B-TREE"),
            "a list by status is read in order from its index: {plan}"
        );
        assert_eq!(store.schema_version().expect("version"), super::super::store::STORE_SCHEMA);
    }

    /// A waiting worker's store, its wait on a thread that reports when it returns.
    fn waiting(store: &Arc<EmbeddedStore>) -> std::sync::mpsc::Receiver<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let store = Arc::clone(store);
        std::thread::spawn(move || {
            store.wait_for_work(Duration::from_secs(120));
            let _ = tx.send(());
        });
        rx
    }

    #[test]
    fn an_enqueue_wakes_a_waiting_worker_and_neither_an_empty_claim_nor_another_file_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.sqlite3");
        let worker = Arc::new(EmbeddedStore::open(&path).expect("open"));
        let other = EmbeddedStore::open(&path).expect("a second connection");
        let woke = waiting(&worker);
        std::thread::sleep(Duration::from_millis(200));
        other.enqueue(&[NewJob::one_attempt("noop")]).expect("enqueue");
        woke.recv_timeout(Duration::from_secs(60)).expect("the enqueue ended a wait of 120 s");
        let claimed = worker.claim("w", &[], 1, Duration::from_secs(30)).expect("claim");
        worker
            .finish("w", &[(claimed[0].id.clone(), Finish::Succeeded(serde_json::Value::Null))])
            .expect("finish");
        // The worker's own claim and finish wake its next wait once (it claims nothing and waits again). Nothing is
        // queued now: a claim finds nothing and writes nothing, so an idle worker does not wake itself and spin,
        // and the run's other files in the same directory are not the store's.
        worker.wait_for_work(Duration::from_secs(60));
        let woke = waiting(&worker);
        std::thread::sleep(Duration::from_millis(200));
        assert!(worker.claim("w", &[], 4, Duration::from_secs(30)).expect("claim").is_empty());
        std::fs::write(dir.path().join("run_state.json"), "{}").expect("another file");
        assert!(
            woke.recv_timeout(Duration::from_millis(700)).is_err(),
            "an empty claim or another file woke the wait"
        );
        other.enqueue(&[NewJob::one_attempt("noop")]).expect("enqueue");
        woke.recv_timeout(Duration::from_secs(60)).expect("the second enqueue ended the wait");
    }
}
