//! Attacks on envctl's trust boundary: each test is one way a secret or an authority could leak past it.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use crate::support::{TestEnv, free_port};

fn scope_dir(env: &TestEnv) -> PathBuf {
    std::fs::read_dir(env.runtime.join("scopes"))
        .expect("scopes")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .next()
        .expect("a scope directory")
}

/// One RESP command over a fresh connection, after `AUTH password`: the raw reply.
fn redis_command(port: u16, password: &str, args: &[&str]) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).expect("timeout");
    let encode = |args: &[&str]| {
        use std::fmt::Write as _;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            let _ = write!(out, "${}\r\n{a}\r\n", a.len());
        }
        out
    };
    let request = encode(&["AUTH", password]) + &encode(args);
    stream.write_all(request.as_bytes()).expect("write");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The managed job server refuses envctl's connection (here: its password was changed under it; the same path
/// is taken by any failing store call): the error envctl prints must not carry the password it connected with.
#[test]
fn a_job_store_error_never_prints_the_job_server_password() {
    let env = TestEnv::new();
    env.write(".envctl", &format!("[jobs]\nbackend = \"redis\"\nport = {}\n", free_port()));
    env.envctl(&["jobs", "enqueue", "noop"]).ok();
    let scope = scope_dir(&env);
    let password = std::fs::read_to_string(scope.join("secrets/repository.jobs.password"))
        .expect("password")
        .trim()
        .to_owned();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scope.join("job_server.json")).expect("record")).expect("json");
    let port = u16::try_from(record["port"].as_u64().expect("port")).expect("port");
    let reply = redis_command(port, &password, &["CONFIG", "SET", "requirepass", "someone-else-s-password"]);
    assert!(reply.contains("+OK\r\n+OK"), "{reply}");
    let failed = env.envctl(&["jobs", "list"]);
    failed.fails();
    let all = format!("{}\n{}", failed.stdout, failed.stderr);
    assert!(all.contains("job store"), "the store error is reported: {all}");
    assert!(!all.contains(&password), "the job server's password is printed: {all}");
    redis_command(port, "someone-else-s-password", &["CONFIG", "SET", "requirepass", &password]);
    env.envctl(&["stop-all"]).ok();
}

/// A job of one target holds a token for its own target's jobs only; its variables are no different: another
/// target's (`?target=`) are refused with 403 and not written, its own and the repository's are served, and a
/// target that is no target name (a tab would reach into another variable's field) is refused with 400.
#[test]
fn a_target_s_job_reaches_no_other_target_s_variables() {
    use crate::runtime_api::{Worker, enqueue, handed, handing_over, http, signals};
    let env = TestEnv::new();
    let dir = signals(&env);
    env.envctl(&["vars", "set", "secret", "theirs", "--target", "feature-x"]).ok();
    enqueue(&env, &[], &handing_over(&dir, "a"), &["--target", "main"]);
    let _worker = Worker::start(&env, &[], &["--drain"]);
    let (url, execution, token) = handed(&dir, "a");
    let var = |rest: &str| format!("/executions/{execution}/variables/{rest}");
    let got = http(&url, "GET", &var("secret?target=feature-x"), Some(&token), "");
    assert_eq!(got.0, 403, "another target's variable is read: {}", got.1);
    let put = http(&url, "PUT", &var("secret?target=feature-x"), Some(&token), r#"{"value": "mine"}"#);
    assert_eq!(put.0, 403, "another target's variable is written: {}", put.1);
    assert_eq!(http(&url, "DELETE", &var("secret?target=feature-x"), Some(&token), "").0, 403);
    assert_eq!(http(&url, "POST", &var("n/incr?target=feature-x"), Some(&token), "").0, 403);
    assert_eq!(http(&url, "PUT", &var("k?target=main"), Some(&token), r#"{"value": "1"}"#).0, 204);
    assert_eq!(http(&url, "PUT", &var("k"), Some(&token), r#"{"value": "1"}"#).0, 204);
    assert_eq!(http(&url, "PUT", &var("k?target=main%09x"), Some(&token), r#"{"value": "1"}"#).0, 400);
    assert_eq!(env.envctl(&["vars", "get", "secret", "--target", "feature-x"]).ok().stdout.trim(), "theirs");
    std::fs::write(dir.join("a.go"), "").expect("go");
}

/// A job's script that prints its environment (`env`, `set -x`, a curl with `-v`) must not put its token in the
/// job's log, which the store keeps and `jobs logs` and bundles show.
#[test]
fn a_job_that_prints_its_environment_leaves_no_token_in_its_log() {
    use crate::runtime_api::{Worker, enqueue, signals};
    let env = TestEnv::new();
    let dir = signals(&env);
    let d = dir.display();
    let id = enqueue(
        &env,
        &[],
        &format!(
            "printf '%s' \"$ENVCTL_EXECUTION_TOKEN\" > {d}/token; env; echo \"Authorization: Bearer $ENVCTL_EXECUTION_TOKEN\" >&2; \"$ENVCTL_BIN\" job log \"api-log $ENVCTL_EXECUTION_TOKEN\""
        ),
        &[],
    );
    Worker::start(&env, &[], &["--drain"]).finishes();
    let token = std::fs::read_to_string(dir.join("token")).expect("token");
    assert!(token.len() > 20, "the job had a token: {token}");
    let logs = env.envctl(&["jobs", "logs", &id]).ok().stdout.clone();
    assert!(
        logs.contains("ENVCTL_EXECUTION_TOKEN=")
            && logs.contains("Authorization: Bearer")
            && logs.contains("api-log"),
        "{logs}"
    );
    assert!(!logs.contains(&token), "the token is in the job's log: {logs}");
    let record = env.envctl(&["jobs", "show", &id, "--json"]).ok().stdout.clone();
    assert!(!record.contains(&token), "the token is in the job's record: {record}");
}

/// `GET /jobs/{id}` of another target's job is 403, and so must be waiting on it: its output would be in the
/// child's context (`parents`), which the enqueuing target's job reads.
#[test]
fn a_target_s_job_cannot_read_another_target_s_output_through_a_workflow() {
    use crate::runtime_api::{Worker, enqueue, handed, handing_over, http, signals};
    let env = TestEnv::new();
    let dir = signals(&env);
    let other = crate::support::ids(
        &env.envctl(&["jobs", "enqueue", "noop", "--target", "feature-x", "--delay", "1h"]).ok().stdout,
    )
    .remove(0);
    enqueue(&env, &[], &handing_over(&dir, "a"), &["--target", "main"]);
    let _worker = Worker::start(&env, &[], &[]);
    let (url, _, token) = handed(&dir, "a");
    assert_eq!(http(&url, "GET", &format!("/jobs/{other}"), Some(&token), "").0, 403);
    let body = format!(r#"{{"type": "noop", "after": ["{other}"]}}"#);
    let (status, reply) = http(&url, "POST", "/jobs", Some(&token), &body);
    assert_eq!(status, 403, "a child of another target's job was enqueued: {reply}");
    let own = crate::support::ids(
        &env.envctl(&["jobs", "enqueue", "noop", "--target", "main", "--delay", "1h"]).ok().stdout,
    )
    .remove(0);
    let body = format!(r#"{{"type": "noop", "after": ["{own}"]}}"#);
    assert_eq!(http(&url, "POST", "/jobs", Some(&token), &body).0, 201, "its own target's job is a parent");
    std::fs::write(dir.join("a.go"), "").expect("go");
}
