//! `envctl explain-startup [--json] [targets]`: what `start` would do, starting nothing.

use std::fmt::Write as _;

use crate::plan::{explain, plan_ports};
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

// Arguments of `explain-startup`.
#[derive(Debug, clap::Args)]
pub struct ExplainStartupArgs {
    /// Which targets.
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the startup plan.
pub fn exec(rt: &EngineRuntime, args: &ExplainStartupArgs) -> Result<Outcome, EngineError> {
    let settings = rt.settings()?;
    let selected = rt.select(&args.targets.selection())?;
    let ports = plan_ports(settings, &selected)?;
    let mut plan = explain(settings, &selected, &ports, rt.env());
    plan.job_server = super::job_server(rt)?;
    if args.json {
        rt.printer().json(&plan);
        return Ok(Outcome::Success);
    }
    let mut out = String::new();
    for target in &plan.targets {
        let _ = writeln!(out, "target {} ({})", target.name, target.root);
        for req in &target.requirements {
            let shared = if req.server_owner == target.name {
                String::new()
            } else {
                format!(", server of {}", req.server_owner)
            };
            let _ = writeln!(
                out,
                "  requirement {}: {:?} on port {}{}{shared}",
                req.name,
                req.adapter,
                req.port.assigned,
                named_ports(&req.ports, ", ports ")
            );
        }
        for service in &target.services {
            let port = service.port.map(|p| format!(" on port {}", p.assigned)).unwrap_or_default();
            let _ = writeln!(out, "  service {} (layer {}){port}", service.name, service.layer);
            if !service.ports.is_empty() {
                let _ = writeln!(out, "    {}", named_ports(&service.ports, "ports: "));
            }
            let _ = writeln!(out, "    cwd: {}", service.cwd);
            let _ = writeln!(out, "    run: {}", run_text(service));
            if let Some(url) = &service.url {
                let _ = writeln!(out, "    url: {url}");
            }
            let _ = writeln!(
                out,
                "    ready: {}",
                crate::ui::lifecycle::probe_text(service.ready.as_ref(), service.port.is_some())
            );
            let _ = writeln!(out, "    restart: {}", crate::ui::lifecycle::restart_text(service.restart));
            for (key, value) in &service.env {
                let _ = writeln!(out, "    env: {key}={value}");
            }
        }
        if target.requirements.is_empty() && target.services.is_empty() {
            out.push_str("  nothing to start (no services or requirements configured for this target)\n");
        }
    }
    if let Some(server) = &plan.job_server {
        let _ = writeln!(
            out,
            "job server (every target's jobs): redis-server on {}:{} ({}), queue in {}, log {}",
            server.bind,
            server.port,
            super::job_server_status(server),
            server.data_dir,
            server.log_path
        );
        if server.binary.is_none() {
            let _ = writeln!(out, "  redis-server was not found on PATH: apt-get install redis-server");
        }
    }
    for problem in &plan.problems {
        let _ = writeln!(out, "problem: {problem}");
    }
    rt.printer().data(&out);
    Ok(Outcome::Success)
}

/// The command line and how it runs: `sleep 1000 (exec'd directly)`, `exec server $ARGS (sh -c, then exec)`.
fn run_text(service: &envctl_contracts::startup::ServicePlan) -> String {
    use envctl_contracts::startup::Launch;
    match service.launch {
        Launch::Direct => format!("{} (exec'd directly, no shell)", service.argv.join(" ")),
        Launch::ShellExec => {
            format!(
                "{} (sh -c, the shell replaced by the command)",
                service.argv.last().map_or("", String::as_str)
            )
        }
        Launch::Shell => {
            format!("{} (sh -c, compound command)", service.argv.last().map_or("", String::as_str))
        }
    }
}

/// Named ports after `lead` as `smtp=1025 web=1080` (a moved one as `web=1081 (wanted 1080)`); nothing when none.
fn named_ports(
    ports: &std::collections::BTreeMap<String, envctl_contracts::ports::PortPlan>,
    lead: &str,
) -> String {
    if ports.is_empty() {
        return String::new();
    }
    let each: Vec<String> = ports
        .iter()
        .map(|(name, p)| {
            if p.assigned == p.requested {
                format!("{name}={}", p.assigned)
            } else {
                format!("{name}={} (wanted {})", p.assigned, p.requested)
            }
        })
        .collect();
    format!("{lead}{}", each.join(" "))
}
