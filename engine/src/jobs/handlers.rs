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
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::store::{Finish, JobStore};
use crate::config::{EnvVars, Settings};

/// What handlers need from the outside: the repository's settings (when the worker runs in one) and the
/// environment commands inherit.
#[derive(Debug, Clone)]
pub struct HandlerContext {
    /// Settings, when the worker runs inside a repository.
    pub settings: Option<Settings>,
    /// The environment commands inherit.
    pub base_env: BTreeMap<String, String>,
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

/// A target's environment and root, as `envctl env` computes it (requirement variables and `ENVCTL_TARGET`).
fn target_env(ctx: &HandlerContext, target: &str) -> Result<(BTreeMap<String, String>, PathBuf), String> {
    let Some(settings) = &ctx.settings else {
        return Err(format!("this worker runs outside a repository, so it cannot run for target `{target}`"));
    };
    let env = EnvVars::from_pairs(ctx.base_env.get("PATH").map(|p| ("PATH", p.as_str())));
    crate::plan::target_env(settings, target, &env).map_err(|e| e.to_string())
}

/// `text` of key `what` with its placeholders filled in for `target`, as a service's command is.
fn fill(ctx: &HandlerContext, target: &str, service: &str, what: &str, text: &str) -> Result<String, String> {
    let Some(settings) = &ctx.settings else { return Ok(text.to_owned()) };
    crate::plan::fill_command(settings, target, service, (what, text)).map_err(|e| e.to_string())
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
            exec(
                ctx,
                store,
                job,
                &payload.command,
                payload.target.as_deref(),
                payload.cwd.as_deref(),
                payload.env,
                timeout,
                cancel,
            )
            .await
        }
        "test.run" | "migrate.run" => {
            let payload: TestPayload = match serde_json::from_value(job.payload.clone()) {
                Ok(p) => p,
                Err(e) => return bad_payload(job, e),
            };
            let service = ctx.settings.as_ref().and_then(|s| s.config.services.get(&payload.service));
            let Some(service) = service else {
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
            let test = match fill(ctx, &target, &payload.service, &what, &test) {
                Ok(filled) => filled,
                Err(error) => return Finish::Failed { error, retry: false },
            };
            let command = super::suites::narrow(&test, &payload.only).unwrap_or(test);
            exec(
                ctx,
                store,
                job,
                &command,
                Some(&target),
                service.cwd.as_deref(),
                BTreeMap::new(),
                None,
                cancel,
            )
            .await
        }
        user => match ctx.settings.as_ref().and_then(|s| s.config.jobs.types.get(user)) {
            Some(kind) => {
                let timeout = kind.timeout_secs.map(Duration::from_secs);
                let env: BTreeMap<String, String> = job
                    .payload
                    .get("env")
                    .and_then(|e| serde_json::from_value(e.clone()).ok())
                    .unwrap_or_default();
                let command = match type_command(ctx, job, user, &kind.command) {
                    Ok(command) => command,
                    Err(error) => return Finish::Failed { error, retry: false },
                };
                exec(ctx, store, job, &command, job.target.as_deref(), None, env, timeout, cancel).await
            }
            None => Finish::Failed {
                error: format!(
                    "unknown job type `{user}`; built in: noop, command.exec, test.run, migrate.run; others come from [jobs.types.<name>]"
                ),
                retry: false,
            },
        },
    }
}

/// A user job type's command with its placeholders filled in for the job's target; one that has placeholders
/// needs a target.
fn type_command(ctx: &HandlerContext, job: &Job, name: &str, command: &str) -> Result<String, String> {
    let what = format!("jobs.types.{name}.command");
    match job.target.as_deref() {
        Some(target) => fill(ctx, target, name, &what, command),
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
    target: Option<&str>,
    cwd: Option<&str>,
    env: BTreeMap<String, String>,
    timeout: Option<Duration>,
    cancel: CancellationToken,
) -> Finish {
    let target = target.or(job.target.as_deref());
    let (target_vars, root) = match target {
        Some(t) => match target_env(ctx, t) {
            Ok(found) => found,
            Err(e) => return Finish::Failed { error: e, retry: false },
        },
        None => (BTreeMap::new(), std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))),
    };
    let dir = match within(&root, cwd) {
        Ok(dir) => dir,
        Err(error) => return Finish::Failed { error, retry: false },
    };
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.args(["-c", command])
        .current_dir(&dir)
        .env_clear()
        .envs(&ctx.base_env)
        .envs(&target_vars)
        .envs(&env)
        .env("ENVCTL_JOB_ID", &job.id)
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
    let logger = stream_output(store, &job.id, &mut child);
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

/// Copies the child's stdout and stderr, line by line, into the job's log (in batches).
fn stream_output(
    store: &Arc<dyn JobStore>,
    job_id: &str,
    child: &mut tokio::process::Child,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<_>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    {
        let (store, id) = (Arc::clone(store), job_id.to_owned());
        tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                let more = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
                match more {
                    Ok(Some(line)) => {
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

/// SIGKILL to the job's process group (its shell and everything it started), unless the pid now names another
/// program.
fn kill_group(pid: u32, started: u64) {
    crate::supervisor::signal::signal_all(pid, started, &[], nix::sys::signal::Signal::SIGKILL);
}
