//! Stopping without a host (it died, or was never there): every recorded process of the selection is checked by
//! pid **and** start time and stopped, then the saved state forgets it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::control::{Reply, Request, StopRequest};
use envctl_contracts::ports::PortsManifest;
use envctl_contracts::state::{ErrorReport, RuntimeMap, ServiceRecord};

use super::client::{ClientError, HostClient};
use nix::sys::signal::Signal;

use crate::config::Paths;
use crate::ports::Ledger;
use crate::state::{RunArtifacts, StateError, StateRepository, now_rfc3339};
use crate::supervisor::{proc_info, signal};

/// Why a stop did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// The host could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The host answered with an error.
    #[error("{0}")]
    Host(String),
    /// The saved state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The port leases could not be released.
    #[error(transparent)]
    Port(#[from] crate::ports::PortError),
}

/// What `blast-all` did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blasted {
    /// Processes stopped.
    pub stopped: usize,
    /// Port leases released.
    pub released: usize,
}

fn matches(record: &ServiceRecord, targets: &[String], services: &[String]) -> bool {
    super::covers(targets, services, &record.target, &record.service)
}

/// What a stop did.
#[derive(Debug, Clone, Default)]
pub struct Stopped {
    /// `target/service` of each process stopped.
    pub stopped: Vec<String>,
    /// Set when the saved state was torn and what runs was recovered first (what to tell the user).
    pub recovered: Option<String>,
    /// Set when what was stopped could not be written down (a read-only or full runtime directory): the saved
    /// state is stale until it can be. Stopping never waits on writing.
    pub stale: Option<String>,
}

/// Stops `targets` (all when empty) and `services` (all when empty) through the host when one answers, directly
/// otherwise.
pub async fn stop(paths: &Paths, targets: &[String], services: &[String]) -> Result<Stopped, StopError> {
    let request = Request::Stop(StopRequest { targets: targets.to_vec(), services: services.to_vec() });
    let asked = {
        let paths = paths.clone();
        tokio::task::spawn_blocking(move || HostClient::call(&paths, false, &request, |_| {}))
            .await
            .map_err(|e| StopError::Host(e.to_string()))?
    };
    match asked? {
        Some(Reply::Stopped { stopped, .. }) => Ok(Stopped { stopped, ..Stopped::default() }),
        Some(Reply::Error { message }) => Err(StopError::Host(message)),
        Some(other) => Err(StopError::Host(format!("unexpected answer from the host: {other:?}"))),
        None => direct_stop(paths, targets, services).await,
    }
}

/// Stops recorded processes without a host, then records them as stopped.
async fn direct_stop(paths: &Paths, targets: &[String], services: &[String]) -> Result<Stopped, StopError> {
    let repo = StateRepository::new(&paths.scope_dir);
    let (mut state, recovered) = match repo.run_state() {
        Ok(Some(state)) => (state, None),
        Ok(None) => return Ok(Stopped::default()),
        Err(e @ StateError::Corrupt { .. }) => {
            let recovered = super::recover::recover(&repo, &crate::plan::scope_of(paths), &e);
            (recovered.state, Some(recovered.note))
        }
        Err(e) => return Err(e.into()),
    };
    let mut stopped = Vec::new();
    for record in state.services.iter().filter(|r| matches(r, targets, services)) {
        if let (Some(pid), Some(started)) = (record.pid, record.pid_start_time)
            && proc_info::is_same_process(pid, started)
        {
            let grace = Duration::from_secs(record.spec.as_ref().map_or(5, |s| s.stop_grace_secs));
            signal::stop_unowned(pid, started, grace).await;
            stopped.push(format!("{}/{}", record.target, record.service));
        }
    }
    let moved: Vec<(String, String)> = state
        .services
        .iter()
        .filter(|r| matches(r, targets, services))
        .flat_map(|r| {
            let owned = r.spec.as_deref().map(crate::ports::moved).unwrap_or_default();
            owned.into_iter().map(|service| (r.target.clone(), service))
        })
        .collect();
    state.services.retain(|r| !matches(r, targets, services));
    state.updated_at = now_rfc3339();
    // A torn companion artifact is rewritten, not a reason to leave processes running.
    let mut runtime_map = repo.runtime_map().ok().flatten().unwrap_or_else(|| RuntimeMap {
        schema_version: SCHEMA_VERSION,
        run_id: state.run_id.clone(),
        targets: BTreeMap::new(),
    });
    for (target, endpoints) in &mut runtime_map.targets {
        endpoints.retain(|service, _| !super::covers(targets, services, target, service));
    }
    runtime_map.targets.retain(|_, e| !e.is_empty());
    let ports_manifest = repo.ports_manifest().ok().flatten().unwrap_or_else(|| PortsManifest {
        schema_version: SCHEMA_VERSION,
        run_id: state.run_id.clone(),
        targets: Vec::new(),
    });
    let error_report = repo.error_report().ok().flatten().unwrap_or_else(|| ErrorReport {
        schema_version: SCHEMA_VERSION,
        run_id: state.run_id.clone(),
        generated_at: now_rfc3339(),
        errors: Vec::new(),
    });
    let mut unsaved = repo
        .save_run(&RunArtifacts { run_state: state, runtime_map, ports_manifest, error_report })
        .err()
        .map(|e| e.to_string());
    // Moved ports (something held the requested one) are given up, so the next start asks for its own again.
    let root = paths.repo_root.display().to_string();
    if let Err(e) = Ledger::new(&paths.ledger_dir)
        .release(|o| o.repo == root && moved.iter().any(|(t, s)| &o.target == t && &o.service == s))
    {
        unsaved.get_or_insert_with(|| e.to_string());
    }
    Ok(Stopped { stopped, recovered, stale: unsaved })
}

/// Processes as (pid, start time).
type Processes = BTreeSet<(u32, u64)>;

/// Every (pid, start time) recorded in the scope's states: the hosts, then the services.
fn recorded(scope: &std::path::Path) -> (Processes, Processes) {
    let mut files = vec![scope.join("run_state.json")];
    if let Ok(runs) = std::fs::read_dir(scope.join("runs")) {
        files.extend(runs.filter_map(Result::ok).map(|e| e.path().join("run_state.json")));
    }
    let (mut hosts, mut services) = (BTreeSet::new(), BTreeSet::new());
    for file in files {
        let Some(state) = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<envctl_contracts::state::RunState>(&b).ok())
        else {
            continue;
        };
        if let Some(host) = state.host {
            hosts.insert((host.pid, host.start_time));
        }
        for record in state.services {
            if let (Some(pid), Some(started)) = (record.pid, record.pid_start_time) {
                services.insert((pid, started));
            }
        }
    }
    (hosts, services)
}

/// Stops every process recorded in any of the scope's states (hosts first, each checked by pid and start time),
/// releases the repository's port leases and forgets every service.
pub async fn blast_all(paths: &Paths, ledger: &Ledger, repo: &StateRepository) -> Result<Blasted, StopError> {
    let (hosts, mut services) = recorded(&paths.scope_dir);
    // What the states do not name (a torn latest view) is found by the mark every process envctl starts carries.
    let scope = crate::plan::scope_of(paths);
    let marked = signal::scan(move || proc_info::marked_leaders(&scope)).await;
    services.extend(marked.into_iter().map(|m| (m.pid, m.start_time)));
    let mut stopped = 0;
    for (pid, started) in hosts.iter().filter(|(p, s)| proc_info::is_same_process(*p, *s)) {
        // The host stops its services on SIGTERM; SIGKILL if it does not finish in time.
        signal::signal_all(*pid, *started, &[(*pid, *started)], Signal::SIGTERM);
        if !signal::wait_gone(*pid, *started, &[], Duration::from_secs(15)).await {
            signal::signal_all(*pid, *started, &[(*pid, *started)], Signal::SIGKILL);
            signal::wait_gone(*pid, *started, &[], Duration::from_secs(2)).await;
        }
        stopped += 1;
    }
    for (pid, started) in &services {
        // Ours when it is the recorded process, or when its pid is free and a group of ours still has members
        // under it; a pid that names another process now is not ours, whatever it leads.
        let alive = proc_info::is_same_process(*pid, *started)
            || (proc_info::start_time(*pid).is_none()
                && !proc_info::group_or_session_members(*pid).is_empty());
        if alive && signal::stop_unowned(*pid, *started, Duration::from_secs(2)).await {
            stopped += 1;
        }
    }
    let repo_root = paths.repo_root.display().to_string();
    let released = ledger.release(|owner| owner.repo == repo_root)?;
    let _ = std::fs::remove_file(paths.control_socket());
    // A torn state is left for the next host to recover; everything it could name is stopped above.
    if let Ok(Some(mut state)) = repo.run_state() {
        state.services.clear();
        state.host = None;
        state.updated_at = now_rfc3339();
        if let (Ok(Some(runtime_map)), Ok(Some(ports_manifest)), Ok(Some(error_report))) =
            (repo.runtime_map(), repo.ports_manifest(), repo.error_report())
        {
            let runtime_map = RuntimeMap { targets: BTreeMap::new(), ..runtime_map };
            repo.save_run(&RunArtifacts { run_state: state, runtime_map, ports_manifest, error_report })?;
        }
    }
    Ok(Blasted { stopped, released })
}
