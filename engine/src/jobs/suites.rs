//! Test suites as jobs (`envctl test`): one `test.run` job per (target, service) with a `test` command, run by a
//! worker inside the calling process, each result reported as it arrives, then kept in `test_results.json` so
//! `envctl test --failed` reruns only what failed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::config::Priority;
use envctl_contracts::jobs::{Job, JobStatus, SuiteResult, TestResults};
use tokio_util::sync::CancellationToken;

use super::handlers::HandlerContext;
use super::worker::{WorkerOptions, run};
use super::{JobStore, NewJob, StoreError};
use crate::config::Settings;
use crate::targets::Target;

/// One suite: (target, service).
pub type Suite = (String, String);

/// Every suite of `targets`: each enabled service with a `test` command that runs there.
pub fn suites_of(settings: &Settings, targets: &[&Target]) -> Vec<Suite> {
    targets
        .iter()
        .flat_map(|t| {
            settings
                .config
                .services
                .iter()
                .filter(|(_, s)| s.enabled && s.test.is_some() && t.in_scope(s.targets))
                .map(|(name, _)| (t.name.clone(), name.clone()))
        })
        .collect()
}

/// The suites that failed in `last`.
pub fn failed_in(last: &TestResults) -> Vec<Suite> {
    last.suites.iter().filter(|s| !s.passed).map(|s| (s.target.clone(), s.service.clone())).collect()
}

/// How a run of suites goes.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Suites at once.
    pub parallel: usize,
    /// The worker's lease.
    pub lease: Duration,
}

/// How a run of suites ended.
#[derive(Debug, Clone)]
pub struct SuiteRun {
    /// Each suite's result, in the order given.
    pub results: TestResults,
    /// Whether Ctrl-C cut it short.
    pub interrupted: bool,
}

fn result_of(suite: &Suite, job: &Job) -> SuiteResult {
    let passed = job.status == JobStatus::Succeeded;
    let duration_secs = match (
        job.started_at.as_deref().map(humantime::parse_rfc3339),
        job.finished_at.as_deref().map(humantime::parse_rfc3339),
    ) {
        (Some(Ok(a)), Some(Ok(b))) => b.duration_since(a).ok().map(|d| d.as_secs_f64()),
        _ => None,
    };
    SuiteResult {
        target: suite.0.clone(),
        service: suite.1.clone(),
        job: job.id.clone(),
        passed,
        duration_secs,
        error: (!passed).then(|| job.error.clone().unwrap_or_else(|| job.status.as_str().into())),
    }
}

/// Enqueues `suites` as `test.run` jobs and runs them with a worker of this process until each has ended (or
/// `interrupt` fires, which stops the running ones). `finished` is called once per suite as it ends.
pub async fn run_suites(
    store: Arc<dyn JobStore>,
    ctx: Arc<HandlerContext>,
    suites: &[Suite],
    options: &SuiteOptions,
    interrupt: impl std::future::Future<Output = ()>,
    mut finished: impl FnMut(&SuiteResult),
) -> Result<SuiteRun, StoreError> {
    let new: Vec<NewJob> = suites
        .iter()
        .map(|(target, service)| NewJob {
            job_type: "test.run".into(),
            target: Some(target.clone()),
            payload: serde_json::json!({ "service": service, "target": target }),
            priority: Priority::High,
            max_attempts: 1,
            delay: None,
        })
        .collect();
    let ids = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || store.enqueue(&new))
            .await
            .map_err(|e| StoreError::Backend { store: "test runner".into(), detail: e.to_string() })??
    };
    let labels: BTreeMap<&String, &Suite> = ids.iter().zip(suites).collect();
    let (shutdown, force) = (CancellationToken::new(), CancellationToken::new());
    let worker_options = WorkerOptions {
        concurrency: options.parallel.max(1),
        types: vec!["test.run".into()],
        drain: false,
        lease: options.lease,
    };
    let worker = tokio::spawn(run(Arc::clone(&store), ctx, worker_options, shutdown.clone(), force.clone()));
    tokio::pin!(interrupt);
    let mut done: BTreeMap<String, SuiteResult> = BTreeMap::new();
    let mut interrupted = false;
    while done.len() < ids.len() {
        for id in &ids {
            if done.contains_key(id) {
                continue;
            }
            let Ok(job) = store.get(id) else { continue };
            if job.status.is_final() {
                let result = result_of(labels[id], &job);
                finished(&result);
                done.insert(id.clone(), result);
            }
        }
        if done.len() == ids.len() {
            break;
        }
        tokio::select! {
            () = &mut interrupt => { force.cancel(); interrupted = true; break; }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    shutdown.cancel();
    let _ = worker.await;
    let mut results = Vec::new();
    for id in &ids {
        let result = match done.remove(id) {
            Some(result) => result,
            None => result_of(labels[id], &store.get(id)?),
        };
        results.push(result);
    }
    let results = TestResults {
        schema_version: SCHEMA_VERSION,
        finished_at: crate::state::now_rfc3339(),
        suites: results,
    };
    Ok(SuiteRun { results, interrupted })
}
