//! Inspection commands: list-commands, show-config, list-targets, show-state, explain-startup.

use std::collections::BTreeSet;

use crate::support::{TestEnv, free_port};

fn two_service_config(api: u16, web: u16) -> String {
    format!(
        "[project]\nname = \"shop\"\n\n[services.api]\ncommand = \"python3 -m http.server {{port}}\"\nport = {api}\nready = {{ http = \"/\" }}\ndepends_on = [\"postgres\"]\n\n[services.web]\ncommand = \"serve --api {{api.url}}\"\nport = {web}\ndepends_on = [\"api\"]\nenv = {{ API_URL = \"{{api.url}}\" }}\n\n[requirements.postgres]\n"
    )
}

#[test]
fn version_and_help() {
    let env = TestEnv::new();
    let run = env.envctl(&["--version"]);
    run.ok();
    assert!(run.stdout.starts_with("envctl "), "{}", run.stdout);
    let run = env.envctl(&["help"]);
    run.ok();
    assert!(run.stdout.contains("explain-startup"), "{}", run.stdout);
    let run = env.envctl(&["no-such-command"]);
    run.fails();
    assert!(run.stderr.contains("unrecognized subcommand"), "{}", run.stderr);
}

#[test]
fn list_commands_lists_exactly_the_implemented_commands() {
    let env = TestEnv::new();
    let run = env.envctl(&["list-commands", "--json"]);
    run.ok();
    let names: BTreeSet<String> = run.json()["commands"]
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_owned())
        .collect();
    let expected: BTreeSet<String> = [
        "list-commands",
        "show-config",
        "list-targets",
        "show-state",
        "explain-startup",
        "config init",
        "config migrate",
        "config set",
        "start",
        "stop",
        "stop-all",
        "restart",
        "resume",
        "blast-all",
        "logs",
        "clear-logs",
        "dashboard",
        "health",
        "doctor",
        "debug-pack",
        "debug-report",
        "debug-last",
        "errors",
        "endpoints",
        "env",
        "worktree add",
        "worktree list",
        "worktree remove",
        "ports reset",
        "jobs enqueue",
        "jobs list",
        "jobs show",
        "jobs logs",
        "jobs progress",
        "jobs cancel",
        "jobs retry",
        "jobs stats",
        "jobs purge",
        "vars list",
        "vars get",
        "vars set",
        "vars delete",
        "test",
        "migrate",
        "worker",
        "job input",
        "job output",
        "job context",
        "job condition",
        "job var get",
        "job var set",
        "job var incr",
        "job var exists",
        "job var delete",
        "job progress",
        "job log",
        "completions",
        "man",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(names, expected);
    let text = env.envctl(&["list-commands"]);
    assert_eq!(text.ok().stdout.lines().count(), expected.len());
    // The Python-era spelling still works.
    env.envctl(&["--list-commands"]).ok();
}

#[test]
fn show_config_reports_each_source_with_precedence() {
    let env = TestEnv::new();
    env.write(".envctl", "[project]\nname = \"shop\"\ndefault_mode = \"main\"\n\n[jobs]\nlease_secs = 10\nredis_prefix = \"file\"\n");
    let run = env.envctl_with(
        &[
            ("ENVCTL_DEFAULT_MODE", "trees"),
            ("ENVCTL_JOBS_LEASE_SECS", "20"),
            ("REDIS_URL", "redis://127.0.0.1:1/0"),
        ],
        &["--set", "jobs.lease_secs=30", "show-config", "--json"],
    );
    let report = run.ok().json();
    let value = |key: &str| {
        report["values"]
            .as_array()
            .expect("values")
            .iter()
            .find(|v| v["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no {key}"))
    };
    assert_eq!(value("project.name")["source"], format!("file:{}/.envctl:2", env.repo.display()));
    assert_eq!(value("project.default_mode")["value"], "trees");
    assert_eq!(value("project.default_mode")["source"], "env:ENVCTL_DEFAULT_MODE");
    assert_eq!(value("jobs.lease_secs")["value"], 30);
    assert_eq!(value("jobs.lease_secs")["source"], "cli:--set");
    assert_eq!(value("jobs.redis_prefix")["source"], format!("file:{}/.envctl:7", env.repo.display()));
    assert_eq!(value("jobs.redis_url")["source"], "env:REDIS_URL");
    assert_eq!(value("project.trees_dir")["source"], "default");
    assert_eq!(report["format"], "toml");
}

#[test]
fn no_config_runs_on_defaults() {
    let env = TestEnv::new();
    let report = env.envctl(&["show-config", "--json"]).ok().json();
    assert_eq!(report["format"], "none");
    assert_eq!(report["config"]["project"]["name"], "repo");
    let plan = env.envctl(&["explain-startup", "--json"]).ok().json();
    assert_eq!(plan["targets"][0]["services"].as_array().map(Vec::len), Some(0));
}

#[test]
fn worktrees_get_stable_distinct_ports_and_share_main_config() {
    let (api, web) = (free_port(), free_port());
    let env = TestEnv::new();
    env.write(".envctl", &two_service_config(api, web));
    env.git(&["add", ".envctl"]);
    env.git(&["commit", "-q", "-m", "config"]);
    env.git(&["worktree", "add", "-q", "trees/feat-a"]);
    env.git(&["worktree", "add", "-q", "trees/nested/2"]);
    let list = env.envctl(&["list-targets", "--json"]).ok().json();
    let targets = list["targets"].as_array().expect("targets");
    let names: Vec<&str> = targets.iter().map(|t| t["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["main", "feat-a", "nested-2"]);
    assert_eq!(targets[0]["ports"]["api"]["assigned"], api);
    assert_eq!(targets[0]["ports"]["api"]["source"], "config");
    let mut seen = BTreeSet::new();
    for target in targets {
        let slot = target["slot"].as_u64().expect("slot");
        let assigned = target["ports"]["api"]["assigned"].as_u64().expect("port");
        assert!(seen.insert(assigned), "api port {assigned} used twice");
        if target["name"] != "main" {
            assert_eq!(target["ports"]["api"]["requested"].as_u64(), Some(u64::from(api) + slot));
        }
        // One shared postgres server (isolation = database) for every target.
        assert_eq!(target["ports"]["postgres"]["assigned"], targets[0]["ports"]["postgres"]["assigned"]);
    }
    // Same answer on every run.
    assert_eq!(env.envctl(&["list-targets", "--json"]).ok().json(), list);
    // Run from inside a worktree: main's .envctl and state are used.
    let inside = env.envctl_in(&env.repo.join("trees/feat-a"), &["show-config", "--json"]).ok().json();
    assert_eq!(inside["config_file"], format!("{}/.envctl", env.repo.display()));
}

#[test]
fn a_port_held_by_a_foreign_process_moves_the_plan_and_the_process_is_untouched() {
    let holder = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let taken = holder.local_addr().expect("addr").port();
    let env = TestEnv::new();
    env.write(".envctl", &format!("[services.api]\ncommand = \"run\"\nport = {taken}\n"));
    let list = env.envctl(&["list-targets", "--json"]).ok().json();
    let plan = &list["targets"][0]["ports"]["api"];
    assert_eq!(plan["requested"], taken);
    assert_eq!(plan["source"], "retry");
    assert!(plan["assigned"].as_u64().expect("port") > u64::from(taken));
    assert!(plan["retries"].as_u64().expect("retries") >= 1);
    // The listener still accepts connections.
    std::net::TcpStream::connect(("127.0.0.1", taken)).expect("foreign listener still up");
}

#[test]
fn explain_startup_shows_argv_env_layers_and_requirements() {
    let (api, web) = (free_port(), free_port());
    let env = TestEnv::new();
    env.write(".envctl", &two_service_config(api, web));
    let plan = env.envctl(&["explain-startup", "--main", "--json"]).ok().json();
    let target = &plan["targets"][0];
    let services = target["services"].as_array().expect("services");
    assert_eq!(services[0]["name"], "api");
    assert_eq!(services[0]["layer"], 0);
    assert_eq!(services[1]["name"], "web");
    assert_eq!(services[1]["layer"], 1);
    // No shell syntax: the command's own words, exec'd with no shell in between.
    assert_eq!(services[0]["argv"], serde_json::json!(["python3", "-m", "http.server", api.to_string()]));
    assert_eq!(services[0]["launch"], "direct");
    assert_eq!(services[0]["env"]["PORT"], api.to_string());
    let db_url = services[0]["env"]["DATABASE_URL"].as_str().expect("DATABASE_URL");
    // The cluster's own generated password, as its secrets file holds it.
    let password = envctl_engine::requirements::url_password(db_url).expect("a password");
    assert!(password.len() == 32 && password.chars().all(|c| c.is_ascii_alphanumeric()), "{db_url}");
    assert!(
        db_url.starts_with(&format!("postgresql://postgres:{password}@127.0.0.1:"))
            && db_url.ends_with("/shop_main"),
        "{db_url}"
    );
    assert_eq!(services[1]["env"]["API_URL"], format!("http://127.0.0.1:{api}"));
    assert_eq!(services[1]["argv"], serde_json::json!(["serve", "--api", format!("http://127.0.0.1:{api}")]));
    assert_eq!(target["requirements"][0]["name"], "postgres");
    // Human output names the same things.
    let text = env.envctl(&["explain-startup"]).ok().stdout.clone();
    assert!(text.contains(&format!("run: python3 -m http.server {api}")), "{text}");
}

#[test]
fn explain_startup_rejects_bad_and_unknown_targets() {
    let env = TestEnv::new();
    env.write(".envctl", "[project]\nname = \"x\"\n");
    env.git(&["worktree", "add", "-q", "trees/feature-a"]);
    let run = env.envctl(&["explain-startup", "--tree", "feature-b"]);
    run.fails();
    assert!(
        run.stderr.contains("no worktree named `feature-b`; did you mean `feature-a`?"),
        "{}",
        run.stderr
    );
    let run = env.envctl(&["explain-startup", "--tree", "../etc"]);
    run.fails();
    assert!(run.stderr.contains("not a valid target name"), "{}", run.stderr);
    env.envctl(&["explain-startup", "--tree", "feature-a"]).ok();
    let trees =
        env.envctl_with(&[("ENVCTL_DEFAULT_MODE", "trees")], &["explain-startup", "--json"]).ok().json();
    assert_eq!(trees["targets"][0]["name"], "feature-a");
}

#[test]
fn show_state_without_state_exits_1_with_found_false() {
    let env = TestEnv::new();
    let run = env.envctl(&["show-state", "--json"]);
    run.fails();
    assert_eq!(run.json(), serde_json::json!({"found": false}));
}

#[test]
fn corrupt_state_is_reported_with_its_path_not_a_panic() {
    let env = TestEnv::new();
    let scope_dir = env.runtime.join("scopes").join(envctl_engine::config::scope_id(&env.repo));
    std::fs::create_dir_all(&scope_dir).expect("mkdir");
    std::fs::write(scope_dir.join("run_state.json"), "{\"schema_version\": 1, \"run_").expect("write");
    let run = env.envctl(&["show-state"]);
    run.fails();
    assert!(
        run.stderr.contains(&format!("{}: corrupt state file", scope_dir.join("run_state.json").display())),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    // Commands that only glance at the state keep working and warn.
    let run = env.envctl(&["list-targets"]);
    run.ok();
    assert!(run.stderr.contains("corrupt state file"), "{}", run.stderr);
}

#[test]
fn the_annotated_example_and_the_bundled_example_load() {
    let env = TestEnv::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join(".envctl.example");
    let run = env.envctl(&["--config", example.to_str().expect("utf8"), "show-config", "--json"]);
    let report = run.ok().json();
    assert!(report["warnings"].as_array().expect("warnings").is_empty());
    assert_eq!(report["config"]["services"]["backend"]["stop_grace_secs"], 5);
    let shop = root.join("examples/shop");
    let plan = env.envctl(&["--repo", shop.to_str().expect("utf8"), "explain-startup", "--json"]).ok().json();
    let names: Vec<&str> = plan["targets"][0]["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["name"].as_str().expect("n"))
        .collect();
    assert_eq!(names, ["api", "web"]);
}

/// `--json` is indented for a person at a terminal and one line for a program reading a pipe; the two are the same
/// value. The terminal is a real pseudo-terminal (`script`), not a flag.
#[test]
fn json_is_one_line_in_a_pipe_and_indented_at_a_terminal() {
    let env = TestEnv::new();
    env.write(".envctl", &two_service_config(free_port(), free_port()));
    let piped = env.envctl(&["show-config", "--json"]);
    piped.ok();
    assert_eq!(piped.stdout.lines().count(), 1, "one line in a pipe: {}", piped.stdout);
    let command = format!("{} show-config --json", env!("CARGO_BIN_EXE_envctl"));
    let at_terminal = env
        .sandboxed("script", &env.repo)
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("run script");
    assert!(at_terminal.status.success(), "{}", String::from_utf8_lossy(&at_terminal.stderr));
    let text = String::from_utf8_lossy(&at_terminal.stdout).replace("\r\n", "\n");
    assert!(text.starts_with("{\n  \"schema_version\""), "indented at a terminal: {text}");
    let value: serde_json::Value = serde_json::from_str(&text).expect("the terminal's JSON");
    assert_eq!(value, piped.json());
}
