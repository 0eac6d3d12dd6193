//! Waiting for the children nobody else waits for.
//!
//! A process whose parent dies is handed to the nearest subreaper, or to PID 1 of its PID namespace. When the host
//! is PID 1 — `envctl start --foreground` as a container's entrypoint, with no init in front of it — every
//! process a service leaves behind (a shell's background job, a worker of a server that crashed, what a probe
//! started) becomes the host's child, and stays a zombie until the host waits for it; a restarting service adds
//! some at every restart.
//!
//! Each service and each `exec` probe runs in a process group of its own that its leader (the process envctl
//! spawned) gives its id to. The leader is waited for by its tokio `Child`; any *other* zombie child of this
//! process in that group was handed over and is a stray, waited for here. Nothing else is touched: a child in
//! another group may be another owner's (a job's, a `git` run's) to wait for.

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::proc_info;

/// Whether orphans can be handed to this process at all: it is PID 1 of its namespace or a child subreaper.
/// Anywhere else (a detached host, a CLI) orphans go to init and there is never a stray to wait for.
pub fn receives_orphans() -> bool {
    std::process::id() == 1 || nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// Waits for every zombie child of this process in process group `group` other than the group's leader (whose
/// exit its owner collects); returns how many it waited for. Costs nothing unless this process receives orphans
/// ([`receives_orphans`]); then it reads `/proc/self/task/*/children` and one `stat` per child.
pub fn strays(group: u32) -> usize {
    if receives_orphans() { collect_strays(group) } else { 0 }
}

/// [`strays`] without asking whether orphans can arrive.
fn collect_strays(group: u32) -> usize {
    let mut reaped = 0;
    for child in proc_info::children(std::process::id()) {
        if child != group && proc_info::zombie(child).is_some_and(|stat| stat.pgid == group) && wait(child) {
            reaped += 1;
        }
    }
    reaped
}

/// Waits for the adopted process (`pid`, `started`) once it exited, if it was handed to this process (a survivor
/// of an earlier host has no tokio `Child`).
pub fn adopted(pid: u32, started: u64) {
    if proc_info::zombie(pid)
        .is_some_and(|stat| stat.ppid == std::process::id() && stat.start_time == started)
    {
        wait(pid);
    }
}

/// Collects the exit of the zombie child `pid`.
fn wait(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok())
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn waits_for_the_zombie_children_of_a_group_but_not_its_leader_or_another_group() {
        use std::os::unix::process::CommandExt as _;
        let mut leader = Command::new("true").process_group(0).spawn().expect("spawn");
        let group = leader.id();
        let mut stray =
            Command::new("true").process_group(i32::try_from(group).expect("pid")).spawn().expect("spawn");
        let mut other = Command::new("true").process_group(0).spawn().expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(5);
        let all_exited =
            || [leader.id(), stray.id(), other.id()].iter().all(|p| proc_info::zombie(*p).is_some());
        while !all_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(collect_strays(group), 1, "only the stray of the group is waited for");
        assert!(proc_info::zombie(stray.id()).is_none(), "the stray is gone");
        assert!(proc_info::zombie(leader.id()).is_some(), "the leader is left to its owner");
        assert!(proc_info::zombie(other.id()).is_some(), "another group's child is left to its owner");
        assert!(leader.wait().is_ok() && other.wait().is_ok());
        assert!(stray.wait().is_err(), "its exit was collected already");
    }
}
