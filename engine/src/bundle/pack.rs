//! `debug-pack`: one `.tar.gz` written as a stream. JSON documents are redacted as values and written from
//! memory (they are small); logs and `events.jsonl` are read from their last bytes, line by line, redacted into a
//! spool file (so each entry's size is known before its header) and copied into the archive — memory stays flat
//! whatever a log's size. Every entry's size and sha256 go into `manifest.json`, written last.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::bundle::{BundleFile, BundleJob, BundleManifest, RedactionSummary};
use envctl_contracts::config::ConfigReport;
use envctl_contracts::doctor::ReadinessReport;
use envctl_contracts::ports::PortLease;
use envctl_contracts::state::RunState;
use serde_json::Value;
use sha2::Digest as _;

use super::BundleError;
use super::facts::{self, FactSources};
use crate::jobs::{JobStore, ListFilter};
use crate::state::StateRepository;
use crate::state::redact::{self, Redactor};

/// What `debug-pack` is asked for.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The run to describe (default: the latest).
    pub run_id: Option<String>,
    /// Where to write the bundle: a file, or a directory to put it in (default: the scope's `debug/`).
    pub output: Option<PathBuf>,
    /// At most this many bytes from the end of each log.
    pub log_bytes: u64,
    /// At most this many job records, newest first.
    pub jobs: usize,
    /// Only events and jobs this recent.
    pub since: Option<Duration>,
}

/// What a bundle is made from, handed over by the composition root.
pub struct Sources<'a> {
    /// The scope's artifacts.
    pub state: &'a StateRepository,
    /// `show-config --json`'s report, or why the configuration could not be read.
    pub config: Result<ConfigReport, String>,
    /// A fresh doctor report (without the canary).
    pub doctor: Option<ReadinessReport>,
    /// The job store, or why it did not open.
    pub store: Result<Arc<dyn JobStore>, String>,
    /// This repository's port leases.
    pub leases: Vec<PortLease>,
    /// The environment envctl runs in (services inherit it): its secret-looking values are searched for too.
    pub env: &'a BTreeMap<String, String>,
    /// `PATH`, to find `git`, `postgres` and `redis-server`.
    pub path_var: Option<&'a str>,
}

impl std::fmt::Debug for Sources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").field("scope_dir", &self.state.scope_dir()).finish_non_exhaustive()
    }
}

/// A bundle written.
#[derive(Debug, Clone)]
pub struct Packed {
    /// Where.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: BundleManifest,
}

/// The latest view's JSON artifacts, each also looked for in the run's `runs/<run-id>/` copy.
const ARTIFACTS: &[&str] = &[
    "run_state.json",
    "runtime_map.json",
    "ports_manifest.json",
    "error_report.json",
    "runtime_readiness_report.json",
    "test_results.json",
    // The managed job server's record (the latest view only: it belongs to no run).
    "job_server.json",
];

/// Writes a bundle of the scope.
pub fn pack(sources: &Sources<'_>, options: &PackOptions) -> Result<Packed, BundleError> {
    let scope = sources.state.scope_dir().to_path_buf();
    let mut notes = Vec::new();
    let latest = sources.state.run_state().unwrap_or_else(|e| {
        notes.push(format!("the latest run_state.json cannot be read: {}", first_line(&e)));
        None
    });
    let run = choose_run(sources.state, latest.as_ref(), options.run_id.as_deref())?;
    let run_id = run.as_ref().map(|r| r.run_id.clone()).or_else(|| options.run_id.clone());
    let is_latest = run.is_some() && latest.as_ref().map(|l| &l.run_id) == run_id.as_ref();

    let mut redactor = Redactor::new(known_values(sources, &scope, latest.as_ref()));
    let (path, top) = output_path(&scope, options.output.as_deref())?;
    let partial = path.with_extension("partial");
    let file = create_private(&partial)?;
    let encoder = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
    let spool = tempfile::tempfile_in(partial.parent().unwrap_or(Path::new(".")))
        .map_err(|source| BundleError::Io { path: partial.clone(), source })?;
    let mut w =
        Writer { tar: tar::Builder::new(encoder), top, files: Vec::new(), spool, partial: partial.clone() };
    let cutoff = options.since.and_then(|d| SystemTime::now().checked_sub(d));

    match &sources.config {
        Ok(report) => w.json("config.json", to_value(report), &mut redactor)?,
        Err(e) => notes.push(format!("the configuration cannot be read: {}", first_line(e))),
    }
    for name in ARTIFACTS {
        w.artifact(&format!("latest/{name}"), &scope.join(name), options.log_bytes, &mut redactor)?;
    }
    let keep_event = |event: &Value| {
        let of_run =
            run_id.as_deref().is_none_or(|id| event.get("run_id").and_then(Value::as_str) == Some(id));
        of_run && cutoff.is_none_or(|c| recent(event.get("at").and_then(Value::as_str), c))
    };
    w.jsonl(
        "latest/events.jsonl",
        &scope.join("events.jsonl"),
        options.log_bytes,
        &keep_event,
        &mut redactor,
    )?;
    if let Some(id) = &run_id {
        let dir = scope.join("runs").join(id);
        for name in ARTIFACTS {
            w.artifact(&format!("runs/{id}/{name}"), &dir.join(name), options.log_bytes, &mut redactor)?;
        }
    }
    if let Some(report) = &sources.doctor {
        w.json("doctor.json", to_value(report), &mut redactor)?;
    }
    let ports = if is_latest { sources.state.ports_manifest().ok().flatten() } else { None };
    let fact_sources = FactSources {
        run_state: run.as_ref(),
        ports: ports.as_ref(),
        leases: sources.leases.clone(),
        path_var: sources.path_var,
        scope_dir: &scope,
    };
    let facts = facts::gather(&fact_sources, &mut redactor);
    w.json("facts.json", to_value(&facts), &mut redactor)?;
    jobs(&mut w, sources, run.as_ref(), options, cutoff, &mut notes, &mut redactor)?;
    logs(&mut w, run.as_ref(), &scope, options.log_bytes, &mut notes, &mut redactor);

    let counts = redactor.counts();
    let manifest = BundleManifest {
        schema_version: SCHEMA_VERSION,
        envctl_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: crate::state::now_rfc3339(),
        run_id,
        targets: run.as_ref().map(|r| r.targets.clone()).unwrap_or_default(),
        repo_root: sources.config.as_ref().ok().map(|c| c.repo_root.clone()),
        scope_dir: scope.display().to_string(),
        log_bytes: options.log_bytes,
        files: w.files.clone(),
        redaction: RedactionSummary { total: counts.values().sum(), rules: counts },
        notes: notes.iter().map(|n| redactor.text(n)).collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    bytes.push(b'\n');
    w.append("manifest.json", bytes.len() as u64, bytes.as_slice())?;
    let Writer { tar, partial, .. } = w;
    let io = |source| BundleError::Io { path: partial.clone(), source };
    let encoder = tar.into_inner().map_err(io)?;
    let mut buffered = encoder.finish().map_err(io)?;
    buffered.flush().map_err(io)?;
    buffered.get_ref().sync_all().map_err(io)?;
    std::fs::rename(&partial, &path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
    Ok(Packed { path, manifest })
}

/// The last `max` bytes of each recorded process's log, the job server's and the host's.
fn logs(
    w: &mut Writer,
    run: Option<&RunState>,
    scope: &Path,
    max: u64,
    notes: &mut Vec<String>,
    redactor: &mut Redactor,
) {
    // A recorded log that is gone is noted; the job server's and the host's are there only once they ran.
    let mut logs: Vec<(String, PathBuf, bool)> = run
        .map(|state| state.services.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            Some((format!("logs/{}.{}.log", r.target, r.service), PathBuf::from(r.log_path.as_ref()?), true))
        })
        .collect();
    logs.push(("logs/jobs-server.log".into(), crate::requirements::job_server::log_path(scope), false));
    logs.push(("logs/host.log".into(), scope.join("host.log"), false));
    for (name, path, recorded) in logs {
        if !recorded && !path.is_file() {
            continue;
        }
        if let Err(e) = w.tail(&name, &path, max, redactor) {
            notes.push(format!("{}: {e}", path.display()));
        }
    }
}

/// The run to describe: `run_id`'s (the latest view when it is that run, else its `runs/` copy), or the latest.
fn choose_run(
    state: &StateRepository,
    latest: Option<&RunState>,
    run_id: Option<&str>,
) -> Result<Option<RunState>, BundleError> {
    let Some(id) = run_id else { return Ok(latest.cloned()) };
    if let Some(latest) = latest.filter(|l| l.run_id == id) {
        return Ok(Some(latest.clone()));
    }
    match state.run_copy(id) {
        Ok(Some(copy)) => Ok(Some(copy)),
        _ => Err(BundleError::NoRun { run_id: id.to_owned(), known: state.run_ids() }),
    }
}

/// Every value to search for wherever it stands: generated passwords, and values under secret-looking names in
/// the configuration, the environment and the latest state.
fn known_values(sources: &Sources<'_>, scope: &Path, latest: Option<&RunState>) -> Vec<String> {
    let mut known = redact::known_secrets(scope);
    if let Ok(config) = &sources.config {
        redact::secret_values(&to_value(config), &mut known);
    }
    let env: serde_json::Map<String, Value> =
        sources.env.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    redact::secret_values(&Value::Object(env), &mut known);
    if let Some(state) = latest {
        redact::secret_values(&to_value(state), &mut known);
    }
    known
}

/// The last `--jobs` job records (of the run's targets, or without one), each with its log.
fn jobs(
    w: &mut Writer,
    sources: &Sources<'_>,
    run: Option<&RunState>,
    options: &PackOptions,
    cutoff: Option<SystemTime>,
    notes: &mut Vec<String>,
    redactor: &mut Redactor,
) -> Result<(), BundleError> {
    let store = match &sources.store {
        Ok(store) => store,
        Err(e) => {
            notes.push(format!("the job store did not open: {}", first_line(e)));
            return Ok(());
        }
    };
    let listed = store.list(&ListFilter { limit: options.jobs, ..ListFilter::default() });
    let jobs = match listed {
        Ok(jobs) => jobs,
        Err(e) => {
            notes.push(format!("the jobs cannot be listed: {}", first_line(&e)));
            return Ok(());
        }
    };
    for job in jobs {
        let of_run = run.is_none_or(|r| job.target.as_ref().is_none_or(|t| r.targets.contains(t)));
        if !of_run || cutoff.is_some_and(|c| !recent(Some(&job.updated_at), c)) {
            continue;
        }
        let logs = store.logs(&job.id, 0).unwrap_or_else(|e| {
            notes.push(format!("job {}: its log cannot be read: {}", job.id, first_line(&e)));
            Vec::new()
        });
        let path = format!("jobs/{}.json", job.id);
        w.json(&path, to_value(&BundleJob { schema_version: SCHEMA_VERSION, job, logs }), redactor)?;
    }
    Ok(())
}

/// Whether the RFC 3339 time `at` is at or after `cutoff` (an unreadable time counts as recent).
fn recent(at: Option<&str>, cutoff: SystemTime) -> bool {
    at.and_then(|t| humantime::parse_rfc3339_weak(t).ok()).is_none_or(|t| t >= cutoff)
}

/// The bundle's path and its top directory's name.
fn output_path(scope: &Path, output: Option<&Path>) -> Result<(PathBuf, String), BundleError> {
    let stamp: String = crate::state::now_rfc3339().chars().filter(char::is_ascii_digit).take(14).collect();
    let name = format!("envctl-debug-{stamp}-{:05}", std::process::id() % 100_000);
    let dir_of = |dir: &Path| -> Result<(PathBuf, String), BundleError> {
        crate::state::create_private_dir_all(dir)
            .map_err(|source| BundleError::Io { path: dir.to_path_buf(), source })?;
        Ok((dir.join(format!("{name}.tar.gz")), name.clone()))
    };
    match output {
        None => dir_of(&scope.join(super::DEBUG_DIR)),
        Some(path) if path.is_dir() => dir_of(path),
        Some(path) => {
            let file = path.file_name().map_or_else(|| name.clone(), |f| f.to_string_lossy().into_owned());
            let top = file.trim_end_matches(".tar.gz").trim_end_matches(".tgz").to_owned();
            Ok((path.to_path_buf(), top))
        }
    }
}

fn create_private(path: &Path) -> Result<File, BundleError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| BundleError::Io { path: path.to_path_buf(), source })?;
    // Whatever the umask, and also when the file existed.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|source| BundleError::Io { path: path.to_path_buf(), source })?;
    Ok(file)
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// The archive being written, and what went into it.
struct Writer {
    tar: tar::Builder<flate2::write::GzEncoder<BufWriter<File>>>,
    top: String,
    files: Vec<BundleFile>,
    spool: File,
    partial: PathBuf,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Writer {
    fn io(&self, source: std::io::Error) -> BundleError {
        BundleError::Io { path: self.partial.clone(), source }
    }

    /// Appends `len` bytes of `data` as `path`, recording its hash.
    fn append(&mut self, path: &str, len: u64, data: impl Read) -> Result<(), BundleError> {
        self.entry(path, len, data).map_err(|e| self.io(e))
    }

    /// A JSON document, redacted.
    fn json(&mut self, path: &str, mut value: Value, redactor: &mut Redactor) -> Result<(), BundleError> {
        redactor.json(&mut value);
        let mut bytes = serde_json::to_vec_pretty(&value).unwrap_or_default();
        bytes.push(b'\n');
        let sha256 = format!("{:x}", sha2::Sha256::digest(&bytes));
        self.files.push(BundleFile { path: path.to_owned(), size: bytes.len() as u64, sha256 });
        self.append(path, bytes.len() as u64, bytes.as_slice())
    }

    /// A JSON artifact read from `source` (absent: skipped); one that is not JSON goes in as text.
    fn artifact(
        &mut self,
        path: &str,
        source: &Path,
        max: u64,
        redactor: &mut Redactor,
    ) -> Result<(), BundleError> {
        let Ok(bytes) = std::fs::read(source) else { return Ok(()) };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => self.json(path, value, redactor),
            Err(_) => self.tail(path, source, max, redactor).map_err(|e| self.io(e)),
        }
    }

    /// The lines of the last `max` bytes of `source` that `keep` keeps, each redacted as JSON (a line that is not
    /// JSON is redacted as text).
    fn jsonl(
        &mut self,
        path: &str,
        source: &Path,
        max: u64,
        keep: &dyn Fn(&Value) -> bool,
        redactor: &mut Redactor,
    ) -> Result<(), BundleError> {
        if !source.is_file() {
            return Ok(());
        }
        let each = |line: &str, redactor: &mut Redactor| match serde_json::from_str::<Value>(line) {
            Ok(mut value) if keep(&value) => {
                redactor.json(&mut value);
                Some(value.to_string())
            }
            Ok(_) => None,
            Err(_) => Some(redactor.line(line)),
        };
        self.lines(path, source, max, &each, redactor).map_err(|e| self.io(e))
    }

    /// The last `max` bytes of `source` (from the first whole line), redacted line by line.
    fn tail(&mut self, path: &str, source: &Path, max: u64, redactor: &mut Redactor) -> std::io::Result<()> {
        self.lines(path, source, max, &|line, r| Some(r.line(line)), redactor)
    }

    fn lines(
        &mut self,
        path: &str,
        source: &Path,
        max: u64,
        each: &dyn Fn(&str, &mut Redactor) -> Option<String>,
        redactor: &mut Redactor,
    ) -> std::io::Result<()> {
        let mut file = File::open(source)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(max);
        file.seek(SeekFrom::Start(start))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file.take(len - start));
        let mut line = Vec::new();
        if start > 0 {
            // A partial first line is dropped.
            reader.read_until(b'\n', &mut line)?;
        }
        self.spool.set_len(0)?;
        self.spool.seek(SeekFrom::Start(0))?;
        let mut out = BufWriter::with_capacity(
            64 * 1024,
            Hashing { inner: self.spool.try_clone()?, hasher: sha2::Sha256::new(), len: 0 },
        );
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            if let Some(kept) = each(text, redactor) {
                out.write_all(kept.as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
        let Hashing { hasher, len: size, .. } =
            out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        self.files.push(BundleFile {
            path: path.to_owned(),
            size,
            sha256: format!("{:x}", hasher.finalize()),
        });
        self.spool.seek(SeekFrom::Start(0))?;
        let spool = self.spool.try_clone()?;
        self.entry(path, size, spool.take(size))
    }

    /// One entry of `len` bytes read from `data`.
    fn entry(&mut self, path: &str, len: u64, data: impl Read) -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        header.set_mtime(now);
        let full = format!("{}/{path}", self.top);
        self.tar.append_data(&mut header, full, data)
    }
}
