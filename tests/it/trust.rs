//! The trust boundary, attacked the way a user's machine would: a recorded pid that now belongs to someone else,
//! a private runtime directory under a permissive umask.

use crate::support::{TestEnv, alive, eventually, kill9};

fn scope(env: &TestEnv) -> std::path::PathBuf {
    env.runtime.join("scopes").join(envctl_engine::config::scope_id(&env.repo))
}

/// A foreign session leader (`setsid`) with a child, started by the test: what a recycled pid may name.
struct Foreign {
    leader: std::process::Child,
}

impl Foreign {
    fn start() -> Self {
        let leader = std::process::Command::new("setsid")
            .args(["sh", "-c", "sleep 1000 & exec sleep 1000"])
            .spawn()
            .expect("setsid");
        Self { leader }
    }

    fn pid(&self) -> u32 {
        self.leader.id()
    }

    /// Every process of its session (the leader and its child).
    fn members(&self) -> Vec<(u32, u64)> {
        let pid = self.pid();
        assert!(
            eventually(5, || envctl_engine::supervisor::proc_info::group_or_session_members(pid).len() >= 2)
        );
        envctl_engine::supervisor::proc_info::group_or_session_members(pid)
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        for (pid, _) in envctl_engine::supervisor::proc_info::group_or_session_members(self.pid()) {
            kill9(pid);
        }
        let _ = self.leader.wait();
    }
}

/// Points the saved state's record of `service` at `pid` with a start time that is not its own: the record of a
/// process that died, whose pid the kernel has since given to someone else.
fn record_points_at(env: &TestEnv, service: &str, pid: u32) {
    let path = scope(env).join("run_state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("state")).expect("json");
    for record in state["services"].as_array_mut().expect("services") {
        if record["service"] == service {
            let started = record["pid_start_time"].as_u64().expect("start time");
            record["pid"] = serde_json::json!(pid);
            record["pid_start_time"] = serde_json::json!(started.saturating_sub(1).max(1));
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&state).expect("json")).expect("write");
}

fn host_down(env: &TestEnv) {
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    kill9(host);
    assert!(eventually(5, || !std::path::Path::new(&format!("/proc/{host}")).exists()
        || std::fs::read_to_string(format!("/proc/{host}/stat")).is_ok_and(|s| s.contains(") Z"))));
}

#[test]
fn blast_all_leaves_a_foreign_session_on_a_recycled_pid_alone() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let (web, web_started) = env.pids()["main/web"];
    host_down(&env);
    kill9(web);
    assert!(eventually(5, || !alive(web, web_started)));
    let foreign = Foreign::start();
    let members = foreign.members();
    record_points_at(&env, "web", foreign.pid());
    env.envctl(&["blast-all"]).ok();
    assert!(members.iter().all(|(p, s)| alive(*p, *s)), "the foreign session and its child live");
}

#[test]
fn stop_all_leaves_a_foreign_session_on_a_recycled_pid_alone() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let (web, web_started) = env.pids()["main/web"];
    host_down(&env);
    kill9(web);
    assert!(eventually(5, || !alive(web, web_started)));
    let foreign = Foreign::start();
    let members = foreign.members();
    record_points_at(&env, "web", foreign.pid());
    env.envctl(&["stop-all"]).ok();
    assert!(members.iter().all(|(p, s)| alive(*p, *s)), "the foreign session and its child live");
}
