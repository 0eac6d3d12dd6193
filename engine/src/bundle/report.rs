//! `debug-report`: probable causes from a bundle's evidence, each with a score (how sure), its evidence and a
//! fix, most likely first; then the run's timeline and its slowest phases. Root causes (a missing binary, a port
//! taken by someone else, a full disk) score above what they cause (a failed start, a service gone).

use std::collections::{BTreeMap, BTreeSet};

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::bundle::{DebugReport, Finding, Phase, TimelineEntry};
use envctl_contracts::doctor::{CheckReport, Outcome};
use envctl_contracts::jobs::JobStatus;
use envctl_contracts::state::{ProcessKind, ServiceRecord, ServiceStatus};

use super::read::Evidence;

/// Restarts that make a crash loop.
const LOOP_RESTARTS: u32 = 3;
/// Free space below this (or below 1 % of the disk) is a full disk.
const DISK_LOW_BYTES: u64 = 256 * 1024 * 1024;
/// Log lines quoted as evidence.
const QUOTED_LINES: usize = 5;
/// Phases listed.
const SLOWEST: usize = 5;

/// The report of `ev`, read from `bundle`.
pub fn diagnose(ev: &Evidence, bundle: &str) -> DebugReport {
    let mut findings = Vec::new();
    missing_binary(ev, &mut findings);
    port_conflict(ev, &mut findings);
    disk_full(ev, &mut findings);
    crash_loop(ev, &mut findings);
    requirement_failed(ev, &mut findings);
    readiness_timeout(ev, &mut findings);
    stuck_jobs(ev, &mut findings);
    dead_jobs(ev, &mut findings);
    stale_state(ev, &mut findings);
    other_failures(ev, &mut findings);
    doctor_failures(ev, &mut findings);
    if !ev.mismatched.is_empty() {
        findings.push(finding(
            "bundle_damaged",
            20,
            format!("{} file(s) of the bundle do not match its manifest", ev.mismatched.len()),
            ev.mismatched.clone(),
            "make a new bundle with `envctl debug-pack`",
        ));
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.score));
    DebugReport {
        schema_version: SCHEMA_VERSION,
        bundle: bundle.to_owned(),
        run_id: ev.manifest.as_ref().and_then(|m| m.run_id.clone()),
        findings,
        timeline: timeline(ev),
        slowest: slowest(ev),
    }
}

fn finding(kind: &str, score: u32, title: String, evidence: Vec<String>, fix: impl Into<String>) -> Finding {
    Finding { kind: kind.to_owned(), score, title, evidence, fix: fix.into() }
}

fn label(record: &ServiceRecord) -> String {
    format!("{}/{}", record.target, record.service)
}

fn records(ev: &Evidence) -> impl Iterator<Item = &ServiceRecord> {
    ev.run_state.iter().flat_map(|s| &s.services)
}

fn check<'a>(ev: &'a Evidence, gate: &str, name: &str) -> Option<&'a CheckReport> {
    ev.doctor.as_ref()?.checks.iter().find(|c| c.gate == gate && c.name == name)
}

/// A doctor check's finding and evidence as lines.
fn check_lines(check: &CheckReport) -> Vec<String> {
    let mut lines = vec![format!("doctor {}/{}: {}", check.gate, check.name, check.finding)];
    lines.extend(check.evidence.iter().map(|(k, v)| format!("{k}: {v}")));
    lines
}

/// The last lines of a record's log, as the bundle holds it.
fn log_lines(ev: &Evidence, record: &ServiceRecord) -> Vec<String> {
    let name = format!("{}.{}.log", record.target, record.service);
    let lines = ev.log_tails.get(&name).map(Vec::as_slice).unwrap_or_default();
    let start = lines.len().saturating_sub(QUOTED_LINES);
    lines[start..].iter().map(|l| format!("{name}: {l}")).collect()
}

fn missing_binary(ev: &Evidence, out: &mut Vec<Finding>) {
    if let Some(c) = check(ev, "prerequisites", "requirement_binaries").filter(|c| c.outcome == Outcome::Fail)
    {
        let fix = c.hint.clone().unwrap_or_else(|| "install the missing binary".into());
        out.push(finding("missing_binary", 95, c.finding.clone(), check_lines(c), fix));
    }
    if let Some(c) = check(ev, "prerequisites", "git").filter(|c| c.outcome == Outcome::Fail) {
        let fix = c.hint.clone().unwrap_or_else(|| "install git".into());
        out.push(finding("missing_binary", 95, c.finding.clone(), check_lines(c), fix));
    }
    for record in records(ev).filter(|r| r.exit_code == Some(127)) {
        let mut evidence =
            vec![format!("{}: {}", label(record), record.failure.as_deref().unwrap_or("exit 127"))];
        evidence.extend(log_lines(ev, record));
        out.push(finding(
            "missing_binary",
            93,
            format!("{}: its command was not found (exit code 127)", label(record)),
            evidence,
            format!("install the program or fix `command` of {} in .envctl (`envctl explain-startup` shows the argv)", record.service),
        ));
    }
}

fn port_conflict(ev: &Evidence, out: &mut Vec<Finding>) {
    let mut seen = BTreeSet::new();
    for port in ev.facts.iter().flat_map(|f| &f.ports) {
        let Some(foreign) = port.listeners.iter().find(|l| !l.ours) else { continue };
        seen.insert(format!("{}/{}", port.target, port.service));
        let program = foreign.argv.join(" ");
        let mut evidence =
            vec![format!("port {} is planned for {}/{}", port.port, port.target, port.service)];
        evidence.push(format!("pid {} listens on it: {program}", foreign.pid));
        if let (Some(pid), Some(alive)) = (port.lease_pid, port.lease_alive) {
            evidence
                .push(format!("its lease is held by pid {pid} ({})", if alive { "running" } else { "gone" }));
        }
        out.push(finding(
            "port_conflict",
            90,
            format!(
                "port {} of {}/{} is taken by pid {} ({}), which envctl did not start",
                port.port,
                port.target,
                port.service,
                foreign.pid,
                foreign.argv.first().map_or("?", String::as_str)
            ),
            evidence,
            format!(
                "stop that process (`kill {}` if it is yours), or let envctl plan another port: `envctl ports reset` and start again",
                foreign.pid
            ),
        ));
    }
    for record in records(ev).filter(|r| !seen.contains(&label(r))) {
        let lines = log_lines(ev, record);
        if lines.iter().any(|l| l.contains("Address already in use") || l.contains("EADDRINUSE")) {
            out.push(finding(
                "port_conflict",
                85,
                format!("{}: its port was already in use when it started", label(record)),
                lines,
                "see who listens (`ss -ltnp`), stop it or give the service another port",
            ));
        }
    }
}

fn disk_full(ev: &Evidence, out: &mut Vec<Finding>) {
    let mut evidence = Vec::new();
    if let Some(system) = ev.facts.as_ref().map(|f| &f.system)
        && let (Some(free), Some(total)) = (system.disk_available_bytes, system.disk_total_bytes)
        && (free < DISK_LOW_BYTES || free.saturating_mul(100) < total)
    {
        evidence.push(format!(
            "{} has {} MiB free of {} MiB",
            system.disk_mount.as_deref().unwrap_or("the disk"),
            free / (1024 * 1024),
            total / (1024 * 1024)
        ));
    }
    for (name, lines) in &ev.log_tails {
        if let Some(line) = lines.iter().find(|l| l.contains("No space left on device")) {
            evidence.push(format!("{name}: {line}"));
        }
    }
    if !evidence.is_empty() {
        out.push(finding(
            "disk_full",
            88,
            "the disk holding envctl's state is (nearly) full".to_owned(),
            evidence,
            "free space (old logs: `envctl clear-logs`; old data: `envctl stop-all --remove-data`), then start again",
        ));
    }
}

fn crash_loop(ev: &Evidence, out: &mut Vec<Finding>) {
    for record in records(ev).filter(|r| r.kind == ProcessKind::Service) {
        let gave_up = record.failure.as_deref().is_some_and(|f| f.contains("gave up after"));
        if !(record.restarts >= LOOP_RESTARTS || record.status == ServiceStatus::Restarting || gave_up) {
            continue;
        }
        let mut evidence = vec![format!(
            "{}: {} restart(s) in a row, status {:?}, last exit code {}",
            label(record),
            record.restarts,
            record.status,
            record.exit_code.map_or_else(|| "none (a signal)".to_owned(), |c| c.to_string())
        )];
        evidence.extend(record.failure.iter().map(|f| format!("failure: {f}")));
        evidence.extend(log_lines(ev, record));
        out.push(finding(
            "crash_loop",
            80,
            format!(
                "{} is crash-looping: it exits soon after each start ({} restarts)",
                label(record),
                record.restarts
            ),
            evidence,
            format!(
                "`envctl logs --service {0}` shows why it exits; fix it and `envctl restart --service {0}`",
                record.service
            ),
        ));
    }
}

fn requirement_failed(ev: &Evidence, out: &mut Vec<Finding>) {
    for record in records(ev).filter(|r| r.kind == ProcessKind::Requirement) {
        if !matches!(record.status, ServiceStatus::Failed | ServiceStatus::Exited) {
            continue;
        }
        let mut evidence =
            vec![format!("{}: {}", label(record), record.failure.as_deref().unwrap_or("it exited"))];
        evidence.extend(log_lines(ev, record));
        out.push(finding(
            "requirement_failed",
            78,
            format!("requirement {} failed: {}", label(record), record.failure.as_deref().unwrap_or("it exited")),
            evidence,
            format!("`envctl logs --service {}` shows the server's log; `envctl doctor --gate requirements` asks it again", record.service),
        ));
    }
    if let Some(c) = check(ev, "requirements", "probes").filter(|c| c.outcome == Outcome::Fail) {
        let fix = c.hint.clone().unwrap_or_else(|| "`envctl doctor --gate requirements`".into());
        out.push(finding(
            "requirement_failed",
            76,
            format!("a requirement does not answer: {}", c.finding),
            check_lines(c),
            fix,
        ));
    }
}

fn readiness_timeout(ev: &Evidence, out: &mut Vec<Finding>) {
    for record in records(ev) {
        let Some(failure) = record.failure.as_deref().filter(|f| f.starts_with("not ready after")) else {
            continue;
        };
        let mut evidence = vec![format!("{}: {failure}", label(record))];
        if let Some(probe) = record.spec.as_ref().and_then(|s| s.ready.as_ref()) {
            evidence.push(format!("probe: {}", serde_json::to_string(probe).unwrap_or_default()));
        }
        let probes = &record.probes;
        for p in &probes[probes.len().saturating_sub(QUOTED_LINES)..] {
            evidence.push(format!("{} {}: {}", p.at, if p.ok { "ok" } else { "failed" }, p.detail));
        }
        evidence.extend(log_lines(ev, record));
        out.push(finding(
            "readiness_timeout",
            75,
            format!("{} never became ready: {failure}", label(record)),
            evidence,
            "check that the probe (`ready = …`) matches what the service does (its port, path, log line), or raise its `timeout`",
        ));
    }
}

fn stuck_jobs(ev: &Evidence, out: &mut Vec<Finding>) {
    if let Some(c) = check(ev, "job_runtime", "orphans").filter(|c| c.outcome == Outcome::Fail) {
        let fix = c.hint.clone().unwrap_or_else(|| "`envctl doctor --fix` requeues them".into());
        out.push(finding("stuck_jobs", 72, format!("stuck jobs: {}", c.finding), check_lines(c), fix));
    }
    if let Some(c) = check(ev, "job_runtime", "queue_age").filter(|c| c.outcome == Outcome::Warn) {
        let fix = c.hint.clone().unwrap_or_else(|| "start a worker".into());
        out.push(finding("stuck_jobs", 60, format!("jobs wait: {}", c.finding), check_lines(c), fix));
    }
}

fn dead_jobs(ev: &Evidence, out: &mut Vec<Finding>) {
    let dead: Vec<String> = ev
        .jobs
        .iter()
        .filter(|j| j.status == JobStatus::Dead)
        .map(|j| format!("{} ({}): {}", j.id, j.job_type, j.error.as_deref().unwrap_or("no error recorded")))
        .collect();
    if !dead.is_empty() {
        out.push(finding(
            "dead_jobs",
            50,
            format!("{} job(s) failed on every attempt", dead.len()),
            dead,
            "`envctl jobs show ID` and `envctl jobs logs ID` show why; `envctl jobs retry ID` runs one again",
        ));
    }
}

fn stale_state(ev: &Evidence, out: &mut Vec<Finding>) {
    let alive: BTreeMap<u32, bool> =
        ev.facts.iter().flat_map(|f| &f.processes).map(|p| (p.pid, p.alive)).collect();
    let gone: Vec<String> = records(ev)
        .filter(|r| matches!(r.status, ServiceStatus::Ready | ServiceStatus::Starting))
        .filter_map(|r| {
            r.pid.filter(|pid| alive.get(pid) == Some(&false)).map(|pid| format!("{} (pid {pid})", label(r)))
        })
        .collect();
    let mut evidence: Vec<String> = gone.iter().map(|g| format!("recorded as running, gone: {g}")).collect();
    if let Some(c) = check(ev, "state_truth", "processes").filter(|c| c.outcome == Outcome::Fail) {
        evidence.extend(check_lines(c));
    }
    if !evidence.is_empty() {
        let title = if gone.is_empty() {
            "the saved state names processes that are gone".to_owned()
        } else {
            format!("the saved state names processes that are gone: {}", gone.join(", "))
        };
        out.push(finding(
            "stale_state",
            45,
            title,
            evidence,
            "`envctl resume` restarts what is gone; `envctl stop` forgets it",
        ));
    }
}

/// Every recorded failure no finding above explains.
fn other_failures(ev: &Evidence, out: &mut Vec<Finding>) {
    let Some(report) = &ev.error_report else { return };
    let explained: BTreeSet<String> =
        out.iter().flat_map(|f| [f.title.clone()].into_iter().chain(f.evidence.clone())).collect();
    for error in &report.errors {
        let subject = match (&error.target, &error.service) {
            (Some(t), Some(s)) => format!("{t}/{s}"),
            _ => "the run".to_owned(),
        };
        if explained.iter().any(|line| line.contains(&subject) && line.contains(error.message.as_str())) {
            continue;
        }
        let mut evidence = vec![format!("{} ({}): {}", subject, error.kind, error.message)];
        let tail = &error.log_tail;
        evidence.extend(tail[tail.len().saturating_sub(QUOTED_LINES)..].iter().cloned());
        out.push(finding(
            "failure",
            30,
            format!("{subject}: {}", error.message),
            evidence,
            "`envctl errors` shows it with the log lines around it",
        ));
    }
}

/// Doctor checks read by the findings above; any other failing check is a finding of its own.
const READ_CHECKS: &[(&str, &str)] = &[
    ("prerequisites", "requirement_binaries"),
    ("prerequisites", "git"),
    ("requirements", "probes"),
    ("job_runtime", "orphans"),
    ("state_truth", "processes"),
];

/// Every failing doctor check no finding above reads.
fn doctor_failures(ev: &Evidence, out: &mut Vec<Finding>) {
    let checks = ev.doctor.iter().flat_map(|d| &d.checks);
    for c in checks.filter(|c| c.outcome == Outcome::Fail) {
        if READ_CHECKS.contains(&(c.gate.as_str(), c.name.as_str())) {
            continue;
        }
        let fix = c.hint.clone().unwrap_or_else(|| format!("`envctl doctor --gate {}`", c.gate));
        out.push(finding(
            "doctor_check",
            35,
            format!("doctor {}/{}: {}", c.gate, c.name, c.finding),
            check_lines(c),
            fix,
        ));
    }
}

fn subject(target: Option<&String>, service: Option<&String>) -> String {
    match (target, service) {
        (Some(t), Some(s)) => format!("{t}/{s}"),
        (Some(t), None) => t.clone(),
        _ => String::new(),
    }
}

fn timeline(ev: &Evidence) -> Vec<TimelineEntry> {
    let mut entries: Vec<TimelineEntry> = ev
        .events
        .iter()
        .map(|e| TimelineEntry {
            at: e.at.clone(),
            subject: subject(e.target.as_ref(), e.service.as_ref()),
            event: e.event.clone(),
        })
        .collect();
    entries.sort_by(|a, b| a.at.cmp(&b.at));
    entries
}

/// The run (`run.begin` to `run.ready`/`run.failed`) and each service (its first `service.starting` to its next
/// `service.ready`), slowest first.
fn slowest(ev: &Evidence) -> Vec<Phase> {
    let at = |t: &str| humantime::parse_rfc3339_weak(t).ok();
    let mut begun: BTreeMap<String, std::time::SystemTime> = BTreeMap::new();
    let mut phases = Vec::new();
    for event in &ev.events {
        let name = subject(event.target.as_ref(), event.service.as_ref());
        let Some(when) = at(&event.at) else { continue };
        match event.event.as_str() {
            "run.begin" => {
                begun.insert("run".into(), when);
            }
            "service.starting" => {
                begun.entry(name).or_insert(when);
            }
            "run.ready" | "run.failed" | "service.ready" => {
                let key = if event.event.starts_with("run.") { "run".to_owned() } else { name };
                if let Some(start) = begun.remove(&key)
                    && let Ok(took) = when.duration_since(start)
                {
                    phases.push(Phase { name: key, ms: took.as_secs_f64() * 1000.0 });
                }
            }
            _ => {}
        }
    }
    phases.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    phases.truncate(SLOWEST);
    phases
}

#[cfg(test)]
mod tests {
    use envctl_contracts::bundle::{BundleFacts, Listener, PortFact, SystemFacts};

    use super::*;

    fn record(service: &str, status: ServiceStatus) -> ServiceRecord {
        ServiceRecord::new(ProcessKind::Service, "main", service, status)
    }

    fn facts(ports: Vec<PortFact>) -> BundleFacts {
        BundleFacts {
            schema_version: 1,
            processes: Vec::new(),
            ports,
            versions: BTreeMap::new(),
            system: SystemFacts {
                os: None,
                kernel: None,
                cpus: 1,
                physical_cores: None,
                memory_total_bytes: 0,
                memory_available_bytes: 0,
                disk_mount: Some("/".into()),
                disk_total_bytes: Some(100 << 30),
                disk_available_bytes: Some(50 << 30),
            },
        }
    }

    #[test]
    fn a_foreign_listener_outranks_the_crash_loop_it_causes() {
        let mut looping = record("web", ServiceStatus::Restarting);
        looping.restarts = 4;
        let ev = Evidence {
            run_state: Some(crate::state::test_run_state(vec![looping])),
            facts: Some(facts(vec![PortFact {
                port: 8000,
                target: "main".into(),
                service: "web".into(),
                lease_pid: Some(1),
                lease_alive: Some(true),
                listeners: vec![Listener { pid: 42, argv: vec!["nc".into(), "-l".into()], ours: false }],
            }])),
            ..Evidence::default()
        };
        let report = diagnose(&ev, "b.tar.gz");
        let kinds: Vec<&str> = report.findings.iter().map(|f| f.kind.as_str()).collect();
        assert_eq!(kinds, ["port_conflict", "crash_loop"], "{report:?}");
        assert!(report.findings[0].title.contains("pid 42 (nc)"), "{}", report.findings[0].title);
    }

    #[test]
    fn nothing_wrong_finds_nothing() {
        let ev = Evidence {
            run_state: Some(crate::state::test_run_state(vec![record("web", ServiceStatus::Ready)])),
            facts: Some(facts(Vec::new())),
            ..Evidence::default()
        };
        assert!(diagnose(&ev, "b").findings.is_empty());
    }
}
