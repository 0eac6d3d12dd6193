//! Recovering what envctl started when the latest `run_state.json` is torn or garbled: the newest readable
//! per-run copy gives the services and how they were started, and `/proc` gives every process group leader
//! marked `ENVCTL_SCOPE=<this scope>` (each one envctl started carries it), with its pid and start time now. What
//! runs is found again; nothing is started or killed here.

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::state::{ProcessKind, RunState, ServiceRecord, ServiceStatus};

use crate::state::{StateError, StateRepository, now_rfc3339};
use crate::supervisor::proc_info;

/// A state rebuilt from the run copies and `/proc`, and what to tell the user.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The rebuilt state.
    pub state: RunState,
    /// One line for the user: which file was unreadable, what was found.
    pub note: String,
}

/// Rebuilds the state of `repo` after `why` made its latest view unreadable.
pub fn recover(repo: &StateRepository, scope: &str, why: &StateError) -> Recovered {
    let copy = repo.newest_run_copy();
    let from = if copy.is_some() { "the last run's copy and /proc" } else { "/proc" };
    let mut state = copy.unwrap_or_else(|| RunState {
        schema_version: SCHEMA_VERSION,
        run_id: crate::state::new_run_id(),
        command: "recovered".into(),
        targets: Vec::new(),
        host: None,
        services: Vec::new(),
        failed: false,
        failure: None,
        created_at: now_rfc3339(),
        updated_at: now_rfc3339(),
        requirement_users: std::collections::BTreeMap::new(),
    });
    let found = proc_info::marked_leaders(scope);
    for marked in &found {
        let at = state.services.iter().position(|r| r.target == marked.target && r.service == marked.service);
        let at = at.unwrap_or_else(|| {
            // Found running with no record of how it was started: it can be stopped, not restarted.
            state.services.push(ServiceRecord::new(
                ProcessKind::Service,
                &marked.target,
                &marked.service,
                ServiceStatus::Ready,
            ));
            state.services.len() - 1
        });
        let record = &mut state.services[at];
        record.pid = Some(marked.pid);
        record.pid_start_time = Some(marked.start_time);
        if !matches!(record.status, ServiceStatus::Ready | ServiceStatus::Starting) {
            record.status = ServiceStatus::Ready;
        }
        if !state.targets.contains(&marked.target) {
            state.targets.push(marked.target.clone());
        }
    }
    let note = format!(
        "{why}\nrecovered from {from}: {} process(es) envctl started are running; the state is rewritten",
        found.len()
    );
    tracing::warn!(found = found.len(), "run_state.json was unreadable; recovered");
    Recovered { state, note }
}
