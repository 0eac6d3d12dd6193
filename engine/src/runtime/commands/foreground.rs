//! `start --foreground`: the host runs inside this process, and every service's log is printed here, each line
//! prefixed with its target and service. Ctrl-C stops everything in reverse dependency order; a second Ctrl-C
//! skips the grace period.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use envctl_contracts::control::{Reply, Request, StartRequest};

use super::start::{report, show_progress};
use crate::host::{self, client::HostClient};
use crate::runtime::{EngineError, EngineRuntime, Outcome, block_on};

/// Runs the host here, starts the request through it, and follows the logs until the host ends.
pub fn run(rt: &EngineRuntime, request: StartRequest) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    let printer = *rt.printer();
    if HostClient::connect(&paths).is_some() {
        return Err(EngineError::Failed(
            "a detached envctl host already runs for this repository\nhint: stop it with `envctl stop-all`, or run `envctl start` without --foreground".into(),
        ));
    }
    let host_paths = paths.clone();
    let host = std::thread::spawn(move || block_on(host::run(host_paths, std::future::pending())));
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        if let Some(client) = HostClient::connect(&paths) {
            break client;
        }
        if host.is_finished() || Instant::now() >= deadline {
            return match host.join() {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(EngineError::Failed("the in-process host did not start".into())),
            };
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let reply = client.request(&Request::Start(request), |p| show_progress(printer, p))?;
    let logs: Vec<(String, PathBuf)> = match &reply {
        Reply::Started(outcome) => outcome
            .services
            .iter()
            .filter_map(|r| {
                r.log_path.as_ref().map(|p| (format!("{}/{}", r.target, r.service), PathBuf::from(p)))
            })
            .collect(),
        _ => Vec::new(),
    };
    let started = report(printer, reply);
    if started.is_err() {
        let _ = host.join();
        return started;
    }
    printer.note("following logs; Ctrl-C stops everything (press it twice to skip the grace period)");
    let mut offsets: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let width = logs.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    loop {
        let finished = host.is_finished();
        for (label, path) in &logs {
            let offset = offsets.entry(path.clone()).or_insert(0);
            for line in read_new_lines(path, offset) {
                printer.data(&format!("{label:<width$} | {line}"));
            }
        }
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match host.join() {
        Ok(Ok(())) => Ok(Outcome::Interrupted),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(EngineError::Failed("the in-process host panicked".into())),
    }
}

/// Complete lines appended to `path` since `offset` (which moves past them); a truncated file starts over.
pub(super) fn read_new_lines(path: &std::path::Path, offset: &mut u64) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map_or(0, |m| m.len());
    if len < *offset {
        *offset = 0;
    }
    if len == *offset || file.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { return Vec::new() };
    *offset += end as u64 + 1;
    String::from_utf8_lossy(&bytes[..end]).lines().map(str::to_owned).collect()
}
