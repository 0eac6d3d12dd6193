//! Typed run state and its repository: the per-repository scope directory holds the latest view
//! (`run_state.json`, `runtime_map.json`, `ports_manifest.json`, `error_report.json`, `events.jsonl`) and a
//! `runs/<run-id>/` copy of each run. Writes are atomic and made under the scope's lock; a torn or corrupt file
//! is reported with its path and never crashes a command.

mod atomic;
pub mod redact;
mod render;
mod repository;

pub use atomic::{
    Durability, FileLock, create_private_dir_all, ensure_private_dir, leftover_temps, open_private_append,
    write_atomic, write_atomic_with, write_user_file,
};
pub use repository::{EventLog, KEEP_RUNS, RunArtifacts, StateError, StateRepository};

use std::time::SystemTime;

/// A saved state of `services` for tests: run `run-1` of `start` on `main`, no host, no failure.
#[cfg(test)]
pub(crate) fn test_run_state(
    services: Vec<envctl_contracts::state::ServiceRecord>,
) -> envctl_contracts::state::RunState {
    envctl_contracts::state::RunState {
        schema_version: 1,
        run_id: "run-1".into(),
        command: "start".into(),
        targets: vec!["main".into()],
        host: None,
        services,
        failed: false,
        failure: None,
        created_at: String::new(),
        updated_at: String::new(),
        requirement_users: std::collections::BTreeMap::new(),
    }
}

/// The sha256 of `bytes`, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().fold(String::with_capacity(64), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// FNV-1a, 64 bits: stable across runs, builds and machines (unlike `DefaultHasher`); ids, slots and scope names
/// are derived from it.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A new run id: `run-YYYYMMDDhhmmss-<8 hex>`.
pub fn new_run_id() -> String {
    let now = SystemTime::now();
    let stamp: String =
        humantime::format_rfc3339_seconds(now).to_string().chars().filter(char::is_ascii_digit).collect();
    let nanos = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let seed = format!("{nanos}-{}", std::process::id());
    format!("run-{stamp}-{:08x}", fnv1a(seed.as_bytes()) & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_ids_have_the_documented_shape() {
        let id = super::new_run_id();
        assert!(id.starts_with("run-") && id.len() == 4 + 14 + 1 + 8, "{id}");
        assert!(id[4..18].chars().all(|c| c.is_ascii_digit()), "{id}");
    }
}
