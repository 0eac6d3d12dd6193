//! `config init` and `config set`.

use crate::support::TestEnv;

#[test]
fn config_init_detects_services_and_refuses_to_overwrite() {
    let env = TestEnv::new();
    env.write("backend/pyproject.toml", "[project]\ndependencies = [\"fastapi\", \"uvicorn\"]\n");
    env.write("backend/app/main.py", "from fastapi import FastAPI\napp = FastAPI()\n");
    env.write("frontend/package.json", r#"{"scripts": {"dev": "vite"}}"#);
    env.write("frontend/yarn.lock", "");
    let run = env.envctl(&["config", "init"]);
    run.ok();
    assert!(run.stderr.contains("detected backend"), "{}", run.stderr);
    let report = env.envctl(&["show-config", "--json"]).ok().json();
    let services = &report["config"]["services"];
    assert_eq!(
        services["backend"]["command"],
        "python3 -m uvicorn app.main:app --host 127.0.0.1 --port {port}"
    );
    assert_eq!(services["backend"]["cwd"], "backend");
    assert_eq!(services["frontend"]["command"], "yarn run dev --port {port} --strictPort --host 127.0.0.1");
    let written = env.read(".envctl");
    let run = env.envctl(&["config", "init"]);
    run.fails();
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(env.read(".envctl"), written);
    env.envctl(&["config", "init", "--force"]).ok();
    // The Python-era spelling maps to `config init`.
    assert!(env.envctl(&["--init"]).fails().stderr.contains("already exists"));
}

#[test]
fn config_set_keeps_comments_and_creates_tables() {
    let env = TestEnv::new();
    env.write(".envctl", "# my services\n[services.web]\ncommand = \"run\"  # keep\nport = 8000\n");
    env.envctl(&["config", "set", "services.web.port=8100"]).ok();
    env.envctl(&["config", "set", "services.web.restart=always"]).ok();
    env.envctl(&["config", "set", "jobs.types.lint.command=cargo clippy"]).ok();
    let text = env.read(".envctl");
    assert!(text.contains("# my services") && text.contains("# keep"), "{text}");
    let report = env.envctl(&["show-config", "--json"]).ok().json();
    assert_eq!(report["config"]["services"]["web"]["port"], 8100);
    assert_eq!(report["config"]["services"]["web"]["restart"], "always");
    assert_eq!(report["config"]["jobs"]["types"]["lint"]["command"], "cargo clippy");
    let run = env.envctl(&["config", "set", "services.web.restart=sometimes"]);
    run.fails();
    assert!(run.stderr.contains("`sometimes` is not one of no, on-failure, always"), "{}", run.stderr);
}

#[test]
fn config_set_refuses_legacy_files() {
    let env = TestEnv::new();
    env.write(".envctl", "BACKEND_PORT_BASE=8000\n");
    let run = env.envctl(&["config", "set", "project.name=x"]);
    run.fails();
    assert!(run.stderr.contains("config migrate"), "{}", run.stderr);
}
