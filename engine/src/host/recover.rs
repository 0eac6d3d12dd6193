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

/// Adds to `state` what envctl started that it does not record: the services a host spawned before it could save
/// (it was killed mid-start). Each marked process whose service has no live record takes that record over (its
/// pid and start time now); one with no record at all is recorded as found, so it can be stopped. A service whose
/// record names another live process keeps it. `None` back when nothing runs and nothing was recorded.
pub fn add_unrecorded(state: Option<RunState>, scope: &str) -> (Option<RunState>, usize) {
    let found = proc_info::marked_leaders(scope);
    let unrecorded: Vec<_> = found
        .into_iter()
        .filter(|m| {
            !state
                .iter()
                .flat_map(|s| &s.services)
                .any(|r| r.pid == Some(m.pid) && r.pid_start_time == Some(m.start_time))
        })
        .collect();
    if unrecorded.is_empty() {
        return (state, 0);
    }
    let mut state = state.unwrap_or_else(empty_state);
    let mut added = 0;
    for marked in &unrecorded {
        let at = state.services.iter().position(|r| r.target == marked.target && r.service == marked.service);
        if at.is_some_and(|i| live(&state.services[i])) {
            tracing::warn!(pid = marked.pid, target = %marked.target, service = %marked.service, "a second process of a recorded service runs; left alone");
            continue;
        }
        record_found(&mut state, at, marked).status = ServiceStatus::Ready;
        added += 1;
    }
    tracing::warn!(added, "the last host died before saving what it started; found it in /proc");
    (Some(state), added)
}

/// Points record `at` (a new one when there is none: found running with no record of how it was started, it can be
/// stopped, not restarted) at the process `marked`, and names its target among the state's.
fn record_found<'s>(
    state: &'s mut RunState,
    at: Option<usize>,
    marked: &proc_info::Marked,
) -> &'s mut ServiceRecord {
    if !state.targets.contains(&marked.target) {
        state.targets.push(marked.target.clone());
    }
    let at = at.unwrap_or_else(|| {
        let record =
            ServiceRecord::new(ProcessKind::Service, &marked.target, &marked.service, ServiceStatus::Ready);
        state.services.push(record);
        state.services.len() - 1
    });
    let record = &mut state.services[at];
    record.pid = Some(marked.pid);
    record.pid_start_time = Some(marked.start_time);
    record
}

/// Whether the process a record names still runs (pid and start time).
fn live(record: &ServiceRecord) -> bool {
    match (record.pid, record.pid_start_time) {
        (Some(pid), Some(started)) => proc_info::start_time(pid) == Some(started),
        _ => false,
    }
}

fn empty_state() -> RunState {
    RunState {
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
    }
}

/// Rebuilds the state of `repo` after `why` made its latest view unreadable.
pub fn recover(repo: &StateRepository, scope: &str, why: &StateError) -> Recovered {
    let copy = repo.newest_run_copy();
    let from = if copy.is_some() { "the last run's copy and /proc" } else { "/proc" };
    let mut state = copy.unwrap_or_else(empty_state);
    let found = proc_info::marked_leaders(scope);
    for marked in &found {
        let at = state.services.iter().position(|r| r.target == marked.target && r.service == marked.service);
        // A record whose own process still runs keeps it: a second marked process is not the service.
        if at.is_some_and(|i| live(&state.services[i]) && state.services[i].pid != Some(marked.pid)) {
            continue;
        }
        let record = record_found(&mut state, at, marked);
        if !matches!(record.status, ServiceStatus::Ready | ServiceStatus::Starting) {
            record.status = ServiceStatus::Ready;
        }
    }
    let note = format!(
        "{why}\nrecovered from {from}: {} process(es) envctl started are running; the state is rewritten",
        found.len()
    );
    tracing::warn!(found = found.len(), "run_state.json was unreadable; recovered");
    Recovered { state, note }
}
