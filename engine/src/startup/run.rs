//! [`start`] and [`resume`], run inside the host.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envctl_contracts::control::{Reply, ResumeRequest, StartFailure, StartOutcome, StartRequest};
use envctl_contracts::ports::TargetPorts;
use envctl_contracts::startup::{ServicePlan, StartupPlan};
use envctl_contracts::state::{ERROR_TAIL_LINES, ErrorEntry, ProcessKind, ServiceStatus};
use tokio::sync::mpsc;

use super::layers::{Restart, run_target};
use super::{StartupError, requirements};
use crate::config::{EnvVars, Settings};
use crate::host::{HeldConfig, Host, Key};
use crate::plan::{PortTable, explain};
use crate::ports::{is_free, requests};
use crate::supervisor::service::{ServiceHandle, ServiceSpec};
use crate::supervisor::{logs, proc_info, signal};
use crate::targets::Target;

/// `names` and everything they depend on, among `plans`.
fn closure(plans: &[ServicePlan], names: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut queue: Vec<String> = names.to_vec();
    while let Some(name) = queue.pop() {
        if let Some(plan) = plans.iter().find(|p| p.name == name)
            && out.insert(name)
        {
            queue.extend(plan.depends_on.iter().cloned());
        }
    }
    out
}

/// The reply for a start that could not begin (the message is printed by the CLI that asked).
fn error(e: &StartupError) -> Reply {
    Reply::Error { message: e.to_string() }
}

/// Every service of `graph` (each name with what it depends on) that depends on one of `names`, directly or not.
fn dependents(graph: &[(&String, &Vec<String>)], names: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    loop {
        let more: Vec<String> = graph
            .iter()
            .filter(|(name, _)| !out.contains(*name) && !names.contains(*name))
            .filter(|(_, depends_on)| depends_on.iter().any(|d| names.contains(d) || out.contains(d)))
            .map(|(name, _)| (*name).clone())
            .collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more);
    }
}

/// What a start of one target starts and restarts: everything, or the named services with what they depend on
/// (and, with `with_dependents`, what depends on the restarted ones).
fn selection(plans: &[ServicePlan], request: &StartRequest) -> (BTreeSet<String>, Restart) {
    if !request.restart.is_empty() {
        let mut restart: BTreeSet<String> = request.restart.iter().cloned().collect();
        if request.with_dependents {
            restart.extend(dependents(
                &plans.iter().map(|p| (&p.name, &p.depends_on)).collect::<Vec<_>>(),
                &restart,
            ));
        }
        let names: Vec<String> = restart.iter().cloned().collect();
        return (closure(plans, &names), Restart::Only(restart));
    }
    let wanted = if request.services.is_empty() {
        plans.iter().map(|s| s.name.clone()).collect()
    } else {
        closure(plans, &request.services)
    };
    (wanted, if request.no_resume { Restart::Everything } else { Restart::Nothing })
}

/// The services a start of named ones plans: those it restarts (with, when asked, every service that depends on
/// one of them, directly or not), or those it starts, and what they depend on; none for a start of everything.
fn planned(settings: &Settings, request: &StartRequest) -> Option<BTreeSet<String>> {
    let services = &settings.config.services;
    let mut names: BTreeSet<String> = if request.restart.is_empty() {
        request.services.iter().cloned().collect()
    } else {
        request.restart.iter().cloned().collect()
    };
    if names.is_empty() {
        return None;
    }
    if !request.restart.is_empty() && request.with_dependents {
        names.extend(dependents(
            &services.iter().map(|(n, s)| (n, &s.depends_on)).collect::<Vec<_>>(),
            &names,
        ));
    }
    let names: Vec<String> = names.into_iter().collect();
    Some(crate::plan::with_dependencies(settings, &names).into_iter().collect())
}

/// Forgets the services of `targets` that are no longer in the configuration (a record of one that crashed stays
/// until it is started again or leaves the configuration).
async fn forget_removed(host: &Host, settings: &Settings, targets: &[String]) {
    let gone: Vec<Key> = host
        .known()
        .await
        .into_iter()
        .filter(|(t, s)| {
            targets.contains(t)
                && !settings.config.services.contains_key(s)
                && !settings.config.requirements.contains_key(s)
        })
        .collect();
    host.forget(gone).await;
}

/// Starts (or reuses) the requested services, with the configuration the request carries or the one the host
/// holds under the request's digest; [`Reply::ConfigNeeded`] when it holds none, or when the one it holds does
/// not have a named service or cannot select the targets (the CLI then sends its own, and says what is wrong).
pub async fn start(host: &Arc<Host>, mut request: StartRequest, tx: &mpsc::Sender<Reply>) -> Reply {
    let began = Instant::now();
    let digest = request.config_digest.take();
    let (held, source) = match request.config.take() {
        Some(config) => {
            let warnings = std::mem::take(&mut request.config_warnings);
            (HeldConfig { digest: digest.clone().unwrap_or_default(), config, warnings }, "sent")
        }
        None => match digest.as_deref().and_then(|d| host.take_held_config(d)) {
            Some(held) => {
                request.config_warnings.clone_from(&held.warnings);
                (held, "held")
            }
            None => return Reply::ConfigNeeded,
        },
    };
    let HeldConfig { digest: held_digest, config, warnings } = held;
    let settings = Settings::resolved(config, host.paths().clone());
    let reply = match selected_targets(host, &settings, &request).await {
        Some(targets) => start_with(host, &settings, request, &targets, source, began, tx).await,
        None => Reply::ConfigNeeded,
    };
    if digest.is_some() {
        host.hold_config(HeldConfig { digest: held_digest, config: settings.config, warnings });
    }
    reply
}

/// The targets `request` names, or that the host has services of; none when a named service is not in the
/// configuration or the targets cannot be selected (the CLI reports either, with its own configuration).
async fn selected_targets(host: &Host, settings: &Settings, request: &StartRequest) -> Option<Vec<Target>> {
    if !request.running_targets {
        return Some(request.targets.iter().map(Target::from_selected).collect());
    }
    let services = &settings.config.services;
    if request.services.iter().chain(&request.restart).any(|s| !services.contains_key(s)) {
        return None;
    }
    let mut names: Vec<String> = host.known().await.into_iter().map(|(target, _)| target).collect();
    names.dedup();
    if names.is_empty() {
        return None;
    }
    let project = &settings.config.project;
    let all = crate::targets::Targets::discover(&settings.paths, &project.trees_dir);
    let selected = all.select(&crate::targets::Selection::Trees(names), project.default_mode).ok()?;
    Some(selected.into_iter().cloned().collect())
}

/// [`start`] with its configuration and targets resolved.
async fn start_with(
    host: &Arc<Host>,
    settings: &Settings,
    request: StartRequest,
    targets: &[Target],
    source: &str,
    began: Instant,
    tx: &mpsc::Sender<Reply>,
) -> Reply {
    let selected: Vec<&Target> = targets.iter().collect();
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    forget_removed(host, settings, &names).await;
    host.ensure_worker(settings, &request.env);
    let run_id = host.begin_run(&request.command, &names, Some(source));
    let mut outcome = StartOutcome {
        run_id: run_id.clone(),
        warnings: request.config_warnings.clone(),
        ..StartOutcome::default()
    };
    // A restart of named services answers with what it started: the rest of the targets did not change.
    let shown = if request.restart.is_empty() { Shown::Targets } else { Shown::Started };
    let env = EnvVars::from_pairs(request.env.get("PATH").map(|p| ("PATH", p.as_str())));
    let mut attempt = 0;
    // Requirement servers this start began (not reused): a failed start stops them again.
    let mut began_servers: Vec<Key> = Vec::new();
    let plan = loop {
        let table = match reserve_ports(host, settings, &selected).await {
            Ok(table) => table,
            Err(e) => return error(&e),
        };
        let plan = match planned(settings, &request) {
            Some(only) => crate::plan::explain_only(settings, &selected, &table, &env, only),
            None => explain(settings, &selected, &table, &env),
        };
        if !plan.problems.is_empty() {
            return error(&StartupError::Plan { problems: plan.problems });
        }
        record_ports(host, &selected, &table);
        if request.no_deps {
            break plan;
        }
        let result = requirements::run(host, settings, &plan, &request.env, tx, began).await;
        began_servers.extend(
            result
                .started
                .iter()
                .filter_map(|l| l.split_once('/'))
                .map(|(o, n)| (o.to_owned(), n.to_owned())),
        );
        if !result.started.is_empty() && !request.deps_only {
            // The servers are up: on disk now, while the services start.
            host.save_wave();
        }
        outcome.reused.extend(result.reused);
        outcome.started.extend(result.started);
        outcome.notes.extend(result.notes);
        match result.failure {
            Some(failure) if requirements::is_bind_conflict(&failure) && attempt < 2 => {
                // Something took the port between planning and binding: give the lease up and plan again.
                attempt += 1;
                let repo = settings.paths.repo_root.display().to_string();
                let released = host.ledger().release(|o| {
                    o.repo == repo
                        && o.target == failure.target
                        && crate::ports::belongs_to(&o.service, &failure.service)
                });
                if let Err(e) = released {
                    tracing::warn!(error = %e, "the conflicting port's lease could not be released");
                }
                host.event(
                    Some(failure.target.clone()),
                    Some(failure.service.clone()),
                    "port.conflict",
                    serde_json::json!({"attempt": attempt}),
                );
            }
            Some(failure) => {
                outcome.failure = Some(failure);
                stop_began_servers(host, &began_servers).await;
                return finish(host, outcome, &names, shown).await;
            }
            None => break plan,
        }
    };
    outcome.requirement_urls = plan
        .targets
        .iter()
        .filter(|t| !t.requirements.is_empty())
        .map(|t| (t.name.clone(), t.requirements.iter().map(|r| (r.name.clone(), r.url.clone())).collect()))
        .collect();
    if request.deps_only {
        return finish(host, outcome, &names, shown).await;
    }
    // The hub phase: the runtime API is up before the first service, which gets its URL and a token.
    host.hub().await;
    start_services(host, plan, &request, &run_id, tx, began, &mut outcome).await;
    if outcome.failure.is_some() {
        stop_began_servers(host, &began_servers).await;
    }
    finish(host, outcome, &names, shown).await
}

/// After a failed start: stops the requirement servers it began that no target with a live service uses (reused
/// ones, and ones a running target needs, stay).
async fn stop_began_servers(host: &Host, began: &[Key]) {
    let unused = host.unused_servers(began).await;
    if !unused.is_empty() {
        let labels: Vec<String> = unused.iter().map(|(o, n)| format!("{o}/{n}")).collect();
        host.event(None, None, "start.rollback", serde_json::json!({"stopped": labels}));
        host.stop_for_good(unused).await;
    }
}

/// Starts every target's services side by side, each target layer by layer.
async fn start_services(
    host: &Arc<Host>,
    plan: StartupPlan,
    request: &StartRequest,
    run_id: &str,
    tx: &mpsc::Sender<Reply>,
    began: Instant,
    outcome: &mut StartOutcome,
) {
    let mut jobs = tokio::task::JoinSet::new();
    for target_plan in plan.targets {
        let (wanted, restart) = selection(&target_plan.services, request);
        let specs: Vec<ServiceSpec> = target_plan
            .services
            .into_iter()
            .filter(|s| wanted.contains(&s.name))
            .map(|plan| ServiceSpec {
                kind: ProcessKind::Service,
                target: target_plan.name.clone(),
                log_path: logs::log_path(&host.paths().scope_dir, run_id, &target_plan.name, &plan.name),
                stop_grace: Duration::from_secs(plan.stop_grace_secs),
                base_env: request.env.clone(),
                plan,
            })
            .collect();
        let (host, tx) = (Arc::clone(host), tx.clone());
        jobs.spawn(async move { run_target(&host, specs, &restart, &tx, began).await });
    }
    while let Some(done) = jobs.join_next().await {
        if let Ok(result) = done {
            outcome.reused.extend(result.reused);
            outcome.started.extend(result.started);
            if outcome.failure.is_none() {
                outcome.failure = result.failure;
            }
        }
    }
}

/// Remembers the port plans of `selected` for `ports_manifest.json`.
fn record_ports(host: &Host, selected: &[&Target], table: &PortTable) {
    for target in selected {
        let ports = table.of_target(&target.name);
        host.record_ports(TargetPorts {
            target: target.name.clone(),
            root: target.root.display().to_string(),
            ports,
        });
    }
}

/// Leases the ports of `selected` for the host.
async fn reserve_ports(
    host: &Host,
    settings: &Settings,
    selected: &[&Target],
) -> Result<PortTable, StartupError> {
    let port_requests = requests(settings, selected);
    if port_requests.is_empty() {
        return Ok(PortTable::default());
    }
    let owner = host.record();
    let ledger = host.ledger().clone();
    let reqs = port_requests.clone();
    let plans =
        tokio::task::spawn_blocking(move || ledger.reserve(&reqs, owner.pid, owner.start_time, &is_free))
            .await
            .map_err(|e| StartupError::Task(e.to_string()))??;
    for (request, plan) in port_requests.iter().zip(&plans) {
        let detail = serde_json::json!({"port": plan.assigned, "requested": plan.requested, "source": plan.source, "retries": plan.retries});
        host.event(
            Some(request.owner.target.clone()),
            Some(request.owner.service.clone()),
            "port.leased",
            detail,
        );
    }
    Ok(PortTable::from_plans(port_requests, plans))
}

/// The last lines of the failed step's log for `error_report.json` (at most [`ERROR_TAIL_LINES`]), read on the
/// blocking pool; what the failure carries when it has no log.
async fn report_tail(failure: &StartFailure) -> Vec<String> {
    let Some(path) = failure.log_path.clone() else { return failure.log_tail.clone() };
    tokio::task::spawn_blocking(move || logs::tail(std::path::Path::new(&path), ERROR_TAIL_LINES))
        .await
        .unwrap_or_default()
}

/// Which services a start's reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// Every service of the requested targets.
    Targets,
    /// Only those the command started (a restart of named services: a thousand others stay as they were).
    Started,
}

/// Records the failure, saves, and builds the reply.
async fn finish(host: &Host, mut outcome: StartOutcome, targets: &[String], shown: Shown) -> Reply {
    outcome.warnings.extend(host.take_recovery_note());
    match &outcome.failure {
        Some(f) => {
            tracing::warn!(run_id = %outcome.run_id, target = %f.target, service = %f.service, reason = %f.reason, "start failed");
        }
        None => {
            tracing::info!(run_id = %outcome.run_id, started = outcome.started.len(), reused = outcome.reused.len(), "ready");
        }
    }
    let detail = serde_json::json!({"started": outcome.started, "reused": outcome.reused, "failure": outcome.failure.as_ref().map(|f| &f.reason)});
    let name = if outcome.failure.is_some() { "run.failed" } else { "run.ready" };
    host.event(None, None, name, detail);
    if let Some(failure) = &outcome.failure {
        let log_tail = report_tail(failure).await;
        host.record_error(ErrorEntry {
            target: Some(failure.target.clone()),
            service: Some(failure.service.clone()),
            kind: "start_failed".into(),
            message: failure.reason.clone(),
            log_path: failure.log_path.clone(),
            log_tail,
        });
    }
    let started: std::collections::HashSet<&str> = outcome.started.iter().map(String::as_str).collect();
    let mut label = String::new();
    let wanted = |target: &str, service: &str| match shown {
        Shown::Targets => targets.is_empty() || targets.iter().any(|t| t == target),
        Shown::Started => {
            label.clear();
            label.push_str(target);
            label.push('/');
            label.push_str(service);
            started.contains(label.as_str())
        }
    };
    // The asking CLI prints names, statuses and URLs; a spec (argv, environment) is most of a record.
    outcome.services = host.records_where(wanted).await;
    if let Err(e) = host.save_then_copy().await {
        outcome.warnings.push(e.to_string());
    }
    Reply::Started(outcome)
}

/// Adopts what still runs (the host did at start-up), restarts what the saved state had running but is gone,
/// and reports live services whose port nothing of theirs listens on.
pub async fn resume(host: &Arc<Host>, request: ResumeRequest, tx: &mpsc::Sender<Reply>) -> Reply {
    let began = Instant::now();
    let previous = host.previous().cloned();
    let supervised: BTreeMap<Key, ServiceHandle> = host.snapshot().await;
    if previous.as_ref().is_none_or(|p| p.services.is_empty()) && supervised.is_empty() {
        return error(&match &previous {
            Some(last) => {
                StartupError::NothingRunning { run_id: last.run_id.clone(), command: last.command.clone() }
            }
            None => StartupError::NothingToResume,
        });
    }
    if let Some(config) = request.config.clone() {
        host.ensure_worker(&Settings::resolved(config, host.paths().clone()), &request.env);
    }
    let targets: Vec<String> = previous.as_ref().map(|p| p.targets.clone()).unwrap_or_default();
    let run_id = host.begin_run("resume", &targets, None);
    let mut outcome = StartOutcome { run_id: run_id.clone(), ..StartOutcome::default() };
    let mut to_start: Vec<ServiceSpec> = Vec::new();
    for (key, handle) in &supervised {
        let record = handle.record();
        if matches!(record.status, ServiceStatus::Ready | ServiceStatus::Starting) {
            outcome.reused.push(format!("{}/{}", key.0, key.1));
            if let (Some(pid), Some(port)) = (record.pid, record.port) {
                let listening = tokio::task::spawn_blocking(move || {
                    let tree: Vec<u32> = proc_info::tree(pid).into_iter().map(|(p, _)| p).collect();
                    proc_info::listening_ports(&tree).contains(&port)
                })
                .await
                .unwrap_or(true);
                if !listening {
                    outcome.warnings.push(format!(
                        "{}/{} runs (pid {pid}) but nothing of it listens on port {port}",
                        key.0, key.1
                    ));
                }
            }
        } else {
            let mut spec = (*handle.spec).clone();
            spec.base_env.clone_from(&request.env);
            to_start.push(spec);
        }
    }
    for record in previous.iter().flat_map(|p| &p.services) {
        let key = (record.target.clone(), record.service.clone());
        let Some(plan) = &record.spec else { continue };
        if supervised.contains_key(&key)
            || !matches!(
                record.status,
                ServiceStatus::Ready | ServiceStatus::Starting | ServiceStatus::Restarting
            )
        {
            continue;
        }
        if let Some(pid) = record.pid {
            // What the dead process left behind (a server's workers, a shell's children) goes first, and its pid
            // must be gone for good (a server checks its lock file's pid) before it starts again.
            signal::reap_leftovers(pid, Duration::from_secs(plan.stop_grace_secs)).await;
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::path::Path::new(&format!("/proc/{pid}")).exists()
                && proc_info::start_time(pid).is_none()
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        to_start.push(ServiceSpec {
            kind: record.kind,
            target: record.target.clone(),
            log_path: logs::log_path(&host.paths().scope_dir, &run_id, &record.target, &record.service),
            stop_grace: Duration::from_secs(plan.stop_grace_secs),
            base_env: request.env.clone(),
            plan: ServicePlan::clone(plan),
        });
    }
    let mut by_target: BTreeMap<String, Vec<ServiceSpec>> = BTreeMap::new();
    host.hub().await;
    for spec in to_start {
        by_target.entry(spec.target.clone()).or_default().push(spec);
    }
    for (_, specs) in by_target {
        let result = run_target(host, specs, &Restart::Everything, tx, began).await;
        outcome.started.extend(result.started);
        if outcome.failure.is_none() {
            outcome.failure = result.failure;
        }
    }
    finish(host, outcome, &[], Shown::Targets).await
}
