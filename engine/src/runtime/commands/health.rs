//! `envctl health [targets] [--json] [--strict] [--no-probe]`: every selected service checked against `/proc` (is
//! it the recorded process, does its process tree listen on its port) and its readiness probe asked again, all
//! probes at once. Exit 1 when unhealthy.

use std::fmt::Write as _;

use super::selected_records;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::supervisor::health;
use crate::ui::Table;

// Arguments of `health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// Which targets (default: every running target).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also fail when a service is degraded (restarted, or still starting).
    #[arg(long)]
    pub strict: bool,
    /// Do not ask the readiness probes again; check processes and listeners only.
    #[arg(long)]
    pub no_probe: bool,
}

/// Checks health.
pub fn exec(rt: &EngineRuntime, args: &HealthArgs) -> Result<Outcome, EngineError> {
    let records = selected_records(rt, &args.targets, &[])?;
    let host = rt.state()?.run_state()?.and_then(|s| s.host);
    let mut observed = health::observe(records);
    if !args.no_probe {
        rt.block_on(health::reprobe(&mut observed, rt.env().inherited()))?;
    }
    let mut report = health::verdict(observed, health::Supervision::of(host), args.strict);
    report.job_server = super::job_server(rt)?;
    if args.json {
        rt.printer().json(&report);
    } else {
        let mut table = Table::new(&["TARGET", "SERVICE", "STATUS", "TRUTH", "PID", "URL", "PROBE"]);
        for s in &report.services {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            table.row(vec![
                s.target.clone(),
                s.service.clone(),
                format!("{:?}", s.status).to_lowercase(),
                s.truth.clone(),
                opt(s.pid.map(|p| p.to_string())),
                opt(s.url.clone()),
                opt(s.probe.as_ref().map(probe_text)),
            ]);
        }
        let mut out = table.render();
        let targets: Vec<String> = report.services.iter().map(|s| s.target.clone()).collect();
        for (target, urls) in super::requirement_urls(rt, &targets) {
            for (name, url) in urls {
                let _ = writeln!(out, "{target} requirement {name}: {url}");
            }
        }
        if let Some(server) = &report.job_server {
            let _ = writeln!(out, "job server: {} ({})", server.url, super::job_server_status(server));
        }
        let _ = writeln!(out, "\n{}", report.overall);
        for issue in &report.issues {
            let _ = writeln!(out, "  {issue}");
        }
        rt.printer().data(&out);
    }
    Ok(if report.ok { Outcome::Success } else { Outcome::Failure })
}

/// A probe's answer for the table: `ok: …` or `FAILED: …`.
fn probe_text(probe: &envctl_contracts::state::ProbeRecord) -> String {
    format!("{}: {}", if probe.ok { "ok" } else { "FAILED" }, probe.detail)
}
