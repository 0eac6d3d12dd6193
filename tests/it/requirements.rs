//! Requirements against the real servers: native Postgres (initdb / postgres) and redis-server.

use crate::support::{TestEnv, alive, block_on, eventually, free_port, kill9, pg_of, sql};
use envctl_engine::requirements::redis;

fn config(pg: u16, redis: u16, extra: &str) -> String {
    format!(
        "[project]\nname = \"shop\"\n\n[services.api]\ncommand = \"sleep 1000\"\ndepends_on = [\"postgres\", \"redis\"]\n\n[requirements.postgres]\nport = {pg}\n{extra}\n[requirements.redis]\nport = {redis}\n"
    )
}

/// (port, index, password) of a `redis://:<password>@127.0.0.1:<port>/<index>` URL.
fn redis_of(url: &str) -> (u16, String, Option<String>) {
    let rest = url.trim_start_matches("redis://");
    let (password, rest) = match rest.split_once('@') {
        Some((auth, rest)) => (Some(auth.trim_start_matches(':').to_owned()), rest),
        None => (None, rest),
    };
    let (host_port, index) = rest.split_once('/').expect("index");
    (host_port.rsplit(':').next().expect("port").parse().expect("port"), index.to_owned(), password)
}

fn env_of(env: &TestEnv, target: &str) -> serde_json::Value {
    let flag = if target == "main" { vec!["--main"] } else { vec!["--tree", target] };
    let mut args = vec!["env", "--service", "api", "--json"];
    args.extend(flag);
    env.envctl(&args).ok().json()["services"]["api"].clone()
}

#[test]
fn main_and_a_worktree_get_their_own_database_and_redis() {
    let env = TestEnv::new();
    env.write(".envctl", &config(free_port(), free_port(), ""));
    env.git(&["add", ".envctl"]);
    env.git(&["commit", "-q", "-m", "config"]);
    env.envctl(&["start", "--main"]).ok();
    let main = env_of(&env, "main");
    let main_db = main["DATABASE_URL"].as_str().expect("url").to_owned();
    sql(&main_db, "CREATE TABLE before_clone (id int); INSERT INTO before_clone VALUES (7)")
        .expect("create in main");
    env.envctl(&["worktree", "add", "feat"]).ok();
    let started = env.envctl(&["start", "--tree", "feat"]);
    started.ok();
    let feat = env_of(&env, "feat");
    let feat_db = feat["DATABASE_URL"].as_str().expect("url").to_owned();
    assert_ne!(main_db, feat_db);
    // start, endpoints and health show the worktree's own database URL, not only `env`.
    assert!(started.stdout.contains(&feat_db), "{}", started.stdout);
    let endpoints = env.envctl(&["endpoints", "--json"]).json();
    assert_eq!(endpoints["requirements"]["feat"]["postgres"], feat_db.as_str(), "{endpoints}");
    let health = env.envctl(&["health"]);
    assert!(health.stdout.contains(&format!("feat requirement postgres: {feat_db}")), "{}", health.stdout);
    assert_ne!(main["REDIS_URL"], feat["REDIS_URL"]);
    // The worktree's database started as a copy of main's…
    assert_eq!(
        sql(&feat_db, "SELECT id FROM before_clone").expect("cloned table"),
        vec![vec![Some("7".to_owned())]]
    );
    // …and is its own from then on.
    sql(&main_db, "CREATE TABLE only_main (id int)").expect("create in main");
    let err = sql(&feat_db, "SELECT * FROM only_main").expect_err("absent in the worktree");
    assert!(err.contains("does not exist"), "{err}");
    let (main_redis, _, main_pw) = redis_of(main["REDIS_URL"].as_str().expect("url"));
    let (feat_redis, _, feat_pw) = redis_of(feat["REDIS_URL"].as_str().expect("url"));
    assert_ne!(main_pw, feat_pw, "each server its own password");
    let set = block_on(redis::commands(main_redis, main_pw.as_deref(), &["SET shared-key 1"]));
    assert_eq!(set.expect("set"), vec!["+OK"]);
    let get = block_on(redis::commands(feat_redis, feat_pw.as_deref(), &["GET shared-key"]));
    assert_eq!(get.expect("get"), vec!["$-1"]);
    // Health covers the requirements too.
    let health = env.envctl(&["health", "--json"]).ok().json();
    let names: Vec<String> = health["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| format!("{}/{}", s["target"].as_str().unwrap_or(""), s["service"].as_str().unwrap_or("")))
        .collect();
    for expected in ["main/postgres", "main/redis", "feat/redis", "main/api", "feat/api"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    // Stopping the worktree keeps main's shared Postgres; removing it drops its database.
    env.envctl(&["stop", "--tree", "feat"]).ok();
    assert!(sql(&main_db, "SELECT 1").is_ok(), "main's Postgres still serves");
    let run = env.envctl(&["worktree", "remove", "feat"]);
    assert!(run.ok().stderr.contains("dropped database shop_feat"), "{}", run.stderr);
    let left = sql(&main_db, "SELECT 1 FROM pg_database WHERE datname = 'shop_feat'").expect("query");
    assert!(left.is_empty());
}

#[test]
fn a_killed_postmaster_comes_back_with_its_rows_on_resume() {
    let env = TestEnv::new();
    env.write(".envctl", &config(free_port(), free_port(), ""));
    env.envctl(&["start"]).ok();
    let db = env_of(&env, "main")["DATABASE_URL"].as_str().expect("url").to_owned();
    sql(&db, "CREATE TABLE kept (id int); INSERT INTO kept SELECT generate_series(1, 100)")
        .expect("write rows");
    let host = env.state()["host"]["pid"].as_u64().expect("host");
    kill9(host);
    let (postmaster, started) = env.pids()["main/postgres"];
    kill9(postmaster);
    assert!(eventually(10, || !alive(postmaster, started)));
    let run = env.envctl(&["resume"]);
    run.ok();
    assert!(run.stderr.contains("1 restarted") || run.stderr.contains("2 restarted"), "{}", run.stderr);
    assert_ne!(env.pids()["main/postgres"].0, postmaster);
    assert_eq!(sql(&db, "SELECT count(*) FROM kept").expect("rows"), vec![vec![Some("100".to_owned())]]);
}

#[test]
fn two_repositories_run_their_own_clusters_side_by_side() {
    let first = TestEnv::new();
    let second = first.sibling();
    let (pg, rd) = (free_port(), free_port());
    first.write(".envctl", &config(pg, rd, ""));
    second.write(".envctl", &config(pg, rd, ""));
    first.envctl(&["start"]).ok();
    second.envctl(&["start"]).ok();
    let a = env_of(&first, "main")["DATABASE_URL"].as_str().expect("url").to_owned();
    let b = env_of(&second, "main")["DATABASE_URL"].as_str().expect("url").to_owned();
    assert_ne!(pg_of(&a).0, pg_of(&b).0, "the second cluster moved to another port");
    sql(&a, "CREATE TABLE mine (id int)").expect("first cluster");
    assert!(sql(&b, "SELECT * FROM mine").is_err(), "a separate cluster");
}

#[test]
fn a_foreign_process_on_the_requirement_port_is_left_alone() {
    let foreign = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let taken = foreign.local_addr().expect("addr").port();
    let env = TestEnv::new();
    env.write(".envctl", &config(free_port(), taken, ""));
    env.envctl(&["start"]).ok();
    let (port, _, password) = redis_of(env_of(&env, "main")["REDIS_URL"].as_str().expect("url"));
    assert!(port > taken, "redis moved up from {taken} to {port}");
    assert_eq!(block_on(redis::commands(port, password.as_deref(), &["PING"])).expect("ping"), vec!["+PONG"]);
    std::net::TcpStream::connect(("127.0.0.1", taken)).expect("the foreign listener is untouched");
}

/// The local addresses of every listening TCP socket on `port`, as `/proc/net/tcp` and `/proc/net/tcp6` have them
/// (`127.0.0.1`, `0.0.0.0`, or an IPv6 address in hex).
fn listening_addresses(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else { continue };
            let Some((address, hex_port)) = local.split_once(':') else { continue };
            if *state != "0A" || u16::from_str_radix(hex_port, 16) != Ok(port) {
                continue;
            }
            out.push(match u32::from_str_radix(address, 16) {
                // IPv4 addresses are written in the kernel's (little-endian) byte order.
                Ok(v4) if address.len() == 8 => std::net::Ipv4Addr::from(v4.swap_bytes()).to_string(),
                _ => address.to_owned(),
            });
        }
    }
    out
}

#[test]
fn postgres_and_redis_listen_on_the_loopback_interface_only() {
    let env = TestEnv::new();
    env.write(".envctl", &config(free_port(), free_port(), ""));
    env.envctl(&["start"]).ok();
    let api = env_of(&env, "main");
    let (pg, _) = pg_of(api["DATABASE_URL"].as_str().expect("DATABASE_URL"));
    let (redis, _, _) = redis_of(api["REDIS_URL"].as_str().expect("REDIS_URL"));
    for (server, port) in [("postgres", pg), ("redis", redis)] {
        let addresses = listening_addresses(port);
        assert_eq!(addresses, ["127.0.0.1"], "{server} on port {port} listens on {addresses:?}");
    }
}

#[test]
fn a_failed_seed_keeps_only_the_last_50_lines_of_its_output_in_the_error_report() {
    let env = TestEnv::new();
    let seed = "seed = \"for i in $(seq 1 200); do echo seed-line-$i >&2; done; exit 4\"\n";
    env.write(".envctl", &config(free_port(), free_port(), seed));
    let run = env.envctl(&["start"]);
    run.fails();
    let scope = env.runtime.join("scopes").join(envctl_engine::config::scope_id(&env.repo));
    let text = std::fs::read_to_string(scope.join("error_report.json")).expect("error_report.json");
    let report: serde_json::Value = serde_json::from_str(&text).expect("json");
    let entry = &report["errors"][0];
    let tail: Vec<&str> =
        entry["log_tail"].as_array().expect("log_tail").iter().filter_map(|l| l.as_str()).collect();
    assert_eq!(tail.len(), 50, "{entry}");
    assert_eq!((tail[0], tail[49]), ("seed-line-151", "seed-line-200"), "{entry}");
    assert!(entry["log_path"].as_str().is_some_and(|p| p.contains("-seed.")), "{entry}");
    assert!(!text.contains("seed-line-150"), "the whole output was kept: {text}");
    assert!(!run.stderr.contains("seed-line-150"), "{}", run.stderr);
}

#[test]
fn a_seed_runs_once_when_the_database_is_created() {
    let env = TestEnv::new();
    env.write("seed.sql", "CREATE TABLE products (name text); INSERT INTO products VALUES ('kettle');\n");
    env.write(".envctl", &config(free_port(), free_port(), "seed = \"seed.sql\"\n"));
    env.envctl(&["start"]).ok();
    let db = env_of(&env, "main")["DATABASE_URL"].as_str().expect("url").to_owned();
    assert_eq!(sql(&db, "SELECT count(*) FROM products").expect("seeded"), vec![vec![Some("1".to_owned())]]);
    env.envctl(&["stop"]).ok();
    env.envctl(&["start"]).ok();
    assert_eq!(
        sql(&db, "SELECT count(*) FROM products").expect("kept, not seeded again"),
        vec![vec![Some("1".to_owned())]]
    );
}

#[test]
fn requirements_are_reused_while_healthy_and_stop_keeps_data() {
    let env = TestEnv::new();
    env.write(".envctl", &config(free_port(), free_port(), ""));
    env.envctl(&["start"]).ok();
    let before = env.pids();
    let db = env_of(&env, "main")["DATABASE_URL"].as_str().expect("url").to_owned();
    sql(&db, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)").expect("write");
    env.envctl(&["start"]).ok();
    assert_eq!(env.pids()["main/postgres"], before["main/postgres"], "reused, not restarted");
    env.envctl(&["stop"]).ok();
    assert!(eventually(10, || !alive(before["main/postgres"].0, before["main/postgres"].1)));
    env.envctl(&["start"]).ok();
    assert_eq!(sql(&db, "SELECT id FROM t").expect("data kept"), vec![vec![Some("1".to_owned())]]);
    env.envctl(&["stop-all", "--remove-data", "--yes"]).ok();
    env.envctl(&["start"]).ok();
    assert!(sql(&db, "SELECT id FROM t").is_err(), "--remove-data starts over");
}

#[test]
fn no_deps_and_deps_only_scope_the_start() {
    let env = TestEnv::new();
    env.write(".envctl", &config(free_port(), free_port(), ""));
    env.envctl(&["start", "--deps-only"]).ok();
    let names: Vec<String> = env.pids().into_keys().collect();
    assert_eq!(names, ["main/postgres", "main/redis"]);
    env.envctl(&["stop-all"]).ok();
    env.envctl(&["start", "--no-deps"]).ok();
    let names: Vec<String> = env.pids().into_keys().collect();
    assert_eq!(names, ["main/api"]);
}

#[test]
fn a_missing_binary_is_named_with_how_to_install_it() {
    let env = TestEnv::new();
    env.write(".envctl", "[requirements.redis]\n");
    let plan = env.envctl_with(&[("PATH", "/nonexistent")], &["explain-startup"]);
    assert!(
        plan.ok().stdout.contains(
            "needs `redis-server`, which is not installed; install it with `apt-get install redis-server`"
        ),
        "{}",
        plan.stdout
    );
    let run = env.envctl_with(&[("PATH", "/nonexistent")], &["start"]);
    run.fails();
    assert!(run.stderr.contains("apt-get install redis-server"), "{}", run.stderr);
}

#[test]
fn a_shared_server_outlives_stop_main_while_a_worktree_uses_it_even_after_a_new_host() {
    let env = TestEnv::new();
    env.write(".envctl", &config(free_port(), free_port(), ""));
    env.git(&["add", ".envctl"]);
    env.git(&["commit", "-q", "-m", "config"]);
    env.envctl(&["worktree", "add", "feat"]).ok();
    env.envctl(&["start", "--all"]).ok();
    let host = env.state()["host"]["pid"].as_u64().expect("host");
    kill9(host);
    env.envctl(&["resume"]).ok();
    env.envctl(&["stop", "--main"]).ok();
    let feat_db = env_of(&env, "feat")["DATABASE_URL"].as_str().expect("url").to_owned();
    assert!(sql(&feat_db, "SELECT 1").is_ok(), "the worktree's database still answers");
    let left: Vec<String> = env.pids().into_keys().collect();
    assert!(left.contains(&"main/postgres".to_owned()) && left.contains(&"feat/api".to_owned()), "{left:?}");
    assert!(!left.contains(&"main/api".to_owned()), "{left:?}");
}
