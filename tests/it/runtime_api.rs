//! The runtime API, through real `command.exec` jobs run by real workers: each helper (`envctl job` through the
//! bash helper, the Python module, the Node module) round-trips input, output, variables, progress and logs; the
//! security promises are attacked with raw HTTP; variables count exactly on both stores; workflows skip; slow
//! clients hold nothing up; services get tokens that reach their own target's jobs and nothing else.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{RedisServer, TestEnv, eventually, ids, job};

/// A worker process, SIGKILLed on drop if it has not exited.
pub(crate) struct Worker(std::process::Child);

impl Worker {
    pub(crate) fn start(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> Self {
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        Self(env.spawn_envctl_with(vars, &all))
    }

    /// Waits (bounded) for it to exit on its own (`--drain`).
    pub(crate) fn finishes(&mut self) {
        assert!(eventually(60, || self.0.try_wait().ok().flatten().is_some()), "the worker did not drain");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn enqueue(env: &TestEnv, vars: &[(&str, &str)], command: &str, extra: &[&str]) -> String {
    let payload = serde_json::json!({ "command": command }).to_string();
    let mut args = vec!["jobs", "enqueue", "command.exec", "--payload", payload.as_str()];
    args.extend_from_slice(extra);
    ids(&env.envctl_with(vars, &args).ok().stdout).remove(0)
}

/// A directory for a test's signal files.
pub(crate) fn signals(env: &TestEnv) -> PathBuf {
    let dir = env.repo.join("signals");
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default().trim().to_owned()
}

/// One raw HTTP/1.1 exchange (as curl would make it): the status and body.
pub(crate) fn http(url: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let host = url.strip_prefix("http://").expect("http url");
    let mut stream = TcpStream::connect(host).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The command of a job that hands the test its runtime API variables and waits for `go`.
pub(crate) fn handing_over(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "printf '%s\\n%s\\n%s\\n' \"$ENVCTL_RUNTIME_URL\" \"$ENVCTL_EXECUTION_ID\" \"$ENVCTL_EXECUTION_TOKEN\" > {d}/{name}.tmp && mv {d}/{name}.tmp {d}/{name}; while [ ! -f {d}/{name}.go ]; do sleep 0.05; done"
    )
}

/// `(url, execution id, token)` a [`handing_over`] job wrote.
pub(crate) fn handed(dir: &Path, name: &str) -> (String, String, String) {
    let file = dir.join(name);
    assert!(eventually(30, || file.exists()), "job {name} did not start");
    let text = std::fs::read_to_string(&file).expect("read");
    let mut lines = text.lines().map(str::to_owned);
    let mut next = || lines.next().expect("a line");
    (next(), next(), next())
}

/// Runs `first` (input 21) and then `second` (`--after` it) under one worker: while the first runs, its progress
/// and log line are seen by `jobs show`; afterwards the output, the variables and the context are checked.
fn round_trip(env: &TestEnv, first: &str, second: &str, log_line: &str) {
    let dir = signals(env);
    let one = enqueue(env, &[], first, &["--input", "21"]);
    let two = enqueue(env, &[], second, &["--after", &one]);
    assert_eq!(job(env, &two)["status"], "waiting");
    let mut worker = Worker::start(env, &[], &["--drain"]);
    assert!(
        eventually(30, || {
            let seen = job(env, &one);
            seen["progress"]["percent"] == 50.0
                && seen["progress"]["step"] == "halfway"
                && seen["status"] == "running"
        }),
        "progress is seen while the job runs: {}",
        job(env, &one)
    );
    assert!(
        eventually(10, || env.envctl(&["jobs", "logs", &one]).stdout.contains(log_line)),
        "the log line is seen while the job runs"
    );
    std::fs::write(dir.join("go"), "").expect("go");
    worker.finishes();
    let done = job(env, &one);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], serde_json::json!({"double": 42}));
    assert!(env.envctl(&["jobs", "show", &one]).ok().stdout.contains(r#"output: {"double":42}"#));
    let after = job(env, &two);
    assert_eq!(after["status"], "succeeded", "{after}\n{}", env.envctl(&["jobs", "logs", &two]).stdout);
    let context: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("context.json")).expect("context"))
            .expect("json");
    assert_eq!(context["job_id"], two.as_str());
    assert_eq!(context["attempt"], 1);
    assert_eq!(context["parents"][0]["id"], one.as_str());
    assert_eq!(context["parents"][0]["output"], serde_json::json!({"double": 42}));
    assert_eq!(read_trimmed(&dir.join("greeting")), "hello-21");
    assert_eq!(read_trimmed(&dir.join("runs")), "2", "incremented once by each job");
    assert_eq!(read_trimmed(&dir.join("exists")), "missing");
    assert_eq!(env.envctl(&["vars", "get", "runs"]).ok().stdout.trim(), "2");
    let listed = env.envctl(&["vars", "list", "--json"]).ok().json();
    assert_eq!(listed["variables"].as_array().map(Vec::len), Some(2), "{listed}");
}

#[test]
fn the_bash_helper_round_trips_input_output_variables_progress_and_logs() {
    let env = TestEnv::new();
    let d = signals(&env).display().to_string();
    env.write(
        "first.sh",
        &format!(
            ". \"$ENVCTL_HELPERS_DIR/envctl_job.sh\"\nn=$(envctl_input)\nenvctl_output \"{{\\\"double\\\": $((n * 2))}}\"\nenvctl_var_set greeting \"hello-$n\"\nenvctl_var_incr runs >/dev/null\nenvctl_progress 50 halfway\nenvctl_log bash says hi\nwhile [ ! -f {d}/go ]; do sleep 0.05; done\n"
        ),
    );
    env.write(
        "second.sh",
        &format!(
            ". \"$ENVCTL_HELPERS_DIR/envctl_job.sh\"\nenvctl_context > {d}/context.json\nenvctl_var_get greeting > {d}/greeting\nenvctl_var_incr runs > {d}/runs\nif envctl_var_exists nope; then echo present; else test $? = 3 && echo missing; fi > {d}/exists\n"
        ),
    );
    round_trip(&env, "sh first.sh", "sh second.sh", "bash says hi");
}

#[test]
fn the_python_helper_round_trips_input_output_variables_progress_and_logs() {
    let env = TestEnv::new();
    let d = signals(&env).display().to_string();
    let import = "import os, sys, time, json\nsys.path.insert(0, os.environ['ENVCTL_HELPERS_DIR'])\nimport envctl_job as job\n";
    env.write(
        "first.py",
        &format!(
            "{import}n = job.input()\njob.output({{'double': 2 * n}})\njob.set_var('greeting', f'hello-{{n}}')\njob.incr('runs')\njob.progress(50, 'halfway')\njob.log('python says hi')\nwhile not os.path.exists('{d}/go'):\n    time.sleep(0.05)\n"
        ),
    );
    env.write(
        "second.py",
        &format!(
            "{import}open('{d}/context.json', 'w').write(json.dumps(job.context()))\nopen('{d}/greeting', 'w').write(job.get_var('greeting'))\nopen('{d}/runs', 'w').write(str(job.incr('runs')))\nopen('{d}/exists', 'w').write('present' if job.exists('nope') else 'missing')\ntry:\n    job.cancel('nobody')\n    sys.exit('cancel of a missing job succeeded')\nexcept job.NotFound:\n    pass\nqueued = job.enqueue('noop', input={{'from': 'python'}})\nopen('{d}/enqueued', 'w').write(queued + ' ' + job.job(queued)['type'])\n"
        ),
    );
    round_trip(&env, "python3 first.py", "python3 second.py", "python says hi");
    let enqueued = read_trimmed(&env.repo.join("signals/enqueued"));
    let (id, kind) = enqueued.split_once(' ').expect("id and type");
    assert_eq!(kind, "noop");
    let queued = job(&env, id);
    assert_eq!(queued["input"], serde_json::json!({"from": "python"}), "{queued}");
    assert_eq!(queued["status"], "succeeded", "the draining worker ran it too");
}

#[test]
fn the_node_helper_round_trips_input_output_variables_progress_and_logs() {
    let env = TestEnv::new();
    let d = signals(&env).display().to_string();
    let import = "const fs = require('fs');\nconst job = require(require('path').join(process.env.ENVCTL_HELPERS_DIR, 'envctl_job.js'));\n";
    env.write(
        "first.js",
        &format!(
            "{import}(async () => {{\n  const n = await job.input();\n  await job.output({{ double: 2 * n }});\n  await job.setVar('greeting', `hello-${{n}}`);\n  await job.incr('runs');\n  await job.progress(50, 'halfway');\n  await job.log('node says hi');\n  while (!fs.existsSync('{d}/go')) await new Promise((r) => setTimeout(r, 50));\n}})().catch((e) => {{ console.error(e); process.exit(1); }});\n"
        ),
    );
    env.write(
        "second.js",
        &format!(
            "{import}(async () => {{\n  fs.writeFileSync('{d}/context.json', JSON.stringify(await job.context()));\n  fs.writeFileSync('{d}/greeting', await job.getVar('greeting'));\n  fs.writeFileSync('{d}/runs', String(await job.incr('runs')));\n  fs.writeFileSync('{d}/exists', (await job.exists('nope')) ? 'present' : 'missing');\n}})().catch((e) => {{ console.error(e); process.exit(1); }});\n"
        ),
    );
    round_trip(&env, "node first.js", "node second.js", "node says hi");
}

#[test]
fn tokens_are_refused_when_forged_expired_revoked_or_used_on_another_execution() {
    let env = TestEnv::new();
    let dir = signals(&env);
    let id = enqueue(&env, &[], &handing_over(&dir, "a"), &[]);
    let mut worker = Worker::start(&env, &[], &["--drain"]);
    let (url, execution, token) = handed(&dir, "a");
    assert_eq!(execution, format!("{id}.1"));
    let at = |p: &str| format!("/executions/{execution}{p}");
    assert_eq!(http(&url, "GET", "/health", None, "").0, 200);
    assert_eq!(http(&url, "GET", &at("/input"), Some(&token), "").0, 200);
    // No token, a tampered one, one signed with another key.
    assert_eq!(http(&url, "GET", &at("/input"), None, "").0, 401);
    let mut tampered = token.clone();
    let last = if tampered.ends_with('A') { 'B' } else { 'A' };
    tampered.pop();
    tampered.push(last);
    assert_eq!(http(&url, "GET", &at("/input"), Some(&tampered), "").0, 401);
    let scope =
        std::fs::read_dir(env.runtime.join("scopes")).expect("scopes").next().expect("scope").expect("entry");
    let scope_name = scope.file_name().to_string_lossy().into_owned();
    let wrong_key =
        envctl_engine::runtime_api::tokens::Signer::new(&scope_name, b"a key that is not the scope's key")
            .expect("signer");
    let forged = wrong_key.execution(&execution, &id, None, Duration::from_secs(60));
    assert_eq!(http(&url, "GET", &at("/input"), Some(&forged), "").0, 401, "forged");
    // The scope's own key, but expired.
    let key =
        std::fs::read_to_string(scope.path().join("secrets/runtime-api.signing-key.password")).expect("key");
    let mode = std::fs::metadata(scope.path().join("secrets/runtime-api.signing-key.password"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the signing key is the user's alone");
    let signer =
        envctl_engine::runtime_api::tokens::Signer::new(&scope_name, key.trim().as_bytes()).expect("signer");
    let short = signer.execution(&execution, &id, None, Duration::from_secs(1));
    assert_eq!(
        http(&url, "GET", &at("/input"), Some(&short), "").0,
        200,
        "the scope's key signs valid tokens"
    );
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(http(&url, "GET", &at("/input"), Some(&short), "").0, 401, "expired");
    // A valid token on another execution's paths.
    let other = format!("/executions/{id}.2");
    assert_eq!(http(&url, "GET", &format!("{other}/input"), Some(&token), "").0, 403);
    assert_eq!(http(&url, "PUT", &format!("{other}/variables/k"), Some(&token), r#"{"value": "x"}"#).0, 403);
    // Malformed bodies, and one over 1 MiB.
    assert_eq!(http(&url, "POST", &at("/output"), Some(&token), "{not json").0, 400);
    assert_eq!(http(&url, "POST", &at("/condition"), Some(&token), r#"{"condition": "maybe"}"#).0, 400);
    assert_eq!(http(&url, "PUT", &at("/variables/k"), Some(&token), r#"{"nothing": 1}"#).0, 400);
    let big = format!("\"{}\"", "x".repeat(1024 * 1024 + 10));
    assert_eq!(http(&url, "POST", &at("/output"), Some(&token), &big).0, 413);
    assert_eq!(http(&url, "GET", &at("/variables/none"), Some(&token), "").0, 404);
    assert_eq!(http(&url, "GET", "/health", None, "").0, 200, "the worker still serves");
    let (status, metrics) = http(&url, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    for name in [
        "envctl_jobs{status=\"running\"} 1",
        "envctl_jobs_running 1",
        "envctl_queue_depth 0",
        "envctl_api_requests_total{status=\"401\"}",
        "envctl_api_requests_total{status=\"413\"} 1",
        "envctl_services_up",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
    assert!(!metrics.contains(&token));
    std::fs::write(dir.join("a.go"), "").expect("go");
    worker.finishes();
    assert_eq!(job(&env, &id)["status"], "succeeded");
    // The attempt ended: its token is revoked (and nothing of it was recorded).
    assert!(!env.envctl(&["jobs", "show", &id, "--json"]).stdout.contains(&token));
    assert!(!env.envctl(&["jobs", "logs", &id]).stdout.contains(&token));
}

#[test]
fn an_ended_attempt_s_token_is_revoked() {
    let env = TestEnv::new();
    let dir = signals(&env);
    // The first job hands over its variables and ends at once; the second keeps the worker (and its API) up.
    let d = dir.display();
    let first = format!(
        "printf '%s\\n%s\\n%s\\n' \"$ENVCTL_RUNTIME_URL\" \"$ENVCTL_EXECUTION_ID\" \"$ENVCTL_EXECUTION_TOKEN\" > {d}/first.tmp && mv {d}/first.tmp {d}/first"
    );
    let one = enqueue(&env, &[], &first, &[]);
    let two = enqueue(&env, &[], &handing_over(&dir, "b"), &["--after", &one]);
    let mut worker = Worker::start(&env, &[], &["--drain"]);
    let (url, execution, token) = handed(&dir, "first");
    let (_, _, live) = handed(&dir, "b");
    assert_eq!(
        http(&url, "GET", &format!("/executions/{execution}/input"), Some(&token), "").0,
        401,
        "revoked"
    );
    std::fs::write(dir.join("b.go"), "").expect("go");
    worker.finishes();
    assert_ne!(token, live);
    assert_eq!(job(&env, &two)["status"], "succeeded");
}

fn thirty_two_increments(vars: &[(&str, &str)]) {
    let env = TestEnv::new();
    for _ in 0..4 {
        enqueue(
            &env,
            vars,
            "for i in 1 2 3 4 5 6 7 8; do \"$ENVCTL_BIN\" job var incr counter >/dev/null || exit 1; done",
            &[],
        );
    }
    let mut worker = Worker::start(&env, vars, &["--drain", "--concurrency", "4"]);
    worker.finishes();
    let listed = env.envctl_with(vars, &["jobs", "list", "--json"]).ok().json();
    let jobs = listed["jobs"].as_array().expect("jobs");
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{listed}");
    assert_eq!(env.envctl_with(vars, &["vars", "get", "counter"]).ok().stdout.trim(), "32");
}

#[test]
fn thirty_two_concurrent_increments_from_four_jobs_count_32_on_the_embedded_store() {
    thirty_two_increments(&[]);
}

#[test]
fn thirty_two_concurrent_increments_from_four_jobs_count_32_on_redis() {
    let redis = RedisServer::start(false);
    let url = redis.url();
    thirty_two_increments(&[("ENVCTL_JOBS_BACKEND", "redis"), ("ENVCTL_REDIS_URL", url.as_str())]);
}

fn condition_false_skips_the_third(vars: &[(&str, &str)]) {
    let env = TestEnv::new();
    let one = enqueue(&env, vars, "\"$ENVCTL_BIN\" job output '{\"step\": 1}'", &[]);
    let two = enqueue(
        &env,
        vars,
        "\"$ENVCTL_BIN\" job context | grep -q '\"step\":1' && \"$ENVCTL_BIN\" job condition false",
        &["--after", &one],
    );
    let three = enqueue(&env, vars, "echo should-not-run", &["--after", &two]);
    let show = |id: &str| env.envctl_with(vars, &["jobs", "show", id, "--json"]).ok().json();
    assert_eq!(show(&three)["status"], "waiting");
    let mut worker = Worker::start(&env, vars, &["--drain"]);
    worker.finishes();
    assert_eq!(show(&one)["status"], "succeeded");
    let middle = show(&two);
    assert_eq!(
        (middle["status"].as_str(), middle["condition"].as_bool()),
        (Some("succeeded"), Some(false)),
        "{middle}"
    );
    let last = show(&three);
    assert_eq!(last["status"], "skipped", "{last}");
    let reason = last["error"].as_str().unwrap_or_default();
    assert!(reason.contains(&two) && reason.contains("condition = false"), "{reason}");
    assert!(last["started_at"].is_null(), "it never ran");
    assert!(env.envctl_with(vars, &["jobs", "show", &three]).ok().stdout.contains("status: skipped"));
}

#[test]
fn a_workflow_whose_middle_job_sets_condition_false_skips_the_third() {
    condition_false_skips_the_third(&[]);
}

#[test]
fn a_workflow_whose_middle_job_sets_condition_false_skips_the_third_on_redis() {
    let redis = RedisServer::start(false);
    let url = redis.url();
    condition_false_skips_the_third(&[("ENVCTL_JOBS_BACKEND", "redis"), ("ENVCTL_REDIS_URL", url.as_str())]);
}

#[test]
fn the_api_keeps_serving_while_one_client_sends_a_large_body_and_another_stalls() {
    let env = TestEnv::new();
    let dir = signals(&env);
    enqueue(&env, &[], &handing_over(&dir, "a"), &[]);
    let mut worker = Worker::start(&env, &[], &["--drain"]);
    let (url, execution, token) = handed(&dir, "a");
    let host = url.strip_prefix("http://").expect("url").to_owned();
    // A connection that never sends a byte.
    let stalled = TcpStream::connect(&host).expect("connect");
    // A client that announces 1.5 MiB and sends it slowly, 64 KiB at a time.
    let slow = {
        let (host, token, execution) = (host.clone(), token.clone(), execution.clone());
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(&host).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            let len = 1536 * 1024;
            let head = format!(
                "POST /executions/{execution}/output HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).expect("head");
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..24 {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut raw = String::new();
            let _ = stream.read_to_string(&mut raw);
            raw
        })
    };
    for _ in 0..20 {
        let took = std::time::Instant::now();
        assert_eq!(http(&url, "GET", "/health", None, "").0, 200);
        assert_eq!(
            http(&url, "POST", &format!("/executions/{execution}/variables/n/incr"), Some(&token), "").0,
            200
        );
        assert!(took.elapsed() < Duration::from_secs(5), "a request waited on the slow clients");
        std::thread::sleep(Duration::from_millis(25));
    }
    let answer = slow.join().expect("slow client");
    assert!(answer.starts_with("HTTP/1.1 413"), "the large body is refused: {answer:.80}");
    drop(stalled);
    assert_eq!(env.envctl(&["vars", "get", "n"]).ok().stdout.trim(), "20");
    std::fs::write(dir.join("a.go"), "").expect("go");
    worker.finishes();
}

/// Starts a service `app` that hands the test the runtime API's URL and its service token (with `more` config after
/// it), and returns them.
fn start_handing_over(env: &TestEnv, more: &str) -> (String, String) {
    let dir = signals(env);
    let d = dir.display();
    env.write(
        ".envctl",
        &format!(
            "[services.app]\ncommand = \"printf '%s\\\\n%s\\\\n' \\\"$ENVCTL_RUNTIME_URL\\\" \\\"$ENVCTL_SERVICE_TOKEN\\\" > {d}/svc.tmp && mv {d}/svc.tmp {d}/svc; exec sleep 1000\"\n\n{more}"
        ),
    );
    env.envctl(&["start"]).ok();
    let file = dir.join("svc");
    assert!(eventually(20, || file.exists()), "the service did not start");
    let text = std::fs::read_to_string(&file).expect("read");
    let mut lines = text.lines();
    (lines.next().expect("url").to_owned(), lines.next().expect("token").to_owned())
}

#[test]
fn a_service_token_reaches_its_own_target_s_jobs_and_no_execution() {
    let env = TestEnv::new();
    let (url, token) = start_handing_over(&env, "");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(!token.is_empty());
    assert!(!env.state().to_string().contains(&token), "the service token is not in the state");
    // Its own target: enqueue, read, cancel (the store opens a moment after the start; 503 until then).
    let mut created = (0, String::new());
    assert!(eventually(20, || {
        created = http(&url, "POST", "/jobs", Some(&token), r#"{"type": "noop", "delay": null}"#);
        created.0 != 503
    }));
    assert_eq!(created.0, 400, "an unknown field is refused: {}", created.1);
    let (status, body) = http(
        &url,
        "POST",
        "/jobs",
        Some(&token),
        r#"{"type": "command.exec", "payload": {"command": "sleep 30"}, "input": {"from": "app"}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, body) = http(&url, "GET", &format!("/jobs/{id}"), Some(&token), "");
    assert_eq!(status, 200, "{body}");
    let record: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (record["target"].as_str(), &record["input"]),
        (Some("main"), &serde_json::json!({"from": "app"}))
    );
    assert_eq!(http(&url, "POST", &format!("/jobs/{id}/cancel"), Some(&token), "").0, 200);
    // Another target's jobs.
    let other =
        ids(&env.envctl(&["jobs", "enqueue", "noop", "--target", "feature-x", "--delay", "1h"]).ok().stdout)
            .remove(0);
    assert_eq!(http(&url, "GET", &format!("/jobs/{other}"), Some(&token), "").0, 403);
    assert_eq!(http(&url, "POST", &format!("/jobs/{other}/cancel"), Some(&token), "").0, 403);
    assert_eq!(
        http(&url, "POST", "/jobs", Some(&token), r#"{"type": "noop", "target": "feature-x"}"#).0,
        403
    );
    assert_eq!(job(&env, &other)["status"], "scheduled", "not cancelled");
    // Every execution path.
    let execution = format!("/executions/{id}.1");
    for (method, path, body) in [
        ("GET", "/input", ""),
        ("POST", "/output", "{}"),
        ("GET", "/context", ""),
        ("POST", "/condition", r#"{"condition": true}"#),
        ("GET", "/variables/k", ""),
        ("PUT", "/variables/k", r#"{"value": "v"}"#),
        ("DELETE", "/variables/k", ""),
        ("POST", "/variables/k/incr", ""),
        ("POST", "/progress", "{}"),
        ("POST", "/logs", r#"{"message": "m"}"#),
    ] {
        assert_eq!(
            http(&url, method, &format!("{execution}{path}"), Some(&token), body).0,
            403,
            "{method} {path}"
        );
    }
    let (status, metrics) = http(&url, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    assert!(metrics.contains("envctl_services_up 1"), "{metrics}");
    env.envctl(&["stop"]).ok();
}

#[test]
fn clients_of_a_job_store_that_stopped_answering_leave_stop_its_threads() {
    use nix::sys::signal::{Signal, kill};
    let redis = RedisServer::start(false);
    let env = TestEnv::new();
    let (url, token) =
        start_handing_over(&env, &format!("[jobs]\nbackend = \"redis\"\nredis_url = \"{}\"\n", redis.url()));
    let pids = env.pids();
    let mut created = (0, String::new());
    assert!(eventually(20, || {
        created = http(&url, "POST", "/jobs", Some(&token), r#"{"type": "noop"}"#);
        created.0 != 503
    }));
    assert_eq!(created.0, 201, "{}", created.1);
    let id = serde_json::from_str::<serde_json::Value>(&created.1).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The store stops answering (its connections stay open); 48 clients ask for the job, each giving up at once.
    kill(redis.pid(), Signal::SIGSTOP).expect("SIGSTOP");
    let host = url.strip_prefix("http://").expect("http url").to_owned();
    let clients: Vec<_> = (0..48)
        .map(|_| {
            let (host, token, id) = (host.clone(), token.clone(), id.clone());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&host).expect("connect");
                let request = format!(
                    "GET /jobs/{id} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).expect("send");
                stream.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
                let _ = stream.read(&mut [0; 64]);
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    // Stopping the service needs the host's blocking pool; the clients' store calls must not have taken it all.
    let mut stop = env.spawn_envctl(&["stop"]);
    let stopped = eventually(20, || stop.try_wait().ok().flatten().is_some());
    kill(redis.pid(), Signal::SIGCONT).expect("SIGCONT");
    assert!(stopped, "stop hung behind the job store's clients");
    assert!(stop.wait().expect("stop").success());
    for (name, (pid, started)) in pids {
        assert!(!crate::support::alive(pid, started), "{name} still runs");
    }
}

/// The TCP ports process `pid` listens on (its socket descriptors matched against the kernel's table).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|link| Some(link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("tcp table");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening =
                fields.get(3) == Some(&"0A") && inodes.iter().any(|i| Some(&i.as_str()) == fields.get(9));
            let port = fields.get(1)?.rsplit_once(':')?.1;
            listening.then(|| u16::from_str_radix(port, 16).ok()).flatten()
        })
        .collect()
}

#[test]
fn a_worker_serves_its_runtime_api_from_the_first_job_that_runs_a_process() {
    let env = TestEnv::new();
    let dir = signals(&env);
    let worker = Worker::start(&env, &[], &["--concurrency", "2"]);
    let pid = worker.0.id();
    let noop = ids(&env.envctl(&["jobs", "enqueue", "noop"]).ok().stdout).remove(0);
    assert!(eventually(20, || job(&env, &noop)["status"] == "succeeded"), "the built-in job ran");
    assert_eq!(listening_ports(pid), Vec::<u16>::new(), "no HTTP is served before a job needs it");
    let d = dir.display();
    let command = format!("printf '%s' \"$ENVCTL_RUNTIME_URL\" > {d}/url.tmp && mv {d}/url.tmp {d}/url");
    enqueue(&env, &[], &command, &[]);
    assert!(eventually(20, || dir.join("url").exists()), "the command job ran");
    let url = read_trimmed(&dir.join("url"));
    let port: u16 =
        url.rsplit_once(':').and_then(|(_, p)| p.trim_end_matches('/').parse().ok()).expect("a port");
    assert_eq!(
        listening_ports(pid),
        vec![port],
        "the job's API is the worker's, up from its first job: {url}"
    );
    assert_eq!(http(&url, "GET", "/executions/nope/input", None, "").0, 401, "and it answers");
}
