//! How a service's command runs: exec'd directly when it has no shell syntax, through `sh -c 'exec …'` when it is
//! one command with shell syntax, through `sh -c` when it is a compound command; read back from `/proc`.

use envctl_engine::supervisor::proc_info;

use crate::support::{TestEnv, alive, eventually};

/// The program a process runs (`/proc/<pid>/exe`'s file name).
fn program(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// `/proc/<pid>/cmdline` as words.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

/// Every process under `pid` (itself included) with its program.
fn tree_programs(pid: u32) -> Vec<(u32, String)> {
    proc_info::tree(pid).into_iter().map(|(p, _)| (p, program(p))).collect()
}

const CONFIG: &str = r#"[services.plain]
command = "sleep 1000"

[services.expanded]
command = "sleep $NAP"
env = { NAP = "1000" }

[services.piped]
command = "sleep 1000 | cat"
"#;

#[test]
fn a_service_without_shell_syntax_runs_with_no_sh_in_its_process_tree() {
    let env = TestEnv::new();
    env.write(".envctl", CONFIG);
    env.envctl(&["start"]).ok();
    let pids = env.pids();
    let (pid, started) = pids["main/plain"];
    assert_eq!(program(pid), "sleep", "the service's pid is the program itself");
    assert_eq!(cmdline(pid), ["sleep", "1000"]);
    assert_eq!(tree_programs(pid), [(pid, "sleep".to_owned())], "nothing under it");
    let stat = proc_info::stat(pid).expect("stat");
    assert_eq!(stat.pgid, pid, "it leads its own process group, as before");
    // The host's children: the services themselves, and not one shell among the two exec'd ones.
    let host = u32::try_from(env.state()["host"]["pid"].as_u64().expect("host pid")).expect("pid");
    let children: Vec<String> = proc_info::children(host).into_iter().map(program).collect();
    assert_eq!(children.iter().filter(|p| p.as_str() == "sleep").count(), 2, "{children:?}");
    assert_eq!(children.iter().filter(|p| p.ends_with("sh")).count(), 1, "only the piped one: {children:?}");
    env.envctl(&["stop"]).ok();
    assert!(eventually(5, || !alive(pid, started)), "the stop signals the program itself");
}

#[test]
fn a_service_with_shell_syntax_runs_and_its_shell_is_replaced_by_the_command() {
    let env = TestEnv::new();
    env.write(".envctl", CONFIG);
    env.envctl(&["start"]).ok();
    let (pid, started) = env.pids()["main/expanded"];
    assert_eq!(program(pid), "sleep", "the shell exec'd the command");
    assert_eq!(cmdline(pid), ["sleep", "1000"], "after `$NAP` was expanded by the shell");
    assert_eq!(proc_info::stat(pid).expect("stat").pgid, pid);
    // A compound command keeps its shell, and a stop still ends all of it.
    let (shell, shell_started) = env.pids()["main/piped"];
    assert!(program(shell).ends_with("sh"), "a shell leads it: {}", program(shell));
    let under: Vec<String> = tree_programs(shell).into_iter().map(|(_, p)| p).collect();
    assert!(under.contains(&"sleep".to_owned()) && under.contains(&"cat".to_owned()), "{under:?}");
    let members = proc_info::tree(shell);
    env.envctl(&["stop"]).ok();
    assert!(eventually(5, || !alive(pid, started) && !alive(shell, shell_started)));
    assert!(eventually(5, || members.iter().all(|(p, s)| !alive(*p, *s))), "nothing of the pipeline is left");
}

#[test]
fn explain_startup_shows_which_way_each_service_runs() {
    let env = TestEnv::new();
    env.write(".envctl", CONFIG);
    let plan = env.envctl(&["explain-startup", "--main", "--json"]).ok().json();
    let services = plan["targets"][0]["services"].as_array().expect("services");
    let by_name = |name: &str| services.iter().find(|s| s["name"] == name).expect("service").clone();
    assert_eq!(by_name("plain")["launch"], "direct");
    assert_eq!(by_name("plain")["argv"], serde_json::json!(["sleep", "1000"]));
    assert_eq!(by_name("expanded")["launch"], "shell_exec");
    assert_eq!(by_name("expanded")["argv"], serde_json::json!(["/bin/sh", "-c", "exec sleep $NAP"]));
    assert_eq!(by_name("piped")["launch"], "shell");
    assert_eq!(by_name("piped")["argv"], serde_json::json!(["/bin/sh", "-c", "sleep 1000 | cat"]));
    let text = env.envctl(&["explain-startup", "--main"]).ok().stdout.clone();
    assert!(text.contains("run: sleep 1000 (exec'd directly, no shell)"), "{text}");
    assert!(text.contains("run: exec sleep $NAP (sh -c, the shell replaced by the command)"), "{text}");
    assert!(text.contains("run: sleep 1000 | cat (sh -c, compound command)"), "{text}");
}
