//! start / stop / resume / restart / blast-all with real processes.

use std::collections::BTreeSet;

use crate::support::{TestEnv, alive, eventually, free_port, kill9};

const HTTP: &str = "python3 -m http.server {port} --bind 127.0.0.1";

fn sleepers(n: usize) -> String {
    (0..n).map(|i| ["[services.s", &i.to_string(), "]\ncommand = \"sleep 1000\"\n\n"].concat()).collect()
}

#[test]
fn kill_9_of_the_host_then_resume_adopts_all_ten_and_stop_leaves_nothing() {
    let env = TestEnv::new();
    env.write(".envctl", &sleepers(10));
    env.envctl(&["start"]).ok();
    let before = env.pids();
    assert_eq!(before.len(), 10, "{before:?}");
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    kill9(host);
    assert!(eventually(5, || !std::path::Path::new(&format!("/proc/{host}")).exists()
        || std::fs::read_to_string(format!("/proc/{host}/stat")).is_ok_and(|s| s.contains(") Z"))));
    assert!(before.values().all(|(p, s)| alive(*p, *s)), "services survive their host");
    let run = env.envctl(&["resume"]);
    run.ok();
    assert!(run.stderr.contains("10 adopted, 0 restarted"), "{}", run.stderr);
    assert_eq!(env.pids(), before, "adopted, not restarted");
    let new_host = env.state()["host"]["pid"].as_u64().expect("new host");
    assert_ne!(new_host, host);
    env.envctl(&["stop"]).ok();
    assert!(eventually(5, || before.values().all(|(p, s)| !alive(*p, *s))), "no service left behind");
    assert!(
        eventually(5, || !alive(
            u32::try_from(new_host).expect("pid"),
            envctl_engine::supervisor::proc_info::start_time(u32::try_from(new_host).expect("pid"))
                .unwrap_or(0)
        ) || envctl_engine::supervisor::proc_info::start_time(
            u32::try_from(new_host).expect("pid")
        )
        .is_none()),
        "the host exits once nothing runs"
    );
}

#[test]
fn resume_restarts_a_service_that_died_with_its_host() {
    let env = TestEnv::new();
    env.write(".envctl", &sleepers(2));
    env.envctl(&["start"]).ok();
    let before = env.pids();
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    kill9(host);
    let (pid, _) = before["main/s1"];
    kill9(pid);
    assert!(eventually(5, || !alive(before["main/s1"].0, before["main/s1"].1)));
    let run = env.envctl(&["resume"]);
    run.ok();
    assert!(run.stderr.contains("1 adopted, 1 restarted"), "{}", run.stderr);
    let after = env.pids();
    assert_eq!(after["main/s0"], before["main/s0"]);
    assert_ne!(after["main/s1"], before["main/s1"]);
}

#[test]
fn resume_without_state_exits_1() {
    let env = TestEnv::new();
    env.write(".envctl", &sleepers(1));
    let run = env.envctl(&["resume"]);
    run.fails();
    assert!(run.stderr.contains("no saved state to resume"), "{}", run.stderr);
}

#[test]
fn a_service_that_exits_at_start_fails_the_start_with_its_log_and_no_stale_failure_survives() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.good]\ncommand = \"sleep 1000\"\n\n[services.bad]\ncommand = \"echo boom-marker; exit 3\"\nready = { log = \"never\", timeout = \"10s\" }\n",
    );
    let run = env.envctl(&["start"]);
    run.fails();
    assert!(run.stderr.contains("main/bad failed: exited with code 3 before it was ready"), "{}", run.stderr);
    assert!(run.stderr.contains("boom-marker"), "last log lines are shown: {}", run.stderr);
    let state = env.state();
    assert_eq!(state["failed"], true);
    assert!(state["failure"].as_str().is_some_and(|f| f.contains("exited with code 3")), "{state}");
    // Nothing of the failed start is left running.
    assert!(env.pids().is_empty(), "{:?}", env.pids());
    env.envctl(&["config", "set", "services.bad.command=echo never; sleep 1000"]).ok();
    env.envctl(&["start"]).ok();
    let state = env.state();
    assert_eq!(state["failed"], false, "{state}");
    assert_eq!(state["failure"], serde_json::Value::Null);
    let errors = env.envctl(&["errors", "--json"]);
    assert!(errors.json()["errors"].as_array().is_some_and(Vec::is_empty), "{}", errors.stdout);
}

#[test]
fn a_service_that_fails_before_it_is_ready_is_one_entry_in_errors() {
    let env = TestEnv::new();
    // A probe that cannot pass, so the exit always comes before readiness however slow the machine is.
    env.write(
        ".envctl",
        "[services.bad]\ncommand = \"sh -c 'exit 3'\"\nready = { log = \"never\", timeout = \"10s\" }\n",
    );
    env.envctl(&["start"]).fails();
    let run = env.envctl(&["errors", "--json"]);
    run.fails();
    let report = run.json();
    let entries: Vec<&serde_json::Value> = report["errors"]
        .as_array()
        .map(|all| all.iter().filter(|e| e["service"] == "bad").collect())
        .unwrap_or_default();
    assert_eq!(entries.len(), 1, "one failure, one entry: {}", run.stdout);
    assert_eq!(entries[0]["kind"], "start_failed", "the more specific entry is kept");
    assert!(
        entries[0]["message"].as_str().is_some_and(|m| m.contains("exited with code 3")),
        "{}",
        run.stdout
    );
}

/// `error_report.json` of `env`'s repository.
fn error_report(env: &TestEnv) -> serde_json::Value {
    let path =
        env.runtime.join("scopes").join(envctl_engine::config::scope_id(&env.repo)).join("error_report.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("error_report.json")).expect("json")
}

#[test]
fn error_report_keeps_the_last_50_lines_of_a_failed_services_log() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.bad]\ncommand = \"for i in $(seq 1 200); do echo log-line-$i; done; exit 3\"\nready = { log = \"never\", timeout = \"10s\" }\n",
    );
    env.envctl(&["start"]).fails();
    let report = error_report(&env);
    let entry = report["errors"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["kind"] == "start_failed"))
        .unwrap_or_else(|| panic!("no start_failed entry: {report}"));
    let tail: Vec<&str> = entry["log_tail"]
        .as_array()
        .expect("log_tail")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let want: Vec<String> = (151..=200).map(|i| format!("log-line-{i}")).collect();
    assert_eq!(tail, want, "{report}");
    let log = entry["log_path"].as_str().map(std::path::Path::new);
    assert!(log.is_some_and(std::path::Path::is_file), "{report}");
    assert!(!report.to_string().contains("log-line-150\""), "nothing before the tail: {report}");
}

#[test]
fn a_port_held_by_a_foreign_process_moves_the_service_and_the_process_lives() {
    let foreign = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let taken = foreign.local_addr().expect("addr").port();
    let env = TestEnv::new();
    env.write(".envctl", &format!("[services.web]\ncommand = \"{HTTP}\"\nport = {taken}\n"));
    env.envctl(&["start"]).ok();
    let manifest = std::fs::read_to_string(
        env.runtime
            .join("scopes")
            .join(envctl_engine::config::scope_id(&env.repo))
            .join("ports_manifest.json"),
    )
    .expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("json");
    let plan = &manifest["targets"][0]["ports"]["web"];
    assert_eq!(plan["source"], "retry", "{manifest}");
    assert_eq!(plan["requested"], taken);
    let moved = u16::try_from(plan["assigned"].as_u64().expect("port")).expect("u16");
    assert_ne!(moved, taken);
    std::net::TcpStream::connect(("127.0.0.1", moved)).expect("the service listens on its new port");
    std::net::TcpStream::connect(("127.0.0.1", taken)).expect("the foreign listener is untouched");
    env.envctl(&["stop"]).ok();
    std::net::TcpStream::connect(("127.0.0.1", taken)).expect("still untouched after stop");
}

#[test]
fn a_grandchild_server_is_gone_after_stop() {
    let env = TestEnv::new();
    env.write(
        "serve.sh",
        "#!/bin/sh\npython3 -m http.server \"$PORT\" --bind 127.0.0.1 &\nsleep 1000 &\nwait\n",
    );
    let port = free_port();
    env.write(".envctl", &format!("[services.web]\ncommand = \"sh serve.sh\"\nport = {port}\n"));
    env.envctl(&["start"]).ok();
    let (pid, _) = env.pids()["main/web"];
    let tree = envctl_engine::supervisor::proc_info::tree(pid);
    assert!(tree.len() >= 3, "the script, its server and its sleep: {tree:?}");
    env.envctl(&["stop"]).ok();
    assert!(eventually(5, || tree.iter().all(|(p, s)| !alive(*p, *s))), "left behind: {tree:?}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn main_and_a_worktree_run_side_by_side_and_stop_tree_touches_only_it() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(".envctl", &format!("[services.web]\ncommand = \"{HTTP}\"\nport = {port}\n\n[services.worker]\ncommand = \"sleep 1000\"\n"));
    env.git(&["add", ".envctl"]);
    env.git(&["commit", "-q", "-m", "config"]);
    env.envctl(&["worktree", "add", "feat"]).ok();
    let run = env.envctl(&["start", "--all"]);
    run.ok();
    assert!(run.stdout.contains("main") && run.stdout.contains("feat"), "{}", run.stdout);
    let endpoints = env.envctl(&["endpoints", "--json"]).ok().json();
    let main_port = endpoints["targets"]["main"]["web"]["port"].as_u64().expect("main port");
    let feat_port = endpoints["targets"]["feat"]["web"]["port"].as_u64().expect("feat port");
    assert_ne!(main_port, feat_port);
    for p in [main_port, feat_port] {
        std::net::TcpStream::connect(("127.0.0.1", u16::try_from(p).expect("u16"))).expect("both listen");
    }
    let pids = env.pids();
    assert_eq!(pids.len(), 4, "{pids:?}");
    env.envctl(&["stop", "--tree", "feat"]).ok();
    assert!(eventually(5, || !alive(pids["feat/web"].0, pids["feat/web"].1)
        && !alive(pids["feat/worker"].0, pids["feat/worker"].1)));
    assert!(
        alive(pids["main/web"].0, pids["main/web"].1) && alive(pids["main/worker"].0, pids["main/worker"].1),
        "main untouched"
    );
    let left: BTreeSet<String> = env.pids().into_keys().collect();
    assert_eq!(left, BTreeSet::from(["main/web".to_owned(), "main/worker".to_owned()]));
    // The worktree's environment is what its services were given.
    let feat_env = env.envctl(&["env", "--tree", "feat", "--service", "web", "--json"]).ok().json();
    assert_eq!(feat_env["services"]["web"]["PORT"], feat_port.to_string());
    env.envctl(&["stop-all"]).ok();
    assert!(env.pids().is_empty());
}

#[test]
fn start_on_a_running_identical_environment_reuses_it() {
    let env = TestEnv::new();
    env.write(".envctl", &sleepers(2));
    env.envctl(&["start"]).ok();
    let before = env.pids();
    let run = env.envctl(&["start"]);
    run.ok();
    assert!(run.stderr.contains("reused"), "{}", run.stderr);
    assert_eq!(env.pids(), before);
    env.envctl(&["restart"]).ok();
    let after = env.pids();
    assert!(before.iter().all(|(k, v)| after[k] != *v), "restart makes new processes");
    assert!(before.values().all(|(p, s)| !alive(*p, *s)), "and stops the old ones");
}

#[test]
fn on_failure_restarts_a_crashing_service_with_backoff() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.flaky]\ncommand = \"sleep 0.3; exit 1\"\nrestart = \"on-failure\"\n");
    env.envctl(&["start"]).ok();
    assert!(
        eventually(10, || env.state()["services"][0]["restarts"].as_u64().unwrap_or(0) >= 2),
        "{}",
        env.state()
    );
    let health = env.envctl(&["health", "--strict", "--json"]);
    assert_eq!(health.code, 1, "restarts make it degraded under --strict: {}", health.stdout);
}

#[test]
fn blast_all_stops_what_envctl_started_and_only_that() {
    let env = TestEnv::new();
    env.write(".envctl", &sleepers(3));
    let mut foreign = std::process::Command::new("sleep").arg("1000").spawn().expect("foreign");
    env.envctl(&["start"]).ok();
    let pids = env.pids();
    let run = env.envctl(&["blast-all"]);
    run.ok();
    assert!(eventually(5, || pids.values().all(|(p, s)| !alive(*p, *s))));
    assert!(foreign.try_wait().expect("wait").is_none(), "a process envctl did not start is untouched");
    let leases = std::fs::read_dir(env.runtime.join("ports")).map_or(0, std::iter::Iterator::count);
    assert!(leases <= 1, "only the ledger lock may remain, found {leases} entries");
    foreign.kill().expect("kill foreign");
    foreign.wait().expect("reap");
}

#[test]
fn logs_health_errors_and_endpoints_describe_a_running_environment() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(".envctl", &format!("[services.web]\ncommand = \"echo hello-log; exec {HTTP}\"\nport = {port}\nready = {{ http = \"/\" }}\n\n[services.worker]\ncommand = \"echo working; sleep 1000\"\n"));
    env.envctl(&["start"]).ok();
    let logs = env.envctl(&["logs", "--service", "web", "--tail", "5"]);
    assert!(logs.ok().stdout.contains("hello-log"), "{}", logs.stdout);
    let health = env.envctl(&["health", "--json"]).ok().json();
    assert_eq!(health["ok"], true, "{health}");
    assert_eq!(health["services"][0]["truth"], "running");
    assert!(
        health["services"]
            .as_array()
            .expect("services")
            .iter()
            .any(|s| s["probes"].as_array().is_some_and(|p| !p.is_empty()))
    );
    let endpoints = env.envctl(&["endpoints", "--json"]).ok().json();
    assert_eq!(endpoints["targets"]["main"]["web"]["url"], format!("http://127.0.0.1:{port}"));
    env.envctl(&["errors"]).ok();
    env.envctl(&["clear-logs", "--service", "web"]).ok();
    assert!(!env.envctl(&["logs", "--service", "web"]).ok().stdout.contains("hello-log"));
    // A service killed behind envctl's back is reported.
    let (pid, _) = env.pids()["main/worker"];
    let tree = envctl_engine::supervisor::proc_info::tree(pid);
    assert_eq!(tree.len(), 2, "the shell and its sleep: {tree:?}");
    kill9(pid);
    assert!(eventually(5, || env.envctl(&["health"]).code == 1));
    assert!(eventually(5, || env.envctl(&["errors", "--json"]).stdout.contains("killed by a signal")));
    assert_eq!(env.envctl(&["errors"]).code, 1);
    // The shell's orphaned child does not outlive its service.
    assert!(eventually(10, || tree.iter().all(|(p, s)| !alive(*p, *s))), "left behind: {tree:?}");
}

#[test]
fn worktree_add_and_remove_free_everything() {
    let env = TestEnv::new();
    env.write(".envctl", &format!("[services.web]\ncommand = \"{HTTP}\"\nport = {}\n", free_port()));
    env.git(&["add", ".envctl"]);
    env.git(&["commit", "-q", "-m", "config"]);
    env.envctl(&["worktree", "add", "feat"]).ok();
    let run = env.envctl(&["worktree", "add", "../evil"]);
    run.fails();
    let list = env.envctl(&["worktree", "list", "--json"]).ok().json();
    assert_eq!(list["targets"][1]["name"], "feat");
    env.envctl(&["start", "--tree", "feat"]).ok();
    let pids = env.pids();
    let run = env.envctl(&["worktree", "remove", "feat"]);
    run.ok();
    assert!(run.stderr.contains("stopped 1 service(s)"), "{}", run.stderr);
    assert!(pids.values().all(|(p, s)| !alive(*p, *s)));
    assert!(!env.repo.join("trees/feat").exists());
    let run = env.envctl(&["worktree", "remove", "main"]);
    run.fails();
}

#[test]
fn foreground_prefixes_logs_and_ctrl_c_stops_everything() {
    use std::io::{BufRead, BufReader};
    let env = TestEnv::new();
    env.write(".envctl", "[services.talker]\ncommand = \"echo fg-hello; sleep 1000\"\n");
    let mut child = env.spawn_envctl(&["start", "--foreground"]);
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = false;
    for line in lines.by_ref().map_while(Result::ok) {
        if line.contains("main/talker | fg-hello") {
            seen = true;
            break;
        }
    }
    assert!(seen, "prefixed log line printed");
    let pids = env.pids();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("ctrl-c");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(2), "controlled quit");
    assert!(pids.values().all(|(p, s)| !alive(*p, *s)), "everything stopped");
}

#[test]
fn every_lifecycle_step_is_an_event_line() {
    let env = TestEnv::new();
    env.write(".envctl", &sleepers(2));
    env.envctl(&["start"]).ok();
    env.envctl(&["stop"]).ok();
    let scope = env.runtime.join("scopes").join(envctl_engine::config::scope_id(&env.repo));
    assert!(eventually(5, || std::fs::read_to_string(scope.join("events.jsonl"))
        .is_ok_and(|t| t.contains("host.stopped"))));
    let text = std::fs::read_to_string(scope.join("events.jsonl")).expect("events");
    let events: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    let names: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}{}",
                e["event"].as_str().unwrap_or(""),
                e["service"].as_str().map(|s| format!(":{s}")).unwrap_or_default()
            )
        })
        .collect();
    for expected in [
        "host.started",
        "run.begin",
        "service.starting:s0",
        "service.ready:s1",
        "run.ready",
        "service.stopped:s0",
        "host.stopped",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    let start_run = events.iter().find(|e| e["event"] == "run.ready").expect("run.ready")["run_id"].clone();
    assert!(events.iter().filter(|e| e["event"] == "service.ready").all(|e| e["run_id"] == start_run));
    assert!(events.iter().all(|e| e["schema_version"] == 1 && e["at"].is_string()));
}

/// A mail catcher: listens on `$PORT_SMTP` and `$PORT_WEB`, then writes both to `ports.seen` in its directory.
const MAIL_CATCHER: &str = r#"import os, socket, time
held = []
for var in ("PORT_SMTP", "PORT_WEB"):
    s = socket.socket()
    s.bind(("127.0.0.1", int(os.environ[var])))
    s.listen()
    held.append(s)
with open("ports.seen", "w") as f:
    f.write(os.environ["PORT_SMTP"] + " " + os.environ["PORT_WEB"])
time.sleep(1000)
"#;

/// The lease of `port` in the machine-wide ledger, when there is one.
fn lease(env: &TestEnv, port: u64) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(env.runtime.join("ports").join(format!("{port}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

#[test]
fn named_ports_are_leased_per_target_and_reach_the_service_and_its_dependents() {
    // Something else listens on the SMTP base port: main's is moved past it.
    let foreign = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let (smtp, web) = (foreign.local_addr().expect("addr").port(), free_port());
    let env = TestEnv::new();
    env.write("mail.py", MAIL_CATCHER);
    env.write(
        ".envctl",
        &format!(
            "[services.mail]\ncommand = \"python3 mail.py\"\nports = {{ smtp = {smtp}, web = {web} }}\nready = {{ exec = \"test -f ports.seen\" }}\n\n[services.app]\ncommand = \"sleep 1000\"\ndepends_on = [\"mail\"]\nenv = {{ MAIL_WEB = \"{{mail.ports.web}}\" }}\n"
        ),
    );
    env.git(&["add", "."]);
    env.git(&["commit", "-q", "-m", "config"]);
    env.envctl(&["worktree", "add", "feat"]).ok();
    env.envctl(&["start", "--all"]).ok();
    let list = env.envctl(&["list-targets", "--json"]).ok().json();
    let mut seen = BTreeSet::new();
    for target in list["targets"].as_array().expect("targets") {
        let name = target["name"].as_str().expect("name");
        let slot = target["slot"].as_u64().expect("slot");
        let plan = |port: &str| target["ports"][format!("mail.ports.{port}")].clone();
        let (got_smtp, got_web) = (plan("smtp")["assigned"].as_u64(), plan("web")["assigned"].as_u64());
        let (got_smtp, got_web) = (got_smtp.expect("smtp planned"), got_web.expect("web planned"));
        assert!(seen.insert(got_smtp) && seen.insert(got_web), "a port used twice: {list}");
        assert_eq!(plan("web")["requested"].as_u64(), Some(u64::from(web) + slot), "{list}");
        assert_ne!(got_smtp, u64::from(smtp), "the foreign listener's port is skipped: {list}");
        for (port, owner) in [(got_smtp, "mail.ports.smtp"), (got_web, "mail.ports.web")] {
            let held = lease(&env, port).unwrap_or_else(|| panic!("{name}: port {port} is not leased"));
            assert_eq!(
                (held["owner"]["target"].as_str(), held["owner"]["service"].as_str()),
                (Some(name), Some(owner))
            );
        }
        // The service got both, and listens on both.
        let root = std::path::PathBuf::from(target["root"].as_str().expect("root"));
        let reported = std::fs::read_to_string(root.join("ports.seen")).expect("ports.seen");
        assert_eq!(reported, format!("{got_smtp} {got_web}"), "{name}");
        for port in [got_smtp, got_web] {
            std::net::TcpStream::connect(("127.0.0.1", u16::try_from(port).expect("u16")))
                .expect("listening");
        }
        // Its dependent reaches its web port; `env`, `endpoints` and `explain-startup` show them.
        let flag = if name == "main" { vec!["--main"] } else { vec!["--tree", name] };
        let shown = env.envctl(&[&["env", "--json"][..], &flag].concat()).ok().json();
        assert_eq!(shown["services"]["app"]["MAIL_WEB"], got_web.to_string(), "{shown}");
        assert_eq!(shown["services"]["mail"]["PORT_SMTP"], got_smtp.to_string(), "{shown}");
        let plan = env.envctl(&[&["explain-startup", "--json"][..], &flag].concat()).ok().json();
        let mail =
            plan["targets"][0]["services"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "mail"));
        assert_eq!(mail.map(|m| m["ports"]["web"]["assigned"].clone()), Some(got_web.into()), "{plan}");
        let endpoints = env.envctl(&["endpoints", "--json"]).ok().json();
        assert_eq!(endpoints["targets"][name]["mail"]["ports"]["smtp"], got_smtp, "{endpoints}");
    }
    assert_eq!(seen.len(), 4);
    // Stopping main gives up the lease of its moved SMTP port (as for `port`) and keeps the web port's.
    let main = &list["targets"][0]["ports"];
    let (main_smtp, main_web) =
        (main["mail.ports.smtp"]["assigned"].as_u64(), main["mail.ports.web"]["assigned"].as_u64());
    env.envctl(&["stop", "--main"]).ok();
    assert!(lease(&env, main_smtp.expect("smtp")).is_none(), "the moved port's lease is released");
    assert!(lease(&env, main_web.expect("web")).is_some(), "the requested port stays leased");
    drop(foreign);
}

/// The `state.saved` events of run `run_id` in the scope's `events.jsonl`, once the run's own save (the one that
/// writes its `runs/` copy) is in.
fn saves_of_run(env: &TestEnv, run_id: &str) -> Vec<serde_json::Value> {
    let events =
        env.runtime.join("scopes").join(envctl_engine::config::scope_id(&env.repo)).join("events.jsonl");
    let saves = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "state.saved" && e["run_id"] == run_id)
            .collect()
    };
    assert!(eventually(10, || saves().iter().any(|e| e["detail"]["history"] == true)), "the run's save");
    // A change no save covered yet is written once the start is over: let it land too.
    std::thread::sleep(std::time::Duration::from_millis(300));
    saves()
}

#[test]
fn a_start_writes_the_state_as_often_for_three_services_as_for_three_hundred() {
    let mut counts = Vec::new();
    for n in [3, 300] {
        let env = TestEnv::new();
        env.write(".envctl", &sleepers(n));
        env.envctl(&["start"]).ok();
        let state = env.state();
        assert_eq!(state["services"].as_array().map(Vec::len), Some(n));
        let run_id = state["run_id"].as_str().expect("run id").to_owned();
        let saves = saves_of_run(&env, &run_id);
        // One write when the start ends (with its run copy), at most one more for a change that came after it.
        assert!((1..=2).contains(&saves.len()), "{n} services: {saves:?}");
        counts.push(saves.len());
        env.envctl(&["stop"]).ok();
    }
    assert!(counts[1] <= counts[0] + 1, "writes grow with the number of services: {counts:?}");
}

#[test]
fn a_start_in_layers_writes_each_ready_wave_once() {
    let env = TestEnv::new();
    let mut config = sleepers(20);
    config.push_str("[services.late]\ncommand = \"sleep 1000\"\ndepends_on = [");
    config.push_str(&(0..20).map(|i| format!("\"s{i}\"")).collect::<Vec<_>>().join(", "));
    config.push_str("]\n");
    env.write(".envctl", &config);
    env.envctl(&["start"]).ok();
    let run_id = env.state()["run_id"].as_str().expect("run id").to_owned();
    let saves = saves_of_run(&env, &run_id);
    // The first wave (20 services) once, the start's end once, at most one more for a later change.
    assert!((2..=3).contains(&saves.len()), "{saves:?}");
    assert!(
        saves.iter().any(|e| e["detail"]["history"] == false && e["detail"]["services"].as_u64() >= Some(20)),
        "the first wave was written before the start ended: {saves:?}"
    );
}

#[test]
fn the_run_copy_a_start_writes_after_its_reply_is_there_for_stop_and_for_a_bundle() {
    let env = TestEnv::new();
    env.write(".envctl", &sleepers(2));
    env.envctl(&["start"]).ok();
    let run_id = env.state()["run_id"].as_str().expect("run id").to_owned();
    let scope = env.runtime.join("scopes").join(envctl_engine::config::scope_id(&env.repo));
    let copy = scope.join("runs").join(&run_id);
    // A bundle made at once has the run's copy: debug-pack waits for the host to finish writing it.
    let packed = env.envctl(&["debug-pack"]);
    packed.ok();
    let bundle = std::path::PathBuf::from(packed.stdout.trim());
    let listing = std::process::Command::new("tar").arg("tzf").arg(&bundle).output().expect("tar");
    let names = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(names.contains(&format!("runs/{run_id}/run_state.json")), "{names}");
    // `stop` returns once the run's copy says what it stopped.
    env.envctl(&["stop"]).ok();
    let text = std::fs::read_to_string(copy.join("run_state.json")).expect("the run copy");
    let state: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(state["services"].as_array().map(Vec::len), Some(0), "{text}");
}

#[test]
fn the_host_runs_in_a_session_of_its_own() {
    let env = TestEnv::new();
    env.write(".envctl", &sleepers(1));
    env.envctl(&["start"]).ok();
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    let stat = std::fs::read_to_string(format!("/proc/{host}/stat")).expect("host stat");
    // After the `(comm)`: state, ppid, pgrp, session, tty.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
    assert_eq!(fields[3], host.to_string(), "the host leads its own session: {stat}");
    assert_eq!(fields[4], "0", "with no controlling terminal: {stat}");
}

#[test]
fn the_host_keeps_no_descriptor_of_the_command_that_started_it_and_is_named_as_the_host() {
    use std::io::Read as _;
    let env = TestEnv::new();
    env.write(".envctl", &sleepers(1));
    // `start` with a pipe on descriptor 3, as a CI runner or a shell's `$(…)` can leave one open: the pipe must
    // reach its end when `start` exits, not when the host it started (or the service) does.
    let mut start = env
        .sandboxed("sh", &env.repo)
        .args(["-c", "exec \"$0\" start -q 3>&1 >/dev/null", env!("CARGO_BIN_EXE_envctl")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let mut pipe = start.stdout.take().expect("pipe");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(pipe.read_to_end(&mut Vec::new()).map(|_| ()));
    });
    assert!(start.wait().expect("wait").success(), "start succeeds");
    let ended = rx.recv_timeout(std::time::Duration::from_secs(20));
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{host}/fd"))
        .expect("host fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(ended.is_ok(), "the pipe stays open while the host runs; the host holds {fds:?}");
    let cmdline = std::fs::read(format!("/proc/{host}/cmdline")).expect("cmdline");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // `<exe> host -C <repo>`, or `<exe> host` where the command's own arguments left no room for the path.
    assert_eq!(args.get(1).map(String::as_str), Some("host"), "the host is named as such: {args:?}");
    env.envctl(&["stop"]).ok();
}

#[test]
fn a_host_of_300_services_runs_them_on_a_bounded_pool_of_threads() {
    let env = TestEnv::new();
    env.write(".envctl", &sleepers(300));
    env.envctl(&["start"]).ok();
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    let threads = std::fs::read_dir(format!("/proc/{host}/task")).expect("host tasks").count();
    // Its own thread and the blocking pool; each of 300 spawns on a thread of its own would make 300 more.
    assert!(threads <= envctl_engine::runtime::BLOCKING_THREADS + 1, "the host runs {threads} threads");
    env.envctl(&["stop"]).ok();
}
