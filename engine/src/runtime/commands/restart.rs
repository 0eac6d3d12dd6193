//! `envctl restart [targets] [--service S [--with-dependents]]`: stop and start again — every service of every
//! running target by default, or exactly the named services (their dependencies keep running).

use envctl_contracts::control::{Reply, Request, StartRequest};

use super::{Urls, report_start, start_request};
use crate::host::client::HostClient;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

// Arguments of `restart`.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// Which targets (default: every running target).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these services (repeatable); what they depend on keeps running (or is started when it is not).
    #[arg(long = "service", value_name = "S", add = super::completions::services())]
    pub services: Vec<String>,
    /// Also restart the services that depend on the named ones.
    #[arg(long, requires = "services")]
    pub with_dependents: bool,
}

/// Restarts the selected services.
pub fn exec(rt: &EngineRuntime, args: &RestartArgs) -> Result<Outcome, EngineError> {
    if let Some(reply) = by_digest(rt, args)? {
        return report_start(rt, Some(reply), Urls::FromHost);
    }
    let running = rt.state()?.running_targets()?;
    let names = if args.targets.all { Vec::new() } else { args.targets.names_among(&running)? };
    let targets = if names.is_empty() && !args.targets.all {
        return Err(EngineError::Failed("nothing is running to restart\nhint: use `envctl start`".into()));
    } else if args.targets.all {
        TargetArgs { all: true, ..TargetArgs::default() }
    } else {
        TargetArgs { tree: names, ..TargetArgs::default() }
    };
    let mut request = start_request(rt, &targets, &args.services, "restart", args.services.is_empty())?;
    request.restart.clone_from(&args.services);
    request.with_dependents = args.with_dependents;
    let mut progress = super::progress(rt);
    let reply = HostClient::call(rt.paths()?, true, &Request::Start(request), |p| progress.host_step(p))?;
    drop(progress);
    report_start(rt, reply, Urls::FromHost)
}

/// A restart of running targets asked of a host that holds the configuration as it is now (the same digest):
/// the CLI neither reads the configuration nor the saved state, and sends no copy of it. None when no host runs
/// or it asks for the configuration (it holds another, or cannot resolve a name with it): the full request then
/// follows, and reports any mistake as it always does.
fn by_digest(rt: &EngineRuntime, args: &RestartArgs) -> Result<Option<Reply>, EngineError> {
    if args.targets.main || args.targets.all || !args.targets.tree.is_empty() {
        return Ok(None);
    }
    let request = StartRequest {
        command: "restart".to_owned(),
        config: None,
        config_digest: Some(rt.config_digest()?),
        config_warnings: Vec::new(),
        targets: Vec::new(),
        running_targets: true,
        services: args.services.clone(),
        env: rt.env().inherited().clone(),
        no_resume: args.services.is_empty(),
        restart: args.services.clone(),
        with_dependents: args.with_dependents,
        no_deps: false,
        deps_only: false,
    };
    let mut progress = super::progress(rt);
    let reply = HostClient::call(rt.paths()?, false, &Request::Start(request), |p| progress.host_step(p))?;
    // A host of an envctl before the digest cannot read the request without its configuration.
    let asks_again = |r: &Reply| match r {
        Reply::ConfigNeeded => true,
        Reply::Error { message } => message.starts_with("malformed request"),
        _ => false,
    };
    Ok(reply.filter(|r| !asks_again(r)))
}
