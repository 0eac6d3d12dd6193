//! Preparing a checkout before its services start: `[setup]` for the whole checkout and each service's `setup`
//! (`uv sync`, `npm ci`). A step runs before the first start of a checkout and again whenever its command or one
//! of its `inputs` (lock files) changes; what it ran with last is kept per target under the scope directory.
//!
//! A step runs in the checkout with the environment its service gets (`envctl env --service`), so `uv sync` sees
//! the same variables the service will; its output goes to a log file and, line by line, to the caller.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{EnvVars, Settings};
use crate::plan::{PortTable, explain};
use crate::targets::Target;

/// One setup step of one target.
#[derive(Debug, Clone)]
pub struct Step {
    /// Target.
    pub target: String,
    /// `setup` for the checkout's own step, else the service's name.
    pub name: String,
    /// The shell command line.
    pub command: String,
    /// Where it runs.
    pub dir: PathBuf,
    /// The variables it gets on top of the inherited environment.
    pub env: BTreeMap<String, String>,
    /// Files whose contents decide whether it runs again (relative to `dir`).
    pub inputs: Vec<String>,
    /// Time limit.
    pub timeout: Duration,
}

/// Why a step runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It never ran in this checkout (or never succeeded).
    First,
    /// Its command changed.
    Command,
    /// These inputs changed (or appeared, or went away).
    Inputs(Vec<String>),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::First => f.write_str("first start of this checkout"),
            Self::Command => f.write_str("its command changed"),
            Self::Inputs(files) => write!(f, "{} changed", files.join(", ")),
        }
    }
}

/// A step that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// It exited non-zero.
    #[error("setup `{command}` of {target}/{name} exited with {status}{}\nlog: {log}\nhint: fix it and run `envctl start` again (setup runs again until it succeeds)", tail_text(.tail))]
    Failed {
        /// Target.
        target: String,
        /// Step.
        name: String,
        /// Command.
        command: String,
        /// How it ended.
        status: String,
        /// The last lines of its output.
        tail: Vec<String>,
        /// Its log.
        log: String,
    },
    /// It ran past its timeout.
    #[error("setup `{command}` of {target}/{name} timed out after {secs} s and was stopped{}\nlog: {log}\nhint: raise `setup_timeout` (or `[setup] timeout`) if it needs longer", tail_text(.tail))]
    TimedOut {
        /// Target.
        target: String,
        /// Step.
        name: String,
        /// Command.
        command: String,
        /// The limit.
        secs: u64,
        /// The last lines of its output.
        tail: Vec<String>,
        /// Its log.
        log: String,
    },
    /// It could not be started, or its record could not be kept.
    #[error("setup of {target}/{name}: {detail}")]
    Io {
        /// Target.
        target: String,
        /// Step.
        name: String,
        /// What went wrong.
        detail: String,
    },
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its last lines:\n{}", tail.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"))
    }
}

/// The setup steps of `targets`: the checkout's `[setup]` first, then each service's that runs there (only
/// `services` when some are named).
pub fn steps(
    settings: &Settings,
    targets: &[&Target],
    ports: &PortTable,
    env: &EnvVars,
    services: &[String],
) -> Vec<Step> {
    let config = &settings.config;
    let wanted = |name: &str| services.is_empty() || services.iter().any(|s| s == name);
    let needs_plan = config.services.iter().any(|(n, s)| s.setup.is_some() && wanted(n));
    let plan = needs_plan.then(|| explain(settings, targets, ports, env));
    let mut out = Vec::new();
    for target in targets {
        if let Some(setup) = &config.setup {
            out.push(Step {
                target: target.name.clone(),
                name: "setup".into(),
                command: setup.command.clone(),
                dir: target.root.clone(),
                env: BTreeMap::from([("ENVCTL_TARGET".to_owned(), target.name.clone())]),
                inputs: setup.inputs.clone(),
                timeout: Duration::from_secs(setup.timeout_secs),
            });
        }
        let planned = plan.as_ref().and_then(|p| p.targets.iter().find(|t| t.name == target.name));
        for service in planned.into_iter().flat_map(|t| &t.services) {
            let Some(step) = config
                .services
                .get(&service.name)
                .and_then(envctl_contracts::config::ServiceConfig::setup_step)
            else {
                continue;
            };
            if !wanted(&service.name) {
                continue;
            }
            out.push(Step {
                target: target.name.clone(),
                name: service.name.clone(),
                command: step.command,
                dir: PathBuf::from(&service.cwd),
                env: service.env.clone(),
                inputs: step.inputs,
                timeout: Duration::from_secs(step.timeout_secs),
            });
        }
    }
    out
}

/// What a step ran with last time it succeeded: its command and each input's sha256 (`missing` when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    /// The command.
    pub command: String,
    /// Input → sha256.
    pub inputs: BTreeMap<String, String>,
}

impl Fingerprint {
    /// The step's fingerprint now.
    pub fn of(step: &Step) -> Self {
        let inputs = step
            .inputs
            .iter()
            .map(|input| {
                let digest = std::fs::read(step.dir.join(input))
                    .map_or_else(|_| "missing".to_owned(), |bytes| crate::state::sha256_hex(&bytes));
                (input.clone(), digest)
            })
            .collect();
        Self { command: step.command.clone(), inputs }
    }
}

/// Where a target's setup record lives.
fn record_path(settings: &Settings, target: &str) -> PathBuf {
    settings.paths.scope_dir.join("setup").join(format!("{target}.json"))
}

fn read_record(settings: &Settings, target: &str) -> BTreeMap<String, Fingerprint> {
    std::fs::read(record_path(settings, target))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Whether `step` runs now, and why.
pub fn reason(settings: &Settings, step: &Step) -> Option<Reason> {
    let now = Fingerprint::of(step);
    let Some(last) = read_record(settings, &step.target).remove(&step.name) else {
        return Some(Reason::First);
    };
    if last.command != now.command {
        return Some(Reason::Command);
    }
    let changed: Vec<String> =
        now.inputs.iter().filter(|(k, v)| last.inputs.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect();
    (!changed.is_empty()).then_some(Reason::Inputs(changed))
}

/// Remembers that `step` succeeded with `print`.
fn remember(settings: &Settings, step: &Step, print: Fingerprint) -> std::io::Result<()> {
    let mut record = read_record(settings, &step.target);
    record.insert(step.name.clone(), print);
    let path = record_path(settings, &step.target);
    if let Some(dir) = path.parent() {
        crate::state::create_private_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    crate::state::write_atomic(&path, &bytes)
}

/// The log of a target's setup step.
pub fn log_path(settings: &Settings, step: &Step) -> PathBuf {
    settings.paths.scope_dir.join("logs").join(format!("{}.{}.setup.log", step.target, step.name))
}

/// Runs `step` with `base_env` under its variables, its output appended to its log and passed to `line`; on
/// success remembers its fingerprint (taken before it ran, so an input it rewrites runs it once more, never a step that missed a change).
pub async fn run(
    settings: &Settings,
    step: &Step,
    base_env: &BTreeMap<String, String>,
    mut line: impl FnMut(&str),
) -> Result<Duration, SetupError> {
    let began = Instant::now();
    let io = |detail: String| SetupError::Io { target: step.target.clone(), name: step.name.clone(), detail };
    let print = Fingerprint::of(step);
    let log = log_path(settings, step);
    if let Some(dir) = log.parent() {
        crate::state::create_private_dir_all(dir).map_err(|e| io(format!("{}: {e}", dir.display())))?;
    }
    let mut log_file =
        crate::state::open_private_append(&log).map_err(|e| io(format!("{}: {e}", log.display())))?;
    let mut child = tokio::process::Command::new("/bin/sh")
        .args(["-c", &step.command])
        .current_dir(&step.dir)
        .env_clear()
        .envs(base_env)
        .envs(&step.env)
        .env(crate::supervisor::proc_info::ROLE_VAR, "setup")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io(format!("cannot run `{}` in {}: {e}", step.command, step.dir.display())))?;
    let pid = child.id().unwrap_or_default();
    let started = crate::supervisor::proc_info::start_time(pid).unwrap_or_default();
    let mut rx = crate::supervisor::logs::output_lines(&mut child);
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut keep = |text: String, line: &mut dyn FnMut(&str)| {
        use std::io::Write as _;
        let _ = writeln!(log_file, "{text}");
        line(&text);
        if tail.len() == 20 {
            tail.pop_front();
        }
        tail.push_back(text);
    };
    let deadline = tokio::time::sleep(step.timeout);
    tokio::pin!(deadline);
    let status = loop {
        tokio::select! {
            Some(text) = rx.recv() => keep(text, &mut line),
            status = child.wait() => break Some(status),
            () = &mut deadline => break None,
        }
    };
    let Some(status) = status else {
        crate::supervisor::signal::signal_all(pid, started, &[], nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait().await;
        while let Ok(text) = rx.try_recv() {
            keep(text, &mut line);
        }
        return Err(SetupError::TimedOut {
            target: step.target.clone(),
            name: step.name.clone(),
            command: step.command.clone(),
            secs: step.timeout.as_secs(),
            tail: tail.into(),
            log: log.display().to_string(),
        });
    };
    // What it printed before exiting (its pipes close once every process holding them is gone).
    while let Ok(Some(text)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        keep(text, &mut line);
    }
    crate::supervisor::signal::signal_all(pid, started, &[], nix::sys::signal::Signal::SIGKILL);
    match status {
        Ok(s) if s.success() => {
            remember(settings, step, print).map_err(|e| io(format!("cannot record that it ran: {e}")))?;
            Ok(began.elapsed())
        }
        Ok(s) => Err(SetupError::Failed {
            target: step.target.clone(),
            name: step.name.clone(),
            command: step.command.clone(),
            status: s.code().map_or_else(|| "a signal".to_owned(), |c| format!("code {c}")),
            tail: tail.into(),
            log: log.display().to_string(),
        }),
        Err(e) => Err(io(e.to_string())),
    }
}
