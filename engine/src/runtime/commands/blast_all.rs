//! `envctl blast-all`: stops every process recorded in any state of this repository (the latest view and every
//! run), stops the host, releases every port lease of this repository and removes the control socket. Every
//! process is checked by pid and start time first: nothing envctl did not start is touched.

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::ports::Ledger;
use crate::runtime::{EngineError, EngineRuntime, Outcome, block_on};
use crate::state::StateRepository;
use crate::supervisor::{proc_info, signal};

/// Arguments of `blast-all`.
#[derive(Debug, clap::Args)]
pub struct BlastAllArgs {}

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

/// Stops everything this repository's envctl started.
pub fn exec(rt: &EngineRuntime, _args: &BlastAllArgs) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    let (hosts, services) = recorded(&paths.scope_dir);
    let mut stopped = 0;
    block_on(async {
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
            let alive = proc_info::is_same_process(*pid, *started)
                || !proc_info::group_or_session_members(*pid).is_empty();
            if alive && signal::stop_unowned(*pid, *started, Duration::from_secs(2)).await {
                stopped += 1;
            }
        }
    });
    let repo_root = paths.repo_root.display().to_string();
    let released = Ledger::new(&paths.ledger_dir).release(|owner| owner.repo == repo_root)?;
    let _ = std::fs::remove_file(paths.control_socket());
    let repo = StateRepository::new(&paths.scope_dir);
    if let Some(mut state) = repo.run_state()? {
        state.services.clear();
        state.host = None;
        state.updated_at = crate::state::now_rfc3339();
        if let (Some(runtime_map), Some(ports_manifest), Some(error_report)) =
            (repo.runtime_map()?, repo.ports_manifest()?, repo.error_report()?)
        {
            let runtime_map = envctl_contracts::state::RuntimeMap {
                targets: std::collections::BTreeMap::new(),
                ..runtime_map
            };
            repo.save_run(&crate::state::RunArtifacts {
                run_state: state,
                runtime_map,
                ports_manifest,
                error_report,
            })?;
        }
    }
    rt.printer()
        .note(&format!("blast-all: stopped {stopped} process(es), released {released} port lease(s)"));
    Ok(Outcome::Success)
}
