//! [`Ledger`]: the machine-wide lease files and the planner that reads them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::ports::{LeaseOwner, PortLease, PortPlan, PortSource};

use super::PortRequest;
use crate::state::{FileLock, write_atomic};
use crate::supervisor::proc_info;

/// A corrupt lease file younger than this is assumed to be mid-write by another process and left alone.
const CORRUPT_GRACE: Duration = Duration::from_secs(5);

/// Ports could not be planned or leased.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Nothing was free between the requested port and the top of the range.
    #[error("no free port at or above {requested} for {} / {}\nhint: lower the base port in .envctl, or stop what holds the ports (`envctl list-targets` shows the plan)", owner.target, owner.service)]
    Exhausted {
        /// Who asked.
        owner: LeaseOwner,
        /// Where the search started.
        requested: u16,
    },
    /// The ledger directory could not be used.
    #[error("{}: {source}\nhint: check the permissions of envctl's runtime directory (ENVCTL_RUNTIME_DIR)", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The lease ledger in one directory.
#[derive(Debug, Clone)]
pub struct Ledger {
    dir: PathBuf,
}

/// A lease as read, with whether its holder still runs.
#[derive(Debug, Clone)]
struct Held {
    lease: PortLease,
    live: bool,
}

impl Ledger {
    /// The ledger in `dir` (created on first lease).
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    fn path(&self, port: u16) -> PathBuf {
        self.dir.join(format!("{port}.json"))
    }

    /// Every readable lease. Unreadable files older than a few seconds are skipped (and replaced on reserve).
    pub fn leases(&self) -> Vec<PortLease> {
        self.held().into_iter().map(|h| h.lease).collect()
    }

    fn held(&self) -> Vec<Held> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            if let Some(lease) =
                std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<PortLease>(&b).ok())
            {
                let live = proc_info::is_same_process(lease.pid, lease.pid_start_time);
                out.push(Held { lease, live });
            } else {
                let young = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age < CORRUPT_GRACE);
                if young
                    && let Some(port) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok())
                {
                    out.push(Held { lease: placeholder(port), live: true });
                }
            }
        }
        out
    }

    /// What each request would get now, without taking anything. `is_free` decides whether a port is open.
    pub fn plan(
        &self,
        requests: &[PortRequest],
        is_free: &dyn Fn(u16) -> bool,
    ) -> Result<Vec<PortPlan>, PortError> {
        let held = self.held();
        let mut taken = BTreeSet::new();
        requests.iter().map(|request| plan_one(request, &held, &mut taken, is_free)).collect()
    }

    /// Plans and leases ports for `requests` on behalf of the process (`pid`, `start_time`), under the ledger lock.
    /// An owner's older lease on a different port is released.
    pub fn reserve(
        &self,
        requests: &[PortRequest],
        pid: u32,
        start_time: u64,
        is_free: &dyn Fn(u16) -> bool,
    ) -> Result<Vec<PortPlan>, PortError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PortError::Io { path, source }
        };
        let _lock = FileLock::acquire(&self.dir.join(".lock")).map_err(io(&self.dir.join(".lock")))?;
        let held = self.held();
        let mut taken = BTreeSet::new();
        let mut plans = Vec::new();
        for request in requests {
            let plan = plan_one(request, &held, &mut taken, is_free)?;
            for old in held.iter().filter(|h| h.lease.owner == request.owner && h.lease.port != plan.assigned)
            {
                let _ = std::fs::remove_file(self.path(old.lease.port));
            }
            let lease = PortLease {
                schema_version: SCHEMA_VERSION,
                port: plan.assigned,
                owner: request.owner.clone(),
                pid,
                pid_start_time: start_time,
                created_at: crate::state::now_rfc3339(),
            };
            let path = self.path(plan.assigned);
            let bytes = serde_json::to_vec_pretty(&lease).unwrap_or_default();
            write_atomic(&path, &bytes).map_err(io(&path))?;
            plans.push(plan);
        }
        Ok(plans)
    }

    /// Takes over the leases of ports already in use by `owner`'s process (a new host adopting survivors): the
    /// lease of each port is rewritten for (`pid`, `start_time`) unless a different live owner holds it.
    pub fn claim(&self, claims: &[(u16, LeaseOwner)], pid: u32, start_time: u64) -> Result<(), PortError> {
        let lock_path = self.dir.join(".lock");
        let _lock =
            FileLock::acquire(&lock_path).map_err(|source| PortError::Io { path: lock_path, source })?;
        let held = self.held();
        for (port, owner) in claims {
            if held.iter().any(|h| h.lease.port == *port && h.live && &h.lease.owner != owner) {
                continue;
            }
            let lease = PortLease {
                schema_version: SCHEMA_VERSION,
                port: *port,
                owner: owner.clone(),
                pid,
                pid_start_time: start_time,
                created_at: crate::state::now_rfc3339(),
            };
            let path = self.path(*port);
            write_atomic(&path, &serde_json::to_vec_pretty(&lease).unwrap_or_default())
                .map_err(|source| PortError::Io { path, source })?;
        }
        Ok(())
    }

    /// Every readable lease whose holder (pid and start time) is gone.
    pub fn stale(&self) -> Vec<PortLease> {
        self.held().into_iter().filter(|h| !h.live).map(|h| h.lease).collect()
    }

    /// Removes the stale leases (holder gone, checked again under the lock) whose owner matches `filter`; returns
    /// their ports.
    pub fn release_stale(&self, filter: impl Fn(&LeaseOwner) -> bool) -> Result<Vec<u16>, PortError> {
        let lock_path = self.dir.join(".lock");
        let _lock =
            FileLock::acquire(&lock_path).map_err(|source| PortError::Io { path: lock_path, source })?;
        let mut released = Vec::new();
        for held in self.held().into_iter().filter(|h| !h.live && filter(&h.lease.owner)) {
            let path = self.path(held.lease.port);
            match std::fs::remove_file(&path) {
                Ok(()) => released.push(held.lease.port),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(PortError::Io { path, source }),
            }
        }
        Ok(released)
    }

    /// Removes the leases whose owner matches `filter`; returns how many.
    pub fn release(&self, filter: impl Fn(&LeaseOwner) -> bool) -> Result<usize, PortError> {
        let lock_path = self.dir.join(".lock");
        let _lock =
            FileLock::acquire(&lock_path).map_err(|source| PortError::Io { path: lock_path, source })?;
        let mut released = 0;
        for held in self.held().into_iter().filter(|h| filter(&h.lease.owner)) {
            let path = self.path(held.lease.port);
            match std::fs::remove_file(&path) {
                Ok(()) => released += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(PortError::Io { path, source }),
            }
        }
        Ok(released)
    }
}

/// A stand-in for a lease file being written right now: nobody may take its port.
fn placeholder(port: u16) -> PortLease {
    PortLease {
        schema_version: SCHEMA_VERSION,
        port,
        owner: LeaseOwner { repo: String::new(), target: String::new(), service: String::new() },
        pid: 0,
        pid_start_time: 0,
        created_at: String::new(),
    }
}

fn plan_one(
    request: &PortRequest,
    held: &[Held],
    taken: &mut BTreeSet<u16>,
    is_free: &dyn Fn(u16) -> bool,
) -> Result<PortPlan, PortError> {
    let requested = request.requested();
    let mine = held.iter().find(|h| h.lease.owner == request.owner && !taken.contains(&h.lease.port));
    if let Some(own) = mine {
        // A live holder means our own host may be serving on it; a stale one only if the port is still open.
        if own.live || is_free(own.lease.port) {
            taken.insert(own.lease.port);
            let port = own.lease.port;
            return Ok(PortPlan {
                requested,
                assigned: port,
                final_port: port,
                source: PortSource::Lease,
                retries: 0,
            });
        }
    }
    let blocked =
        |port: u16| held.iter().any(|h| h.lease.port == port && h.live && h.lease.owner != request.owner);
    let mut port = requested;
    let mut retries = 0;
    while taken.contains(&port) || blocked(port) || !is_free(port) {
        port = port
            .checked_add(1)
            .ok_or_else(|| PortError::Exhausted { owner: request.owner.clone(), requested })?;
        retries += 1;
    }
    taken.insert(port);
    let source = match (retries, request.slot) {
        (0, 0) => PortSource::Config,
        (0, _) => PortSource::Slot,
        _ => PortSource::Retry,
    };
    Ok(PortPlan { requested, assigned: port, final_port: port, source, retries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(target: &str, service: &str) -> LeaseOwner {
        LeaseOwner { repo: "/r".into(), target: target.into(), service: service.into() }
    }

    fn request(target: &str, service: &str, base: u16, slot: u16) -> PortRequest {
        PortRequest { owner: owner(target, service), base, slot }
    }

    #[test]
    fn main_keeps_base_ports_and_worktrees_add_their_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(dir.path());
        let plans = ledger
            .plan(&[request("main", "web", 40000, 0), request("feat", "web", 40000, 7)], &|_| true)
            .expect("plan");
        assert_eq!((plans[0].assigned, plans[0].source), (40000, PortSource::Config));
        assert_eq!((plans[1].assigned, plans[1].source), (40007, PortSource::Slot));
    }

    #[test]
    fn busy_ports_walk_upward_and_count_retries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(dir.path());
        let plans = ledger.plan(&[request("main", "web", 40000, 0)], &|p| p > 40002).expect("plan");
        assert_eq!((plans[0].assigned, plans[0].source, plans[0].retries), (40003, PortSource::Retry, 3));
    }

    #[test]
    fn live_leases_block_others_and_are_kept_by_their_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(dir.path());
        let (pid, started) = proc_info::current();
        ledger.reserve(&[request("main", "web", 40000, 0)], pid, started, &|_| true).expect("reserve");
        // Another repository asking for the same port walks past the live lease.
        let other = PortRequest {
            owner: LeaseOwner { repo: "/other".into(), ..owner("main", "web") },
            base: 40000,
            slot: 0,
        };
        let plans = ledger.plan(&[other], &|_| true).expect("plan");
        assert_eq!(plans[0].assigned, 40001);
        // The owner keeps its port even if the planner would otherwise move it (its own process listens there).
        let again = ledger.plan(&[request("main", "web", 40000, 0)], &|p| p != 40000).expect("plan");
        assert_eq!((again[0].assigned, again[0].source), (40000, PortSource::Lease));
    }

    #[test]
    fn stale_leases_are_reclaimed_only_when_their_holder_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(dir.path());
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead_pid = child.id();
        child.wait().expect("wait");
        ledger.reserve(&[request("main", "web", 40000, 0)], dead_pid, 1, &|_| true).expect("reserve");
        let other = PortRequest {
            owner: LeaseOwner { repo: "/other".into(), ..owner("main", "web") },
            base: 40000,
            slot: 0,
        };
        let (pid, started) = proc_info::current();
        let plans = ledger.reserve(std::slice::from_ref(&other), pid, started, &|_| true).expect("reserve");
        assert_eq!(plans[0].assigned, 40000, "the dead holder's port is taken over");
        assert_eq!(
            ledger.leases().iter().find(|l| l.port == 40000).map(|l| l.owner.clone()),
            Some(other.owner)
        );
    }

    #[test]
    fn release_removes_only_matching_owners() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(dir.path());
        let (pid, started) = proc_info::current();
        ledger
            .reserve(
                &[request("main", "web", 40000, 0), request("feat", "web", 40000, 5)],
                pid,
                started,
                &|_| true,
            )
            .expect("reserve");
        assert_eq!(ledger.release(|o| o.target == "feat").expect("release"), 1);
        let left: Vec<u16> = ledger.leases().iter().map(|l| l.port).collect();
        assert_eq!(left, vec![40000]);
    }
}
