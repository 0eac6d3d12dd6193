//! The health verdict: every recorded service checked against `/proc` ([`super::truth`]) and judged healthy,
//! degraded (restarted, or still starting) or unhealthy. `envctl health` prints it; the doctor's `services` gate
//! reuses it.

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::inspect::{HealthReport, ServiceHealth};
use envctl_contracts::state::{ServiceRecord, ServiceStatus};

use super::truth::{Truth, check_all};

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

/// Judges `records` under `supervision`; with `strict`, a degraded service (or services running without their
/// host) makes the report not ok.
pub fn verdict(records: Vec<ServiceRecord>, supervision: Supervision, strict: bool) -> HealthReport {
    let mut issues = Vec::new();
    let mut degraded = false;
    let truths = check_all(&records);
    let services: Vec<ServiceHealth> = records
        .into_iter()
        .zip(truths)
        .map(|(r, truth)| {
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
    let runs = services.iter().any(|s| s.truth == "running");
    let supervised = !matches!(supervision, Supervision::HostGone(_)) || !runs;
    if let (false, Supervision::HostGone(pid)) = (supervised, supervision) {
        degraded = true;
        issues.push(format!(
            "supervision is off: the envctl host (pid {pid}) is gone, so restart policies and probes do not run\n    hint: `envctl resume` starts a host that adopts what runs"
        ));
    }
    let unhealthy = services.iter().any(|s| !s.healthy && s.truth != "running");
    let overall = if unhealthy {
        "unhealthy"
    } else if degraded {
        "degraded"
    } else {
        "healthy"
    };
    let ok = !(unhealthy || strict && degraded);
    HealthReport { schema_version: SCHEMA_VERSION, ok, overall: overall.into(), services, issues, supervised }
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
            vec![record(ServiceStatus::Ready, Some(pid), Some(started), 0)],
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
            vec![record(ServiceStatus::Ready, Some(pid), Some(started + 1), 0)],
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
        let lenient = verdict(records(), Supervision::Nobody, false);
        assert!(lenient.ok);
        assert_eq!(lenient.overall, "degraded");
        assert!(!verdict(records(), Supervision::Nobody, true).ok);
    }

    #[test]
    fn running_services_whose_host_is_gone_are_unsupervised_and_fail_when_strict() {
        let (pid, started) = crate::supervisor::proc_info::current();
        let records = || vec![record(ServiceStatus::Ready, Some(pid), Some(started), 0)];
        let report = verdict(records(), Supervision::HostGone(4_000_000), false);
        assert!(report.ok && !report.supervised, "{report:?}");
        assert_eq!(report.overall, "degraded");
        assert!(
            report.issues.iter().any(|i| i.contains("supervision is off") && i.contains("envctl resume"))
        );
        assert!(!verdict(records(), Supervision::HostGone(4_000_000), true).ok);
        assert!(verdict(records(), Supervision::Host, true).ok);
    }

    #[test]
    fn a_failed_service_reports_its_failure() {
        let mut failed = record(ServiceStatus::Failed, Some(1), Some(1), 0);
        failed.failure = Some("exited with code 3".into());
        let report = verdict(vec![failed], Supervision::Nobody, false);
        assert!(!report.ok);
        assert_eq!(report.issues, vec!["main/web: exited with code 3".to_owned()]);
    }
}
