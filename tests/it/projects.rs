//! A real project's everyday steps: jobs run with the service's environment, env files, setup per checkout, a
//! host started by `resume` that runs jobs and follows a changed `.envctl`, suites that stop at their timeout and
//! show their output while they run.

use crate::support::{TestEnv, eventually, ids, job};

/// `NAME=value` lines of a file a test wrote, as a map.
fn vars_in(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

#[test]
fn a_test_job_runs_with_exactly_what_env_service_prints() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.api]\ncommand = \"sleep 1000\"\nport = 47310\ncwd = \"api\"\nenv = { APP_DB = \"db-for-{target}\", API_SELF = \"{api.url}\" }\ntest = \"env > ../seen.env\"\n",
    );
    env.write("api/.keep", "");
    env.envctl(&["test"]).ok();
    let seen = vars_in(&env.read("seen.env"));
    let printed = env.envctl(&["env", "--service", "api", "--json"]).ok().json();
    let expected = printed["services"]["api"].as_object().expect("api's variables");
    assert!(!expected.is_empty());
    for (key, value) in expected {
        assert_eq!(seen.get(key).map(String::as_str), value.as_str(), "{key} as `env --service` prints it");
    }
    assert_eq!(seen["APP_DB"], "db-for-main");
    assert!(seen["PWD"].ends_with("/api"), "runs in the service's cwd: {}", seen["PWD"]);
}

#[test]
fn env_files_load_in_order_under_the_service_env_and_show_their_source() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[project]\nenv_file = [\".env\"]\n\n[services.api]\ncommand = \"env > seen.env; sleep 1000\"\nport = 47320\nready = { exec = \"test -f seen.env\" }\nenv_file = [\"api.env\"]\nenv = { FROM_ENV = \"service\" }\n",
    );
    env.write(
        ".env",
        "# shared\nSHARED=project\nOVERRIDDEN=project\nFROM_ENV=file\nPORT=1\nQUOTED=\"a b\"\n",
    );
    env.write("api.env", "export OVERRIDDEN=service-file\n");
    env.envctl(&["start"]).ok();
    assert!(eventually(10, || env.repo.join("seen.env").is_file()));
    let seen = vars_in(&env.read("seen.env"));
    // The port planned for api: 47320, or the next free one while anything else on the machine holds it.
    let state = env.state();
    let port = state["services"]
        .as_array()
        .and_then(|records| records.iter().find(|r| r["service"] == "api"))
        .and_then(|r| r["port"].as_u64())
        .expect("api's port");
    env.envctl(&["stop"]).ok();
    assert_eq!(seen["SHARED"], "project");
    assert_eq!(seen["OVERRIDDEN"], "service-file", "a later file overrides an earlier one");
    assert_eq!(seen["FROM_ENV"], "service", "the service's `env` wins over a file");
    assert_eq!(seen["PORT"], port.to_string(), "envctl's own variables win over a file");
    assert_eq!(seen["QUOTED"], "a b");
    let text = env.envctl(&["env", "--service", "api"]).ok().stdout.clone();
    let dotenv = env.repo.join(".env").display().to_string();
    assert!(text.contains(&format!("export SHARED=project  # {dotenv}:2")), "{text}");
    assert!(
        text.contains(&format!("export OVERRIDDEN=service-file  # {}:1", env.repo.join("api.env").display())),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "export FROM_ENV=service"), "{text}");
}

#[test]
fn a_broken_or_missing_env_file_stops_start_naming_the_file_and_line() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.api]\ncommand = \"sleep 1000\"\nenv_file = [\".env\", \"gone.env\"]\n");
    env.write(".env", "A=1\nthis is not a pair\n");
    let run = env.envctl(&["start"]);
    run.fails();
    let dotenv = env.repo.join(".env").display().to_string();
    assert!(run.stderr.contains(&format!("{dotenv}:2: expected KEY=value")), "{}", run.stderr);
    assert!(run.stderr.contains("`gone.env` does not exist"), "{}", run.stderr);
    assert!(env.envctl(&["show-state", "--json"]).json()["services"].as_array().is_none_or(Vec::is_empty));
}

#[test]
fn a_worktree_without_its_own_env_file_reads_the_main_checkout_s() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.api]\ncommand = \"sleep 1000\"\nenv_file = [\".env\"]\n");
    env.write(".gitignore", ".env\n");
    env.git(&["add", ".envctl", ".gitignore"]);
    env.git(&["commit", "-q", "-m", "config"]);
    env.write(".env", "SECRET_KEY=dev\n");
    env.envctl(&["worktree", "add", "feat"]).ok();
    let printed = env.envctl(&["env", "--tree", "feat", "--service", "api", "--json"]).ok().json();
    assert_eq!(printed["services"]["api"]["SECRET_KEY"], "dev");
}

#[test]
fn setup_runs_once_per_checkout_and_again_when_an_input_changes() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.api]\ncommand = \"test -f ready && sleep 1000\"\nsetup = \"echo installing for $ENVCTL_TARGET; echo run >> setup-runs; touch ready\"\nsetup_inputs = [\"uv.lock\"]\n",
    );
    env.write("uv.lock", "v1\n");
    let first = env.envctl(&["start"]);
    first.ok();
    assert!(first.stderr.contains("setup main/api: `"), "{}", first.stderr);
    assert!(first.stderr.contains("first start of this checkout"), "{}", first.stderr);
    assert!(first.stderr.contains("main/api | installing for main"), "its output streams: {}", first.stderr);
    env.envctl(&["stop"]).ok();
    let second = env.envctl(&["start"]);
    second.ok();
    assert!(!second.stderr.contains("setup main/api"), "{}", second.stderr);
    env.envctl(&["stop"]).ok();
    env.write("uv.lock", "v2\n");
    let third = env.envctl(&["start"]);
    third.ok();
    assert!(third.stderr.contains("uv.lock changed"), "{}", third.stderr);
    env.envctl(&["stop"]).ok();
    assert_eq!(env.read("setup-runs").lines().count(), 2);
}

#[test]
fn a_failing_setup_stops_the_start_with_its_last_lines_and_runs_again_next_time() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[setup]\ncommand = \"echo resolving; test -f allow || { echo 'lock file out of date' >&2; exit 3; }\"\n\n[services.api]\ncommand = \"sleep 1000\"\n",
    );
    let run = env.envctl(&["start"]);
    run.fails();
    assert!(run.stderr.contains("exited with code 3"), "{}", run.stderr);
    assert!(run.stderr.contains("  lock file out of date"), "{}", run.stderr);
    assert!(run.stderr.contains(".setup.setup.log"), "{}", run.stderr);
    assert!(env.state()["services"].as_array().is_none_or(Vec::is_empty), "nothing started");
    env.write("allow", "");
    let again = env.envctl(&["start"]);
    again.ok();
    assert!(again.stderr.contains("setup main/setup"), "it ran again: {}", again.stderr);
    env.envctl(&["stop"]).ok();
}

#[test]
fn a_hanging_setup_times_out() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.api]\ncommand = \"sleep 1000\"\nsetup = \"echo fetching; sleep 600\"\nsetup_timeout = \"1s\"\n",
    );
    let run = env.envctl(&["start"]);
    run.fails();
    assert!(run.stderr.contains("timed out after 1 s"), "{}", run.stderr);
    assert!(run.stderr.contains("  fetching"), "{}", run.stderr);
}

#[test]
fn a_suite_past_its_timeout_is_stopped_and_its_output_shows_while_it_runs() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.api]\ncommand = \"sleep 1000\"\ntest = \"echo collecting 3 items; sleep 600\"\ntest_timeout = \"2s\"\n",
    );
    let run = env.envctl(&["test"]);
    run.fails();
    assert!(run.stderr.contains("main/api | collecting 3 items"), "{}", run.stderr);
    assert!(run.stdout.contains("timed out after 2 s"), "{}", run.stdout);
}

#[test]
fn a_host_started_by_resume_runs_jobs_with_the_configuration_as_it_is_now() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.idle]\ncommand = \"sleep 1000\"\n\n[jobs.types.greet]\ncommand = \"echo hello-v1 > greeted.txt\"\n",
    );
    env.envctl(&["start"]).ok();
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    crate::support::kill9(u32::try_from(host).expect("pid"));
    env.envctl(&["resume"]).ok();
    let id = ids(&env.envctl(&["jobs", "enqueue", "greet"]).ok().stdout).remove(0);
    assert!(
        eventually(15, || job(&env, &id)["status"] == "succeeded"),
        "the resumed host ran it: {}",
        job(&env, &id)
    );
    assert_eq!(env.read("greeted.txt").trim(), "hello-v1");
    env.envctl(&["config", "set", "jobs.types.greet.command=echo hello-v2 > greeted.txt"]).ok();
    let id = ids(&env.envctl(&["jobs", "enqueue", "greet"]).ok().stdout).remove(0);
    assert!(eventually(15, || job(&env, &id)["status"] == "succeeded"), "{}", job(&env, &id));
    assert_eq!(env.read("greeted.txt").trim(), "hello-v2", "the running host picked up the change");
    env.envctl(&["stop"]).ok();
}

/// `query` on `database` of the cluster `url` names.
fn sql(url: &str, database: &str, query: &str) -> Vec<Vec<Option<String>>> {
    crate::support::sql_in(url, database, query).unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// A suite whose teardown deletes every user, as real projects' do, against a target with users in its database
/// and a backend that holds a connection to it the whole time (as every real backend's pool does).
fn project_with_a_destructive_suite(env: &TestEnv, test_database: &str) -> (String, String) {
    let pg = crate::support::free_port();
    env.write(
        ".envctl",
        &format!(
            "[project]\nname = \"shop\"\n\n[services.api]\ncommand = \"psql -q \\\"$DATABASE_URL\\\" -c 'select pg_sleep(1000)'\"\ndepends_on = [\"postgres\"]\nenv = {{ APP_DATABASE = \"{{postgres.url}}\" }}\ntest = \"psql -v ON_ERROR_STOP=1 -qAt \\\"$APP_DATABASE\\\" -c 'SELECT count(*) FROM users' -c 'DELETE FROM users' && echo tested-on-$DB_NAME\"\n{test_database}\n[requirements.postgres]\nport = {pg}\n"
        ),
    );
    env.envctl(&["start"]).ok();
    let url =
        env.envctl(&["env", "--service", "api", "--json"]).ok().json()["services"]["api"]["DATABASE_URL"]
            .as_str()
            .expect("url")
            .to_owned();
    let (_, db) = crate::support::pg_of(&url);
    sql(&url, &db, "CREATE TABLE users (name text); INSERT INTO users VALUES ('ada'), ('grace')");
    (url, db)
}

#[test]
fn test_runs_against_a_throwaway_copy_and_leaves_the_dev_database_s_rows() {
    let env = TestEnv::new();
    let (url, db) = project_with_a_destructive_suite(&env, "");
    let run = env.envctl(&["test"]);
    run.ok();
    assert!(run.stderr.contains("main/api | 2"), "the copy had main's rows: {}", run.stderr);
    assert!(
        run.stderr.contains("made with pg_dump/pg_restore"),
        "the backend's session kept it busy: {}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!("main/api | tested-on-{db}_test_")), "{}", run.stderr);
    assert_eq!(sql(&url, &db, "SELECT count(*) FROM users")[0][0].as_deref(), Some("2"), "dev rows kept");
    let left =
        sql(&url, "postgres", &format!("SELECT datname FROM pg_database WHERE datname LIKE '{db}_test_%'"));
    assert!(left.is_empty(), "the copy is dropped: {left:?}");
    env.envctl(&["stop"]).ok();
}

#[test]
fn test_database_target_runs_against_the_target_s_own_database() {
    let env = TestEnv::new();
    let (url, db) = project_with_a_destructive_suite(&env, "test_database = \"target\"\n");
    env.envctl(&["test"]).ok();
    assert_eq!(sql(&url, &db, "SELECT count(*) FROM users")[0][0].as_deref(), Some("0"));
    env.envctl(&["stop"]).ok();
}

#[test]
fn a_worker_that_follows_a_changed_envctl_keeps_its_set_overrides() {
    let env = TestEnv::new();
    env.write(".envctl", "[jobs.types.greet]\ncommand = \"echo from-file > greeted.txt\"\n");
    let mut worker =
        env.spawn_envctl(&["--set", "jobs.types.greet.command=echo from-set > greeted.txt", "worker"]);
    let first = ids(&env.envctl(&["jobs", "enqueue", "greet"]).ok().stdout).remove(0);
    assert!(eventually(15, || job(&env, &first)["status"] == "succeeded"), "{}", job(&env, &first));
    assert_eq!(env.read("greeted.txt").trim(), "from-set");
    // An unrelated edit makes the worker reload the file; the override still applies on top of it.
    env.envctl(&["config", "set", "jobs.types.greet.max_attempts=2"]).ok();
    let second = ids(&env.envctl(&["jobs", "enqueue", "greet"]).ok().stdout).remove(0);
    assert!(eventually(15, || job(&env, &second)["status"] == "succeeded"), "{}", job(&env, &second));
    assert_eq!(env.read("greeted.txt").trim(), "from-set");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(worker.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = worker.wait();
}
