//! Every child of a host is waited for: restarting services, their probes, and — when the host is PID 1 of a
//! container and so inherits every orphan — what a service left behind.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{TestEnv, eventually};

/// Three services that leave a shell behind (a subshell starts it and exits at once, so it is orphaned), run
/// 0.3 s, crash and are restarted (100 ms, 200 ms, 400 ms, … apart): seven restarts each in about nine seconds.
const CRASHING: &str = r#"
[services.a]
command = "(sh -c 'sleep 0.05' &); sleep 0.3; exit 1"
restart = "always"
ready = { exec = "true" }

[services.b]
command = "(sh -c 'sleep 0.05' &); sleep 0.3; exit 2"
restart = "always"
ready = { exec = "test -d ." }

[services.c]
command = "(sh -c 'sleep 0.05' &); sleep 0.3; exit 0"
restart = "always"
"#;

/// Restarts each service gets before the tests look.
const RESTARTS: u64 = 7;

/// Children of `pid` that exited and were never waited for.
fn zombies_of(pid: u32) -> Vec<u32> {
    let parent = pid.to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return false };
            let fields: Vec<&str> =
                stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&parent.as_str())
        })
        .collect()
}

/// What `pid` has open, at the look (of a few) where it had the fewest descriptors (a probe's pidfd or a state
/// write's file come and go).
fn settled_fds(pid: u32) -> Vec<String> {
    (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(15));
            std::fs::read_dir(format!("/proc/{pid}/fd")).map_or_else(
                |_| Vec::new(),
                |fds| {
                    fds.filter_map(Result::ok)
                        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                        .map(|target| target.display().to_string())
                        .collect()
                },
            )
        })
        .min_by_key(Vec::len)
        .unwrap_or_default()
}

/// Restarts per service in the saved state.
fn restarts(env: &TestEnv) -> BTreeMap<String, u64> {
    env.state()["services"]
        .as_array()
        .map(|services| {
            services
                .iter()
                .filter_map(|s| Some((s["service"].as_str()?.to_owned(), s["restarts"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (at most 20 s) until every service of [`CRASHING`] was restarted `n` times.
fn until_restarted(env: &TestEnv, n: u64) -> bool {
    eventually(20, || {
        let counts = restarts(env);
        counts.len() == 3 && counts.values().all(|r| *r >= n)
    })
}

#[test]
fn restarting_services_and_their_probes_leave_no_zombie_and_no_descriptor_in_the_host() {
    let env = TestEnv::new();
    env.write(".envctl", CRASHING);
    env.envctl(&["start"]).ok();
    let host = u32::try_from(env.state()["host"]["pid"].as_u64().expect("host pid")).expect("pid");
    // By the second restart the host's job worker has opened its store (half a second after the start).
    assert!(until_restarted(&env, 2), "{:?}", restarts(&env));
    let fds_before = settled_fds(host);
    assert!(until_restarted(&env, RESTARTS), "{:?}", restarts(&env));
    let fds_after = settled_fds(host);
    let zombies = zombies_of(host);
    env.envctl(&["stop"]).ok();
    assert_eq!(zombies.len(), 0, "unreaped children of the host: {zombies:?}");
    assert!(
        fds_after.len() <= fds_before.len(),
        "the host's descriptors grew from {fds_before:?} to {fds_after:?}"
    );
}

/// A foreground host as PID 1 of a PID namespace of its own (with its own `/proc`), as in a container without
/// an init; stopped (SIGTERM, then SIGKILL to `unshare`) when dropped.
struct Pid1Host {
    unshare: Child,
    /// The host's pid as this test sees it.
    pid: u32,
}

impl Pid1Host {
    /// `None` when this machine does not let the test make a PID namespace.
    #[allow(clippy::disallowed_methods)] // the test passes its own PATH on
    fn start(env: &TestEnv) -> Option<Self> {
        let ns = ["--pid", "--fork", "--mount-proc"];
        let usable = Command::new("unshare").args(ns).arg("true").stderr(Stdio::null()).status();
        if !usable.is_ok_and(|s| s.success()) {
            return None;
        }
        let unshare = env
            .sandboxed("unshare", &env.repo)
            .args(ns)
            .arg(env!("CARGO_BIN_EXE_envctl"))
            .args(["start", "--foreground"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare");
        let mut host = Self { pid: 0, unshare };
        let found = eventually(10, || {
            host.pid = envctl_engine::supervisor::proc_info::children(host.unshare.id())
                .first()
                .copied()
                .unwrap_or(0);
            host.pid != 0
        });
        assert!(found, "unshare started no host");
        Some(host)
    }
}

impl Drop for Pid1Host {
    fn drop(&mut self) {
        let signal = |pid: u32, signal| {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
            }
        };
        signal(self.pid, nix::sys::signal::Signal::SIGTERM);
        let ended = eventually(10, || self.unshare.try_wait().is_ok_and(|s| s.is_some()));
        if !ended {
            signal(self.unshare.id(), nix::sys::signal::Signal::SIGKILL);
            let _ = self.unshare.wait();
        }
    }
}

#[test]
#[allow(clippy::print_stderr)] // says why it did not run
fn a_host_that_is_pid_1_waits_for_what_its_restarting_services_leave_behind() {
    let env = TestEnv::new();
    env.write(".envctl", CRASHING);
    let Some(host) = Pid1Host::start(&env) else {
        eprintln!("skipped: `unshare --pid --fork --mount-proc` is not permitted here");
        return;
    };
    assert!(until_restarted(&env, RESTARTS), "{:?}", restarts(&env));
    // An orphan that just exited is a zombie until the host's next look at its services' process groups.
    let mut zombies = zombies_of(host.pid);
    eventually(6, || {
        zombies = zombies_of(host.pid);
        zombies.is_empty()
    });
    drop(host);
    assert_eq!(zombies.len(), 0, "unreaped children of the host: {zombies:?}");
}
