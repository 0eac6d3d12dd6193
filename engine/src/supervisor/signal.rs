//! Stopping processes envctl started, and only those: every signal is sent after checking the recorded pid's
//! start time, so a pid the kernel has since given to another program is never touched.
//!
//! Stop = SIGTERM to the service's process group and to every descendant found under its leader → wait up to the
//! grace period → SIGKILL to whatever of them is left.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::{proc_info, reap};

/// Runs a `/proc` scan on the blocking pool, so the async thread that asked keeps serving.
pub async fn scan<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _ = tx.send(f());
    });
    match rx.await {
        Ok(value) => value,
        // The blocking pool is shutting down with the runtime: nothing is left to ask.
        Err(_) => std::future::pending().await,
    }
}

fn pid(raw: u32) -> Option<Pid> {
    i32::try_from(raw).ok().filter(|p| *p > 0).map(Pid::from_raw)
}

/// Whether the recorded leader's process group may be signalled: the leader is the recorded process, or it is
/// gone (the kernel does not reuse a pid while it still names a process group, so surviving members are ours).
fn group_is_ours(leader: u32, started: u64) -> bool {
    match proc_info::start_time(leader) {
        Some(now) => now == started,
        None => true,
    }
}

/// Sends `signal` to the group led by (`leader`, `started`) and to `members` that are still the same processes.
pub fn signal_all(leader: u32, started: u64, members: &[(u32, u64)], signal: Signal) {
    if group_is_ours(leader, started)
        && let Some(group) = pid(leader)
    {
        let _ = killpg(group, signal);
    }
    for (member, member_started) in members {
        if proc_info::is_same_process(*member, *member_started)
            && let Some(p) = pid(*member)
        {
            let _ = kill(p, signal);
        }
    }
}

/// Whether anything is left of the process group `group`, zombies included.
pub fn group_exists(group: u32) -> bool {
    pid(group).is_some_and(|g| killpg(g, None) != Err(nix::errno::Errno::ESRCH))
}

/// SIGKILLs whatever is left of the process group `group` once its leader (envctl's process) is gone and waited
/// for: while the group has members its id is not given to anyone else, so they are ours (zombies ignore it).
pub fn kill_rest_of_group(group: u32) {
    if proc_info::start_time(group).is_none()
        && group_exists(group)
        && let Some(g) = pid(group)
    {
        let _ = killpg(g, Signal::SIGKILL);
    }
}

/// Whether any of the leader's group or `members` is still alive.
pub fn any_alive(leader: u32, started: u64, members: &[(u32, u64)]) -> bool {
    proc_info::is_same_process(leader, started)
        || members.iter().any(|(p, s)| proc_info::is_same_process(*p, *s))
}

/// Stops a process (and its group and descendants) that this process is not the parent of, polling for its end.
/// Returns whether everything ended before `grace + kill_wait` ran out.
pub async fn stop_unowned(leader: u32, started: u64, grace: Duration) -> bool {
    let members = scan(move || {
        match proc_info::start_time(leader) {
            // The recorded process: its tree and its group are ours.
            Some(now) if now == started => {}
            // The pid names another process now, so the kernel had no group or session of ours under it left to
            // keep the pid reserved: nothing here is ours, whatever it leads.
            Some(_) => return None,
            // Gone: while a group or session of ours still has members, its id cannot be reused, so they are ours.
            None => {}
        }
        let group = proc_info::group_or_session_members(leader);
        if !proc_info::is_same_process(leader, started) && group.is_empty() {
            return None;
        }
        let mut members = proc_info::tree(leader);
        members.extend(group);
        Some(members)
    })
    .await;
    let Some(members) = members else { return true };
    signal_all(leader, started, &members, Signal::SIGTERM);
    if wait_gone(leader, started, &members, grace).await {
        return true;
    }
    signal_all(leader, started, &members, Signal::SIGKILL);
    wait_gone(leader, started, &members, Duration::from_secs(2)).await
}

/// Polls until the leader and `members` are gone, up to `limit`.
pub async fn wait_gone(leader: u32, started: u64, members: &[(u32, u64)], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if !any_alive(leader, started, members) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// After a service's leader exited: stops whatever is left of its process group and session (a child it did not
/// wait for, a server it forked), so nothing it started outlives it, and waits for those of them that were handed
/// to this process ([`reap::strays`]).
pub async fn reap_leftovers(leader: u32, grace: Duration) {
    let members = scan(move || proc_info::group_or_session_members(leader)).await;
    // With nothing left, or the leader's pid already naming another process (its group is not ours to signal),
    // there is nothing to stop.
    if !members.is_empty() && proc_info::start_time(leader).is_none() {
        signal_all(leader, 0, &members, Signal::SIGTERM);
        if !wait_gone(leader, 0, &members, grace).await {
            signal_all(leader, 0, &members, Signal::SIGKILL);
            wait_gone(leader, 0, &members, Duration::from_secs(2)).await;
        }
    }
    scan(move || reap::strays(leader)).await;
}
