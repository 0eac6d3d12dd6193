//! The job runtime: jobs in a store (embedded SQLite on one machine), claimed under leases by workers that run
//! their handlers, with priorities, delays, retries with backoff, progress, logs and cancellation.

pub mod clock;
#[cfg(test)]
mod conformance;
pub mod embedded;
pub mod handlers;
pub mod redis_store;
pub mod store;
pub mod worker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use embedded::EmbeddedStore;
pub use redis_store::RedisStore;
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
        JobsBackend::Redis => match &settings.config.jobs.redis_url {
            Some(url) => Ok(Arc::new(RedisStore::open(url, &settings.config.jobs.redis_prefix)?)),
            None => Err(StoreError::Backend {
                store: "redis".into(),
                detail: "jobs.backend is redis but no URL is set: set [jobs].redis_url, ENVCTL_REDIS_URL or REDIS_URL".into(),
            }),
        },
    }
}
