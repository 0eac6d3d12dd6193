//! Starting one target's services layer by layer: each layer's services side by side, each waited on until its
//! readiness probe passes (progress sent as each changes), an identical running service reused; the first failure
//! stops what this start launched for the target, in reverse.

use std::sync::Arc;
use std::time::Instant;

use envctl_contracts::control::{Progress, Reply, StartFailure};
use envctl_contracts::startup::ServicePlan;
use envctl_contracts::state::ServiceStatus;
use tokio::sync::mpsc;

use crate::host::{Host, Key};
use crate::supervisor::logs;
use crate::supervisor::service::{ServiceHandle, ServiceSpec};

/// Which services a start restarts even when an identical one already runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Restart {
    /// None: identical running services are reused.
    #[default]
    Nothing,
    /// Every one (`start --no-resume`, `restart` of whole targets).
    Everything,
    /// Exactly these (`restart --service`).
    Only(std::collections::BTreeSet<String>),
}

impl Restart {
    /// Whether `service` is restarted.
    pub fn applies_to(&self, service: &str) -> bool {
        match self {
            Self::Nothing => false,
            Self::Everything => true,
            Self::Only(names) => names.contains(service),
        }
    }
}

/// Log lines shown with a failure.
const FAILURE_TAIL: usize = 20;

/// Two plans describe the same running service when everything but the port's bookkeeping matches.
fn same_service(a: &ServicePlan, b: &ServicePlan) -> bool {
    let port = |p: &ServicePlan| p.port.map(|p| p.assigned);
    let named = |p: &ServicePlan| p.ports.iter().map(|(n, p)| (n.clone(), p.assigned)).collect::<Vec<_>>();
    port(a) == port(b)
        && named(a) == named(b)
        && a.argv == b.argv
        && a.cwd == b.cwd
        && a.env == b.env
        && a.ready == b.ready
        && a.restart == b.restart
        && a.stop_grace_secs == b.stop_grace_secs
}

/// What one target's start did.
#[derive(Debug, Default)]
pub(super) struct TargetResult {
    /// `target/service` of what was already running identically.
    pub reused: Vec<String>,
    /// `target/service` of what was started.
    pub started: Vec<String>,
    /// The first failure.
    pub failure: Option<StartFailure>,
    /// What is worth telling about the start (how each new database was made).
    pub notes: Vec<String>,
}

/// Starts one target's services layer by layer; on the first failure stops what it started, in reverse.
pub(super) async fn run_target(
    host: &Arc<Host>,
    specs: Vec<ServiceSpec>,
    restart: &Restart,
    tx: &mpsc::Sender<Reply>,
    began: Instant,
) -> TargetResult {
    let mut result = TargetResult::default();
    let mut launched: Vec<Key> = Vec::new();
    let max_layer = specs.iter().map(|s| s.plan.layer).max().unwrap_or(0);
    for layer in 0..=max_layer {
        let mut waiting = Vec::new();
        for spec in specs.iter().filter(|s| s.plan.layer == layer) {
            let key: Key = (spec.target.clone(), spec.plan.name.clone());
            let label = format!("{}/{}", key.0, key.1);
            let existing = host.get(&key).await;
            if let Some(handle) = &existing {
                let record = handle.record();
                let alive = matches!(
                    record.status,
                    ServiceStatus::Pending | ServiceStatus::Ready | ServiceStatus::Starting
                );
                if alive
                    && !restart.applies_to(&spec.plan.name)
                    && same_service(&handle.spec.plan, &spec.plan)
                {
                    result.reused.push(label);
                    waiting.push((key, handle.clone()));
                    continue;
                }
                host.stop(vec![key.clone()]).await;
            }
            let handle = host.launch(spec.clone(), None).await;
            launched.push(key.clone());
            result.started.push(label);
            waiting.push((key, handle));
        }
        for (key, handle) in waiting {
            if let Err(failure) = wait_ready(&key, &handle, tx, began).await {
                result.failure = Some(failure);
                launched.reverse();
                host.stop(launched.into_iter().filter(|k| k != &key).collect()).await;
                return result;
            }
        }
        // A wave is ready: its processes go on disk now, once for the whole wave, while the next one starts (the
        // last wave is written by the start's end).
        if layer < max_layer {
            host.save_wave();
        }
    }
    result
}

/// Waits until the service is ready (reporting progress) or has failed.
async fn wait_ready(
    key: &Key,
    handle: &ServiceHandle,
    tx: &mpsc::Sender<Reply>,
    began: Instant,
) -> Result<(), StartFailure> {
    let mut watch = handle.watch();
    let mut last = None;
    loop {
        let record = watch.borrow_and_update().clone();
        if last != Some(record.status) {
            last = Some(record.status);
            let detail = match record.status {
                ServiceStatus::Ready => record.url.clone().unwrap_or_default(),
                _ => record.failure.clone().unwrap_or_default(),
            };
            let elapsed_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
            let progress = Progress {
                target: key.0.clone(),
                service: key.1.clone(),
                status: record.status,
                detail,
                elapsed_ms,
                output: None,
            };
            let _ = tx.send(Reply::Progress(progress)).await;
        }
        match record.status {
            ServiceStatus::Ready => return Ok(()),
            ServiceStatus::Failed | ServiceStatus::Exited | ServiceStatus::Stopped => {
                let log_path = record.log_path.clone();
                let log_tail = match log_path.clone() {
                    Some(path) => tokio::task::spawn_blocking(move || {
                        logs::tail(std::path::Path::new(&path), FAILURE_TAIL)
                    })
                    .await
                    .unwrap_or_default(),
                    None => Vec::new(),
                };
                let reason =
                    record.failure.clone().unwrap_or_else(|| format!("{:?}", record.status).to_lowercase());
                return Err(StartFailure {
                    target: key.0.clone(),
                    service: key.1.clone(),
                    reason,
                    log_path,
                    log_tail,
                });
            }
            _ => {}
        }
        if watch.changed().await.is_err() {
            return Err(StartFailure {
                target: key.0.clone(),
                service: key.1.clone(),
                reason: "its supervisor ended".into(),
                log_path: None,
                log_tail: Vec::new(),
            });
        }
    }
}
