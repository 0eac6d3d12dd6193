//! [`TestEnv`]: a temporary repository and a sandboxed way to run the real binary in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary git repository with its own home, XDG directories and envctl runtime directory.
pub struct TestEnv {
    _dir: tempfile::TempDir,
    /// The repository root.
    pub repo: PathBuf,
    /// The sandbox's `$HOME`.
    pub home: PathBuf,
    /// `ENVCTL_RUNTIME_DIR`.
    pub runtime: PathBuf,
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: &Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts exit code 0 and returns self.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts exit code 1 and returns self.
    #[track_caller]
    pub fn fails(&self) -> &Self {
        assert_eq!(self.code, 1, "expected exit 1\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl TestEnv {
    /// A fresh repository with one commit.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().canonicalize().expect("canonical tempdir");
        let repo = base.join("repo");
        let home = base.join("home");
        let runtime = base.join("runtime");
        for d in [&repo, &home, &runtime] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let env = Self { _dir: dir, repo, home, runtime };
        env.git(&["init", "-q", "-b", "main"]);
        env.git(&["commit", "-q", "--allow-empty", "-m", "init"]);
        env
    }

    /// A second repository sharing this one's home and runtime directory (two repositories on one machine).
    pub fn sibling(&self) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().canonicalize().expect("canonical").join("repo2");
        std::fs::create_dir_all(&repo).expect("mkdir");
        let env = Self { _dir: dir, repo, home: self.home.clone(), runtime: self.runtime.clone() };
        env.git(&["init", "-q", "-b", "main"]);
        env.git(&["commit", "-q", "--allow-empty", "-m", "init"]);
        env
    }

    /// Writes a file under the repository.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.repo.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
        path
    }

    /// Reads a file under the repository.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.repo.join(rel)).expect("read")
    }

    /// `program` in `cwd` with this environment's `HOME`, XDG directories, git identity and `ENVCTL_RUNTIME_DIR`,
    /// and nothing else of the caller's environment but `PATH`.
    #[allow(clippy::disallowed_methods)] // the test harness passes its own PATH on
    pub fn sandboxed(&self, program: &str, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", self.home.join(".gitconfig"))
            .env("GIT_AUTHOR_NAME", "envctl tests")
            .env("GIT_AUTHOR_EMAIL", "tests@envctl.invalid")
            .env("GIT_COMMITTER_NAME", "envctl tests")
            .env("GIT_COMMITTER_EMAIL", "tests@envctl.invalid")
            .env("ENVCTL_RUNTIME_DIR", &self.runtime);
        cmd
    }

    /// Runs git in the repository, asserting success.
    pub fn git(&self, args: &[&str]) -> String {
        let output = self.sandboxed("git", &self.repo).args(args).output().expect("run git");
        assert!(output.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs envctl in the repository root.
    pub fn envctl(&self, args: &[&str]) -> Run {
        self.envctl_in(&self.repo, args)
    }

    /// Runs envctl in `dir`.
    pub fn envctl_in(&self, dir: &Path, args: &[&str]) -> Run {
        let output =
            self.sandboxed(env!("CARGO_BIN_EXE_envctl"), dir).args(args).output().expect("run envctl");
        Run::from(&output)
    }

    /// Starts envctl in the background with stdout piped.
    pub fn spawn_envctl(&self, args: &[&str]) -> std::process::Child {
        self.spawn_envctl_with(&[], args)
    }

    /// Starts envctl in the background with stdout piped and extra environment variables.
    pub fn spawn_envctl_with(&self, vars: &[(&str, &str)], args: &[&str]) -> std::process::Child {
        self.sandboxed(env!("CARGO_BIN_EXE_envctl"), &self.repo)
            .envs(vars.iter().copied())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn envctl")
    }

    /// Runs envctl under `umask` (what a shell with a permissive umask would start).
    pub fn envctl_umask(&self, umask: &str, args: &[&str]) -> Run {
        let output = self
            .sandboxed("sh", &self.repo)
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_envctl"))
            .args(args)
            .output()
            .expect("run envctl");
        Run::from(&output)
    }

    /// Runs envctl with extra environment variables for this run only.
    pub fn envctl_with(&self, vars: &[(&str, &str)], args: &[&str]) -> Run {
        let mut cmd = self.sandboxed(env!("CARGO_BIN_EXE_envctl"), &self.repo);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        Run::from(&cmd.args(args).output().expect("run envctl"))
    }

    /// The saved run state (`show-state --json`'s `run_state`).
    pub fn state(&self) -> serde_json::Value {
        let run = self.envctl(&["show-state", "--json"]);
        run.json()["run_state"].clone()
    }

    /// (pid, start time) of each service in the saved state, by `target/service`.
    pub fn pids(&self) -> std::collections::BTreeMap<String, (u32, u64)> {
        let state = self.state();
        state["services"]
            .as_array()
            .map(|services| {
                services
                    .iter()
                    .filter_map(|s| {
                        let pid = u32::try_from(s["pid"].as_u64()?).ok()?;
                        let started = s["pid_start_time"].as_u64()?;
                        Some((
                            format!("{}/{}", s["target"].as_str()?, s["service"].as_str()?),
                            (pid, started),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Text with this environment's temporary paths replaced by stable markers (for snapshots).
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.repo.display().to_string(), "[REPO]")
            .replace(&self.runtime.display().to_string(), "[RUNTIME]")
    }
}

impl Drop for TestEnv {
    /// Whatever a test started is stopped and its data removed, even when the test failed: its environments, and
    /// the jobs a worker it SIGKILLed left running (marked as jobs of this test's runtime directory).
    fn drop(&mut self) {
        if self.runtime.join("scopes").exists() {
            let _ = self.envctl(&["stop-all", "--remove-data", "--yes"]);
            let _ = self.envctl(&["blast-all"]);
        }
        let marks = [
            b"ENVCTL_ROLE=job".to_vec(),
            format!("ENVCTL_RUNTIME_DIR={}", self.runtime.display()).into_bytes(),
        ];
        for (pid, started) in processes_marked(&marks) {
            // The same process still (pid and start time), so nothing else is signalled.
            if start_time(pid) == Some(started) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// This user's living processes (zombies aside) whose environment holds every one of `marks`, with their start
/// times.
pub fn processes_marked(marks: &[Vec<u8>]) -> Vec<(i32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(|pid| {
            let zombie =
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"));
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
            let marked = !zombie && marks.iter().all(|m| vars.contains(&m.as_slice()));
            marked.then(|| Some((pid, start_time(pid)?))).flatten()
        })
        .collect()
}

/// A process's start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Sends SIGKILL to `pid` (a process this test started, directly or through envctl).
pub fn kill9(pid: impl TryInto<i32>) {
    let pid = pid.try_into().unwrap_or_else(|_| panic!("pid out of range"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL");
}

/// Whether the process (pid, start time) still runs.
pub fn alive(pid: u32, started: u64) -> bool {
    envctl_engine::supervisor::proc_info::is_same_process(pid, started)
}

/// Polls `check` every 20 ms until it holds or `secs` pass; returns whether it held.
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    check()
}

/// A port nothing listens on right now (bound and released; good enough for a planner test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind").local_addr().expect("addr").port()
}

/// A real `redis-server` on a free loopback port, stopped on drop; restartable on the same port and data.
pub struct RedisServer {
    child: Option<std::process::Child>,
    /// Its port.
    pub port: u16,
    aof: bool,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one (`--appendonly yes` when `aof`).
    pub fn start(aof: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self { child: None, port: free_port(), aof, dir };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if self.aof { "yes" } else { "no" },
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        assert!(
            eventually(10, || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()),
            "redis-server did not start"
        );
    }

    /// Stops it gracefully (SIGTERM) and starts it again on the same port and data.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
            child.wait().expect("reap");
        }
        self.spawn();
    }

    /// Its process (to pause it with SIGSTOP: a server that stops answering without closing its connections).
    pub fn pid(&self) -> nix::unistd::Pid {
        let child = self.child.as_ref().expect("running");
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `future` on a runtime of its own (tests that talk to a server through the engine's async clients).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// (port, database) of a `postgresql://user:password@127.0.0.1:<port>/<db>` URL.
pub fn pg_of(url: &str) -> (u16, String) {
    let rest = url.rsplit('@').next().expect("host part");
    let (host_port, db) = rest.split_once('/').expect("database");
    (host_port.rsplit(':').next().expect("port").parse().expect("port"), db.to_owned())
}

/// Runs `query` on the database of a `DATABASE_URL`, with its password.
pub fn sql(url: &str, query: &str) -> Result<envctl_engine::requirements::pgwire::Rows, String> {
    let (_, db) = pg_of(url);
    sql_in(url, &db, query)
}

/// Runs `query` on `database` of the cluster a `DATABASE_URL` names, with its password.
pub fn sql_in(
    url: &str,
    database: &str,
    query: &str,
) -> Result<envctl_engine::requirements::pgwire::Rows, String> {
    use envctl_engine::requirements::{pgwire, url_password};
    let (port, _) = pg_of(url);
    let password = url_password(url);
    let login = pgwire::Login::new("postgres", password.as_deref());
    block_on(pgwire::query(port, login, database, query)).map_err(|e| e.to_string())
}

/// The job ids `jobs enqueue` printed, one a line.
pub fn ids(stdout: &str) -> Vec<String> {
    stdout.lines().map(str::to_owned).collect()
}

/// `jobs show ID --json`.
pub fn job(env: &TestEnv, id: &str) -> serde_json::Value {
    env.envctl(&["jobs", "show", id, "--json"]).ok().json()
}
