//! The job runtime: jobs in a store (embedded SQLite on one machine), claimed under leases by workers that run
//! their handlers, with priorities, delays, retries with backoff, progress, logs and cancellation.

pub mod cancel;
pub mod clock;
#[cfg(test)]
mod conformance;
pub mod embedded;
mod factory;
pub mod handlers;
pub mod redis_store;
pub mod server;
pub mod store;
pub mod suites;
pub mod worker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use embedded::EmbeddedStore;
pub use factory::StoreFactory;
pub use redis_store::RedisStore;
pub use store::{Finish, JobStore, ListFilter, NewJob, StoreError};
