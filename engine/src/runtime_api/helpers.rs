//! The helper libraries shipped in the repository's `helpers/` (a Python module, a Node module, a bash file),
//! built into the binary and written to the scope's `helpers/` when an API starts, so a job on any machine finds
//! them at `$ENVCTL_HELPERS_DIR`.

use std::path::{Path, PathBuf};

/// Each helper: its file name and contents.
pub const HELPERS: [(&str, &str); 3] = [
    ("envctl_job.py", include_str!("../../../helpers/envctl_job.py")),
    ("envctl_job.js", include_str!("../../../helpers/envctl_job.js")),
    ("envctl_job.sh", include_str!("../../../helpers/envctl_job.sh")),
];

/// Writes the helpers under `scope_dir` (only those that changed) and returns their directory.
pub fn install(scope_dir: &Path) -> std::io::Result<PathBuf> {
    let dir = scope_dir.join("helpers");
    crate::state::create_private_dir_all(&dir)?;
    for (name, text) in HELPERS {
        let file = dir.join(name);
        if std::fs::read(&file).ok().as_deref() != Some(text.as_bytes()) {
            crate::state::write_atomic(&file, text.as_bytes())?;
        }
    }
    Ok(dir)
}
