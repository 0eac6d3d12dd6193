//! The health verdict: every recorded service checked against `/proc` ([`super::truth`]), its readiness probe
//! asked again ([`reprobe`]), and judged healthy, degraded (restarted, or still starting) or unhealthy.
//! `envctl health` prints it; the doctor's `services` gate reuses it.

use std::collections::BTreeMap;
use std::path::Path;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::config::ProbeKind;
use envctl_contracts::inspect::{HealthReport, ServiceHealth};
use envctl_contracts::state::{ProbeRecord, ServiceRecord, ServiceStatus};

use super::probe::Probe;
use super::truth::{Truth, check_all};

/// One recorded service, what `/proc` says of it now and, once [`reprobe`] ran, its probe's answer now.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The saved record.
    pub record: ServiceRecord,
    /// What `/proc` says.
    pub truth: Truth,
    /// The probe's answer now, when it was asked.
    pub probe: Option<ProbeRecord>,
}

/// Checks every record against `/proc` (no probe yet).
pub fn observe(records: Vec<ServiceRecord>) -> Vec<Observed> {
    let truths = check_all(&records);
    records.into_iter().zip(truths).map(|(record, truth)| Observed { truth, record, probe: None }).collect()
}

/// The probe `health` asks again for a ready, running service: the one it became ready with (`tcp` for a port
/// without a configured probe). A `log` probe is not asked: it matched a line once, which says nothing about now
/// (and a rotated log would fail it).
fn reprobe_of(observed: &Observed, base_env: &BTreeMap<String, String>) -> Option<Probe> {
    let record = &observed.record;
    if observed.truth != Truth::Running || record.status != ServiceStatus::Ready {
        return None;
    }
    let spec = record.spec.as_ref()?;
    let port = spec.port.map(|p| p.assigned).or(record.port);
    let kind = match (&spec.ready, port) {
        (Some(ready), _) if matches!(ready.probe, ProbeKind::Log { .. }) => return None,
        (Some(ready), _) => ready.probe.clone(),
        (None, Some(_)) => ProbeKind::Tcp,
        (None, None) => return None,
    };
    let env = base_env.iter().chain(&spec.env).map(|(k, v)| (k.clone(), v.clone())).collect();
    let log = record.log_path.as_deref().map_or_else(Default::default, std::path::PathBuf::from);
    Probe::new(&kind, port, Path::new(&spec.cwd), env, &log).ok()
}

/// Asks the readiness probe of every ready, running service once more, all at once, each attempt at most
/// [`super::probe::ATTEMPT_LIMIT`] long; an `exec` probe runs with `base_env` plus the service's own variables.
pub async fn reprobe(observed: &mut [Observed], base_env: &BTreeMap<String, String>) {
    let mut attempts = tokio::task::JoinSet::new();
    for (index, item) in observed.iter().enumerate() {
        if let Some(probe) = reprobe_of(item, base_env) {
            attempts.spawn(async move { (index, probe.attempt().await) });
        }
    }
    while let Some(done) = attempts.join_next().await {
        let Ok((index, attempt)) = done else { continue };
        observed[index].probe =
            Some(ProbeRecord { at: crate::state::now_rfc3339(), ok: attempt.ok, detail: attempt.detail });
    }
}

/// Who supervises the recorded services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supervision {
    /// The recorded host runs (same pid and start time).
    Host,
    /// The recorded host (this pid) is gone: nothing restarts or probes what still runs.
    HostGone(u32),
    /// No host is recorded (nothing runs, or it was stopped).
    Nobody,
}

impl Supervision {
    /// The supervision `host` (from the saved state) gives now.
    pub fn of(host: Option<envctl_contracts::state::HostRecord>) -> Self {
        match host {
            Some(h) if super::proc_info::is_same_process(h.pid, h.start_time) => Self::Host,
            Some(h) => Self::HostGone(h.pid),
            None => Self::Nobody,
        }
    }
}

/// Judges `observed` under `supervision`; with `strict`, a degraded service (or services running without their
/// host) makes the report not ok. A probe that failed just now makes its service unhealthy.
pub fn verdict(observed: Vec<Observed>, supervision: Supervision, strict: bool) -> HealthReport {
    let mut issues = Vec::new();
    let mut degraded = false;
    let services: Vec<ServiceHealth> = observed
        .into_iter()
        .map(|Observed { record: r, truth, probe }| {
            let probe_failed = probe.as_ref().is_some_and(|p| !p.ok);
            let healthy = truth == Truth::Running && r.status == ServiceStatus::Ready && !probe_failed;
            let label = format!("{}/{}", r.target, r.service);
            if let Some(failed) = probe.as_ref().filter(|p| !p.ok) {
                issues.push(format!("{label}: its readiness probe fails now: {}", failed.detail));
            }
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
                Truth::Running if !healthy && !probe_failed => {
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
                probe,
            }
        })
        .collect();
    let runs = services.iter().any(|s| s.truth == "running");
    let supervised = !matches!(supervision, Supervision::HostGone(_)) || !runs;
    if let (false, Supervision::HostGone(pid)) = (supervised, supervision) {
        degraded = true;
        issues.push(format!(
            "supervision is off: the envctl host (pid {pid}) is gone, so restart policies and probes do not run\n    hint: `envctl resume` starts a host that adopts what runs"
        ));
    }
    let unhealthy = services
        .iter()
        .any(|s| !s.healthy && (s.truth != "running" || s.probe.as_ref().is_some_and(|p| !p.ok)));
    let overall = if unhealthy {
        "unhealthy"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    let ok = !(unhealthy || strict && degraded);
    HealthReport {
        schema_version: SCHEMA_VERSION,
        ok,
        overall: overall.into(),
        services,
        issues,
        supervised,
        job_server: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: ServiceStatus, pid: Option<u32>, started: Option<u64>, restarts: u32) -> ServiceRecord {
        ServiceRecord {
            pid,
            pid_start_time: started,
            restarts,
            ..ServiceRecord::new(envctl_contracts::state::ProcessKind::Service, "main", "web", status)
        }
    }

    #[test]
    fn a_live_ready_service_without_a_port_is_healthy() {
        let (pid, started) = crate::supervisor::proc_info::current();
        let report = verdict(
            observe(vec![record(ServiceStatus::Ready, Some(pid), Some(started), 0)]),
            Supervision::Nobody,
            true,
        );
        assert!(report.ok, "{report:?}");
        assert_eq!(report.overall, "healthy");
    }

    #[test]
    fn a_recorded_pid_with_another_start_time_is_gone_and_unhealthy() {
        let (pid, started) = crate::supervisor::proc_info::current();
        let report = verdict(
            observe(vec![record(ServiceStatus::Ready, Some(pid), Some(started + 1), 0)]),
            Supervision::Nobody,
            false,
        );
        assert!(!report.ok);
        assert_eq!(report.overall, "unhealthy");
        assert_eq!(report.services[0].truth, "gone");
        assert!(report.issues[0].contains("is gone"), "{:?}", report.issues);
    }

    #[test]
    fn restarts_degrade_and_fail_only_when_strict() {
        let (pid, started) = crate::supervisor::proc_info::current();
        let records = || vec![record(ServiceStatus::Ready, Some(pid), Some(started), 2)];
        let lenient = verdict(observe(records()), Supervision::Nobody, false);
        assert!(lenient.ok);
        assert_eq!(lenient.overall, "degraded");
        assert!(!verdict(observe(records()), Supervision::Nobody, true).ok);
    }

    #[test]
    fn running_services_whose_host_is_gone_are_unsupervised_and_fail_when_strict() {
        let (pid, started) = crate::supervisor::proc_info::current();
        let records = || vec![record(ServiceStatus::Ready, Some(pid), Some(started), 0)];
        let report = verdict(observe(records()), Supervision::HostGone(4_000_000), false);
        assert!(report.ok && !report.supervised, "{report:?}");
        assert_eq!(report.overall, "degraded");
        assert!(
            report.issues.iter().any(|i| i.contains("supervision is off") && i.contains("envctl resume"))
        );
        assert!(!verdict(observe(records()), Supervision::HostGone(4_000_000), true).ok);
        assert!(verdict(observe(records()), Supervision::Host, true).ok);
    }

    #[test]
    fn a_failed_service_reports_its_failure() {
        let mut failed = record(ServiceStatus::Failed, Some(1), Some(1), 0);
        failed.failure = Some("exited with code 3".into());
        let report = verdict(observe(vec![failed]), Supervision::Nobody, false);
        assert!(!report.ok);
        assert_eq!(report.issues, vec!["main/web: exited with code 3".to_owned()]);
    }

    #[test]
    fn a_probe_that_fails_now_makes_a_running_service_unhealthy_and_names_its_answer() {
        let (pid, started) = crate::supervisor::proc_info::current();
        let mut observed = observe(vec![record(ServiceStatus::Ready, Some(pid), Some(started), 0)]);
        observed[0].probe = Some(ProbeRecord {
            at: String::new(),
            ok: false,
            detail: "http 500 from http://x/health".into(),
        });
        let report = verdict(observed, Supervision::Nobody, false);
        assert!(!report.ok && report.overall == "unhealthy", "{report:?}");
        assert!(!report.services[0].healthy);
        assert_eq!(
            report.issues,
            vec!["main/web: its readiness probe fails now: http 500 from http://x/health"]
        );
    }

    /// A ready record of this process with an `http` probe of `port` (which this process listens on).
    fn probed(port: u16) -> ServiceRecord {
        use envctl_contracts::config::ReadyProbe;
        use envctl_contracts::ports::{PortPlan, PortSource};
        let (pid, started) = crate::supervisor::proc_info::current();
        let plan = PortPlan {
            requested: port,
            assigned: port,
            final_port: port,
            source: PortSource::Config,
            retries: 0,
        };
        let spec = envctl_contracts::startup::ServicePlan {
            port: Some(plan),
            ready: Some(ReadyProbe {
                probe: ProbeKind::Http { path: "/".into(), status: None },
                timeout_ms: 1,
            }),
            stop_grace_secs: 1,
            ..envctl_contracts::startup::ServicePlan::new("web", "/", Vec::new())
        };
        ServiceRecord {
            port: Some(port),
            spec: Some(std::sync::Arc::new(spec)),
            ..record(ServiceStatus::Ready, Some(pid), Some(started), 0)
        }
    }

    #[tokio::test]
    async fn every_probe_is_asked_at_once() {
        // Listeners that accept connections and never answer: each probe waits out its whole attempt.
        let listeners: Vec<std::net::TcpListener> =
            (0..5).map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind")).collect();
        let records = listeners.iter().map(|l| probed(l.local_addr().expect("addr").port())).collect();
        let mut observed = observe(records);
        assert!(observed.iter().all(|o| o.truth == Truth::Running), "{observed:?}");
        let began = std::time::Instant::now();
        reprobe(&mut observed, &BTreeMap::new()).await;
        let took = began.elapsed();
        assert!(took < super::super::probe::ATTEMPT_LIMIT * 2, "five silent probes took {took:?}");
        assert!(
            observed
                .iter()
                .all(|o| o.probe.as_ref().is_some_and(|p| !p.ok && p.detail.contains("no answer")))
        );
    }
}
