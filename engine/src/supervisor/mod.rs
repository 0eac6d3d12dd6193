//! The supervisor's parts: spawning services in process groups of their own ([`spawn`]), stopping exactly what
//! envctl started ([`signal`]), readiness probes ([`probe`]), restart limits ([`restart`]), log files ([`logs`]),
//! process truth from `/proc` ([`proc_info`]) and waiting for the orphans a host is handed ([`reap`]). The service
//! task that puts them together lives in [`service`].

mod error;
pub mod health;
pub mod logs;
pub mod probe;
pub mod proc_info;
pub mod reap;
pub mod restart;
pub mod service;
pub mod signal;
pub mod spawn;
pub mod truth;

pub use error::SupervisorError;
