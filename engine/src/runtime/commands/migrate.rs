//! `envctl migrate [--all | --main | --tree NAME ...] [--service S ...] [--parallel N]`: every selected target's
//! service `migrate` commands as `migrate.run` jobs (with the target's environment: its database, its ports),
//! progress as each finishes, then a summary; exit 1 when any failed.

use crate::jobs::suites::{SuiteKind, suites_of};
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

// Arguments of `migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Which targets (default: the configured `project.default_mode`).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these services' migrations (repeatable).
    #[arg(long = "service", value_name = "S", add = super::completions::services())]
    pub services: Vec<String>,
    /// Migrations at once (default: the number of CPUs, at most 4).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
}

/// Runs the migrations.
pub fn exec(rt: &EngineRuntime, args: &MigrateArgs) -> Result<Outcome, EngineError> {
    let settings = rt.settings()?;
    super::known_services(settings, &args.services)?;
    let suites =
        suites_of(settings, &rt.select(&args.targets.selection())?, SuiteKind::Migrate, &args.services);
    if suites.is_empty() {
        return Err(EngineError::Failed("no service of the selected targets has a `migrate` command\nhint: add `migrate = \"…\"` to a [services.<name>] section".into()));
    }
    super::run_suites(rt, SuiteKind::Migrate, &suites, args.parallel)
}
