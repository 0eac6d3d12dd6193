//! Crash-safe file writes: the bytes go to a temporary file in the same directory, which takes the target's place
//! in one step — synced, renamed over it and the directory synced ([`Durability::Full`]), or swapped in without a
//! sync ([`Durability::None`]). A reader sees the old file or the new one, never a torn one, even when the writer
//! is killed half-way.
//!
//! envctl's own files (state, leases, locks) are private to the user whatever the umask: directories are created
//! 0700 and files 0600. A file of the user's repository (`.envctl`) keeps the mode it had.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How hard a write tries to survive a power loss (a killed process never sees a torn file either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file, rename, fsync the directory: survives power loss (config files, leases).
    Full,
    /// Just write and put in place ([`swap_in`]): the latest state view and the history copies.
    None,
}

/// Creates `dir` and its missing parents, each 0700 whatever the umask (existing ones are left as they are).
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Makes `dir` a private directory of this user: created 0700 when missing; refused when it is a symlink, not a
/// directory, or owned by another user (someone else made it first: nothing of ours goes in there); set to 0700
/// when it is ours but open to others.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    create_private_dir_all(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    let refuse =
        |why: String| io::Error::new(io::ErrorKind::PermissionDenied, format!("{}: {why}", dir.display()));
    if !meta.file_type().is_dir() {
        return Err(refuse(
            "is not a real directory (a symlink or a file); envctl keeps nothing there".into(),
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!(
            "is owned by uid {}, not by you (uid {me}); envctl keeps nothing in another user's directory",
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Opens (creating 0600) `path` for appending: a private log or event file.
pub fn open_private_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        create_private_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

/// Writes `bytes` to `path` atomically and durably as a private file (0600), creating the parent directory
/// (0700) if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, Durability::Full)
}

/// Writes a file of the user's (the repository's `.envctl`) atomically and durably, keeping the mode it had
/// (0644 for a new one). A symlink is written through: the file it points to changes, the link stays.
pub fn write_user_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let target = if is_link { fs::canonicalize(path)? } else { path.to_path_buf() };
    let mode = fs::metadata(&target).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    write_with_mode(&target, bytes, Durability::Full, mode)
}

/// Writes `bytes` to `path` atomically with the given durability, as a private file (0600).
pub fn write_atomic_with(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    write_with_mode(path, bytes, durability, 0o600)
}

fn write_with_mode(path: &Path, bytes: &[u8], durability: Durability, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    create_private_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&temp)?;
        // The umask may have taken bits the mode asked for (a user file's group read, say): set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        if durability == Durability::None {
            drop(file);
            return swap_in(&temp, path);
        }
        file.sync_data()?;
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Puts `temp` in the place of `path` in one step, for a write without a sync. A file that exists is exchanged
/// with `temp` (`renameat2(RENAME_EXCHANGE)`) and the old one, now at `temp`, is unlinked: a plain rename over an
/// existing file makes ext4 (`auto_da_alloc`) allocate and start writing back the new file's blocks inside the
/// rename, which made each of a save's four state files cost 150 µs instead of 30 µs (1.2 ms instead of 0.35 ms for
/// the megabyte of `run_state.json` at 1,000 services). Readers see the old file or the new one either way. A new
/// file, and a filesystem without the exchange, take the plain rename.
fn swap_in(temp: &Path, path: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, temp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => return fs::remove_file(temp),
            // Nothing to exchange with, or a filesystem (or kernel) without the exchange.
            Err(Errno::ENOENT | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
            Err(e) => return Err(e.into()),
        }
    }
    fs::rename(temp, path)
}

/// Temporary files left by writers that were killed before their rename.
pub fn leftover_temps(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with('.') && n.to_string_lossy().contains(".tmp-")
            })
        })
        .collect()
}

/// An exclusive advisory lock on a file, released on drop (and by the kernel if the process dies).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` (created if missing) is held.
    pub fn acquire(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(dir) = path.parent() {
            create_private_dir_all(dir)?;
        }
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
        file.lock()?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b.json");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert!(leftover_temps(&dir.path().join("a")).is_empty());
    }

    #[test]
    fn a_write_without_sync_swaps_the_new_file_in_whole_and_removes_the_old_one() {
        use std::io::Read as _;
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        // A new file: nothing to exchange with.
        write_atomic_with(&path, b"first", Durability::None).expect("first write");
        let mut reader = File::open(&path).expect("open the first");
        write_atomic_with(&path, b"second, longer", Durability::None).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"second, longer");
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        // A reader that had the old file open still reads it whole.
        let mut old = String::new();
        reader.read_to_string(&mut old).expect("read the old");
        assert_eq!(old, "first");
        let names: Vec<_> =
            fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["state.json"], "only the file itself is left");
    }
}
