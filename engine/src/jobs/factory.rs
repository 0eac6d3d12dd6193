//! [`StoreFactory`]: which job store a repository uses (`[jobs].backend`), opened on demand. The composition root
//! builds one from the settings and hands it to every operation that needs a store.

use std::path::PathBuf;
use std::sync::Arc;

use envctl_contracts::config::JobsBackend;

use super::{EmbeddedStore, JobStore, RedisStore, StoreError};
use crate::config::Settings;

/// Where a repository's jobs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreFactory {
    /// The embedded SQLite store at this path.
    Embedded(PathBuf),
    /// A Redis server at this URL, keys under this prefix (`None`: the backend is Redis but no URL is set).
    Redis {
        /// The server.
        url: Option<String>,
        /// Key prefix.
        prefix: String,
    },
}

impl StoreFactory {
    /// The store `settings` name.
    pub fn from_settings(settings: &Settings) -> Self {
        let jobs = &settings.config.jobs;
        match jobs.backend {
            JobsBackend::Embedded => Self::Embedded(settings.paths.scope_dir.join("jobs.sqlite3")),
            JobsBackend::Redis => {
                Self::Redis { url: jobs.redis_url.clone(), prefix: jobs.redis_prefix.clone() }
            }
        }
    }

    /// The same prefix on another Redis server (`envctl worker --backend URL`).
    #[must_use]
    pub fn redis_at(&self, url: &str) -> Self {
        let prefix = match self {
            Self::Redis { prefix, .. } => prefix.clone(),
            Self::Embedded(_) => "envctl".into(),
        };
        Self::Redis { url: Some(url.to_owned()), prefix }
    }

    /// Opens the store (creating the embedded file, or connecting to Redis).
    pub fn open(&self) -> Result<Arc<dyn JobStore>, StoreError> {
        match self {
            Self::Embedded(path) => Ok(Arc::new(EmbeddedStore::open(path)?)),
            Self::Redis { url: Some(url), prefix } => Ok(Arc::new(RedisStore::open(url, prefix)?)),
            Self::Redis { url: None, .. } => Err(StoreError::Backend {
                store: "redis".into(),
                detail: "jobs.backend is redis but no URL is set: set [jobs].redis_url, ENVCTL_REDIS_URL or REDIS_URL"
                    .into(),
            }),
        }
    }
}
