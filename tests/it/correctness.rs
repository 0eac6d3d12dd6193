//! Lifecycle correctness: regression tests for what a new user hit in a day with a real app, each named after
//! what it pins.

use crate::support::{TestEnv, alive, eventually, free_port, kill9};

const HTTP: &str = "python3 -m http.server {port} --bind 127.0.0.1";

fn scope(env: &TestEnv) -> std::path::PathBuf {
    env.runtime.join("scopes").join(envctl_engine::config::scope_id(&env.repo))
}

fn service<'a>(health: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    health["services"].as_array()?.iter().find(|s| s["service"] == name)
}

#[test]
fn a_refused_worktree_remove_destroys_nothing() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(
        ".envctl",
        &format!(
            "[services.app]\ncommand = \"sleep 1000\"\n\n[requirements.cache]\nadapter = \"command\"\ncommand = \"{HTTP}\"\nport = {port}\n"
        ),
    );
    env.envctl(&["worktree", "add", "feature-z"]).ok();
    env.envctl(&["start", "--tree", "feature-z"]).ok();
    let data = scope(&env).join("data").join("cache").join("feature-z");
    assert!(data.is_dir(), "the worktree's server has its data directory");
    let before = env.pids();
    env.write("trees/feature-z/wip.txt", "not committed");
    let run = env.envctl(&["worktree", "remove", "feature-z"]);
    run.fails();
    assert!(run.stderr.contains("uncommitted changes") && run.stderr.contains("--force"), "{}", run.stderr);
    assert!(!run.stderr.contains("removed"), "{}", run.stderr);
    assert!(data.is_dir(), "its data is kept");
    assert!(env.repo.join("trees/feature-z").is_dir(), "the worktree is kept");
    assert!(before.values().all(|(p, s)| alive(*p, *s)), "its services keep running");
    env.envctl(&["worktree", "remove", "feature-z", "--force"]).ok();
    assert!(!data.exists(), "--force removes its data");
    assert!(!env.repo.join("trees/feature-z").exists());
    assert!(before.values().all(|(p, s)| !alive(*p, *s)));
}

#[test]
fn a_crashed_service_stays_in_the_state_after_another_is_restarted() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.web]\ncommand = \"sleep 1000\"\n\n[services.worker]\ncommand = \"echo worker-log-line; exec sleep 1000\"\nrestart = \"no\"\n",
    );
    env.envctl(&["start"]).ok();
    let (worker, _) = env.pids()["main/worker"];
    kill9(worker);
    assert!(eventually(5, || {
        let health = env.envctl(&["health", "--json"]).json();
        service(&health, "worker").is_some_and(|w| w["status"] == "failed")
    }));
    env.envctl(&["restart", "--service", "web"]).ok();
    let health = env.envctl(&["health", "--json"]);
    health.fails();
    let health = health.json();
    let row = service(&health, "worker").expect("the crashed service keeps its row");
    assert_eq!(row["status"], "failed", "{health}");
    assert!(row["failure"].as_str().is_some_and(|f| f.contains("signal")), "{health}");
    let errors = env.envctl(&["errors", "--json"]);
    assert!(errors.stdout.contains("worker"), "{}", errors.stdout);
    let logs = env.envctl(&["logs", "--service", "worker"]);
    logs.ok();
    assert!(logs.stdout.contains("worker-log-line"), "{}", logs.stdout);
    env.envctl(&["start"]).ok();
    let health = env.envctl(&["health", "--json"]).json();
    assert_eq!(service(&health, "worker").expect("worker")["status"], "ready", "started again: {health}");
}

#[test]
fn two_starts_at_once_both_succeed_with_one_set_of_services() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.s0]\ncommand = \"sleep 1000\"\n\n[services.s1]\ncommand = \"sleep 1000\"\n",
    );
    for trial in 0..5 {
        let (mut a, mut b) = (env.spawn_envctl(&["start"]), env.spawn_envctl(&["start"]));
        let (a, b) = (a.wait().expect("wait a"), b.wait().expect("wait b"));
        assert!(a.success() && b.success(), "trial {trial}: {a:?} {b:?}");
        let pids = env.pids();
        assert_eq!(pids.len(), 2, "trial {trial}: {pids:?}");
        assert!(pids.values().all(|(p, s)| alive(*p, *s)), "trial {trial}");
        env.envctl(&["stop-all"]).ok();
    }
}

#[test]
fn restart_of_a_service_restarts_exactly_it_and_dependents_only_when_asked() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.api]\ncommand = \"sleep 1000\"\n\n[services.worker]\ncommand = \"sleep 1000\"\ndepends_on = [\"api\"]\n",
    );
    env.envctl(&["start"]).ok();
    let before = env.pids();
    // Each restart prints the services it restarted, and nothing of the ones it left alone.
    let listed = |stdout: &str| -> Vec<String> {
        stdout
            .lines()
            .filter(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    let run = env.envctl(&["restart", "--service", "worker"]).ok().stdout.clone();
    assert_eq!(listed(&run), ["worker"], "{run}");
    let after = env.pids();
    assert_eq!(after["main/api"], before["main/api"], "its dependency keeps running");
    assert_ne!(after["main/worker"], before["main/worker"]);
    let run = env.envctl(&["restart", "--service", "api", "--with-dependents"]).ok().stdout.clone();
    assert_eq!(listed(&run), ["api", "worker"], "{run}");
    let last = env.pids();
    assert_ne!(last["main/api"], after["main/api"]);
    assert_ne!(last["main/worker"], after["main/worker"], "--with-dependents restarts what depends on it");
    env.envctl(&["restart", "--service", "api"]).ok();
    assert_eq!(env.pids()["main/worker"], last["main/worker"], "without it, dependents are left alone");
}

#[test]
fn a_failed_start_stops_the_requirements_it_began_and_its_host_exits() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(
        ".envctl",
        &format!(
            "[services.bad]\ncommand = \"exit 1\"\ndepends_on = [\"cache\"]\n\n[requirements.cache]\nadapter = \"command\"\ncommand = \"{HTTP}\"\nport = {port}\n"
        ),
    );
    env.envctl(&["start"]).fails();
    let state = env.state();
    let host = state["host"]["pid"].as_u64().expect("host pid");
    let host = u32::try_from(host).expect("pid");
    let host_started = state["host"]["start_time"].as_u64().expect("start time");
    assert!(
        eventually(5, || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()),
        "the requirement this start began is stopped"
    );
    assert!(eventually(5, || !alive(host, host_started)), "a host with nothing to supervise exits");
}

#[test]
fn a_stopped_target_takes_its_requested_port_back() {
    let foreign = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let wanted = foreign.local_addr().expect("addr").port();
    let env = TestEnv::new();
    env.write(".envctl", &format!("[services.web]\ncommand = \"{HTTP}\"\nport = {wanted}\n"));
    env.envctl(&["start"]).ok();
    let listed = env.envctl(&["list-targets"]);
    assert!(listed.stdout.contains(&format!("(wanted {wanted})")), "{}", listed.stdout);
    let health = env.envctl(&["health", "--json"]).json();
    let moved = service(&health, "web").expect("web")["port"].as_u64().expect("port");
    env.envctl(&["restart", "--service", "web"]).ok();
    assert!(
        env.runtime.join("ports").join(format!("{moved}.json")).exists(),
        "a service restarted on its moved port keeps the lease on it"
    );
    drop(foreign);
    env.envctl(&["stop-all"]).ok();
    env.envctl(&["start"]).ok();
    let health = env.envctl(&["health", "--json"]).json();
    assert_eq!(service(&health, "web").expect("web")["port"], wanted, "{health}");
    let listed = env.envctl(&["list-targets"]);
    assert!(!listed.stdout.contains("wanted"), "{}", listed.stdout);
}

#[test]
fn ports_reset_forgets_a_stopped_targets_leases_and_refuses_a_running_one() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(".envctl", &format!("[services.web]\ncommand = \"{HTTP}\"\nport = {port}\n"));
    env.envctl(&["start"]).ok();
    let run = env.envctl(&["ports", "reset"]);
    run.fails();
    assert!(run.stderr.contains("main is running"), "{}", run.stderr);
    env.envctl(&["stop-all"]).ok();
    let run = env.envctl(&["ports", "reset", "--main"]);
    run.ok();
    assert!(run.stderr.contains("released"), "{}", run.stderr);
    assert!(std::fs::read_dir(env.runtime.join("ports")).map_or(true, |d| {
        d.filter_map(Result::ok).all(|e| !e.file_name().to_string_lossy().starts_with(&port.to_string()))
    }));
}

#[test]
fn health_says_supervision_is_off_when_the_host_is_gone() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    kill9(host);
    assert!(eventually(5, || {
        let run = env.envctl(&["health"]);
        run.stdout.contains("supervision is off")
    }));
    let run = env.envctl(&["health"]);
    run.ok();
    assert!(run.stdout.contains("envctl resume"), "{}", run.stdout);
    env.envctl(&["health", "--strict"]).fails();
    assert_eq!(env.envctl(&["health", "--json"]).json()["supervised"], false);
    env.envctl(&["resume"]).ok();
    env.envctl(&["health", "--strict"]).ok();
}

/// A web server whose `/health` answers 200 until a file named `broken` exists in its directory, then 500.
const FLAKY_HEALTH: &str = r"import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if os.path.exists('broken') else 200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
";

#[test]
fn health_reruns_the_readiness_probe_and_names_its_answer() {
    let env = TestEnv::new();
    let port = free_port();
    env.write("flaky.py", FLAKY_HEALTH);
    env.write(
        ".envctl",
        &format!(
            "[services.web]\ncommand = \"python3 flaky.py {{port}}\"\nport = {port}\nready = {{ http = \"/health\" }}\n"
        ),
    );
    env.envctl(&["start"]).ok();
    let healthy = env.envctl(&["health", "--json"]).ok().json();
    let probe = &service(&healthy, "web").expect("web")["probe"];
    assert_eq!(probe["ok"], true, "{healthy}");
    env.write("broken", "");
    let url = format!("http://127.0.0.1:{port}/health");
    let run = env.envctl(&["health"]);
    run.fails();
    assert!(run.stdout.contains(&format!("http 500 from {url}")), "{}", run.stdout);
    assert!(run.stdout.contains("unhealthy"), "{}", run.stdout);
    let report = env.envctl(&["health", "--json"]).json();
    let web = service(&report, "web").expect("web");
    assert_eq!(
        (web["healthy"].as_bool(), web["probe"]["ok"].as_bool()),
        (Some(false), Some(false)),
        "{report}"
    );
    assert!(web["probe"]["detail"].as_str().is_some_and(|d| d.contains("500")), "{report}");
    assert_eq!(report["ok"], false);
    // Without the probe, only the process and its listener are checked.
    env.envctl(&["health", "--no-probe"]).ok();
}

/// Starts three services, kills the host with SIGKILL and garbles `run_state.json`, as a crash mid-write would.
fn three_services_behind_a_torn_state(env: &TestEnv) -> std::collections::BTreeMap<String, (u32, u64)> {
    let before = behind_a_torn_state(
        env,
        "[services.a]\ncommand = \"sleep 1000\"\n\n[services.b]\ncommand = \"sleep 1000\"\n\n[services.c]\ncommand = \"sleep 1000\"\n",
    );
    assert_eq!(before.len(), 3);
    before
}

/// Starts what `config` names, kills the host with SIGKILL and garbles `run_state.json`; returns what ran.
fn behind_a_torn_state(env: &TestEnv, config: &str) -> std::collections::BTreeMap<String, (u32, u64)> {
    env.write(".envctl", config);
    env.envctl(&["start"]).ok();
    let before = env.pids();
    let state = env.state();
    // The run copy (written right after the reply) is what a torn state is rebuilt from.
    let copy = scope(env).join("runs").join(state["run_id"].as_str().expect("run id")).join("run_state.json");
    assert!(eventually(5, || copy.is_file()), "the run copy is written");
    let host = state["host"]["pid"].as_u64().expect("host pid");
    kill9(host);
    assert!(eventually(5, || !std::path::Path::new(&format!("/proc/{host}")).exists()
        || std::fs::read_to_string(format!("/proc/{host}/stat")).is_ok_and(|s| s.contains(") Z"))));
    std::fs::write(scope(env).join("run_state.json"), "{\"schema_version\": 1, \"run_id\": \"run-to")
        .expect("garble");
    before
}

#[test]
fn stop_all_finds_every_process_behind_a_corrupt_run_state() {
    let env = TestEnv::new();
    let before = three_services_behind_a_torn_state(&env);
    let run = env.envctl(&["stop-all"]);
    run.ok();
    assert!(run.stderr.contains("recovered") && run.stderr.contains("3 process(es)"), "{}", run.stderr);
    assert!(eventually(5, || before.values().all(|(p, s)| !alive(*p, *s))), "every process is stopped");
}

#[test]
fn stop_all_finds_a_redis_server_behind_a_corrupt_run_state() {
    // redis-server rewrites its process title over its environment unless told not to, and with it the marks a
    // torn state is recovered by.
    let env = TestEnv::new();
    let port = crate::support::free_port();
    let before =
        behind_a_torn_state(&env, &format!("[requirements.redis]\nadapter = \"redis\"\nport = {port}\n"));
    let (pid, started) = *before.get("main/redis").unwrap_or_else(|| panic!("a redis server in {before:?}"));
    // Every copy torn too, so only the marks in `/proc` are left to find it by.
    for run in std::fs::read_dir(scope(&env).join("runs")).expect("runs").filter_map(Result::ok) {
        let _ = std::fs::write(run.path().join("run_state.json"), "{\"schema_ver");
    }
    env.envctl(&["stop-all"]).ok();
    assert!(eventually(5, || !alive(pid, started)), "the redis server is found by its marks and stopped");
}

#[test]
fn resume_adopts_every_process_behind_a_corrupt_run_state_and_start_starts_no_second_set() {
    let env = TestEnv::new();
    let before = three_services_behind_a_torn_state(&env);
    let run = env.envctl(&["resume"]);
    run.ok();
    assert!(run.stderr.contains("recovered"), "{}", run.stderr);
    assert!(run.stderr.contains("3 adopted, 0 restarted"), "{}", run.stderr);
    assert_eq!(env.pids(), before, "adopted, not restarted");
    env.envctl(&["start"]).ok();
    assert_eq!(env.pids(), before, "a start reuses them instead of starting a second set");
}

#[test]
fn start_after_a_corrupt_run_state_reuses_what_runs() {
    let env = TestEnv::new();
    let before = three_services_behind_a_torn_state(&env);
    let run = env.envctl(&["start"]);
    run.ok();
    assert!(run.stderr.contains("recovered"), "{}", run.stderr);
    assert_eq!(env.pids(), before, "no second set on other ports");
}

#[test]
fn a_missing_program_is_named_as_command_not_found() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"nosuchbinary --serve\"\nready = { log = \"never\", timeout = \"10s\" }\n");
    let run = env.envctl(&["start"]);
    run.fails();
    assert!(run.stderr.contains("`nosuchbinary`: command not found"), "{}", run.stderr);
}

#[test]
fn logs_no_color_and_no_color_strip_ansi_sequences() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.web]\ncommand = \"printf '\\\\033[31mred-marker\\\\033[0m\\\\n'; exec sleep 1000\"\n",
    );
    env.envctl(&["start"]).ok();
    assert!(eventually(5, || env.envctl(&["logs"]).stdout.contains("red-marker")));
    assert!(env.envctl(&["logs"]).stdout.contains("\u{1b}[31m"), "the log keeps its colours by default");
    let plain = env.envctl(&["logs", "--no-color"]);
    assert!(plain.stdout.contains("red-marker") && !plain.stdout.contains('\u{1b}'), "{:?}", plain.stdout);
    let plain = env.envctl_with(&[("NO_COLOR", "1")], &["logs"]);
    assert!(plain.stdout.contains("red-marker") && !plain.stdout.contains('\u{1b}'), "{:?}", plain.stdout);
}

#[test]
fn resume_after_a_foreground_run_names_the_run_it_found() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    env.envctl(&["stop"]).ok();
    let run = env.envctl(&["resume"]);
    run.fails();
    assert!(run.stderr.contains("nothing to resume: the last run (run-"), "{}", run.stderr);
    assert!(!run.stderr.contains("nothing has been started"), "{}", run.stderr);
}

#[test]
fn a_mistyped_tree_gets_a_suggestion_from_health_logs_and_endpoints() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["worktree", "add", "feature-x"]).ok();
    for command in ["health", "logs", "endpoints"] {
        let run = env.envctl(&[command, "--tree", "featurex"]);
        run.fails();
        assert!(run.stderr.contains("did you mean `feature-x`?"), "{command}: {}", run.stderr);
        assert!(run.stderr.contains("envctl worktree add"), "{command}: {}", run.stderr);
    }
}

#[test]
fn show_config_prints_keys_as_the_file_spells_them() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\nstop_grace = 7\nready = { exec = \"true\", timeout = \"1500ms\" }\n");
    let run = env.envctl(&["show-config"]);
    run.ok();
    let line = |key: &str| {
        run.stdout.lines().find(|l| l.split_whitespace().next() == Some(key)).unwrap_or_default().to_owned()
    };
    assert!(line("services.web.stop_grace").split_whitespace().nth(1) == Some("7"), "{}", run.stdout);
    let ready = line("services.web.ready");
    assert!(ready.contains(r#""exec":"true""#) && ready.contains(r#""timeout":"1500ms""#), "{ready}");
    assert!(!run.stdout.contains("stop_grace_secs") && !run.stdout.contains("timeout_ms"), "{}", run.stdout);
    let set = env.envctl(&["--set", "services.web.stop_grace=9", "show-config", "--json"]).json();
    let grace = set["values"]
        .as_array()
        .and_then(|v| v.iter().find(|e| e["key"] == "services.web.stop_grace"))
        .cloned();
    assert_eq!(
        grace.map(|g| g["value"].clone()),
        Some(serde_json::json!(9)),
        "what it prints pastes into --set"
    );
}

#[test]
fn explain_startup_text_shows_probe_restart_and_url() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(
        ".envctl",
        &format!("[services.web]\ncommand = \"{HTTP}\"\nport = {port}\nready = {{ http = \"/\" }}\nrestart = \"on-failure\"\n"),
    );
    let run = env.envctl(&["explain-startup"]);
    run.ok();
    assert!(run.stdout.contains(&format!("url: http://127.0.0.1:{port}")), "{}", run.stdout);
    assert!(run.stdout.contains("ready: http /, timeout 30s"), "{}", run.stdout);
    assert!(run.stdout.contains("restart: on-failure"), "{}", run.stdout);
}

#[test]
fn test_names_failing_tests_and_failed_reruns_only_those() {
    let env = TestEnv::new();
    // A stand-in runner that prints pytest's summary lines, remembers its arguments, and fails.
    let runner = env.write(
        "pytest",
        "#!/bin/sh\necho \"$@\" >> args.log\necho 'tests/t.py::test_a PASSED'\necho 'FAILED tests/t.py::test_b - AssertionError: boom'\nexit 1\n",
    );
    std::fs::set_permissions(&runner, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    env.write(
        ".envctl",
        "[services.api]\ncommand = \"sleep 1000\"\ntest = \"./pytest -q\"\n\n[services.web]\ncommand = \"sleep 1000\"\ntest = \"true\"\n",
    );
    let run = env.envctl(&["test", "--service", "api"]);
    run.fails();
    assert!(run.stdout.contains("failing tests of main/api:\n  tests/t.py::test_b"), "{}", run.stdout);
    assert!(run.stdout.contains("0 passed, 1 failed"), "only the named service ran: {}", run.stdout);
    env.envctl(&["test", "--failed"]).fails();
    let args = env.read("args.log");
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        vec!["-q", "-q tests/t.py::test_b"],
        "the rerun names only the failing test"
    );
    let run = env.envctl(&["test", "--service", "nope"]);
    run.fails();
    assert!(run.stderr.contains("there is no service `nope`"), "{}", run.stderr);
}

#[test]
fn migrate_runs_each_targets_migrations_as_jobs_and_fails_when_one_does() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.api]\ncommand = \"sleep 1000\"\nmigrate = \"echo migrated-$ENVCTL_TARGET >> migrated.txt\"\n\n[services.bad]\ncommand = \"sleep 1000\"\nmigrate = \"exit 4\"\n",
    );
    let run = env.envctl(&["migrate", "--service", "api"]);
    run.ok();
    assert!(run.stdout.contains("1 passed, 0 failed"), "{}", run.stdout);
    assert_eq!(env.read("migrated.txt").trim(), "migrated-main");
    let run = env.envctl(&["migrate"]);
    run.fails();
    assert!(run.stdout.contains("1 passed, 1 failed"), "{}", run.stdout);
}

#[test]
fn stop_stops_every_process_behind_a_corrupt_run_state() {
    let env = TestEnv::new();
    let before = three_services_behind_a_torn_state(&env);
    let run = env.envctl(&["stop"]);
    run.ok();
    assert!(eventually(5, || before.values().all(|(p, s)| !alive(*p, *s))), "{}", run.stderr);
}

#[test]
fn a_recovered_process_without_a_spec_is_stopped_not_doubled() {
    let env = TestEnv::new();
    let before = three_services_behind_a_torn_state(&env);
    // No per-run copy either: /proc alone says what runs, not how it was started.
    std::fs::remove_dir_all(scope(&env).join("runs")).expect("remove runs");
    env.envctl(&["start"]).ok();
    assert!(
        eventually(5, || before.values().all(|(p, s)| !alive(*p, *s))),
        "the unknown survivors are stopped"
    );
    let after = env.pids();
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.values().all(|(p, s)| alive(*p, *s)), "one fresh set runs");
    env.envctl(&["stop-all"]).ok();
    assert!(after.values().all(|(p, s)| !alive(*p, *s)), "and stop-all stops it");
}

#[test]
fn worktree_add_excludes_the_trees_dir_once() {
    let env = TestEnv::new();
    env.write(".envctl", "[project]\nname = \"x\"\n");
    let exclude = env.repo.join(".git/info/exclude");
    // A user's line without a trailing newline stays as it is.
    std::fs::write(&exclude, "*.swp").expect("write exclude");
    env.envctl(&["worktree", "add", "one"]).ok();
    env.envctl(&["worktree", "add", "two"]).ok();
    // From inside a worktree, the main repository's exclude file is the one.
    let inside = env.repo.join("trees/one");
    env.envctl_in(&inside, &["worktree", "add", "three"]).ok();
    let text = std::fs::read_to_string(&exclude).expect("read exclude");
    assert_eq!(text, "*.swp\n/trees/\n", "added once, after the user's line");
    let status = env.git(&["status", "--porcelain", "--untracked-files=all"]);
    assert!(!status.contains("trees"), "git status lists no worktree: {status}");
}

/// The pid and start time a running host wrote into `host.lock` (nothing once it exited).
fn lock_holder(env: &TestEnv) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(scope(env).join("host.lock")).ok()?;
    let (pid, started) = text.trim().split_once(' ')?;
    Some((pid.parse().ok()?, started.parse().ok()?))
}

#[test]
fn a_host_whose_command_is_gone_before_it_sent_a_request_exits() {
    use std::io::BufRead as _;
    let env = TestEnv::new();
    env.write(".envctl", "[services.s0]\ncommand = \"sleep 1000\"\n");
    // What a command does when it finds no host: the host's stdin is a pipe the command holds (its claim).
    let mut host = env
        .sandboxed(env!("CARGO_BIN_EXE_envctl"), &env.repo)
        .args(["host"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("host");
    let mut line = String::new();
    std::io::BufReader::new(host.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    assert_eq!(line.trim(), "ready");
    let (pid, started) = lock_holder(&env).expect("the host holds its lock");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(alive(pid, started), "a host stays while its command holds the claim");
    // The command dies before its request: its end of the pipe closes with it.
    drop(host.stdin.take());
    assert!(eventually(10, || host.try_wait().expect("wait").is_some()), "the host exits");
    assert_eq!(lock_holder(&env), None, "and lets go of its lock");
    assert!(!scope(&env).join("host.sock").exists(), "and removes its socket");
}

#[test]
fn the_host_of_a_start_outlives_its_command_and_a_refused_start_leaves_none() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.s0]\ncommand = \"sleep 1000\"\nport = \"notaport\"\n");
    let run = env.envctl(&["start"]);
    run.fails();
    assert!(run.stderr.contains(".envctl"), "the error names the file: {}", run.stderr);
    // Nothing is left of a start that was refused: no host, started or not.
    assert!(eventually(10, || lock_holder(&env).is_none()), "no host is left: {:?}", lock_holder(&env));
    // A host that serves does stay for a start that was not refused.
    env.write(".envctl", "[services.s0]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let (pid, started) = lock_holder(&env).expect("a host runs");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(alive(pid, started), "the host of a start that ran stays after the command is gone");
    env.envctl(&["stop"]).ok();
}

/// Where each start's configuration came from, in order: `sent` with the request, or `held` by the host.
fn config_sources(env: &TestEnv) -> Vec<String> {
    let text = std::fs::read_to_string(scope(env).join("events.jsonl")).expect("events");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "run.begin")
        .filter_map(|e| e["detail"]["config"].as_str().map(str::to_owned))
        .collect()
}

/// The value of `name` in the environment of process `pid`.
fn env_of(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()).map(|v| String::from_utf8_lossy(v).into_owned()))
}

#[test]
fn a_restart_uses_the_configuration_its_host_holds_only_while_nothing_it_is_read_from_changed() {
    let env = TestEnv::new();
    let config = |greeting: &str| {
        format!(
            "[services.web]\ncommand = \"sleep 1000\"\nenv = {{ GREETING = \"{greeting}\" }}\n\n[services.api]\ncommand = \"sleep 1000\"\n"
        )
    };
    env.write(".envctl", &config("one"));
    env.envctl(&["start"]).ok();
    let greeting = || env_of(env.pids()["main/web"].0, "GREETING");
    env.envctl(&["restart", "--service", "web"]).ok();
    assert_eq!(greeting().as_deref(), Some("one"));
    assert_eq!(
        config_sources(&env),
        ["sent", "held"],
        "the start sent it; the restart named it by its digest"
    );
    // An edit of the file, then a `--set`, each reach the restarted service: the host asked for the new one.
    env.write(".envctl", &config("two"));
    env.envctl(&["restart", "--service", "web"]).ok();
    assert_eq!(greeting().as_deref(), Some("two"));
    env.envctl(&["restart", "--service", "web", "--set", "services.web.env.GREETING=three"]).ok();
    assert_eq!(greeting().as_deref(), Some("three"));
    env.envctl(&["restart", "--service", "web", "--set", "services.web.env.GREETING=three"]).ok();
    assert_eq!(
        config_sources(&env),
        ["sent", "held", "sent", "sent", "held"],
        "each change: a request the host cannot answer by digest, then one with the configuration"
    );
    // A name the held configuration lacks gets the CLI's own error, from the configuration as it is now.
    let wrong = env.envctl(&["restart", "--service", "wbe"]);
    wrong.fails();
    assert!(wrong.stderr.contains("wbe") && wrong.stderr.contains("web"), "{}", wrong.stderr);
    assert_eq!(greeting().as_deref(), Some("three"), "nothing was restarted");
    assert_eq!(config_sources(&env).len(), 5);
}

#[test]
fn a_restart_of_named_services_plans_those_and_what_they_depend_on_only() {
    let env = TestEnv::new();
    let config = |other_env_file: &str| {
        format!(
            "[services.db]\ncommand = \"sleep 1000\"\n\n[services.api]\ncommand = \"sleep 1000\"\ndepends_on = [\"db\"]\n\n[services.other]\ncommand = \"sleep 1000\"\nenv_file = [\"{other_env_file}\"]\n"
        )
    };
    env.write("other.env", "X=1\n");
    env.write(".envctl", &config("other.env"));
    env.envctl(&["start"]).ok();
    // `other` can no longer be planned (its env file is gone); a restart of `api` needs neither its plan nor its
    // problem.
    env.write(".envctl", &config("gone.env"));
    let before = env.pids();
    env.envctl(&["restart", "--service", "api"]).ok();
    let after = env.pids();
    assert_ne!(after["main/api"], before["main/api"]);
    assert_eq!(after["main/db"], before["main/db"], "its dependency is planned, found identical and kept");
    assert_eq!(after["main/other"], before["main/other"]);
    let whole = env.envctl(&["restart"]);
    whole.fails();
    assert!(whole.stderr.contains("gone.env"), "a restart of everything plans `other`: {}", whole.stderr);
}
