//! The trust boundary, attacked the way a user's machine would: a recorded pid that now belongs to someone else,
//! a private runtime directory under a permissive umask.

use crate::support::{TestEnv, alive, eventually, kill9};

fn scope(env: &TestEnv) -> std::path::PathBuf {
    env.runtime.join("scopes").join(envctl_engine::config::scope_id(&env.repo))
}

/// A foreign session leader (`setsid`) with a child, started by the test: what a recycled pid may name.
struct Foreign {
    leader: std::process::Child,
}

impl Foreign {
    fn start() -> Self {
        let leader = std::process::Command::new("setsid")
            .args(["sh", "-c", "sleep 1000 & exec sleep 1000"])
            .spawn()
            .expect("setsid");
        Self { leader }
    }

    fn pid(&self) -> u32 {
        self.leader.id()
    }

    /// Every process of its session (the leader and its child).
    fn members(&self) -> Vec<(u32, u64)> {
        let pid = self.pid();
        assert!(
            eventually(5, || envctl_engine::supervisor::proc_info::group_or_session_members(pid).len() >= 2)
        );
        envctl_engine::supervisor::proc_info::group_or_session_members(pid)
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        for (pid, _) in envctl_engine::supervisor::proc_info::group_or_session_members(self.pid()) {
            kill9(pid);
        }
        let _ = self.leader.wait();
    }
}

/// Points the saved state's record of `service` at `pid` with a start time that is not its own: the record of a
/// process that died, whose pid the kernel has since given to someone else.
fn record_points_at(env: &TestEnv, service: &str, pid: u32) {
    let path = scope(env).join("run_state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("state")).expect("json");
    for record in state["services"].as_array_mut().expect("services") {
        if record["service"] == service {
            let started = record["pid_start_time"].as_u64().expect("start time");
            record["pid"] = serde_json::json!(pid);
            record["pid_start_time"] = serde_json::json!(started.saturating_sub(1).max(1));
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&state).expect("json")).expect("write");
}

fn host_down(env: &TestEnv) {
    let host = env.state()["host"]["pid"].as_u64().expect("host pid");
    kill9(host);
    assert!(eventually(5, || !std::path::Path::new(&format!("/proc/{host}")).exists()
        || std::fs::read_to_string(format!("/proc/{host}/stat")).is_ok_and(|s| s.contains(") Z"))));
}

/// A service dies with its host; its recorded pid then names a foreign session (with a child): `command` must
/// leave that session alone.
fn a_recycled_pid_is_left_alone_by(command: &str) {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let (web, web_started) = env.pids()["main/web"];
    host_down(&env);
    kill9(web);
    assert!(eventually(5, || !alive(web, web_started)));
    let foreign = Foreign::start();
    let members = foreign.members();
    record_points_at(&env, "web", foreign.pid());
    env.envctl(&[command]).ok();
    assert!(members.iter().all(|(p, s)| alive(*p, *s)), "{command}: the foreign session and its child live");
}

#[test]
fn blast_all_leaves_a_foreign_session_on_a_recycled_pid_alone() {
    a_recycled_pid_is_left_alone_by("blast-all");
}

#[test]
fn stop_all_leaves_a_foreign_session_on_a_recycled_pid_alone() {
    a_recycled_pid_is_left_alone_by("stop-all");
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::symlink_metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn state_logs_and_the_socket_are_private_whatever_the_umask() {
    let env = TestEnv::new();
    let port = crate::support::free_port();
    env.write(".envctl", &format!("[services.web]\ncommand = \"echo hello; exec python3 -m http.server {{port}} --bind 127.0.0.1\"\nport = {port}\n"));
    env.envctl_umask("000", &["start"]).ok();
    // The job store (payloads, logs) too: a job enqueued and run by the host's worker creates it and its WAL.
    let id = env.envctl_umask("000", &["jobs", "enqueue", "noop"]).ok().stdout.trim().to_owned();
    assert!(eventually(10, || env.envctl(&["jobs", "show", &id, "--json"]).json()["status"] == "succeeded"));
    let scope = scope(&env);
    assert!(walk(&scope).iter().any(|p| p.to_string_lossy().ends_with("-wal")), "the store's WAL exists");
    assert_eq!(mode(&env.runtime), 0o700, "runtime root");
    assert_eq!(mode(&scope), 0o700, "scope dir");
    assert_eq!(mode(&scope.join("host.sock")), 0o600, "control socket");
    for entry in walk(&scope) {
        // A state write may rename a temporary file away while the walk runs.
        let Ok(meta) = std::fs::symlink_metadata(&entry) else { continue };
        let (m, kind) =
            (std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, meta.file_type());
        if kind.is_dir() {
            assert_eq!(m, 0o700, "{}", entry.display());
        } else if kind.is_file() {
            assert_eq!(m, 0o600, "{}", entry.display());
        }
    }
    assert_eq!(mode(&env.runtime.join("ports")), 0o700, "the lease ledger");
}

/// Every path below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// The uid and gid of `nobody`, when this test runs as root and can act as another user.
#[allow(clippy::print_stderr)] // says why it did not run
fn other_user() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: acting as another local user needs root");
        return None;
    }
    let user = nix::unistd::User::from_name("nobody").ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

#[test]
fn the_host_refuses_a_request_from_another_user_even_when_the_socket_is_reachable() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some((uid, gid)) = other_user() else { return };
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let socket = scope(&env).join("host.sock");
    // The attacker got through the directories somehow (here: the test opens them up).
    let mut dir = socket.parent().expect("dir").to_path_buf();
    while dir != std::path::Path::new("/tmp") && dir.starts_with("/tmp") {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dir.pop();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod socket");
    let script = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect({:?}); print(s.makefile().readline())",
        socket.display().to_string()
    );
    let output = {
        use std::os::unix::process::CommandExt as _;
        std::process::Command::new("python3")
            .args(["-c", &script])
            .uid(uid)
            .gid(gid)
            .output()
            .expect("python3 as nobody")
    };
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(answer.contains("refused: uid"), "{answer} {}", String::from_utf8_lossy(&output.stderr));
    assert!(!answer.contains("\"Status\""), "{answer}");
    env.envctl(&["health"]).ok();
}

#[test]
fn a_socket_directory_another_user_made_first_is_refused() {
    let Some((uid, gid)) = other_user() else { return };
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\n");
    // A runtime dir whose scope path is too long for a socket, so the socket goes to the fallback directory…
    let long = env.runtime.join("x".repeat(120));
    std::fs::create_dir_all(&long).expect("mkdir");
    let xdg = tempfile::tempdir().expect("xdg");
    // …which another user created first.
    let planted = xdg.path().join("envctl");
    std::fs::create_dir(&planted).expect("plant");
    nix::unistd::chown(&planted, Some(uid.into()), Some(gid.into())).expect("chown");
    let vars = [
        ("ENVCTL_RUNTIME_DIR", long.to_str().expect("utf-8")),
        ("XDG_RUNTIME_DIR", xdg.path().to_str().expect("utf-8")),
    ];
    let run = env.envctl_with(&vars, &["start"]);
    run.fails();
    let host_log = std::fs::read_to_string(
        long.join("scopes").join(envctl_engine::config::scope_id(&env.repo)).join("host.log"),
    )
    .unwrap_or_default();
    assert!(
        run.stderr.contains("is owned by uid") || host_log.contains("is owned by uid"),
        "{}\n{host_log}",
        run.stderr
    );
    assert!(std::fs::read_dir(&planted).expect("read").next().is_none(), "nothing of ours went in there");
    let _ = env.envctl_with(&vars, &["stop-all"]);
}

#[test]
fn a_worktree_path_with_shell_syntax_is_one_word_in_a_command() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"echo root={root}; exec sleep 1000\"\n");
    env.git(&["add", ".envctl"]);
    env.git(&["commit", "-q", "-m", "config"]);
    let evil = "trees/b;touch $HOME/PWN3;x";
    env.git(&["worktree", "add", "-q", evil]);
    env.envctl(&["start", "--all"]).ok();
    let logs = env.envctl(&["logs", "--all"]);
    assert!(eventually(5, || env.envctl(&["logs", "--all"]).stdout.contains("b;touch")), "{}", logs.stdout);
    assert!(!env.home.join("PWN3").exists(), "the path's `;` ran a command");
    let logs = env.envctl(&["logs", "--all"]).stdout;
    assert!(logs.contains(&format!("root={}", env.repo.join(evil).display())), "{logs}");
}

#[test]
fn a_jobs_cwd_cannot_leave_its_targets_checkout() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\n");
    env.write("sub/keep.txt", "");
    let enqueue = |cwd: &str| {
        let payload = format!(
            r#"{{"command": "pwd > {}/pwd.txt", "target": "main", "cwd": "{cwd}"}}"#,
            env.repo.display()
        );
        env.envctl(&["jobs", "enqueue", "command.exec", "--payload", &payload]).ok().stdout.trim().to_owned()
    };
    let escape = enqueue("../../../../../../etc");
    let inside = enqueue("sub");
    env.envctl(&["worker", "--drain"]).ok();
    let escaped = env.envctl(&["jobs", "show", &escape, "--json"]).json();
    assert_eq!(escaped["status"], "failed", "{escaped}");
    assert!(
        escaped["error"].as_str().is_some_and(|e| e.contains("leaves the target's checkout")),
        "{escaped}"
    );
    let fine = env.envctl(&["jobs", "show", &inside, "--json"]).json();
    assert_eq!(fine["status"], "succeeded", "{fine}");
    assert_eq!(
        env.read("pwd.txt").trim(),
        env.repo.join("sub").display().to_string(),
        "only the job inside ran"
    );
}

#[test]
fn config_set_edits_a_symlinked_envctl_through_the_link() {
    let env = TestEnv::new();
    env.write("config/envctl.toml", "[services.web]\ncommand = \"sleep 1000\"\n");
    std::os::unix::fs::symlink("config/envctl.toml", env.repo.join(".envctl")).expect("symlink");
    env.envctl(&["config", "set", "services.web.port=8123"]).ok();
    let link = std::fs::symlink_metadata(env.repo.join(".envctl")).expect("meta");
    assert!(link.file_type().is_symlink(), "the link stays a link");
    assert!(env.read("config/envctl.toml").contains("port = 8123"), "{}", env.read("config/envctl.toml"));
}

/// Processes carrying this repository's marker (`ENVCTL_SCOPE`), by service: (pid, parent pid).
fn marked(env: &TestEnv) -> std::collections::BTreeMap<String, Vec<(u32, u32)>> {
    let scope = format!("ENVCTL_SCOPE={}", scope(env).display());
    let mut out: std::collections::BTreeMap<String, Vec<(u32, u32)>> = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let vars: Vec<String> =
            environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        if !vars.contains(&scope) {
            continue;
        }
        let Some(service) = vars.iter().find_map(|v| v.strip_prefix("ENVCTL_SERVICE=")) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let parent = fields.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        out.entry(service.to_owned()).or_default().push((pid, parent));
    }
    out
}

/// The tops of each service's process trees: marked processes whose parent is not marked for the same service.
fn leaders(env: &TestEnv) -> std::collections::BTreeMap<String, Vec<u32>> {
    marked(env)
        .into_iter()
        .map(|(service, procs)| {
            let pids: Vec<u32> = procs.iter().map(|(p, _)| *p).collect();
            (service, procs.iter().filter(|(_, parent)| !pids.contains(parent)).map(|(p, _)| *p).collect())
        })
        .collect()
}

/// The pid of this test's envctl host (`envctl host` with the test's runtime directory), once it runs.
fn host_pid(env: &TestEnv) -> Option<u32> {
    let runtime = format!("ENVCTL_RUNTIME_DIR={}", env.runtime.display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let ours = environ.split(|b| *b == 0).any(|v| v == runtime.as_bytes());
        (ours && args.get(1) == Some(&b"host".as_slice())).then_some(pid)
    })
}

#[test]
fn a_host_killed_at_any_moment_of_a_start_leaves_every_service_owned_and_none_twice() {
    // A chain of four services, each ready a moment after the one before: the host dies before, during and
    // after each of their spawns.
    let mut config = String::new();
    for i in 0..4 {
        let dep = if i == 0 { String::new() } else { format!("depends_on = [\"s{}\"]\n", i - 1) };
        let _ = std::fmt::Write::write_fmt(
            &mut config,
            format_args!(
                "[services.s{i}]\ncommand = \"sleep 1000\"\nready = {{ exec = \"sleep 0.15\" }}\n{dep}\n"
            ),
        );
    }
    for delay_ms in [0, 120, 260, 420, 700] {
        let env = TestEnv::new();
        env.write(".envctl", &config);
        let mut start = env.spawn_envctl(&["start"]);
        assert!(eventually(10, || host_pid(&env).is_some()), "a host starts");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let host = host_pid(&env).expect("host");
        kill9(host);
        let _ = start.wait();
        // A readiness probe the host was running (it carries the marker too) ends on its own.
        std::thread::sleep(std::time::Duration::from_millis(400));
        let survivors = leaders(&env);
        // The next start adopts what survived and starts the rest: one process tree per service, none twice.
        env.envctl(&["start"]).ok();
        let after = leaders(&env);
        for i in 0..4 {
            let name = format!("s{i}");
            let shown: Vec<String> = after
                .get(&name)
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{p}: {}",
                        std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                            .unwrap_or_default()
                            .replace('\0', " ")
                    )
                })
                .collect();
            assert_eq!(
                after.get(&name).map(Vec::len),
                Some(1),
                "killed at {delay_ms} ms: {name}: {shown:?} survivors {survivors:?} state {}",
                env.envctl(&["show-state", "--json"]).stdout
            );
        }
        // A survivor was either adopted (it is the service's process now) or stopped and replaced (a service
        // the dead host never recorded how it started) — never left running beside a new one.
        for (service, pids) in &survivors {
            for pid in pids {
                let adopted = after.get(service).is_some_and(|now| now.contains(pid));
                let gone = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                });
                assert!(
                    adopted || gone,
                    "killed at {delay_ms} ms: {service} pid {pid} left beside {after:?}"
                );
            }
        }
        env.envctl(&["stop"]).ok();
        assert!(
            eventually(5, || marked(&env).is_empty()),
            "killed at {delay_ms} ms: left behind: {:?}",
            marked(&env)
        );
    }
}

#[test]
fn a_redis_server_envctl_starts_refuses_anyone_without_its_password() {
    let env = TestEnv::new();
    let port = crate::support::free_port();
    env.write(".envctl", &format!("[services.api]\ncommand = \"sleep 1000\"\ndepends_on = [\"redis\"]\n\n[requirements.redis]\nport = {port}\n"));
    env.envctl(&["start"]).ok();
    let vars = env.envctl(&["env", "--service", "api", "--json"]).ok().json()["services"]["api"].clone();
    let url = vars["REDIS_URL"].as_str().expect("url").to_owned();
    let password = vars["REDIS_PASSWORD"].as_str().expect("REDIS_PASSWORD").to_owned();
    assert!(url.starts_with(&format!("redis://:{password}@127.0.0.1:{port}/")), "{url}");
    let redis = |password: Option<&str>| {
        crate::support::block_on(envctl_engine::requirements::redis::commands(port, password, &["PING"]))
    };
    // Another local user knows the port, not the password.
    let refused = redis(None).expect("an answer");
    assert!(refused[0].starts_with("-NOAUTH"), "{refused:?}");
    assert!(redis(Some("guess")).is_err(), "a wrong password is refused");
    assert_eq!(redis(Some(&password)).expect("ping"), vec!["+PONG"]);
    // Not on the server's command line, which every local user can read.
    let pid = env.pids()["main/redis"].0;
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(!cmdline.contains(&password), "{cmdline}");
    let secret = scope(&env).join("secrets").join("main.redis.password");
    assert_eq!(mode(&secret), 0o600);
    env.envctl(&["stop"]).ok();
}

/// A read-only view of a directory (a bind mount), unmounted when dropped.
struct ReadOnlyView {
    path: std::path::PathBuf,
}

impl ReadOnlyView {
    /// `None` (with the reason printed) where the test may not mount.
    #[allow(clippy::print_stderr)] // says why it did not run
    fn of(dir: &std::path::Path, at: &std::path::Path) -> Option<Self> {
        std::fs::create_dir_all(at).expect("mount point");
        let bind = std::process::Command::new("mount").arg("--bind").arg(dir).arg(at).status();
        if !bind.is_ok_and(|s| s.success()) {
            eprintln!("skipped: cannot bind-mount (not root, or no mount permission here)");
            return None;
        }
        let view = Self { path: at.to_path_buf() };
        let ro = std::process::Command::new("mount").args(["-o", "remount,bind,ro"]).arg(at).status();
        assert!(ro.is_ok_and(|s| s.success()), "remount read-only");
        Some(view)
    }
}

impl Drop for ReadOnlyView {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn stop_all_stops_everything_even_when_the_runtime_dir_is_read_only() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.a]\ncommand = \"sleep 1000\"\n\n[services.b]\ncommand = \"sleep 1000\"\n",
    );
    env.envctl(&["start"]).ok();
    let pids = env.pids();
    host_down(&env);
    let view = env.home.join("runtime-read-only");
    let Some(_view) = ReadOnlyView::of(&env.runtime, &view) else { return };
    let run = env.envctl_with(&[("ENVCTL_RUNTIME_DIR", view.to_str().expect("path"))], &["stop-all"]);
    run.ok();
    assert!(run.stderr.contains("stopped main/a, main/b"), "{}", run.stderr);
    assert!(run.stderr.contains("the saved state could not be updated"), "{}", run.stderr);
    assert!(eventually(5, || pids.values().all(|(p, s)| !alive(*p, *s))), "every service stopped");
}

#[test]
fn a_postgres_cluster_envctl_starts_refuses_anyone_without_its_password() {
    use envctl_engine::requirements::pgwire::{Login, query};
    let env = TestEnv::new();
    let port = crate::support::free_port();
    env.write(".envctl", &format!("[services.api]\ncommand = \"sleep 1000\"\ndepends_on = [\"postgres\"]\n\n[requirements.postgres]\nport = {port}\n"));
    env.envctl(&["start"]).ok();
    let vars = env.envctl(&["env", "--service", "api", "--json"]).ok().json()["services"]["api"].clone();
    let url = vars["DATABASE_URL"].as_str().expect("url").to_owned();
    let password = vars["DB_PASSWORD"].as_str().expect("DB_PASSWORD").to_owned();
    assert_eq!(vars["PGPASSWORD"], password.as_str());
    assert!(url.starts_with(&format!("postgresql://postgres:{password}@127.0.0.1:{port}/")), "{url}");
    let ask = |password: Option<&str>| {
        crate::support::block_on(query(port, Login::new("postgres", password), "postgres", "SELECT 1"))
    };
    // Another local user knows the port and the role, not the password: the superuser's `COPY … TO PROGRAM` is
    // out of reach.
    let refused = ask(None).expect_err("no password").to_string();
    assert!(refused.contains("asks for a password"), "{refused}");
    let wrong = ask(Some("postgres")).expect_err("the old fixed password").to_string();
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    assert!(ask(Some(&password)).is_ok());
    let pid = env.pids()["main/postgres"].0;
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(!cmdline.contains(&password), "{cmdline}");
    // The Unix socket lives in the cluster's own directory, which only its owner may enter.
    let data_dir = cmdline.split('\0').skip_while(|a| *a != "-D").nth(1).expect("-D dir").to_owned();
    assert_eq!(mode(std::path::Path::new(&data_dir)), 0o700, "{data_dir}");
    assert!(std::path::Path::new(&data_dir).join(format!(".s.PGSQL.{port}")).exists());
    env.envctl(&["stop"]).ok();
}

#[test]
fn the_run_history_keeps_secret_names_but_not_their_values() {
    let env = TestEnv::new();
    env.write(
        ".envctl",
        "[services.api]\ncommand = \"sleep 1000\"\nenv = { API_TOKEN = \"tok-1234567\", UPSTREAM = \"https://svc:pw-7654321@example.invalid/x\", MODE = \"dev\" }\n",
    );
    env.envctl(&["start"]).ok();
    // The latest view keeps the values (the host restarts services from it), 0600.
    let latest = std::fs::read_to_string(scope(&env).join("run_state.json")).expect("state");
    assert!(latest.contains("tok-1234567"));
    // The run copy is written right after the reply.
    let copies = || -> Vec<_> {
        walk(&scope(&env).join("runs"))
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "run_state.json"))
            .collect()
    };
    assert!(eventually(5, || !copies().is_empty()), "a run copy was written");
    for copy in copies() {
        let text = std::fs::read_to_string(&copy).expect("copy");
        assert!(!text.contains("tok-1234567") && !text.contains("pw-7654321"), "{}: {text}", copy.display());
        assert!(text.contains("\"API_TOKEN\": \"<redacted>\""), "the name stays: {text}");
        assert!(
            text.contains("https://svc:<redacted>@example.invalid/x") && text.contains("\"MODE\": \"dev\""),
            "{text}"
        );
    }
}

#[test]
fn a_process_started_from_a_shell_with_envctl_env_is_never_taken_for_the_service() {
    let env = TestEnv::new();
    env.write(".envctl", "[services.web]\ncommand = \"sleep 1000\"\n");
    env.envctl(&["start"]).ok();
    let bin = env!("CARGO_BIN_EXE_envctl");
    // The developer's shell: `eval "$(envctl env)"`, then a job of their own in its own session.
    let mut own = env
        .sandboxed("sh", &env.repo)
        .args(["-c", &format!("eval \"$({bin} env --service web)\"; exec setsid sleep 1000")])
        .spawn()
        .expect("shell");
    let own_pid = own.id();
    assert!(eventually(5, || std::fs::read_to_string(format!("/proc/{own_pid}/cmdline"))
        .is_ok_and(|c| c.starts_with("sleep"))));
    let own_started = envctl_engine::supervisor::proc_info::start_time(own_pid).expect("runs");
    // The host dies without exiting and takes the service with it; the next start must not adopt the shell's job.
    let (web, _) = env.pids()["main/web"];
    host_down(&env);
    kill9(web);
    env.envctl(&["start"]).ok();
    env.envctl(&["stop"]).ok();
    assert!(alive(own_pid, own_started), "the user's own process was taken for the service and stopped");
    kill9(own_pid);
    let _ = own.wait();
}

#[test]
fn a_generated_password_stays_out_of_the_history_wherever_a_service_puts_it() {
    let env = TestEnv::new();
    let port = crate::support::free_port();
    env.write(
        ".envctl",
        &format!("[services.api]\ncommand = \"sleep 1000 --auth {{cache.password}} || sleep 1000\"\ndepends_on = [\"cache\"]\nenv = {{ CACHE_PASS = \"{{cache.password}}\", BROKERS = \"redis://127.0.0.1:1,redis://:{{cache.password}}@127.0.0.1:2/0\" }}\n\n[requirements.cache]\nadapter = \"redis\"\nport = {port}\n"),
    );
    env.envctl(&["start"]).ok();
    let password =
        std::fs::read_to_string(scope(&env).join("secrets").join("main.cache.password")).expect("secret");
    // The start's run copy is written right after its reply; the last of its files is the error report.
    let run_id = env.state()["run_id"].as_str().expect("run id").to_owned();
    let last = scope(&env).join("runs").join(&run_id).join("error_report.json");
    assert!(eventually(5, || last.is_file()), "the run copy is written");
    for copy in
        walk(&scope(&env).join("runs")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let text = std::fs::read_to_string(&copy).expect("copy");
        assert!(!text.contains(password.trim()), "{}: {text}", copy.display());
    }
    env.envctl(&["stop"]).ok();
}
