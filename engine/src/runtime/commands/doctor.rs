//! `envctl doctor [targets] [--json] [--strict] [--fix] [--no-canary] [--gate NAME ...]`: the readiness gates.
//! Exit 0 when no gate fails, 1 when one does (`--strict`: or warns), 2 on Ctrl-C. Every run writes
//! `runtime_readiness_report.json`.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use envctl_contracts::doctor::{Outcome as Status, ReadinessReport};

use crate::doctor::{self, Ctx, Gate, Options};
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::ui::Verbosity;

/// How long the canary job may take.
const CANARY_TIMEOUT: Duration = Duration::from_secs(5);

// Arguments of `doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Which targets (default: the configured default mode).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Warnings fail too.
    #[arg(long)]
    pub strict: bool,
    /// Apply the safe repairs (stale leases and sockets, orphaned jobs, gone workers), then check again.
    #[arg(long)]
    pub fix: bool,
    /// Do not enqueue the canary job.
    #[arg(long)]
    pub no_canary: bool,
    /// Only this gate (repeatable): config, prerequisites, state_truth, requirements, services, job_runtime,
    /// contracts.
    #[arg(long = "gate", value_name = "NAME", value_parser = parse_gate)]
    pub gates: Vec<GateName>,
}

/// A gate named on the command line.
#[derive(Debug, Clone, Copy)]
pub struct GateName(Gate);

fn parse_gate(name: &str) -> Result<GateName, String> {
    Gate::parse(name).map(GateName).ok_or_else(|| {
        let names: Vec<&str> = Gate::ALL.iter().map(|g| g.name()).collect();
        format!("no gate `{name}`; the gates are: {}", names.join(", "))
    })
}

/// Runs the doctor.
pub fn exec(rt: &EngineRuntime, args: &DoctorArgs) -> Result<Outcome, EngineError> {
    let started = Instant::now();
    let tokio = rt.tokio()?;
    let sigint = {
        let _entered = tokio.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok()
    };
    let sigint = RefCell::new(sigint);
    let seen = Cell::new(false);
    let interrupted = || {
        if !seen.get()
            && let Some(signal) = sigint.borrow_mut().as_mut()
        {
            // One poll of the signal, no timer (a zero timeout would wait for the timer wheel's next tick).
            let pending = std::future::poll_fn(|cx| std::task::Poll::Ready(signal.poll_recv(cx).is_ready()));
            seen.set(tokio.block_on(pending));
        }
        seen.get()
    };
    let settings = rt.settings().map_err(|e| e.to_string());
    let targets = match &settings {
        Ok(_) => rt.select(&args.targets.selection())?,
        Err(_) => Vec::new(),
    };
    let open_store = || rt.job_store().map_err(|e| e.to_string());
    let options = Options {
        strict: args.strict,
        canary: !args.no_canary,
        gates: args.gates.iter().map(|g| g.0).collect(),
        canary_timeout: CANARY_TIMEOUT,
    };
    let ctx = Ctx::new(
        settings,
        rt.paths().ok(),
        targets,
        rt.env().get("PATH").map(str::to_owned),
        rt.state().ok(),
        rt.ledger().ok(),
        &open_store,
        tokio,
        options,
        &interrupted,
    );
    let Some((gates, checks)) = doctor::run(&ctx) else { return Ok(Outcome::Interrupted) };
    let mut report = doctor::report(&ctx, gates, checks, Vec::new(), started.elapsed());
    if args.fix {
        let before = report;
        let fixes = doctor::fix(&ctx);
        let fresh = ctx.again();
        let Some((gates, checks)) = doctor::run(&fresh) else { return Ok(Outcome::Interrupted) };
        report = doctor::report(&fresh, gates, checks, fixes, started.elapsed());
        if !args.json {
            print_fixes(rt, &before, &report);
        }
    }
    // The report goes beside the run's copy too, which a start that just answered may still be writing.
    if let Some(paths) = ctx.paths {
        crate::host::client::HostClient::settle(paths);
    }
    let saved = ctx.state.as_ref().map(|s| s.save_readiness_report(&report));
    if let Some(Err(e)) = &saved {
        rt.printer().warn(&e.to_string());
    }
    let path = saved.and_then(Result::ok);
    if args.json {
        rt.printer().json(&report);
    } else {
        print_human(rt, &report, path.as_deref());
    }
    Ok(if report.ok { Outcome::Success } else { Outcome::Failure })
}

/// A fresh report of the default targets without the canary and without saving it (for `debug-pack`); `None`
/// when interrupted.
pub fn fresh_report(rt: &EngineRuntime) -> Result<Option<ReadinessReport>, EngineError> {
    let started = Instant::now();
    let tokio = rt.tokio()?;
    let settings = rt.settings().map_err(|e| e.to_string());
    let targets = match &settings {
        Ok(_) => rt.select(&crate::targets::Selection::Default).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let open_store = || rt.job_store().map_err(|e| e.to_string());
    let options = Options { strict: false, canary: false, gates: Vec::new(), canary_timeout: CANARY_TIMEOUT };
    let never = || false;
    let ctx = Ctx::new(
        settings,
        rt.paths().ok(),
        targets,
        rt.env().get("PATH").map(str::to_owned),
        rt.state().ok(),
        rt.ledger().ok(),
        &open_store,
        tokio,
        options,
        &never,
    );
    Ok(doctor::run(&ctx)
        .map(|(gates, checks)| doctor::report(&ctx, gates, checks, Vec::new(), started.elapsed())))
}

/// What `--fix` did, after the first verdict.
fn print_fixes(rt: &EngineRuntime, before: &ReadinessReport, after: &ReadinessReport) {
    let mut out = format!("before --fix: {}\n", verdict_line(before, None));
    if after.fixes.is_empty() {
        out.push_str("fix: nothing to repair\n");
    }
    for fix in &after.fixes {
        let _ = writeln!(out, "fix: {} {}: {}", fix.action, fix.subject, fix.detail);
    }
    if rt.printer().verbosity() > Verbosity::Quiet {
        rt.printer().data(&out);
    }
}

fn glyph(outcome: Status) -> &'static str {
    match outcome {
        Status::Pass => "✓",
        Status::Warn => "!",
        Status::Fail => "✗",
        Status::Skip => "-",
    }
}

/// One line per gate, then the failing and warning checks with their hints, then the verdict (`-q`: the verdict
/// only).
fn print_human(rt: &EngineRuntime, report: &ReadinessReport, path: Option<&std::path::Path>) {
    let mut out = String::new();
    if rt.printer().verbosity() > Verbosity::Quiet {
        for gate in &report.gates {
            let checks: Vec<_> = report.checks.iter().filter(|c| c.gate == gate.name).collect();
            let passed = checks.iter().filter(|c| c.outcome == Status::Pass).count();
            let _ = writeln!(
                out,
                "{} {:<14} {:<5} ({passed}/{} checks pass)",
                glyph(gate.outcome),
                gate.name,
                gate.outcome.as_str(),
                checks.len()
            );
        }
        let flagged: Vec<_> =
            report.checks.iter().filter(|c| matches!(c.outcome, Status::Fail | Status::Warn)).collect();
        if !flagged.is_empty() {
            out.push('\n');
        }
        for check in flagged {
            let _ =
                writeln!(out, "{} {}/{}: {}", glyph(check.outcome), check.gate, check.name, check.finding);
            if let Some(hint) = &check.hint {
                let _ = writeln!(out, "    hint: {hint}");
            }
        }
        out.push('\n');
    }
    out.push_str(&verdict_line(report, path));
    rt.printer().data(&out);
}

/// `doctor: not ready (failed: state_truth; warned: job_runtime)`.
fn verdict_line(report: &ReadinessReport, path: Option<&std::path::Path>) -> String {
    let named = |outcome: Status| -> Vec<&str> {
        report.gates.iter().filter(|g| g.outcome == outcome).map(|g| g.name.as_str()).collect()
    };
    let mut parts = Vec::new();
    for (label, outcome) in [("failed", Status::Fail), ("warned", Status::Warn)] {
        let gates = named(outcome);
        if !gates.is_empty() {
            parts.push(format!("{label}: {}", gates.join(", ")));
        }
    }
    let detail = if parts.is_empty() { String::new() } else { format!(" ({})", parts.join("; ")) };
    let strict = if report.strict { " [strict]" } else { "" };
    let saved = path.map(|p| format!(" — report: {}", p.display())).unwrap_or_default();
    format!("doctor: {}{detail}{strict} in {:.0} ms{saved}", report.verdict, report.duration_ms)
}
