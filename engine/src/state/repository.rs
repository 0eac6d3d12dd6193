//! [`StateRepository`]: reads and writes one scope's artifacts.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::jobs::TestResults;
use envctl_contracts::ports::PortsManifest;
use envctl_contracts::state::{ErrorReport, Event, RunState, RuntimeMap};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::atomic::{Durability, FileLock, write_atomic_with};
use super::render::Rendered;

/// The state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{}: {source}\nhint: check the permissions of envctl's runtime directory (ENVCTL_RUNTIME_DIR)", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file exists but is not a valid artifact.
    #[error("{}: corrupt state file ({detail})\nhint: move it aside (or run `envctl stop-all`) and run the command again", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

/// Everything one run saves together.
#[derive(Debug, Clone)]
pub struct RunArtifacts {
    /// `run_state.json`.
    pub run_state: RunState,
    /// `runtime_map.json`.
    pub runtime_map: RuntimeMap,
    /// `ports_manifest.json`.
    pub ports_manifest: PortsManifest,
    /// `error_report.json`.
    pub error_report: ErrorReport,
}

/// Reads and writes the artifacts of one scope directory. Its clones share what the last saves rendered, so the
/// host's saves render only the records that changed ([`super::render`]).
#[derive(Debug, Clone)]
pub struct StateRepository {
    scope_dir: PathBuf,
    keep_runs: usize,
    rendered: Arc<Mutex<Rendered>>,
}

/// Per-run copies kept under `runs/` unless `ENVCTL_KEEP_RUNS` says otherwise.
pub const KEEP_RUNS: usize = 50;

impl StateRepository {
    /// The repository of `scope_dir` (created on first write), keeping the last [`KEEP_RUNS`] run copies.
    pub fn new(scope_dir: &Path) -> Self {
        Self { scope_dir: scope_dir.to_path_buf(), keep_runs: KEEP_RUNS, rendered: Arc::default() }
    }

    /// The same, keeping the last `keep_runs` (at least 1) run copies.
    #[must_use]
    pub fn keeping(mut self, keep_runs: usize) -> Self {
        self.keep_runs = keep_runs.max(1);
        self
    }

    /// The scope directory.
    pub fn scope_dir(&self) -> &Path {
        &self.scope_dir
    }

    /// The scope's lock; held while writing.
    pub fn lock(&self) -> Result<FileLock, StateError> {
        let path = self.scope_dir.join(".state.lock");
        FileLock::acquire(&path).map_err(|source| StateError::Io { path, source })
    }

    /// Saves the latest view, under the lock.
    pub fn save_run(&self, artifacts: &RunArtifacts) -> Result<(), StateError> {
        let _lock = self.lock()?;
        self.write_all(artifacts)
    }

    /// Saves the latest view and the run's `runs/<run-id>/` copy (at the end of a command), under the lock.
    pub fn save_run_with_history(&self, artifacts: &RunArtifacts) -> Result<(), StateError> {
        let _lock = self.lock()?;
        self.write_redacted(artifacts)?;
        self.write_all(artifacts)?;
        self.prune_runs(&artifacts.run_state.run_id);
        Ok(())
    }

    /// Saves the run's `runs/<run-id>/` copy alone (after its latest view), under the lock.
    pub fn save_run_copy(&self, artifacts: &RunArtifacts) -> Result<(), StateError> {
        let _lock = self.lock()?;
        self.write_redacted(artifacts)?;
        self.prune_runs(&artifacts.run_state.run_id);
        Ok(())
    }

    /// Deletes the oldest run copies beyond the limit (never `current`): `runs/` stays bounded however long envctl
    /// is used. Run ids sort by time.
    fn prune_runs(&self, current: &str) {
        let Ok(entries) = std::fs::read_dir(self.scope_dir.join("runs")) else { return };
        let mut runs: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        runs.sort();
        let excess = runs.len().saturating_sub(self.keep_runs);
        for old in runs.into_iter().take(excess).filter(|p| !p.ends_with(current)) {
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(path = %old.display(), error = %e, "an old run copy could not be removed");
            }
        }
    }

    /// Opens `events.jsonl` for appending (kept open by the host).
    pub fn event_log(&self) -> Result<EventLog, StateError> {
        let path = self.scope_dir.join("events.jsonl");
        let open = || -> std::io::Result<std::fs::File> { super::atomic::open_private_append(&path) };
        let file = open().map_err(|source| StateError::Io { path: path.clone(), source })?;
        Ok(EventLog { file, path })
    }

    /// The latest `run_state.json`, if any.
    pub fn run_state(&self) -> Result<Option<RunState>, StateError> {
        read_json(&self.scope_dir.join("run_state.json"))
    }

    /// The newest readable per-run copy (`runs/<run-id>/run_state.json`, by last update), for recovering from a
    /// torn latest view.
    /// A copy keeps no secrets, so a record whose spec lost one has no spec here: it can be stopped, and
    /// is started again from the configuration, never with a placeholder for a password.
    pub fn newest_run_copy(&self) -> Option<RunState> {
        let runs = std::fs::read_dir(self.scope_dir.join("runs")).ok()?;
        let mut state = runs
            .filter_map(Result::ok)
            .filter_map(|e| read_json::<RunState>(&e.path().join("run_state.json")).ok().flatten())
            .max_by(|a, b| a.updated_at.cmp(&b.updated_at))?;
        for record in &mut state.services {
            let redacted = record
                .spec
                .as_ref()
                .and_then(|spec| serde_json::to_value(spec).ok())
                .is_some_and(|spec| super::redact::was_redacted(&spec));
            if redacted {
                record.spec = None;
            }
        }
        Some(state)
    }

    /// The `runs/<run-id>/run_state.json` copy of one run, if it was kept.
    pub fn run_copy(&self, run_id: &str) -> Result<Option<RunState>, StateError> {
        if run_id.contains(['/', '\\']) || run_id.starts_with('.') {
            return Ok(None);
        }
        read_json(&self.scope_dir.join("runs").join(run_id).join("run_state.json"))
    }

    /// The ids of the runs whose copies are kept, oldest first.
    pub fn run_ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.scope_dir.join("runs")) else { return Vec::new() };
        let mut ids: Vec<String> =
            entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        ids.sort();
        ids
    }

    /// Targets that have services in the saved state, in the order they appear.
    /// Only each record's target is read: every other field is skipped unparsed, so a state of many services
    /// costs a scan, not a tree of records.
    /// The version is read in the same pass (one scan of a state that is a megabyte at 1,000 services, not two); a
    /// file this cannot read that way is parsed again as [`read_json`] parses, for its error.
    pub fn running_targets(&self) -> Result<Vec<String>, StateError> {
        #[derive(serde::Deserialize)]
        struct Targets {
            schema_version: Option<u64>,
            services: Vec<TargetOf>,
        }
        #[derive(serde::Deserialize)]
        struct TargetOf {
            target: String,
        }
        let path = self.scope_dir.join("run_state.json");
        let Some(bytes) = read_bytes(&path)? else { return Ok(Vec::new()) };
        let state = match serde_json::from_slice::<Targets>(&bytes) {
            Ok(state) => {
                checked_version(&path, state.schema_version)?;
                state
            }
            // Unreadable in one pass: read as every state file is, for the same error.
            Err(_) => parse_json::<Targets>(&path, &bytes)?,
        };
        let mut names: Vec<String> = state.services.into_iter().map(|r| r.target).collect();
        names.dedup();
        Ok(names)
    }

    /// The latest `runtime_map.json`, if any.
    pub fn runtime_map(&self) -> Result<Option<RuntimeMap>, StateError> {
        read_json(&self.scope_dir.join("runtime_map.json"))
    }

    /// The latest `ports_manifest.json`, if any.
    pub fn ports_manifest(&self) -> Result<Option<PortsManifest>, StateError> {
        read_json(&self.scope_dir.join("ports_manifest.json"))
    }

    /// The latest `error_report.json`, if any.
    pub fn error_report(&self) -> Result<Option<ErrorReport>, StateError> {
        read_json(&self.scope_dir.join("error_report.json"))
    }

    /// The last `envctl test` run's `test_results.json`, if any.
    pub fn test_results(&self) -> Result<Option<TestResults>, StateError> {
        read_json(&self.scope_dir.join("test_results.json"))
    }

    /// Saves `runtime_readiness_report.json`: the latest in the scope directory, and a copy in the run's
    /// `runs/<run-id>/` when that run has one. Returns the latest's path.
    pub fn save_readiness_report(
        &self,
        report: &envctl_contracts::doctor::ReadinessReport,
    ) -> Result<PathBuf, StateError> {
        let name = "runtime_readiness_report.json";
        let path = self.scope_dir.join(name);
        super::atomic::create_private_dir_all(&self.scope_dir)
            .map_err(|source| StateError::Io { path: self.scope_dir.clone(), source })?;
        let _lock = self.lock()?;
        if let Some(run) = report.run_id.as_deref().map(|id| self.scope_dir.join("runs").join(id))
            && run.is_dir()
        {
            write_json(&run.join(name), report)?;
        }
        write_json(&path, report)?;
        Ok(path)
    }

    /// Saves `test_results.json`.
    pub fn save_test_results(&self, results: &TestResults) -> Result<(), StateError> {
        let path = self.scope_dir.join("test_results.json");
        let bytes = serde_json::to_vec_pretty(results).map_err(corrupt(&path))?;
        super::atomic::create_private_dir_all(&self.scope_dir)
            .map_err(|source| StateError::Io { path: self.scope_dir.clone(), source })?;
        super::atomic::write_atomic(&path, &bytes).map_err(|source| StateError::Io { path, source })
    }
}

/// `events.jsonl`, open for appending: one JSON object per line, every run's events in order.
#[derive(Debug)]
pub struct EventLog {
    file: std::fs::File,
    path: PathBuf,
}

impl EventLog {
    /// Appends one event as one line (a single write, so lines from concurrent writers never interleave).
    pub fn append(&mut self, event: &Event) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(event).map_err(corrupt(&self.path))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| StateError::Io { path: self.path.clone(), source })
    }
}

impl StateRepository {
    /// Writes the four artifacts into the scope directory.
    fn write_all(&self, artifacts: &RunArtifacts) -> Result<(), StateError> {
        let dir = &self.scope_dir;
        let path = dir.join("run_state.json");
        let text = unpoisoned(&self.rendered).latest(&artifacts.run_state);
        let text = text.map_err(corrupt(&path))?;
        write_text(&path, text)?;
        let map_path = dir.join("runtime_map.json");
        let map = unpoisoned(&self.rendered).latest_map(&artifacts.runtime_map);
        write_text(&map_path, map.map_err(corrupt(&map_path))?)?;
        write_json(&dir.join("ports_manifest.json"), &artifacts.ports_manifest)?;
        write_json(&dir.join("error_report.json"), &artifacts.error_report)
    }

    /// A run's history copy `runs/<run-id>/`: the same artifacts without their secrets ([`super::redact`]).
    fn write_redacted(&self, artifacts: &RunArtifacts) -> Result<(), StateError> {
        let dir = self.scope_dir.join("runs").join(&artifacts.run_state.run_id);
        let secrets = super::redact::known_secrets(&self.scope_dir);
        let paths = ["ports_manifest.json", "error_report.json"].map(|name| dir.join(name));
        let values =
            [as_json(&paths[0], &artifacts.ports_manifest)?, as_json(&paths[1], &artifacts.error_report)?];
        let state_path = dir.join("run_state.json");
        let rendered =
            unpoisoned(&self.rendered).copy(&artifacts.run_state, &artifacts.runtime_map, values, secrets);
        let super::render::CopyTexts { state, map, others: texts } =
            rendered.map_err(corrupt(&state_path))?;
        write_text(&state_path, state)?;
        write_text(&dir.join("runtime_map.json"), map)?;
        for (path, text) in paths.iter().zip(texts) {
            write_text(path, text)?;
        }
        Ok(())
    }
}

fn unpoisoned<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The error for a document at `path` that cannot be rendered or read as JSON.
fn corrupt(path: &Path) -> impl FnOnce(serde_json::Error) -> StateError + '_ {
    move |e| StateError::Corrupt { path: path.to_path_buf(), detail: e.to_string() }
}

/// Writes a rendered document and its final newline.
fn write_text(path: &Path, mut bytes: Vec<u8>) -> Result<(), StateError> {
    bytes.push(b'\n');
    write_atomic_with(path, &bytes, Durability::None)
        .map_err(|source| StateError::Io { path: path.to_path_buf(), source })
}

/// `value` as JSON (`path` names it in an error).
fn as_json<T: Serialize>(path: &Path, value: &T) -> Result<serde_json::Value, StateError> {
    serde_json::to_value(value).map_err(corrupt(path))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(corrupt(path))?;
    write_text(path, bytes)
}

/// Only the version of a state file.
#[derive(serde::Deserialize)]
struct Version {
    schema_version: Option<u64>,
}

/// Reads one artifact: `Ok(None)` when absent, `Corrupt` (with the path) when unreadable or from a newer envctl.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let Some(bytes) = read_bytes(path)? else { return Ok(None) };
    parse_json(path, &bytes).map(Some)
}

/// One artifact's bytes: `Ok(None)` when absent.
fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io { path: path.to_path_buf(), source }),
    }
}

/// The artifact at `path` from its `bytes`: `Corrupt` (with the path) when unreadable or from a newer envctl.
fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StateError> {
    let corrupt = |detail: String| StateError::Corrupt { path: path.to_path_buf(), detail };
    // The version is read first (every other field skipped, nothing allocated), so a file of a newer envctl is
    // named as such rather than as whatever field it changed; then the document is read once, straight into `T`.
    let version: Version = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    checked_version(path, version.schema_version)?;
    serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))
}

/// Refuses a state file without a version, or of a newer envctl.
fn checked_version(path: &Path, version: Option<u64>) -> Result<(), StateError> {
    let corrupt = |detail: String| StateError::Corrupt { path: path.to_path_buf(), detail };
    match version {
        Some(v) if v > u64::from(SCHEMA_VERSION) => Err(corrupt(format!(
            "schema_version {v} was written by a newer envctl (this one reads {SCHEMA_VERSION})"
        ))),
        None => Err(corrupt("no schema_version".to_owned())),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    #[test]
    fn only_the_last_runs_are_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = StateRepository::new(dir.path()).keeping(3);
        for i in 0..6 {
            std::fs::create_dir_all(dir.path().join("runs").join(format!("run-2026010100000{i}-0")))
                .expect("mkdir");
        }
        repo.prune_runs("run-20260101000005-0");
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("runs"))
            .expect("runs")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["run-20260101000003-0", "run-20260101000004-0", "run-20260101000005-0"]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use envctl_contracts::state::ServiceStatus;

    use super::*;

    pub(crate) fn artifacts(run_id: &str, services: usize) -> RunArtifacts {
        let records = (0..services)
            .map(|i| envctl_contracts::state::ServiceRecord {
                pid: Some(1000 + u32::try_from(i).unwrap_or(0)),
                pid_start_time: Some(1),
                port: Some(8000),
                ..envctl_contracts::state::ServiceRecord::new(
                    envctl_contracts::state::ProcessKind::Service,
                    "main",
                    &format!("svc{i}"),
                    ServiceStatus::Ready,
                )
            })
            .collect();
        RunArtifacts {
            run_state: RunState {
                schema_version: SCHEMA_VERSION,
                run_id: run_id.into(),
                command: "start".into(),
                targets: vec!["main".into()],
                host: None,
                services: records,
                failed: false,
                failure: None,
                created_at: "t".into(),
                updated_at: "t".into(),
                requirement_users: std::collections::BTreeMap::new(),
            },
            runtime_map: RuntimeMap {
                schema_version: SCHEMA_VERSION,
                run_id: run_id.into(),
                targets: BTreeMap::new(),
            },
            ports_manifest: PortsManifest {
                schema_version: SCHEMA_VERSION,
                run_id: run_id.into(),
                targets: Vec::new(),
            },
            error_report: ErrorReport {
                schema_version: SCHEMA_VERSION,
                run_id: run_id.into(),
                generated_at: "t".into(),
                errors: Vec::new(),
            },
        }
    }

    #[test]
    fn saves_latest_and_per_run_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = StateRepository::new(dir.path());
        assert!(repo.run_state().expect("read").is_none());
        repo.save_run_with_history(&artifacts("run-1", 2)).expect("save");
        repo.save_run_with_history(&artifacts("run-2", 3)).expect("save");
        assert_eq!(repo.run_state().expect("read").expect("some").run_id, "run-2");
        assert!(dir.path().join("runs/run-1/run_state.json").is_file());
        assert!(dir.path().join("runs/run-2/ports_manifest.json").is_file());
    }

    #[test]
    fn corrupt_and_future_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = StateRepository::new(dir.path());
        std::fs::write(dir.path().join("run_state.json"), "{\"schema_version\": 1, \"run_id\": ")
            .expect("write");
        let err = repo.run_state().expect_err("corrupt");
        assert!(err.to_string().contains("run_state.json: corrupt state file"), "{err}");
        std::fs::write(dir.path().join("runtime_map.json"), r#"{"schema_version": 99}"#).expect("write");
        let err = repo.runtime_map().expect_err("future");
        assert!(err.to_string().contains("newer envctl"), "{err}");
    }

    /// The running targets are read in one pass, and still refuse what every state read refuses: a file of a newer
    /// envctl (even one whose services would parse), one without a version, a corrupt one; each named.
    #[test]
    fn running_targets_are_read_in_one_pass_and_refuse_what_reads_refuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = StateRepository::new(dir.path());
        assert!(repo.running_targets().expect("no state").is_empty());
        repo.save_run(&artifacts("run-1", 3)).expect("save");
        let expected: Vec<String> = {
            let mut t: Vec<String> = repo
                .run_state()
                .expect("read")
                .expect("some")
                .services
                .into_iter()
                .map(|r| r.target)
                .collect();
            t.dedup();
            t
        };
        assert_eq!(repo.running_targets().expect("targets"), expected);
        let file = dir.path().join("run_state.json");
        for (text, says) in [
            (r#"{"schema_version": 99, "services": [{"target": "main"}]}"#, "newer envctl"),
            (r#"{"services": [{"target": "main"}]}"#, "no schema_version"),
            (r#"{"schema_version": 1, "services": [{"target": "#, "corrupt state file"),
        ] {
            std::fs::write(&file, text).expect("write");
            let err = repo.running_targets().expect_err(text);
            assert!(
                err.to_string().contains(says) && err.to_string().contains("run_state.json"),
                "{text}: {err}"
            );
        }
    }

    /// A writer killed with SIGKILL at random points never leaves an unreadable latest view.
    #[test]
    #[allow(unsafe_code)]
    fn killed_writer_never_leaves_a_torn_latest_view() {
        use nix::sys::signal::{Signal, kill};
        use nix::sys::wait::waitpid;
        use nix::unistd::{ForkResult, fork};

        let dir = tempfile::tempdir().expect("tempdir");
        let repo = StateRepository::new(dir.path());
        repo.save_run(&artifacts("run-0", 1)).expect("first save");
        for round in 0..25u64 {
            // SAFETY: the child only writes files through the repository and then exits with `_exit`; it never
            // returns into the test harness.
            match unsafe { fork() }.expect("fork") {
                ForkResult::Child => {
                    let mut i = 0u64;
                    loop {
                        let _ = repo.save_run(&artifacts(&format!("run-{round}-{i}"), 200));
                        i += 1;
                    }
                }
                ForkResult::Parent { child } => {
                    std::thread::sleep(Duration::from_millis(3 + (round * 7) % 23));
                    kill(child, Signal::SIGKILL).expect("kill");
                    waitpid(child, None).expect("wait");
                }
            }
            let state = repo.run_state().expect("run_state readable after kill");
            assert!(state.is_some());
            repo.runtime_map().expect("runtime_map readable after kill");
            repo.ports_manifest().expect("ports_manifest readable after kill");
            repo.error_report().expect("error_report readable after kill");
        }
    }
}
