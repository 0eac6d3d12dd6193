//! `envctl jobs enqueue | list | show | logs | cancel | retry | stats | purge`.

use std::fmt::Write as _;
use std::time::Duration;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::config::Priority;
use envctl_contracts::jobs::{JobList, JobStatus, WorkerState};

use crate::jobs::cancel::CancelOutcome;
use crate::jobs::{ListFilter, NewJob};
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::ui::Table;

/// Jobs enqueued per transaction with `--count`.
const BATCH: usize = 1000;

/// `envctl jobs …`.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub enum JobsCommand {
    /// Enqueue a job (prints its id; `--count N` enqueues N copies).
    Enqueue(EnqueueArgs),
    /// List jobs, newest first.
    List(ListArgs),
    /// Show one job.
    Show(ShowArgs),
    /// Print a job's log (and follow it while the job runs).
    Logs(LogsArgs),
    /// Report a running job's progress (jobs call this with their own `$ENVCTL_JOB_ID`).
    Progress(ProgressArgs),
    /// Cancel a job (a running one is stopped by its worker, wherever it runs; waits up to `--wait` to say how it ended).
    Cancel(CancelArgs),
    /// Queue a failed, dead or cancelled job again.
    Retry(RetryArgs),
    /// Counts by status, throughput, run time, success rate and workers.
    Stats(StatsArgs),
    /// Delete finished jobs older than a duration, and/or every dead job.
    Purge(PurgeArgs),
}

// Arguments of `jobs enqueue`.
#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    /// Job type: `noop`, `command.exec`, `test.run`, or a `[jobs.types.<name>]` name (with `--stdin`: the type
    /// of lines that name none).
    #[arg(value_name = "TYPE", required_unless_present = "stdin", add = super::completions::types())]
    pub job_type: Option<String>,
    /// JSON payload.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Target it runs for.
    #[arg(long)]
    pub target: Option<String>,
    /// low, normal, high or critical (default: the type's, else normal).
    #[arg(long)]
    pub priority: Option<String>,
    /// Run no earlier than this from now (`30s`, `5m`).
    #[arg(long)]
    pub delay: Option<String>,
    /// Attempts before the job is dead (default: the type's, else 3).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Enqueue this many copies.
    #[arg(long, default_value_t = 1, conflicts_with = "stdin")]
    pub count: usize,
    /// JSON the job reads through the runtime API (`envctl job input`).
    #[arg(long, value_name = "JSON")]
    pub input: Option<String>,
    /// Wait for this job to end first (repeatable): run when every one succeeded and none set
    /// `condition = false`, else end `skipped`.
    #[arg(long, value_name = "ID", conflicts_with = "delay")]
    pub after: Vec<String>,
    /// Read one job per line of stdin, as JSON (`{"type": "lint", "payload": {…}, "target": "main",
    /// "priority": "high", "delay": "30s", "max_attempts": 2}`; every key optional but a type), and enqueue each
    /// as it arrives, over one connection, printing its id (lines already waiting go in one batch).
    #[arg(long)]
    pub stdin: bool,
}

/// One line of `jobs enqueue --stdin`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JobLine {
    #[serde(rename = "type")]
    job_type: Option<String>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    target: Option<String>,
    priority: Option<String>,
    delay: Option<String>,
    max_attempts: Option<u32>,
    input: Option<serde_json::Value>,
    #[serde(default)]
    after: Vec<String>,
}

// Arguments of `jobs list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this status.
    #[arg(long)]
    pub status: Option<String>,
    /// Only this type.
    #[arg(long = "type", add = super::completions::types())]
    pub job_type: Option<String>,
    /// Only this target.
    #[arg(long)]
    pub target: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Skip this many.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

// Arguments of `jobs show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Job id.
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

// Arguments of `jobs logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Job id.
    pub id: String,
    /// Keep printing until the job finishes.
    #[arg(short, long)]
    pub follow: bool,
}

// Arguments of `jobs progress`.
#[derive(Debug, clap::Args)]
pub struct ProgressArgs {
    /// Job id.
    pub id: String,
    /// 0–100.
    #[arg(long)]
    pub percent: Option<f64>,
    /// Current step.
    #[arg(long)]
    pub step: Option<String>,
    /// Free text.
    #[arg(long)]
    pub detail: Option<String>,
}

// Arguments of `jobs cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// Job id.
    pub id: String,
    /// How long to wait for a running job's worker to stop it (`5s`, `500ms`).
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub wait: String,
    /// Ask for the cancel and return without waiting.
    #[arg(long, conflicts_with = "wait")]
    pub no_wait: bool,
}

// Arguments of `jobs retry`.
#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// Job id.
    pub id: String,
}

// Arguments of `jobs stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

// Arguments of `jobs purge`.
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// Finished more than this long ago (`7d`, `12h`).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Also every dead job.
    #[arg(long)]
    pub dead: bool,
    /// Then compact the store.
    #[arg(long)]
    pub vacuum: bool,
}

fn duration(text: &str, flag: &'static str) -> Result<Duration, EngineError> {
    humantime::parse_duration(text).map_err(|e| EngineError::BadFlag {
        flag,
        value: text.to_owned(),
        why: format!("is not a duration ({e})"),
        hint: "write e.g. 30s, 5m, 7d".into(),
    })
}

fn priority(text: &str) -> Result<Priority, EngineError> {
    match text {
        "low" => Ok(Priority::Low),
        "normal" => Ok(Priority::Normal),
        "high" => Ok(Priority::High),
        "critical" => Ok(Priority::Critical),
        other => Err(EngineError::BadFlag {
            flag: "--priority",
            value: other.to_owned(),
            why: "is not a priority".into(),
            hint: "low, normal, high or critical".into(),
        }),
    }
}

/// Runs a `jobs` subcommand.
pub fn exec(rt: &EngineRuntime, command: &JobsCommand) -> Result<Outcome, EngineError> {
    match command {
        JobsCommand::Enqueue(args) => enqueue(rt, args),
        JobsCommand::List(args) => list(rt, args),
        JobsCommand::Show(args) => show(rt, args),
        JobsCommand::Logs(args) => logs(rt, args),
        JobsCommand::Progress(args) => progress(rt, args),
        JobsCommand::Cancel(args) => cancel(rt, args),
        JobsCommand::Retry(args) => retry(rt, args),
        JobsCommand::Stats(args) => stats(rt, args),
        JobsCommand::Purge(args) => purge(rt, args),
    }
}

/// What one job to enqueue says, from the flags or a line of `--stdin`.
struct JobSpec<'a> {
    job_type: &'a str,
    payload: serde_json::Value,
    target: Option<String>,
    priority: Option<&'a str>,
    delay: Option<&'a str>,
    max_attempts: Option<u32>,
    input: Option<serde_json::Value>,
    after: Vec<String>,
}

/// The job `spec` describes, with its type's defaults, checked.
fn new_job(settings: &crate::config::Settings, spec: JobSpec<'_>) -> Result<NewJob, EngineError> {
    let kind = settings.config.jobs.types.get(spec.job_type);
    let job = NewJob {
        job_type: spec.job_type.to_owned(),
        target: spec.target,
        payload: spec.payload,
        priority: match spec.priority {
            Some(p) => priority(p)?,
            None => kind.map_or(Priority::Normal, |k| k.priority),
        },
        max_attempts: spec.max_attempts.or(kind.map(|k| k.max_attempts)).unwrap_or(3),
        delay: spec.delay.map(|d| duration(d, "--delay")).transpose()?,
        input: spec.input,
        after: spec.after,
    };
    // `--target`, else the payload's `target` (the store enqueues the job with the same one).
    if let Some(t) = job.resolved_target()? {
        crate::targets::validate_name(t)?;
    }
    Ok(job)
}

/// `jobs enqueue --stdin`: one job per line, each enqueued as it arrives (the lines already read in go together).
fn enqueue_lines(rt: &EngineRuntime, args: &EnqueueArgs) -> Result<Outcome, EngineError> {
    use std::io::BufRead as _;
    let settings = rt.settings()?;
    let store = rt.job_store()?;
    let stdin = std::io::stdin();
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, stdin.lock());
    let mut batch = Vec::new();
    let mut line = String::new();
    let mut number = 0usize;
    let flush = |batch: &mut Vec<NewJob>| -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = String::new();
        for id in store.enqueue(batch)? {
            out.push_str(&id);
            out.push('\n');
        }
        rt.printer().data(&out);
        batch.clear();
        Ok(())
    };
    loop {
        line.clear();
        let read = reader.read_line(&mut line).map_err(|e| EngineError::Failed(format!("stdin: {e}")))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let failed = |why: String| {
            EngineError::Failed(format!(
                "stdin line {number}: {why}\nthe lines before it were enqueued, none after it (one JSON object per line, e.g. {{\"type\": \"noop\", \"payload\": {{}}}})"
            ))
        };
        let parsed: JobLine = serde_json::from_str(&line).map_err(|e| failed(e.to_string()))?;
        let Some(job_type) = parsed.job_type.as_deref().or(args.job_type.as_deref()) else {
            flush(&mut batch)?;
            return Err(failed("it names no \"type\" and no TYPE was given".into()));
        };
        let spec = JobSpec {
            job_type,
            payload: parsed.payload.unwrap_or_else(|| serde_json::json!({})),
            target: parsed.target.or_else(|| args.target.clone()),
            priority: parsed.priority.as_deref().or(args.priority.as_deref()),
            delay: parsed.delay.as_deref().or(args.delay.as_deref()),
            max_attempts: parsed.max_attempts.or(args.max_attempts),
            input: parsed.input,
            after: if parsed.after.is_empty() { args.after.clone() } else { parsed.after },
        };
        match new_job(settings, spec) {
            Ok(job) => batch.push(job),
            Err(e) => {
                flush(&mut batch)?;
                return Err(failed(e.to_string()));
            }
        }
        // Nothing more waiting to be read (a script writing one line at a time), or a full batch: enqueue now.
        if reader.buffer().is_empty() || batch.len() >= BATCH {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    Ok(Outcome::Success)
}

/// Enqueues jobs and prints their ids.
fn enqueue(rt: &EngineRuntime, args: &EnqueueArgs) -> Result<Outcome, EngineError> {
    if args.stdin {
        return enqueue_lines(rt, args);
    }
    let EnqueueArgs {
        job_type,
        payload,
        target,
        priority: prio,
        delay,
        max_attempts,
        count,
        input,
        after,
        ..
    } = args;
    let settings = rt.settings()?;
    let store = rt.job_store()?;
    let printer = rt.printer();
    let payload: serde_json::Value = serde_json::from_str(payload).map_err(|e| {
        EngineError::Failed(format!(
            "--payload is not JSON: {e}\nhint: quote it, e.g. --payload '{{\"command\": \"make\"}}'"
        ))
    })?;
    let spec = JobSpec {
        job_type: job_type.as_deref().unwrap_or_default(),
        payload,
        target: target.clone(),
        priority: prio.as_deref(),
        delay: delay.as_deref(),
        max_attempts: *max_attempts,
        input: input
            .as_deref()
            .map(|text| {
                serde_json::from_str(text).map_err(|e| {
                    EngineError::Failed(format!(
                        "--input is not JSON: {e}\nhint: quote it, e.g. --input '{{\"n\": 1}}' (a text is --input '\"text\"')"
                    ))
                })
            })
            .transpose()?,
        after: after.clone(),
    };
    let job = new_job(settings, spec)?;
    let mut out = String::new();
    let mut left = *count;
    while left > 0 {
        let n = left.min(BATCH);
        for id in store.enqueue(&vec![job.clone(); n])? {
            out.push_str(&id);
            out.push('\n');
        }
        left -= n;
    }
    printer.data(&out);
    Ok(Outcome::Success)
}

/// Lists jobs.
fn list(rt: &EngineRuntime, args: &ListArgs) -> Result<Outcome, EngineError> {
    let ListArgs { status, job_type, target, limit, offset, json } = args;
    let store = rt.job_store()?;
    let printer = rt.printer();
    let status = status
        .as_deref()
        .map(|s| {
            JobStatus::parse(s).ok_or_else(|| {
                EngineError::Failed(format!(
                    "`{s}` is not a job status\nhint: {}",
                    JobStatus::ALL.map(JobStatus::as_str).join(", ")
                ))
            })
        })
        .transpose()?;
    let filter = ListFilter {
        status,
        job_type: job_type.clone(),
        target: target.clone(),
        limit: *limit,
        offset: *offset,
    };
    let list = JobList { schema_version: SCHEMA_VERSION, jobs: store.list(&filter)? };
    if *json {
        printer.json(&list);
    } else {
        let mut table = Table::new(&["ID", "TYPE", "TARGET", "STATUS", "ATTEMPTS", "CREATED"]);
        for j in &list.jobs {
            table.row(vec![
                j.id.clone(),
                j.job_type.clone(),
                j.target.clone().unwrap_or_else(|| "-".into()),
                j.status.as_str().into(),
                format!("{}/{}", j.attempts, j.max_attempts),
                j.created_at.clone(),
            ]);
        }
        printer.data(&table.render());
    }
    Ok(Outcome::Success)
}

/// Shows one job.
fn show(rt: &EngineRuntime, args: &ShowArgs) -> Result<Outcome, EngineError> {
    let ShowArgs { id, json } = args;
    let store = rt.job_store()?;
    let printer = rt.printer();
    let job = store.get(id)?;
    if *json {
        printer.json(&job);
    } else {
        let mut out = format!(
            "{} {} ({})\nstatus: {}  attempts: {}/{}\n",
            job.id,
            job.job_type,
            job.target.as_deref().unwrap_or("no target"),
            job.status.as_str(),
            job.attempts,
            job.max_attempts
        );
        let _ = writeln!(out, "payload: {}", job.payload);
        if let Some(p) = &job.progress {
            let _ = writeln!(
                out,
                "progress: {}% {} {}",
                p.percent.unwrap_or(0.0),
                p.step.as_deref().unwrap_or(""),
                p.detail.as_deref().unwrap_or("")
            );
        }
        if let Some(input) = &job.input {
            let _ = writeln!(out, "input: {input}");
        }
        if !job.parents.is_empty() {
            let _ = writeln!(out, "after: {}", job.parents.join(", "));
        }
        if let Some(r) = &job.result {
            let _ = writeln!(out, "result: {r}");
        }
        if let Some(output) = &job.output {
            let _ = writeln!(out, "output: {output}");
        }
        if job.condition == Some(false) {
            let _ = writeln!(out, "condition: false (the jobs after it are skipped)");
        }
        if let Some(e) = &job.error {
            let _ = writeln!(out, "error: {e}");
        }
        printer.data(&out);
    }
    Ok(Outcome::Success)
}

/// Prints (and follows) a job's log.
fn logs(rt: &EngineRuntime, args: &LogsArgs) -> Result<Outcome, EngineError> {
    let LogsArgs { id, follow } = args;
    let store = rt.job_store()?;
    let printer = rt.printer();
    let mut seen = 0;
    loop {
        let lines = store.logs(id, seen)?;
        seen += lines.len();
        for line in lines {
            printer.data(&line.line);
        }
        if !*follow || store.get(id)?.status.is_final() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Outcome::Success)
}

/// Records a job's progress.
fn progress(rt: &EngineRuntime, args: &ProgressArgs) -> Result<Outcome, EngineError> {
    let ProgressArgs { id, percent, step, detail } = args;
    let store = rt.job_store()?;
    if percent.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
        return Err(EngineError::Failed("--percent takes a number from 0 to 100".into()));
    }
    store.get(id)?;
    let progress =
        envctl_contracts::jobs::JobProgress { percent: *percent, step: step.clone(), detail: detail.clone() };
    store.progress(id, &progress)?;
    Ok(Outcome::Success)
}

/// Cancels a job and says what became of it: exit 1 when it finished (or had finished) otherwise.
fn cancel(rt: &EngineRuntime, args: &CancelArgs) -> Result<Outcome, EngineError> {
    let CancelArgs { id, wait, no_wait } = args;
    let wait = if *no_wait { Duration::ZERO } else { duration(wait, "--wait")? };
    let store = rt.job_store()?;
    let printer = rt.printer();
    let (said, outcome) = match crate::jobs::cancel::cancel(store.as_ref(), id, wait)? {
        CancelOutcome::Cancelled => ("cancelled".to_owned(), Outcome::Success),
        CancelOutcome::FinishedFirst(status) => {
            (format!("finished before the cancel reached it ({})", status.as_str()), Outcome::Failure)
        }
        CancelOutcome::Cancelling => ("cancelling (its worker stops it)".to_owned(), Outcome::Success),
    };
    printer.note(&format!("{id}: {said}"));
    Ok(outcome)
}

/// Queues a job again.
fn retry(rt: &EngineRuntime, args: &RetryArgs) -> Result<Outcome, EngineError> {
    let RetryArgs { id } = args;
    let store = rt.job_store()?;
    let printer = rt.printer();
    store.retry(id)?;
    printer.note(&format!("{id}: queued again"));
    Ok(Outcome::Success)
}

/// Prints the store's statistics.
fn stats(rt: &EngineRuntime, args: &StatsArgs) -> Result<Outcome, EngineError> {
    let StatsArgs { json } = args;
    let store = rt.job_store()?;
    let printer = rt.printer();
    let stats = store.stats()?;
    if *json {
        printer.json(&stats);
    } else {
        let mut out = format!(
            "queued {}  scheduled {}  running {}  succeeded {}  failed {}  cancelled {}  dead {}\n",
            stats.queued,
            stats.scheduled,
            stats.running,
            stats.succeeded,
            stats.failed,
            stats.cancelled,
            stats.dead
        );
        if stats.waiting + stats.skipped > 0 {
            let _ = writeln!(out, "waiting {}  skipped {}", stats.waiting, stats.skipped);
        }
        let _ = writeln!(
            out,
            "finished: {} in the last minute, {} in the last hour",
            stats.finished_last_minute, stats.finished_last_hour
        );
        if let (Some(mean), Some(rate)) = (stats.mean_run_ms, stats.success_rate) {
            let _ = writeln!(out, "mean run time {mean:.1} ms, success rate {:.1}%", rate * 100.0);
        }
        for w in &stats.workers {
            let _ = match w.state {
                WorkerState::Alive => {
                    writeln!(out, "worker {} running {} (heartbeat {})", w.id, w.running, w.heartbeat_at)
                }
                WorkerState::Gone => {
                    writeln!(out, "worker {} gone (last heartbeat {})", w.id, w.heartbeat_at)
                }
            };
        }
        printer.data(&out);
    }
    Ok(Outcome::Success)
}

/// Deletes old and dead jobs.
fn purge(rt: &EngineRuntime, args: &PurgeArgs) -> Result<Outcome, EngineError> {
    let PurgeArgs { older_than, dead, vacuum } = args;
    let store = rt.job_store()?;
    let printer = rt.printer();
    if older_than.is_none() && !dead && !vacuum {
        return Err(EngineError::Failed("say what to purge\nhint: --older-than 7d, --dead, --vacuum".into()));
    }
    let age = older_than.as_deref().map(|d| duration(d, "--older-than")).transpose()?;
    let removed = if age.is_some() || *dead { store.purge(age, *dead)? } else { 0 };
    printer.note(&format!("purged {removed} job(s)"));
    if *vacuum {
        store.vacuum()?;
        printer.note("compacted the store");
    }
    Ok(Outcome::Success)
}
