//! One file per command: its clap arguments and an `exec` that calls the engine and prints the result.

pub mod blast_all;
pub mod completions;
pub mod config_cmd;
pub mod dashboard;
pub mod debug;
pub mod doctor;
pub mod endpoints;
pub mod env_cmd;
pub mod errors;
pub mod explain_startup;
pub mod health;
pub mod host_cmd;
pub mod job_cmd;
pub mod jobs;
pub mod list_commands;
pub mod list_targets;
pub mod logs;
pub mod man;
pub mod migrate;
pub mod ports;
pub mod restart;
pub mod resume;
pub mod show_config;
pub mod show_state;
pub mod start;
pub mod stop;
pub mod test_cmd;
pub mod vars;
pub mod worker_cmd;
pub mod worktree;

use envctl_contracts::control::{Reply, StartOutcome, StartRequest};
use envctl_contracts::state::ServiceRecord;

use super::cli::TargetArgs;
use super::{Command, EngineError, EngineRuntime, Outcome};

/// Runs one command.
pub fn dispatch(rt: &EngineRuntime, command: &Command) -> Result<Outcome, EngineError> {
    match command {
        Command::ListCommands(args) => list_commands::exec(rt, args),
        Command::ShowConfig(args) => show_config::exec(rt, args),
        Command::ListTargets(args) | Command::Worktree(worktree::WorktreeCommand::List(args)) => {
            list_targets::exec(rt, args)
        }
        Command::ShowState(args) => show_state::exec(rt, args),
        Command::ExplainStartup(args) => explain_startup::exec(rt, args),
        Command::Config(sub) => config_cmd::exec(rt, sub),
        Command::Start(args) => start::exec(rt, args),
        Command::Stop(args) => stop::exec(rt, args),
        Command::StopAll(args) => stop::exec_all(rt, args),
        Command::Restart(args) => restart::exec(rt, args),
        Command::Resume(args) => resume::exec(rt, args),
        Command::BlastAll(args) => blast_all::exec(rt, args),
        Command::Logs(args) => logs::exec(rt, args),
        Command::ClearLogs(args) => logs::exec_clear(rt, args),
        Command::Health(args) => health::exec(rt, args),
        Command::Dashboard(args) => dashboard::exec(rt, args),
        Command::Completions(args) => completions::exec(rt, args),
        Command::Man(args) => man::exec(rt, args),
        Command::Doctor(args) => doctor::exec(rt, args),
        Command::DebugPack(args) => debug::exec_pack(rt, args),
        Command::DebugReport(args) => debug::exec_report(rt, args),
        Command::DebugLast(args) => debug::exec_last(rt, args),
        Command::Errors(args) => errors::exec(rt, args),
        Command::Endpoints(args) => endpoints::exec(rt, args),
        Command::Env(args) => env_cmd::exec(rt, args),
        Command::Worktree(sub) => worktree::exec(rt, sub),
        Command::Host(args) => host_cmd::exec(rt, args),
        Command::Jobs(sub) => jobs::exec(rt, sub),
        Command::Worker(args) => worker_cmd::exec(rt, args),
        Command::Vars(sub) => vars::exec(rt, sub),
        Command::Job(sub) => job_cmd::exec(rt, sub),
        Command::Ports(sub) => ports::exec(rt, sub),
        Command::Test(args) => test_cmd::exec(rt, args),
        Command::Migrate(args) => migrate::exec(rt, args),
    }
}

/// Live progress on stderr for a command that waits: bars on a terminal, a line per event otherwise.
fn progress(rt: &EngineRuntime) -> crate::ui::progress::LiveProgress {
    use std::io::IsTerminal as _;
    crate::ui::progress::LiveProgress::new(*rt.printer(), std::io::stderr().is_terminal(), rt.color())
}

/// The saved records of the selected targets and services; an error when there are none.
fn selected_records(
    rt: &EngineRuntime,
    targets: &TargetArgs,
    services: &[String],
) -> Result<Vec<ServiceRecord>, EngineError> {
    let repo = rt.state()?;
    let names = targets.names_among(&repo.running_targets()?)?;
    // A name that is no target at all gets the same suggestion `start` gives (when the config can be read).
    if let Ok(known) = rt.targets() {
        let all: Vec<&str> = known.all.iter().map(|t| t.name.as_str()).collect();
        if let Some(name) = targets.tree.iter().find(|n| !all.contains(&n.as_str())) {
            return Err(crate::targets::TargetError::Unknown {
                name: name.clone(),
                suggestion: crate::config::suggest(name, &all).map(str::to_owned),
            }
            .into());
        }
    }
    let records: Vec<ServiceRecord> = repo
        .run_state()?
        .map(|s| s.services)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| names.contains(&r.target) && (services.is_empty() || services.contains(&r.service)))
        .collect();
    if records.is_empty() {
        let what = if names.is_empty() {
            "nothing has been started".to_owned()
        } else {
            format!("no matching service of {}", names.join(", "))
        };
        return Err(EngineError::Failed(format!(
            "{what} in this repository's saved state\nhint: `envctl start` starts it; `envctl show-state` shows what was saved"
        )));
    }
    Ok(records)
}

/// The start request for the selected targets (`start`, `restart`).
fn start_request(
    rt: &EngineRuntime,
    targets: &TargetArgs,
    services: &[String],
    command: &str,
    no_resume: bool,
) -> Result<StartRequest, EngineError> {
    let settings = rt.settings()?;
    let selected = rt.select(&targets.selection())?;
    known_services(settings, services)?;
    Ok(StartRequest {
        command: command.to_owned(),
        config: Some(settings.config.clone()),
        config_digest: Some(settings.digest.clone()),
        config_warnings: settings.warnings.clone(),
        targets: selected.iter().map(|t| t.to_selected()).collect(),
        running_targets: false,
        services: services.to_vec(),
        env: rt.env().inherited().clone(),
        no_resume,
        restart: Vec::new(),
        with_dependents: false,
        no_deps: false,
        deps_only: false,
    })
}

/// Runs the setup steps of the selected targets that have not run in their checkout yet or whose inputs
/// changed, their output on stderr as it comes; the first that fails stops the start (nothing was started).
fn prepare_checkouts(
    rt: &EngineRuntime,
    targets: &TargetArgs,
    services: &[String],
) -> Result<(), EngineError> {
    let settings = rt.settings()?;
    if settings.config.setup.is_none() && settings.config.services.values().all(|s| s.setup.is_none()) {
        return Ok(());
    }
    let selected = rt.select(&targets.selection())?;
    let closure = crate::plan::with_dependencies(settings, services);
    let ports = crate::plan::plan_ports(settings, &selected)?;
    let steps = crate::setup::steps(settings, &selected, &ports, rt.env(), &closure);
    let printer = *rt.printer();
    for step in steps {
        let Some(reason) = crate::setup::reason(settings, &step) else { continue };
        let label = format!("{}/{}", step.target, step.name);
        printer.note(&format!("setup {label}: `{}` ({reason})", step.command));
        let ran = rt.block_on(crate::setup::run(settings, &step, rt.env().inherited(), |line| {
            printer.note(&format!("  {label} | {line}"));
        }))?;
        let took = ran.map_err(|e| EngineError::Failed(e.to_string()))?;
        printer.note(&format!("setup {label}: done in {:.1} s", took.as_secs_f64()));
    }
    Ok(())
}

/// Where a start's report finds the URLs of the requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Urls {
    /// In the host's answer (`start`, `restart`: the host planned them).
    FromHost,
    /// Planned here (`resume`).
    Planned,
}

/// Prints a start's outcome: URLs on stdout; a failure becomes the command's error.
fn report_start(rt: &EngineRuntime, reply: Option<Reply>, urls: Urls) -> Result<Outcome, EngineError> {
    let printer = *rt.printer();
    let outcome: StartOutcome = match reply {
        Some(Reply::Started(outcome)) => outcome,
        Some(Reply::Error { message }) => return Err(EngineError::HostReply(message)),
        Some(other) => {
            return Err(EngineError::HostReply(format!("unexpected answer from the host: {other:?}")));
        }
        None => return Err(EngineError::HostReply("no envctl host answered".into())),
    };
    for warning in &outcome.warnings {
        printer.warn(warning);
    }
    for note in &outcome.notes {
        printer.note(note);
    }
    if let Some(failure) = outcome.failure {
        return Err(EngineError::StartFailed(Box::new(failure)));
    }
    if !outcome.reused.is_empty() && outcome.started.is_empty() {
        printer.note("already running with the same configuration; reused it (use --no-resume to restart)");
    } else if !outcome.reused.is_empty() {
        printer.note(&format!(
            "reused {} running service(s): {}",
            outcome.reused.len(),
            outcome.reused.join(", ")
        ));
    }
    let targets: Vec<String> = outcome.services.iter().map(|r| r.target.clone()).collect();
    let requirements = match urls {
        Urls::FromHost => {
            let mut all = outcome.requirement_urls;
            all.retain(|target, _| targets.contains(target));
            all
        }
        Urls::Planned => requirement_urls(rt, &targets),
    };
    printer.data(&crate::ui::lifecycle::urls(&outcome.services, &requirements));
    Ok(Outcome::Success)
}

/// An error naming the first of `services` the configuration does not have, with a suggestion.
fn known_services(settings: &crate::config::Settings, services: &[String]) -> Result<(), EngineError> {
    for service in services {
        if !settings.config.services.contains_key(service) {
            let known: Vec<&str> = settings.config.services.keys().map(String::as_str).collect();
            return Err(EngineError::NoService {
                name: service.clone(),
                suggestion: crate::config::suggest(service, &known).map(str::to_owned),
                known: known.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
    }
    Ok(())
}

/// Runs `suites` as `kind` jobs in this process with a line per suite as it ends, keeps test results for
/// `test --failed`, prints the summary table; exit 1 when any failed, 2 when Ctrl-C cut it short.
fn run_suites(
    rt: &EngineRuntime,
    kind: crate::jobs::suites::SuiteKind,
    suites: &[crate::jobs::suites::Suite],
    parallel: Option<usize>,
) -> Result<Outcome, EngineError> {
    use std::fmt::Write as _;

    use crate::jobs::suites::{SuiteKind, SuiteOptions};

    let settings = rt.settings()?;
    let options = SuiteOptions {
        parallel: parallel
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().min(4))),
        lease: std::time::Duration::from_secs(settings.config.jobs.lease_secs),
    };
    let ctx =
        crate::jobs::handlers::HandlerContext::new(Some(settings.clone()), rt.env().inherited().clone())
            .with_sets(rt.sets().to_vec());
    let printer = *rt.printer();
    let progress = std::cell::RefCell::new(progress(rt));
    for suite in suites {
        progress.borrow_mut().phase(&format!("{}/{}", suite.target, suite.service), kind.job_type());
    }
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let store = rt.job_store()?;
    let api_options = crate::runtime_api::ApiOptions {
        scope_dir: settings.paths.scope_dir.clone(),
        repository: settings.paths.repo_root.display().to_string(),
        worker: crate::jobs::worker::worker_id(),
    };
    let shown = &progress;
    let run = rt.block_on(async move {
        // The suites' worker serves the runtime API to their commands too, as every worker does.
        let (api_stop, api_tasks) =
            (tokio_util::sync::CancellationToken::new(), tokio_util::task::TaskTracker::new());
        let ctx = match crate::runtime_api::RuntimeApi::start(&api_options, api_stop.clone(), &api_tasks) {
            Ok(api) => {
                api.attach_store(std::sync::Arc::clone(&store));
                ctx.with_executions(std::sync::Arc::new(api))
            }
            Err(e) => {
                printer.warn(&format!("{e}\nthe suites run without the runtime API"));
                ctx
            }
        };
        let run = crate::jobs::suites::run_suites(
            store,
            ctx,
            kind,
            suites,
            &options,
            interrupt,
            |r| {
                let mark = if r.passed { "passed" } else { "FAILED" };
                let took = r.duration_secs.map(|d| format!(" ({d:.1} s)")).unwrap_or_default();
                shown.borrow_mut().finish(&format!("{}/{}", r.target, r.service), &format!("{mark}{took}"));
            },
            |suite, line| shown.borrow().println(&format!("  {}/{} | {line}", suite.target, suite.service)),
        )
        .await;
        api_stop.cancel();
        api_tasks.close();
        api_tasks.wait().await;
        run
    })??;
    drop(progress);
    if kind == SuiteKind::Test
        && let Err(e) = rt.state()?.save_test_results(&run.results)
    {
        printer.warn(&e.to_string());
    }
    let mut table = crate::ui::Table::new(&["TARGET", "SERVICE", "RESULT", "DURATION", "LOG"]);
    for suite in &run.results.suites {
        let result = match &suite.error {
            None => "passed".to_owned(),
            Some(error) => format!("failed ({error})"),
        };
        let duration = suite.duration_secs.map_or_else(|| "-".into(), |d| format!("{d:.1}s"));
        let log = format!("envctl jobs logs {}", suite.job);
        table.row(vec![suite.target.clone(), suite.service.clone(), result, duration, log]);
    }
    let failed = run.results.suites.iter().filter(|s| !s.passed).count();
    let mut out = table.render();
    for suite in run.results.suites.iter().filter(|s| !s.failed_tests.is_empty()) {
        let _ = writeln!(out, "\nfailing tests of {}/{}:", suite.target, suite.service);
        for name in &suite.failed_tests {
            let _ = writeln!(out, "  {name}");
        }
    }
    let _ = writeln!(out, "\n{} passed, {failed} failed", run.results.suites.len() - failed);
    printer.data(&out);
    Ok(if run.interrupted {
        Outcome::Interrupted
    } else if failed > 0 {
        Outcome::Failure
    } else {
        Outcome::Success
    })
}

/// Target → requirement → URL as that target's services reach it (from the plan: a worktree's own database in a
/// shared server, say). Empty when the configuration cannot be read.
fn requirement_urls(
    rt: &EngineRuntime,
    targets: &[String],
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    // Nothing to plan without requirements (a thousand services need no second plan after the reply).
    if rt.settings().is_ok_and(|s| s.config.requirements.values().all(|r| !r.enabled)) {
        return std::collections::BTreeMap::new();
    }
    let mut names = targets.to_vec();
    names.sort();
    names.dedup();
    let plan = || -> Result<_, EngineError> {
        let settings = rt.settings()?;
        let selected = rt.select(&crate::targets::Selection::Trees(names))?;
        let ports = crate::plan::plan_ports(settings, &selected)?;
        Ok(crate::plan::explain(settings, &selected, &ports, rt.env()))
    };
    plan()
        .map(|plan| {
            plan.targets
                .into_iter()
                .filter(|t| !t.requirements.is_empty())
                .map(|t| (t.name, t.requirements.into_iter().map(|r| (r.name, r.url)).collect()))
                .collect()
        })
        .unwrap_or_default()
}

/// The repository's managed job server, when it is the job store (`[jobs] backend = "redis"` with no URL).
pub(crate) fn job_server(
    rt: &EngineRuntime,
) -> Result<Option<envctl_contracts::jobs::JobServer>, EngineError> {
    Ok(crate::plan::job_server(rt.settings()?, rt.env().get("PATH")))
}

/// A job server's status in words.
pub(crate) fn job_server_status(server: &envctl_contracts::jobs::JobServer) -> String {
    use envctl_contracts::jobs::JobServerStatus;
    match (server.status, server.pid) {
        (JobServerStatus::Running, Some(pid)) => format!("running, pid {pid}"),
        (JobServerStatus::Running, None) => "running".into(),
        (JobServerStatus::Stopped, _) => "stopped; the next job command starts it".into(),
        (JobServerStatus::NotStarted, _) => "not started; the first job command starts it".into(),
    }
}
