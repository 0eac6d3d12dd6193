//! `envctl worker [--concurrency N] [--types T,...] [--drain]`: runs jobs from the repository's store.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::jobs::handlers::HandlerContext;
use crate::jobs::worker::{WorkerOptions, run};
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::runtime_api::{ApiOptions, OnFirstJob};

// Arguments of `worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Jobs at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Only these job types (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// Exit once nothing is queued, scheduled or running.
    #[arg(long)]
    pub drain: bool,
    /// Join this Redis queue (`redis://host:port/db`) instead of the configured store.
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,
}

/// Runs a worker until Ctrl-C (twice: stop the running jobs too) or, with `--drain`, until the queue is empty.
pub fn exec(rt: &EngineRuntime, args: &WorkerArgs) -> Result<Outcome, EngineError> {
    let settings = rt.settings()?;
    let store = match &args.backend {
        Some(url) => rt.job_stores()?.redis_at(url).open()?,
        None => rt.job_store()?,
    };
    let lease = Duration::from_secs(settings.config.jobs.lease_secs);
    let ctx = HandlerContext::new(Some(settings.clone()), rt.env().inherited().clone())
        .with_sets(rt.sets().to_vec());
    let api_options = ApiOptions {
        scope_dir: settings.paths.scope_dir.clone(),
        repository: settings.paths.repo_root.display().to_string(),
        worker: crate::jobs::worker::worker_id(),
    };
    let options =
        WorkerOptions { concurrency: args.concurrency, types: args.types.clone(), drain: args.drain, lease };
    let printer = *rt.printer();
    let progress = args.drain.then(|| super::progress(rt));
    let watched = Arc::clone(&store);
    let report = rt.block_on(async move {
        // The worker's runtime API, for the processes of the jobs it runs: up when the first of them begins, down
        // after the last job. Without it (a scope directory it cannot write, no loopback listener) jobs still run.
        let (api_stop, api_tasks) = (CancellationToken::new(), tokio_util::task::TaskTracker::new());
        let api =
            OnFirstJob::new(api_options, api_stop.clone(), api_tasks.clone(), Arc::clone(&store), move |e| {
                printer.warn(&format!("{e}\njobs run without the runtime API"));
            });
        let ctx = Arc::new(ctx.with_executions(Arc::new(api)));
        let (shutdown, force) = (CancellationToken::new(), CancellationToken::new());
        let signals = {
            let (shutdown, force) = (shutdown.clone(), force.clone());
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    shutdown.cancel();
                }
                if tokio::signal::ctrl_c().await.is_ok() {
                    force.cancel();
                }
            })
        };
        let drained = CancellationToken::new();
        let shown = progress.map(|p| tokio::spawn(show_drain(watched, p, drained.clone())));
        let report = run(store, ctx, options, shutdown, force).await;
        signals.abort();
        drained.cancel();
        if let Some(shown) = shown {
            let _ = shown.await;
        }
        api_stop.cancel();
        api_tasks.close();
        api_tasks.wait().await;
        Ok::<_, EngineError>(report?)
    })??;
    #[allow(clippy::cast_precision_loss)]
    let rate = report.finished as f64 / report.elapsed.as_secs_f64().max(1e-9);
    printer.note(&format!(
        "worker {}: {} job(s) in {:.2} s ({rate:.0}/s)",
        report.id,
        report.finished,
        report.elapsed.as_secs_f64()
    ));
    if report.outages > 0 {
        printer.note(&format!(
            "the job store was unreachable {} time(s); the worker waited and went on",
            report.outages
        ));
    }
    Ok(Outcome::Success)
}

/// While `worker --drain` runs: the queue's counts, read four times a second — one spinner line on a terminal, a
/// plain line whenever they changed (at most once a second) otherwise.
async fn show_drain(
    store: Arc<dyn crate::jobs::JobStore>,
    mut progress: crate::ui::progress::LiveProgress,
    done: CancellationToken,
) {
    let began = std::time::Instant::now();
    let mut said = (String::new(), began);
    loop {
        tokio::select! {
            () = done.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let reading = Arc::clone(&store);
        let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || reading.stats()).await else { continue };
        let text =
            format!("{} queued, {} running, {} scheduled", stats.queued, stats.running, stats.scheduled);
        if progress.is_live() {
            progress.phase("draining", &text);
        } else if text != said.0 && said.1.elapsed() >= Duration::from_secs(1) {
            progress.phase("draining", &text);
            said = (text, std::time::Instant::now());
        }
    }
    if progress.is_live() {
        progress.finish("draining", &format!("drained in {:.1} s", began.elapsed().as_secs_f64()));
    }
}
