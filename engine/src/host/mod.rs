//! The per-repository host process.
//!
//! How it works: `envctl start` finds the host through the scope's control socket or spawns one detached
//! (`envctl host`), then sends it a request. The host holds the scope's host lock (so there is never more than one),
//! adopts the services an earlier host left running (same pid **and** start time), serves the control socket,
//! supervises every service through one task each, and writes the state artifacts on every change. It exits when
//! nothing runs any more, on SIGTERM/SIGINT (stopping everything first), on a `shutdown` request, or when the
//! future passed to [`run`] completes (tests, `start --foreground`).
//!
//! The host knows nothing of how a start is planned and carried out: `start` and `resume` requests go to the
//! [`Orchestrator`] it is composed with (the `startup` domain), which drives it through [`Host`]'s narrow face —
//! launch, stop, snapshot, event, and the run's bookkeeping. Its async threads never block: events are appended
//! by a writer task off the runtime's threads, state is written on the blocking pool, and `/proc` scans run there.

pub mod client;
pub mod direct;
pub mod hub;
pub mod launch;
mod recover;
mod server;
mod snapshot;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use envctl_contracts::control::{Reply, ResumeRequest, StartRequest};
use envctl_contracts::ports::{LeaseOwner, TargetPorts};
use envctl_contracts::state::{ErrorEntry, Event, HostRecord, RunState, ServiceRecord, ServiceStatus};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{EnvVars, Paths, Settings};
use crate::jobs::StoreFactory;
use crate::ports::Ledger;
use crate::state::{StateError, StateRepository, new_run_id, now_rfc3339};
use crate::supervisor::service::{Reporter, ServiceEvent, ServiceHandle, ServiceSpec, launch};
use crate::supervisor::{logs, proc_info};

pub use server::handle;

/// A service's key: (target, service).
pub type Key = (String, String);

/// The host could not run.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Another host holds this scope.
    #[error(
        "another envctl host already runs for this repository (lock {0})\nhint: use `envctl stop-all` to stop it, or talk to it with `envctl start`/`stop`"
    )]
    AlreadyRunning(String),
    /// The control socket or a scope file could not be set up.
    #[error(
        "{path}: {source}\nhint: check the permissions of envctl's runtime directory (ENVCTL_RUNTIME_DIR)"
    )]
    Io {
        /// What.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// State could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a host is built from: handed over by the composition root (`EngineRuntime`).
#[derive(Debug, Clone)]
pub struct HostParts {
    /// The repository's locations.
    pub paths: Paths,
    /// The host's own environment snapshot (adopted services inherit it until a request brings the shell's).
    pub env: EnvVars,
    /// The scope's artifacts.
    pub state: StateRepository,
    /// The machine-wide port leases.
    pub ledger: Ledger,
    /// Cancelled when the host should exit.
    pub token: CancellationToken,
    /// Every task the host starts.
    pub tracker: TaskTracker,
}

/// A future an [`Orchestrator`] answers with.
pub type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// Carries out the requests that plan and start things (`start`, `restart`, `resume`); injected into the host so
/// the host does not depend on how that is done.
pub trait Orchestrator: Send + Sync + std::fmt::Debug {
    /// Starts (or reuses) what `request` asks for, sending progress on `tx`.
    fn start<'a>(
        &'a self,
        host: &'a Arc<Host>,
        request: StartRequest,
        tx: &'a mpsc::Sender<Reply>,
    ) -> ReplyFuture<'a>;
    /// Adopts survivors and restarts what is gone.
    fn resume<'a>(
        &'a self,
        host: &'a Arc<Host>,
        request: ResumeRequest,
        tx: &'a mpsc::Sender<Reply>,
    ) -> ReplyFuture<'a>;
}

/// The current run: what the latest command asked for and what went wrong in it.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// Run id.
    pub run_id: String,
    /// The command that made it.
    pub command: String,
    /// Targets it covers.
    pub targets: Vec<String>,
    /// This run's failures only.
    pub errors: Vec<ErrorEntry>,
    /// Port plans by target.
    pub ports: BTreeMap<String, TargetPorts>,
    /// When it began.
    pub created_at: String,
}

/// When a save writes the run's `runs/<run-id>/` copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunCopy {
    /// It does not: the latest view only.
    None,
    /// Before it returns.
    Now,
    /// Right after the latest view, in the background.
    After,
}

/// The host's shared state. Reached through its methods only.
#[derive(Debug)]
pub struct Host {
    parts: HostParts,
    record: HostRecord,
    services: tokio::sync::Mutex<BTreeMap<Key, ServiceHandle>>,
    run: std::sync::Mutex<RunInfo>,
    previous: Option<RunState>,
    reporter: Reporter,
    /// Held while the state is written, and by the background write of a run copy until it is on disk.
    save_lock: Arc<tokio::sync::Mutex<()>>,
    events: mpsc::UnboundedSender<Event>,
    force: AtomicBool,
    uses: std::sync::Mutex<BTreeMap<String, BTreeSet<Key>>>,
    worker_started: AtomicBool,
    /// The runtime API of the hub phase.
    hub: hub::Hub,
    orchestrator: Arc<dyn Orchestrator>,
    /// Held while a request changes what runs (`start`, `resume`, `stop`): one at a time, so a second `start`
    /// waits for the first and reuses what it started.
    orchestration: tokio::sync::Mutex<()>,
    /// Records of services that are not supervised but stay in the state with their last status and failure (a
    /// service that crashed under an earlier host), until they are started again or leave the configuration.
    retained: std::sync::Mutex<BTreeMap<Key, ServiceRecord>>,
    /// Said once to the first command after the host recovered a torn state.
    recovery: std::sync::Mutex<Option<String>>,
    /// Counts changes (every event, every nudge of a service task); `watch` connections wait on it.
    changes: tokio::sync::watch::Sender<u64>,
    /// The job store the in-process worker uses, once a start named it (`watch` reads its queue).
    job_stores: std::sync::OnceLock<StoreFactory>,
    /// Service changes the saver has taken in (each nudge it wakes on), and how many of them the last save covered:
    /// the saver writes only when a change came after the last save began.
    nudges: AtomicU64,
    saved_nudges: AtomicU64,
    /// A request under way asks for its state to be written now (a wave of services launched) with this.
    wave: Notify,
    /// Saves written (the latest view); each also says so in `events.jsonl` as `state.saved`.
    saves: AtomicU64,
    /// Control connections open now.
    connections: AtomicUsize,
    /// The configuration of the latest start that came with one and its digest, for the next that names it.
    held_config: std::sync::Mutex<Option<HeldConfig>>,
}

/// A configuration a start came with, under the digest of what it was read from, with the warnings reading it gave.
#[derive(Debug)]
pub struct HeldConfig {
    /// [`crate::config::Settings::digest`] of its sources.
    pub digest: String,
    /// The configuration.
    pub config: envctl_contracts::config::Config,
    /// What reading it warned about.
    pub warnings: Vec<String>,
}

/// The state an earlier host left: read, or recovered when it is torn; with what to tell the user then.
/// After a host that died without exiting (`unclean`), what it started but never saved is found in `/proc` too.
fn read_previous(repo: &StateRepository, scope: &str, unclean: bool) -> (Option<RunState>, Option<String>) {
    match repo.run_state() {
        Ok(state) if unclean => (recover::add_unrecorded(state, scope).0, None),
        Ok(state) => (state, None),
        Err(e @ StateError::Corrupt { .. }) => {
            let recovered = recover::recover(repo, scope, &e);
            (Some(recovered.state), Some(recovered.note))
        }
        Err(e) => {
            tracing::warn!(error = %e, "the saved state could not be read");
            (None, Some(e.to_string()))
        }
    }
}

/// The figures `/metrics` reports of the supervised services: ready ones, restarts, failed probe attempts kept.
fn service_counts(records: &[ServiceRecord]) -> crate::runtime_api::ServiceCounts {
    let services = records.iter().filter(|r| r.kind == envctl_contracts::state::ProcessKind::Service);
    let mut counts = crate::runtime_api::ServiceCounts::default();
    for record in services {
        counts.up += i64::from(record.status == ServiceStatus::Ready);
        counts.restarts += i64::from(record.restarts);
        counts.probe_failures += i64::try_from(record.probes.iter().filter(|p| !p.ok).count()).unwrap_or(0);
    }
    counts
}

/// Whether a status means a process runs (or is about to).
fn is_live(status: ServiceStatus) -> bool {
    matches!(
        status,
        ServiceStatus::Pending | ServiceStatus::Starting | ServiceStatus::Ready | ServiceStatus::Restarting
    )
}

/// Whether a stop of `targets` (all when empty) and `services` (all when empty) covers `service` of `target`.
pub fn covers(targets: &[String], services: &[String], target: &str, service: &str) -> bool {
    (targets.is_empty() || targets.iter().any(|t| t == target))
        && (services.is_empty() || services.iter().any(|s| s == service))
}

fn unpoisoned<T>(lock: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Host {
    /// A host over `parts` for the process `record`, with what the last host left (`previous`, and a note when it
    /// had to be recovered), reporting service changes to `reporter` and events to `events`.
    fn new(
        parts: HostParts,
        record: HostRecord,
        previous: Option<RunState>,
        recovery: Option<String>,
        reporter: Reporter,
        events: mpsc::UnboundedSender<Event>,
        orchestrator: Arc<dyn Orchestrator>,
    ) -> Self {
        let hub = hub::Hub::new(
            crate::runtime_api::ApiOptions {
                scope_dir: parts.paths.scope_dir.clone(),
                repository: parts.paths.repo_root.display().to_string(),
                worker: crate::jobs::worker::worker_id(),
            },
            parts.token.child_token(),
            parts.tracker.clone(),
        );
        Self {
            hub,
            parts,
            record,
            services: tokio::sync::Mutex::new(BTreeMap::new()),
            run: std::sync::Mutex::new(RunInfo::default()),
            previous,
            reporter,
            save_lock: Arc::new(tokio::sync::Mutex::new(())),
            events,
            force: AtomicBool::new(false),
            uses: std::sync::Mutex::new(BTreeMap::new()),
            worker_started: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            orchestrator,
            orchestration: tokio::sync::Mutex::new(()),
            retained: std::sync::Mutex::new(BTreeMap::new()),
            recovery: std::sync::Mutex::new(recovery),
            changes: tokio::sync::watch::Sender::new(0),
            job_stores: std::sync::OnceLock::new(),
            nudges: AtomicU64::new(0),
            saved_nudges: AtomicU64::new(0),
            wave: Notify::new(),
            saves: AtomicU64::new(0),
            held_config: std::sync::Mutex::new(None),
        }
    }

    /// Takes the configuration held under `digest`, if that is the one held (a request under way uses it, then
    /// gives it back with [`Self::hold_config`]).
    pub fn take_held_config(&self, digest: &str) -> Option<HeldConfig> {
        let mut held = unpoisoned(&self.held_config);
        if held.as_ref().is_some_and(|h| h.digest == digest) { held.take() } else { None }
    }

    /// Keeps `config` for the next request that names its digest (in place of the one held before).
    pub fn hold_config(&self, config: HeldConfig) {
        *unpoisoned(&self.held_config) = Some(config);
    }

    /// The repository's locations.
    pub fn paths(&self) -> &Paths {
        &self.parts.paths
    }

    /// The machine-wide port leases.
    pub fn ledger(&self) -> &Ledger {
        &self.parts.ledger
    }

    /// This process (pid and start time): the holder of the ports it leases.
    pub fn record(&self) -> HostRecord {
        self.record
    }

    /// The state the host found when it started (what `resume` works from).
    pub fn previous(&self) -> Option<&RunState> {
        self.previous.as_ref()
    }

    /// Starts supervising `spec` under its key, replacing whatever handle was there (adopting `adopt` = pid and
    /// start time of a survivor when given).
    /// A service gets the runtime API's variables and a token of its own (in its inherited environment, which
    /// no artifact records), once the hub has started.
    pub async fn launch(&self, mut spec: ServiceSpec, adopt: Option<(u32, u64)>) -> ServiceHandle {
        let key = (spec.target.clone(), spec.plan.name.clone());
        if spec.kind == envctl_contracts::state::ProcessKind::Service
            && let Some(api) = self.hub.started()
        {
            spec.base_env.extend(api.service_env(&key.0, &key.1));
        }
        let handle = launch(spec, adopt, self.reporter.clone(), &self.parts.tracker);
        unpoisoned(&self.retained).remove(&key);
        self.services.lock().await.insert(key, handle.clone());
        handle
    }

    /// Forgets `keys` entirely: their supervised handles are stopped and their retained records dropped (services
    /// that left the configuration).
    pub async fn forget(&self, keys: Vec<Key>) {
        {
            let mut retained = unpoisoned(&self.retained);
            for key in &keys {
                retained.remove(key);
            }
        }
        self.stop(keys).await;
    }

    /// Drops the retained records that a stop of `targets` (all when empty) and `services` (all when empty) covers.
    pub fn drop_retained(&self, targets: &[String], services: &[String]) {
        unpoisoned(&self.retained).retain(|(t, s), _| !covers(targets, services, t, s));
    }

    /// Keys of every service the state knows of: supervised or retained.
    pub async fn known(&self) -> BTreeSet<Key> {
        let mut keys: BTreeSet<Key> = self.services.lock().await.keys().cloned().collect();
        keys.extend(unpoisoned(&self.retained).keys().cloned());
        keys
    }

    /// Among `servers`, those no target with a live service uses (what a failed start may stop again).
    pub async fn unused_servers(&self, servers: &[Key]) -> Vec<Key> {
        use envctl_contracts::state::ProcessKind;
        let live_targets: BTreeSet<String> = self
            .services
            .lock()
            .await
            .iter()
            .filter(|(_, h)| h.spec.kind == ProcessKind::Service && is_live(h.record().status))
            .map(|((t, _), _)| t.clone())
            .collect();
        let uses = unpoisoned(&self.uses);
        servers
            .iter()
            .filter(|key| !live_targets.iter().any(|t| uses.get(t).is_some_and(|used| used.contains(*key))))
            .cloned()
            .collect()
    }

    /// What to tell the user once about a state the host had to recover (taken by the first reply).
    pub fn take_recovery_note(&self) -> Option<String> {
        unpoisoned(&self.recovery).take()
    }

    /// Waits for the other requests that change what runs to finish; held until the guard drops.
    pub async fn orchestrating(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.orchestration.lock().await
    }

    /// The supervised service under `key`.
    pub async fn get(&self, key: &Key) -> Option<ServiceHandle> {
        self.services.lock().await.get(key).cloned()
    }

    /// Every supervised service.
    pub async fn snapshot(&self) -> BTreeMap<Key, ServiceHandle> {
        self.services.lock().await.clone()
    }

    /// The records of the supervised services `wanted` picks (by target and service), without their specs: a
    /// reply's view, which copies none of the others.
    pub async fn records_where(&self, mut wanted: impl FnMut(&str, &str) -> bool) -> Vec<ServiceRecord> {
        self.services
            .lock()
            .await
            .iter()
            .filter(|((t, s), _)| wanted(t, s))
            .map(|(_, h)| {
                let mut record = h.record();
                record.spec = None;
                record
            })
            .collect()
    }

    /// Begins a new run for `command` over `targets`; earlier failures are not carried into it.
    /// `config` says where a start's configuration came from (`sent` with the request, `held` by the host), for
    /// the `run.begin` event.
    pub fn begin_run(&self, command: &str, targets: &[String], config: Option<&str>) -> String {
        let mut run = unpoisoned(&self.run);
        *run = RunInfo {
            run_id: new_run_id(),
            command: command.to_owned(),
            targets: targets.to_vec(),
            errors: Vec::new(),
            ports: run.ports.clone(),
            created_at: now_rfc3339(),
        };
        let run_id = run.run_id.clone();
        drop(run);
        let mut detail = serde_json::json!({"command": command, "targets": targets});
        if let Some(config) = config {
            detail["config"] = config.into();
        }
        self.event(None, None, "run.begin", detail);
        run_id
    }

    /// The current run id.
    pub fn run_id(&self) -> String {
        unpoisoned(&self.run).run_id.clone()
    }

    /// Remembers a target's port plans for `ports_manifest.json`.
    pub fn record_ports(&self, ports: TargetPorts) {
        unpoisoned(&self.run).ports.insert(ports.target.clone(), ports);
    }

    /// Records one of this run's failures for `error_report.json`.
    pub fn record_error(&self, entry: ErrorEntry) {
        unpoisoned(&self.run).errors.push(entry);
    }

    /// Remembers which requirement servers each target uses (so a shared server outlives a target that stops).
    pub fn share_servers(&self, users: BTreeMap<String, BTreeSet<Key>>) {
        let mut shared = unpoisoned(&self.uses);
        for (target, keys) in users {
            shared.entry(target).or_default().extend(keys);
        }
    }

    /// Starts the in-process job worker once, on the store `settings` name (it runs until the host exits).
    pub fn ensure_worker(&self, settings: &Settings, env: &BTreeMap<String, String>) {
        if self.worker_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let ctx = crate::jobs::handlers::HandlerContext::new(Some(settings.clone()), env.clone());
        let hub = self.hub.clone();
        let options = crate::jobs::worker::WorkerOptions {
            concurrency: 4,
            types: Vec::new(),
            drain: false,
            lease: Duration::from_secs(settings.config.jobs.lease_secs),
        };
        let (shutdown, force) = (self.parts.token.child_token(), CancellationToken::new());
        let stores = match StoreFactory::from_settings(settings, env.get("PATH").map(String::as_str)) {
            Ok(stores) => stores,
            Err(e) => return tracing::warn!(error = %e, "no in-process job worker"),
        };
        let _ = self.job_stores.set(stores.clone());
        self.hub.serve_store(stores.clone());
        self.parts.tracker.spawn(async move {
            // Opening the store touches the disk: off the host's thread, and a moment after the start that asked
            // for it, so starting services never waits on it.
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            // A store that does not answer yet (Redis not up) is tried again, so jobs run once it is.
            let mut pause = Duration::from_millis(200);
            let store = loop {
                let opening = stores.clone();
                match tokio::task::spawn_blocking(move || opening.open()).await {
                    Ok(Ok(store)) => break store,
                    Ok(Err(e)) => tracing::warn!(error = %e, retry_in_ms = pause.as_millis(), "job store not reachable yet"),
                    Err(e) => return tracing::warn!(error = %e, "no in-process job worker"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(10));
            };
            // The worker's jobs reach the hub's API (started here if no start has reached the hub phase yet).
            let ctx = match hub.start().await {
                Some(api) => {
                    api.attach_store(Arc::clone(&store));
                    ctx.with_executions(Arc::new(api))
                }
                None => ctx,
            };
            let ctx = Arc::new(ctx);
            if let Err(e) = crate::jobs::worker::run(store, ctx, options, shutdown, force).await {
                tracing::warn!(error = %e, "the in-process job worker stopped");
            }
        });
    }

    /// Queues one line for `events.jsonl` under the current run (the writer task appends it).
    pub fn event(
        &self,
        target: Option<String>,
        service: Option<String>,
        event: &str,
        detail: serde_json::Value,
    ) {
        let line = Event {
            schema_version: envctl_contracts::SCHEMA_VERSION,
            at: now_rfc3339(),
            run_id: self.run_id(),
            target,
            service,
            event: event.to_owned(),
            detail,
        };
        // Only fails once the writer has ended, at the very end of the host's life.
        let _ = self.events.send(line);
        self.changed();
    }

    /// A service changed: counted for the saver, and told to every `watch` connection.
    fn nudged(&self) {
        self.nudges.fetch_add(1, Ordering::SeqCst);
        self.changed();
    }

    /// Tells every `watch` connection that something changed.
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Every service and requirement process, supervised or retained, sorted by target and name.
    async fn records(&self) -> Vec<ServiceRecord> {
        let mut records: Vec<_> = self.services.lock().await.values().map(ServiceHandle::record).collect();
        records.extend(unpoisoned(&self.retained).values().cloned());
        records.sort_by(|a, b| (&a.target, &a.service).cmp(&(&b.target, &b.service)));
        records
    }

    /// Writes every artifact from the live view; with `history`, also the run's `runs/<run-id>/` copy. A failure
    /// is logged and recorded as an event, and returned.
    pub async fn save(&self, history: bool) -> Result<(), StateError> {
        self.save_as(if history { RunCopy::Now } else { RunCopy::None }).await
    }

    /// Writes the latest view now and the run's `runs/<run-id>/` copy right after, in the background (a command's
    /// reply waits for the latest view only, which every reader of the state reads). The next save, a `status`
    /// request ([`Self::flush`]) and the host's exit wait until the copy is on disk.
    pub async fn save_then_copy(&self) -> Result<(), StateError> {
        self.save_as(RunCopy::After).await
    }

    /// Waits until a run copy being written in the background is on disk.
    pub async fn flush(&self) {
        drop(self.save_lock.lock().await);
    }

    async fn save_as(&self, copy: RunCopy) -> Result<(), StateError> {
        let guard = Arc::clone(&self.save_lock).lock_owned().await;
        // Every nudge taken in so far is covered: the records are read after it.
        let covered = self.nudges.load(Ordering::SeqCst);
        let mut records: Vec<_> = self.services.lock().await.values().map(ServiceHandle::record).collect();
        if let Some(api) = self.hub.started() {
            api.set_services(service_counts(&records));
        }
        records.extend(unpoisoned(&self.retained).values().cloned());
        records.sort_by(|a, b| (&a.target, &a.service).cmp(&(&b.target, &b.service)));
        let run = unpoisoned(&self.run).clone();
        let services = records.len();
        let mut artifacts = snapshot::artifacts(&run, self.record, records);
        artifacts.run_state.requirement_users = unpoisoned(&self.uses)
            .iter()
            .map(|(target, keys)| (target.clone(), keys.iter().map(|(o, n)| format!("{o}/{n}")).collect()))
            .collect();
        let repo = self.parts.state.clone();
        let artifacts = Arc::new(artifacts);
        let written = Arc::clone(&artifacts);
        let saved = tokio::task::spawn_blocking(move || match copy {
            RunCopy::Now => repo.save_run_with_history(&written),
            RunCopy::None | RunCopy::After => repo.save_run(&written),
        })
        .await
        .unwrap_or_else(|e| {
            Err(StateError::Io { path: "state writer".into(), source: std::io::Error::other(e) })
        });
        match &saved {
            Ok(()) => {
                self.saved_nudges.fetch_max(covered, Ordering::SeqCst);
                let count = self.saves.fetch_add(1, Ordering::Relaxed) + 1;
                // The exiting host's last save comes after its `host.stopped`, the log's last word.
                if !self.parts.token.is_cancelled() {
                    let history = copy != RunCopy::None;
                    let detail =
                        serde_json::json!({"services": services, "history": history, "saves": count});
                    self.event(None, None, "state.saved", detail);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "state not saved");
                self.event(None, None, "state.save_failed", serde_json::json!({"error": e.to_string()}));
            }
        }
        if copy == RunCopy::After && saved.is_ok() {
            let repo = self.parts.state.clone();
            let events = self.events.clone();
            self.parts.tracker.spawn(async move {
                let copied = tokio::task::spawn_blocking(move || repo.save_run_copy(&artifacts)).await;
                if let Ok(Err(e)) = copied {
                    tracing::error!(error = %e, "run copy not saved");
                    let _ = events.send(Event {
                        schema_version: envctl_contracts::SCHEMA_VERSION,
                        at: now_rfc3339(),
                        run_id: run.run_id,
                        target: None,
                        service: None,
                        event: "state.save_failed".into(),
                        detail: serde_json::json!({"error": e.to_string()}),
                    });
                }
                drop(guard);
            });
        }
        saved
    }

    /// Asks for the state to be written now, while a request is under way (it writes it again when it ends): a
    /// wave of services was launched, so their processes are on disk before the next wave waits on them.
    pub fn save_wave(&self) {
        self.wave.notify_one();
    }

    /// Stops the given services for good (a user's stop, a failed start's rollback, the host's exit): as
    /// [`Self::stop`], then gives up the ports they were moved to, so their next start asks for their own again.
    pub async fn stop_for_good(&self, keys: Vec<Key>) -> Vec<Key> {
        let handles = self.halt(keys).await;
        self.release_moved_ports(handles.iter().map(|(_, h)| (&h.spec.target, &h.spec.plan))).await;
        handles.into_iter().map(|(k, _)| k).collect()
    }

    /// Stops the given services in reverse dependency order and forgets them (their leases stay: a service stopped
    /// to be started again keeps its port); returns their keys.
    pub async fn stop(&self, keys: Vec<Key>) -> Vec<Key> {
        self.halt(keys).await.into_iter().map(|(k, _)| k).collect()
    }

    async fn halt(&self, keys: Vec<Key>) -> Vec<(Key, ServiceHandle)> {
        let force = self.force.load(Ordering::Relaxed);
        let handles: Vec<(Key, ServiceHandle)> = {
            let services = self.services.lock().await;
            keys.into_iter().filter_map(|k| services.get(&k).cloned().map(|h| (k, h))).collect()
        };
        let max_layer = handles.iter().map(|(_, h)| h.spec.plan.layer).max().unwrap_or(0);
        for layer in (0..=max_layer).rev() {
            let mut stops = tokio::task::JoinSet::new();
            for (_, handle) in handles.iter().filter(|(_, h)| h.spec.plan.layer == layer) {
                let handle = handle.clone();
                stops.spawn(async move { handle.stop(force).await });
            }
            while stops.join_next().await.is_some() {}
        }
        let mut services = self.services.lock().await;
        for (key, _) in &handles {
            services.remove(key);
        }
        drop(services);
        if let Some(api) = self.hub.started() {
            for ((target, service), _) in &handles {
                api.service_stopped(target, service);
            }
        }
        handles
    }

    /// The hub phase: starts the runtime API (once), so the services started after it can reach it.
    pub async fn hub(&self) {
        self.hub.start().await;
    }

    /// Gives up the leases of stopped services that run on another port than they asked for (something held
    /// theirs), so their next start takes the requested port back when it is free.
    async fn release_moved_ports<'a>(
        &self,
        stopped: impl Iterator<Item = (&'a String, &'a envctl_contracts::startup::ServicePlan)>,
    ) {
        let repo = self.paths().repo_root.display().to_string();
        let moved: Vec<LeaseOwner> = stopped
            .flat_map(|(target, plan)| {
                let owned = crate::ports::moved(plan);
                owned.into_iter().map(|service| LeaseOwner {
                    repo: repo.clone(),
                    target: target.clone(),
                    service,
                })
            })
            .collect();
        if moved.is_empty() {
            return;
        }
        let ledger = self.parts.ledger.clone();
        let released = tokio::task::spawn_blocking(move || ledger.release(|o| moved.contains(o))).await;
        if let Ok(Err(e)) = released {
            tracing::warn!(error = %e, "moved port leases not released");
        }
    }

    /// Stops everything for good.
    pub async fn stop_all(&self) -> Vec<Key> {
        let keys: Vec<Key> = self.services.lock().await.keys().cloned().collect();
        self.stop_for_good(keys).await
    }

    /// Asks the host to exit.
    pub fn exit(&self) {
        self.parts.token.cancel();
    }

    /// Whether nothing runs: every supervised service has ended (failed, exited, stopped) or there is none.
    pub async fn is_idle(&self) -> bool {
        self.services.lock().await.values().all(|h| !is_live(h.record().status))
    }

    /// Keeps the records of services that ended on their own (failed, exited) when their handles go with the
    /// host, so the state still shows them and why.
    async fn retain_ended(&self) {
        let ended: Vec<ServiceRecord> = self
            .services
            .lock()
            .await
            .values()
            .map(ServiceHandle::record)
            .filter(|r| matches!(r.status, ServiceStatus::Failed | ServiceStatus::Exited))
            .collect();
        let mut retained = unpoisoned(&self.retained);
        for record in ended {
            retained.insert((record.target.clone(), record.service.clone()), record);
        }
    }

    /// Whether any service has a handle (a task to stop before the host exits).
    async fn has_handles(&self) -> bool {
        !self.services.lock().await.is_empty()
    }

    /// What a stop of `targets` (all when empty) and `services` (all when empty) stops: the matching services and
    /// the requirement servers those targets own, except a server another target that keeps running still uses.
    pub async fn stop_keys(&self, targets: &[String], services: &[String]) -> Vec<Key> {
        use envctl_contracts::state::ProcessKind;
        let all = self.services.lock().await;
        let selected = |(t, s): &Key| covers(targets, services, t, s);
        let mut keys: Vec<Key> = all.keys().filter(|k| selected(k)).cloned().collect();
        let remaining: BTreeSet<&String> = all
            .iter()
            .filter(|(k, h)| {
                h.spec.kind == ProcessKind::Service && !selected(k) && is_live(h.record().status)
            })
            .map(|((t, _), _)| t)
            .collect();
        let uses = unpoisoned(&self.uses);
        keys.retain(|key| {
            all.get(key).is_none_or(|h| h.spec.kind == ProcessKind::Service)
                || !remaining.iter().any(|t| uses.get(*t).is_some_and(|used| used.contains(key)))
        });
        keys
    }
}

/// Takes the scope's host lock without waiting; `None` when another host holds it.
fn take_lock(paths: &Paths) -> Result<Option<File>, HostError> {
    let path = paths.scope_dir.join("host.lock");
    let io = |source| HostError::Io { path: path.display().to_string(), source };
    crate::state::create_private_dir_all(&paths.scope_dir).map_err(io)?;
    let file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Waits (up to 10 s) for the host lock while an earlier host finishes exiting. `None` when another host holds it
/// and serves the socket. Only this contended case waits in a loop (two hosts racing, or one still stopping its
/// services): either the lock frees or the other host's socket answers.
async fn wait_for_lock(paths: &Paths) -> Result<Option<File>, HostError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(lock) = take_lock(paths)? {
            return Ok(Some(lock));
        }
        if std::os::unix::net::UnixStream::connect(paths.control_socket()).is_ok()
            || std::time::Instant::now() >= deadline
        {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs the host until it has nothing to do, a signal or `shutdown` arrives, or `stop` completes.
pub async fn run(
    parts: HostParts,
    orchestrator: Arc<dyn Orchestrator>,
    ready: impl FnOnce(),
    stop: impl Future<Output = ()>,
) -> Result<(), HostError> {
    let paths = parts.paths.clone();
    let Some(lock) = wait_for_lock(&paths).await? else {
        return Err(HostError::AlreadyRunning(paths.scope_dir.join("host.lock").display().to_string()));
    };
    let (pid, start_time) = proc_info::current();
    let unclean = mark_running(&lock, pid, start_time);
    // Read here, on the host's own thread: nothing is served before it, and the `start` waiting for this host
    // waits one hand-off less than through the blocking pool.
    let (previous, recovery) = read_previous(&parts.state, &crate::plan::scope_of(&paths), unclean);
    let (service_events_tx, service_events) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let events_done = CancellationToken::new();
    let event_writer = tokio::spawn(write_events(parts.state.clone(), events_rx, events_done.clone()));
    let reporter = Reporter { changed: Arc::new(Notify::new()), events: service_events_tx };
    let record = HostRecord { pid, start_time };
    let host = Arc::new(Host::new(parts, record, previous, recovery, reporter, events_tx, orchestrator));
    host.begin_run("host", &host.previous.as_ref().map(|p| p.targets.clone()).unwrap_or_default(), None);
    adopt_survivors(&host).await;
    claim_adopted_ports(&host).await;
    if let Some(previous) = &host.previous {
        let users = previous
            .requirement_users
            .iter()
            .map(|(target, keys)| {
                let keys = keys
                    .iter()
                    .filter_map(|k| k.split_once('/'))
                    .map(|(o, n)| (o.to_owned(), n.to_owned()))
                    .collect();
                (target.clone(), keys)
            })
            .collect();
        host.share_servers(users);
    }
    let listener = server::bind(&paths)?;
    if let Some(claim) = crate::host::launch::Claim::from_stdin() {
        host.parts.tracker.spawn(exit_when_unclaimed(Arc::clone(&host), claim));
    }
    ready();
    // The runtime API starts while the CLI that spawned this host connects and sends its request, not after: a
    // start's first service needs its URL.
    let hub = host.hub.clone();
    host.parts.tracker.spawn(async move { hub.start().await });
    host.reporter.changed.notify_one();
    let (saver_done, forwarder_done) = (CancellationToken::new(), CancellationToken::new());
    let saver = tokio::spawn(save_on_change(Arc::clone(&host), saver_done.clone()));
    let forwarder =
        tokio::spawn(forward_service_events(Arc::clone(&host), service_events, forwarder_done.clone()));
    let adopted = host.services.lock().await.len();
    tracing::info!(pid, adopted, socket = %paths.control_socket().display(), "host started");
    host.event(None, None, "host.started", serde_json::json!({"pid": pid, "adopted": adopted}));
    let serve = server::serve(Arc::clone(&host), listener);
    tokio::pin!(serve, stop);
    let mut signals = Signals::new()?;
    tokio::select! {
        () = host.parts.token.cancelled() => {}
        () = &mut stop => {}
        () = &mut serve => {}
        () = signals.next() => {}
    }
    // No new clients from here on; a second signal during the stop forces it.
    server::unbind(&paths);
    host.parts.token.cancel();
    // No more saves on change (one under way finishes first): the final save below is the last word.
    saver_done.cancel();
    let _ = saver.await;
    let had_services = host.has_handles().await;
    host.retain_ended().await;
    if had_services {
        let stopping = host.stop_all();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                _ = &mut stopping => break,
                () = signals.next() => host.force.store(true, Ordering::Relaxed),
            }
        }
    }
    tracing::info!(pid, had_services, "host stopping");
    host.parts.tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), host.parts.tracker.wait()).await;
    // The services' last events go to the log before the host's own last one.
    forwarder_done.cancel();
    let _ = forwarder.await;
    host.event(None, None, "host.stopped", serde_json::json!({"pid": pid}));
    if had_services {
        // Failures are logged and recorded by `save`.
        let _ = host.save(true).await;
    }
    // The writer appends what is queued and ends.
    events_done.cancel();
    let _ = event_writer.await;
    // The next host may start now, knowing this one exited.
    let _ = lock.set_len(0);
    drop(lock);
    Ok(())
}

/// Writes this host into its lock file, which it empties when it exits; whether the file named a host already (one
/// that died without exiting: SIGKILL, a crash, a power cut).
fn mark_running(lock: &File, pid: u32, start_time: u64) -> bool {
    use std::io::{Read as _, Seek as _, Write as _};
    let mut file = lock;
    let mut before = String::new();
    let _ = file.read_to_string(&mut before);
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{pid} {start_time}");
    !before.trim().is_empty()
}

/// Leases the ports of adopted services to this host, so planners see them held by a live owner again.
async fn claim_adopted_ports(host: &Host) {
    let repo = host.paths().repo_root.display().to_string();
    let claims: Vec<(u16, LeaseOwner)> = host
        .services
        .lock()
        .await
        .values()
        .flat_map(|h| {
            let record = h.record();
            let owner =
                |service: String| LeaseOwner { repo: repo.clone(), target: record.target.clone(), service };
            let main = record.port.map(|port| (port, owner(record.service.clone())));
            let named = record
                .ports
                .iter()
                .map(|(name, port)| (*port, owner(crate::ports::named_owner(&record.service, name))));
            main.into_iter().chain(named).collect::<Vec<_>>()
        })
        .collect();
    if claims.is_empty() {
        return;
    }
    let (ledger, record) = (host.parts.ledger.clone(), host.record);
    let claimed =
        tokio::task::spawn_blocking(move || ledger.claim(&claims, record.pid, record.start_time)).await;
    if let Ok(Err(e)) = claimed {
        tracing::warn!(error = %e, "the ports of adopted services could not be leased again");
    }
}

/// Re-owns every service of the saved state whose process still runs (pid and start time match).
async fn adopt_survivors(host: &Host) {
    let Some(previous) = host.previous.clone() else { return };
    // A process that runs but whose spec is unknown (found in /proc when the state was torn) cannot be
    // supervised or restarted: it is stopped (pid and start time checked), so it never runs twice beside the
    // one the next start launches.
    let strays: Vec<(String, u32, u64)> = previous
        .services
        .iter()
        .filter(|r| r.spec.is_none())
        .filter_map(|r| Some((format!("{}/{}", r.target, r.service), r.pid?, r.pid_start_time?)))
        .collect();
    for (label, pid, started) in strays {
        if crate::supervisor::signal::stop_unowned(pid, started, Duration::from_secs(5)).await {
            host.event(None, None, "recovered.stopped", serde_json::json!({"service": label, "pid": pid}));
        }
    }
    let candidates: Vec<_> = previous
        .services
        .iter()
        .filter_map(|r| Some((r.clone(), r.pid?, r.pid_start_time?, r.spec.clone()?)))
        .collect();
    // The /proc reads run on the blocking pool.
    let alive = tokio::task::spawn_blocking(move || {
        candidates
            .into_iter()
            .filter(|(_, pid, started, _)| proc_info::is_same_process(*pid, *started))
            .collect()
    })
    .await
    .unwrap_or_else(|_| Vec::new());
    let adopted: BTreeSet<Key> = alive
        .iter()
        .map(|(r, _, _, _): &(ServiceRecord, u32, u64, _)| (r.target.clone(), r.service.clone()))
        .collect();
    {
        let mut retained = unpoisoned(&host.retained);
        for record in
            previous.services.iter().filter(|r| !adopted.contains(&(r.target.clone(), r.service.clone())))
        {
            let mut record = record.clone();
            if is_live(record.status) {
                // It was running under the last host and is gone now: say so, not that it still runs.
                record.status = ServiceStatus::Exited;
                record.failure = Some("its process was gone when a new host took over".into());
                record.pid = None;
            }
            retained.insert((record.target.clone(), record.service.clone()), record);
        }
    }
    for (record, pid, started, plan) in alive {
        let log_path = record.log_path.as_ref().map_or_else(
            || logs::log_path(&host.paths().scope_dir, &previous.run_id, &record.target, &record.service),
            std::path::PathBuf::from,
        );
        let spec = ServiceSpec {
            kind: record.kind,
            target: record.target.clone(),
            stop_grace: Duration::from_secs(plan.stop_grace_secs),
            plan: std::sync::Arc::unwrap_or_clone(plan),
            base_env: host.parts.env.inherited().clone(),
            log_path,
        };
        host.launch(spec, Some((pid, started))).await;
    }
}

/// Turns each service's lifecycle event into an `events.jsonl` line of the current run.
async fn forward_service_events(
    host: Arc<Host>,
    mut events: mpsc::UnboundedReceiver<ServiceEvent>,
    done: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            Some(e) = events.recv() => host.event(Some(e.target), Some(e.service), &e.event, e.detail),
            () = done.cancelled() => break,
        }
    }
    while let Ok(e) = events.try_recv() {
        host.event(Some(e.target), Some(e.service), &e.event, e.detail);
    }
}

/// Appends queued events to `events.jsonl` in batches, on the blocking pool; once `done`, writes what is queued
/// and ends.
async fn write_events(
    repo: StateRepository,
    mut events: mpsc::UnboundedReceiver<Event>,
    done: CancellationToken,
) {
    let mut log = None;
    let mut batch = Vec::new();
    loop {
        let finished = tokio::select! {
            biased;
            n = events.recv_many(&mut batch, 256) => n == 0,
            () = done.cancelled() => {
                while let Ok(line) = events.try_recv() {
                    batch.push(line);
                }
                true
            }
        };
        let lines = std::mem::take(&mut batch);
        let (repo, mut open) = (repo.clone(), log.take());
        log = tokio::task::spawn_blocking(move || {
            if open.is_none() {
                open = repo.event_log().map_err(|e| tracing::warn!(error = %e, "events not written")).ok();
            }
            if let Some(file) = open.as_mut() {
                for line in &lines {
                    if let Err(e) = file.append(line) {
                        tracing::warn!(error = %e, "event not written");
                    }
                }
            }
            open
        })
        .await
        .ok()
        .flatten();
        if finished {
            break;
        }
    }
}

/// Writes the artifacts whenever a service changes. Changes that arrive together are written once, and the pause
/// before the next write grows with what the last one cost (twice its time, 50 ms to 2 s), so a host with
/// thousands of services spends most of its time supervising, not rewriting its state. While a request changes
/// what runs (a `start` launching a thousand services), the state is written once per wave it launches
/// ([`Host::save_wave`]) and once when it ends, not once per service: how often a start writes does not grow with
/// how many services it starts. A change no save has covered yet is written once the request is over.
async fn save_on_change(host: Arc<Host>, done: CancellationToken) {
    let mut pause = Duration::from_millis(50);
    loop {
        let mut wave = false;
        tokio::select! {
            () = host.reporter.changed.notified() => host.nudged(),
            () = host.wave.notified() => wave = true,
            () = done.cancelled() => return,
        }
        if !wave {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = done.cancelled() => return,
            }
        }
        // A request under way writes the state when it ends: until then only its waves are written, and service
        // changes are passed on to `watch` connections as they come.
        while !wave && host.orchestration.try_lock().is_err() {
            tokio::select! {
                () = host.reporter.changed.notified() => host.nudged(),
                () = host.wave.notified() => wave = true,
                _ = host.orchestration.lock() => {}
                () = done.cancelled() => return,
            }
        }
        if wave || host.nudges.load(Ordering::SeqCst) > host.saved_nudges.load(Ordering::SeqCst) {
            let began = std::time::Instant::now();
            // Failures are logged and recorded by `save`.
            let _ = host.save(false).await;
            pause = (began.elapsed() * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
        }
        // Nothing left to supervise (the last service ended on its own) and no request under way: exit.
        if let Ok(_quiet) = host.orchestration.try_lock()
            && host.has_handles().await
            && host.is_idle().await
        {
            tracing::info!("nothing runs any more; the host exits");
            host.exit();
        }
    }
}

/// Exits when the command that started this host lets go of its claim (it ended, or was killed) and nothing was
/// given the host to do: nothing runs, no request is under way and no client is connected. A command killed
/// between starting its host and sending its request leaves no host behind.
async fn exit_when_unclaimed(host: Arc<Host>, claim: crate::host::launch::Claim) {
    tokio::select! {
        () = claim.released() => {}
        () = host.parts.token.cancelled() => return,
    }
    if let Ok(_quiet) = host.orchestration.try_lock()
        && host.connections.load(Ordering::SeqCst) == 0
        && host.is_idle().await
    {
        tracing::info!(
            "the command that started this host is gone and gave it nothing to run; the host exits"
        );
        host.exit();
    }
}

/// SIGTERM, SIGINT and SIGHUP as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, HostError> {
        use tokio::signal::unix::{SignalKind, signal};
        let io = |source| HostError::Io { path: "signal handlers".into(), source };
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(io)?,
            int: signal(SignalKind::interrupt()).map_err(io)?,
            hup: signal(SignalKind::hangup()).map_err(io)?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

#[cfg(test)]
impl Host {
    /// A host that serves nothing (request handling tests): no lock, no socket.
    fn for_test(parts: HostParts, orchestrator: Arc<dyn Orchestrator>) -> Arc<Self> {
        let (reporter_tx, _) = mpsc::unbounded_channel();
        let (events, _) = mpsc::unbounded_channel();
        let reporter = Reporter { changed: Arc::new(Notify::new()), events: reporter_tx };
        let record = HostRecord { pid: 1, start_time: 1 };
        Arc::new(Self::new(parts, record, None, None, reporter, events, orchestrator))
    }
}

#[cfg(test)]
mod tests {
    use envctl_contracts::control::{StartOutcome, StopRequest};
    use envctl_contracts::startup::ServicePlan;
    use envctl_contracts::state::ProcessKind;

    use super::*;
    use crate::config::LoadOptions;

    /// Answers `start` with an outcome naming the request's command, and records what it was asked.
    #[derive(Debug, Default)]
    struct Recorder {
        asked: std::sync::Mutex<Vec<String>>,
    }

    impl Orchestrator for Recorder {
        fn start<'a>(
            &'a self,
            _host: &'a Arc<Host>,
            request: StartRequest,
            _tx: &'a mpsc::Sender<Reply>,
        ) -> ReplyFuture<'a> {
            unpoisoned(&self.asked).push(request.command.clone());
            Box::pin(async move {
                Reply::Started(StartOutcome { run_id: request.command, ..StartOutcome::default() })
            })
        }

        fn resume<'a>(
            &'a self,
            _host: &'a Arc<Host>,
            _request: ResumeRequest,
            _tx: &'a mpsc::Sender<Reply>,
        ) -> ReplyFuture<'a> {
            unpoisoned(&self.asked).push("resume".into());
            Box::pin(async { Reply::Error { message: "nothing to resume".into() } })
        }
    }

    fn parts(dir: &std::path::Path) -> HostParts {
        std::fs::create_dir_all(dir.join("repo/.git")).expect("git dir");
        let runtime = dir.join("runtime").display().to_string();
        let env = EnvVars::from_pairs([("ENVCTL_RUNTIME_DIR", runtime.as_str())]);
        let paths = Paths::discover(&dir.join("repo"), None, &env).expect("paths");
        HostParts {
            state: StateRepository::new(&paths.scope_dir),
            ledger: Ledger::new(&paths.ledger_dir),
            paths,
            env,
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    fn sleeper(host: &Host, target: &str, name: &str, kind: ProcessKind) -> ServiceSpec {
        ServiceSpec {
            kind,
            target: target.into(),
            plan: ServicePlan {
                stop_grace_secs: 1,
                ..ServicePlan::new(name, "/", vec!["sleep".into(), "1000".into()])
            },
            base_env: BTreeMap::new(),
            log_path: host.paths().scope_dir.join(format!("{target}-{name}.log")),
            stop_grace: Duration::from_secs(1),
        }
    }

    async fn ask(host: &Arc<Host>, request: Request) -> Reply {
        try_ask(host, request).await.expect("a reply")
    }

    async fn try_ask(host: &Arc<Host>, request: Request) -> Option<Reply> {
        let (tx, mut rx) = mpsc::channel(8);
        handle(host, request, &tx).await;
        drop(tx);
        rx.recv().await
    }

    use envctl_contracts::control::Request;

    fn start_request(host: &Host, command: &str) -> Request {
        let load =
            LoadOptions { start_dir: host.paths().repo_root.clone(), config_file: None, sets: Vec::new() };
        let settings = Settings::load(&load, &host.parts.env).expect("default settings");
        Request::Start(StartRequest {
            command: command.into(),
            config: Some(settings.config),
            config_digest: None,
            config_warnings: Vec::new(),
            targets: Vec::new(),
            running_targets: false,
            services: Vec::new(),
            env: BTreeMap::new(),
            no_resume: false,
            restart: Vec::new(),
            with_dependents: false,
            no_deps: false,
            deps_only: false,
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn start_and_resume_go_to_the_orchestrator_and_an_idle_host_then_exits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let recorder = Arc::new(Recorder::default());
        let host = Host::for_test(parts(dir.path()), recorder.clone());
        let Reply::Started(outcome) = ask(&host, start_request(&host, "restart")).await else {
            panic!("not started")
        };
        assert_eq!(outcome.run_id, "restart");
        assert!(host.parts.token.is_cancelled(), "a host with nothing to supervise exits after answering");
        let resume = || Request::Resume(ResumeRequest { env: BTreeMap::new(), config: None });
        assert!(
            try_ask(&host, resume()).await.is_none(),
            "an exiting host answers nothing (the client asks the next)"
        );
        let next = Host::for_test(parts(dir.path()), recorder.clone());
        assert!(matches!(ask(&next, resume()).await, Reply::Error { .. }));
        assert_eq!(*unpoisoned(&recorder.asked), vec!["restart".to_owned(), "resume".to_owned()]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_stops_the_selection_but_keeps_a_server_another_running_target_uses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = Host::for_test(parts(dir.path()), Arc::new(Recorder::default()));
        let db = sleeper(&host, "main", "postgres", ProcessKind::Requirement);
        let main_api = sleeper(&host, "main", "api", ProcessKind::Service);
        let tree_api = sleeper(&host, "feature", "api", ProcessKind::Service);
        for spec in [db, main_api, tree_api] {
            host.launch(spec, None).await;
        }
        let server: Key = ("main".into(), "postgres".into());
        host.share_servers(BTreeMap::from([
            ("main".to_owned(), BTreeSet::from([server.clone()])),
            ("feature".to_owned(), BTreeSet::from([server.clone()])),
        ]));
        let stop = |targets: &[&str]| {
            Request::Stop(StopRequest {
                targets: targets.iter().map(|t| (*t).to_owned()).collect(),
                services: Vec::new(),
            })
        };
        let Reply::Stopped { stopped, host_exiting } = ask(&host, stop(&["main"])).await else {
            panic!("not stopped")
        };
        assert_eq!(stopped, vec!["main/api".to_owned()], "the shared server stays while feature runs");
        assert!(!host_exiting);
        assert!(host.get(&server).await.is_some());
        let Reply::Stopped { stopped, host_exiting } = ask(&host, stop(&[])).await else {
            panic!("not stopped")
        };
        assert_eq!(stopped.len(), 2, "{stopped:?}");
        assert!(host_exiting && host.is_idle().await);
        assert!(host.parts.token.is_cancelled());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn status_lists_every_supervised_service() {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = Host::for_test(parts(dir.path()), Arc::new(Recorder::default()));
        host.launch(sleeper(&host, "main", "api", ProcessKind::Service), None).await;
        let Reply::Status { services, host: record, .. } = ask(&host, Request::Status).await else {
            panic!("no status")
        };
        assert_eq!(record, HostRecord { pid: 1, start_time: 1 });
        assert_eq!(services.iter().map(|r| r.service.as_str()).collect::<Vec<_>>(), vec!["api"]);
        host.stop_all().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn watch_pushes_a_view_on_each_change_and_nothing_while_nothing_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = Host::for_test(parts(dir.path()), Arc::new(Recorder::default()));
        host.launch(sleeper(&host, "main", "api", ProcessKind::Service), None).await;
        let (tx, mut rx) = mpsc::channel(8);
        let watching = {
            let host = Arc::clone(&host);
            tokio::spawn(async move { handle(&host, Request::Watch, &tx).await })
        };
        let view = |reply: Option<Reply>| match reply {
            Some(Reply::View(view)) => view,
            other => panic!("not a view: {other:?}"),
        };
        let first = view(rx.recv().await);
        assert_eq!((first.seq, first.services.len()), (1, 1));
        assert!(first.services[0].spec.is_none(), "a view carries no spec");
        // A change (what the service task's nudge and event do in a running host) is pushed.
        host.launch(sleeper(&host, "main", "web", ProcessKind::Service), None).await;
        host.event(Some("main".into()), Some("web".into()), "service.starting", serde_json::Value::Null);
        let second = view(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("pushed"));
        assert_eq!(second.seq, 2);
        assert_eq!(
            second.services.iter().map(|r| r.service.as_str()).collect::<Vec<_>>(),
            vec!["api", "web"]
        );
        // Both become ready (this test host has no saver to turn the service tasks' nudges into changes, so one
        // more event brings that view); after it, nothing more comes, however long one waits.
        for key in [("main".to_owned(), "api".to_owned()), ("main".to_owned(), "web".to_owned())] {
            let handle = host.get(&key).await.expect("supervised");
            for _ in 0..500 {
                if handle.record().status == ServiceStatus::Ready {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        host.event(None, None, "services.ready", serde_json::Value::Null);
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {}
        host.event(None, None, "nothing.visible", serde_json::Value::Null);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err(),
            "a change nobody sees is not sent again"
        );
        // The client hangs up: the watch ends, and it never made the host exit.
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), watching).await.expect("watch ended").expect("no panic");
        assert!(!host.parts.token.is_cancelled());
        host.stop_all().await;
    }
}
