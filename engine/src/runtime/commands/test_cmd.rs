//! `envctl test [--all | --main | --tree NAME ...] [--parallel N] [--failed]`: every selected target's service
//! test suites as `test.run` jobs, progress as each finishes, then a summary table; exit 1 when any failed.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::jobs::handlers::HandlerContext;
use crate::jobs::suites::{SuiteOptions, failed_in, run_suites, suites_of};
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
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

/// Runs the test suites.
pub fn exec(rt: &EngineRuntime, args: &TestArgs) -> Result<Outcome, EngineError> {
    let settings = rt.settings()?;
    let state = rt.state()?;
    let suites = if args.failed {
        let failed = state.test_results()?.map(|last| failed_in(&last)).unwrap_or_default();
        if failed.is_empty() {
            rt.printer().note("nothing failed last time");
            return Ok(Outcome::Success);
        }
        failed
    } else {
        suites_of(settings, &rt.select(&args.targets.selection())?)
    };
    if suites.is_empty() {
        return Err(EngineError::Failed("no service of the selected targets has a `test` command\nhint: add `test = \"…\"` to a [services.<name>] section".into()));
    }
    let options = SuiteOptions {
        parallel: args
            .parallel
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().min(4))),
        lease: Duration::from_secs(settings.config.jobs.lease_secs),
    };
    let ctx =
        Arc::new(HandlerContext { settings: Some(settings.clone()), base_env: rt.env().inherited().clone() });
    let printer = *rt.printer();
    let store = rt.job_store()?;
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let run = rt.block_on(run_suites(store, ctx, &suites, &options, interrupt, |result| {
        let mark = if result.passed { "passed" } else { "FAILED" };
        printer.note(&format!("  {mark:<6} {}/{}", result.target, result.service));
    }))??;
    if let Err(e) = state.save_test_results(&run.results) {
        printer.warn(&e.to_string());
    }
    let mut table = Table::new(&["TARGET", "SERVICE", "RESULT", "DURATION", "LOG"]);
    for suite in &run.results.suites {
        let result = match &suite.error {
            None => "passed".to_owned(),
            Some(error) => format!("failed ({error})"),
        };
        let duration = suite.duration_secs.map_or_else(|| "-".into(), |d| format!("{d:.1}s"));
        let log = format!("envctl jobs logs {}", suite.job);
        table.row(vec![suite.target.clone(), suite.service.clone(), result, duration, log]);
    }
    let failed = run.results.suites.iter().filter(|s| !s.passed).count();
    let mut out = table.render();
    let _ = writeln!(out, "\n{} passed, {failed} failed", run.results.suites.len() - failed);
    printer.data(&out);
    Ok(if run.interrupted {
        Outcome::Interrupted
    } else if failed > 0 {
        Outcome::Failure
    } else {
        Outcome::Success
    })
}
