//! The job runtime: jobs in a store (embedded SQLite on one machine), claimed under leases by workers that run
//! their handlers, with priorities, delays, retries with backoff, progress, logs and cancellation.

#[cfg(test)]
mod conformance;
pub mod embedded;
pub mod handlers;
pub mod store;
pub mod worker;

pub use embedded::EmbeddedStore;
pub use store::{Finish, JobStore, ListFilter, NewJob, StoreError};

use std::sync::Arc;

use envctl_contracts::config::JobsBackend;

use crate::config::Settings;

/// Opens the store `[jobs].backend` names.
pub fn open(settings: &Settings) -> Result<Arc<dyn JobStore>, StoreError> {
    match settings.config.jobs.backend {
        JobsBackend::Embedded => {
            Ok(Arc::new(EmbeddedStore::open(&settings.paths.scope_dir.join("jobs.sqlite3"))?))
        }
        JobsBackend::Redis => Err(StoreError::Backend {
            store: settings.config.jobs.redis_url.clone().unwrap_or_else(|| "redis".into()),
            detail: "this build has only the embedded job store; the Redis store is not built yet".into(),
        }),
    }
}
