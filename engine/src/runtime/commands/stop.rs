//! `envctl stop [targets] [--service S]` and `envctl stop-all`: through the host when it answers; otherwise
//! directly, from the saved state (each process checked by pid and start time first).

use std::time::Duration;

use envctl_contracts::control::{Reply, Request, StopRequest};
use envctl_contracts::state::ServiceRecord;

use crate::config::Paths;
use crate::host::client::HostClient;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome, block_on};
use crate::state::{RunArtifacts, StateRepository};
use crate::supervisor::{proc_info, signal};

/// Arguments of `stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Which targets (default: every running target).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these services (repeatable).
    #[arg(long = "service", value_name = "S")]
    pub services: Vec<String>,
}

/// Arguments of `stop-all`.
#[derive(Debug, clap::Args)]
pub struct StopAllArgs {
    /// Also delete the requirements' data (every target's databases and Redis data).
    #[arg(long)]
    pub remove_data: bool,
}

/// Targets that have services in the saved state.
pub(super) fn running_targets(paths: &Paths) -> Result<Vec<String>, EngineError> {
    let state = StateRepository::new(&paths.scope_dir).run_state()?;
    let mut names: Vec<String> =
        state.iter().flat_map(|s| s.services.iter().map(|r| r.target.clone())).collect();
    names.dedup();
    Ok(names)
}

/// Stops `targets` (all when empty) and `services` (all when empty); returns `target/service` of each stopped.
pub(super) fn stop(
    paths: &Paths,
    targets: &[String],
    services: &[String],
) -> Result<Vec<String>, EngineError> {
    let request = Request::Stop(StopRequest { targets: targets.to_vec(), services: services.to_vec() });
    match HostClient::call(paths, false, &request, |_| {})? {
        Some(Reply::Stopped { stopped, .. }) => return Ok(stopped),
        Some(Reply::Error { message }) => return Err(EngineError::Failed(message)),
        Some(other) => {
            return Err(EngineError::Failed(format!("unexpected answer from the host: {other:?}")));
        }
        None => {}
    }
    direct_stop(paths, targets, services)
}

fn matches(record: &ServiceRecord, targets: &[String], services: &[String]) -> bool {
    (targets.is_empty() || targets.contains(&record.target))
        && (services.is_empty() || services.contains(&record.service))
}

/// Stops recorded processes without a host, then records them as stopped.
fn direct_stop(paths: &Paths, targets: &[String], services: &[String]) -> Result<Vec<String>, EngineError> {
    let repo = StateRepository::new(&paths.scope_dir);
    let Some(mut state) = repo.run_state()? else { return Ok(Vec::new()) };
    let mut stopped = Vec::new();
    block_on(async {
        for record in state.services.iter().filter(|r| matches(r, targets, services)) {
            if let (Some(pid), Some(started)) = (record.pid, record.pid_start_time)
                && proc_info::is_same_process(pid, started)
            {
                let grace = Duration::from_secs(record.spec.as_ref().map_or(5, |s| s.stop_grace_secs));
                signal::stop_unowned(pid, started, grace).await;
                stopped.push(format!("{}/{}", record.target, record.service));
            }
        }
    });
    state.services.retain(|r| !matches(r, targets, services));
    state.updated_at = crate::state::now_rfc3339();
    let mut runtime_map = repo.runtime_map()?.unwrap_or_else(|| envctl_contracts::state::RuntimeMap {
        schema_version: envctl_contracts::SCHEMA_VERSION,
        run_id: state.run_id.clone(),
        targets: std::collections::BTreeMap::new(),
    });
    for (target, endpoints) in &mut runtime_map.targets {
        endpoints.retain(|service, _| {
            !(targets.is_empty() || targets.contains(target))
                || !(services.is_empty() || services.contains(service))
        });
    }
    runtime_map.targets.retain(|_, e| !e.is_empty());
    let ports_manifest = repo.ports_manifest()?.unwrap_or_else(|| envctl_contracts::ports::PortsManifest {
        schema_version: envctl_contracts::SCHEMA_VERSION,
        run_id: state.run_id.clone(),
        targets: Vec::new(),
    });
    let error_report = repo.error_report()?.unwrap_or_else(|| envctl_contracts::state::ErrorReport {
        schema_version: envctl_contracts::SCHEMA_VERSION,
        run_id: state.run_id.clone(),
        generated_at: crate::state::now_rfc3339(),
        errors: Vec::new(),
    });
    repo.save_run(&RunArtifacts { run_state: state, runtime_map, ports_manifest, error_report })?;
    Ok(stopped)
}

fn say(rt: &EngineRuntime, stopped: &[String]) {
    if stopped.is_empty() {
        rt.printer().note("nothing was running");
    } else {
        rt.printer().note(&format!("stopped {}", stopped.join(", ")));
    }
}

/// Stops the selected services.
pub fn exec(rt: &EngineRuntime, args: &StopArgs) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    let running = running_targets(&paths)?;
    let any_flag = args.targets.main || args.targets.all || !args.targets.tree.is_empty();
    let targets =
        if any_flag && !args.targets.all { args.targets.names_among(&running)? } else { Vec::new() };
    say(rt, &stop(&paths, &targets, &args.services)?);
    Ok(Outcome::Success)
}

/// Stops everything.
pub fn exec_all(rt: &EngineRuntime, args: &StopAllArgs) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    say(rt, &stop(&paths, &[], &[])?);
    if args.remove_data {
        for dir in crate::requirements::data_roots(&paths) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => rt.printer().note(&format!("removed {}", dir.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::Failed(format!("cannot remove {}: {e}", dir.display()))),
            }
        }
    }
    Ok(Outcome::Success)
}
