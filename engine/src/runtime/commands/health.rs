//! `envctl health [targets] [--json] [--strict]`: every selected service checked against `/proc` (is it the
//! recorded process, does its process tree listen on its port). Exit 1 when unhealthy.

use std::fmt::Write as _;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::inspect::{HealthReport, ServiceHealth};
use envctl_contracts::state::ServiceStatus;

use super::logs::selected_records;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::supervisor::truth::{Truth, check};
use crate::ui::Table;

/// Arguments of `health`.
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
}

/// Checks health.
pub fn exec(rt: &EngineRuntime, args: &HealthArgs) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    let records = selected_records(&paths, &args.targets, &[])?;
    let mut issues = Vec::new();
    let mut degraded = false;
    let services: Vec<ServiceHealth> = records
        .into_iter()
        .map(|r| {
            let truth = check(&r);
            let healthy = truth == Truth::Running && r.status == ServiceStatus::Ready;
            let label = format!("{}/{}", r.target, r.service);
            match truth {
                Truth::Gone => {
                    issues.push(format!("{label}: its process (pid {}) is gone", r.pid.unwrap_or_default()));
                }
                Truth::NotListening => issues.push(format!(
                    "{label}: runs but nothing of it listens on port {}",
                    r.port.unwrap_or_default()
                )),
                Truth::Down => issues.push(format!(
                    "{label}: {}",
                    r.failure.clone().unwrap_or_else(|| format!("{:?}", r.status).to_lowercase())
                )),
                Truth::Running if !healthy => {
                    degraded = true;
                    issues.push(format!("{label}: {:?}", r.status).to_lowercase());
                }
                Truth::Running => {}
            }
            if healthy && r.restarts > 0 {
                degraded = true;
                issues.push(format!("{label}: restarted {} time(s)", r.restarts));
            }
            ServiceHealth {
                truth: truth.as_str().to_owned(),
                healthy,
                target: r.target,
                service: r.service,
                status: r.status,
                pid: r.pid,
                port: r.port,
                url: r.url,
                restarts: r.restarts,
                failure: r.failure,
                probes: r.probes,
            }
        })
        .collect();
    let unhealthy = services.iter().any(|s| !s.healthy && s.truth != "running");
    let overall = if unhealthy {
        "unhealthy"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    let ok = !(unhealthy || args.strict && degraded);
    let report =
        HealthReport { schema_version: SCHEMA_VERSION, ok, overall: overall.into(), services, issues };
    if args.json {
        rt.printer().json(&report);
    } else {
        let mut table = Table::new(&["TARGET", "SERVICE", "STATUS", "TRUTH", "PID", "URL"]);
        for s in &report.services {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            table.row(vec![
                s.target.clone(),
                s.service.clone(),
                format!("{:?}", s.status).to_lowercase(),
                s.truth.clone(),
                opt(s.pid.map(|p| p.to_string())),
                opt(s.url.clone()),
            ]);
        }
        let mut out = table.render();
        let _ = writeln!(out, "\n{}", report.overall);
        for issue in &report.issues {
            let _ = writeln!(out, "  {issue}");
        }
        rt.printer().data(&out);
    }
    Ok(if ok { Outcome::Success } else { Outcome::Failure })
}
