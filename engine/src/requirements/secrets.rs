//! The password of each server envctl starts: generated on first use, kept in the scope directory's `secrets/`
//! (0700) as one file per server (0600), so no other local user can connect, and read by everything of envctl's
//! that connects (probes, database creation, teardown) and by the URLs services get.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

/// Length of a generated password: 32 characters of `[A-Za-z0-9]` (about 190 bits), safe in a URL as it is.
const LENGTH: usize = 32;

/// Where the password of requirement `name` of target `owner` lives, under a scope directory.
pub fn path(scope_dir: &Path, owner: &str, name: &str) -> PathBuf {
    scope_dir.join(crate::state::redact::SECRETS_DIR).join(format!("{owner}.{name}.password"))
}

/// The password of requirement `name` of target `owner`, made and kept the first time it is asked for.
pub fn password(scope_dir: &Path, owner: &str, name: &str) -> std::io::Result<String> {
    let file = path(scope_dir, owner, name);
    if let Ok(text) = std::fs::read_to_string(&file)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_owned());
    }
    if let Some(dir) = file.parent() {
        crate::state::create_private_dir_all(dir)?;
    }
    // An empty file left by a crash between creating and writing it (a writer writes within milliseconds).
    let abandoned = std::fs::metadata(&file)
        .ok()
        .filter(|m| m.len() == 0)
        .and_then(|m| m.modified().ok())
        .is_some_and(|at| at.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(5)));
    if abandoned {
        let _ = std::fs::remove_file(&file);
    }
    let fresh = generate()?;
    // Two commands asking at once agree on one: whoever creates the file first wins, the other reads it.
    let created = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file)
    };
    match created {
        Ok(mut out) => {
            out.write_all(fresh.as_bytes())?;
            out.sync_all()?;
            Ok(fresh)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            for _ in 0..50 {
                let text = std::fs::read_to_string(&file)?;
                if text.trim().len() == LENGTH {
                    return Ok(text.trim().to_owned());
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(std::io::Error::other(format!("{} is not a password envctl wrote", file.display())))
        }
        Err(e) => Err(e),
    }
}

fn generate() -> std::io::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; LENGTH * 2];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    // Rejection sampling keeps every character equally likely (248 = 4 × 62).
    let picked: String = bytes
        .iter()
        .filter(|b| **b < 248)
        .map(|b| char::from(ALPHABET[usize::from(*b) % 62]))
        .take(LENGTH)
        .collect();
    if picked.len() == LENGTH { Ok(picked) } else { generate() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let paths = dir.path();
        let first = password(paths, "main", "redis").expect("made");
        assert_eq!(first.len(), LENGTH);
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(password(paths, "main", "redis").expect("read"), first);
        assert_ne!(password(paths, "feat", "redis").expect("another"), first);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(path(paths, "main", "redis")).expect("file").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
