//! `envctl start [targets] [--service S ...] [--foreground] [--no-resume]`.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use envctl_contracts::control::{Progress, Reply, Request, StartOutcome, StartRequest};
use envctl_contracts::state::ServiceStatus;

use crate::config::process_environment;
use crate::host::client::HostClient;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::targets::Targets;
use crate::ui::Printer;

use super::foreground;

/// Arguments of `start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Which targets (default: the configured `project.default_mode`).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these services and what they depend on (repeatable).
    #[arg(long = "service", value_name = "S")]
    pub services: Vec<String>,
    /// Stay attached: print every service's log, prefixed; Ctrl-C stops everything (twice: at once).
    #[arg(long)]
    pub foreground: bool,
    /// Restart services even when an identical one already runs.
    #[arg(long)]
    pub no_resume: bool,
    /// Start no requirements (Postgres, Redis, command servers): services only.
    #[arg(long, conflicts_with = "deps_only")]
    pub no_deps: bool,
    /// Start only the requirements.
    #[arg(long)]
    pub deps_only: bool,
}

/// Builds the start request for the selected targets.
pub(super) fn request(
    rt: &EngineRuntime,
    targets: &TargetArgs,
    services: &[String],
    command: &str,
    no_resume: bool,
) -> Result<StartRequest, EngineError> {
    let settings = rt.settings()?;
    let all = Targets::discover(&settings.paths, &settings.config.project.trees_dir);
    let selected = all.select(&targets.selection(), settings.config.project.default_mode)?;
    for service in services {
        if !settings.config.services.contains_key(service) {
            let names: Vec<&str> = settings.config.services.keys().map(String::as_str).collect();
            let hint = crate::config::suggest(service, &names)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(EngineError::Failed(format!(
                "there is no service `{service}`{hint}\nhint: the services are: {}",
                names.join(", ")
            )));
        }
    }
    Ok(StartRequest {
        command: command.to_owned(),
        config: settings.config,
        targets: selected.iter().map(|t| t.name.clone()).collect(),
        services: services.to_vec(),
        env: process_environment(),
        no_resume,
        no_deps: false,
        deps_only: false,
    })
}

/// Prints one progress line on stderr.
pub(super) fn show_progress(printer: Printer, p: &Progress) {
    let line = match p.status {
        ServiceStatus::Ready => {
            format!("  ready     {}/{} {} ({} ms)", p.target, p.service, p.detail, p.elapsed_ms)
        }
        ServiceStatus::Starting => format!("  starting  {}/{}", p.target, p.service),
        ServiceStatus::Failed => format!("  failed    {}/{}: {}", p.target, p.service, p.detail),
        other => {
            format!("  {:<9} {}/{} {}", format!("{other:?}").to_lowercase(), p.target, p.service, p.detail)
        }
    };
    printer.note(&line);
}

/// Prints a start's outcome: URLs on stdout; a failure becomes the command's error.
pub(super) fn report(printer: Printer, reply: Reply) -> Result<Outcome, EngineError> {
    let outcome: StartOutcome = match reply {
        Reply::Started(outcome) => outcome,
        Reply::Error { message } => return Err(EngineError::Failed(message)),
        other => return Err(EngineError::Failed(format!("unexpected answer from the host: {other:?}"))),
    };
    for warning in &outcome.warnings {
        printer.warn(warning);
    }
    if let Some(failure) = &outcome.failure {
        let mut message = format!("{}/{} failed: {}", failure.target, failure.service, failure.reason);
        if let Some(path) = &failure.log_path {
            let _ = write!(message, "\nlast log lines ({path}):");
            if failure.log_tail.is_empty() {
                message.push_str("\n  (the log is empty)");
            }
            for line in &failure.log_tail {
                let _ = write!(message, "\n  {line}");
            }
        }
        let _ = write!(
            message,
            "\nhint: fix it and run `envctl start` again; `envctl logs --service {}` shows the whole log",
            failure.service
        );
        return Err(EngineError::Failed(message));
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
    let mut out = String::new();
    let mut current = "";
    for record in &outcome.services {
        if record.target != current {
            current = &record.target;
            let _ = writeln!(out, "{current}");
        }
        let url = record.url.clone().unwrap_or_else(|| "(no port)".into());
        let _ = writeln!(out, "  {:<16} {url}", record.service);
    }
    printer.data(&out);
    Ok(Outcome::Success)
}

/// Starts the selected targets.
pub fn exec(rt: &EngineRuntime, args: &StartArgs) -> Result<Outcome, EngineError> {
    let mut request = request(rt, &args.targets, &args.services, "start", args.no_resume)?;
    request.no_deps = args.no_deps;
    request.deps_only = args.deps_only;
    if args.foreground {
        return foreground::run(rt, request);
    }
    let paths = rt.paths()?;
    let printer = *rt.printer();
    let verbose_progress = std::io::stderr().is_terminal();
    let reply = HostClient::call(&paths, true, &Request::Start(request), |p| {
        if verbose_progress || p.status == ServiceStatus::Failed {
            show_progress(printer, p);
        }
    })?;
    report(printer, reply.unwrap_or(Reply::Error { message: "no host".into() }))
}
