//! The runtime API: HTTP on 127.0.0.1 (an ephemeral port) that the jobs a worker runs, and the services a host
//! runs, call with a token of their own — no curl, jq or credentials needed in their scripts.
//!
//! How it works: every worker (the host's in-process one, `envctl worker`) starts one [`RuntimeApi`] and hands it
//! to its handlers as their [`Executions`]. Before a job's process starts, [`Executions::begin`] registers the
//! attempt and gives the process `ENVCTL_RUNTIME_URL`, `ENVCTL_EXECUTION_ID` and `ENVCTL_EXECUTION_TOKEN`; when
//! the attempt ends, [`Executions::end`] forgets it, so its token is refused from then on. The host also starts
//! one in its hub phase, before services, and gives each service a token for `POST /jobs`, `GET /jobs/{id}` and
//! `POST /jobs/{id}/cancel` of its own target ([`RuntimeApi::service_env`]); the job store is attached once it
//! is open ([`RuntimeApi::attach_store`]). Routes are in `routes.rs`, tokens in `tokens.rs`, the Prometheus
//! metrics in `metrics.rs`, the client `envctl job` uses in `client.rs`, the helper libraries in `helpers.rs`.
//! Tokens never reach a log, the state, a job record or a bundle: they live in the processes' environments.

pub mod client;
pub mod helpers;
mod metrics;
mod routes;
pub mod tokens;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use envctl_contracts::jobs::Job;
use tokio_util::sync::CancellationToken;

use crate::jobs::handlers::Executions;
use crate::jobs::{Finish, JobStore};

use metrics::Metrics;
pub use metrics::ServiceCounts;
use tokens::Signer;

/// The variables a job's process (or a service) gets.
pub const URL_VAR: &str = "ENVCTL_RUNTIME_URL";
/// The attempt's id.
pub const EXECUTION_ID_VAR: &str = "ENVCTL_EXECUTION_ID";
/// The attempt's token.
pub const EXECUTION_TOKEN_VAR: &str = "ENVCTL_EXECUTION_TOKEN";
/// A service's token.
pub const SERVICE_TOKEN_VAR: &str = "ENVCTL_SERVICE_TOKEN";
/// Where the helper libraries (Python, Node, bash) are.
pub const HELPERS_DIR_VAR: &str = "ENVCTL_HELPERS_DIR";
/// The envctl binary the bash helper calls.
pub const BIN_VAR: &str = "ENVCTL_BIN";

/// Variables that carry a runtime API token: never recorded, logged or bundled.
pub const TOKEN_VARS: [&str; 2] = [EXECUTION_TOKEN_VAR, SERVICE_TOKEN_VAR];

/// The API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Its key or helpers could not be written, or it could not listen.
    #[error(
        "runtime API: {what}: {source}\nhint: check that {dir} is writable and 127.0.0.1 accepts listeners"
    )]
    Io {
        /// What failed.
        what: String,
        /// The scope directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What [`RuntimeApi::start`] needs.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The repository's scope directory (its signing key, the helpers).
    pub scope_dir: std::path::PathBuf,
    /// The repository, as the context reports it.
    pub repository: String,
    /// The worker's id, as the context reports it.
    pub worker: String,
}

/// An attempt that is running, as its job was claimed.
#[derive(Debug, Clone)]
struct Live {
    job: Job,
    started: Instant,
}

/// Opens the job store (on the blocking pool): `None` while it is not known which store to open.
pub type Opener = Arc<dyn Fn() -> Option<Result<Arc<dyn JobStore>, crate::jobs::StoreError>> + Send + Sync>;

/// What the routes share.
struct Shared {
    signer: Signer,
    store: OnceLock<Arc<dyn JobStore>>,
    /// Opens the store on first need when none was attached (the host's hub, before its worker opened one).
    opener: OnceLock<Opener>,
    executions: Mutex<HashMap<String, Live>>,
    services: Mutex<HashSet<(String, String)>>,
    repository: String,
    worker: String,
    metrics: Metrics,
    /// Leave to use the blocking pool for a store call: see [`STORE_CALLS`].
    store_calls: Arc<tokio::sync::Semaphore>,
}

/// The most blocking threads the API's requests hold at once. A store call that blocks (a Redis server that stopped
/// answering) keeps its thread however its client behaves, and clients that give up and ask again would otherwise
/// take the whole pool, which stopping a service, spawning one and saving the state need too.
pub const STORE_CALLS: usize = 8;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("worker", &self.worker).finish_non_exhaustive()
    }
}

/// A running runtime API; it stops when the token it was started with is cancelled.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    helpers_dir: std::path::PathBuf,
    bin: Option<String>,
}

impl RuntimeApi {
    /// Listens on 127.0.0.1 (an ephemeral port) and serves on `tracker` until `stop` is cancelled. Called on the
    /// runtime; what it does before it serves is quick enough for an async thread (it reads or writes a few small
    /// files and binds on loopback), so a worker can start it when its first job needs it ([`OnFirstJob`]).
    pub fn start(
        options: &ApiOptions,
        stop: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Result<Self, ApiError> {
        let io = |what: &str, source: std::io::Error| ApiError::Io {
            what: what.to_owned(),
            dir: options.scope_dir.display().to_string(),
            source,
        };
        let scope = options
            .scope_dir
            .file_name()
            .map_or_else(|| "envctl".to_owned(), |n| n.to_string_lossy().into_owned());
        let signer = Signer::for_scope(&options.scope_dir, &scope).map_err(|e| io("signing key", e))?;
        let helpers_dir = helpers::install(&options.scope_dir).map_err(|e| io("helper libraries", e))?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| io("listen", e))?;
        let addr = listener.local_addr().map_err(|e| io("listen", e))?;
        let shared = Arc::new(Shared {
            signer,
            store: OnceLock::new(),
            opener: OnceLock::new(),
            executions: Mutex::new(HashMap::new()),
            services: Mutex::new(HashSet::new()),
            repository: options.repository.clone(),
            worker: options.worker.clone(),
            metrics: Metrics::new(),
            store_calls: Arc::new(tokio::sync::Semaphore::new(STORE_CALLS)),
        });
        let app = routes::router(Arc::clone(&shared));
        tracker.spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the runtime API stopped");
            }
        });
        tracing::info!(%addr, "runtime API listening");
        #[allow(clippy::disallowed_methods)]
        let bin = std::env::current_exe().ok().map(|p| p.display().to_string());
        Ok(Self { shared, addr, helpers_dir, bin })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves the job endpoints from `store` from now on (they answer 503 until then).
    pub fn attach_store(&self, store: Arc<dyn JobStore>) {
        let _ = self.shared.store.set(store);
    }

    /// Opens the job store with `opener` the first time a request needs it, unless one was attached before.
    pub fn attach_opener(&self, opener: Opener) {
        let _ = self.shared.opener.set(opener);
    }

    /// The variables every process the API serves gets, besides its token.
    fn common_env(&self) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::from([
            (URL_VAR.to_owned(), self.url()),
            (HELPERS_DIR_VAR.to_owned(), self.helpers_dir.display().to_string()),
        ]);
        if let Some(bin) = &self.bin {
            vars.insert(BIN_VAR.to_owned(), bin.clone());
        }
        vars
    }

    /// The variables service `service` of `target` gets (its token is valid until [`service_stopped`]).
    ///
    /// [`service_stopped`]: Self::service_stopped
    pub fn service_env(&self, target: &str, service: &str) -> BTreeMap<String, String> {
        self.shared
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((target.to_owned(), service.to_owned()));
        let mut vars = self.common_env();
        vars.insert(SERVICE_TOKEN_VAR.to_owned(), self.shared.signer.service(target, service));
        vars
    }

    /// Revokes the token of `service` of `target`.
    pub fn service_stopped(&self, target: &str, service: &str) {
        self.shared
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(target.to_owned(), service.to_owned()));
    }

    /// Updates the service figures `/metrics` reports.
    pub fn set_services(&self, counts: ServiceCounts) {
        self.shared.metrics.set_services(counts);
    }
}

/// An attempt's id: `<job id>.<attempt>`.
pub fn execution_id(job: &Job) -> String {
    format!("{}.{}", job.id, job.attempts)
}

/// A worker's runtime API, started when the first job that runs a process begins. Built-in jobs never reach the
/// API, so a worker that has run only those, or nothing yet, serves no HTTP and has none of its code in memory.
pub struct OnFirstJob {
    options: ApiOptions,
    stop: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    store: Arc<dyn JobStore>,
    /// Says that the API cannot start (the jobs then run without it).
    refused: Box<dyn Fn(&ApiError) + Send + Sync>,
    api: OnceLock<Option<RuntimeApi>>,
}

impl std::fmt::Debug for OnFirstJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnFirstJob").field("api", &self.api).finish_non_exhaustive()
    }
}

impl OnFirstJob {
    /// The API `options` describe, serving `store` on `tracker` until `stop`, once a job needs it.
    pub fn new(
        options: ApiOptions,
        stop: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
        store: Arc<dyn JobStore>,
        refused: impl Fn(&ApiError) + Send + Sync + 'static,
    ) -> Self {
        Self { options, stop, tracker, store, refused: Box::new(refused), api: OnceLock::new() }
    }

    fn api(&self) -> Option<&RuntimeApi> {
        self.api
            .get_or_init(|| match RuntimeApi::start(&self.options, self.stop.clone(), &self.tracker) {
                Ok(api) => {
                    api.attach_store(Arc::clone(&self.store));
                    Some(api)
                }
                Err(e) => {
                    (self.refused)(&e);
                    None
                }
            })
            .as_ref()
    }
}

impl Executions for OnFirstJob {
    fn begin(&self, job: &Job, timeout: Option<Duration>) -> BTreeMap<String, String> {
        self.api().map(|api| api.begin(job, timeout)).unwrap_or_default()
    }

    fn end(&self, job: &Job, finish: &Finish) {
        if let Some(Some(api)) = self.api.get() {
            api.end(job, finish);
        }
    }
}

impl Executions for RuntimeApi {
    fn begin(&self, job: &Job, timeout: Option<Duration>) -> BTreeMap<String, String> {
        let id = execution_id(job);
        let lifetime = timeout.unwrap_or(tokens::MAX_EXECUTION_LIFETIME);
        let token = self.shared.signer.execution(&id, &job.id, job.target.as_deref(), lifetime);
        self.shared
            .executions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Live { job: job.clone(), started: Instant::now() });
        self.shared.metrics.running(1);
        let mut vars = self.common_env();
        vars.insert(EXECUTION_ID_VAR.to_owned(), id);
        vars.insert(EXECUTION_TOKEN_VAR.to_owned(), token);
        vars
    }

    fn end(&self, job: &Job, finish: &Finish) {
        let live =
            self.shared.executions.lock().unwrap_or_else(PoisonError::into_inner).remove(&execution_id(job));
        if let Some(live) = live {
            self.shared.metrics.running(-1);
            let outcome = match finish {
                Finish::Succeeded(_) => "succeeded",
                Finish::Failed { .. } => "failed",
                Finish::Cancelled => "cancelled",
            };
            self.shared.metrics.finished(&job.job_type, outcome, live.started.elapsed());
        }
    }
}
