//! `envctl errors [targets] [--json]`: this run's recorded failures plus error-looking lines from the end of each
//! selected service's log. Exit 1 when there are any.

use std::fmt::Write as _;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::inspect::{ErrorsReport, LogError};

use super::selected_records;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::supervisor::logs;

/// Lines scanned at the end of each log.
const SCAN_LINES: usize = 200;
/// Words that mark a log line as an error (case-insensitive).
const MARKERS: &[&str] = &["error", "exception", "traceback", "panic", "fatal"];

// Arguments of `errors`.
#[derive(Debug, clap::Args)]
pub struct ErrorsArgs {
    /// Which targets (default: every running target).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Lists errors.
pub fn exec(rt: &EngineRuntime, args: &ErrorsArgs) -> Result<Outcome, EngineError> {
    let records = selected_records(rt, &args.targets, &[])?;
    let report_file = rt.state()?.error_report()?;
    let targets: Vec<&str> = records.iter().map(|r| r.target.as_str()).collect();
    let errors = report_file
        .as_ref()
        .map(|r| {
            r.errors
                .iter()
                .filter(|e| e.target.as_deref().is_none_or(|t| targets.contains(&t)))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut log_errors = Vec::new();
    for record in &records {
        let Some(path) = &record.log_path else { continue };
        for line in logs::tail(std::path::Path::new(path), SCAN_LINES) {
            let lower = line.to_lowercase();
            if MARKERS.iter().any(|m| lower.contains(m)) {
                log_errors.push(LogError {
                    target: record.target.clone(),
                    service: record.service.clone(),
                    line,
                });
            }
        }
    }
    let report = ErrorsReport {
        schema_version: SCHEMA_VERSION,
        run_id: report_file.map(|r| r.run_id),
        errors,
        log_errors,
    };
    let any = !report.errors.is_empty() || !report.log_errors.is_empty();
    if args.json {
        rt.printer().json(&report);
    } else if !any {
        rt.printer().note("no errors");
    } else {
        let mut out = String::new();
        for e in &report.errors {
            let at = [e.target.as_deref(), e.service.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("/");
            let _ = writeln!(out, "{at}: {} ({})", e.message, e.kind);
            if let Some(path) = &e.log_path {
                let _ = writeln!(out, "  log: {path}");
            }
        }
        for e in &report.log_errors {
            let _ = writeln!(out, "{}/{} log: {}", e.target, e.service, e.line);
        }
        rt.printer().data(&out);
    }
    Ok(if any { Outcome::Failure } else { Outcome::Success })
}
