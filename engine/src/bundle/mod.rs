//! Incident triage: `debug-pack` writes one redacted `.tar.gz` of everything needed to say what went wrong
//! ([`pack`]), `debug-report` reads one back ([`read`]) and names the probable causes, most likely first
//! ([`diagnose`]). This domain only reads: the scope's artifacts and logs, the settings' report, the job store and
//! `/proc`; a fresh doctor report is handed to it by the composition root. Every byte that enters a bundle passes
//! through [`crate::state::redact::Redactor`].

mod facts;
mod pack;
mod read;
mod report;

pub use pack::{PackOptions, Packed, Sources, pack};
pub use read::{Evidence, read};
pub use report::diagnose;

use std::path::{Path, PathBuf};

/// Bundles are written under `<scope>/debug/` unless `--output` says otherwise.
pub const DEBUG_DIR: &str = "debug";

/// Default `--log-bytes`: the last MiB of each log.
pub const DEFAULT_LOG_BYTES: u64 = 1024 * 1024;

/// Default `--jobs`.
pub const DEFAULT_JOBS: usize = 200;

/// A bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be written or read.
    #[error("{}: {source}\nhint: check the permissions and free space of that directory", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--run-id` names a run that was not kept.
    #[error("no run `{run_id}` in this repository's state\nhint: the kept runs are: {}", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    NoRun {
        /// The id given.
        run_id: String,
        /// The runs kept.
        known: Vec<String>,
    },
    /// No bundle has been made yet.
    #[error("no debug bundle in {}\nhint: `envctl debug-pack` makes one", dir.display())]
    NoBundle {
        /// Where bundles are looked for.
        dir: PathBuf,
    },
    /// The file is not a bundle.
    #[error("{}: not an envctl debug bundle ({detail})\nhint: give the path `envctl debug-pack` printed, or --latest", path.display())]
    NotABundle {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

/// The newest bundle in `<scope>/debug/`, by modification time.
pub fn latest(scope_dir: &Path) -> Result<PathBuf, BundleError> {
    let dir = scope_dir.join(DEBUG_DIR);
    let newest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.gz"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max();
    newest.map(|(_, path)| path).ok_or(BundleError::NoBundle { dir })
}
