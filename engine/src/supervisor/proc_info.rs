//! Process truth from `/proc`: whether a pid is alive and when it started, so a recorded process is told apart
//! from an unrelated one that later got the same pid.

/// The start time of `pid` in clock ticks since boot, or `None` when no such process exists (or it is a zombie).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // After the state come fields 4..; starttime is field 22, i.e. the 19th after the state.
    fields.nth(18)?.parse().ok()
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
}
