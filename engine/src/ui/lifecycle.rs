//! Lifecycle output: progress lines while a start waits, and the URL listing once it is ready.

use std::fmt::Write as _;

use envctl_contracts::control::Progress;
use envctl_contracts::state::{ServiceRecord, ServiceStatus};

use super::Printer;

/// Prints one progress line on stderr.
pub fn show_progress(printer: Printer, p: &Progress) {
    let line = match p.status {
        ServiceStatus::Ready => {
            format!("  ready     {}/{} {} ({} ms)", p.target, p.service, p.detail, p.elapsed_ms)
        }
        ServiceStatus::Starting => format!("  starting  {}/{}", p.target, p.service),
        ServiceStatus::Failed => format!("  failed    {}/{}: {}", p.target, p.service, p.detail),
        other => {
            format!("  {:<9} {}/{} {}", format!("{other:?}").to_lowercase(), p.target, p.service, p.detail)
        }
    };
    printer.note(&line);
}

/// Each target's services with their URLs, one block per target.
pub fn urls(records: &[ServiceRecord]) -> String {
    let mut out = String::new();
    let mut current = "";
    for record in records {
        if record.target != current {
            current = &record.target;
            let _ = writeln!(out, "{current}");
        }
        let url = record.url.clone().unwrap_or_else(|| "(no port)".into());
        let _ = writeln!(out, "  {:<16} {url}", record.service);
    }
    out
}
