//! `envctl doctor`: readiness gates that fail when they should, the report artifact, and `--fix`.

use std::os::unix::fs::PermissionsExt as _;

use crate::support::{RedisServer, TestEnv, eventually, free_port, kill9, processes_marked};

/// The check `gate/name` of a `doctor --json` report.
fn check<'a>(report: &'a serde_json::Value, gate: &str, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["gate"] == gate && c["name"] == name))
        .unwrap_or_else(|| panic!("no check {gate}/{name} in {report}"))
}

fn gate<'a>(report: &'a serde_json::Value, name: &str) -> &'a str {
    report["gates"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == name))
        .and_then(|g| g["outcome"].as_str())
        .unwrap_or_else(|| panic!("no gate {name} in {report}"))
}

fn doctor(env: &TestEnv, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["doctor", "--json"];
    all.extend_from_slice(args);
    let run = env.envctl(&all);
    (run.code, run.json())
}

fn web(port: u16) -> String {
    format!("[services.web]\ncommand = \"python3 -m http.server $PORT --bind 127.0.0.1\"\nport = {port}\n")
}

#[test]
fn a_healthy_environment_passes_and_a_killed_service_fails_state_truth_by_name() {
    let env = TestEnv::new();
    env.write(".envctl", &web(free_port()));
    env.envctl(&["start"]).ok();
    assert!(eventually(10, || doctor(&env, &[]).0 == 0), "healthy: {}", env.envctl(&["doctor"]).stdout);
    let human = env.envctl(&["doctor", "--no-canary"]);
    human.ok();
    assert!(
        human.stdout.contains("✓ state_truth") && human.stdout.contains("doctor: ready"),
        "{}",
        human.stdout
    );
    assert_eq!(
        env.envctl(&["doctor", "-q", "--no-canary"]).stdout.lines().count(),
        1,
        "-q: the verdict only"
    );
    // With the host killed first, nothing records the service's death: only `/proc` tells.
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    let (pid, _) = env.pids()["main/web"];
    kill9(u32::try_from(host).expect("pid"));
    kill9(pid);
    assert!(eventually(5, || doctor(&env, &["--no-canary"]).0 == 1));
    let (_, report) = doctor(&env, &["--no-canary"]);
    let processes = check(&report, "state_truth", "processes");
    assert_eq!(processes["outcome"], "fail", "{report}");
    assert!(processes["finding"].as_str().is_some_and(|f| f.contains("main/web")), "{processes}");
}

#[test]
fn a_requirement_binary_missing_from_path_fails_prerequisites_with_its_install_line() {
    let env = TestEnv::new();
    env.write(".envctl", "[requirements.redis]\nport = 26999\n");
    let bin = env.home.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let git =
        envctl_engine::requirements::find_binary("git", Some("/usr/local/bin:/usr/bin:/bin")).expect("git");
    std::os::unix::fs::symlink(git, bin.join("git")).expect("symlink git");
    let run = env.envctl_with(&[("PATH", bin.to_str().expect("path"))], &["doctor", "--json"]);
    run.fails();
    let report = run.json();
    let binaries = check(&report, "prerequisites", "requirement_binaries");
    assert_eq!(binaries["outcome"], "fail");
    assert!(binaries["finding"].as_str().is_some_and(|f| f.contains("redis-server")), "{binaries}");
    assert!(
        binaries["hint"].as_str().is_some_and(|h| h.contains("apt-get install redis-server")),
        "{binaries}"
    );
}

#[test]
fn redis_stopped_under_the_redis_job_backend_fails_job_runtime() {
    let env = TestEnv::new();
    let redis = RedisServer::start(false);
    env.write(".envctl", &format!("[jobs]\nbackend = \"redis\"\nredis_url = \"{}\"\n", redis.url()));
    let (code, report) = doctor(&env, &["--gate", "job_runtime"]);
    assert_eq!((code, gate(&report, "job_runtime")), (0, "pass"), "{report}");
    drop(redis);
    let (code, report) = doctor(&env, &["--gate", "job_runtime"]);
    assert_eq!(code, 1, "{report}");
    let store = check(&report, "job_runtime", "store");
    assert_eq!(store["outcome"], "fail", "{store}");
    assert!(store["evidence"]["store"].as_str().is_some_and(|s| s.starts_with("redis://")), "{store}");
}

#[test]
fn a_killed_worker_s_leased_jobs_are_orphans_that_fix_requeues() {
    let env = TestEnv::new();
    env.write(".envctl", "[jobs]\nlease_secs = 60\n");
    let payload = serde_json::json!({ "command": "sleep 1000" }).to_string();
    env.envctl(&["jobs", "enqueue", "command.exec", "--payload", &payload, "--count", "3"]).ok();
    let mut worker = env.spawn_envctl(&["worker", "--concurrency", "3"]);
    let running = || env.envctl(&["jobs", "stats", "--json"]).json()["running"] == 3;
    assert!(eventually(20, running), "the worker leases all three");
    // The killed worker's attempts are to be left running (a SIGKILL leaves their process groups behind): each
    // job's process, marked with the job's id. A lease is counted before its process is spawned, so wait for all
    // three processes before the kill.
    let jobs: Vec<String> = env.envctl(&["jobs", "list", "--json"]).json()["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_owned())
        .collect();
    let left = || {
        jobs.iter()
            .flat_map(|id| processes_marked(&[format!("ENVCTL_JOB_ID={id}").into_bytes()]))
            .collect::<Vec<_>>()
    };
    let spawned =
        || jobs.iter().all(|id| !processes_marked(&[format!("ENVCTL_JOB_ID={id}").into_bytes()]).is_empty());
    assert!(eventually(20, spawned), "every attempt's process runs: {:?}", left());
    kill9(worker.id());
    worker.wait().expect("reap");
    let (code, report) = doctor(&env, &["--gate", "job_runtime"]);
    assert_eq!(code, 1, "{report}");
    let orphans = check(&report, "job_runtime", "orphans");
    assert_eq!(
        (orphans["outcome"].as_str(), orphans["evidence"]["count"].as_str()),
        (Some("fail"), Some("3")),
        "{orphans}"
    );
    assert!(!left().is_empty(), "the killed worker's attempts are still running");
    let fixed = env.envctl(&["doctor", "--fix", "--gate", "job_runtime"]);
    fixed.ok();
    assert!(fixed.stdout.contains("fix: stop_job_processes"), "{}", fixed.stdout);
    assert!(
        eventually(20, || left().is_empty()),
        "nothing of the dead worker's attempts is left: {:?}",
        left()
    );
    assert_eq!(fixed.stdout.matches("fix: requeue_job").count(), 3, "{}", fixed.stdout);
    assert!(fixed.stdout.contains("fix: forget_worker"), "{}", fixed.stdout);
    let (code, report) = doctor(&env, &["--gate", "job_runtime"]);
    assert_eq!(code, 0, "a second run passes: {report}");
    assert_eq!(env.envctl(&["jobs", "stats", "--json"]).json()["queued"], 3);
}

#[test]
fn a_stale_lease_planted_by_a_dead_pid_is_released_by_fix() {
    let env = TestEnv::new();
    env.write(".envctl", &web(free_port()));
    env.envctl(&["start"]).ok();
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("reap");
    let port = free_port();
    let lease = serde_json::json!({
        "schema_version": 1, "port": port, "pid": dead, "pid_start_time": 1, "created_at": "2026-01-01T00:00:00Z",
        "owner": { "repo": env.repo.display().to_string(), "target": "main", "service": "ghost" },
    });
    let path = env.runtime.join("ports").join(format!("{port}.json"));
    std::fs::write(&path, lease.to_string()).expect("plant");
    let (_, report) = doctor(&env, &["--no-canary"]);
    let stale = check(&report, "state_truth", "stale_leases");
    assert_eq!(stale["outcome"], "warn", "{report}");
    assert!(stale["finding"].as_str().is_some_and(|f| f.contains(&port.to_string())), "{stale}");
    assert_eq!(doctor(&env, &["--no-canary", "--strict"]).0, 1, "--strict turns the warning into exit 1");
    let fixed = env.envctl(&["doctor", "--fix", "--no-canary"]);
    assert!(fixed.stdout.contains(&format!("fix: release_lease {port}")), "{}", fixed.stdout);
    assert!(!path.exists(), "the stale lease is gone");
    assert_eq!(check(&doctor(&env, &["--no-canary"]).1, "state_truth", "stale_leases")["outcome"], "pass");
}

#[test]
fn a_garbled_artifact_fails_contracts_naming_its_path() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.idle]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let host = u32::try_from(env.state()["host"]["pid"].as_u64().expect("host pid")).expect("pid");
    let host_started = envctl_engine::supervisor::proc_info::start_time(host).expect("host runs");
    env.envctl(&["stop"]).ok();
    // The host saves once more as it exits: garble the artifact after that.
    assert!(crate::support::eventually(10, || !crate::support::alive(host, host_started)), "the host exits");
    let scope = std::fs::read_dir(env.runtime.join("scopes"))
        .expect("scopes")
        .next()
        .expect("one")
        .expect("entry")
        .path();
    let garbled = scope.join("runtime_map.json");
    std::fs::write(&garbled, r#"{"schema_version": 1, "run_id": 7, "targets": {}}"#).expect("garble");
    let (code, report) = doctor(&env, &["--gate", "contracts"]);
    assert_eq!(code, 1, "{report}");
    let artifacts = check(&report, "contracts", "artifacts");
    let finding = artifacts["finding"].as_str().unwrap_or_default();
    assert!(finding.contains(&garbled.display().to_string()) && finding.contains("$.run_id"), "{artifacts}");
}

#[test]
fn an_unconfigured_repository_fails_the_config_gate_and_skips_the_rest() {
    let env = TestEnv::new();
    let run = env.envctl(&["doctor"]);
    run.fails();
    assert!(run.stdout.contains("✗ config") && run.stdout.contains("envctl config init"), "{}", run.stdout);
    let (code, report) = doctor(&env, &[]);
    assert_eq!(code, 1);
    for name in ["prerequisites", "state_truth", "requirements", "services", "job_runtime", "contracts"] {
        assert_eq!(gate(&report, name), "skip", "{name}: {report}");
    }
}

#[test]
fn the_report_is_written_and_validates_against_its_schema() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.idle]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let (_, printed) = doctor(&env, &[]);
    let scope = std::path::PathBuf::from(printed["scope_dir"].as_str().expect("scope"));
    let latest = std::fs::read(scope.join("runtime_readiness_report.json")).expect("latest report");
    let mode =
        std::fs::metadata(scope.join("runtime_readiness_report.json")).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let run_id = printed["run_id"].as_str().expect("run id");
    assert!(scope.join("runs").join(run_id).join("runtime_readiness_report.json").is_file());
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../contracts/schemas/runtime_readiness_report.json"))
            .expect("schema");
    let value: serde_json::Value = serde_json::from_slice(&latest).expect("json");
    for field in schema["required"].as_array().expect("required") {
        assert!(value.get(field.as_str().expect("name")).is_some(), "{field} missing");
    }
    let typed: envctl_contracts::doctor::ReadinessReport = serde_json::from_value(value).expect("the type");
    assert_eq!(typed.schema_version, envctl_contracts::SCHEMA_VERSION);
    assert_eq!(typed.checks.len(), envctl_engine::doctor::CHECKS.len());
}
