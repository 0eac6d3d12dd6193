//! The per-repository host process.
//!
//! How it works: `envctl start` finds the host through the scope's control socket or spawns one detached
//! (`envctl host`), then sends it a request. The host holds the scope's host lock (so there is never more than one),
//! adopts the services an earlier host left running (same pid **and** start time), serves the control socket,
//! supervises every service through one task each, and writes the state artifacts on every change. It exits when
//! nothing runs any more, on SIGTERM/SIGINT (stopping everything first), on a `shutdown` request, or when the
//! future passed to [`run`] completes (tests, `start --foreground`).

pub mod client;
mod server;
mod snapshot;

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envctl_contracts::ports::TargetPorts;
use envctl_contracts::state::{ErrorEntry, Event, HostRecord, RunState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Paths;
use crate::state::{EventLog, StateError, StateRepository, new_run_id, now_rfc3339};
use crate::supervisor::service::{Reporter, ServiceEvent, ServiceHandle, ServiceSpec, launch};
use crate::supervisor::{logs, proc_info};

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

/// The host's shared state.
#[derive(Debug)]
pub struct Host {
    /// Locations.
    pub paths: Paths,
    /// This process.
    pub record: HostRecord,
    /// Supervised services.
    pub services: tokio::sync::Mutex<BTreeMap<Key, ServiceHandle>>,
    /// The current run.
    pub run: std::sync::Mutex<RunInfo>,
    /// The state the host found when it started (for `resume`).
    pub previous: Option<RunState>,
    /// How service tasks report changes and events.
    pub reporter: Reporter,
    /// Serialises state writes.
    save_lock: tokio::sync::Mutex<()>,
    repo: StateRepository,
    events: std::sync::Mutex<Option<EventLog>>,
    /// Cancelled when the host should exit.
    pub token: CancellationToken,
    /// Every task the host started.
    pub tracker: TaskTracker,
    /// Set by a second interrupt: stops skip the grace period.
    pub force: AtomicBool,
    /// Which requirement servers each target uses (so a shared server outlives a target that stops).
    pub uses: std::sync::Mutex<BTreeMap<String, std::collections::BTreeSet<Key>>>,
    /// Whether the in-process job worker has been started.
    worker_started: AtomicBool,
}

impl Host {
    /// Starts supervising `spec` (adopting `adopt` when given).
    pub fn launch(&self, spec: ServiceSpec, adopt: Option<(u32, u64)>) -> ServiceHandle {
        launch(spec, adopt, self.reporter.clone(), &self.tracker)
    }

    /// Begins a new run for `command` over `targets`; earlier failures are not carried into it.
    pub fn begin_run(&self, command: &str, targets: &[String]) -> String {
        let mut run = self.run.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
        self.event(None, None, "run.begin", serde_json::json!({"command": command, "targets": targets}));
        run_id
    }

    /// Starts the in-process job worker once, on the store `settings` name (it runs until the host exits).
    pub fn ensure_worker(&self, settings: &crate::config::Settings, env: &BTreeMap<String, String>) {
        if self.worker_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let ctx = Arc::new(crate::jobs::handlers::HandlerContext {
            settings: Some(settings.clone()),
            base_env: env.clone(),
        });
        let options = crate::jobs::worker::WorkerOptions {
            concurrency: 4,
            types: Vec::new(),
            drain: false,
            lease: Duration::from_secs(settings.config.jobs.lease_secs),
        };
        let (shutdown, force) = (self.token.child_token(), CancellationToken::new());
        let settings = settings.clone();
        self.tracker.spawn(async move {
            // Opening the store touches the disk: off the host's thread, and a moment after the start that asked
            // for it, so starting services never waits on it.
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let store = match tokio::task::spawn_blocking(move || crate::jobs::open(&settings)).await {
                Ok(Ok(store)) => store,
                Ok(Err(e)) => return tracing::warn!(error = %e, "no in-process job worker"),
                Err(e) => return tracing::warn!(error = %e, "no in-process job worker"),
            };
            if let Err(e) = crate::jobs::worker::run(store, ctx, options, shutdown, force).await {
                tracing::warn!(error = %e, "the in-process job worker stopped");
            }
        });
    }

    /// Appends one line to `events.jsonl` for the current run.
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
        let mut log = self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.is_none() {
            *log = self.repo.event_log().ok();
        }
        if let Some(file) = log.as_mut() {
            let _ = file.append(&line);
        }
    }

    /// The current run id.
    pub fn run_id(&self) -> String {
        self.run.lock().unwrap_or_else(std::sync::PoisonError::into_inner).run_id.clone()
    }

    /// Writes every artifact from the live view; with `history`, also the run's `runs/<run-id>/` copy.
    pub async fn save(&self, history: bool) -> Result<(), StateError> {
        let _guard = self.save_lock.lock().await;
        let records: Vec<_> = self.services.lock().await.values().map(ServiceHandle::record).collect();
        let run = self.run.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut artifacts = snapshot::artifacts(&run, self.record, records);
        artifacts.run_state.requirement_users = self
            .uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(target, keys)| (target.clone(), keys.iter().map(|(o, n)| format!("{o}/{n}")).collect()))
            .collect();
        let repo = self.repo.clone();
        tokio::task::spawn_blocking(move || {
            if history { repo.save_run_with_history(&artifacts) } else { repo.save_run(&artifacts) }
        })
        .await
        .unwrap_or_else(|e| {
            Err(StateError::Io { path: "state writer".into(), source: std::io::Error::other(e) })
        })
    }

    /// Stops the given services in reverse dependency order and forgets them; returns their keys.
    pub async fn stop(&self, keys: Vec<Key>) -> Vec<Key> {
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
        handles.into_iter().map(|(k, _)| k).collect()
    }

    /// Stops everything.
    pub async fn stop_all(&self) -> Vec<Key> {
        let keys: Vec<Key> = self.services.lock().await.keys().cloned().collect();
        self.stop(keys).await
    }
}

/// Takes the scope's host lock without waiting; `None` when another host holds it.
fn take_lock(paths: &Paths) -> Result<Option<File>, HostError> {
    let path = paths.scope_dir.join("host.lock");
    let io = |source| HostError::Io { path: path.display().to_string(), source };
    std::fs::create_dir_all(&paths.scope_dir).map_err(io)?;
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Waits (up to 10 s) for the host lock while an earlier host finishes exiting. `None` when another host holds it
/// and serves the socket.
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
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs the host until it has nothing to do, a signal or `shutdown` arrives, or `stop` completes.
pub async fn run(paths: Paths, stop: impl std::future::Future<Output = ()>) -> Result<(), HostError> {
    let Some(lock) = wait_for_lock(&paths).await? else {
        return Err(HostError::AlreadyRunning(paths.scope_dir.join("host.lock").display().to_string()));
    };
    let (pid, start_time) = proc_info::current();
    let repo = StateRepository::new(&paths.scope_dir);
    let previous = repo.run_state().ok().flatten();
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let host = Arc::new(Host {
        paths: paths.clone(),
        record: HostRecord { pid, start_time },
        services: tokio::sync::Mutex::new(BTreeMap::new()),
        run: std::sync::Mutex::new(RunInfo::default()),
        previous: previous.clone(),
        reporter: Reporter { changed: Arc::new(Notify::new()), events: events_tx },
        save_lock: tokio::sync::Mutex::new(()),
        events: std::sync::Mutex::new(None),
        repo,
        token: CancellationToken::new(),
        tracker: TaskTracker::new(),
        force: AtomicBool::new(false),
        uses: std::sync::Mutex::new(BTreeMap::new()),
        worker_started: AtomicBool::new(false),
    });
    host.begin_run("host", &previous.as_ref().map(|p| p.targets.clone()).unwrap_or_default());
    adopt_survivors(&host).await;
    claim_adopted_ports(&host).await;
    if let Some(previous) = &host.previous {
        let mut uses = host.uses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (target, keys) in &previous.requirement_users {
            let keys =
                keys.iter().filter_map(|k| k.split_once('/')).map(|(o, n)| (o.to_owned(), n.to_owned()));
            uses.entry(target.clone()).or_default().extend(keys);
        }
    }
    let listener = server::bind(&paths)?;
    host.reporter.changed.notify_one();
    let saver = tokio::spawn(save_on_change(Arc::clone(&host)));
    let events_done = CancellationToken::new();
    let event_writer = tokio::spawn(write_events(Arc::clone(&host), events_rx, events_done.clone()));
    let adopted = host.services.lock().await.len();
    tracing::info!(pid, adopted, socket = %paths.control_socket().display(), "host started");
    host.event(None, None, "host.started", serde_json::json!({"pid": pid, "adopted": adopted}));
    let serve = server::serve(Arc::clone(&host), listener);
    tokio::pin!(serve, stop);
    let mut signals = Signals::new()?;
    tokio::select! {
        () = host.token.cancelled() => {}
        () = &mut stop => {}
        () = &mut serve => {}
        () = signals.next() => {}
    }
    // No new clients from here on; a second signal during the stop forces it.
    server::unbind(&paths);
    let had_services = !host.services.lock().await.is_empty();
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
    host.event(None, None, "host.stopped", serde_json::json!({"pid": pid}));
    events_done.cancel();
    let _ = event_writer.await;
    saver.abort();
    if had_services {
        let _ = host.save(true).await;
    }
    // The next host may start now.
    drop(lock);
    host.tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), host.tracker.wait()).await;
    Ok(())
}

/// Leases the ports of adopted services to this host, so planners see them held by a live owner again.
async fn claim_adopted_ports(host: &Host) {
    let repo = host.paths.repo_root.display().to_string();
    let claims: Vec<(u16, envctl_contracts::ports::LeaseOwner)> = host
        .services
        .lock()
        .await
        .values()
        .filter_map(|h| {
            let record = h.record();
            let owner = envctl_contracts::ports::LeaseOwner {
                repo: repo.clone(),
                target: record.target,
                service: record.service,
            };
            record.port.map(|port| (port, owner))
        })
        .collect();
    if !claims.is_empty() {
        let _ = crate::ports::Ledger::new(&host.paths.ledger_dir).claim(
            &claims,
            host.record.pid,
            host.record.start_time,
        );
    }
}

/// Re-owns every service of the saved state whose process still runs (pid and start time match).
async fn adopt_survivors(host: &Host) {
    let Some(previous) = &host.previous else { return };
    let mut services = host.services.lock().await;
    for record in &previous.services {
        let (Some(pid), Some(started), Some(plan)) = (record.pid, record.pid_start_time, &record.spec) else {
            continue;
        };
        if !proc_info::is_same_process(pid, started) {
            continue;
        }
        let log_path = record.log_path.as_ref().map_or_else(
            || logs::log_path(&host.paths.scope_dir, &previous.run_id, &record.target, &record.service),
            std::path::PathBuf::from,
        );
        let spec = ServiceSpec {
            kind: record.kind,
            target: record.target.clone(),
            plan: plan.clone(),
            base_env: crate::config::process_environment(),
            log_path,
            stop_grace: Duration::from_secs(plan.stop_grace_secs),
        };
        let key = (record.target.clone(), record.service.clone());
        services.insert(key, host.launch(spec, Some((pid, started))));
    }
}

/// Appends each service event to `events.jsonl` under the current run; once `done`, writes what is queued and ends.
async fn write_events(
    host: Arc<Host>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<ServiceEvent>,
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

/// Writes the artifacts whenever a service changes (changes arriving together are written once).
async fn save_on_change(host: Arc<Host>) {
    loop {
        host.reporter.changed.notified().await;
        // Changes that arrive together are written once; commands save explicitly when they finish.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = host.save(false).await;
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
