//! Python-era `.envctl` files: read through the importer, and `config migrate`.

use crate::support::TestEnv;

const LEGACY: &str = r#"# >>> envctl managed startup config >>>
ENVCTL_DEFAULT_MODE=trees
export ENVCTL_BACKEND_START_CMD="python3 -m http.server {port} --bind 127.0.0.1"
BACKEND_DIR=api
BACKEND_PORT_BASE=8100
MAIN_FRONTEND_ENABLE=false
TREES_FRONTEND_ENABLE=false
MAIN_POSTGRES_ENABLE=true
TREES_POSTGRES_ENABLE=true
REDIS_MAIN_ENABLE=true
DB_PORT=5544
TREES_DIR_NAME='worktrees'
ENVCTL_ADDITIONAL_SERVICES=worker
ENVCTL_SERVICE_WORKER_START_CMD=python3 worker.py
ENVCTL_SERVICE_WORKER_EXPECT_LISTENER=false
ENVCTL_SERVICE_WORKER_DEPENDS_ON=backend
ENVCTL_SERVICE_WORKER_HEALTH_URL=http://localhost:{port}/healthz
PORT_SPACING=20
MAIN_SUPABASE_ENABLE=true
# <<< envctl managed startup config <<<
# >>> envctl backend launch env >>>
APP_DB=${ENVCTL_SOURCE_DATABASE_URL}
# <<< envctl backend launch env <<<
"#;

#[test]
fn legacy_files_are_imported_with_sources_and_warnings() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.repo.join("api")).expect("mkdir");
    env.write(".envctl", LEGACY);
    let run = env.envctl(&["show-config", "--json"]);
    let report = run.ok().json();
    assert_eq!(report["format"], "legacy");
    let config = &report["config"];
    assert_eq!(config["project"]["default_mode"], "trees");
    assert_eq!(config["project"]["trees_dir"], "worktrees");
    let backend = &config["services"]["backend"];
    assert_eq!(backend["command"], "python3 -m http.server {port} --bind 127.0.0.1");
    assert_eq!(backend["cwd"], "api");
    assert_eq!(backend["port"], 8100);
    assert_eq!(backend["env"]["APP_DB"], "{postgres.url}");
    assert!(config["services"].get("frontend").is_none(), "frontend disabled in both modes");
    let worker = &config["services"]["worker"];
    assert_eq!(worker["port"], serde_json::Value::Null);
    assert_eq!(worker["depends_on"], serde_json::json!(["backend"]));
    assert_eq!(config["requirements"]["postgres"]["port"], 5544);
    assert_eq!(config["requirements"]["redis"]["targets"], "main");
    let source = report["values"]
        .as_array()
        .expect("values")
        .iter()
        .find(|v| v["key"] == "services.backend.port")
        .expect("port")["source"]
        .clone();
    assert_eq!(source, format!("legacy:{}/.envctl:5 (BACKEND_PORT_BASE)", env.repo.display()));
    let warnings = report["warnings"].as_array().expect("warnings");
    let joined: Vec<&str> = warnings.iter().filter_map(|w| w.as_str()).collect();
    assert!(joined.iter().any(|w| w.contains("line 18: PORT_SPACING has no equivalent")), "{joined:?}");
    assert!(
        joined.iter().any(|w| w.contains("MAIN_SUPABASE_ENABLE") && w.contains("no built-in supabase")),
        "{joined:?}"
    );
    assert!(
        joined.iter().any(|w| w.contains("line 17: ENVCTL_SERVICE_WORKER_HEALTH_URL ignored")),
        "{joined:?}"
    );
    // The same warnings reach a person on stderr.
    let text = env.envctl(&["show-config"]);
    assert!(text.ok().stderr.contains("warning:") && text.stderr.contains("PORT_SPACING"), "{}", text.stderr);
}

#[test]
fn config_migrate_rewrites_as_toml_keeps_a_backup_and_means_the_same() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.repo.join("api")).expect("mkdir");
    env.write(".envctl", LEGACY);
    let before = env.envctl(&["show-config", "--json"]).ok().json();
    let run = env.envctl(&["config", "migrate"]);
    run.ok();
    assert!(run.stderr.contains("PORT_SPACING"), "warnings are shown: {}", run.stderr);
    assert_eq!(env.read(".envctl.legacy.bak"), LEGACY);
    let migrated = env.read(".envctl");
    assert!(migrated.contains("[services.backend]"), "{migrated}");
    let after = env.envctl(&["show-config", "--json"]).ok().json();
    assert_eq!(after["format"], "toml");
    assert_eq!(after["config"], before["config"]);
    // Migrating again is a no-op.
    let again = env.envctl(&["config", "migrate"]);
    assert!(again.ok().stderr.contains("already TOML"), "{}", again.stderr);
    assert_eq!(env.read(".envctl"), migrated);
}
