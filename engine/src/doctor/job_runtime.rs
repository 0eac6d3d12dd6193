//! The `job_runtime` gate: the store is reachable and of a known layout; workers heartbeat; orphaned (expired
//! lease) and dead jobs are counted; the oldest queued job is not too old; and a canary `noop` job succeeds when a
//! worker should be running.

use std::time::{Duration, Instant};

use envctl_contracts::config::{JobsBackend, Priority};
use envctl_contracts::jobs::{JobStats, JobStatus, WorkerState};

use super::{Check, Ctx, listing, unconfigured};
use crate::jobs::NewJob;
use crate::jobs::store::STORE_SCHEMA;

/// A queued job older than this makes the gate warn.
const QUEUE_AGE_WARN: Duration = Duration::from_secs(5 * 60);

/// The store as the user reads it: the embedded file's path, or the Redis URL without its password.
pub fn store_label(ctx: &Ctx<'_>) -> String {
    let Ok(settings) = &ctx.settings else { return String::new() };
    match settings.config.jobs.backend {
        JobsBackend::Embedded => settings.paths.scope_dir.join("jobs.sqlite3").display().to_string(),
        JobsBackend::Redis => match crate::plan::job_store(settings) {
            Ok(crate::plan::JobStoreLocation::Managed) => {
                let port = crate::plan::job_server_port(settings).unwrap_or(settings.config.jobs.port);
                format!("the job server envctl runs (redis on port {port})")
            }
            Ok(crate::plan::JobStoreLocation::External(url)) => redact(&url),
            Ok(crate::plan::JobStoreLocation::Embedded) | Err(_) => {
                settings.config.jobs.redis_url.as_deref().map_or_else(|| "redis (no URL)".into(), redact)
            }
        },
    }
}

/// `url` with any password replaced.
pub fn redact(url: &str) -> String {
    crate::state::redact::redact_urls(url)
}

/// Runs `f` with the store, or returns the skip for a store that did not open.
fn with_store(ctx: &Ctx<'_>, f: impl FnOnce(&dyn crate::jobs::JobStore) -> Check) -> Check {
    if let Some(skip) = unconfigured(ctx) {
        return skip;
    }
    match ctx.store() {
        Ok(store) => f(store.as_ref()),
        Err(_) => Check::skip("the job store is not reachable"),
    }
}

/// The store opens (the embedded file, or Redis answering).
pub fn store(ctx: &Ctx<'_>) -> Check {
    if let Some(skip) = unconfigured(ctx) {
        return skip;
    }
    let label = store_label(ctx);
    let started = Instant::now();
    let opened = ctx.store().map(|s| s.stats().map(|_| ()));
    let ms = format!("{:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    let error = match opened {
        Ok(Ok(())) => {
            return Check::pass(format!("{label} answers ({ms})")).with("store", &label).with("latency", ms);
        }
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_owned(),
    };
    let first = error.lines().next().unwrap_or_default().replace(&store_url(ctx), &label);
    Check::fail(
        format!("the job store is not reachable: {first}"),
        "start the store (`redis-server`, or check [jobs].redis_url with `envctl show-config`), or set [jobs] backend = \"embedded\"",
    )
    .with("store", label)
}

fn store_url(ctx: &Ctx<'_>) -> String {
    ctx.settings.as_ref().ok().and_then(|s| s.config.jobs.redis_url.clone()).unwrap_or_else(|| "\u{0}".into())
}

/// The store's layout is one this envctl knows.
pub fn schema(ctx: &Ctx<'_>) -> Check {
    with_store(ctx, |store| match store.schema_version() {
        Ok(v) if v <= STORE_SCHEMA => {
            Check::pass(format!("store layout {v} (this envctl writes {STORE_SCHEMA})")).with("version", v)
        }
        Ok(v) => Check::fail(
            format!("store layout {v} was written by a newer envctl (this one knows {STORE_SCHEMA})"),
            "use the newer envctl, or point [jobs] at another store",
        )
        .with("version", v),
        Err(e) => {
            Check::fail(format!("the store's layout cannot be read: {}", first_line(&e)), "check the store")
        }
    })
}

/// Workers of this machine whose process is gone (by pid and start time, from their id), and workers the store
/// reports gone.
pub fn dead_workers(stats: &JobStats) -> Vec<String> {
    let here = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    stats
        .workers
        .iter()
        .filter(|w| w.state == WorkerState::Gone || is_dead_here(&w.id, &here))
        .map(|w| w.id.clone())
        .collect()
}

/// Whether `id` (`<host>:<pid>:<start time>`) is a worker of `here` whose process is gone.
fn is_dead_here(id: &str, here: &str) -> bool {
    let mut parts = id.rsplitn(3, ':');
    let (Some(started), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(started), Ok(pid)) = (started.parse::<u64>(), pid.parse::<u32>()) else { return false };
    host == here && !crate::supervisor::proc_info::is_same_process(pid, started)
}

/// Workers heartbeat; gone ones are listed.
pub fn workers(ctx: &Ctx<'_>) -> Check {
    with_store(ctx, |store| {
        let stats = match store.stats() {
            Ok(stats) => stats,
            Err(e) => return Check::fail(format!("no worker list: {}", first_line(&e)), "check the store"),
        };
        let dead = dead_workers(&stats);
        let alive = stats.workers.len() - dead.len();
        if ctx.host_alive() && alive == 0 {
            return Check::warn(
                "the host runs but no worker heartbeats yet (its in-process worker starts after the first start)",
                "run doctor again in a second; if it stays, see the host's log and `envctl restart`",
            );
        }
        if dead.is_empty() {
            return Check::pass(format!("{alive} worker(s) heartbeating")).with("alive", alive);
        }
        Check::warn(
            format!("{} worker(s) gone: {}", dead.len(), listing(&dead)),
            "`envctl doctor --fix` forgets them",
        )
        .with("alive", alive)
        .with("gone", dead.join(", "))
    })
}

/// Running jobs whose worker is gone (lease expired, or its process dead).
pub fn orphans(ctx: &Ctx<'_>) -> Check {
    with_store(ctx, |store| {
        let dead = store.stats().map(|s| dead_workers(&s)).unwrap_or_default();
        match store.orphans(&dead) {
            Ok(jobs) if jobs.is_empty() => Check::pass("no orphaned job"),
            Ok(jobs) => {
                let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
                Check::fail(
                    format!("{} job(s) leased by gone workers: {}", jobs.len(), listing(&ids)),
                    "`envctl doctor --fix` requeues them (a worker claiming work would too, once their leases run out)",
                )
                .with("jobs", ids.join(", "))
                .with("count", jobs.len())
            }
            Err(e) => {
                Check::fail(format!("orphans cannot be counted: {}", first_line(&e)), "check the store")
            }
        }
    })
}

/// Jobs that failed on every attempt.
pub fn dead_jobs(ctx: &Ctx<'_>) -> Check {
    with_store(ctx, |store| {
        match store.stats() {
        Ok(stats) if stats.dead == 0 => Check::pass("no dead job"),
        Ok(stats) => Check::warn(
            format!("{} dead job(s)", stats.dead),
            "`envctl jobs list --status dead` shows them; `envctl jobs retry ID` runs one again, `envctl jobs purge --dead` drops them",
        )
        .with("count", stats.dead),
        Err(e) => Check::fail(format!("no job counts: {}", first_line(&e)), "check the store"),
    }
    })
}

/// The oldest queued job has not waited too long.
pub fn queue_age(ctx: &Ctx<'_>) -> Check {
    with_store(ctx, |store| match store.oldest_queued_age() {
        Ok(None) => Check::pass("nothing waits in the queue"),
        Ok(Some(age)) if age < QUEUE_AGE_WARN => {
            Check::pass(format!("the oldest queued job waits {:.1} s", age.as_secs_f64()))
                .with("age_ms", age.as_millis())
        }
        Ok(Some(age)) => Check::warn(
            format!(
                "the oldest queued job has waited {} s (more than {} s)",
                age.as_secs(),
                QUEUE_AGE_WARN.as_secs()
            ),
            "start a worker (`envctl worker`, or `envctl start` runs one in the host)",
        )
        .with("age_ms", age.as_millis()),
        Err(e) => Check::fail(format!("the queue cannot be read: {}", first_line(&e)), "check the store"),
    })
}

/// A `noop` job enqueued and seen `succeeded` within the timeout, when a worker should be running.
pub fn canary(ctx: &Ctx<'_>) -> Check {
    if !ctx.options.canary {
        return Check::skip("skipped (--no-canary)");
    }
    with_store(ctx, |store| {
        let alive = store.stats().map_or(0, |s| s.workers.len() - dead_workers(&s).len());
        if !ctx.host_alive() && alive == 0 {
            return Check::skip("no worker should be running (nothing is started and no worker heartbeats)");
        }
        let job = NewJob {
            job_type: "noop".into(),
            target: None,
            payload: serde_json::json!({ "canary": "envctl doctor" }),
            priority: Priority::Critical,
            max_attempts: 1,
            delay: None,
            input: None,
            after: Vec::new(),
        };
        let started = Instant::now();
        let id = match store.enqueue(&[job]) {
            Ok(mut ids) => ids.remove(0),
            Err(e) => {
                return Check::fail(
                    format!("the canary cannot be enqueued: {}", first_line(&e)),
                    "check the store",
                );
            }
        };
        let timeout = ctx.options.canary_timeout;
        let mut status = JobStatus::Queued;
        while started.elapsed() < timeout && !(ctx.interrupted)() {
            status = store.get(&id).map_or(status, |j| j.status);
            if status.is_final() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let evidence = |c: Check| c.with("job", &id).with("latency_ms", format!("{ms:.1}"));
        if status == JobStatus::Succeeded {
            return evidence(Check::pass(format!("canary {id} succeeded in {ms:.1} ms")));
        }
        evidence(Check::fail(
            format!("canary {id} is {} after {:.1} s", status.as_str(), ms / 1000.0),
            format!("`envctl jobs show {id}`; the workers may be stuck or gone (`envctl jobs stats`)"),
        ))
    })
}

fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}
