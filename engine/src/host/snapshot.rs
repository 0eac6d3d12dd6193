//! The artifacts of the live view: `run_state.json`, `runtime_map.json`, `ports_manifest.json`,
//! `error_report.json`, built from the current run and every service's record.

use std::collections::BTreeMap;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::ports::PortsManifest;
use envctl_contracts::state::{
    Endpoint, ErrorEntry, ErrorReport, HostRecord, RunState, RuntimeMap, ServiceRecord, ServiceStatus,
};

use super::RunInfo;
use crate::state::{RunArtifacts, now_rfc3339};

/// Whether two entries describe one failure: the same target, service and message, whatever their kinds.
fn same_failure(a: &ErrorEntry, b: &ErrorEntry) -> bool {
    a.target == b.target && a.service == b.service && a.message == b.message
}

/// The artifacts for `records` in `run`.
pub fn artifacts(run: &RunInfo, host: HostRecord, records: Vec<ServiceRecord>) -> RunArtifacts {
    let now = now_rfc3339();
    let mut errors = run.errors.clone();
    for record in &records {
        if record.status == ServiceStatus::Failed {
            let entry = ErrorEntry {
                target: Some(record.target.clone()),
                service: Some(record.service.clone()),
                kind: "service_failed".into(),
                message: record.failure.clone().unwrap_or_else(|| "failed".into()),
                // Its tail is not read here, on the host's async thread; `envctl logs` shows it.
                log_path: record.log_path.clone(),
                log_tail: Vec::new(),
            };
            // A failure the run already recorded (a `start_failed` of the same service, same message) is reported
            // once, as the run's more specific entry.
            if !errors.iter().any(|e| same_failure(e, &entry)) {
                errors.push(entry);
            }
        }
    }
    let mut targets: BTreeMap<String, BTreeMap<String, Endpoint>> = BTreeMap::new();
    for record in &records {
        targets.entry(record.target.clone()).or_default().insert(
            record.service.clone(),
            Endpoint {
                port: record.port,
                ports: record.ports.clone(),
                url: record.url.clone(),
                status: record.status,
            },
        );
    }
    let failure = errors.first().map(|e| e.message.clone());
    RunArtifacts {
        run_state: RunState {
            schema_version: SCHEMA_VERSION,
            run_id: run.run_id.clone(),
            command: run.command.clone(),
            targets: run.targets.clone(),
            host: Some(host),
            services: records,
            failed: !errors.is_empty(),
            failure,
            created_at: run.created_at.clone(),
            updated_at: now.clone(),
            requirement_users: BTreeMap::new(),
        },
        runtime_map: RuntimeMap { schema_version: SCHEMA_VERSION, run_id: run.run_id.clone(), targets },
        ports_manifest: PortsManifest {
            schema_version: SCHEMA_VERSION,
            run_id: run.run_id.clone(),
            targets: run.ports.values().cloned().collect(),
        },
        error_report: ErrorReport {
            schema_version: SCHEMA_VERSION,
            run_id: run.run_id.clone(),
            generated_at: now,
            errors,
        },
    }
}

#[cfg(test)]
mod tests {
    use envctl_contracts::state::ProcessKind;

    use super::*;

    fn failed(service: &str, failure: &str) -> ServiceRecord {
        ServiceRecord {
            kind: ProcessKind::default(),
            target: "main".into(),
            service: service.into(),
            pid: None,
            pid_start_time: None,
            port: None,
            ports: BTreeMap::new(),
            url: None,
            status: ServiceStatus::Failed,
            log_path: None,
            started_at: None,
            ready_at: None,
            restarts: 0,
            exit_code: Some(3),
            failure: Some(failure.into()),
            probes: Vec::new(),
            spec: None,
        }
    }

    fn entry(service: &str, kind: &str, message: &str) -> ErrorEntry {
        ErrorEntry {
            target: Some("main".into()),
            service: Some(service.into()),
            kind: kind.into(),
            message: message.into(),
            log_path: None,
            log_tail: Vec::new(),
        }
    }

    #[test]
    fn a_start_failure_and_its_failed_service_are_one_entry() {
        let why = "exited with code 3 before it was ready";
        let run = RunInfo {
            run_id: "run-1".into(),
            command: "start".into(),
            targets: vec!["main".into()],
            errors: vec![entry("bad", "start_failed", why)],
            ports: BTreeMap::new(),
            created_at: now_rfc3339(),
        };
        let host = HostRecord { pid: 1, start_time: 1 };
        let records = vec![failed("bad", why), failed("other", "exited with code 1")];
        let errors = artifacts(&run, host, records).error_report.errors;
        assert_eq!(
            errors,
            vec![entry("bad", "start_failed", why), entry("other", "service_failed", "exited with code 1")]
        );
    }
}
