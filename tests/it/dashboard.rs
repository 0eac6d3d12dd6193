//! `envctl dashboard`: the real dashboard driven in a tmux pane on a tmux server of the test's own (its socket in
//! the test's directory), its `--snapshot` text, its idle CPU; and shell completions.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::{TestEnv, alive, eventually, free_port, kill9};

const HTTP: &str = "python3 -m http.server {port} --bind 127.0.0.1";

/// A tmux server of this test only, on a socket in the test's directory; killed (by that socket) on drop.
struct Tmux<'a> {
    env: &'a TestEnv,
    socket: PathBuf,
}

impl<'a> Tmux<'a> {
    /// A server running `command` in one 200×50 pane.
    fn start(env: &'a TestEnv, command: &str) -> Self {
        let socket = env.home.join("tmux.sock");
        let tmux = Self { env, socket };
        let ran = tmux
            .cmd()
            .args(["new-session", "-d", "-x", "200", "-y", "50", command])
            .output()
            .expect("run tmux");
        assert!(ran.status.success(), "tmux: {}", String::from_utf8_lossy(&ran.stderr));
        tmux
    }

    fn cmd(&self) -> std::process::Command {
        let mut cmd = self.env.sandboxed("tmux", &self.env.repo);
        cmd.env("TERM", "xterm-256color").arg("-S").arg(&self.socket).args(["-f", "/dev/null"]);
        cmd
    }

    /// What the pane shows now.
    fn capture(&self) -> String {
        let out = self.cmd().args(["capture-pane", "-p"]).output().expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        assert!(self.cmd().args(["send-keys", keys]).status().expect("send-keys").success());
    }

    /// The pid of the pane's process.
    fn pane_pid(&self) -> u32 {
        let out = self.cmd().args(["display-message", "-p", "#{pane_pid}"]).output().expect("display");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("pane pid")
    }

    /// Waits until the pane shows what `check` wants; the last capture on failure.
    #[track_caller]
    fn wait_for(&self, secs: u64, what: &str, mut check: impl FnMut(&str) -> bool) -> String {
        let mut last = String::new();
        let held = eventually(secs, || {
            last = self.capture();
            check(&last)
        });
        assert!(held, "the pane never showed {what}:\n{last}");
        last
    }
}

impl Drop for Tmux<'_> {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The line of the pane's services table for `service`.
fn row<'s>(screen: &'s str, service: &str) -> &'s str {
    screen.lines().find(|l| l.split_whitespace().nth(1) == Some(service)).unwrap_or("")
}

fn dashboard_command() -> String {
    format!("{} dashboard; echo \"dashboard exited $?\"; sleep 60", env!("CARGO_BIN_EXE_envctl"))
}

#[test]
fn dashboard_in_tmux_shows_services_restarts_failures_and_quits_leaving_them_running() {
    let env = TestEnv::new();
    let (web, api) = (free_port(), free_port());
    env.write(
        ".envctl",
        &format!(
            "[services.api]\ncommand = \"{HTTP}\"\nport = {api}\n\n[services.web]\ncommand = \"{HTTP}\"\nport = {web}\n\n[services.worker]\ncommand = \"sleep 1000\"\nrestart = \"no\"\n"
        ),
    );
    env.envctl(&["start"]).ok();
    let tmux = Tmux::start(&env, &dashboard_command());

    // Every service with its port.
    let screen = tmux.wait_for(10, "every service ready with its port", |s| {
        ["api", "web", "worker"].iter().all(|name| row(s, name).contains("ready"))
    });
    assert!(row(&screen, "api").contains(&api.to_string()), "{screen}");
    assert!(row(&screen, "web").contains(&web.to_string()), "{screen}");

    // `r` on the selected service (the first row: api) restarts it: a new pid, shown in the pane.
    let before = env.pids()["main/api"];
    tmux.keys("r");
    let mut after = before;
    assert!(
        eventually(15, || {
            after = env.pids().get("main/api").copied().unwrap_or(before);
            after.0 != before.0
        }),
        "api was not restarted"
    );
    tmux.wait_for(10, "the restarted api and the restart's result", |s| {
        row(s, "api").contains(&after.0.to_string())
            && row(s, "api").contains("ready")
            && s.contains("restarted main/api")
    });
    assert!(!alive(before.0, before.1), "the old api process still runs");

    // A service killed from the outside shows as failed within a second (the host pushes it).
    let worker = env.pids()["main/worker"];
    kill9(worker.0);
    let killed = Instant::now();
    let (shown, last) = loop {
        let last = tmux.capture();
        if row(&last, "worker").contains("failed") {
            break (killed.elapsed(), last);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the pane never showed the killed worker failed:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(shown < Duration::from_secs(1), "the failure took {shown:?} to show:\n{last}");

    // `q` quits with 0 and leaves the services running.
    tmux.keys("q");
    tmux.wait_for(5, "the dashboard's exit code", |s| s.contains("dashboard exited 0"));
    let web_now = env.pids()["main/web"];
    assert!(alive(web_now.0, web_now.1), "web stopped with the dashboard");
    assert!(alive(after.0, after.1), "api stopped with the dashboard");
}

/// Tokens that change from run to run (pids, ports, the run id, uptimes) as markers, and each line's columns one
/// space apart (their widths follow the values).
fn redact_board(text: &str, env: &TestEnv) -> String {
    let state = env.state();
    let mut markers: Vec<(String, String)> = Vec::new();
    markers.push((state["run_id"].as_str().unwrap_or("?").to_owned(), "[RUN]".into()));
    markers.push((state["host"]["pid"].to_string(), "[HOST_PID]".into()));
    for s in state["services"].as_array().into_iter().flatten() {
        let name = s["service"].as_str().unwrap_or("?").to_uppercase();
        if let Some(pid) = s["pid"].as_u64() {
            markers.push((pid.to_string(), format!("[{name}_PID]")));
        }
        if let Some(port) = s["port"].as_u64() {
            markers.push((port.to_string(), format!("[{name}_PORT]")));
        }
    }
    // `42s`, `3m05s`, `1h02m`.
    let uptime = |t: &str| {
        let digits = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
        match (t.strip_suffix('s'), t.strip_suffix('m').and_then(|t| t.split_once('h'))) {
            (Some(t), _) => t.split('m').all(digits),
            (None, Some((h, m))) => digits(h) && digits(m),
            _ => false,
        }
    };
    env.redact(text)
        .lines()
        .map(|line| {
            let mut line = line.to_owned();
            for (value, marker) in &markers {
                line = line.replace(value.as_str(), marker);
            }
            line.split_whitespace()
                .map(|t| if uptime(t) { "[UPTIME]" } else { t })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn dashboard_snapshot_prints_the_view_once_as_text() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(
        ".envctl",
        &format!(
            "[services.web]\ncommand = \"{HTTP}\"\nport = {port}\n\n[services.worker]\ncommand = \"sleep 1000\"\n"
        ),
    );
    env.envctl(&["start"]).ok();
    // The host opens its job store a moment after the start: wait for the queue to be in the view.
    assert!(eventually(10, || !env.envctl(&["dashboard", "--json"]).json()["jobs"].is_null()));
    let json = env.envctl(&["dashboard", "--json"]).ok().json();
    assert_eq!(json["services"].as_array().map(Vec::len), Some(2), "{json}");
    assert!(json["services"][0]["spec"].is_null(), "a view carries no spec (its env has secrets): {json}");
    // No terminal: the text view, once, as with --snapshot.
    let plain = env.envctl(&["dashboard"]).ok().stdout.clone();
    let snapshot = env.envctl(&["dashboard", "--snapshot"]).ok().stdout.clone();
    assert_eq!(redact_board(&plain, &env), redact_board(&snapshot, &env));
    insta::assert_snapshot!(redact_board(&snapshot, &env));
}

#[test]
fn dashboard_without_a_host_shows_the_saved_state() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.worker]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    // The host dies; its service runs on, as the saved state says.
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    kill9(u32::try_from(host).expect("pid"));
    assert!(eventually(10, || env.envctl(&["dashboard", "--json"]).json()["host"].is_null()));
    let text = env.envctl(&["dashboard"]).ok().stdout.clone();
    assert!(text.contains("no host running"), "{text}");
    let worker = env.pids()["main/worker"];
    assert!(
        row(&text, "worker").contains("ready") && row(&text, "worker").contains(&worker.0.to_string()),
        "{text}"
    );
}

/// CPU ticks (user + system) the process has used so far, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which sits in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn dashboard_idle_cpu_with_twenty_services_is_under_one_percent() {
    let env = TestEnv::new();
    let config = (0..20).fold(String::new(), |mut out, i| {
        use std::fmt::Write as _;
        let _ = write!(out, "[services.s{i:02}]\ncommand = \"sleep 1000\"\n\n");
        out
    });
    env.write(".envctl", &config);
    env.envctl(&["start"]).ok();
    let tmux = Tmux::start(&env, &format!("exec {} dashboard", env!("CARGO_BIN_EXE_envctl")));
    tmux.wait_for(10, "twenty services", |s| (0..20).all(|i| row(s, &format!("s{i:02}")).contains("ready")));
    let pid = tmux.pane_pid();
    // Let it settle, then measure 10 s of doing nothing.
    std::thread::sleep(Duration::from_secs(1));
    let (before, began) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (used, took) = (cpu_ticks(pid) - before, began.elapsed());
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    #[allow(clippy::cast_precision_loss)]
    let percent = used as f64 / hz as f64 / took.as_secs_f64() * 100.0;
    assert!(percent < 1.0, "the idle dashboard used {percent:.2} % CPU ({used} ticks in {took:?})");
    // It still follows the host: a stop shows.
    env.envctl(&["stop", "--service", "s07"]).ok();
    tmux.wait_for(5, "s07 stopped", |s| row(s, "s07").contains("stopped") || !s.contains("s07"));
}

#[test]
fn completions_name_the_repositorys_worktrees_services_and_job_types() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.backend]\ncommand = \"sleep 1000\"\n\n[jobs.types.lint]\ncommand = \"true\"\n",
    );
    env.git(&["worktree", "add", "-q", "trees/feature-a"]);
    let complete = |words: &[&str]| {
        let mut args = vec!["--", "envctl"];
        args.extend_from_slice(words);
        env.envctl_with(&[("COMPLETE", "fish")], &args).ok().stdout.clone()
    };
    let trees = complete(&["start", "--tree", ""]);
    assert!(trees.lines().any(|l| l.starts_with("feature-a")), "{trees}");
    let services = complete(&["restart", "--service", ""]);
    assert!(services.lines().any(|l| l.starts_with("backend")), "{services}");
    let types = complete(&["jobs", "enqueue", ""]);
    assert!(types.lines().any(|l| l.starts_with("lint")), "{types}");
    assert!(types.lines().any(|l| l.starts_with("test.run")), "{types}");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = env.envctl(&["completions", shell]).ok().stdout.clone();
        assert!(script.contains("COMPLETE"), "{shell}: {script}");
        let fixed = env.envctl(&["completions", shell, "--static"]).ok().stdout.clone();
        assert!(fixed.contains("dashboard") && fixed.contains("restart"), "{shell}: {fixed}");
    }
    let bad = env.envctl(&["completions", "tcsh"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("tcsh"), "{}", bad.stderr);
}

#[test]
fn man_writes_a_page_per_command() {
    let env = TestEnv::new();
    env.envctl(&["man", "--out", "pages"]).ok();
    for page in ["envctl.1", "envctl-dashboard.1", "envctl-jobs-list.1", "envctl-completions.1"] {
        let text = env.read(&format!("pages/{page}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}: {text}");
    }
}

#[test]
fn progress_without_a_terminal_is_one_plain_line_per_event() {
    let env = TestEnv::new();
    let port = free_port();
    env.write(
        ".envctl",
        &format!("[services.web]\ncommand = \"{HTTP}\"\nport = {port}\n\n[services.worker]\ncommand = \"sleep 1000\"\ntest = \"true\"\n"),
    );
    let started = env.envctl(&["start"]).ok().stderr.clone();
    assert!(started.lines().any(|l| l.starts_with("  starting  main/web")), "{started}");
    assert!(started.lines().any(|l| l.starts_with("  ready     main/web http://127.0.0.1:")), "{started}");
    assert!(started.lines().any(|l| l.starts_with("  ready     main/worker")), "{started}");
    assert!(!started.contains('\u{1b}') && !started.contains('\r'), "nothing is redrawn: {started:?}");
    let tested = env.envctl(&["test"]).ok().stderr.clone();
    assert!(tested.lines().any(|l| l.starts_with("  test.run  main/worker")), "{tested}");
    assert!(tested.lines().any(|l| l.starts_with("  passed") && l.ends_with("main/worker")), "{tested}");
    let quiet = env.envctl(&["restart", "-q"]).ok().stderr.clone();
    assert!(quiet.is_empty(), "-q hides progress: {quiet}");
}

#[test]
fn progress_on_a_terminal_replaces_each_line_by_its_result() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.a]\ncommand = \"sleep 1000\"\n\n[services.b]\ncommand = \"sleep 1000\"\n",
    );
    let exe = env!("CARGO_BIN_EXE_envctl");
    let tmux = Tmux::start(&env, &format!("{exe} start 2>&1; echo \"start exited $?\"; sleep 60"));
    let screen = tmux.wait_for(15, "the start's end", |s| s.contains("start exited 0"));
    for service in ["main/a", "main/b"] {
        let line = screen.lines().find(|l| l.trim_start().starts_with(service)).unwrap_or("");
        assert!(line.contains("ready"), "{service} not replaced by its result:\n{screen}");
    }
    // The spinners are gone: every line that names a service is a result line.
    assert!(!screen.contains("starting"), "{screen}");
}
