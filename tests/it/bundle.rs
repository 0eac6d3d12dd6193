//! `envctl debug-pack`, `debug-report` and `debug-last`: no secret leaves in a bundle, its manifest tells the truth,
//! its artifacts match their schemas, the report names each planted fault first, and memory stays flat.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::support::{TestEnv, eventually, free_port, kill9};

/// Runs `debug-pack` (with `vars`), asserts success, and unpacks the bundle with the system's `tar`; returns the
/// bundle's path and its unpacked top directory.
fn pack(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> (PathBuf, PathBuf) {
    let mut all = vec!["debug-pack"];
    all.extend_from_slice(args);
    let run = env.envctl_with(vars, &all);
    run.ok();
    let bundle = PathBuf::from(run.stdout.trim());
    assert!(bundle.is_file(), "the printed path is the bundle: {}", run.stdout);
    let out = env.home.join(format!("unpacked-{}", bundle.file_name().expect("name").to_string_lossy()));
    std::fs::create_dir_all(&out).expect("mkdir");
    let tar =
        std::process::Command::new("tar").arg("xzf").arg(&bundle).arg("-C").arg(&out).output().expect("tar");
    assert!(tar.status.success(), "tar: {}", String::from_utf8_lossy(&tar.stderr));
    let top =
        std::fs::read_dir(&out).expect("unpacked").next().expect("a top directory").expect("entry").path();
    (bundle, top)
}

/// Every file under `dir`, by its path relative to `dir`.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").map(|e| e.expect("entry").path()) {
            if entry.is_dir() {
                stack.push(entry);
            } else {
                let rel = entry.strip_prefix(dir).expect("under").to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&entry).expect("read"));
            }
        }
    }
    out
}

fn report(env: &TestEnv, vars: &[(&str, &str)]) -> serde_json::Value {
    let run = env.envctl_with(vars, &["debug-report", "--json"]);
    run.ok();
    run.json()
}

fn first_kind(report: &serde_json::Value) -> &str {
    report["findings"][0]["kind"].as_str().unwrap_or_else(|| panic!("no finding: {report:#}"))
}

/// The scope directory of the only repository of `env`.
fn scope(env: &TestEnv) -> PathBuf {
    let scopes = env.runtime.join("scopes");
    std::fs::read_dir(&scopes).expect("scopes").next().expect("one scope").expect("entry").path()
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJwbGFudGVkLXVzZXIiLCJpYXQiOjE1MTYyMzkwMjJ9.cGxhbnRlZF9zaWduYXR1cmVfMDEyMzQ1Njc4OQ";

#[test]
#[allow(clippy::too_many_lines)]
fn a_bundle_keeps_none_of_twenty_planted_secrets_and_counts_each_rule() {
    use envctl_engine::jobs::{EmbeddedStore, Finish, JobStore as _, NewJob};
    let env = TestEnv::new();
    let broker = free_port();
    // (kind, the secret part that must not be found)
    let planted: Vec<(&str, String)> = vec![
        ("env password", "pw-Envfile-9f8e7d".into()),
        ("env url userinfo", "urlpass-77aa".into()),
        ("env cookie", "cookie-val-123456".into()),
        ("shell token", "shelltok-abcdef123".into()),
        ("shell aws secret", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()),
        ("aws access key", "IOSFODNN7PLANTED".into()),
        ("github token", "PlantedGithubToken0123456789abcdefghij".into()),
        ("gitlab token", "PlantedGitlab_0123456789".into()),
        ("slack token", "123456789012-PlantedSlack".into()),
        ("stripe key", "PlantedStripe0123456789ab".into()),
        ("google api key", "SyPlanted_Google-0123456789abcdefghijk".into()),
        ("npm token", "PlantedNpm0123456789abcdefghijklmnopqr".into()),
        ("jwt", JWT.into()),
        ("pem private key", "MIIEplantedPrivateKeyBody0123456789".into()),
        ("authorization header", "dXNlcjpwbGFudGVkcGFzcw==".into()),
        ("bearer token", "plantedbearer0123456789".into()),
        ("requirement url", "reqpass-31337".into()),
        ("job payload", "payloadkey-998877".into()),
        ("job result", "resulttoken-445566".into()),
        ("job error url", "errpass-8080".into()),
        ("job log slack webhook", "T000PLANT/B000PLANT/PlantedWebhookSecret01".into()),
        ("job log password", "joblogpw-2121".into()),
    ];
    assert!(planted.len() >= 20);
    env.write(
        "emit.sh",
        &[
            "echo \"inherited SHELL_API_TOKEN=$SHELL_API_TOKEN\"".to_owned(),
            "echo \"aws secret is $AWS_SECRET_ACCESS_KEY\"".to_owned(),
            "echo \"using db password $DB_PASSWORD\"".to_owned(),
            "echo 'line 1: AKIAIOSFODNN7PLANTED'".to_owned(),
            "echo 'line 2: ghp_PlantedGithubToken0123456789abcdefghij'".to_owned(),
            "echo 'line 3: glpat-PlantedGitlab_0123456789'".to_owned(),
            "echo 'line 4: xoxb-123456789012-PlantedSlack'".to_owned(),
            "echo 'line 5: sk_live_PlantedStripe0123456789ab'".to_owned(),
            "echo 'line 6: AIzaSyPlanted_Google-0123456789abcdefghijk'".to_owned(),
            "echo 'line 7: npm_PlantedNpm0123456789abcdefghijklmnopqr'".to_owned(),
            format!("echo 'line 8: {JWT}'"),
            "echo '-----BEGIN RSA PRIVATE KEY-----'".to_owned(),
            "echo 'MIIEplantedPrivateKeyBody0123456789'".to_owned(),
            "echo '-----END RSA PRIVATE KEY-----'".to_owned(),
            "echo 'line 9: Authorization: Basic dXNlcjpwbGFudGVkcGFzcw=='".to_owned(),
            "echo 'line 10: called with Bearer plantedbearer0123456789'".to_owned(),
            "exec sleep 1000".to_owned(),
        ]
        .join("\n"),
    );
    env.write(
        ".envctl",
        &format!(
            r#"[services.web]
command = "sh emit.sh"
depends_on = ["broker"]
env = {{ DB_PASSWORD = "pw-Envfile-9f8e7d", DATABASE_URL = "postgres://app:urlpass-77aa@127.0.0.1:5999/app", SESSION_COOKIE = "cookie-val-123456", MODE = "dev" }}

[requirements.broker]
adapter = "command"
command = "sh -c 'echo upstream $UPSTREAM_URL; exec sleep 1000'"
port = {broker}
ready = {{ exec = "true" }}
env = {{ UPSTREAM_URL = "amqp://guest:reqpass-31337@127.0.0.1:5672/" }}
"#
        ),
    );
    let shell = [
        ("SHELL_API_TOKEN", "shelltok-abcdef123"),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ];
    env.envctl_with(&shell, &["start"]).ok();
    let web_log = || {
        let state = env.state();
        let services = state["services"].as_array().cloned().unwrap_or_default();
        services
            .iter()
            .find(|s| s["service"] == "web")
            .and_then(|s| s["log_path"].as_str().map(PathBuf::from))
    };
    let log = web_log().expect("web's log");
    assert!(
        eventually(10, || std::fs::read_to_string(&log).unwrap_or_default().contains("line 10")),
        "the service wrote its lines"
    );
    // Job payloads, results, errors and logs, through the real embedded store of this scope.
    env.envctl(&["jobs", "stats"]).ok();
    let store = EmbeddedStore::open(&scope(&env).join("jobs.sqlite3")).expect("store");
    let new = |payload: serde_json::Value| NewJob {
        job_type: "noop".into(),
        target: None,
        payload,
        priority: envctl_contracts::config::Priority::Normal,
        max_attempts: 1,
        delay: None,
        input: None,
        after: Vec::new(),
    };
    let ids = store
        .enqueue(&[
            new(serde_json::json!({"api_key": "payloadkey-998877", "note": "plain"})),
            new(serde_json::json!({"note": "second"})),
        ])
        .expect("enqueue");
    let claimed = store.claim("test-worker", &[], 2, std::time::Duration::from_secs(60)).expect("claim");
    assert_eq!(claimed.len(), 2);
    store
        .log(
            &ids[0],
            &[
                "posting to https://hooks.slack.com/services/T000PLANT/B000PLANT/PlantedWebhookSecret01"
                    .into(),
                "retrying with password=joblogpw-2121".into(),
            ],
        )
        .expect("log");
    let results = [
        (ids[0].clone(), Finish::Succeeded(serde_json::json!({"session_token": "resulttoken-445566"}))),
        (
            ids[1].clone(),
            Finish::Failed {
                error: "cannot reach mysql://root:errpass-8080@db:3306/app".into(),
                retry: false,
            },
        ),
    ];
    assert_eq!(store.finish("test-worker", &results).expect("finish"), 2);

    let (bundle, top) = pack(&env, &shell, &[]);
    assert_eq!(std::fs::metadata(&bundle).expect("meta").permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(bundle.parent().expect("dir")).expect("meta").permissions().mode() & 0o777,
        0o700
    );
    let all = files(&top);
    for name in ["config.json", "latest/run_state.json", "latest/events.jsonl", "doctor.json", "facts.json"] {
        assert!(all.contains_key(name), "{name} is in the bundle: {:?}", all.keys());
    }
    assert!(
        all.contains_key("logs/main.web.log") && all.contains_key("logs/main.broker.log"),
        "{:?}",
        all.keys()
    );
    assert_eq!(all.keys().filter(|k| k.starts_with("jobs/")).count(), 2, "{:?}", all.keys());
    for (kind, secret) in &planted {
        for (name, bytes) in &all {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains(secret.as_str()), "{kind} `{secret}` leaked into {name}:\n{text}");
        }
    }
    let web = String::from_utf8_lossy(&all["logs/main.web.log"]).into_owned();
    assert!(web.contains("line 10: called with Bearer <redacted>"), "names and structure stay: {web}");
    assert!(web.contains("SHELL_API_TOKEN=<redacted>"), "{web}");
    let config = String::from_utf8_lossy(&all["config.json"]).into_owned();
    assert!(
        config.contains("\"DB_PASSWORD\": \"<redacted>\"") && config.contains("\"MODE\": \"dev\""),
        "{config}"
    );

    // Each token shape was planted once, where it appears once (a log line): its rule counts exactly that; the
    // name- and URL-based rules see their values in several files (config, state, logs), at least once each.
    let manifest: serde_json::Value = serde_json::from_slice(&all["manifest.json"]).expect("manifest");
    let rules = &manifest["redaction"]["rules"];
    let count = |rule: &str| rules[rule].as_u64().unwrap_or_else(|| panic!("no rule {rule}: {rules}"));
    for rule in [
        "aws_access_key",
        "github_token",
        "gitlab_token",
        "slack_token",
        "stripe_key",
        "google_api_key",
        "npm_token",
        "jwt",
        "pem_private_key",
        "authorization_header",
        "bearer_token",
        "slack_webhook",
    ] {
        assert_eq!(count(rule), 1, "{rule} replaced what was planted once: {rules}");
    }
    // secret_key: DB_PASSWORD, SESSION_COOKIE (env), SHELL_API_TOKEN (log), api_key (payload), session_token
    // (result), password= (job log); url_userinfo: the env's, the requirement's and the job error's URLs;
    // known_value: the raw values the service printed ($DB_PASSWORD, $AWS_SECRET_ACCESS_KEY).
    assert!(count("secret_key") >= 6, "{rules}");
    assert!(count("url_userinfo") >= 3, "{rules}");
    assert!(count("known_value") >= 2, "{rules}");
    let sum: u64 = rules.as_object().expect("rules").values().filter_map(serde_json::Value::as_u64).sum();
    assert_eq!(manifest["redaction"]["total"].as_u64(), Some(sum));

    // A legacy (KEY=VALUE) configuration's secrets stay out too.
    let legacy = TestEnv::new();
    std::fs::create_dir_all(legacy.repo.join("api")).expect("mkdir");
    legacy.write(
        ".envctl",
        "# >>> envctl managed startup config >>>\nexport ENVCTL_BACKEND_START_CMD=\"sleep 1000\"\nBACKEND_DIR=api\nMAIN_FRONTEND_ENABLE=false\nTREES_FRONTEND_ENABLE=false\n# <<< envctl managed startup config <<<\n# >>> envctl backend launch env >>>\nLEGACY_SECRET_KEY=legacy-secret-4242\nLEGACY_DSN=mysql://root:legacydsnpw-11@127.0.0.1:3306/app\n# <<< envctl backend launch env <<<\n",
    );
    assert_eq!(legacy.envctl(&["show-config", "--json"]).ok().json()["format"], "legacy");
    let (_, top) = pack(&legacy, &[], &[]);
    for (name, bytes) in files(&top) {
        let text = String::from_utf8_lossy(&bytes);
        for secret in ["legacy-secret-4242", "legacydsnpw-11"] {
            assert!(!text.contains(secret), "legacy `{secret}` leaked into {name}:\n{text}");
        }
    }
}

/// The schema a bundle file is checked against.
fn schema_of(path: &str) -> Option<&str> {
    let stem = path.rsplit('/').next()?.strip_suffix(".json")?;
    Some(match path {
        "manifest.json" => "bundle_manifest",
        "facts.json" => "bundle_facts",
        "doctor.json" => "runtime_readiness_report",
        "config.json" => "config_report",
        p if p.starts_with("jobs/") => "bundle_job",
        _ => stem,
    })
}

#[test]
fn every_file_matches_its_manifest_and_every_artifact_its_schema() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        &format!(
            "[services.web]\ncommand = \"python3 -m http.server $PORT --bind 127.0.0.1\"\nport = {}\n",
            free_port()
        ),
    );
    env.envctl(&["start"]).ok();
    env.envctl(&["jobs", "enqueue", "noop", "--count", "2"]).ok();
    env.envctl(&["doctor", "--no-canary"]);
    let (_, top) = pack(&env, &[], &["--log-bytes", "4096"]);
    let all = files(&top);
    let manifest: serde_json::Value = serde_json::from_slice(&all["manifest.json"]).expect("manifest");
    let listed: BTreeMap<String, (u64, String)> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let path = f["path"].as_str().expect("path").to_owned();
            (path, (f["size"].as_u64().expect("size"), f["sha256"].as_str().expect("sha").to_owned()))
        })
        .collect();
    let on_disk: Vec<&String> = all.keys().filter(|k| *k != "manifest.json").collect();
    assert_eq!(on_disk, listed.keys().collect::<Vec<_>>(), "the manifest lists every file, and only those");
    for (path, (size, sha)) in &listed {
        let bytes = &all[path];
        assert_eq!(bytes.len() as u64, *size, "{path}'s size");
        assert_eq!(&envctl_engine::state::sha256_hex(bytes), sha, "{path}'s sha256");
    }
    assert_eq!(manifest["targets"], serde_json::json!(["main"]));
    assert!(manifest["run_id"].as_str().is_some_and(|r| r.starts_with("run-")), "{manifest}");
    let mut checked = 0;
    for (path, bytes) in &all {
        if path.ends_with("events.jsonl") {
            for line in String::from_utf8_lossy(bytes).lines() {
                envctl_engine::doctor::validate_artifact("event", line.as_bytes())
                    .unwrap_or_else(|e| panic!("{path}: {e}: {line}"));
            }
        } else if let Some(stem) = schema_of(path) {
            envctl_engine::doctor::validate_artifact(stem, bytes)
                .unwrap_or_else(|e| panic!("{path} ({stem}): {e}"));
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} JSON files checked: {:?}", all.keys());
    let report = env.envctl(&["debug-report", "--latest", "--json"]);
    report.ok();
    envctl_engine::doctor::validate_artifact("debug_report", report.stdout.as_bytes())
        .expect("debug_report schema");
    let timeline = report.json()["timeline"].as_array().cloned().unwrap_or_default();
    assert!(
        timeline.iter().any(|e| e["event"] == "service.ready" && e["subject"] == "main/web"),
        "{timeline:?}"
    );
}

#[test]
fn a_foreign_listener_on_a_service_port_is_the_first_finding() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(
        ".envctl",
        &format!(
            "[services.web]\ncommand = \"python3 -m http.server $PORT --bind 127.0.0.1\"\nport = {port}\n"
        ),
    );
    env.envctl(&["start"]).ok();
    env.envctl(&["stop"]).ok();
    let foreign = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the port");
    let report = report(&env, &[]);
    assert_eq!(first_kind(&report), "port_conflict", "{report:#}");
    let title = report["findings"][0]["title"].as_str().expect("title");
    assert!(title.contains(&port.to_string()) && title.contains(&std::process::id().to_string()), "{title}");
    drop(foreign);
}

#[test]
fn a_service_exiting_at_once_under_restart_always_is_a_crash_loop_first() {
    let env = TestEnv::new();
    env.write("crash.sh", "echo 'fatal: cannot read config/app.yml' >&2\nsleep 0.05\nexit 3\n");
    env.write(".envctl", "[services.api]\ncommand = \"sh crash.sh\"\nrestart = \"always\"\n");
    env.envctl(&["start"]);
    assert!(
        eventually(30, || env.state()["services"][0]["restarts"].as_u64().unwrap_or(0) >= 3),
        "{}",
        env.state()
    );
    let report = report(&env, &[]);
    assert_eq!(first_kind(&report), "crash_loop", "{report:#}");
    let evidence = report["findings"][0]["evidence"].to_string();
    assert!(evidence.contains("fatal: cannot read config/app.yml"), "the last error lines: {evidence}");
}

#[test]
fn a_missing_requirement_binary_is_the_first_finding() {
    let env = TestEnv::new();
    env.write(".envctl", &format!("[requirements.redis]\nport = {}\n", free_port()));
    let bin = env.home.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let git =
        envctl_engine::requirements::find_binary("git", Some("/usr/local/bin:/usr/bin:/bin")).expect("git");
    std::os::unix::fs::symlink(git, bin.join("git")).expect("symlink git");
    let path = [("PATH", bin.to_str().expect("path"))];
    env.envctl_with(&path, &["start"]).fails();
    let report = report(&env, &path);
    assert_eq!(first_kind(&report), "missing_binary", "{report:#}");
    let finding = &report["findings"][0];
    assert!(finding["title"].as_str().is_some_and(|t| t.contains("redis-server")), "{finding}");
    assert!(finding["fix"].as_str().is_some_and(|f| f.contains("apt-get install redis-server")), "{finding}");
}

#[test]
fn a_worker_killed_with_leased_jobs_is_named_stuck_jobs_first() {
    let env = TestEnv::new();
    env.write(".envctl", "[jobs]\nlease_secs = 60\n");
    let payload = serde_json::json!({ "command": "sleep 60" }).to_string();
    env.envctl(&["jobs", "enqueue", "command.exec", "--payload", &payload, "--count", "2"]).ok();
    let mut worker = env.spawn_envctl(&["worker", "--concurrency", "2"]);
    let running = || env.envctl(&["jobs", "stats", "--json"]).json()["running"] == 2;
    assert!(eventually(20, running), "the worker leases both");
    kill9(worker.id());
    worker.wait().expect("reap");
    let report = report(&env, &[]);
    assert_eq!(first_kind(&report), "stuck_jobs", "{report:#}");
    assert!(report["findings"][0]["title"].as_str().is_some_and(|t| t.contains("2 job(s)")), "{report:#}");
}

#[test]
fn a_200_mib_log_goes_in_as_its_last_mib_with_flat_memory() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.big]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let state = env.state();
    let log = PathBuf::from(state["services"][0]["log_path"].as_str().expect("log path"));
    // The host rotates large logs; without it the log grows as a busy service's would.
    kill9(u32::try_from(state["host"]["pid"].as_u64().expect("host")).expect("pid"));
    {
        let mut file =
            std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(&log).expect("log"));
        let line = "2026-01-01T00:00:00Z INFO request handled path=/api/items status=200 took=3ms\n";
        let mut written = 0;
        let mut n = 0u64;
        while written < 200 * 1024 * 1024 {
            n += 1;
            let text = format!("{n:09} {line}");
            file.write_all(text.as_bytes()).expect("write");
            written += text.len();
        }
        file.write_all(b"the very last line\n").expect("write");
    }
    assert!(std::fs::metadata(&log).expect("meta").len() > 200 * 1024 * 1024);
    // Peak RSS of debug-pack alone: a fresh python3 runs it as its only child and asks getrusage after it exited.
    let measure = "import resource, subprocess, sys\nr = subprocess.run(sys.argv[1:], capture_output=True, text=True)\nprint(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.stdout.strip())";
    let output = env
        .sandboxed("python3", &env.repo)
        .args(["-c", measure, env!("CARGO_BIN_EXE_envctl"), "debug-pack"])
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut fields = out.split_whitespace();
    let (code, kib, bundle) = (fields.next(), fields.next(), fields.next());
    assert_eq!(code, Some("0"), "{out} {}", String::from_utf8_lossy(&output.stderr));
    let kib: u64 = kib.expect("rss").parse().expect("kib");
    assert!(kib < 30 * 1024, "peak RSS {kib} KiB with a 200 MiB log (budget 30 MiB)");
    let out = env.home.join("big");
    std::fs::create_dir_all(&out).expect("mkdir");
    let tar = std::process::Command::new("tar")
        .arg("xzf")
        .arg(bundle.expect("path"))
        .arg("-C")
        .arg(&out)
        .status()
        .expect("tar");
    assert!(tar.success());
    let top = std::fs::read_dir(&out).expect("dir").next().expect("top").expect("entry").path();
    let bundled = std::fs::read_to_string(top.join("logs/main.big.log")).expect("bundled log");
    assert!(bundled.len() <= 1024 * 1024 && bundled.len() > 1000 * 1024, "{} bytes", bundled.len());
    assert!(bundled.ends_with("the very last line\n"), "the end of the log");
    assert!(bundled.lines().next().is_some_and(|l| l.ends_with("took=3ms")), "starts at a whole line");
}

#[test]
fn debug_last_names_the_newest_bundle_and_bad_input_is_refused() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.s]\ncommand = \"sleep 1000\"\n");
    let none = env.envctl(&["debug-last"]);
    none.fails();
    assert!(none.stderr.contains("no debug bundle") && none.stderr.contains("debug-pack"), "{}", none.stderr);
    let unknown = env.envctl(&["debug-pack", "--run-id", "run-nope"]);
    unknown.fails();
    assert!(unknown.stderr.contains("run-nope"), "{}", unknown.stderr);
    let since = env.envctl(&["debug-pack", "--since", "soon"]);
    since.fails();
    assert!(since.stderr.contains("--since"), "{}", since.stderr);
    env.envctl(&["start"]).ok();
    let (first, _) = pack(&env, &[], &[]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (second, _) = pack(&env, &[], &[]);
    assert_ne!(first, second);
    let last = env.envctl(&["debug-last"]);
    last.ok();
    assert_eq!(last.stdout.lines().next(), Some(second.to_str().expect("path")), "{}", last.stdout);
    assert!(last.stdout.contains("top finding: none"), "{}", last.stdout);
    let bogus = env.write("not-a-bundle.tar.gz", "hello");
    let run = env.envctl(&["debug-report", bogus.to_str().expect("path")]);
    run.fails();
    assert!(run.stderr.contains("not-a-bundle.tar.gz"), "{}", run.stderr);
}

#[test]
fn a_bundle_holds_the_managed_job_server_but_never_its_password() {
    let env = TestEnv::new();
    env.write(".envctl", &format!("[jobs]\nbackend = \"redis\"\nport = {}\n", free_port()));
    env.envctl(&["jobs", "enqueue", "noop"]).ok();
    let scope = std::fs::read_dir(env.runtime.join("scopes"))
        .expect("scopes")
        .next()
        .expect("scope")
        .expect("e")
        .path();
    let password = std::fs::read_to_string(scope.join("secrets/repository.jobs.password")).expect("password");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scope.join("job_server.json")).expect("record")).expect("json");

    let (_, top) = pack(&env, &[], &[]);
    let all = files(&top);
    let server = all.get("latest/job_server.json").expect("the job server's record is in the bundle");
    envctl_engine::doctor::validate_artifact("job_server", server).expect("it matches its schema");
    assert!(all.contains_key("logs/jobs-server.log"), "its log too: {:?}", all.keys().collect::<Vec<_>>());
    let facts: serde_json::Value = serde_json::from_slice(&all["facts.json"]).expect("facts");
    let listed = facts["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .any(|p| p["owner"] == "jobs-server" && p["pid"] == record["pid"]);
    assert!(listed, "its process is in the process tree: {}", facts["processes"]);
    for (name, bytes) in &all {
        assert!(
            !String::from_utf8_lossy(bytes).contains(password.trim()),
            "the job server's password leaked into {name}"
        );
    }
}
