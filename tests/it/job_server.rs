//! The Redis job backend as a requirement: with `[jobs] backend = "redis"` and no URL, envctl starts the
//! repository's job server itself, reuses it, restarts it on its data, and stops it with `stop-all`.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use crate::support::{TestEnv, alive, free_port, ids, kill9};

/// A repository whose jobs go to the managed server (on a port of its own, so parallel tests do not race for
/// the default one).
fn managed(env: &TestEnv) {
    env.write(".envctl", &format!("[jobs]\nbackend = \"redis\"\nport = {}\n", free_port()));
}

/// The job server's record.
fn record(env: &TestEnv) -> serde_json::Value {
    let path = scope_dir(env).join("job_server.json");
    serde_json::from_slice(&std::fs::read(&path).expect("the job server's record")).expect("JSON")
}

/// Whether any scope of this environment has a job server record.
fn has_record(env: &TestEnv) -> bool {
    std::fs::read_dir(env.runtime.join("scopes"))
        .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().join("job_server.json").exists())))
}

fn scope_dir(env: &TestEnv) -> PathBuf {
    std::fs::read_dir(env.runtime.join("scopes"))
        .expect("scopes")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .next()
        .expect("a scope directory")
}

fn pid_of(record: &serde_json::Value) -> (u32, u64) {
    let pid = record["pid"].as_u64().expect("pid");
    let started = record["pid_start_time"].as_u64().expect("start time");
    (u32::try_from(pid).expect("pid"), started)
}

fn stats(env: &TestEnv) -> serde_json::Value {
    env.envctl(&["jobs", "stats", "--json"]).ok().json()
}

fn count(report: &serde_json::Value, status: &str) -> u64 {
    report[status].as_u64().unwrap_or_else(|| panic!("no {status} count in {report}"))
}

/// What a raw client gets from the server without a password.
fn unauthenticated_ping(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).expect("timeout");
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").expect("write");
    let mut buf = [0u8; 128];
    let n = stream.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_first_job_command_starts_the_server_and_the_next_ones_reuse_it() {
    let env = TestEnv::new();
    managed(&env);
    let plan = env.envctl(&["explain-startup", "--json"]).ok().json();
    assert_eq!(plan["job_server"]["status"], "not_started", "explaining starts nothing: {plan}");
    assert!(!has_record(&env), "nor records anything");

    let first = env.envctl(&["jobs", "enqueue", "noop"]).ok().stdout.clone();
    let server = record(&env);
    let (pid, started) = pid_of(&server);
    assert!(alive(pid, started), "the recorded server runs: {server}");
    let port = u16::try_from(server["port"].as_u64().expect("port")).expect("port");

    env.envctl(&["jobs", "enqueue", "noop", "--count", "2"]).ok();
    assert_eq!(pid_of(&record(&env)), (pid, started), "the second command reused the server");
    assert_eq!(count(&stats(&env), "queued"), 3);
    env.envctl(&["worker", "--drain"]).ok();
    let after = stats(&env);
    assert_eq!(count(&after, "succeeded"), 3, "{after}");
    assert_eq!(pid_of(&record(&env)), (pid, started), "the worker used the same server");
    assert_eq!(crate::support::job(&env, ids(&first)[0].as_str())["status"], "succeeded");

    // It requires its password, and keeps its secrets and data private.
    assert!(unauthenticated_ping(port).starts_with("-NOAUTH"), "{}", unauthenticated_ping(port));
    let scope = scope_dir(&env);
    for (path, mode) in [
        (scope.join("job_server.json"), 0o600),
        (scope.join("secrets").join("repository.jobs.password"), 0o600),
        (scope.join("data").join("jobs"), 0o700),
    ] {
        let found = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(found, mode, "{}", path.display());
    }
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let password =
        std::fs::read_to_string(scope.join("secrets").join("repository.jobs.password")).expect("pw");
    assert!(!String::from_utf8_lossy(&argv).contains(password.trim()), "the password is not on argv");

    // It shows where requirements show.
    let plan = env.envctl(&["explain-startup", "--json"]).ok().json();
    assert_eq!(plan["job_server"]["status"], "running");
    assert_eq!(plan["job_server"]["pid"], pid);
    env.write(".envctl", &format!("{}\n[services.app]\ncommand = \"sleep 100\"\n", env.read(".envctl")));
    env.envctl(&["start"]).ok();
    let by_host = ids(&env.envctl(&["jobs", "enqueue", "noop"]).ok().stdout)[0].clone();
    assert!(
        crate::support::eventually(10, || crate::support::job(&env, &by_host)["status"] == "succeeded"),
        "the host's in-process worker runs jobs from the same server"
    );
    assert_eq!(pid_of(&record(&env)), (pid, started), "and started no other");
    let health = env.envctl(&["health"]).ok().stdout.clone();
    assert!(
        health.contains(&format!("job server: redis://127.0.0.1:{port}/0 (running, pid {pid})")),
        "{health}"
    );
    let endpoints = env.envctl(&["endpoints", "--json"]).ok().json();
    assert_eq!(endpoints["job_server"]["port"], port);
    let targets = env.envctl(&["list-targets", "--json"]).ok().json();
    assert_eq!(targets["job_server"]["data_dir"], scope.join("data").join("jobs").display().to_string());
}

#[test]
fn a_killed_server_is_started_again_on_its_data_and_no_job_is_lost() {
    let env = TestEnv::new();
    managed(&env);
    let enqueued = ids(&env.envctl(&["jobs", "enqueue", "noop", "--count", "5"]).ok().stdout);
    assert_eq!(enqueued.len(), 5);
    let (pid, started) = pid_of(&record(&env));
    kill9(pid);
    assert!(crate::support::eventually(5, || !alive(pid, started)));

    let doctor = env.envctl(&["doctor", "--json", "--gate", "requirements"]).json();
    let check = doctor["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "job_server")
        .cloned()
        .expect("the job_server check");
    assert!(check["finding"].as_str().expect("finding").contains("stopped"), "{check}");

    assert_eq!(count(&stats(&env), "queued"), 5, "every job survived the kill (append-only file)");
    let (again, again_started) = pid_of(&record(&env));
    assert_ne!((again, again_started), (pid, started), "a new server was started");
    assert!(alive(again, again_started));
    env.envctl(&["worker", "--drain"]).ok();
    assert_eq!(count(&stats(&env), "succeeded"), 5);
}

#[test]
fn two_repositories_get_two_servers() {
    let one = TestEnv::new();
    let two = one.sibling();
    // The same port asked for by both: the ledger gives the second another one.
    let port = free_port();
    for env in [&one, &two] {
        env.write(".envctl", &format!("[jobs]\nbackend = \"redis\"\nport = {port}\n"));
        env.envctl(&["jobs", "enqueue", "noop"]).ok();
    }
    let scopes: Vec<PathBuf> = std::fs::read_dir(one.runtime.join("scopes"))
        .expect("scopes")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert_eq!(scopes.len(), 2);
    let records: Vec<serde_json::Value> = scopes
        .iter()
        .map(|s| {
            serde_json::from_slice(&std::fs::read(s.join("job_server.json")).expect("record")).expect("json")
        })
        .collect();
    assert_ne!(records[0]["port"], records[1]["port"], "{records:?}");
    assert_ne!(records[0]["pid"], records[1]["pid"]);
    for env in [&one, &two] {
        assert_eq!(count(&stats(env), "queued"), 1, "each repository sees its own queue");
    }
}

#[test]
fn stop_all_keeps_the_queue_and_only_a_confirmed_remove_data_deletes_it() {
    let env = TestEnv::new();
    managed(&env);
    env.envctl(&["jobs", "enqueue", "noop", "--count", "2"]).ok();
    let (pid, started) = pid_of(&record(&env));

    let stopped = env.envctl(&["stop-all"]).ok().stderr.clone();
    assert!(stopped.contains("stopped the job server"), "{stopped}");
    assert!(!alive(pid, started), "stop-all stops the job server");
    assert_eq!(record(&env)["status"], "stopped");
    assert_eq!(count(&stats(&env), "queued"), 2, "the queue outlived stop-all");
    let (pid, started) = pid_of(&record(&env));

    // No terminal to confirm on: refused, and nothing stopped or removed.
    let refused = env.envctl(&["stop-all", "--remove-data"]);
    refused.fails();
    assert!(refused.stderr.contains("add --yes"), "{}", refused.stderr);
    assert!(alive(pid, started), "a refused stop-all stops nothing");
    assert!(scope_dir(&env).join("data").join("jobs").exists());

    env.envctl(&["stop-all", "--remove-data", "--yes"]).ok();
    assert!(!alive(pid, started));
    assert!(!scope_dir(&env).join("data").join("jobs").exists(), "--remove-data removed the queue");
    assert_eq!(count(&stats(&env), "queued"), 0, "a fresh queue");
}

#[test]
fn redis_url_may_name_a_requirement_of_main() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(
        ".envctl",
        &format!(
            "[requirements.redis]\nadapter = \"redis\"\nport = {port}\n\n[jobs]\nbackend = \"redis\"\nredis_url = \"{{redis.url}}\"\n"
        ),
    );
    env.envctl(&["start"]).ok();
    env.envctl(&["jobs", "enqueue", "noop"]).ok();
    assert_eq!(count(&stats(&env), "queued"), 1);
    assert!(!has_record(&env), "no managed server for a requirement's URL");
    let report = env.envctl(&["env", "--json"]).ok().json();
    let url = report["jobs_url"].as_str().expect("jobs_url").to_owned();
    assert!(url.starts_with("redis://:") && url.ends_with(&format!("@127.0.0.1:{port}/0")), "{url}");
}

#[test]
fn env_exports_the_jobs_url_a_worker_elsewhere_drains_the_queue_with() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(
        ".envctl",
        &format!(
            "[jobs]\nbackend = \"redis\"\nport = {port}\n\n[services.app]\ncommand = \"sleep 100\"\nenv = {{ QUEUE = \"{{jobs.url}}\" }}\n"
        ),
    );
    env.envctl(&["jobs", "enqueue", "noop", "--count", "3"]).ok();
    let exported = env.envctl(&["env", "--service", "app"]).ok().stdout.clone();
    let line =
        exported.lines().find(|l| l.starts_with("export ENVCTL_JOBS_URL=")).expect(&exported).to_owned();
    let url = line.trim_start_matches("export ENVCTL_JOBS_URL=").trim_matches('\'').to_owned();
    assert!(
        exported.contains(&format!("export QUEUE={}", line.trim_start_matches("export ENVCTL_JOBS_URL="))),
        "{exported}"
    );
    let record = record(&env);
    assert!(url.ends_with(&format!(":{}/0", record["port"])), "{url} {record}");

    // A worker that knows nothing of this repository but the URL (another machine, as far as it can tell).
    let elsewhere = TestEnv::new();
    elsewhere.envctl(&["worker", "--drain", "--backend", &url]).ok();
    assert_eq!(count(&stats(&env), "succeeded"), 3);
}

#[test]
fn a_bad_bind_address_or_job_store_reference_is_refused_with_its_key() {
    let env = TestEnv::new();
    env.write(".envctl", "[jobs]\nbackend = \"redis\"\nbind = \"localhost:1\"\n");
    let run = env.envctl(&["jobs", "stats"]);
    run.fails();
    assert!(
        run.stderr.contains("jobs.bind") && run.stderr.contains("is not an IP address"),
        "{}",
        run.stderr
    );

    env.write(".envctl", "[services.app]\ncommand = \"sleep 1\"\nenv = { Q = \"{jobs.nope}\" }\n");
    let run = env.envctl(&["explain-startup"]);
    run.fails();
    assert!(run.stderr.contains("the job store offers url, port, host, password"), "{}", run.stderr);
    assert!(!has_record(&env), "a refused configuration starts no server");
}

/// The job servers running for `scope` (by the marks envctl gives their processes).
fn servers_of(scope: &std::path::Path) -> Vec<u32> {
    let scope_mark = format!("ENVCTL_SCOPE={}", scope.display());
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
            vars.contains(&scope_mark.as_bytes()) && vars.contains(&b"ENVCTL_ROLE=jobs-server".as_slice())
        })
        .collect()
}

#[test]
fn commands_racing_on_a_cold_machine_agree_on_one_server() {
    let env = TestEnv::new();
    managed(&env);
    let racers: Vec<std::process::Child> =
        (0..4).map(|_| env.spawn_envctl(&["jobs", "enqueue", "noop"])).collect();
    for mut racer in racers {
        assert!(racer.wait().expect("wait").success());
    }
    assert_eq!(count(&stats(&env), "queued"), 4);
    let (pid, _) = pid_of(&record(&env));
    assert_eq!(servers_of(&scope_dir(&env)), vec![pid], "exactly one server, the recorded one");
}

#[test]
fn a_server_whose_record_was_lost_is_found_by_its_marks_never_started_twice_and_stopped_by_stop_all() {
    let env = TestEnv::new();
    managed(&env);
    env.envctl(&["jobs", "enqueue", "noop"]).ok();
    let (pid, started) = pid_of(&record(&env));
    std::fs::remove_file(scope_dir(&env).join("job_server.json")).expect("lose the record");

    assert_eq!(count(&stats(&env), "queued"), 1);
    assert_eq!(
        pid_of(&record(&env)),
        (pid, started),
        "the running server was adopted, not a second one started"
    );
    assert_eq!(servers_of(&scope_dir(&env)), vec![pid]);

    std::fs::remove_file(scope_dir(&env).join("job_server.json")).expect("lose it again");
    env.envctl(&["stop-all"]).ok();
    assert!(crate::support::eventually(5, || !alive(pid, started)), "stop-all found it by its marks");
}
