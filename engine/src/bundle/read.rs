//! Reading a bundle back: one pass over the archive, each entry checked against the manifest's sha256, the JSON
//! documents parsed and only the last lines of each log kept.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use envctl_contracts::bundle::{BundleFacts, BundleJob, BundleManifest};
use envctl_contracts::doctor::ReadinessReport;
use envctl_contracts::jobs::Job;
use envctl_contracts::state::{ErrorReport, Event, RunState};
use serde::de::DeserializeOwned;
use sha2::Digest as _;

use super::BundleError;

/// The last lines of each log kept for the report.
pub const TAIL_LINES: usize = 20;

/// What a bundle holds, as the report reads it.
#[derive(Debug, Default)]
pub struct Evidence {
    /// Its manifest.
    pub manifest: Option<BundleManifest>,
    /// The run's state (the latest view's when it is that run, else the run's copy).
    pub run_state: Option<RunState>,
    /// The run's failures.
    pub error_report: Option<ErrorReport>,
    /// The run's events, in file order.
    pub events: Vec<Event>,
    /// The fresh doctor report.
    pub doctor: Option<ReadinessReport>,
    /// `/proc`, the ledger and the machine.
    pub facts: Option<BundleFacts>,
    /// The job records.
    pub jobs: Vec<Job>,
    /// The last [`TAIL_LINES`] of each log, by file name (`main.web.log`, `host.log`).
    pub log_tails: BTreeMap<String, Vec<String>>,
    /// Entries whose bytes do not match the manifest's sha256 (or that it does not list).
    pub mismatched: Vec<String>,
}

/// Reads the bundle at `path`.
pub fn read(path: &Path) -> Result<Evidence, BundleError> {
    let not_bundle = |detail: String| BundleError::NotABundle { path: path.to_path_buf(), detail };
    let file =
        std::fs::File::open(path).map_err(|source| BundleError::Io { path: path.to_path_buf(), source })?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let mut ev = Evidence::default();
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    let mut latest: (Option<RunState>, Option<ErrorReport>) = (None, None);
    let mut copy: (Option<RunState>, Option<ErrorReport>) = (None, None);
    let entries = archive.entries().map_err(|e| not_bundle(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| not_bundle(e.to_string()))?;
        let full = entry.path().map_err(|e| not_bundle(e.to_string()))?.to_string_lossy().into_owned();
        let name = full.split_once('/').map_or(full.as_str(), |(_, rest)| rest).to_owned();
        let mut reader = Hashing { inner: entry, hasher: sha2::Sha256::new() };
        if name.starts_with("logs/") || name.ends_with("events.jsonl") {
            let lines = read_lines(&mut reader, &name, &mut ev);
            if let Some(file) = name.strip_prefix("logs/") {
                ev.log_tails.insert(file.to_owned(), lines);
            }
        } else {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).map_err(|e| not_bundle(format!("{name}: {e}")))?;
            match name.as_str() {
                "manifest.json" => ev.manifest = parse(&bytes),
                "doctor.json" => ev.doctor = parse(&bytes),
                "facts.json" => ev.facts = parse(&bytes),
                "latest/run_state.json" => latest.0 = parse(&bytes),
                "latest/error_report.json" => latest.1 = parse(&bytes),
                n if n.starts_with("runs/") && n.ends_with("/run_state.json") => copy.0 = parse(&bytes),
                n if n.starts_with("runs/") && n.ends_with("/error_report.json") => copy.1 = parse(&bytes),
                n if n.starts_with("jobs/") => {
                    if let Some(job) = parse::<BundleJob>(&bytes) {
                        ev.jobs.push(job.job);
                    }
                }
                _ => {}
            }
        }
        if name != "manifest.json" {
            hashes.insert(name, format!("{:x}", reader.hasher.finalize()));
        }
    }
    let Some(manifest) = &ev.manifest else { return Err(not_bundle("it has no manifest.json".to_owned())) };
    let mismatched = hashes
        .iter()
        .filter(|(name, sha256)| {
            manifest.files.iter().find(|f| &f.path == *name).is_none_or(|f| &f.sha256 != *sha256)
        })
        .map(|(name, _)| name.clone())
        .collect();
    let run_id = manifest.run_id.clone();
    ev.mismatched = mismatched;
    let is_run = |s: &Option<RunState>| s.as_ref().is_some_and(|s| Some(&s.run_id) == run_id.as_ref());
    if is_run(&latest.0) {
        (ev.run_state, ev.error_report) = latest;
    } else {
        ev.run_state = copy.0.or(latest.0);
        ev.error_report = copy.1.or(latest.1);
    }
    Ok(ev)
}

/// Reads a text entry line by line, keeping its last [`TAIL_LINES`] (and the events of `events.jsonl`).
fn read_lines(reader: &mut impl Read, name: &str, ev: &mut Evidence) -> Vec<String> {
    let mut tail = VecDeque::with_capacity(TAIL_LINES + 1);
    let mut buffered = BufReader::new(reader);
    let mut line = Vec::new();
    let events = name.ends_with("events.jsonl");
    loop {
        line.clear();
        match buffered.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches('\n').to_owned();
        if events {
            if let Ok(event) = serde_json::from_str::<Event>(&text) {
                ev.events.push(event);
            }
            continue;
        }
        tail.push_back(text);
        if tail.len() > TAIL_LINES {
            tail.pop_front();
        }
    }
    // Whatever was not read is still hashed.
    let _ = std::io::copy(&mut buffered, &mut std::io::sink());
    tail.into()
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
