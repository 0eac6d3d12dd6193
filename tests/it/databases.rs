//! Each target's Postgres database against a real cluster: how a worktree's is copied from main's (even while
//! main's is in use), seeds with a service's placeholders and variables, seeds retried after a failure, and a
//! seed's time limit.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::support::{TestEnv, eventually, free_port, pg_of, sql};
use envctl_engine::requirements::pgwire;

/// `shop` with postgres (and `extra` in its section), redis, and `services` appended.
fn config(extra: &str, services: &str) -> String {
    format!(
        "[project]\nname = \"shop\"\n\n[requirements.postgres]\nport = {}\n{extra}\n[requirements.redis]\nport = {}\n\n{services}",
        free_port(),
        free_port()
    )
}

/// The `DATABASE_URL` a target's services get.
fn database_url(env: &TestEnv, target: &str) -> String {
    let flag = if target == "main" { vec!["--main"] } else { vec!["--tree", target] };
    let mut args = vec!["env", "--json"];
    args.extend(flag);
    let report = env.envctl(&args).ok().json();
    let services = report["services"].as_object().expect("services");
    let any = services.values().next().expect("a service");
    any["DATABASE_URL"].as_str().expect("DATABASE_URL").to_owned()
}

fn one(rows: &pgwire::Rows) -> String {
    rows[0][0].clone().unwrap_or_default()
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out
}

/// Whether nothing runs as `pid` any more (gone, or a zombie waiting to be reaped).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z')))
}

#[test]
fn a_worktree_database_is_copied_from_main_even_while_main_is_in_use() {
    let env = TestEnv::new();
    // `holder` keeps a session open on main's database for its whole life, as a running app would.
    let services = "[services.holder]\ncommand = \"psql \\\"$DATABASE_URL\\\" -c 'select pg_sleep(3600)'\"\ndepends_on = [\"postgres\"]\ntargets = \"main\"\n\n[services.api]\ncommand = \"sleep 1000\"\ndepends_on = [\"postgres\", \"redis\"]\n";
    env.write(".envctl", &config("", services));
    env.git(&["add", ".envctl"]);
    env.git(&["commit", "-q", "-m", "config"]);
    let first = env.envctl(&["start", "--main"]);
    assert!(first.ok().stderr.contains("main: database shop_main created empty in "), "{}", first.stderr);
    let main_db = database_url(&env, "main");
    sql(&main_db, "CREATE TABLE orders (id int primary key, item text); INSERT INTO orders SELECT g, 'kettle' FROM generate_series(1, 500) g")
        .expect("rows in main");
    let busy = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop_main' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()";
    assert!(eventually(10, || sql(&main_db, busy).is_ok_and(|r| one(&r) == "1")), "holder's session is open");
    env.envctl(&["worktree", "add", "feature-z"]).ok();
    let started = env.envctl(&["start", "--tree", "feature-z"]);
    started.ok();
    let note = started
        .stderr
        .lines()
        .find(|l| {
            l.starts_with(
                "feature-z: database shop_feature_z copied from shop_main with pg_dump/pg_restore in ",
            )
        })
        .unwrap_or_else(|| panic!("no copy note in:\n{}", started.stderr));
    assert!(note.ends_with(" s (main was in use)"), "{note}");
    let feat_db = database_url(&env, "feature-z");
    assert_eq!(one(&sql(&feat_db, "SELECT count(*) FROM orders").expect("copied table")), "500");
    assert_eq!(
        one(&sql(&feat_db, "SELECT count(*) FROM pg_indexes WHERE tablename = 'orders'").expect("index")),
        "1",
        "the primary key came along"
    );
    assert_eq!(one(&sql(&main_db, busy).expect("main's session")), "1", "main's session was not disturbed");
    // The copy is the worktree's own, and no dump is left behind.
    sql(&feat_db, "DELETE FROM orders").expect("delete in the worktree");
    assert_eq!(one(&sql(&main_db, "SELECT count(*) FROM orders").expect("main")), "500");
    assert!(files_ending(&env.runtime, ".dump").is_empty(), "dump directories are removed");
    // A database that exists is kept as it is on the next start, with nothing to say about it.
    env.envctl(&["stop", "--tree", "feature-z"]).ok();
    let again = env.envctl(&["start", "--tree", "feature-z"]);
    assert!(!again.ok().stderr.contains("database shop_feature_z"), "{}", again.stderr);
    assert_eq!(one(&sql(&feat_db, "SELECT count(*) FROM orders").expect("kept")), "0");
}

#[test]
fn a_worktree_database_is_cloned_by_template_when_main_is_idle() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        &config("", "[services.api]\ncommand = \"sleep 1000\"\ndepends_on = [\"postgres\"]\n"),
    );
    env.git(&["add", ".envctl"]);
    env.git(&["commit", "-q", "-m", "config"]);
    env.envctl(&["start", "--main"]).ok();
    sql(&database_url(&env, "main"), "CREATE TABLE t (id int); INSERT INTO t VALUES (1)").expect("main");
    env.envctl(&["worktree", "add", "feat"]).ok();
    let started = env.envctl(&["start", "--tree", "feat"]);
    assert!(
        started.ok().stderr.contains("feat: database shop_feat cloned from shop_main (template) in "),
        "{}",
        started.stderr
    );
    assert_eq!(one(&sql(&database_url(&env, "feat"), "SELECT count(*) FROM t").expect("cloned")), "1");
}

#[test]
fn a_seed_gets_placeholders_and_every_requirement_variable_of_its_target() {
    let env = TestEnv::new();
    env.write(
        "seed.sh",
        "set -e\npsql -h \"$1\" -p \"$DB_PORT\" -U \"$DB_USER\" -d \"$DB_NAME\" -v ON_ERROR_STOP=1 \\\n  -c \"CREATE TABLE seeded (db text, redis text, target text, port text)\" \\\n  -c \"INSERT INTO seeded VALUES (current_database(), '$REDIS_URL', '$ENVCTL_TARGET', '$2')\"\n",
    );
    let seed = "seed = \"sh seed.sh {postgres.host} {postgres.port}\"\n";
    env.write(
        ".envctl",
        &config(seed, "[services.api]\ncommand = \"sleep 1000\"\ndepends_on = [\"postgres\", \"redis\"]\n"),
    );
    let started = env.envctl(&["start"]);
    assert!(
        started.ok().stderr.contains("main: database shop_main created empty and seeded in "),
        "{}",
        started.stderr
    );
    let db = database_url(&env, "main");
    let rows = sql(&db, "SELECT db, redis, target, port FROM seeded").expect("seeded");
    let (port, _) = pg_of(&db);
    let report = env.envctl(&["env", "--main", "--json"]).ok().json();
    let redis = report["services"]["api"]["REDIS_URL"].as_str().expect("REDIS_URL").to_owned();
    let expected: Vec<Option<String>> =
        vec![Some("shop_main".into()), Some(redis), Some("main".into()), Some(port.to_string())];
    assert_eq!(rows, vec![expected]);
    let plan = env.envctl(&["explain-startup", "--json"]).ok().json();
    let planned = plan["targets"][0]["requirements"]
        .as_array()
        .expect("requirements")
        .iter()
        .find(|r| r["name"] == "postgres")
        .expect("postgres")["seed"]
        .clone();
    assert_eq!(planned, format!("sh seed.sh 127.0.0.1 {port}").as_str(), "the plan shows the filled-in seed");
}

#[test]
fn a_placeholder_naming_nothing_in_a_seed_or_requirement_command_is_refused_with_its_line() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[requirements.postgres]\nseed = \"psql {nope.url}\"\n\n[requirements.mail]\nadapter = \"command\"\ncommand = \"mailer --relay {relay.port}\"\nport = 1025\n",
    );
    for args in [&["show-config"][..], &["start"][..]] {
        let run = env.envctl(args);
        run.fails();
        assert!(
            run.stderr.contains(".envctl:2:8: requirements.postgres.seed: `{nope.url}` names `nope`, which is not a service or requirement (known: mail, postgres)"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(".envctl:6:11: requirements.mail.command: `{relay.port}` names `relay`"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_failed_seed_is_dropped_and_run_again_on_the_next_start() {
    let env = TestEnv::new();
    // The table is made before the check, so a database kept from the failed seed would have it, empty.
    env.write(
        "seed.sh",
        "psql \"$DATABASE_URL\" -q -c 'CREATE TABLE products (name text)' || exit 1\nif [ ! -f ready.flag ]; then echo 'seed: ready.flag is missing' >&2; exit 3; fi\npsql \"$DATABASE_URL\" -q -c \"INSERT INTO products VALUES ('kettle'), ('mug')\"\n",
    );
    env.write(
        ".envctl",
        &config(
            "seed = \"sh seed.sh\"\n",
            "[services.api]\ncommand = \"sleep 1000\"\ndepends_on = [\"postgres\"]\n",
        ),
    );
    let failed = env.envctl(&["start"]);
    failed.fails();
    assert!(
        failed
            .stderr
            .contains("main/postgres failed: seed `sh seed.sh` of database shop_main: exited with code 3"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("  seed: ready.flag is missing"),
        "the seed's last lines: {}",
        failed.stderr
    );
    env.write("ready.flag", "");
    let started = env.envctl(&["start"]);
    assert!(
        started.ok().stderr.contains(
            "main: database shop_main: its last seed did not finish; recreated it and seeded again"
        ),
        "{}",
        started.stderr
    );
    let db = database_url(&env, "main");
    assert_eq!(one(&sql(&db, "SELECT count(*) FROM products").expect("seeded")), "2");
    let comment =
        sql(&db, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'shop_main'")
            .expect("comment");
    assert_eq!(comment, vec![vec![None]], "a finished database carries no mark");
}

#[test]
fn a_seed_that_hangs_is_stopped_at_its_timeout_with_its_last_lines() {
    let env = TestEnv::new();
    env.write("seed.sh", "echo 'loading products'\nsleep 600 &\necho $! > seed.pid\nwait\n");
    env.write(
        ".envctl",
        &config(
            "seed = \"sh seed.sh\"\nseed_timeout = \"2s\"\n",
            "[services.api]\ncommand = \"sleep 1000\"\ndepends_on = [\"postgres\"]\n",
        ),
    );
    let began = std::time::Instant::now();
    let run = env.envctl(&["start"]);
    run.fails();
    assert!(began.elapsed() < std::time::Duration::from_secs(30), "took {:?}", began.elapsed());
    assert!(run.stderr.contains("seed of shop_main timed out after 2 s"), "{}", run.stderr);
    assert!(run.stderr.contains("  loading products"), "its last log lines: {}", run.stderr);
    assert!(
        run.stderr.contains("main/postgres-seed | loading products"),
        "shown while it ran: {}",
        run.stderr
    );
    let pid: u32 = env.read("seed.pid").trim().parse().expect("pid");
    assert!(eventually(10, || gone(pid)), "what the seed started was killed with it");
    let logs = files_ending(&env.runtime, ".log");
    let log = logs.iter().find(|p| p.to_string_lossy().contains("main.postgres-seed.")).expect("seed log");
    let mode = std::fs::metadata(log).expect("log").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", log.display());
    let show = env.envctl(&["show-config", "--json"]).ok().json();
    assert_eq!(show["config"]["requirements"]["postgres"]["seed_timeout_secs"], 2);
}

#[test]
fn a_copy_that_fails_fails_the_start_naming_the_tool_and_leaves_no_database() {
    let env = TestEnv::new();
    // `migrator` holds a table of main's locked, as a migration half-way would: pg_dump cannot read it.
    let services = "[services.migrator]\ncommand = \"psql \\\"$DATABASE_URL\\\" -c 'BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3600);'\"\ndepends_on = [\"postgres\"]\ntargets = \"main\"\n";
    env.write(".envctl", &config("", services));
    env.git(&["add", ".envctl"]);
    env.git(&["commit", "-q", "-m", "config"]);
    env.envctl(&["start", "--main", "--deps-only"]).ok();
    let main_db = database_url(&env, "main");
    sql(&main_db, "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)").expect("rows in main");
    env.envctl(&["start", "--main"]).ok();
    let locked = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'orders' AND l.mode = 'AccessExclusiveLock' AND l.granted";
    assert!(eventually(10, || sql(&main_db, locked).is_ok_and(|r| one(&r) == "1")), "the table is locked");
    env.envctl(&["worktree", "add", "feat"]).ok();
    let run = env.envctl(&["start", "--tree", "feat"]);
    run.fails();
    assert!(
        run.stderr.contains(
            "feat/postgres failed: cannot copy database shop_main into shop_feat: pg_dump failed: "
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("LOCK TABLE public.orders"), "the tool's own words: {}", run.stderr);
    let left = sql(&main_db, "SELECT 1 FROM pg_database WHERE datname = 'shop_feat'").expect("query");
    assert!(left.is_empty(), "no half-made database is left");
    // Once main's database is free again, the worktree's is a plain clone.
    env.envctl(&["stop", "--main", "--service", "migrator"]).ok();
    // Postgres notices a vanished client only when its statement ends: end the session as a user would.
    let end = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'shop_main' AND pid <> pg_backend_pid()";
    sql(&main_db, end).expect("end the session");
    let others =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop_main' AND pid <> pg_backend_pid()";
    assert!(
        eventually(10, || sql(&main_db, others).is_ok_and(|r| one(&r) == "0")),
        "main's database is free"
    );
    let started = env.envctl(&["start", "--tree", "feat"]);
    assert!(
        started.ok().stderr.contains("database shop_feat cloned from shop_main (template)"),
        "{}",
        started.stderr
    );
    let feat_db = main_db.replace("/shop_main", "/shop_feat");
    assert_eq!(one(&sql(&feat_db, "SELECT count(*) FROM orders").expect("copied")), "1");
}
