//! Service log files: where they live, their last lines, and rotation by copy-and-truncate (the service keeps
//! its file descriptor; appends land in the emptied file).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A log is rotated once it grows past this.
pub const ROTATE_BYTES: u64 = 10 * 1024 * 1024;

/// `<scope>/logs/<target>.<service>.<run-id>.log`: one file per service per run, in one directory.
pub fn log_path(scope_dir: &Path, run_id: &str, target: &str, service: &str) -> PathBuf {
    scope_dir.join("logs").join(format!("{target}.{service}.{run_id}.log"))
}

/// The last `n` lines of a file (reading at most the last 256 KiB).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(256 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| (*l).to_owned()).collect()
}

/// Rotates `path` to `path.1` when it is larger than `limit`; returns whether it did.
pub fn rotate_if_large(path: &Path, limit: u64) -> std::io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= limit {
        return Ok(false);
    }
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    std::fs::copy(path, PathBuf::from(rotated))?;
    std::fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// Complete lines appended to `path` since `offset` (which moves past them); a truncated file starts over.
pub fn read_new_lines(path: &Path, offset: &mut u64) -> Vec<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
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

/// The lines `child` prints on stdout and stderr, as they come (the channel closes once both streams end).
pub fn output_lines(child: &mut tokio::process::Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use tokio::io::AsyncBufReadExt as _;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<_>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        std::fs::write(&path, "1\n2\n3\n").expect("write");
        assert_eq!(tail(&path, 2), vec!["2", "3"]);
        assert!(!rotate_if_large(&path, 100).expect("rotate"));
        assert!(rotate_if_large(&path, 2).expect("rotate"));
        assert_eq!(std::fs::read_to_string(dir.path().join("a.log.1")).expect("read"), "1\n2\n3\n");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
    }
}
