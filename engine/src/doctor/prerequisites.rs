//! The `prerequisites` gate: git, each enabled requirement's binaries (with their versions and an install line),
//! a writable scope directory with room to spare, and the machine-wide lease directory.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Check, Ctx, listing, unconfigured};
use crate::requirements::{binaries, find_binary};

/// Below this much free space in the scope's file system the gate warns; below a tenth of it, it fails.
const FREE_WARN: u64 = 1 << 30;

/// The first line `program --version` prints, remembered in the scope directory's `binary_versions.json` by the
/// binary's path, size and modification time (running a server binary costs more than every other check).
fn version(ctx: &Ctx<'_>, program: &Path) -> Option<String> {
    let meta = std::fs::metadata(program).ok()?;
    let stamp = format!(
        "{}:{}",
        meta.len(),
        meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos()
    );
    let cache = ctx.paths.map(|p| p.scope_dir.join("binary_versions.json"));
    let mut known: BTreeMap<String, (String, String)> = cache
        .as_ref()
        .and_then(|c| std::fs::read(c).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let key = program.display().to_string();
    if let Some((seen, version)) = known.get(&key)
        && *seen == stamp
    {
        return Some(version.clone());
    }
    let out = std::process::Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found = text.lines().next().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty())?;
    known.insert(key, (stamp, found.clone()));
    if let (Some(cache), Ok(bytes)) = (cache, serde_json::to_vec(&known)) {
        let _ = crate::state::write_atomic_with(&cache, &bytes, crate::state::Durability::None);
    }
    Some(found)
}

/// git is on PATH.
pub fn git(ctx: &Ctx<'_>) -> Check {
    let Some(path) = find_binary("git", ctx.path_var.as_deref()) else {
        return Check::fail("git is not on PATH (worktrees are git worktrees)", "apt-get install git");
    };
    let found = version(ctx, &path).unwrap_or_else(|| "version unknown".into());
    Check::pass(format!("{found} ({})", path.display())).with("path", path.display()).with("version", found)
}

/// Every enabled requirement's binaries are found.
pub fn requirement_binaries(ctx: &Ctx<'_>) -> Check {
    if let Some(skip) = unconfigured(ctx) {
        return skip;
    }
    let Ok(settings) = &ctx.settings else { return Check::skip("the configuration does not load") };
    let enabled: Vec<_> = settings.config.requirements.iter().filter(|(_, r)| r.enabled).collect();
    if enabled.is_empty() {
        return Check::skip("no requirement is enabled");
    }
    let mut missing = Vec::new();
    let mut installs = Vec::new();
    let mut check = Check::pass("");
    for (name, req) in enabled {
        let found = binaries(req, ctx.path_var.as_deref());
        for binary in &found {
            match (&binary.path, &binary.install_hint) {
                (Some(path), _) => {
                    check = check.with(format!("{name}.{}", binary.name), path);
                }
                (None, hint) => {
                    missing.push(format!("{} ({name})", binary.name));
                    if let Some(hint) = hint.as_ref().filter(|h| !installs.contains(*h)) {
                        installs.push(hint.clone());
                    }
                }
            }
        }
        if let Some(path) = found.iter().rev().find_map(|b| b.path.as_ref())
            && let Some(v) = version(ctx, Path::new(path))
        {
            check = check.with(format!("{name}.version"), v);
        }
    }
    if missing.is_empty() {
        let versions: Vec<String> =
            check.evidence.iter().filter(|(k, _)| k.ends_with(".version")).map(|(_, v)| v.clone()).collect();
        check.finding = format!(
            "found: {}",
            if versions.is_empty() { "every binary".into() } else { versions.join("; ") }
        );
        return check;
    }
    let line = format!("sudo {}", installs.join(" && sudo "));
    Check {
        outcome: super::Outcome::Fail,
        finding: format!("not found on PATH: {}", listing(&missing)),
        hint: Some(line.clone()),
        ..check
    }
    .with("install", line)
}

/// The scope directory can be written and has room.
pub fn scope_dir(ctx: &Ctx<'_>) -> Check {
    let Some(paths) = ctx.paths else { return Check::skip("no repository found") };
    writable(&paths.scope_dir, "the scope directory")
}

/// The machine-wide lease directory can be written.
pub fn lease_dir(ctx: &Ctx<'_>) -> Check {
    let Some(paths) = ctx.paths else { return Check::skip("no repository found") };
    writable(&paths.ledger_dir, "the port lease directory")
}

/// `dir` is a private directory of this user that takes a file, on a file system with room.
fn writable(dir: &Path, what: &str) -> Check {
    let hint =
        "check the permissions of envctl's runtime directory (ENVCTL_RUNTIME_DIR), or point it elsewhere";
    if let Err(e) = crate::state::ensure_private_dir(dir) {
        return Check::fail(format!("{what} cannot be used: {e}"), hint).with("path", dir.display());
    }
    let probe = dir.join(format!(".doctor.tmp-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"") {
        return Check::fail(format!("{what} {} is not writable: {e}", dir.display()), hint)
            .with("path", dir.display());
    }
    let _ = std::fs::remove_file(&probe);
    let free = nix::sys::statvfs::statvfs(dir).map_or(u64::MAX, |s| s.blocks_available() * s.fragment_size());
    let check = |c: Check| c.with("path", dir.display()).with("free_bytes", free);
    let mib = free / (1 << 20);
    if free < FREE_WARN / 10 {
        return check(Check::fail(format!("{what} has only {mib} MiB free"), "free some disk space"));
    }
    if free < FREE_WARN {
        return check(Check::warn(format!("{what} has only {mib} MiB free"), "free some disk space"));
    }
    check(Check::pass(format!("{} is writable ({} GiB free)", dir.display(), free >> 30)))
}
