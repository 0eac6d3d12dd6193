//! `envctl logs [targets] [--service S] [--tail N] [--follow]` and `envctl clear-logs`.

use std::path::PathBuf;
use std::time::Duration;

use envctl_contracts::state::ServiceRecord;

use super::selected_records;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::state::StateError;
use crate::supervisor::logs::{self, read_new_lines};

// Arguments of `logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Which targets (default: every running target).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these services (repeatable).
    #[arg(long = "service", value_name = "S", add = super::completions::services())]
    pub services: Vec<String>,
    /// How many lines from the end of each log.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub tail: usize,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
}

// Arguments of `clear-logs`.
#[derive(Debug, clap::Args)]
pub struct ClearLogsArgs {
    /// Which targets (default: every running target).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Only these services (repeatable).
    #[arg(long = "service", value_name = "S", add = super::completions::services())]
    pub services: Vec<String>,
}

fn log_files(records: &[ServiceRecord]) -> Vec<(String, PathBuf)> {
    records
        .iter()
        .filter_map(|r| {
            r.log_path.as_ref().map(|p| (format!("{}/{}", r.target, r.service), PathBuf::from(p)))
        })
        .collect()
}

/// Prints (and follows) logs.
pub fn exec(rt: &EngineRuntime, args: &LogsArgs) -> Result<Outcome, EngineError> {
    let files = log_files(&selected_records(rt, &args.targets, &args.services)?);
    let width = files.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    // `--no-color` (or NO_COLOR): ANSI colour and cursor sequences are stripped from the lines.
    let plain = !rt.color();
    let prefix = |label: &str, line: &str| {
        let line = if plain { crate::ui::strip_ansi(line) } else { line.to_owned() };
        if files.len() > 1 { format!("{label:<width$} | {line}") } else { line }
    };
    let mut offsets = Vec::new();
    for (label, path) in &files {
        for line in logs::tail(path, args.tail) {
            rt.printer().data(&prefix(label, &line));
        }
        offsets.push(std::fs::metadata(path).map_or(0, |m| m.len()));
    }
    if !args.follow {
        return Ok(Outcome::Success);
    }
    rt.block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            for ((label, path), offset) in files.iter().zip(offsets.iter_mut()) {
                for line in read_new_lines(path, offset) {
                    rt.printer().data(&prefix(label, &line));
                }
            }
            tokio::select! {
                _ = &mut ctrl_c => return Ok(Outcome::Interrupted),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    })?
}

/// Empties log files.
pub fn exec_clear(rt: &EngineRuntime, args: &ClearLogsArgs) -> Result<Outcome, EngineError> {
    let files = log_files(&selected_records(rt, &args.targets, &args.services)?);
    for (_, path) in &files {
        match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(file) => {
                file.set_len(0).map_err(|source| StateError::Io { path: path.clone(), source })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StateError::Io { path: path.clone(), source }.into()),
        }
    }
    rt.printer().note(&format!("cleared {} log file(s)", files.len()));
    Ok(Outcome::Success)
}
