//! `envctl test [--all | --main | --tree NAME ...] [--service S ...] [--parallel N] [--failed]`: every selected
//! target's service test suites as `test.run` jobs, progress as each finishes, then a summary table with the
//! failing tests' names; exit 1 when any failed. `--failed` reruns what failed last time, narrowed to the failing
//! tests when the runner is recognised.

use crate::jobs::suites::{SuiteKind, failed_in, suites_of};
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

// Arguments of `test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Which targets (default: the configured `project.default_mode`).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these services' suites (repeatable).
    #[arg(long = "service", value_name = "S", add = super::completions::services())]
    pub services: Vec<String>,
    /// Test suites at once (default: the number of CPUs, at most 4).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Rerun only what failed last time (only the failing tests, when the runner is recognised).
    #[arg(long)]
    pub failed: bool,
}

/// Runs the test suites.
pub fn exec(rt: &EngineRuntime, args: &TestArgs) -> Result<Outcome, EngineError> {
    let settings = rt.settings()?;
    super::known_services(settings, &args.services)?;
    let suites = if args.failed {
        let mut failed = rt.state()?.test_results()?.map(|last| failed_in(&last)).unwrap_or_default();
        failed.retain(|s| args.services.is_empty() || args.services.contains(&s.service));
        if failed.is_empty() {
            rt.printer().note("nothing failed last time");
            return Ok(Outcome::Success);
        }
        failed
    } else {
        suites_of(settings, &rt.select(&args.targets.selection())?, SuiteKind::Test, &args.services)
    };
    if suites.is_empty() {
        return Err(EngineError::Failed("no service of the selected targets has a `test` command\nhint: add `test = \"…\"` to a [services.<name>] section".into()));
    }
    super::run_suites(rt, SuiteKind::Test, &suites, args.parallel)
}
