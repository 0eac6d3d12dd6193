//! What is really running: a recorded service checked against `/proc` — is its process the recorded one (pid
//! and start time), and does anything of its process tree listen on its port.

use std::collections::BTreeMap;

use envctl_contracts::state::{ServiceRecord, ServiceStatus};

use super::proc_info;

/// The truth about one recorded service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// Its process runs and (when it has a port) its process tree listens there.
    Running,
    /// Its process runs but nothing of it listens on its port.
    NotListening,
    /// Its process is gone (or the pid now belongs to another program).
    Gone,
    /// It was not running when last recorded (stopped, failed, exited).
    Down,
}

impl Truth {
    /// Lower-case name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::NotListening => "not-listening",
            Self::Gone => "gone",
            Self::Down => "down",
        }
    }
}

/// Checks one record.
pub fn check(record: &ServiceRecord) -> Truth {
    check_all(std::slice::from_ref(record))[0]
}

/// Checks every record, reading the machine's listening sockets at most once.
pub fn check_all(records: &[ServiceRecord]) -> Vec<Truth> {
    let mut inodes = None;
    records.iter().map(|r| check_with(r, &mut inodes)).collect()
}

fn check_with(record: &ServiceRecord, inodes: &mut Option<BTreeMap<u64, u16>>) -> Truth {
    let (Some(pid), Some(started)) = (record.pid, record.pid_start_time) else { return Truth::Down };
    if matches!(record.status, ServiceStatus::Stopped | ServiceStatus::Exited | ServiceStatus::Failed) {
        return Truth::Down;
    }
    if !proc_info::is_same_process(pid, started) {
        return Truth::Gone;
    }
    match record.port {
        Some(port) if record.status == ServiceStatus::Ready => {
            let tree: Vec<u32> = proc_info::tree(pid).into_iter().map(|(p, _)| p).collect();
            let inodes = inodes.get_or_insert_with(proc_info::listening_inodes);
            if proc_info::listening_ports_in(&tree, inodes).contains(&port) {
                Truth::Running
            } else {
                Truth::NotListening
            }
        }
        _ => Truth::Running,
    }
}
