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
            };
            if !errors.contains(&entry) {
                errors.push(entry);
            }
        }
    }
    let mut targets: BTreeMap<String, BTreeMap<String, Endpoint>> = BTreeMap::new();
    for record in &records {
        targets.entry(record.target.clone()).or_default().insert(
            record.service.clone(),
            Endpoint { port: record.port, url: record.url.clone(), status: record.status },
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
