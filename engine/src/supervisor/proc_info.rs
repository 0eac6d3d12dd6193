//! Process truth from `/proc`: whether a pid is alive and when it started (so a recorded process is told apart
//! from an unrelated one that later got the same pid), a process's children, and which ports a set of processes
//! listens on.

use std::collections::{BTreeMap, BTreeSet};

/// The fields of `/proc/<pid>/stat` envctl uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Parent pid.
    pub ppid: u32,
    /// Process group.
    pub pgid: u32,
    /// Session.
    pub sid: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// `/proc/<pid>/stat`, or `None` when the process does not exist or is a zombie.
pub fn stat(pid: u32) -> Option<Stat> {
    read_stat(pid).filter(|(dead, _)| !dead).map(|(_, stat)| stat)
}

/// `/proc/<pid>/stat` of a process that exited and has not been waited for yet (a zombie), else `None`.
pub fn zombie(pid: u32) -> Option<Stat> {
    read_stat(pid).filter(|(dead, _)| *dead).map(|(_, stat)| stat)
}

/// `/proc/<pid>/stat` and whether the process is dead (a zombie, or being reaped).
fn read_stat(pid: u32) -> Option<(bool, Stat)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; the fields after the last ')' are fixed.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); field N is fields[N - 3].
    let dead = matches!(fields.first(), Some(&("Z" | "X")));
    let num = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let small = |n: usize| num(n).and_then(|v| u32::try_from(v).ok());
    Some((dead, Stat { ppid: small(4)?, pgid: small(5)?, sid: small(6)?, start_time: num(22)? }))
}

/// The start time of `pid`, or `None` when no such (living) process exists.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start_time)
}

/// Whether the process recorded as (`pid`, `started`) is still the one running under that pid.
pub fn is_same_process(pid: u32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// This process's pid and start time.
pub fn current() -> (u32, u64) {
    let pid = std::process::id();
    (pid, start_time(pid).unwrap_or_default())
}

/// A process group leader whose environment marks it as started by envctl for a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// Its pid (and process group).
    pub pid: u32,
    /// Its start time.
    pub start_time: u64,
    /// `ENVCTL_TARGET`.
    pub target: String,
    /// `ENVCTL_SERVICE`.
    pub service: String,
}

/// Set on the processes envctl runs with a service's variables that are not the service — a readiness probe, a
/// job, a setup step (`probe`, `job`, `setup`) — so they are never taken for the service itself.
pub const ROLE_VAR: &str = "ENVCTL_ROLE";

/// Every living process group leader whose environment carries `ENVCTL_SCOPE=<scope>` and no `ENVCTL_ROLE` — a
/// service or requirement envctl started (a full `/proc` scan; used to recover what envctl started when its saved
/// state is torn or was never written). Processes of other users are not readable and so never found.
pub fn marked_leaders(scope: &str) -> Vec<Marked> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let wanted = format!("ENVCTL_SCOPE={scope}");
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| {
            let stat = stat(pid).filter(|s| s.pgid == pid)?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
            let role = format!("{ROLE_VAR}=");
            if !vars.contains(&wanted.as_bytes()) || vars.iter().any(|v| v.starts_with(role.as_bytes())) {
                return None;
            }
            let var = |name: &str| {
                let prefix = format!("{name}=");
                vars.iter()
                    .find_map(|v| v.strip_prefix(prefix.as_bytes()))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            Some(Marked {
                pid,
                start_time: stat.start_time,
                target: var("ENVCTL_TARGET")?,
                service: var("ENVCTL_SERVICE")?,
            })
        })
        .collect()
}

/// Every living process whose environment carries `ENVCTL_SCOPE=<scope>` and `ENVCTL_ROLE=<role>` (a full `/proc`
/// scan), with its start time: how a server envctl runs for the whole repository (the job server) is found when
/// its record is lost. Processes of other users are not readable and so never found.
pub fn with_role(scope: &str, role: &str) -> Vec<(u32, u64)> {
    let (scope_mark, role_mark) = (format!("ENVCTL_SCOPE={scope}"), format!("{ROLE_VAR}={role}"));
    marked(|vars| vars.contains(&scope_mark.as_bytes()) && vars.contains(&role_mark.as_bytes()))
}

/// Processes envctl started for any of `jobs` (marked `ENVCTL_ROLE=job` and `ENVCTL_JOB_ID=<id>`; job ids are
/// unique), with their start times.
pub fn of_jobs(jobs: &[String]) -> Vec<(u32, u64)> {
    if jobs.is_empty() {
        return Vec::new();
    }
    let role_mark = format!("{ROLE_VAR}=job");
    let job_marks: Vec<String> = jobs.iter().map(|id| format!("ENVCTL_JOB_ID={id}")).collect();
    marked(|vars| {
        vars.contains(&role_mark.as_bytes()) && job_marks.iter().any(|mark| vars.contains(&mark.as_bytes()))
    })
}

/// Every living process whose environment (its `NAME=value` entries) `matches`, with its start time: a full `/proc`
/// scan. Processes of other users are not readable and so never found.
fn marked(matches: impl Fn(&[&[u8]]) -> bool) -> Vec<(u32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
            matches(&vars).then(|| Some((pid, stat(pid)?.start_time))).flatten()
        })
        .collect()
}

/// Direct children of `pid`, from `/proc/<pid>/task/*/children`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut out = Vec::new();
    for task in tasks.filter_map(Result::ok) {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// `pid` and every living descendant, each with its start time.
pub fn tree(pid: u32) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    let mut seen = BTreeSet::new();
    while let Some(p) = queue.pop() {
        if !seen.insert(p) {
            continue;
        }
        if let Some(started) = start_time(p) {
            out.push((p, started));
            queue.extend(children(p));
        }
    }
    out
}

/// Every living process in the group or session `id` (a full `/proc` scan; used by blast-all).
pub fn group_or_session_members(id: u32) -> Vec<(u32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| stat(pid).filter(|s| s.pgid == id || s.sid == id).map(|s| (pid, s.start_time)))
        .collect()
}

/// Listening TCP sockets on the machine: socket inode → port (the kernel builds these tables on every read,
/// which is not free on a busy machine: read them once per pass).
pub fn listening_inodes() -> BTreeMap<u64, u16> {
    let mut out = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is cols[1] ("ADDR:PORT" in hex), st is cols[3] (0A = LISTEN), inode is cols[9].
            if cols.len() > 9 && cols[3] == "0A" {
                let port = cols[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
                if let (Some(port), Ok(inode)) = (port, cols[9].parse::<u64>()) {
                    out.insert(inode, port);
                }
            }
        }
    }
    out
}

/// The TCP ports any of `pids` listens on.
pub fn listening_ports(pids: &[u32]) -> BTreeSet<u16> {
    listening_ports_in(pids, &listening_inodes())
}

/// The TCP ports any of `pids` listens on, given the machine's listening sockets.
pub fn listening_ports_in(pids: &[u32], inodes: &BTreeMap<u64, u16>) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
                && let Some(port) = inodes.get(&inode)
            {
                ports.insert(*port);
            }
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_itself_and_not_a_dead_pid() {
        let (pid, started) = current();
        assert!(started > 0);
        assert!(is_same_process(pid, started));
        assert!(!is_same_process(pid, started + 1));
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let child_pid = child.id();
        child.wait().expect("wait");
        assert_eq!(start_time(child_pid), None);
    }

    #[test]
    fn finds_descendants_and_their_listeners() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ports = listening_ports(&[std::process::id()]);
        assert!(ports.contains(&port), "{ports:?} lacks {port}");
        let mut child =
            std::process::Command::new("sh").args(["-c", "sleep 5 & wait"]).spawn().expect("spawn");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while tree(child.id()).len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let found = tree(child.id());
        assert_eq!(found.len(), 2, "sh and its sleep: {found:?}");
        for (pid, _) in &found {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(*pid).unwrap_or(0)),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        child.wait().expect("wait");
    }
}
