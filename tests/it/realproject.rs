//! `tests/fixtures/realproject` driven end to end as its user would: a Python backend holding a Postgres session
//! for its whole life, migrations, a seed, a suite whose teardown deletes every user, a front end that needs the
//! backend's URL, an env file and a setup step, on main and a worktree.

use std::io::{Read as _, Write as _};
use std::path::Path;

use crate::support::{TestEnv, alive, eventually, free_port};

/// Copies the fixture's files (dotfiles included) under `to`.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("fixture dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

/// The one value `query` returns in the database of `url`.
fn one(url: &str, query: &str) -> String {
    let rows = crate::support::sql(url, query).unwrap_or_else(|e| panic!("{query}: {e}"));
    rows[0][0].clone().unwrap_or_default()
}

/// One HTTP/1.0 request to `url` (`http://127.0.0.1:<port>/…`); returns (status, body).
fn http(method: &str, url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `env --service NAME --json`'s variables for `target` (`--main` or `--tree NAME`).
fn service_env(env: &TestEnv, target: &[&str], service: &str) -> serde_json::Value {
    let mut args = vec!["env", "--service", service, "--json"];
    args.extend(target);
    env.envctl(&args).ok().json()["services"][service].clone()
}

/// A fresh repository holding the fixture, committed, with ports of this run's own so parallel tests never meet.
fn fixture_repo() -> TestEnv {
    let env = TestEnv::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/realproject");
    copy_tree(&fixture, &env.repo);
    let config = env
        .read(".envctl")
        .replace("port = 18400", &format!("port = {}", free_port()))
        .replace("port = 18500", &format!("port = {}", free_port()))
        .replace("port = 18432", &format!("port = {}", free_port()));
    assert!(
        !["18400", "18500", "18432"].iter().any(|p| config.contains(p)),
        "every port rewritten:\n{config}"
    );
    env.write(".envctl", &config);
    env.git(&["add", "-A"]);
    env.git(&["commit", "-q", "-m", "realproject"]);
    env
}

#[test]
fn a_real_project_runs_main_and_a_worktree_migrates_tests_on_a_copy_and_stops_clean() {
    let env = fixture_repo();

    // main: setup, a database created empty and seeded, both services ready.
    let started = env.envctl(&["start", "--main"]);
    started.ok();
    assert!(
        started.stderr.contains("main/backend | installing from requirements.lock for main"),
        "{}",
        started.stderr
    );
    assert!(
        started.stderr.contains("main: database realproject_main created empty and seeded in "),
        "{}",
        started.stderr
    );
    let backend = service_env(&env, &["--main"], "backend");
    let db = backend["DATABASE_URL"].as_str().expect("DATABASE_URL").to_owned();
    assert!(db.ends_with("/realproject_main"), "envctl's DATABASE_URL wins over the .env file's: {db}");
    assert_eq!(backend["APP_NAME"], "realproject", "the project's env file is loaded");
    let api = format!("http://127.0.0.1:{}", backend["PORT"].as_str().expect("PORT"));
    assert_eq!(http("GET", &format!("{api}/users")), (200, r#"["ada", "grace"]"#.to_owned()), "seeded");

    // Migrations, then rows added through the backend's own session.
    let migrated = env.envctl(&["migrate", "--main"]);
    migrated.ok();
    assert!(
        migrated.stderr.contains("main/backend | migrated realproject_main to version 1"),
        "{}",
        migrated.stderr
    );
    for name in ["alan", "barbara", "edsger"] {
        assert_eq!(http("POST", &format!("{api}/users?name={name}")).0, 201, "{name}");
    }
    assert_eq!(one(&db, "SELECT count(*) FROM users"), "5");
    let held = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'realproject_main' AND application_name = 'psql' AND pid <> pg_backend_pid()";
    assert_eq!(one(&db, held), "1", "the backend holds its session open");

    // A worktree while main's backend holds its session: its database is a dump/restore copy of main's.
    env.envctl(&["worktree", "add", "feature-z"]).ok();
    let tree = env.envctl(&["start", "--tree", "feature-z"]);
    tree.ok();
    assert!(
        tree.stderr.contains(
            "feature-z: database realproject_feature_z copied from realproject_main with pg_dump/pg_restore in "
        ),
        "{}",
        tree.stderr
    );
    assert!(tree.stderr.contains("feature-z/backend | installing from requirements.lock"), "{}", tree.stderr);
    let tree_backend = service_env(&env, &["--tree", "feature-z"], "backend");
    let tree_db = tree_backend["DATABASE_URL"].as_str().expect("DATABASE_URL").to_owned();
    assert!(tree_db.ends_with("/realproject_feature_z"), "{tree_db}");
    assert_eq!(one(&tree_db, "SELECT count(*) FROM users"), "5", "main's rows, migrations included");
    assert_eq!(one(&tree_db, "SELECT max(version) FROM schema_migrations"), "1");
    let tree_api = format!("http://127.0.0.1:{}", tree_backend["PORT"].as_str().expect("PORT"));
    assert_ne!(tree_api, api);
    assert_eq!(http("GET", &format!("{tree_api}/health")).0, 200);

    // The destructive suite runs on a throwaway copy: it sees the rows, main's dev database keeps them.
    let tested = env.envctl(&["test", "--main"]);
    tested.ok();
    assert!(tested.stderr.contains("main/backend | suite on realproject_main_test_"), "{}", tested.stderr);
    assert!(tested.stderr.contains(": 5 users"), "the copy had main's rows: {}", tested.stderr);
    assert!(tested.stderr.contains("main/backend | teardown: 5 users deleted"), "{}", tested.stderr);
    assert_eq!(one(&db, "SELECT count(*) FROM users"), "5", "main's dev rows are kept");
    assert_eq!(http("GET", &format!("{api}/users")).1, r#"["ada", "grace", "alan", "barbara", "edsger"]"#);
    let copies = "SELECT count(*) FROM pg_database WHERE datname LIKE 'realproject_main_test_%'";
    assert_eq!(one(&db, copies), "0", "the throwaway copy is dropped");

    // The front end is pointed at this target's backend.
    let frontend = service_env(&env, &["--main"], "frontend");
    let endpoints = env.envctl(&["endpoints", "--json"]).ok().json();
    let backend_url =
        endpoints["targets"]["main"]["backend"]["url"].as_str().expect("backend's url").to_owned();
    assert_eq!(backend_url, api);
    assert_eq!(frontend["API_URL"].as_str(), Some(backend_url.as_str()));
    assert_eq!(
        service_env(&env, &["--tree", "feature-z"], "frontend")["API_URL"].as_str(),
        Some(tree_api.as_str()),
        "a worktree's front end calls its own backend"
    );
    env.envctl(&["health"]).ok();

    // stop-all leaves nothing of the repository running.
    let pids = env.pids();
    let names: Vec<&str> = pids.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["feature-z/backend", "feature-z/frontend", "main/backend", "main/frontend", "main/postgres"],
        "two services per target and the one Postgres server their databases live in"
    );
    assert!(pids.values().all(|&(pid, started)| alive(pid, started)));
    env.envctl(&["stop-all"]).ok();
    assert!(
        eventually(10, || pids.values().all(|&(pid, started)| !alive(pid, started))),
        "still running after stop-all: {pids:?}"
    );
    assert!(env.pids().values().all(|&(pid, started)| !alive(pid, started)), "{:?}", env.pids());
    // The host exits by itself once nothing runs.
    let dirs: [&Path; 2] = [&env.repo, &env.runtime];
    assert!(
        eventually(10, || processes_under(&dirs).is_empty()),
        "processes of the repository left after stop-all: {:?}",
        processes_under(&dirs)
    );
}

/// Live processes (pid, command line) whose working directory or command line is under one of `dirs`: the
/// services, their children (the backend's `psql`) and the requirement servers.
fn processes_under(dirs: &[&Path]) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat.rsplit(") ").next().is_none_or(|rest| rest.starts_with('Z')) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if dirs.iter().any(|d| cwd.starts_with(d) || cmdline.contains(&*d.to_string_lossy())) {
            found.push((pid, cmdline));
        }
    }
    found
}
