//! The `services` gate: `envctl health`'s verdict now, crash loops and the run's recent failures.

use std::time::{Duration, SystemTime};

use envctl_contracts::state::ServiceStatus;

use super::{Check, Ctx, listing, unconfigured};
use crate::supervisor::health::{Supervision, observe, reprobe, verdict};

/// Restarts within this window count towards a crash loop.
const LOOP_WINDOW: Duration = Duration::from_secs(10 * 60);
/// This many restarts within the window is a crash loop.
const LOOP_RESTARTS: u32 = 3;

/// The health verdict of the selected targets' services (what `envctl health` says).
pub fn readiness(ctx: &Ctx<'_>) -> Check {
    if let Some(skip) = unconfigured(ctx) {
        return skip;
    }
    let records: Vec<_> = ctx.service_records().into_iter().cloned().collect();
    if records.is_empty() {
        return Check::skip("no service has been started");
    }
    let host = ctx.run_state().ok().flatten().and_then(|s| s.host);
    // Each ready service's readiness probe is asked again, now, as `envctl health` does.
    let mut observed = observe(records);
    let base_env: std::collections::BTreeMap<String, String> =
        ctx.path_var.iter().map(|p| ("PATH".to_owned(), p.clone())).collect();
    ctx.tokio.block_on(reprobe(&mut observed, &base_env));
    let report = verdict(observed, Supervision::of(host), false);
    let healthy = report.services.iter().filter(|s| s.healthy).count();
    let mut found = match report.overall.as_str() {
        "healthy" => Check::pass(format!("{healthy} service(s) healthy")),
        "degraded" => Check::warn(
            format!("degraded: {}", listing(&report.issues)),
            "`envctl health` shows each service; `envctl logs --service NAME` shows why",
        ),
        _ => Check::fail(
            format!("unhealthy: {}", listing(&report.issues)),
            "`envctl health` shows each service; `envctl resume` restarts what is gone",
        ),
    };
    for s in &report.services {
        found = found.with(format!("{}/{}", s.target, s.service), s.truth.clone());
    }
    found
}

/// A service that keeps restarting (its restart policy at work right now, or several restarts lately).
pub fn crash_loops(ctx: &Ctx<'_>) -> Check {
    if let Some(skip) = unconfigured(ctx) {
        return skip;
    }
    let records = ctx.service_records();
    if records.is_empty() {
        return Check::skip("no service has been started");
    }
    let recent = |at: Option<&String>| {
        at.and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LOOP_WINDOW)
    };
    let looping: Vec<String> = records
        .iter()
        .filter(|r| {
            r.status == ServiceStatus::Restarting
                || r.restarts >= LOOP_RESTARTS && recent(r.started_at.as_ref())
        })
        .map(|r| format!("{}/{} ({} restarts)", r.target, r.service, r.restarts))
        .collect();
    if looping.is_empty() {
        let restarted = records.iter().filter(|r| r.restarts > 0).count();
        return Check::pass(format!("no crash loop ({restarted} service(s) ever restarted)"));
    }
    Check::fail(
        format!("crash-looping: {}", listing(&looping)),
        "`envctl logs --service NAME` shows why it exits; fix it and `envctl restart --service NAME`",
    )
}

/// The failures recorded for the last run (`error_report.json`).
pub fn recent_failures(ctx: &Ctx<'_>) -> Check {
    if let Some(skip) = unconfigured(ctx) {
        return skip;
    }
    let Some(state) = &ctx.state else { return Check::skip("no repository found") };
    let Ok(Some(report)) = state.error_report() else { return Check::pass("no failure recorded") };
    let names = ctx.target_names();
    let errors: Vec<String> = report
        .errors
        .iter()
        .filter(|e| e.target.as_deref().is_none_or(|t| names.contains(&t)))
        .map(|e| match (&e.target, &e.service) {
            (Some(t), Some(s)) => format!("{t}/{s}: {}", e.message),
            _ => e.message.clone(),
        })
        .collect();
    if errors.is_empty() {
        return Check::pass(format!("no failure recorded in {}", report.run_id));
    }
    Check::warn(
        format!("{} failure(s) in {}: {}", errors.len(), report.run_id, listing(&errors)),
        "`envctl errors` shows them with the log lines around them",
    )
    .with("run_id", &report.run_id)
}
