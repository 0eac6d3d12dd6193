//! The job-store conformance suite: the semantics every [`JobStore`] must have, written once and run against
//! each store (the embedded one and a real `redis-server`). Each case gets a store on a [`ManualClock`] and moves
//! time by advancing it, so nothing here sleeps and the timings asserted are exact.

use std::time::Duration;

use envctl_contracts::config::Priority;
use envctl_contracts::jobs::{JobProgress, JobStatus, WorkerState};

use super::clock::{Clock, ManualClock};
use super::store::{Finish, JobStore, ListFilter, NewJob, StoreError};

fn job(kind: &str, priority: Priority) -> NewJob {
    NewJob {
        job_type: kind.into(),
        target: None,
        payload: serde_json::json!({}),
        priority,
        max_attempts: 3,
        delay: None,
        input: None,
        after: Vec::new(),
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// Priority first, then first in, first out.
pub fn priority_then_fifo(store: &dyn JobStore, _clock: &ManualClock) {
    let low = store.enqueue(&[job("a", Priority::Low)]).expect("enqueue");
    let normal = store.enqueue(&[job("a", Priority::Normal), job("a", Priority::Normal)]).expect("enqueue");
    let critical = store.enqueue(&[job("a", Priority::Critical)]).expect("enqueue");
    let order: Vec<String> =
        (0..4).map(|_| store.claim("w", &[], 1, LEASE).expect("claim")[0].id.clone()).collect();
    assert_eq!(order, vec![critical[0].clone(), normal[0].clone(), normal[1].clone(), low[0].clone()]);
    assert!(store.claim("w", &[], 1, LEASE).expect("claim").is_empty());
}

/// Delayed jobs wait until due; type filters are honoured.
pub fn delayed_and_filtered(store: &dyn JobStore, clock: &ManualClock) {
    let mut later = job("a", Priority::Normal);
    later.delay = Some(Duration::from_millis(300));
    let id = store.enqueue(&[later, job("b", Priority::Normal)]).expect("enqueue");
    assert_eq!(store.get(&id[0]).expect("get").status, JobStatus::Scheduled);
    assert!(store.claim("w", &["a".into()], 10, LEASE).expect("claim").is_empty(), "not due yet");
    clock.advance(Duration::from_millis(250));
    assert!(store.claim("w", &["a".into()], 10, LEASE).expect("claim").is_empty(), "still not due");
    clock.advance(Duration::from_millis(100));
    let claimed = store.claim("w", &["a".into()], 10, LEASE).expect("claim");
    assert_eq!(claimed.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), vec![id[0].clone()]);
}

/// A failure is retried with backoff until `max_attempts`, then the job is dead; a permanent failure is final.
pub fn retries_then_dead(store: &dyn JobStore, clock: &ManualClock) {
    let mut flaky = job("a", Priority::Normal);
    flaky.max_attempts = 2;
    let ids = store.enqueue(&[flaky, job("b", Priority::Normal)]).expect("enqueue");
    let first = store.claim("w", &["a".into()], 1, LEASE).expect("claim");
    store
        .finish("w", &[(first[0].id.clone(), Finish::Failed { error: "boom".into(), retry: true })])
        .expect("finish");
    let after = store.get(&ids[0]).expect("get");
    assert_eq!(after.status, JobStatus::Scheduled, "retried later");
    assert_eq!(after.error.as_deref(), Some("boom"));
    assert!(store.claim("w", &["a".into()], 1, LEASE).expect("claim").is_empty(), "backing off");
    // The first pause is 1 s ± 25 %.
    clock.advance(Duration::from_millis(700));
    assert!(store.claim("w", &["a".into()], 1, LEASE).expect("claim").is_empty(), "still backing off");
    clock.advance(Duration::from_millis(600));
    let second = store.claim("w", &["a".into()], 1, LEASE).expect("claim");
    assert_eq!(second[0].attempts, 2);
    store
        .finish("w", &[(second[0].id.clone(), Finish::Failed { error: "boom".into(), retry: true })])
        .expect("finish");
    assert_eq!(store.get(&ids[0]).expect("get").status, JobStatus::Dead);
    let other = store.claim("w", &["b".into()], 1, LEASE).expect("claim");
    store
        .finish("w", &[(other[0].id.clone(), Finish::Failed { error: "bad payload".into(), retry: false })])
        .expect("finish");
    assert_eq!(store.get(&ids[1]).expect("get").status, JobStatus::Failed);
}

/// While a lease is live nobody else gets the job; once it expires the job comes back, attempts counted, and the
/// first worker's late result is ignored.
pub fn leases(store: &dyn JobStore, clock: &ManualClock) {
    let id = store.enqueue(&[job("a", Priority::Normal)]).expect("enqueue")[0].clone();
    assert_eq!(store.claim("w1", &[], 1, Duration::from_millis(300)).expect("claim").len(), 1);
    assert!(store.claim("w2", &[], 1, LEASE).expect("claim").is_empty(), "leased to w1");
    clock.advance(Duration::from_millis(250));
    assert!(store.claim("w2", &[], 1, LEASE).expect("claim").is_empty(), "still leased to w1");
    clock.advance(Duration::from_millis(100));
    let again = store.claim("w2", &[], 1, LEASE).expect("claim");
    assert_eq!((again[0].id.clone(), again[0].attempts), (id.clone(), 2));
    assert_eq!(
        store.finish("w1", &[(id.clone(), Finish::Succeeded(serde_json::json!(1)))]).expect("finish"),
        0,
        "w1 lost it"
    );
    assert_eq!(
        store.heartbeat("w2", std::slice::from_ref(&id), LEASE).expect("heartbeat"),
        Vec::<String>::new()
    );
    assert_eq!(
        store.finish("w2", &[(id.clone(), Finish::Succeeded(serde_json::json!(2)))]).expect("finish"),
        1
    );
    let done = store.get(&id).expect("get");
    assert_eq!((done.status, done.result), (JobStatus::Succeeded, Some(serde_json::json!(2))));
}

/// Cancelling a queued job is immediate; a running one is flagged until its worker reports it cancelled.
pub fn cancellation(store: &dyn JobStore, _clock: &ManualClock) {
    let ids = store.enqueue(&[job("a", Priority::Normal), job("b", Priority::Normal)]).expect("enqueue");
    assert_eq!(store.cancel(&ids[0]).expect("cancel"), JobStatus::Cancelled);
    let running = store.claim("w", &[], 10, LEASE).expect("claim");
    assert_eq!(running.len(), 1, "the cancelled job is never claimed");
    assert_eq!(store.cancel(&ids[1]).expect("cancel"), JobStatus::Cancelling);
    assert_eq!(store.heartbeat("w", &[ids[1].clone()], LEASE).expect("heartbeat"), vec![ids[1].clone()]);
    store.finish("w", &[(ids[1].clone(), Finish::Cancelled)]).expect("finish");
    assert_eq!(store.get(&ids[1]).expect("get").status, JobStatus::Cancelled);
    assert!(store.cancel(&ids[1]).is_err(), "a finished job cannot be cancelled");
    store.retry(&ids[1]).expect("retry");
    assert_eq!(store.get(&ids[1]).expect("get").status, JobStatus::Queued);
    // An attempt that fails (retryably, with attempts left) after its cancel was asked for is not retried.
    assert_eq!(store.claim("w", &[], 1, LEASE).expect("claim").len(), 1);
    assert_eq!(store.cancel(&ids[1]).expect("cancel"), JobStatus::Cancelling);
    store
        .finish("w", &[(ids[1].clone(), Finish::Failed { error: "boom".into(), retry: true })])
        .expect("finish");
    let failed = store.get(&ids[1]).expect("get");
    assert_eq!((failed.status, failed.error.as_deref()), (JobStatus::Cancelled, Some("boom")));
    assert_eq!(store.stats().expect("stats").scheduled, 0, "nothing waits to retry");
}

/// Progress and logs are visible while the job runs; stats count by status; purge removes what it should.
pub fn progress_logs_stats_purge(store: &dyn JobStore, _clock: &ManualClock) {
    let ids = store.enqueue(&[job("a", Priority::Normal), job("a", Priority::Normal)]).expect("enqueue");
    let running = store.claim("w", &[], 1, LEASE).expect("claim");
    let id = running[0].id.clone();
    store
        .progress(&id, &JobProgress { percent: Some(50.0), step: Some("half".into()), detail: None })
        .expect("progress");
    store.log(&id, &["one".into(), "two".into()]).expect("log");
    assert_eq!(store.get(&id).expect("get").progress.and_then(|p| p.percent), Some(50.0));
    let lines: Vec<String> = store.logs(&id, 0).expect("logs").into_iter().map(|l| l.line).collect();
    assert_eq!(lines, vec!["one", "two"]);
    assert_eq!(store.logs(&id, 1).expect("logs").len(), 1);
    store.finish("w", &[(id, Finish::Succeeded(serde_json::Value::Null))]).expect("finish");
    let stats = store.stats().expect("stats");
    assert_eq!((stats.queued, stats.succeeded, stats.finished_last_minute), (1, 1, 1));
    assert!(store.pending(&[]).expect("pending"));
    assert!(!store.pending(&["other".into()]).expect("pending"), "nothing of that type");
    assert_eq!(store.purge(Some(Duration::ZERO), false).expect("purge"), 1);
    assert!(store.get(&ids[0]).is_err() || store.get(&ids[1]).is_err());
}

/// A job's target is the one it was given, else its payload's; a batch with a job naming two targets is refused
/// whole.
pub fn payload_target(store: &dyn JobStore, _clock: &ManualClock) {
    let mut in_payload = job("a", Priority::Normal);
    in_payload.payload = serde_json::json!({ "command": "true", "target": "feat" });
    let mut both = in_payload.clone();
    both.target = Some("feat".into());
    let mut given = job("a", Priority::Normal);
    given.target = Some("main".into());
    let mut not_a_name = job("a", Priority::Normal);
    not_a_name.payload = serde_json::json!({ "target": 7 });
    let ids = store
        .enqueue(&[in_payload.clone(), both, given, job("a", Priority::Normal), not_a_name])
        .expect("enqueue");
    let targets: Vec<Option<String>> = ids.iter().map(|id| store.get(id).expect("get").target).collect();
    assert_eq!(targets, vec![Some("feat".into()), Some("feat".into()), Some("main".into()), None, None]);
    let feat = ListFilter { target: Some("feat".into()), limit: 100, ..ListFilter::default() };
    assert_eq!(store.list(&feat).expect("list").len(), 2);
    let mut clash = in_payload;
    clash.target = Some("main".into());
    let refused = store.enqueue(&[job("a", Priority::Normal), clash]).expect_err("two targets");
    assert!(
        matches!(&refused, StoreError::TargetConflict { target, payload } if target == "main" && payload == "feat"),
        "{refused}"
    );
    let all = ListFilter { limit: 100, ..ListFilter::default() };
    assert_eq!(store.list(&all).expect("list").len(), ids.len(), "nothing of the refused batch was enqueued");
}

/// A worker is alive while it heartbeats; silent for longer than the staleness its heartbeat gave, it is gone and
/// runs nothing, and is listed so for an hour; a worker that left is not listed.
pub fn worker_liveness(store: &dyn JobStore, clock: &ManualClock) {
    let stale = Duration::from_secs(3);
    let workers = || -> Vec<(String, WorkerState, u32)> {
        store.stats().expect("stats").workers.into_iter().map(|w| (w.id, w.state, w.running)).collect()
    };
    let (alive, gone) = (WorkerState::Alive, WorkerState::Gone);
    for (worker, running) in [("a", 2), ("b", 1), ("c", 0)] {
        store.worker_heartbeat(worker, Some(running), stale).expect("worker heartbeat");
    }
    store.worker_heartbeat("c", None, stale).expect("c leaves");
    assert_eq!(workers(), vec![("a".into(), alive, 2), ("b".into(), alive, 1)]);
    clock.advance(Duration::from_secs(2));
    store.worker_heartbeat("a", Some(3), stale).expect("a beats again");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        workers(),
        vec![("a".into(), alive, 3), ("b".into(), alive, 1)],
        "b is silent for exactly 3 s"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(workers(), vec![("a".into(), alive, 3), ("b".into(), gone, 0)], "b's heartbeat is stale");
    clock.advance(Duration::from_secs(59 * 60));
    assert_eq!(workers(), vec![("a".into(), gone, 0), ("b".into(), gone, 0)], "listed for an hour after");
    clock.advance(Duration::from_secs(60 * 60));
    assert_eq!(workers(), vec![], "then no longer");
}

/// The windows measured back from now (start latency, run time, jobs finished in the last minute, purge by age)
/// follow the store's clock.
pub fn time_windows(store: &dyn JobStore, clock: &ManualClock) {
    let id = store.enqueue(&[job("a", Priority::Normal)]).expect("enqueue")[0].clone();
    store.worker_heartbeat("w", Some(1), LEASE * 3).expect("worker heartbeat");
    clock.advance(Duration::from_millis(200));
    assert_eq!(store.claim("w", &[], 1, LEASE).expect("claim").len(), 1);
    clock.advance(Duration::from_millis(500));
    store.finish("w", &[(id.clone(), Finish::Succeeded(serde_json::Value::Null))]).expect("finish");
    let stats = store.stats().expect("stats");
    assert_eq!(stats.workers.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), vec!["w"]);
    assert_eq!((stats.finished_last_minute, stats.finished_last_hour), (1, 1));
    assert_eq!((stats.start_latency_p50_ms, stats.mean_run_ms), (Some(200.0), Some(500.0)));
    assert_eq!(store.purge(Some(Duration::from_secs(60)), false).expect("purge"), 0, "it finished just now");
    clock.advance(Duration::from_secs(61));
    let stats = store.stats().expect("stats");
    assert_eq!((stats.finished_last_minute, stats.finished_last_hour), (0, 1));
    assert_eq!(store.purge(Some(Duration::from_secs(60)), false).expect("purge"), 1);
    assert!(store.get(&id).is_err(), "purged");
}

/// Orphans are the running jobs whose lease ran out or whose worker is known dead; requeueing puts them back
/// (counting the lost attempt); a gone worker can be forgotten; the oldest queued job's age and the layout
/// version are known.
pub fn orphans_requeue_and_forget(store: &dyn JobStore, clock: &ManualClock) {
    assert_eq!(store.schema_version().expect("schema"), super::store::STORE_SCHEMA);
    assert_eq!(store.oldest_queued_age().expect("age"), None);
    let ids = store
        .enqueue(&[job("a", Priority::Normal), job("a", Priority::Normal), job("a", Priority::Low)])
        .expect("enqueue");
    clock.advance(Duration::from_millis(400));
    assert_eq!(store.oldest_queued_age().expect("age"), Some(Duration::from_millis(400)));
    assert_eq!(store.claim("w1", &[], 1, Duration::from_secs(1)).expect("claim").len(), 1);
    assert_eq!(store.claim("w2", &[], 1, LEASE).expect("claim").len(), 1);
    store.worker_heartbeat("w2", Some(1), LEASE).expect("w2 beats");
    assert!(store.orphans(&[]).expect("orphans").is_empty(), "both leases are live");
    let of_w2 = store.orphans(&["w2".into()]).expect("orphans");
    assert_eq!(of_w2.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), vec![ids[1].clone()]);
    clock.advance(Duration::from_millis(1001));
    assert_eq!(store.orphans(&[]).expect("orphans").len(), 1, "w1's lease ran out");
    let mut requeued = store.requeue_orphans(&["w2".into()]).expect("requeue");
    requeued.sort();
    let mut both = vec![ids[0].clone(), ids[1].clone()];
    both.sort();
    assert_eq!(requeued, both);
    assert!(store.orphans(&["w2".into()]).expect("orphans").is_empty());
    let back = store.get(&ids[1]).expect("get");
    assert_eq!((back.status, back.attempts), (JobStatus::Queued, 1));
    assert_eq!(store.finish("w2", &[(ids[1].clone(), Finish::Cancelled)]).expect("finish"), 0, "w2 lost it");
    assert_eq!(store.claim("w3", &[], 3, LEASE).expect("claim").len(), 3, "all three run again");
    assert_eq!(store.forget_workers(&["w2".into(), "nobody".into()]).expect("forget"), 1);
    assert!(store.stats().expect("stats").workers.is_empty());
}

/// A job keeps its input, and the output and condition its run reports; a retry forgets the run's.
pub fn input_output_condition(store: &dyn JobStore, _clock: &ManualClock) {
    let mut given = job("a", Priority::Normal);
    given.input = Some(serde_json::json!({"n": 7}));
    let id = store.enqueue(&[given, job("a", Priority::Normal)]).expect("enqueue");
    assert_eq!(store.get(&id[0]).expect("get").input, Some(serde_json::json!({"n": 7})));
    assert_eq!(store.get(&id[1]).expect("get").input, None);
    store.claim("w", &[], 1, LEASE).expect("claim");
    store.set_output(&id[0], &serde_json::json!({"sum": 8})).expect("output");
    store.set_condition(&id[0], false).expect("condition");
    let seen = store.get(&id[0]).expect("get");
    assert_eq!((seen.output, seen.condition), (Some(serde_json::json!({"sum": 8})), Some(false)));
    assert!(matches!(store.set_output("nope", &serde_json::json!(1)), Err(StoreError::NotFound(_))));
    assert!(matches!(store.set_condition("nope", true), Err(StoreError::NotFound(_))));
    store
        .finish("w", &[(id[0].clone(), Finish::Failed { error: "x".into(), retry: false })])
        .expect("finish");
    store.retry(&id[0]).expect("retry");
    let again = store.get(&id[0]).expect("get");
    assert_eq!((again.output, again.condition), (None, None), "a retry starts from the input alone");
    assert_eq!(again.input, Some(serde_json::json!({"n": 7})));
}

/// Variables: per repository and per target, set, get, delete, list, and increments that are atomic and refuse
/// a value that is not a whole number.
pub fn variables(store: &dyn JobStore, _clock: &ManualClock) {
    assert_eq!(store.var_get(None, "k").expect("get"), None);
    store.var_set(None, "k", "one").expect("set");
    store.var_set(Some("feature-a"), "k", "two").expect("set");
    assert_eq!(store.var_get(None, "k").expect("get").as_deref(), Some("one"));
    assert_eq!(store.var_get(Some("feature-a"), "k").expect("get").as_deref(), Some("two"));
    assert_eq!(store.var_incr(None, "n", 5).expect("incr"), 5, "a missing variable counts from 0");
    assert_eq!(store.var_incr(None, "n", -2).expect("incr"), 3);
    assert!(matches!(store.var_incr(None, "k", 1), Err(StoreError::Variable { .. })), "`one` is no number");
    assert_eq!(
        store.var_get(None, "k").expect("get").as_deref(),
        Some("one"),
        "a refused increment changes nothing"
    );
    let listed: Vec<(Option<String>, String, String)> =
        store.var_list().expect("list").into_iter().map(|v| (v.target, v.key, v.value)).collect();
    assert_eq!(
        listed,
        vec![
            (None, "k".into(), "one".into()),
            (None, "n".into(), "3".into()),
            (Some("feature-a".into()), "k".into(), "two".into()),
        ]
    );
    assert!(store.var_delete(None, "k").expect("delete"));
    assert!(!store.var_delete(None, "k").expect("delete again"));
    assert_eq!(store.var_get(None, "k").expect("get"), None);
    assert_eq!(store.var_get(Some("feature-a"), "k").expect("get").as_deref(), Some("two"));
    // 8 threads × 25 increments end at exactly 200.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..25 {
                    store.var_incr(Some("t"), "count", 1).expect("incr");
                }
            });
        }
    });
    assert_eq!(store.var_get(Some("t"), "count").expect("get").as_deref(), Some("200"));
}

fn after(kind: &str, parents: &[&String]) -> NewJob {
    let mut child = job(kind, Priority::Normal);
    child.after = parents.iter().map(|p| (*p).clone()).collect();
    child
}

/// A job `--after` others waits until they end, runs when all succeeded and none set `condition = false`, and
/// is skipped otherwise (and so are the jobs after it); a parent must exist; a waiting job can be cancelled.
pub fn workflows(store: &dyn JobStore, _clock: &ManualClock) {
    assert!(
        matches!(store.enqueue(&[after("a", &[&"nobody".to_owned()])]), Err(StoreError::NotFound(p)) if p == "nobody")
    );
    assert!(
        store.list(&ListFilter { limit: 10, ..ListFilter::default() }).expect("list").is_empty(),
        "nothing written"
    );
    let first = store.enqueue(&[job("a", Priority::Normal)]).expect("enqueue").remove(0);
    let second = store.enqueue(&[after("a", &[&first])]).expect("enqueue").remove(0);
    let third = store.enqueue(&[after("a", &[&second])]).expect("enqueue").remove(0);
    let doomed = store.enqueue(&[after("a", &[&first])]).expect("enqueue").remove(0);
    let got = store.get(&third).expect("get");
    assert_eq!((got.status, got.parents), (JobStatus::Waiting, vec![second.clone()]));
    assert_eq!(store.stats().expect("stats").waiting, 3);
    assert!(store.pending(&[]).expect("pending"));
    assert_eq!(store.cancel(&doomed).expect("cancel"), JobStatus::Cancelled);
    let claimed = store.claim("w", &[], 10, LEASE).expect("claim");
    assert_eq!(
        claimed.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![first.clone()],
        "children wait"
    );
    store.set_output(&first, &serde_json::json!({"from": "first"})).expect("output");
    store.finish("w", &[(first.clone(), Finish::Succeeded(serde_json::Value::Null))]).expect("finish");
    let claimed = store.claim("w", &[], 10, LEASE).expect("claim");
    assert_eq!(claimed.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), vec![second.clone()]);
    store.set_condition(&second, false).expect("condition");
    store.finish("w", &[(second.clone(), Finish::Succeeded(serde_json::Value::Null))]).expect("finish");
    assert!(store.claim("w", &[], 10, LEASE).expect("claim").is_empty(), "the third does not run");
    let skipped = store.get(&third).expect("get");
    assert_eq!(skipped.status, JobStatus::Skipped);
    assert!(
        skipped.error.as_deref().is_some_and(|e| e.contains(&second) && e.contains("condition = false")),
        "{skipped:?}"
    );
    assert!(skipped.finished_at.is_some());
    // A child of a failed parent and of a skipped one is skipped too, naming the parent.
    let failing = store.enqueue(&[job("b", Priority::Normal)]).expect("enqueue").remove(0);
    let orphan = store.enqueue(&[after("b", &[&failing, &first])]).expect("enqueue").remove(0);
    let grandchild = store.enqueue(&[after("b", &[&third])]).expect("enqueue").remove(0);
    let claimed = store.claim("w", &["b".into()], 10, LEASE).expect("claim");
    assert_eq!(claimed.len(), 1);
    store
        .finish("w", &[(failing.clone(), Finish::Failed { error: "no".into(), retry: false })])
        .expect("finish");
    assert!(store.claim("w", &[], 10, LEASE).expect("claim").is_empty());
    let orphan = store.get(&orphan).expect("get");
    assert_eq!(orphan.status, JobStatus::Skipped);
    assert!(
        orphan.error.as_deref().is_some_and(|e| e.contains(&failing) && e.contains("failed")),
        "{orphan:?}"
    );
    assert_eq!(store.get(&grandchild).expect("get").status, JobStatus::Skipped);
    let stats = store.stats().expect("stats");
    assert_eq!((stats.waiting, stats.skipped), (0, 3));
    assert!(!store.pending(&[]).expect("pending"));
}

/// A list by status follows every transition (newest first, with offset and type filter), and the last hour's
/// run time, success rate and start latency count each finished job once, a retried one no more.
pub fn list_by_status_and_stats_after_transitions(store: &dyn JobStore, clock: &ManualClock) {
    let ids = store
        .enqueue(&[job("a", Priority::Normal), job("b", Priority::Normal), job("a", Priority::Normal)])
        .expect("enqueue");
    let by = |status: JobStatus, kind: Option<&str>, offset: usize| -> Vec<String> {
        let filter = ListFilter {
            status: Some(status),
            job_type: kind.map(str::to_owned),
            limit: 10,
            offset,
            ..ListFilter::default()
        };
        store.list(&filter).expect("list").into_iter().map(|j| j.id).collect()
    };
    assert_eq!(by(JobStatus::Queued, None, 0), vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]);
    assert_eq!(by(JobStatus::Queued, None, 1), vec![ids[1].clone(), ids[0].clone()]);
    clock.advance(Duration::from_millis(100));
    let claimed: Vec<String> =
        store.claim("w", &[], 3, LEASE).expect("claim").into_iter().map(|j| j.id).collect();
    assert_eq!(claimed.len(), 3);
    assert!(by(JobStatus::Queued, None, 0).is_empty());
    assert_eq!(by(JobStatus::Running, Some("a"), 0), vec![ids[2].clone(), ids[0].clone()]);
    clock.advance(Duration::from_millis(300));
    let failed = Finish::Failed { error: "no".into(), retry: false };
    store
        .finish(
            "w",
            &[
                (ids[0].clone(), Finish::Succeeded(serde_json::Value::Null)),
                (ids[1].clone(), Finish::Succeeded(serde_json::Value::Null)),
                (ids[2].clone(), failed),
            ],
        )
        .expect("finish");
    assert_eq!(by(JobStatus::Succeeded, None, 0), vec![ids[1].clone(), ids[0].clone()]);
    assert_eq!(by(JobStatus::Succeeded, Some("b"), 0), vec![ids[1].clone()]);
    assert_eq!(by(JobStatus::Failed, None, 0), vec![ids[2].clone()]);
    let stats = store.stats().expect("stats");
    assert_eq!((stats.finished_last_hour, stats.mean_run_ms), (3, Some(300.0)));
    assert_eq!((stats.start_latency_p50_ms, stats.start_latency_p99_ms), (Some(100.0), Some(100.0)));
    assert_eq!(stats.success_rate.map(|r| (r * 3.0).round()), Some(2.0));
    store.retry(&ids[2]).expect("retry");
    assert!(by(JobStatus::Failed, None, 0).is_empty());
    assert_eq!(by(JobStatus::Queued, None, 0), vec![ids[2].clone()]);
    let stats = store.stats().expect("stats");
    assert_eq!((stats.finished_last_hour, stats.success_rate), (2, Some(1.0)));
    store.cancel(&ids[2]).expect("cancel");
    assert_eq!(by(JobStatus::Cancelled, None, 0), vec![ids[2].clone()]);
}

fn ids_of(jobs: &[envctl_contracts::jobs::Job]) -> Vec<String> {
    jobs.iter().map(|j| j.id.clone()).collect()
}

/// A worker that claimed a batch beyond what it runs and was killed part way (it stops renewing): once the lease
/// runs out every job it had not finished comes back, in order, its attempt counted, and the one it finished is
/// not run again; its late results are ignored.
pub fn batch_of_a_killed_worker_comes_back(store: &dyn JobStore, clock: &ManualClock) {
    let ids = store.enqueue(&vec![job("a", Priority::Normal); 6]).expect("enqueue");
    let batch = store.claim("w1", &[], 4, Duration::from_millis(300)).expect("claim");
    assert_eq!(ids_of(&batch), ids[..4].to_vec(), "one call claims the batch, first in first out");
    let first = (ids[0].clone(), Finish::Succeeded(serde_json::json!(1)));
    assert_eq!(store.finish("w1", &[first]).expect("finish"), 1);
    // w1 is killed here. While its lease lasts nobody else gets its batch.
    assert_eq!(ids_of(&store.claim("w2", &[], 10, LEASE).expect("claim")), ids[4..].to_vec());
    clock.advance(Duration::from_millis(350));
    let again = store.claim("w2", &[], 10, LEASE).expect("claim");
    assert_eq!(ids_of(&again), ids[1..4].to_vec(), "the unfinished part of the batch, in order");
    assert!(again.iter().all(|j| j.attempts == 2 && j.status == JobStatus::Running));
    let late: Vec<_> =
        ids[1..4].iter().map(|id| (id.clone(), Finish::Succeeded(serde_json::json!(1)))).collect();
    assert_eq!(store.finish("w1", &late).expect("finish"), 0, "w1 lost them");
    let rest: Vec<_> =
        ids[1..].iter().map(|id| (id.clone(), Finish::Succeeded(serde_json::json!(2)))).collect();
    assert_eq!(store.finish("w2", &rest).expect("finish"), 5);
    for (n, id) in ids.iter().enumerate() {
        let done = store.get(id).expect("get");
        assert_eq!(done.status, JobStatus::Succeeded, "{id}");
        let runs = if n == 0 || n >= 4 { 1 } else { 2 };
        assert_eq!(done.attempts, runs, "{id} ran again only when w1 had not finished it");
    }
}

/// Batches are claimed in the order single claims would be: priority first, then first in, first out, a job of
/// higher priority that arrives between two batches heading the next.
pub fn batch_claims_keep_priority_then_fifo(store: &dyn JobStore, _clock: &ManualClock) {
    let low = store.enqueue(&[job("a", Priority::Low)]).expect("enqueue");
    let normal = store.enqueue(&vec![job("a", Priority::Normal); 3]).expect("enqueue");
    let high = store.enqueue(&[job("a", Priority::High)]).expect("enqueue");
    let first = store.claim("w", &[], 3, LEASE).expect("claim");
    assert_eq!(ids_of(&first), vec![high[0].clone(), normal[0].clone(), normal[1].clone()]);
    let critical = store.enqueue(&[job("a", Priority::Critical)]).expect("enqueue");
    let second = store.claim("w", &[], 3, LEASE).expect("claim");
    assert_eq!(ids_of(&second), vec![critical[0].clone(), normal[2].clone(), low[0].clone()]);
}

/// A job cancelled while a worker holds it prefetched is reported by the worker's heartbeat and given back
/// cancelled, never having started (no attempt counted, no start time); a prefetched job given back unstarted goes
/// back to its place in the queue; a worker cannot give back what it does not hold.
pub fn prefetched_jobs_cancelled_or_given_back(store: &dyn JobStore, _clock: &ManualClock) {
    let ids = store.enqueue(&vec![job("a", Priority::Normal); 4]).expect("enqueue");
    let held = store.claim("w", &[], 3, LEASE).expect("claim");
    assert_eq!(ids_of(&held), ids[..3].to_vec());
    assert_eq!(store.cancel(&ids[1]).expect("cancel"), JobStatus::Cancelling);
    assert_eq!(store.heartbeat("w", &ids[..3], LEASE).expect("heartbeat"), vec![ids[1].clone()]);
    assert_eq!(store.release("other", &ids[1..3]).expect("release"), 0, "not other's to give back");
    assert_eq!(store.release("w", &ids[1..3]).expect("release"), 2);
    let cancelled = store.get(&ids[1]).expect("get");
    assert_eq!((cancelled.status, cancelled.attempts, cancelled.started_at), (JobStatus::Cancelled, 0, None));
    let back = store.get(&ids[2]).expect("get");
    assert_eq!((back.status, back.attempts, back.started_at), (JobStatus::Queued, 0, None));
    assert!(back.worker_id.is_none_or(|w| w.is_empty()), "nobody holds it");
    assert_eq!(store.release("w", &ids[2..3]).expect("release"), 0, "given back already");
    let next = store.claim("w2", &[], 10, LEASE).expect("claim");
    assert_eq!(ids_of(&next), vec![ids[2].clone(), ids[3].clone()], "back in its place, ahead of later jobs");
    assert_eq!(next[0].attempts, 1);
    let stats = store.stats().expect("stats");
    assert_eq!((stats.cancelled, stats.running, stats.queued), (1, 3, 0));
    store.finish("w", &[(ids[1].clone(), Finish::Succeeded(serde_json::json!(1)))]).expect("finish");
    assert_eq!(store.get(&ids[1]).expect("get").status, JobStatus::Cancelled, "it never runs");
}

/// A worker's ends and its next claim in one call do what the two calls would, in that order: the ends are
/// recorded first (a retry is scheduled, not claimed again at once), a result for a job the worker does not hold is
/// ignored, and the claim takes the next jobs, priority first, then first in, first out.
pub fn finish_then_claim_in_one_call(store: &dyn JobStore, _clock: &ManualClock) {
    let ids = store.enqueue(&vec![job("a", Priority::Normal); 4]).expect("enqueue");
    let high = store.enqueue(&[job("a", Priority::High)]).expect("enqueue");
    let first = store.claim("w", &[], 2, LEASE).expect("claim");
    assert_eq!(ids_of(&first), vec![high[0].clone(), ids[0].clone()]);
    let ends = [
        (high[0].clone(), Finish::Succeeded(serde_json::json!("done"))),
        (ids[0].clone(), Finish::Failed { error: "again".into(), retry: true }),
        (ids[1].clone(), Finish::Succeeded(serde_json::json!("not held"))),
    ];
    let (done, next) = store.finish_and_claim("w", &ends, &[], 10, LEASE).expect("finish and claim");
    assert_eq!(done, 2, "the result for a job w does not hold is ignored");
    assert_eq!(ids_of(&next), ids[1..].to_vec(), "the retried job waits for its backoff");
    assert!(next.iter().all(|j| j.status == JobStatus::Running && j.worker_id.as_deref() == Some("w")));
    let ended = store.get(&high[0]).expect("get");
    assert_eq!((ended.status, ended.result), (JobStatus::Succeeded, Some(serde_json::json!("done"))));
    assert_eq!(store.get(&ids[0]).expect("get").status, JobStatus::Scheduled);
    let stats = store.stats().expect("stats");
    assert_eq!((stats.succeeded, stats.scheduled, stats.running, stats.queued), (1, 1, 3, 0));
    let (done, none) = store.finish_and_claim("w", &[], &[], 10, LEASE).expect("nothing to finish");
    assert_eq!((done, none.len()), (0, 0));
}

/// One test per conformance case for a store built by `$store`, an expression returning `(guard, store)` that
/// builds the store on `$clock` (an `Arc<dyn Clock>`; the case advances the same [`ManualClock`]).
#[cfg(test)]
macro_rules! conformance_tests {
    ($name:ident, |$clock:ident| $store:expr) => {
        conformance_tests!(@cases $name, |$clock| $store, [
            priority_then_fifo,
            delayed_and_filtered,
            retries_then_dead,
            leases,
            cancellation,
            progress_logs_stats_purge,
            payload_target,
            worker_liveness,
            time_windows,
            orphans_requeue_and_forget,
            input_output_condition,
            variables,
            workflows,
            list_by_status_and_stats_after_transitions,
            batch_of_a_killed_worker_comes_back,
            batch_claims_keep_priority_then_fifo,
            prefetched_jobs_cancelled_or_given_back,
            finish_then_claim_in_one_call,
        ]);
    };
    (@cases $name:ident, |$clock:ident| $store:expr, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::super::{EmbeddedStore, RedisStore};
            #[allow(unused_imports)]
            use super::TestRedis;

            $(
                #[test]
                fn $case() {
                    let clock = std::sync::Arc::new(super::ManualClock::default());
                    let $clock: std::sync::Arc<dyn super::Clock> = clock.clone();
                    let (_guard, store) = $store;
                    super::$case(&store, &clock);
                }
            )*
        }
    };
}

#[cfg(test)]
conformance_tests!(embedded, |clock| {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open_with_clock(&dir.path().join("jobs.sqlite3"), clock).expect("open");
    (dir, store)
});

#[cfg(test)]
conformance_tests!(redis, |clock| {
    let server = TestRedis::start(false);
    let store = RedisStore::open_with_clock(&server.url(), "test", clock).expect("connect");
    (server, store)
});

/// A real `redis-server` on a free loopback port in a temporary directory, stopped on drop.
#[cfg(test)]
pub struct TestRedis {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

#[cfg(test)]
impl TestRedis {
    /// Starts one (with `--appendonly yes` when `aof`).
    pub fn start(aof: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port =
            std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind").local_addr().expect("addr").port();
        Self::start_in(dir, port, aof)
    }

    fn start_in(dir: tempfile::TempDir, port: u16, aof: bool) -> Self {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if aof { "yes" } else { "no" },
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        // Ready once it says so (no polling); the reader keeps draining its log until it exits.
        let log = child.stdout.take().expect("stdout");
        let (ready, is_ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = ready.send(());
                }
            }
        });
        let started = is_ready.recv_timeout(Duration::from_secs(10));
        let server = Self { child, port, _dir: dir };
        assert!(started.is_ok(), "redis-server did not start on port {port}");
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

#[cfg(test)]
impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
