//! Dropping requirement data: one worktree's (its database in main's Postgres, its index in main's Redis, its own
//! servers' data directories) when the worktree is removed, and everything with `stop-all --remove-data`.

use std::path::PathBuf;

use envctl_contracts::config::{Adapter, Isolation};
use envctl_contracts::state::{ProcessKind, RunState};

use super::{PG_USER, RequirementError, data_dir, data_roots, database_name, postgres, redis, redis_index};
use crate::config::{Paths, Settings};

/// What was done with one piece of a target's data, for the user.
#[derive(Debug, Clone)]
pub enum TeardownNote {
    /// A database was dropped.
    DroppedDatabase(String),
    /// A Redis database index was emptied.
    EmptiedRedis(u16),
    /// A data directory was removed.
    RemovedDir(PathBuf),
    /// The database stays because main's server is not running.
    KeptDatabase(String),
    /// Something could not be dropped.
    Failed(RequirementError),
}

impl std::fmt::Display for TeardownNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DroppedDatabase(name) => write!(f, "dropped database {name}"),
            Self::EmptiedRedis(index) => write!(f, "emptied Redis database {index}"),
            Self::RemovedDir(dir) => write!(f, "removed {}", dir.display()),
            Self::KeptDatabase(name) => write!(
                f,
                "database {name} stays in main's Postgres, which is not running; `envctl stop-all --remove-data` deletes all data"
            ),
            Self::Failed(e) => write!(f, "could not drop data: {e}"),
        }
    }
}

/// Whether the process with this pid and start time still runs.
pub type IsAlive = fn(u32, u64) -> bool;

/// The port of main's running server for requirement `name` (pid and start time checked), from `state`.
fn running_port(state: Option<&RunState>, is_alive: IsAlive, name: &str) -> Option<u16> {
    state?.services.iter().find_map(|r| {
        let alive = r.pid.zip(r.pid_start_time).is_some_and(|(p, s)| is_alive(p, s));
        (r.kind == ProcessKind::Requirement && r.target == "main" && r.service == name && alive)
            .then_some(r.port)
            .flatten()
    })
}

/// Drops `target`'s requirement data. Shared servers must be running (`state` records them; `is_alive` checks
/// each by pid and start time) for their part to be dropped; what stays is said.
pub async fn drop_target_data(
    settings: &Settings,
    state: Option<&RunState>,
    is_alive: IsAlive,
    target: &str,
) -> Vec<TeardownNote> {
    let mut notes = Vec::new();
    for (name, req) in settings.config.requirements.iter().filter(|(_, r)| r.enabled) {
        match (req.adapter, req.isolation) {
            (Adapter::Postgres, Isolation::Database) => {
                let database = database_name(&settings.config.project.name, target);
                let password = super::secrets::password(&settings.paths.scope_dir, "main", name).ok();
                let login = super::pgwire::Login::new(PG_USER, password.as_deref());
                notes.push(match running_port(state, is_alive, name) {
                    Some(port) => match postgres::drop_database(port, login, &database).await {
                        Ok(()) => TeardownNote::DroppedDatabase(database),
                        Err(e) => TeardownNote::Failed(e),
                    },
                    None => TeardownNote::KeptDatabase(database),
                });
            }
            (Adapter::Redis, Isolation::DbIndex) => {
                let index = redis_index(req.isolation, crate::targets::slot_for(target));
                if let Some(port) = running_port(state, is_alive, name) {
                    let password = super::secrets::password(&settings.paths.scope_dir, "main", name).ok();
                    notes.push(match redis::flush_database(port, password.as_deref(), index).await {
                        Ok(()) => TeardownNote::EmptiedRedis(index),
                        Err(e) => TeardownNote::Failed(e),
                    });
                }
            }
            _ => {
                if let Ok(dir) = data_dir(&settings.paths, req, name, target)
                    && std::fs::remove_dir_all(&dir).is_ok()
                {
                    notes.push(TeardownNote::RemovedDir(dir));
                }
            }
        }
    }
    notes
}

/// Deletes every requirement data directory of the repository; returns the ones removed.
pub fn remove_all_data(paths: &Paths) -> Result<Vec<PathBuf>, RequirementError> {
    let mut removed = Vec::new();
    for dir in data_roots(paths) {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RequirementError::io("remove", &dir, &e)),
        }
    }
    Ok(removed)
}
