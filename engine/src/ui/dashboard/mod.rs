//! The dashboard: what runs (targets × services, requirements, jobs) from the host's [`HostView`]s.
//!
//! The view is turned into rows once ([`Board`]), and the rows are drawn either once as text ([`Board::text`]:
//! `envctl dashboard --snapshot`, or no terminal) or live in the terminal (`tui`, behind the `dashboard` feature).
//! This module knows nothing of the host or the job store: the command hands it views and an [`Actions`] that
//! carries out what a key asks for through envctl's own commands.

#[cfg(feature = "dashboard")]
pub mod tui;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use envctl_contracts::control::{HostView, JobsView};
use envctl_contracts::jobs::Job;
use envctl_contracts::state::{ProcessKind, ServiceRecord, ServiceStatus};

/// What a key asks the environment to do, carried out by the command (through envctl's own commands).
pub trait Actions: Send + Sync {
    /// `s`: stop `service` of `target`; the message to show.
    fn stop(&self, target: &str, service: &str) -> Result<String, String>;
    /// `S`: start it.
    fn start(&self, target: &str, service: &str) -> Result<String, String>;
    /// `r`: restart it.
    fn restart(&self, target: &str, service: &str) -> Result<String, String>;
    /// `t`: run its tests as jobs.
    fn test(&self, target: &str, service: &str) -> Result<String, String>;
    /// `d`: run doctor; its gates, one line each.
    fn doctor(&self) -> Result<Vec<String>, String>;
    /// The last `n` lines of a service's log.
    fn log_tail(&self, record: &ServiceRecord, n: usize) -> Vec<String>;
}

/// One row of the services table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Service or requirement.
    pub kind: ProcessKind,
    /// Target.
    pub target: String,
    /// Service or requirement name.
    pub service: String,
    /// Its status.
    pub status: ServiceStatus,
    /// Port (or `-`).
    pub port: String,
    /// URL (or `-`), secrets hidden.
    pub url: String,
    /// Pid (or `-`).
    pub pid: String,
    /// How long the current process has run (or `-`).
    pub uptime: String,
    /// Restarts by its policy.
    pub restarts: u32,
    /// The last readiness probe's result (or `-`).
    pub probe: String,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

/// The glyph of a status.
pub fn glyph(status: ServiceStatus) -> &'static str {
    match status {
        ServiceStatus::Pending => "·",
        ServiceStatus::Starting => "◐",
        ServiceStatus::Ready => "●",
        ServiceStatus::Restarting => "↻",
        ServiceStatus::Failed => "✗",
        ServiceStatus::Exited => "○",
        ServiceStatus::Stopped => "■",
    }
}

/// The word of a status.
pub fn word(status: ServiceStatus) -> &'static str {
    match status {
        ServiceStatus::Pending => "pending",
        ServiceStatus::Starting => "starting",
        ServiceStatus::Ready => "ready",
        ServiceStatus::Restarting => "restarting",
        ServiceStatus::Failed => "failed",
        ServiceStatus::Exited => "exited",
        ServiceStatus::Stopped => "stopped",
    }
}

/// Everything the dashboard draws, made from one view.
#[derive(Debug, Clone, Default)]
pub struct Board {
    /// The repository's name.
    pub title: String,
    /// `host pid N` or `no host running`.
    pub host: String,
    /// The run.
    pub run_id: String,
    /// Services first, then requirement processes, each by target.
    pub rows: Vec<Row>,
    /// Target → requirement → URL (secrets hidden).
    pub requirements: BTreeMap<String, BTreeMap<String, String>>,
    /// The job queue, when the host reads it.
    pub jobs: Option<JobsView>,
}

impl Board {
    /// The board of `view` at `now`; `requirements` are the URLs each target's services reach (from the plan).
    pub fn new(
        title: &str,
        view: &HostView,
        requirements: &BTreeMap<String, BTreeMap<String, String>>,
        now: SystemTime,
    ) -> Self {
        let mut records: Vec<&ServiceRecord> = view.services.iter().collect();
        records.sort_by_key(|r| (r.kind == ProcessKind::Requirement, r.target.clone(), r.service.clone()));
        Self {
            title: title.to_owned(),
            host: view.host.map_or_else(|| "no host running".to_owned(), |h| format!("host pid {}", h.pid)),
            run_id: view.run_id.clone(),
            rows: records.into_iter().map(|r| row(r, now)).collect(),
            requirements: requirements
                .iter()
                .map(|(t, reqs)| {
                    (t.clone(), reqs.iter().map(|(n, u)| (n.clone(), hide_secrets(u))).collect())
                })
                .collect(),
            jobs: view.jobs.clone(),
        }
    }

    /// The board as text, once (`--snapshot`, or no terminal).
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "envctl dashboard: {} ({}, run {})", self.title, self.host, self.run_id);
        let _ = writeln!(out);
        let mut table = super::Table::new(&[
            "TARGET", "SERVICE", "STATUS", "PORT", "URL", "PID", "UPTIME", "RESTARTS", "PROBE",
        ]);
        for row in &self.rows {
            let name = match row.kind {
                ProcessKind::Service => row.service.clone(),
                ProcessKind::Requirement => format!("{} (requirement)", row.service),
            };
            table.row(vec![
                row.target.clone(),
                name,
                format!("{} {}", glyph(row.status), word(row.status)),
                row.port.clone(),
                row.url.clone(),
                row.pid.clone(),
                row.uptime.clone(),
                row.restarts.to_string(),
                row.probe.clone(),
            ]);
        }
        if self.rows.is_empty() {
            out.push_str("nothing runs (envctl start starts the environment)\n");
        } else {
            out.push_str(&table.render());
        }
        for row in self.rows.iter().filter(|r| r.failure.is_some()) {
            let _ =
                writeln!(out, "  {}/{}: {}", row.target, row.service, row.failure.as_deref().unwrap_or(""));
        }
        if !self.requirements.is_empty() {
            let _ = writeln!(out, "\nREQUIREMENTS");
            for (target, reqs) in &self.requirements {
                for (name, url) in reqs {
                    let _ = writeln!(out, "  {target:<12} {name:<12} {url}");
                }
            }
        }
        let _ = writeln!(out, "\nJOBS");
        out.push_str(&jobs_text(self.jobs.as_ref()));
        out
    }
}

/// The jobs panel as text lines.
pub fn jobs_text(jobs: Option<&JobsView>) -> String {
    let Some(jobs) = jobs else {
        return "  (no job store open: the host opens it with the first start)\n".to_owned();
    };
    let mut out = format!(
        "  {} running, {} queued, {} scheduled, {} failed, {} dead\n",
        jobs.running, jobs.queued, jobs.scheduled, jobs.failed, jobs.dead
    );
    for job in &jobs.active {
        let _ = writeln!(out, "  {}", active_line(job));
    }
    for job in &jobs.failures {
        let _ = writeln!(out, "  {}", failure_line(job));
    }
    out
}

/// A running job: type, target, a bar of its progress, step.
pub fn active_line(job: &Job) -> String {
    let progress = job.progress.as_ref();
    let percent = progress.and_then(|p| p.percent);
    let bar = bar(percent, 20);
    let step = progress.and_then(|p| p.step.clone()).unwrap_or_default();
    let pct = percent.map_or_else(|| "  ?%".to_owned(), |p| format!("{p:>3.0}%"));
    format!("{} {:<14} {:<10} {bar} {pct} {step}", job.id, job.job_type, job.target.as_deref().unwrap_or("-"))
        .trim_end()
        .to_owned()
}

/// A failed or dead job: what and why.
pub fn failure_line(job: &Job) -> String {
    format!(
        "{} {} {} {}: {}",
        word_of_job(job),
        job.id,
        job.job_type,
        job.target.as_deref().unwrap_or("-"),
        job.error.as_deref().unwrap_or("no error recorded")
    )
}

fn word_of_job(job: &Job) -> String {
    serde_json::to_value(job.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// `[#####-----]` for `percent` of `width` cells.
pub fn bar(percent: Option<f64>, width: usize) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let filled = percent.map_or(0, |p| ((p.clamp(0.0, 100.0) / 100.0) * width as f64).round() as usize);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

fn row(record: &ServiceRecord, now: SystemTime) -> Row {
    let live =
        matches!(record.status, ServiceStatus::Starting | ServiceStatus::Ready | ServiceStatus::Restarting);
    let uptime = record
        .started_at
        .as_deref()
        .filter(|_| live && record.pid.is_some())
        .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
        .and_then(|at| now.duration_since(at).ok())
        .map_or_else(|| "-".to_owned(), short_duration);
    let probe = record.probes.last().map_or_else(
        || "-".to_owned(),
        |p| if p.ok { "ok".to_owned() } else { format!("failing: {}", p.detail) },
    );
    Row {
        kind: record.kind,
        target: record.target.clone(),
        service: record.service.clone(),
        status: record.status,
        port: record.port.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        url: record.url.as_deref().map_or_else(|| "-".to_owned(), hide_secrets),
        pid: record.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        uptime,
        restarts: record.restarts,
        probe,
        failure: record.failure.clone().filter(|_| !live),
    }
}

/// `1h02m`, `3m05s`, `42s`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// A URL with its password (`user:password@`) replaced by `***`.
pub fn hide_secrets(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None if scheme.starts_with("redis") && !userinfo.is_empty() => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_urls_are_hidden() {
        assert_eq!(
            hide_secrets("postgres://app:s3cret@127.0.0.1:5432/db"),
            "postgres://app:***@127.0.0.1:5432/db"
        );
        assert_eq!(hide_secrets("redis://:pw@127.0.0.1:6379/0"), "redis://:***@127.0.0.1:6379/0");
        assert_eq!(hide_secrets("http://127.0.0.1:8000"), "http://127.0.0.1:8000");
    }

    #[test]
    fn bars_and_durations() {
        assert_eq!(bar(Some(50.0), 10), "[#####-----]");
        assert_eq!(bar(None, 4), "[----]");
        assert_eq!(short_duration(Duration::from_secs(3725)), "1h02m");
        assert_eq!(short_duration(Duration::from_secs(65)), "1m05s");
    }
}
