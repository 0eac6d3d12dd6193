//! [`StoreFactory`]: which job store a repository uses (`[jobs].backend`), opened on demand. The composition root
//! builds one from the settings and hands it to every operation that needs a store. Opening the managed Redis
//! store starts its server first when it is not running ([`super::server::ensure`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::server::{self, ServerSpec};
use super::{EmbeddedStore, JobStore, RedisStore, StoreError};
use crate::config::Settings;
use crate::plan::{self, JobStoreLocation};

/// Where a repository's jobs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreFactory {
    /// The embedded SQLite store at this path.
    Embedded(PathBuf),
    /// A Redis server at this URL, keys under this prefix.
    Redis {
        /// The server.
        url: String,
        /// Key prefix.
        prefix: String,
    },
    /// The job runtime's own Redis server, started when it is not running.
    Managed {
        /// How to start it.
        spec: Box<ServerSpec>,
        /// Key prefix.
        prefix: String,
    },
}

impl StoreFactory {
    /// The store `settings` name, its `redis_url` references filled in.
    pub fn from_settings(settings: &Settings, path_var: Option<&str>) -> Result<Self, StoreError> {
        let jobs = &settings.config.jobs;
        let prefix = jobs.redis_prefix.clone();
        let location = plan::job_store(settings)
            .map_err(|e| StoreError::Backend { store: "redis".into(), detail: e.to_string() })?;
        Ok(match location {
            JobStoreLocation::Embedded => Self::Embedded(settings.paths.scope_dir.join("jobs.sqlite3")),
            JobStoreLocation::External(url) => Self::Redis { url, prefix },
            JobStoreLocation::Managed => Self::Managed {
                spec: Box::new(ServerSpec {
                    paths: settings.paths.clone(),
                    bind: jobs.bind.clone(),
                    port: jobs.port,
                    path_var: path_var.map(str::to_owned),
                }),
                prefix,
            },
        })
    }

    /// The same prefix on another Redis server (`envctl worker --backend URL`).
    #[must_use]
    pub fn redis_at(&self, url: &str) -> Self {
        let prefix = match self {
            Self::Redis { prefix, .. } | Self::Managed { prefix, .. } => prefix.clone(),
            Self::Embedded(_) => "envctl".into(),
        };
        Self::Redis { url: url.to_owned(), prefix }
    }

    /// Opens the store (creating the embedded file, connecting to Redis, or starting the managed server first).
    pub fn open(&self) -> Result<Arc<dyn JobStore>, StoreError> {
        match self {
            Self::Embedded(path) => Ok(Arc::new(EmbeddedStore::open(path)?)),
            Self::Redis { url, prefix } => Ok(Arc::new(RedisStore::open(url, prefix)?)),
            Self::Managed { spec, prefix } => {
                let running = server::ensure(spec)?;
                Ok(Arc::new(RedisStore::open(&running.local_url(), prefix)?))
            }
        }
    }
}
