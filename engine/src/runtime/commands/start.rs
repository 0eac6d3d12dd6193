//! `envctl start [targets] [--service S ...] [--foreground] [--no-resume]`.

mod foreground;

use envctl_contracts::control::Request;

use super::{prepare_checkouts, report_start, start_request};
use crate::host::client::HostClient;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

// Arguments of `start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Which targets (default: the configured `project.default_mode`).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these services and what they depend on (repeatable).
    #[arg(long = "service", value_name = "S", add = super::completions::services())]
    pub services: Vec<String>,
    /// Stay attached: print every service's log, prefixed; Ctrl-C stops everything (twice: at once).
    #[arg(long)]
    pub foreground: bool,
    /// Restart services even when an identical one already runs.
    #[arg(long)]
    pub no_resume: bool,
    /// Start no requirements (Postgres, Redis, command servers): services only.
    #[arg(long, conflicts_with = "deps_only")]
    pub no_deps: bool,
    /// Start only the requirements.
    #[arg(long)]
    pub deps_only: bool,
}

/// Starts the selected targets.
pub fn exec(rt: &EngineRuntime, args: &StartArgs) -> Result<Outcome, EngineError> {
    let mut request = start_request(rt, &args.targets, &args.services, "start", args.no_resume)?;
    request.no_deps = args.no_deps;
    request.deps_only = args.deps_only;
    if !args.deps_only {
        prepare_checkouts(rt, &args.targets, &args.services)?;
    }
    if args.foreground {
        return foreground::run(rt, request);
    }
    let mut progress = super::progress(rt);
    let reply = HostClient::call(rt.paths()?, true, &Request::Start(request), |p| progress.host_step(p))?;
    drop(progress);
    report_start(rt, reply, super::Urls::FromHost)
}
