//! The requirements phase of a start, in the host: prepare each server's data (a Postgres cluster copied from the
//! machine's template), start or reuse it, wait for its built-in probe, then create each target's database — a
//! worktree's as a copy of main's — and seed the ones created empty.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envctl_contracts::config::{Adapter, Isolation};
use envctl_contracts::control::{Reply, StartFailure};
use envctl_contracts::startup::{RequirementPlan, StartupPlan};
use envctl_contracts::state::ProcessKind;
use tokio::sync::mpsc;

use super::layers::{Restart, TargetResult, run_target};
use crate::config::Settings;
use crate::host::{Host, Key};
use crate::requirements::{self, PG_USER, RequirementError, postgres};
use crate::supervisor::logs;
use crate::supervisor::service::ServiceSpec;

/// Phrases in a server's log that mean its port was taken between planning and binding.
const BIND_CONFLICT: &[&str] =
    &["Address already in use", "could not bind", "Could not create server TCP listening socket"];

/// Whether a failure is a port taken under the server's feet (the start retries on another port).
pub fn is_bind_conflict(failure: &StartFailure) -> bool {
    failure.log_tail.iter().any(|line| BIND_CONFLICT.iter().any(|p| line.contains(p)))
}

fn failure(owner: &str, name: &str, reason: String, log_path: Option<PathBuf>) -> StartFailure {
    StartFailure {
        target: owner.to_owned(),
        service: name.to_owned(),
        reason,
        log_tail: log_path.as_ref().map(|p| logs::tail(p, 20)).unwrap_or_default(),
        log_path: log_path.map(|p| p.display().to_string()),
    }
}

/// Starts (or reuses) every requirement `plan` needs and prepares each target's database.
pub async fn run(
    host: &Arc<Host>,
    settings: &Settings,
    plan: &StartupPlan,
    base_env: &BTreeMap<String, String>,
    tx: &mpsc::Sender<Reply>,
    began: Instant,
) -> TargetResult {
    let run_id = host.run_id();
    let mut servers: BTreeMap<Key, &RequirementPlan> = BTreeMap::new();
    let mut users: BTreeMap<String, BTreeSet<Key>> = BTreeMap::new();
    for target in &plan.targets {
        for req in &target.requirements {
            let key = (req.server_owner.clone(), req.name.clone());
            users.entry(target.name.clone()).or_default().insert(key.clone());
            servers.entry(key).or_insert(req);
        }
    }
    host.share_servers(users);
    let mut specs = Vec::new();
    for ((owner, name), req) in &servers {
        let log_path = logs::log_path(&host.paths().scope_dir, &run_id, owner, name);
        if let Err(why) = prepare(settings, req).await {
            let reason = format!("{why} (data directory {}; log {})", req.data_dir, log_path.display());
            return TargetResult {
                failure: Some(failure(owner, name, reason, None)),
                ..TargetResult::default()
            };
        }
        specs.push(ServiceSpec {
            kind: ProcessKind::Requirement,
            target: owner.clone(),
            log_path,
            stop_grace: Duration::from_secs(req.process.stop_grace_secs),
            base_env: base_env.clone(),
            plan: req.process.clone(),
        });
    }
    let mut result = run_target(host, specs, &Restart::Nothing, tx, began).await;
    if result.failure.is_some() {
        return result;
    }
    if let Err(f) = databases(settings, plan, &servers).await {
        result.failure = Some(f);
    }
    result
}

/// Makes the server's data directory ready.
async fn prepare(settings: &Settings, req: &RequirementPlan) -> Result<(), RequirementError> {
    let data_dir = PathBuf::from(&req.data_dir);
    let paths = settings.paths.clone();
    let postgres_bin = req.binaries.iter().find(|b| b.name == "postgres").and_then(|b| b.path.clone());
    let adapter = req.adapter;
    let password = req.process.env.get(requirements::REDIS_AUTH_VAR).cloned();
    tokio::task::spawn_blocking(move || match adapter {
        Adapter::Postgres => {
            let bin = postgres_bin.map(PathBuf::from).ok_or_else(|| RequirementError::Missing {
                binary: "postgres".into(),
                package: "postgresql".into(),
            })?;
            let bin_dir = bin.parent().map(PathBuf::from).unwrap_or_default();
            let run_as = postgres::run_as()?;
            let began = Instant::now();
            let created = postgres::prepare_cluster(&paths, &bin_dir, &data_dir, run_as.as_ref())?;
            if created {
                tracing::info!(data_dir = %data_dir.display(), elapsed_ms = began.elapsed().as_millis(), "postgres cluster created");
            }
            Ok(())
        }
        Adapter::Redis => {
            crate::state::create_private_dir_all(&data_dir).map_err(|e| RequirementError::io("create", &data_dir, &e))?;
            requirements::redis::write_config(&data_dir, password.as_deref())
                .map_err(|e| RequirementError::io("write the config file of", &data_dir, &e))
        }
        Adapter::Command => {
            crate::state::create_private_dir_all(&data_dir).map_err(|e| RequirementError::io("create", &data_dir, &e))
        }
    })
    .await
    .unwrap_or_else(|e| Err(RequirementError::Setup { program: "envctl".into(), dir: PathBuf::new(), detail: e.to_string() }))
}

/// Creates each target's Postgres database (main's first; a worktree's as a copy of main's) and seeds new ones.
async fn databases(
    settings: &Settings,
    plan: &StartupPlan,
    servers: &BTreeMap<Key, &RequirementPlan>,
) -> Result<(), StartFailure> {
    let project = &settings.config.project.name;
    let mut targets: Vec<_> = plan.targets.iter().collect();
    targets.sort_by_key(|t| t.name != "main");
    for target in targets {
        for req in target.requirements.iter().filter(|r| r.adapter == Adapter::Postgres) {
            let Some(server) = servers.get(&(req.server_owner.clone(), req.name.clone())) else { continue };
            let port = server.port.assigned;
            let database = requirements::database_name(project, &target.name);
            let main_db = requirements::database_name(project, "main");
            let template =
                (req.isolation == Isolation::Database && target.name != "main").then_some(main_db.as_str());
            let created =
                postgres::ensure_database(port, PG_USER, &database, template).await.map_err(|e| {
                    failure(&target.name, &req.name, format!("cannot create database {database}: {e}"), None)
                })?;
            let fresh =
                matches!(created, postgres::Created::Fresh | postgres::Created::FreshBecauseTemplateBusy);
            let seed = settings.config.requirements.get(&req.name).and_then(|r| r.seed.clone());
            if let (true, Some(seed)) = (fresh, seed) {
                let root = PathBuf::from(&target.root);
                postgres::seed(port, PG_USER, &database, &seed, &root, &req.url)
                    .await
                    .map_err(|e| failure(&target.name, &req.name, e.to_string(), None))?;
            }
        }
    }
    Ok(())
}
