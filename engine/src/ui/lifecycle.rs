//! Lifecycle output: progress lines while a start waits, and the URL listing once it is ready.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use envctl_contracts::config::{ProbeKind, ReadyProbe, RestartPolicy};
use envctl_contracts::control::Progress;
use envctl_contracts::state::{ServiceRecord, ServiceStatus};

use super::Printer;

/// Prints one progress line on stderr.
pub fn show_progress(printer: Printer, p: &Progress) {
    if let Some(output) = &p.output {
        printer.note(&format!("  {}/{} | {output}", p.target, p.service));
        return;
    }
    let line = match p.status {
        // Every service passes through it at once; only what happens next is news.
        ServiceStatus::Pending => return,
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

/// Each target's services with their URLs, then the requirements as that target reaches them, one block per
/// target.
pub fn urls(records: &[ServiceRecord], requirements: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    use envctl_contracts::state::ProcessKind;
    let mut targets: Vec<&str> = records.iter().map(|r| r.target.as_str()).collect();
    targets.extend(requirements.keys().map(String::as_str));
    targets.dedup();
    let mut seen = std::collections::BTreeSet::new();
    let mut out = String::new();
    for target in targets.into_iter().filter(|t| seen.insert(*t)) {
        let _ = writeln!(out, "{target}");
        for record in records.iter().filter(|r| r.target == target && r.kind == ProcessKind::Service) {
            let url = record.url.clone().unwrap_or_else(|| "(no port)".into());
            let _ = writeln!(out, "  {:<16} {url}", record.service);
        }
        for (name, url) in requirements.get(target).into_iter().flatten() {
            let _ = writeln!(out, "  {name:<16} {url}");
        }
    }
    out
}

/// A readiness probe as the config spells it (`http /health`, `tcp`, …), with its timeout.
pub fn probe_text(ready: Option<&ReadyProbe>, has_port: bool) -> String {
    let Some(ready) = ready else {
        return if has_port {
            "tcp (default for a service with a port)".into()
        } else {
            "none: ready once it runs".into()
        };
    };
    let probe = match &ready.probe {
        ProbeKind::Tcp => "tcp".to_owned(),
        ProbeKind::Http { path, status } => {
            format!("http {path}{}", status.map(|s| format!(" (status {s})")).unwrap_or_default())
        }
        ProbeKind::Exec { command } => format!("exec `{command}`"),
        ProbeKind::Log { pattern } => format!("log /{pattern}/"),
        ProbeKind::Postgres { .. } => "postgres SELECT 1".to_owned(),
        ProbeKind::Redis => "redis PING".to_owned(),
    };
    format!(
        "{probe}, timeout {}",
        humantime::format_duration(std::time::Duration::from_millis(ready.timeout_ms))
    )
}

/// A restart policy as the config spells it.
pub fn restart_text(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::No => "no",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Always => "always",
    }
}
