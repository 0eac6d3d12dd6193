//! `envctl test [--all | --main | --tree NAME ...] [--parallel N] [--failed]`: one `test.run` job per target and
//! service with a `test` command, run by a worker in this process, progress as each finishes, then a summary
//! table; exit 1 when any failed. The results are kept so `--failed` reruns only what failed last time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use envctl_contracts::config::Priority;
use envctl_contracts::jobs::JobStatus;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::process_environment;
use crate::jobs::handlers::HandlerContext;
use crate::jobs::worker::{WorkerOptions, run};
use crate::jobs::{self, NewJob};
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome, block_on};
use crate::targets::Targets;
use crate::ui::Table;

/// Arguments of `test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Which targets (default: the configured `project.default_mode`).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Test suites at once (default: the number of CPUs, at most 4).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Rerun only what failed last time.
    #[arg(long)]
    pub failed: bool,
}

/// One suite's last result, kept in `<scope>/test_results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outcome1 {
    target: String,
    service: String,
    job: String,
    passed: bool,
}

fn results_path(scope: &std::path::Path) -> std::path::PathBuf {
    scope.join("test_results.json")
}

/// The (target, service) suites to run: every service with a `test` of the selected targets, or what failed last
/// time (`None` when nothing did).
fn select_suites(
    settings: &crate::config::Settings,
    args: &TestArgs,
) -> Result<Option<Vec<(String, String)>>, EngineError> {
    let scope = &settings.paths.scope_dir;
    let suites = if args.failed {
        let last: Vec<Outcome1> = std::fs::read(results_path(scope))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let failed: Vec<_> = last.into_iter().filter(|o| !o.passed).map(|o| (o.target, o.service)).collect();
        if failed.is_empty() {
            return Ok(None);
        }
        failed
    } else {
        let targets = Targets::discover(&settings.paths, &settings.config.project.trees_dir);
        let selected = targets.select(&args.targets.selection(), settings.config.project.default_mode)?;
        selected
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
    };
    Ok(Some(suites))
}

/// Runs the test suites.
pub fn exec(rt: &EngineRuntime, args: &TestArgs) -> Result<Outcome, EngineError> {
    let settings = rt.settings()?;
    let scope = settings.paths.scope_dir.clone();
    let Some(suites) = select_suites(&settings, args)? else {
        rt.printer().note("nothing failed last time");
        return Ok(Outcome::Success);
    };
    if suites.is_empty() {
        return Err(EngineError::Failed("no service of the selected targets has a `test` command\nhint: add `test = \"…\"` to a [services.<name>] section".into()));
    }
    let store = jobs::open(&settings).map_err(|e| EngineError::Failed(e.to_string()))?;
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
    let ids = store.enqueue(&new).map_err(|e| EngineError::Failed(e.to_string()))?;
    let parallel =
        args.parallel.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().min(4)));
    let lease = Duration::from_secs(settings.config.jobs.lease_secs);
    let ctx = Arc::new(HandlerContext { settings: Some(settings), base_env: process_environment() });
    let printer = *rt.printer();
    let labels: BTreeMap<String, (String, String)> =
        ids.iter().cloned().zip(suites.iter().cloned()).collect();
    block_on(async {
        let (shutdown, force) = (CancellationToken::new(), CancellationToken::new());
        let options =
            WorkerOptions { concurrency: parallel, types: vec!["test.run".into()], drain: false, lease };
        let worker = tokio::spawn(run(Arc::clone(&store), ctx, options, shutdown.clone(), force.clone()));
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut reported = BTreeMap::new();
        loop {
            for id in &ids {
                if reported.contains_key(id) {
                    continue;
                }
                let Ok(job) = store.get(id) else { continue };
                if job.status.is_final() {
                    let (target, service) = &labels[id];
                    let mark = if job.status == JobStatus::Succeeded { "passed" } else { "FAILED" };
                    printer.note(&format!("  {mark:<6} {target}/{service}"));
                    reported.insert(id.clone(), job);
                }
            }
            if reported.len() == ids.len() {
                break;
            }
            tokio::select! {
                _ = &mut ctrl_c => { shutdown.cancel(); force.cancel(); break; }
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        shutdown.cancel();
        let _ = worker.await;
    });
    let mut table = Table::new(&["TARGET", "SERVICE", "RESULT", "DURATION", "LOG"]);
    let mut outcomes = Vec::new();
    for id in &ids {
        let (target, service) = &labels[id];
        let job = store.get(id).map_err(|e| EngineError::Failed(e.to_string()))?;
        let passed = job.status == JobStatus::Succeeded;
        let duration = match (
            job.started_at.as_deref().map(humantime::parse_rfc3339),
            job.finished_at.as_deref().map(humantime::parse_rfc3339),
        ) {
            (Some(Ok(a)), Some(Ok(b))) => {
                b.duration_since(a).map_or_else(|_| "-".into(), |d| format!("{:.1}s", d.as_secs_f64()))
            }
            _ => "-".into(),
        };
        let result = if passed {
            "passed".to_owned()
        } else {
            format!("failed ({})", job.error.unwrap_or_else(|| job.status.as_str().into()))
        };
        table.row(vec![target.clone(), service.clone(), result, duration, format!("envctl jobs logs {id}")]);
        outcomes.push(Outcome1 { target: target.clone(), service: service.clone(), job: id.clone(), passed });
    }
    let _ = crate::state::write_atomic(
        &results_path(&scope),
        &serde_json::to_vec_pretty(&outcomes).unwrap_or_default(),
    );
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    let mut out = table.render();
    let _ = writeln!(out, "\n{} passed, {failed} failed", outcomes.len() - failed);
    printer.data(&out);
    Ok(if failed > 0 { Outcome::Failure } else { Outcome::Success })
}
