//! The host's hub phase: the runtime API, started once before the first service (the host starts it as soon as
//! it serves its socket, while the CLI that spawned it sends its request; a start waits for it before its first
//! service), so every service the host spawns gets `ENVCTL_RUNTIME_URL` and a token of its own, and the in-process
//! worker's jobs reach the same API. A failure to start it is logged and the host goes on without it.

use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::jobs::StoreFactory;
use crate::runtime_api::{ApiOptions, RuntimeApi};

/// The host's runtime API, once started.
#[derive(Debug, Clone)]
pub struct Hub {
    api: Arc<OnceCell<Option<RuntimeApi>>>,
    /// The store the API serves jobs from, known once a start brought the settings.
    stores: Arc<std::sync::OnceLock<StoreFactory>>,
    options: ApiOptions,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Hub {
    /// A hub that serves for the scope of `options` until `token` is cancelled.
    pub fn new(options: ApiOptions, token: CancellationToken, tracker: TaskTracker) -> Self {
        Self {
            api: Arc::new(OnceCell::new()),
            stores: Arc::new(std::sync::OnceLock::new()),
            options,
            token,
            tracker,
        }
    }

    /// The store the API serves jobs from (the first one given stays).
    pub fn serve_store(&self, stores: StoreFactory) {
        let _ = self.stores.set(stores);
    }

    /// The API, started on the first call.
    pub async fn start(&self) -> Option<RuntimeApi> {
        self.api
            .get_or_init(|| async {
                match RuntimeApi::start(&self.options, self.token.clone(), &self.tracker) {
                    Ok(api) => {
                        let stores = Arc::clone(&self.stores);
                        api.attach_opener(Arc::new(move || stores.get().map(StoreFactory::open)));
                        Some(api)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no runtime API: services and jobs run without it");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    /// The API if it has started.
    pub fn started(&self) -> Option<&RuntimeApi> {
        self.api.get().and_then(Option::as_ref)
    }
}
