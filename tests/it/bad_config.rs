//! The catalogue of bad configurations and the exact messages users get for them. Each case must exit 1, name
//! the file (or variable, or flag), the line and the key, and say what to do.

use crate::support::TestEnv;

/// (case name, `.envctl` content).
const CASES: &[(&str, &str)] = &[
    ("toml_syntax", "[project\nname = \"x\"\n"),
    ("unknown_key_suggests", "[services.web]\ncommand = \"run\"\nprot = 8000\n"),
    ("unknown_section_suggests", "[servics.web]\ncommand = \"run\"\n"),
    (
        "port_out_of_range",
        "[services.web]\ncommand = \"run\"\nport = 70000\n\n[services.api]\ncommand = \"run\"\nport = 0\n",
    ),
    ("port_wrong_type", "[services.web]\ncommand = \"run\"\nport = \"eighty\"\n"),
    (
        "unknown_dependency_suggests",
        "[services.web]\ncommand = \"run\"\ndepends_on = [\"postgress\"]\n\n[requirements.postgres]\n",
    ),
    (
        "dependency_cycle",
        "[services.a]\ncommand = \"run\"\ndepends_on = [\"b\"]\n\n[services.b]\ncommand = \"run\"\ndepends_on = [\"c\"]\n\n[services.c]\ncommand = \"run\"\ndepends_on = [\"a\"]\n",
    ),
    ("bad_choice_suggests", "[services.web]\ncommand = \"run\"\nrestart = \"on_failure\"\n"),
    ("missing_command", "[services.web]\nport = 8000\n"),
    (
        "ready_two_probes",
        "[services.web]\ncommand = \"run\"\nport = 8000\nready = { http = \"/\", tcp = true }\n",
    ),
    ("ready_http_needs_port", "[services.web]\ncommand = \"run\"\nready = { http = \"health\" }\n"),
    ("bad_duration", "[services.web]\ncommand = \"run\"\nstop_grace = \"soon\"\n"),
    ("command_requirement_needs_port_and_command", "[requirements.mail]\nadapter = \"command\"\n"),
    (
        "postgres_isolation_and_command",
        "[requirements.postgres]\nisolation = \"db-index\"\ncommand = \"postgres\"\n",
    ),
    (
        "unknown_placeholder",
        "[services.web]\ncommand = \"run --db {postgres.url}\"\nenv = { X = \"{web.nope}\" }\n",
    ),
    ("duplicate_name", "[services.redis]\ncommand = \"run\"\n\n[requirements.redis]\n"),
    (
        "named_ports",
        "[services.mail]\ncommand = \"catch --smtp {ports.smtp} --web {ports.wbe}\"\nport = 1025\nports = { smtp = 1025, web = 1080, Admin = 1090, pop = 0 }\n\n[services.app]\ncommand = \"run\"\nenv = { MAIL = \"{mail.ports.web}\", BAD = \"{mail.ports.imap}\", NONE = \"{app.ports.web}\" }\n\n[requirements.redis]\nports = { extra = 7000 }\n\n[requirements.ports]\nadapter = \"command\"\ncommand = \"run\"\nport = 7100\n",
    ),
    (
        "invalid_names",
        "[services.\"web app\"]\ncommand = \"run\"\n\n[jobs.types.\"a.b.c\"]\ncommand = \"x\"\n",
    ),
    (
        "many_problems_in_file_order",
        "[project]\ndefault_mode = \"tree\"\n\n[services.web]\ncommand = \"run\"\nport = -1\ndepends_on = [\"db\"]\n\n[jobs]\nlease_secs = 0\nbackend = \"rabbit\"\n",
    ),
];

#[test]
fn catalogue_of_bad_configs() {
    for (name, content) in CASES {
        let env = TestEnv::new();
        env.write(".envctl", content);
        let run = env.envctl(&["show-config"]);
        run.fails();
        assert!(run.stdout.is_empty(), "{name}: nothing on stdout, got {}", run.stdout);
        assert!(
            run.stderr.contains("[REPO]") || run.stderr.contains(&env.repo.display().to_string()),
            "{name}: names the file"
        );
        assert!(run.stderr.contains("hint:"), "{name}: says what to do");
        insta::assert_snapshot!(format!("bad_config__{name}"), env.redact(&run.stderr));
    }
}

#[test]
fn bad_environment_override_names_the_variable() {
    let env = TestEnv::new();
    env.write(".envctl", "[project]\nname = \"x\"\n");
    let run = env
        .envctl_with(&[("ENVCTL_DEFAULT_MODE", "tree"), ("ENVCTL_JOBS_LEASE_SECS", "-5")], &["show-config"]);
    run.fails();
    insta::assert_snapshot!(env.redact(&run.stderr));
}

#[test]
fn bad_set_flag_names_the_flag() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"run\"\n");
    let run =
        env.envctl(&["--set", "services.web.prot=1", "--set", "services.web.port=99999", "show-config"]);
    run.fails();
    insta::assert_snapshot!(env.redact(&run.stderr));
    let run = env.envctl(&["--set", "no-equals-sign", "show-config"]);
    run.fails();
    assert!(run.stderr.contains("expected KEY=VALUE"), "{}", run.stderr);
}

#[test]
fn legacy_problems_point_at_the_legacy_line() {
    let env = TestEnv::new();
    env.write(".envctl", "# legacy\nENVCTL_BACKEND_START_CMD=run --port {port}\nBACKEND_PORT_BASE=99999\n");
    let run = env.envctl(&["show-config"]);
    run.fails();
    insta::assert_snapshot!(env.redact(&run.stderr));
}

#[test]
fn a_bad_config_loses_nothing_on_config_set() {
    let env = TestEnv::new();
    let original = "# keep me\n[services.web]\ncommand = \"run\"   # and me\nport = 8000\n";
    env.write(".envctl", original);
    let run = env.envctl(&["config", "set", "services.web.port=70000"]);
    run.fails();
    assert!(run.stderr.contains("70000 is not a port"), "{}", run.stderr);
    assert_eq!(env.read(".envctl"), original, "the file is untouched");
}

/// A user's first run listed 7 problems; a missing `command`, `restart = "sometimes"` and a misspelt `depends_on`
/// only appeared once those were fixed, because a service (or `[jobs]`) with one value of the wrong type was
/// dropped whole. Every problem must be in the first run, once, with its line.
#[test]
fn every_problem_is_reported_in_one_pass() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        r#"[project]
default_mode = "tree"

[services.web]
port = "8000"
restart = "sometimes"
depends_on = ["postgress", "worker"]
stop_grace = "soon"

[services.worker]
command = "run worker"
prot = 8001
ready = "http"
enabled = "yes"
depends_on = ["web"]

[requirements.postgres]
port = 99999

[jobs]
lease_secs = "forever"
backend = "rabbit"

[jobs.types.lint]
max_attempts = 0
"#,
    );
    let run = env.envctl(&["show-config"]);
    run.fails();
    let stderr = env.redact(&run.stderr);
    // (location, key, what the message says)
    let expected = [
        (":2:16:", "project.default_mode", "`tree` is not one of main, trees"),
        (":4:11:", "services.web.command", "is required"),
        (":5:8:", "services.web.port", "expected a whole number"),
        (":6:11:", "services.web.restart", "`sometimes` is not one of no, on-failure, always"),
        (":7:15:", "services.web.depends_on", "`postgress` is not a service or requirement"),
        (":7:15:", "services.web.depends_on", "dependency cycle: web -> worker -> web"),
        (":8:14:", "services.web.stop_grace", "`soon` is not a duration"),
        (":12:1:", "services.worker.prot", "unknown key; did you mean `port`?"),
        (":13:9:", "services.worker.ready", "must be a table, not string"),
        (":14:11:", "services.worker.enabled", "expected a boolean"),
        (":18:8:", "requirements.postgres.port", "99999 is not a port"),
        (":21:14:", "jobs.lease_secs", "expected a whole number"),
        (":22:11:", "jobs.backend", "`rabbit` is not one of embedded, redis"),
        (":24:13:", "jobs.types.lint.command", "is required"),
        (":25:16:", "jobs.types.lint.max_attempts", "0 must be a whole number of at least 1"),
    ];
    for (location, key, message) in expected {
        let line = format!("[REPO]/.envctl{location} {key}: ");
        assert!(
            stderr.lines().any(|l| l.trim_start().starts_with(&line) && l.contains(message)),
            "missing `{line}… {message}` in:\n{stderr}"
        );
    }
    assert!(stderr.contains("did you mean `postgres`?"), "suggests the requirement:\n{stderr}");
    assert!(
        stderr.starts_with(&format!("error: the configuration has {} problems:", expected.len())),
        "each problem once, nothing else:\n{stderr}"
    );
}

/// A value that is already reported does not cause more reports: a `command` of the wrong type is not also
/// "required", a port out of range does not make an `http` probe "need a port", and depending on a service whose
/// own definition is broken is not an error.
#[test]
fn a_bad_value_causes_no_follow_on_errors() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.web]\ncommand = 5\nport = 70000\nready = { http = \"/\" }\n\n[services]\napi = \"run\"\n\n\
         [services.worker]\ncommand = \"run\"\ndepends_on = [\"web\", \"api\"]\nready = { htp = \"/\" }\n",
    );
    let run = env.envctl(&["show-config"]);
    run.fails();
    insta::assert_snapshot!(env.redact(&run.stderr));
}

/// Bytes that are not UTF-8 are reported like every other problem: file, line and column, every line at once.
#[test]
fn invalid_utf8_is_reported_at_its_line_and_column() {
    let env = TestEnv::new();
    let content = b"[services.web]\ncommand = \"caf\xe9\"\n\n[services.api]\n# \xff\xfe\ncommand = \"run\"\n";
    std::fs::write(env.repo.join(".envctl"), content).expect("write");
    let run = env.envctl(&["show-config"]);
    run.fails();
    let stderr = env.redact(&run.stderr);
    for location in ["[REPO]/.envctl:2:15: invalid UTF-8", "[REPO]/.envctl:5:3: invalid UTF-8"] {
        assert!(stderr.contains(location), "missing `{location}` in:\n{stderr}");
    }
    insta::assert_snapshot!(stderr);
}
