//! What a job does: `noop` (canaries and benchmarks), `command.exec` (a shell command in a target's environment,
//! its output in the job's log, its exit status the job's status), `test.run` and `migrate.run` (a service's
//! configured `test` or `migrate` command in a target) and the user types of `[jobs.types.*]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use envctl_contracts::jobs::Job;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::store::{Finish, JobStore};
use crate::config::{EnvVars, Settings};

/// What the worker's runtime API does around each attempt whose process a handler starts (implemented by
/// `runtime_api`, which the composition root hands in; jobs never depend on it).
pub trait Executions: Send + Sync + std::fmt::Debug {
    /// Opens attempt `job.attempts` of `job` (whose time limit is `timeout`) and returns the variables its
    /// process gets (`ENVCTL_RUNTIME_URL`, `ENVCTL_EXECUTION_ID`, `ENVCTL_EXECUTION_TOKEN`, …). Its token is valid
    /// from now until [`end`](Self::end).
    fn begin(&self, job: &Job, timeout: Option<Duration>) -> BTreeMap<String, String>;
    /// Closes the attempt: its token is refused from now on.
    fn end(&self, job: &Job, finish: &Finish);
}

/// What handlers need from the outside: the repository's settings (when the worker runs in one), the
/// environment commands inherit, and the runtime API of the worker (when it serves one).
///
/// A worker lives longer than one edit of `.envctl` (the host's runs for as long as the host): before each job
/// that reads the configuration it looks at the file, and when its contents changed it reloads it, so a job never
/// runs with a value the user already changed.
#[derive(Debug)]
pub struct HandlerContext {
    settings: Option<Settings>,
    /// The environment commands inherit.
    pub base_env: BTreeMap<String, String>,
    /// `--set` overrides applied again on every reload.
    sets: Vec<String>,
    current: std::sync::Mutex<Option<Reloaded>>,
    executions: Option<Arc<dyn Executions>>,
}

/// The configuration as last read from the file.
#[derive(Debug)]
struct Reloaded {
    stamp: (std::time::SystemTime, u64),
    hash: u64,
    settings: Settings,
}

impl HandlerContext {
    /// Handlers for a worker inside a repository (`settings`, just loaded) or outside any (`None`).
    pub fn new(settings: Option<Settings>, base_env: BTreeMap<String, String>) -> Self {
        let current = settings.as_ref().and_then(|given| {
            let (stamp, hash) = read_stamp(given.paths.config_file.as_deref()?)?;
            Some(Reloaded { stamp, hash, settings: given.clone() })
        });
        Self {
            settings,
            base_env,
            sets: Vec::new(),
            current: std::sync::Mutex::new(current),
            executions: None,
        }
    }

    /// The same, its jobs' processes reaching the runtime API through `executions`.
    #[must_use]
    pub fn with_executions(mut self, executions: Arc<dyn Executions>) -> Self {
        self.executions = Some(executions);
        self
    }

    /// The same, applying `sets` (the command's `--set` overrides) on top of a reloaded file too.
    #[must_use]
    pub fn with_sets(mut self, sets: Vec<String>) -> Self {
        self.sets = sets;
        self
    }

    /// The settings jobs run with: the ones given, or the file's newer contents when they changed since (a
    /// change that does not load keeps the last good settings).
    pub fn settings(&self) -> Option<Settings> {
        let given = self.settings.as_ref()?;
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(known) = current.as_mut() else { return Some(given.clone()) };
        let file = given.paths.config_file.as_deref()?;
        let Ok(meta) = std::fs::metadata(file) else { return Some(known.settings.clone()) };
        if stamp_of(&meta) == known.stamp {
            return Some(known.settings.clone());
        }
        let Some((stamp, hash)) = read_stamp(file) else { return Some(known.settings.clone()) };
        known.stamp = stamp;
        if hash != known.hash {
            match self.reload(given) {
                Ok(settings) => {
                    tracing::info!(file = %file.display(), "configuration changed; jobs use the new one");
                    known.settings = settings;
                    known.hash = hash;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the changed configuration does not load; jobs keep the last one");
                }
            }
        }
        Some(known.settings.clone())
    }

    fn reload(&self, given: &Settings) -> Result<Settings, crate::config::ConfigError> {
        let options = crate::config::LoadOptions {
            start_dir: given.paths.repo_root.clone(),
            config_file: given.paths.config_file.clone(),
            sets: self.sets.clone(),
        };
        let mut settings = Settings::load(&options, &EnvVars::from_inherited(self.base_env.clone()))?;
        // Where state lives does not move under a running worker.
        settings.paths = given.paths.clone();
        Ok(settings)
    }
}

type Stamp = (std::time::SystemTime, u64);

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    (meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len())
}

/// A file's modification time and size, and a hash of its contents.
fn read_stamp(file: &std::path::Path) -> Option<(Stamp, u64)> {
    use std::hash::{Hash as _, Hasher as _};
    let meta = std::fs::metadata(file).ok()?;
    let bytes = std::fs::read(file).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some((stamp_of(&meta), hasher.finish()))
}

/// `command.exec`'s payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecPayload {
    command: String,
    target: Option<String>,
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    timeout: Option<serde_json::Value>,
}

/// `test.run`'s payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestPayload {
    service: String,
    target: Option<String>,
    /// Only these tests (the ones that failed last time), when the runner can be told so.
    #[serde(default)]
    only: Vec<String>,
}

fn bad_payload(job: &Job, why: impl std::fmt::Display) -> Finish {
    Finish::Failed { error: format!("malformed payload for {}: {why}", job.job_type), retry: false }
}

fn timeout_of(value: Option<&serde_json::Value>) -> Result<Option<Duration>, String> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(|s| Some(Duration::from_secs(s)))
            .ok_or_else(|| format!("timeout {n} is not a whole number of seconds")),
        Some(serde_json::Value::String(s)) => {
            humantime::parse_duration(s).map(Some).map_err(|e| format!("timeout `{s}`: {e}"))
        }
        Some(other) => Err(format!("timeout {other} is neither seconds nor text such as \"30s\"")),
    }
}

/// Where and with what a job's command runs: the variables envctl adds, the target's root (the job's `cwd` may
/// not leave it) and the directory it starts in when the payload names none.
#[derive(Debug, Clone)]
struct Place {
    vars: BTreeMap<String, String>,
    root: PathBuf,
    dir: Option<PathBuf>,
    /// The Postgres databases the service uses (none for a target's place).
    postgres: Vec<crate::plan::Database>,
}

fn planning_env(ctx: &HandlerContext) -> EnvVars {
    EnvVars::from_pairs(ctx.base_env.get("PATH").map(|p| ("PATH", p.as_str())))
}

fn in_repository<'a>(settings: Option<&'a Settings>, target: &str) -> Result<&'a Settings, String> {
    settings.ok_or_else(|| {
        format!("this worker runs outside a repository, so it cannot run for target `{target}`")
    })
}

/// A target's environment and root, as `envctl env` computes it (requirement variables and `ENVCTL_TARGET`);
/// outside any target, the worker's directory.
fn target_place(
    ctx: &HandlerContext,
    settings: Option<&Settings>,
    target: Option<&str>,
) -> Result<Place, String> {
    let Some(target) = target else {
        let root = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        return Ok(Place { vars: BTreeMap::new(), root, dir: None, postgres: Vec::new() });
    };
    let settings = in_repository(settings, target)?;
    let (vars, root) =
        crate::plan::target_env(settings, target, &planning_env(ctx)).map_err(|e| e.to_string())?;
    Ok(Place { vars, root, dir: None, postgres: Vec::new() })
}

/// A service's environment in a target, exactly what `envctl env --service` prints, in the service's directory.
/// `databases` replaces the database of some of its Postgres requirements (a suite's throwaway copies).
fn service_place(
    ctx: &HandlerContext,
    settings: &Settings,
    (target, service): (&str, &str),
    databases: &BTreeMap<String, String>,
) -> Result<Place, String> {
    let found = crate::plan::service_env(settings, target, service, &planning_env(ctx), databases)
        .map_err(|e| e.to_string())?;
    Ok(Place { vars: found.vars, root: found.root, dir: Some(found.cwd), postgres: found.postgres })
}

/// The name of a suite's copy of `database`: `<database>_test_<hash of database><job>`, at most 63 bytes; two
/// databases whose names share a long prefix still get copies of their own.
fn test_database_name(database: &str, job_id: &str) -> String {
    let job: String = job_id.chars().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
    let hash = crate::state::fnv1a(database.as_bytes()) & 0xffff_ffff;
    let suffix = format!("_test_{hash:08x}{}", job.to_ascii_lowercase());
    let mut keep = 63usize.saturating_sub(suffix.len()).min(database.len());
    while !database.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &database[..keep])
}

/// Appends `line` to the job's log.
async fn note(store: &Arc<dyn JobStore>, job: &Job, line: String) {
    let (store, id) = (Arc::clone(store), job.id.clone());
    let _ = tokio::task::spawn_blocking(move || store.log(&id, &[line])).await;
}

/// Runs a service's test suite against fresh copies of the Postgres databases it uses (dropped afterwards,
/// however the suite ends), so a suite that deletes rows in its teardown never touches development data.
#[allow(clippy::too_many_arguments)]
async fn exec_on_copies(
    ctx: &HandlerContext,
    settings: &Settings,
    store: &Arc<dyn JobStore>,
    job: &Job,
    command: &str,
    (target, service): (&str, &str),
    place: &Place,
    timeout: Option<Duration>,
    cancel: CancellationToken,
) -> Finish {
    let mut copies: Vec<(u16, String, Option<String>)> = Vec::new();
    let mut databases = BTreeMap::new();
    let scratch = settings.paths.scope_dir.join("data").join("postgres-copies");
    let mut failure = None;
    for db in &place.postgres {
        let copy = test_database_name(&db.name, &job.id);
        let copy_job = crate::requirements::postgres::CopyJob {
            port: db.port,
            bin_dir: &db.bin_dir,
            scratch: &scratch,
            password: db.password.as_deref(),
        };
        match crate::requirements::postgres::copy_for_tests(&copy_job, &db.name, &copy).await {
            Ok(how) => {
                note(
                    store,
                    job,
                    format!("envctl: tests run against {copy}, {how}; it is dropped afterwards"),
                )
                .await;
                copies.push((db.port, copy.clone(), db.password.clone()));
                databases.insert(db.requirement.clone(), copy);
            }
            Err(e) => {
                failure = Some(format!(
                    "cannot copy database {} for the tests of {target}/{service}: {e}\nhint: start the target first (`envctl start`), or set `services.{service}.test_database = \"target\"` to run against it directly",
                    db.name
                ));
                break;
            }
        }
    }
    let finish = match failure {
        Some(error) => Finish::Failed { error, retry: false },
        None => match service_place(ctx, settings, (target, service), &databases) {
            Ok(on_copies) => {
                exec(ctx, store, job, command, &on_copies, None, BTreeMap::new(), timeout, cancel).await
            }
            Err(error) => Finish::Failed { error, retry: false },
        },
    };
    for (port, copy, password) in copies {
        let login =
            crate::requirements::pgwire::Login::new(crate::requirements::PG_USER, password.as_deref());
        if let Err(e) = crate::requirements::postgres::drop_database(port, login, &copy).await {
            note(store, job, format!("envctl: could not drop {copy}: {e}")).await;
        }
    }
    finish
}

/// `text` of key `what` with its placeholders filled in for `target`, as a service's command is.
fn fill(settings: &Settings, target: &str, service: &str, what: &str, text: &str) -> Result<String, String> {
    crate::plan::fill_command(settings, target, service, (what, text)).map_err(|e| e.to_string())
}

/// How `job` ends when its handler does all its work in the worker's own thread at once (`noop`): the worker records
/// that without starting a task for it. `None` for every handler that waits on something (a process, the store).
pub fn immediate(job: &Job) -> Option<Finish> {
    (job.job_type == "noop").then_some(Finish::Succeeded(serde_json::Value::Null))
}

/// Runs `job` to its end (or until `cancel`), logging its output to the store.
pub async fn run(
    ctx: &HandlerContext,
    store: &Arc<dyn JobStore>,
    job: &Job,
    cancel: CancellationToken,
) -> Finish {
    match job.job_type.as_str() {
        "noop" => Finish::Succeeded(serde_json::Value::Null),
        "command.exec" => {
            let payload: ExecPayload = match serde_json::from_value(job.payload.clone()) {
                Ok(p) => p,
                Err(e) => return bad_payload(job, e),
            };
            let timeout = match timeout_of(payload.timeout.as_ref()) {
                Ok(t) => t,
                Err(e) => return bad_payload(job, e),
            };
            let settings = ctx.settings();
            let target = payload.target.as_deref().or(job.target.as_deref());
            let place = match target_place(ctx, settings.as_ref(), target) {
                Ok(place) => place,
                Err(error) => return Finish::Failed { error, retry: false },
            };
            exec(
                ctx,
                store,
                job,
                &payload.command,
                &place,
                payload.cwd.as_deref(),
                payload.env,
                timeout,
                cancel,
            )
            .await
        }
        "test.run" | "migrate.run" => run_suite(ctx, store, job, cancel).await,
        user => {
            match ctx.settings().and_then(|s| s.config.jobs.types.get(user).cloned().map(|kind| (s, kind))) {
                Some((settings, kind)) => {
                    let timeout = kind.timeout_secs.map(Duration::from_secs);
                    let env: BTreeMap<String, String> = job
                        .payload
                        .get("env")
                        .and_then(|e| serde_json::from_value(e.clone()).ok())
                        .unwrap_or_default();
                    let command = match type_command(&settings, job, user, &kind.command) {
                        Ok(command) => command,
                        Err(error) => return Finish::Failed { error, retry: false },
                    };
                    let place = match target_place(ctx, Some(&settings), job.target.as_deref()) {
                        Ok(place) => place,
                        Err(error) => return Finish::Failed { error, retry: false },
                    };
                    exec(ctx, store, job, &command, &place, None, env, timeout, cancel).await
                }
                None => Finish::Failed {
                    error: format!(
                        "unknown job type `{user}`; built in: noop, command.exec, test.run, migrate.run; others come from [jobs.types.<name>]"
                    ),
                    retry: false,
                },
            }
        }
    }
}

/// `test.run` and `migrate.run`: a service's `test` or `migrate` command, in its directory and environment, with
/// its time limit; a test suite against throwaway copies of its databases unless the service says otherwise.
async fn run_suite(
    ctx: &HandlerContext,
    store: &Arc<dyn JobStore>,
    job: &Job,
    cancel: CancellationToken,
) -> Finish {
    let payload: TestPayload = match serde_json::from_value(job.payload.clone()) {
        Ok(p) => p,
        Err(e) => return bad_payload(job, e),
    };
    // One look at the configuration for the whole job.
    let settings = ctx.settings();
    let service = settings.as_ref().and_then(|s| s.config.services.get(&payload.service));
    let (Some(settings), Some(service)) = (settings.as_ref(), service) else {
        return bad_payload(job, format!("no service `{}` in this repository", payload.service));
    };
    let (key, command) = if job.job_type == "test.run" {
        ("test", service.test.clone())
    } else {
        ("migrate", service.migrate.clone())
    };
    let Some(test) = command else {
        return Finish::Failed {
            error: format!("service `{}` has no `{key}` command", payload.service),
            retry: false,
        };
    };
    let target = payload.target.or_else(|| job.target.clone()).unwrap_or_else(|| "main".into());
    let what = format!("services.{}.{key}", payload.service);
    let test = match fill(settings, &target, &payload.service, &what, &test) {
        Ok(filled) => filled,
        Err(error) => return Finish::Failed { error, retry: false },
    };
    let command = super::suites::narrow(&test, &payload.only).unwrap_or(test);
    let place = match service_place(ctx, settings, (&target, &payload.service), &BTreeMap::new()) {
        Ok(place) => place,
        Err(error) => return Finish::Failed { error, retry: false },
    };
    let limit =
        if job.job_type == "test.run" { service.test_timeout_secs } else { service.migrate_timeout_secs };
    let timeout = Some(Duration::from_secs(limit));
    let on_copies = job.job_type == "test.run"
        && service.test_database == envctl_contracts::config::TestDatabase::Clone
        && !place.postgres.is_empty();
    if on_copies {
        let names = (target.as_str(), payload.service.as_str());
        return exec_on_copies(ctx, settings, store, job, &command, names, &place, timeout, cancel).await;
    }
    exec(ctx, store, job, &command, &place, None, BTreeMap::new(), timeout, cancel).await
}

/// A user job type's command with its placeholders filled in for the job's target; one that has placeholders
/// needs a target.
fn type_command(settings: &Settings, job: &Job, name: &str, command: &str) -> Result<String, String> {
    let what = format!("jobs.types.{name}.command");
    match job.target.as_deref() {
        Some(target) => fill(settings, target, name, &what, command),
        None if crate::config::template::placeholders(command).is_empty() => Ok(command.to_owned()),
        None => Err(format!(
            "{what} has placeholders, which are filled in for a target; enqueue it with `--target <name>`"
        )),
    }
}

/// `cwd` (relative to `root`, or `root` itself) when it stays inside `root` once `..` and symlinks are resolved:
/// a job's working directory never leaves its target's checkout.
fn within(root: &std::path::Path, cwd: Option<&str>) -> Result<PathBuf, String> {
    let Some(cwd) = cwd else { return Ok(root.to_path_buf()) };
    let dir = root.join(cwd);
    let real_root = root.canonicalize().map_err(|e| format!("{}: {e}", root.display()))?;
    let real = dir.canonicalize().map_err(|e| format!("cwd `{cwd}`: {}: {e}", dir.display()))?;
    if real.starts_with(&real_root) {
        Ok(real)
    } else {
        Err(format!(
            "cwd `{cwd}` leaves the target's checkout ({} is outside {}); a job runs inside its checkout",
            real.display(),
            real_root.display()
        ))
    }
}

/// Runs a shell command in its own process group, streaming its output into the job's log.
#[allow(clippy::too_many_arguments)]
async fn exec(
    ctx: &HandlerContext,
    store: &Arc<dyn JobStore>,
    job: &Job,
    command: &str,
    place: &Place,
    cwd: Option<&str>,
    env: BTreeMap<String, String>,
    timeout: Option<Duration>,
    cancel: CancellationToken,
) -> Finish {
    let dir = match (cwd, &place.dir) {
        (None, Some(dir)) => dir.clone(),
        _ => match within(&place.root, cwd) {
            Ok(dir) => dir,
            Err(error) => return Finish::Failed { error, retry: false },
        },
    };
    // The attempt's token is never logged nor stored: it lives in the process's environment alone.
    let api = ctx.executions.as_ref().map(|e| e.begin(job, timeout)).unwrap_or_default();
    let envs = [&ctx.base_env, &place.vars, &env, &api];
    let finish = exec_process(store, job, command, &dir, envs, timeout, cancel).await;
    if let Some(executions) = &ctx.executions {
        executions.end(job, &finish);
    }
    finish
}

/// [`exec`]'s process: `envs` are the inherited environment, the place's, the job's own and the runtime API's.
async fn exec_process(
    store: &Arc<dyn JobStore>,
    job: &Job,
    command: &str,
    dir: &std::path::Path,
    envs: [&BTreeMap<String, String>; 4],
    timeout: Option<Duration>,
    cancel: CancellationToken,
) -> Finish {
    if job.attempts > 1 {
        // An earlier attempt whose worker was killed may still run: it is stopped before this one starts.
        let id = vec![job.id.clone()];
        let _ = tokio::task::spawn_blocking(move || stop_earlier_attempts(&id)).await;
    }
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.args(["-c", command])
        .current_dir(dir)
        .env_clear()
        .envs(envs.into_iter().flatten())
        .env("ENVCTL_JOB_ID", &job.id)
        .env(crate::supervisor::proc_info::ROLE_VAR, "job")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Finish::Failed {
                error: format!("cannot run `{command}` in {}: {e}", dir.display()),
                retry: true,
            };
        }
    };
    let pid = child.id().unwrap_or_default();
    let started = crate::supervisor::proc_info::start_time(pid).unwrap_or_default();
    // A script that prints its environment (`env`, `set -x`) must not put the runtime API's token in its log.
    let tokens: Vec<String> = envs[3]
        .iter()
        .filter(|(k, v)| k.ends_with("_TOKEN") && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect();
    let logger = stream_output(store, &job.id, &mut child, tokens);
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let finish = tokio::select! {
        status = child.wait() => match status {
            Ok(s) if s.success() => Finish::Succeeded(serde_json::json!({"exit_code": 0})),
            Ok(s) => Finish::Failed { error: s.code().map_or_else(|| "killed by a signal".to_owned(), |c| format!("exited with code {c}")), retry: true },
            Err(e) => Finish::Failed { error: e.to_string(), retry: true },
        },
        () = cancel.cancelled() => { kill_group(pid, started); let _ = child.wait().await; Finish::Cancelled }
        () = deadline => {
            kill_group(pid, started);
            let _ = child.wait().await;
            Finish::Failed { error: format!("timed out after {} s", timeout.map_or(0, |t| t.as_secs())), retry: true }
        }
    };
    kill_group(pid, started);
    let _ = logger.await;
    finish
}

/// Copies the child's stdout and stderr, line by line, into the job's log (in batches), each of `tokens`
/// replaced wherever it stands.
fn stream_output(
    store: &Arc<dyn JobStore>,
    job_id: &str,
    child: &mut tokio::process::Child,
    tokens: Vec<String>,
) -> tokio::task::JoinHandle<()> {
    let mut rx = crate::supervisor::logs::output_lines(child);
    {
        let (store, id) = (Arc::clone(store), job_id.to_owned());
        tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                let more = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
                match more {
                    Ok(Some(mut line)) => {
                        for token in &tokens {
                            if line.contains(token.as_str()) {
                                line = line.replace(token.as_str(), crate::state::redact::REDACTED);
                            }
                        }
                        batch.push(line);
                        if batch.len() < 200 {
                            continue;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
                if !batch.is_empty() {
                    let (s, id, lines) = (Arc::clone(&store), id.clone(), std::mem::take(&mut batch));
                    let _ = tokio::task::spawn_blocking(move || s.log(&id, &lines)).await;
                }
            }
            if !batch.is_empty() {
                let _ = tokio::task::spawn_blocking(move || store.log(&id, &batch)).await;
            }
        })
    }
}

/// Stops what is left of earlier attempts of `jobs`: a worker killed with SIGKILL leaves its jobs' process groups
/// running with no owner, and its jobs are run again elsewhere. They are found by the marks every job process
/// carries (`ENVCTL_ROLE=job`, `ENVCTL_JOB_ID`), and each is SIGKILLed with its group while its pid still names the
/// process with that start time. Returns how many processes were found.
pub fn stop_earlier_attempts(jobs: &[String]) -> usize {
    let strays = crate::supervisor::proc_info::of_jobs(jobs);
    for &(pid, started) in &strays {
        crate::supervisor::signal::signal_all(
            pid,
            started,
            &[(pid, started)],
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    strays.len()
}

/// SIGKILL to the job's process group (its shell and everything it started), unless the pid now names another
/// program.
fn kill_group(pid: u32, started: u64) {
    crate::supervisor::signal::signal_all(pid, started, &[], nix::sys::signal::Signal::SIGKILL);
}
