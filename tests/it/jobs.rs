//! The job runtime with the embedded store and real worker processes.

use std::time::Duration;

use envctl_engine::jobs::{EmbeddedStore, Finish, JobStore as _};

use crate::support::{RedisServer, TestEnv, eventually, ids, job, kill9};

/// The repository's embedded job store, opened by the test (to play a worker whose timing it controls).
fn embedded_store(env: &TestEnv) -> EmbeddedStore {
    let scopes = env.runtime.join("scopes");
    let path = std::fs::read_dir(&scopes)
        .expect("scopes")
        .filter_map(Result::ok)
        .map(|scope| scope.path().join("jobs.sqlite3"))
        .find(|path| path.exists())
        .expect("the embedded store exists once a job was enqueued");
    EmbeddedStore::open(&path).expect("open the store")
}

/// SIGKILLs what a job started when dropped (the job outlives the worker a test killed).
struct JobProcesses(String);

impl Drop for JobProcesses {
    fn drop(&mut self) {
        for pid in processes_of(&self.0) {
            kill9(pid);
        }
    }
}

/// Processes whose environment carries this job's id.
fn processes_of(job_id: &str) -> Vec<u32> {
    let needle = format!("ENVCTL_JOB_ID={job_id}");
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
        })
        .collect()
}

#[test]
fn a_worker_drains_the_queue_and_stats_count_the_jobs() {
    let env = TestEnv::new();
    env.envctl(&["jobs", "enqueue", "noop", "--count", "50"]).ok();
    let exec = env.envctl(&[
        "jobs",
        "enqueue",
        "command.exec",
        "--payload",
        r#"{"command": "echo out-line; echo err-line >&2"}"#,
    ]);
    let id = ids(&exec.ok().stdout).remove(0);
    env.envctl(&["worker", "--drain", "--concurrency", "8"]).ok();
    let stats = env.envctl(&["jobs", "stats", "--json"]).ok().json();
    assert_eq!(
        (stats["succeeded"].as_u64(), stats["queued"].as_u64(), stats["dead"].as_u64()),
        (Some(51), Some(0), Some(0)),
        "{stats}"
    );
    let shown = job(&env, &id);
    assert_eq!(shown["status"], "succeeded");
    assert_eq!(shown["result"]["exit_code"], 0);
    let logs = env.envctl(&["jobs", "logs", &id]).ok().stdout.clone();
    assert!(logs.contains("out-line") && logs.contains("err-line"), "{logs}");
    let listed = env.envctl(&["jobs", "list", "--type", "command.exec", "--json"]).ok().json();
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(1));
}

#[test]
fn bad_payloads_and_unknown_types_fail_clearly_and_the_worker_keeps_going() {
    let env = TestEnv::new();
    let bad =
        ids(&env.envctl(&["jobs", "enqueue", "command.exec", "--payload", r#"{"cmd": "oops"}"#]).ok().stdout)
            .remove(0);
    let unknown = ids(&env.envctl(&["jobs", "enqueue", "nope.thing"]).ok().stdout).remove(0);
    let fine = ids(&env.envctl(&["jobs", "enqueue", "noop"]).ok().stdout).remove(0);
    env.envctl(&["worker", "--drain"]).ok();
    let bad = job(&env, &bad);
    assert_eq!(bad["status"], "failed");
    assert!(bad["error"].as_str().is_some_and(|e| e.contains("malformed payload for command.exec")), "{bad}");
    let unknown = job(&env, &unknown);
    assert_eq!(unknown["status"], "failed");
    assert!(
        unknown["error"].as_str().is_some_and(|e| e.contains("unknown job type `nope.thing`")),
        "{unknown}"
    );
    assert_eq!(job(&env, &fine)["status"], "succeeded");
    let run = env.envctl(&["jobs", "enqueue", "noop", "--payload", "{not json"]);
    run.fails();
    assert!(run.stderr.contains("--payload is not JSON"), "{}", run.stderr);
}

/// 20 jobs held by a worker killed with SIGKILL all run again once their leases expire: none lost, none dead.
fn killed_worker_jobs_run_again(vars: &[(&str, &str)]) {
    let env = TestEnv::new();
    env.write(".envctl", "[jobs]\nlease_secs = 1\n");
    std::fs::create_dir_all(env.repo.join("marks")).expect("mkdir");
    let command = "if [ -e marks/$ENVCTL_JOB_ID ]; then exit 0; fi; touch marks/$ENVCTL_JOB_ID; exec sleep 3";
    let payload = serde_json::json!({ "command": command }).to_string();
    let enqueued = ids(&env
        .envctl_with(vars, &["jobs", "enqueue", "command.exec", "--payload", &payload, "--count", "20"])
        .ok()
        .stdout);
    assert_eq!(enqueued.len(), 20);
    let mut worker = env.spawn_envctl_with(vars, &["worker", "--concurrency", "20"]);
    assert!(
        eventually(20, || std::fs::read_dir(env.repo.join("marks")).map_or(0, Iterator::count) == 20),
        "all 20 running"
    );
    kill9(worker.id());
    worker.wait().expect("reap");
    env.envctl_with(vars, &["worker", "--drain", "--concurrency", "20"]).ok();
    let stats = env.envctl_with(vars, &["jobs", "stats", "--json"]).ok().json();
    assert_eq!(
        (stats["succeeded"].as_u64(), stats["dead"].as_u64(), stats["failed"].as_u64()),
        (Some(20), Some(0), Some(0)),
        "{stats}"
    );
    for id in &enqueued {
        assert_eq!(job_with(&env, vars, id)["attempts"], 2, "the lost attempt is counted");
    }
}

#[test]
fn a_killed_worker_s_jobs_run_again_once_their_leases_expire() {
    killed_worker_jobs_run_again(&[]);
}

#[test]
fn a_killed_worker_s_jobs_run_again_once_their_leases_expire_on_redis() {
    let redis = RedisServer::start(false);
    let url = redis.url();
    killed_worker_jobs_run_again(&[("ENVCTL_JOBS_BACKEND", "redis"), ("ENVCTL_REDIS_URL", url.as_str())]);
}

#[test]
fn a_job_cancelled_while_running_leaves_no_process_behind() {
    let env = TestEnv::new();
    let payload = serde_json::json!({ "command": "sleep 1000 & sleep 1000 & wait" }).to_string();
    let id =
        ids(&env.envctl(&["jobs", "enqueue", "command.exec", "--payload", &payload]).ok().stdout).remove(0);
    let mut worker = env.spawn_envctl(&["worker", "--drain"]);
    assert!(eventually(20, || processes_of(&id).len() >= 3), "the shell and its two sleeps run");
    let run = env.envctl(&["jobs", "cancel", &id]);
    assert_eq!(
        run.ok().stderr.trim(),
        format!("{id}: cancelled"),
        "the cancel waits for the worker to stop it"
    );
    assert_eq!(job(&env, &id)["status"], "cancelled");
    assert!(eventually(5, || processes_of(&id).is_empty()), "left behind: {:?}", processes_of(&id));
    assert!(worker.wait().expect("worker exits when drained").success());
    let queued = ids(&env.envctl(&["jobs", "enqueue", "noop", "--delay", "1h"]).ok().stdout).remove(0);
    assert_eq!(env.envctl(&["jobs", "cancel", &queued]).ok().stderr.trim(), format!("{queued}: cancelled"));
}

#[test]
fn test_runs_every_target_s_suites_summarises_and_reruns_only_failures() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.api]\ncommand = \"sleep 1000\"\ntest = \"echo api-tests-ran in $ENVCTL_TARGET\"\n\n[services.web]\ncommand = \"sleep 1000\"\ntest = \"test \\\"$ENVCTL_TARGET\\\" = main\"\n\n[services.worker]\ncommand = \"sleep 1000\"\n",
    );
    env.git(&["add", ".envctl"]);
    env.git(&["commit", "-q", "-m", "config"]);
    env.envctl(&["worktree", "add", "feat"]).ok();
    let run = env.envctl(&["test", "--all", "--parallel", "2"]);
    run.fails();
    assert!(run.stdout.contains("3 passed, 1 failed"), "{}", run.stdout);
    let row = |target: &str, service: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(target) && l.contains(service))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    assert!(row("feat", "web").contains("failed"), "{}", run.stdout);
    assert!(row("main", "web").contains("passed"), "{}", run.stdout);
    let log_cmd = row("main", "api");
    let id = log_cmd.split_whitespace().last().expect("job id").to_owned();
    assert!(env.envctl(&["jobs", "logs", &id]).ok().stdout.contains("api-tests-ran in main"));
    let again = env.envctl(&["test", "--failed"]);
    again.fails();
    assert!(again.stdout.contains("0 passed, 1 failed") && again.stdout.contains("feat"), "{}", again.stdout);
}

#[test]
fn two_workers_on_two_machines_share_one_redis_queue_and_run_each_job_once() {
    let redis = RedisServer::start(false);
    let url = redis.url();
    let vars = [("ENVCTL_JOBS_BACKEND", "redis"), ("ENVCTL_REDIS_URL", url.as_str())];
    let (a, b) = (TestEnv::new(), TestEnv::new());
    let ran = a.repo.join("ran.txt");
    let command = format!("echo $ENVCTL_JOB_ID >> {}; sleep 0.05", ran.display());
    let payload = serde_json::json!({ "command": command }).to_string();
    let enqueued = ids(&a
        .envctl_with(&vars, &["jobs", "enqueue", "command.exec", "--payload", &payload, "--count", "40"])
        .ok()
        .stdout);
    let mut first = a.spawn_envctl_with(&vars, &["worker", "--drain", "--concurrency", "4"]);
    let mut second = b.spawn_envctl_with(&vars, &["worker", "--drain", "--concurrency", "4"]);
    assert!(first.wait().expect("wait").success() && second.wait().expect("wait").success());
    let text = std::fs::read_to_string(&ran).expect("ran.txt");
    let mut seen: Vec<&str> = text.lines().collect();
    seen.sort_unstable();
    let before = seen.len();
    seen.dedup();
    assert_eq!(before, 40, "every job ran exactly once");
    assert_eq!(seen.len(), 40);
    let stats = b.envctl_with(&vars, &["jobs", "stats", "--json"]).ok().json();
    assert_eq!(stats["succeeded"].as_u64(), Some(40), "{stats}");
    let workers: std::collections::BTreeSet<String> = enqueued
        .iter()
        .map(|id| job_with(&b, &vars, id)["worker_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(workers.len(), 2, "both workers took jobs: {workers:?}");
}

#[test]
fn a_redis_restart_with_appendonly_loses_no_queued_job() {
    let mut redis = RedisServer::start(true);
    let url = redis.url();
    let vars = [("ENVCTL_JOBS_BACKEND", "redis"), ("ENVCTL_REDIS_URL", url.as_str())];
    let env = TestEnv::new();
    env.envctl_with(&vars, &["jobs", "enqueue", "noop", "--count", "100"]).ok();
    redis.restart();
    let url = redis.url();
    let vars = [("ENVCTL_JOBS_BACKEND", "redis"), ("ENVCTL_REDIS_URL", url.as_str())];
    env.envctl_with(&vars, &["worker", "--drain"]).ok();
    let stats = env.envctl_with(&vars, &["jobs", "stats", "--json"]).ok().json();
    assert_eq!((stats["succeeded"].as_u64(), stats["queued"].as_u64()), (Some(100), Some(0)), "{stats}");
}

fn job_with(env: &TestEnv, vars: &[(&str, &str)], id: &str) -> serde_json::Value {
    env.envctl_with(vars, &["jobs", "show", id, "--json"]).ok().json()
}

#[test]
fn the_host_runs_jobs_while_an_environment_is_up() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.idle]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let id = ids(&env.envctl(&["jobs", "enqueue", "noop"]).ok().stdout).remove(0);
    assert!(eventually(10, || job(&env, &id)["status"] == "succeeded"), "the host's worker ran it");
    let worker = job(&env, &id)["worker_id"].as_str().unwrap_or_default().to_owned();
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    assert!(worker.contains(&format!(":{host}:")), "{worker} is the host");
}

#[test]
fn migrate_run_runs_a_service_s_migrate_command_in_its_target() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.api]\ncommand = \"sleep 1000\"\nmigrate = \"echo migrated-$ENVCTL_TARGET > migrated.txt\"\n");
    let payload = serde_json::json!({ "service": "api", "target": "main" }).to_string();
    let id =
        ids(&env.envctl(&["jobs", "enqueue", "migrate.run", "--payload", &payload]).ok().stdout).remove(0);
    env.envctl(&["worker", "--drain"]).ok();
    assert_eq!(job(&env, &id)["status"], "succeeded");
    assert_eq!(env.read("migrated.txt").trim(), "migrated-main");
}

#[test]
fn a_running_job_reports_progress_that_is_visible_while_it_runs() {
    let env = TestEnv::new();
    let bin = env!("CARGO_BIN_EXE_envctl");
    let command =
        format!("{bin} jobs progress $ENVCTL_JOB_ID --percent 40 --step half-way; echo reported; sleep 1000");
    let payload = serde_json::json!({ "command": command }).to_string();
    let id =
        ids(&env.envctl(&["jobs", "enqueue", "command.exec", "--payload", &payload]).ok().stdout).remove(0);
    let mut worker = env.spawn_envctl(&["worker", "--drain"]);
    assert!(eventually(20, || job(&env, &id)["progress"]["percent"] == 40.0), "{}", job(&env, &id));
    assert_eq!(job(&env, &id)["status"], "running");
    assert_eq!(job(&env, &id)["progress"]["step"], "half-way");
    assert!(
        eventually(10, || env.envctl(&["jobs", "logs", &id]).stdout.contains("reported")),
        "logs stream while it runs"
    );
    env.envctl(&["jobs", "cancel", &id]).ok();
    assert!(worker.wait().expect("worker").success());
}

#[test]
fn a_target_given_only_in_the_payload_is_the_job_s_target() {
    let env = TestEnv::new();
    let payload = r#"{"command": "true", "target": "main"}"#;
    let id =
        ids(&env.envctl(&["jobs", "enqueue", "command.exec", "--payload", payload]).ok().stdout).remove(0);
    assert_eq!(job(&env, &id)["target"], "main");
    let shown = env.envctl(&["jobs", "show", &id]).ok().stdout.clone();
    assert!(shown.lines().next().is_some_and(|l| l.ends_with("(main)")), "{shown}");
    let listed = env.envctl(&["jobs", "list"]).ok().stdout.clone();
    let row = listed.lines().find(|l| l.starts_with(&id)).unwrap_or_default().to_owned();
    assert_eq!(row.split_whitespace().nth(2), Some("main"), "{listed}");
    let filtered = env.envctl(&["jobs", "list", "--target", "main", "--json"]).ok().json();
    assert_eq!(filtered["jobs"].as_array().map(Vec::len), Some(1), "{filtered}");
    // The same target in both places is fine; two different ones are refused, naming both.
    env.envctl(&["jobs", "enqueue", "command.exec", "--payload", payload, "--target", "main"]).ok();
    let clash = env.envctl(&["jobs", "enqueue", "command.exec", "--payload", payload, "--target", "feat"]);
    clash.fails();
    assert!(clash.stderr.contains("`feat`") && clash.stderr.contains("`main`"), "{}", clash.stderr);
    let all = env.envctl(&["jobs", "list", "--json"]).ok().json();
    assert_eq!(all["jobs"].as_array().map(Vec::len), Some(2), "nothing enqueued by the clash: {all}");
}

#[test]
fn stats_show_a_worker_killed_with_sigkill_as_gone() {
    let env = TestEnv::new();
    let payload = serde_json::json!({ "command": "exec sleep 30" }).to_string();
    let id =
        ids(&env.envctl(&["jobs", "enqueue", "command.exec", "--payload", &payload]).ok().stdout).remove(0);
    let _sleep = JobProcesses(id.clone());
    let mut worker = env.spawn_envctl(&["--set", "jobs.lease_secs=1", "worker"]);
    let pid = worker.id();
    let this_worker = || {
        let stats = env.envctl(&["jobs", "stats", "--json"]).ok().json();
        stats["workers"]
            .as_array()
            .and_then(|workers| {
                workers.iter().find(|w| w["id"].as_str().is_some_and(|i| i.contains(&format!(":{pid}:"))))
            })
            .cloned()
            .unwrap_or_default()
    };
    assert!(eventually(20, || this_worker()["running"] == 1), "the worker runs the job");
    assert_eq!(this_worker()["state"], "alive");
    kill9(pid);
    worker.wait().expect("reap");
    // Its heartbeat goes stale after a few leases (3 s with a 1 s lease): it is gone and holds nothing.
    assert!(eventually(15, || this_worker()["state"] == "gone"), "{}", this_worker());
    assert_eq!(this_worker()["running"], 0, "a gone worker runs nothing");
    let text = env.envctl(&["jobs", "stats"]).ok().stdout.clone();
    let line = text.lines().find(|l| l.contains(&format!(":{pid}:"))).unwrap_or_default().to_owned();
    assert!(line.contains("gone") && !line.contains("running"), "{text}");
}

#[test]
fn cancel_says_when_the_job_finished_before_the_cancel_reached_it() {
    let env = TestEnv::new();
    let id = ids(&env.envctl(&["jobs", "enqueue", "noop"]).ok().stdout).remove(0);
    // The test is the job's worker, so it decides when the job ends: just after the cancel was asked for.
    let store = embedded_store(&env);
    let lease = Duration::from_secs(60);
    assert_eq!(store.claim("test-worker", &[], 1, lease).expect("claim").len(), 1);
    let run = std::thread::scope(|s| {
        let cancel = s.spawn(|| env.envctl(&["jobs", "cancel", &id]));
        let asked = eventually(20, || job(&env, &id)["status"] == "cancelling");
        store
            .finish("test-worker", &[(id.clone(), Finish::Succeeded(serde_json::Value::Null))])
            .expect("finish");
        assert!(asked, "the cancel was asked for");
        cancel.join().expect("cancel")
    });
    run.fails();
    assert_eq!(
        run.stderr.trim(),
        format!("{id}: finished before the cancel reached it (succeeded)"),
        "{}",
        run.stderr
    );
    assert_eq!(job(&env, &id)["status"], "succeeded");
    // A job already finished: exit 1, with its status.
    let again = env.envctl(&["jobs", "cancel", &id]);
    again.fails();
    assert!(again.stderr.contains("succeeded"), "{}", again.stderr);
    // A worker that has not stopped the job when the wait ends: the cancel stands.
    let slow = ids(&env.envctl(&["jobs", "enqueue", "noop"]).ok().stdout).remove(0);
    assert_eq!(store.claim("test-worker", &[], 1, lease).expect("claim").len(), 1);
    let waited = env.envctl(&["jobs", "cancel", &slow, "--wait", "300ms"]);
    assert_eq!(waited.ok().stderr.trim(), format!("{slow}: cancelling (its worker stops it)"));
    let unwaited = env.envctl(&["jobs", "cancel", &slow, "--no-wait"]);
    assert_eq!(unwaited.ok().stderr.trim(), format!("{slow}: cancelling (its worker stops it)"));
    store.finish("test-worker", &[(slow.clone(), Finish::Cancelled)]).expect("finish");
    assert_eq!(job(&env, &slow)["status"], "cancelled");
}

#[test]
fn a_worker_survives_a_redis_restart_and_runs_what_is_enqueued_after_it() {
    let mut redis = RedisServer::start(true);
    let url = redis.url();
    let vars = [("ENVCTL_JOBS_BACKEND", "redis"), ("ENVCTL_REDIS_URL", url.as_str())];
    let env = TestEnv::new();
    let mut worker = env.spawn_envctl_with(&vars, &["worker"]);
    let before = ids(&env.envctl_with(&vars, &["jobs", "enqueue", "noop"]).ok().stdout).remove(0);
    assert!(eventually(10, || job_with(&env, &vars, &before)["status"] == "succeeded"));
    redis.restart();
    let after = ids(&env.envctl_with(&vars, &["jobs", "enqueue", "noop"]).ok().stdout).remove(0);
    assert!(
        eventually(20, || job_with(&env, &vars, &after)["status"] == "succeeded"),
        "the worker reconnected and ran the job enqueued after the restart: {}",
        job_with(&env, &vars, &after)
    );
    assert!(worker.try_wait().expect("worker status").is_none(), "the worker is still running");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(worker.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = worker.wait();
}

#[test]
fn test_and_job_type_commands_get_a_service_command_s_placeholders_and_ones_naming_nothing_are_refused() {
    let env = TestEnv::new();
    let port = crate::support::free_port();
    env.write(
        ".envctl",
        &format!(
            "[services.api]\ncommand = \"sleep 1000\"\nport = {port}\ntest = \"echo tested {{api.url}} in {{target}}\"\n\n[jobs.types.ping]\ncommand = \"echo ping {{api.port}}\"\n"
        ),
    );
    let run = env.envctl(&["test"]);
    run.ok();
    let id = run.stdout.lines().find(|l| l.contains("api")).and_then(|l| l.split_whitespace().last());
    let logs = env.envctl(&["jobs", "logs", id.expect("job id")]).ok().stdout.clone();
    assert!(logs.contains(&format!("tested http://127.0.0.1:{port} in main")), "{logs}");
    let for_main = ids(&env.envctl(&["jobs", "enqueue", "ping", "--target", "main"]).ok().stdout).remove(0);
    let no_target = ids(&env.envctl(&["jobs", "enqueue", "ping"]).ok().stdout).remove(0);
    env.envctl(&["worker", "--drain"]).ok();
    assert_eq!(job(&env, &for_main)["status"], "succeeded");
    assert!(env.envctl(&["jobs", "logs", &for_main]).ok().stdout.contains(&format!("ping {port}")));
    let refused = job(&env, &no_target);
    assert_eq!(refused["status"], "failed", "{refused}");
    assert!(
        refused["error"].as_str().is_some_and(|e| e.contains("jobs.types.ping.command has placeholders")),
        "{refused}"
    );
    env.write(
        ".envctl",
        "[services.api]\ncommand = \"sleep 1000\"\nmigrate = \"migrate {db.url}\"\n\n[jobs.types.ping]\ncommand = \"echo {gone.port}\"\n",
    );
    let bad = env.envctl(&["show-config"]);
    bad.fails();
    assert!(
        bad.stderr.contains(".envctl:3:11: services.api.migrate: `{db.url}` names `db`"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains(".envctl:6:11: jobs.types.ping.command: `{gone.port}` names `gone`"),
        "{}",
        bad.stderr
    );
}

#[test]
fn enqueue_stdin_takes_one_job_per_line_and_answers_each_as_it_arrives() {
    use std::io::{BufRead as _, Write as _};
    let env = TestEnv::new();
    env.write(".envctl", "[jobs.types.lint]\ncommand = \"true\"\npriority = \"high\"\n");
    let mut child = env
        .sandboxed(env!("CARGO_BIN_EXE_envctl"), &env.repo)
        .args(["jobs", "enqueue", "noop", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    // One line at a time, each answered before the next is written: a script's loop over one process.
    let mut streamed = Vec::new();
    for line in [r#"{"type": "lint", "target": "main"}"#, r#"{"payload": {"n": 1}, "priority": "low"}"#] {
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
        let mut id = String::new();
        stdout.read_line(&mut id).expect("an id per line");
        streamed.push(id.trim().to_owned());
    }
    // A burst, then a bad line: everything before it is enqueued, and the line is named.
    let burst =
        (0..50).map(|i| format!(r#"{{"payload": {{"i": {i}}}}}"#)).collect::<Vec<_>>().join("\n") + "\n";
    write!(stdin, "{burst}\n{{\"type\": \"noop\", \"priority\": \"urgent\"}}\n{{\"type\": \"noop\"}}\n")
        .expect("write");
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read");
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stdin line 54:") && stderr.contains("urgent"), "{stderr}");
    assert_eq!(ids(&rest).len(), 50, "the burst before the bad line was enqueued");

    let lint = job(&env, &streamed[0]);
    assert_eq!((lint["type"].as_str(), lint["priority"].as_str()), (Some("lint"), Some("high")), "{lint}");
    assert_eq!(lint["target"], "main");
    let plain = job(&env, &streamed[1]);
    assert_eq!((plain["type"].as_str(), plain["priority"].as_str()), (Some("noop"), Some("low")), "{plain}");
    assert_eq!(plain["payload"]["n"], 1);
    let stats = env.envctl(&["jobs", "stats", "--json"]).ok().json();
    assert_eq!(stats["queued"], 52, "nothing after the bad line: {stats}");
}

/// A worker at concurrency 1 that has seen its jobs are short (50 `noop`) claims the next 20 as one batch: one runs
/// (held up by the test, as a long job would) while it holds the other 19 prefetched. Killed with SIGKILL there,
/// another worker takes over once the leases run out and every job ends succeeded exactly once in the store: the
/// killed batch is run again (its lost claim counted), none lost, and only the job that was running when the worker
/// died ran twice (at least once).
fn a_killed_prefetching_worker_s_batch_runs_again(vars: &[(&str, &str)]) {
    let env = TestEnv::new();
    env.write(".envctl", "[jobs]\nlease_secs = 1\n");
    let (ran, hold) = (env.repo.join("ran.txt"), env.repo.join("hold"));
    let mut worker = env.spawn_envctl_with(vars, &["worker", "--concurrency", "1"]);
    env.envctl_with(vars, &["jobs", "enqueue", "noop", "--count", "50"]).ok();
    let stat = |key: &str| env.envctl_with(vars, &["jobs", "stats", "--json"]).ok().json()[key].as_u64();
    assert!(eventually(30, || stat("succeeded") == Some(50)), "the worker ran the short jobs");
    std::fs::write(&hold, "").expect("hold");
    let command = format!(
        "echo $ENVCTL_JOB_ID >> {}; while [ -e {} ]; do sleep 0.01; done",
        ran.display(),
        hold.display()
    );
    let payload = serde_json::json!({ "command": command }).to_string();
    let enqueued = ids(&env
        .envctl_with(vars, &["jobs", "enqueue", "command.exec", "--payload", &payload, "--count", "20"])
        .ok()
        .stdout);
    assert_eq!(enqueued.len(), 20);
    let holding = eventually(30, || stat("running") == Some(20) && std::fs::metadata(&ran).is_ok());
    kill9(worker.id());
    worker.wait().expect("reap");
    assert!(holding, "one call claimed the batch: 1 running, 19 held beyond the worker's one slot");
    std::fs::remove_file(&hold).expect("let the jobs end");
    env.envctl_with(vars, &["worker", "--drain", "--concurrency", "4"]).ok();
    let stats = env.envctl_with(vars, &["jobs", "stats", "--json"]).ok().json();
    assert_eq!(
        (
            stats["succeeded"].as_u64(),
            stats["dead"].as_u64(),
            stats["failed"].as_u64(),
            stats["running"].as_u64()
        ),
        (Some(70), Some(0), Some(0), Some(0)),
        "{stats}"
    );
    let text = std::fs::read_to_string(&ran).expect("ran.txt");
    let mut runs: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for line in text.lines() {
        *runs.entry(line).or_default() += 1;
    }
    let expected: std::collections::BTreeSet<&str> = enqueued.iter().map(String::as_str).collect();
    assert_eq!(runs.keys().copied().collect::<std::collections::BTreeSet<_>>(), expected, "every job ran");
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.len() == 1 && *twice[0].1 == 2, "only the job that was running ran again: {runs:?}");
    for id in &enqueued {
        assert_eq!(
            job_with(&env, vars, id)["attempts"],
            2,
            "{id}: claimed by the killed worker, then once more"
        );
    }
}

#[test]
fn a_killed_prefetching_worker_s_batch_runs_again_exactly_once() {
    a_killed_prefetching_worker_s_batch_runs_again(&[]);
}

#[test]
fn a_killed_prefetching_worker_s_batch_runs_again_exactly_once_on_redis() {
    let redis = RedisServer::start(false);
    let url = redis.url();
    a_killed_prefetching_worker_s_batch_runs_again(&[
        ("ENVCTL_JOBS_BACKEND", "redis"),
        ("ENVCTL_REDIS_URL", url.as_str()),
    ]);
}
