//! The native Postgres adapter: one cluster per repository scope (or per target with `isolation = "server"`),
//! listening on 127.0.0.1 only, with trust authentication and durability settings meant for development.
//!
//! How it works: a template cluster is made once per machine and user with `initdb` and copied for every new
//! cluster (a copy takes a fraction of an `initdb`). The postmaster runs as a supervised process; when envctl runs
//! as root, Postgres (which refuses root) runs as the `postgres` user if there is one, else `nobody`, with its
//! data under the temporary directory where that user can reach it. Each target's database is created on first
//! start: main's from scratch (then seeded), a worktree's as a copy of main's, so it starts with the same schema
//! and data.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::RequirementError;
use super::pgwire::{self, ident};
use crate::config::Paths;

/// The user Postgres runs as when envctl runs as root.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// User name.
    pub name: String,
    /// Its uid.
    pub uid: nix::unistd::Uid,
    /// Its gid.
    pub gid: nix::unistd::Gid,
}

/// `None` when envctl is not root; otherwise the unprivileged user Postgres runs as.
pub fn run_as() -> Result<Option<RunAs>, RequirementError> {
    static FOUND: std::sync::OnceLock<Result<Option<RunAs>, RequirementError>> = std::sync::OnceLock::new();
    FOUND.get_or_init(find_run_as).clone()
}

fn find_run_as() -> Result<Option<RunAs>, RequirementError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = nix::unistd::User::from_name(name) {
            return Ok(Some(RunAs { name: name.to_owned(), uid: user.uid, gid: user.gid }));
        }
    }
    Err(RequirementError::NoUnprivilegedUser)
}

/// Where clusters live: the scope's `data/postgres`, or (as root) a directory under the temporary directory that
/// the unprivileged user can reach.
pub fn data_root(paths: &Paths, run_as: Option<&RunAs>) -> PathBuf {
    match run_as {
        None => paths.scope_dir.join("data").join("postgres"),
        Some(user) => std::env::temp_dir().join(format!(
            "envctl-postgres-{}-{}",
            user.uid,
            crate::config::scope_id(&paths.repo_root)
        )),
    }
}

/// Where the template cluster of this major version lives.
fn template_dir(paths: &Paths, run_as: Option<&RunAs>, version: &str) -> PathBuf {
    match run_as {
        None => paths.runtime_root.join("cache").join(format!("postgres-template-{version}")),
        Some(user) => std::env::temp_dir().join(format!("envctl-postgres-template-{version}-{}", user.uid)),
    }
}

/// The Postgres major version of a `bin` directory (`/usr/lib/postgresql/15/bin` → `15`; else `postgres -V`).
fn version(bin_dir: &Path) -> String {
    let from_path = bin_dir.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    if let Some(v) = from_path.filter(|v| v.chars().all(|c| c.is_ascii_digit())) {
        return v;
    }
    std::process::Command::new(bin_dir.join("postgres"))
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .map(|v| v.split('.').next().unwrap_or(v).to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn chown_tree(path: &Path, user: &RunAs) -> std::io::Result<()> {
    chown_one(path, user)?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), user)?;
        }
    }
    Ok(())
}

/// Copies a directory tree: directories first, then the files on a few threads (creating files is what a
/// cluster copy spends its time on, and the kernel does it in parallel across directories).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut dirs = vec![PathBuf::new()];
    let mut files = Vec::new();
    let mut index = 0;
    while index < dirs.len() {
        let rel = dirs[index].clone();
        index += 1;
        for entry in std::fs::read_dir(from.join(&rel))? {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() { dirs.push(child) } else { files.push(child) }
        }
    }
    for rel in &dirs {
        std::fs::create_dir_all(to.join(rel))?;
        std::fs::set_permissions(to.join(rel), std::fs::Permissions::from_mode(0o700))?;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter().try_for_each(|rel| std::fs::copy(from.join(rel), to.join(rel)).map(|_| ()))
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("copy thread panicked"))))
    })
}

/// Makes sure `data_dir` holds a cluster: copies the machine's template (making it once with `initdb`).
pub fn prepare_cluster(
    paths: &Paths,
    bin_dir: &Path,
    data_dir: &Path,
    run_as: Option<&RunAs>,
) -> Result<bool, RequirementError> {
    if data_dir.join("PG_VERSION").is_file() {
        return Ok(false);
    }
    let version = version(bin_dir);
    let template = template_dir(paths, run_as, &version);
    let io = |what: &'static str, path: &Path, e: std::io::Error| RequirementError::io(what, path, &e);
    if let Some(parent) = template.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    }
    let lock_path = template.with_extension("lock");
    let _lock = crate::state::FileLock::acquire(&lock_path).map_err(|e| io("lock", &lock_path, e))?;
    if !template.join("PG_VERSION").is_file() {
        let staging = template.with_extension("staging");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| io("create", &staging, e))?;
        if let Some(user) = run_as {
            chown_tree(&staging, user).map_err(|e| io("hand over", &staging, e))?;
        }
        let mut initdb = std::process::Command::new(bin_dir.join("initdb"));
        initdb
            .args(["--no-sync", "--auth=trust", "--encoding=UTF8", "--locale=C", "--username=postgres", "-D"])
            .arg(&staging)
            .current_dir(std::env::temp_dir());
        if let Some(user) = run_as {
            use std::os::unix::process::CommandExt as _;
            initdb.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let program = bin_dir.join("initdb");
        let output = initdb.output().map_err(|e| io("run", &program, e))?;
        if !output.status.success() {
            return Err(RequirementError::Setup {
                program,
                dir: staging,
                detail: super::output_tail(&output.stderr),
            });
        }
        std::fs::rename(&staging, &template).map_err(|e| io("move", &staging, e))?;
    }
    if let Some(parent) = data_dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        if let Some(user) = run_as {
            let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700));
            chown_one(parent, user).map_err(|e| io("hand over", parent, e))?;
        }
    }
    let staging = data_dir.with_extension("copying");
    let _ = std::fs::remove_dir_all(&staging);
    copy_tree(&template, &staging).map_err(|e| io("copy the template cluster to", &staging, e))?;
    let _ = std::fs::remove_file(staging.join("postmaster.pid"));
    if let Some(user) = run_as {
        chown_tree(&staging, user).map_err(|e| io("hand over", &staging, e))?;
    }
    std::fs::rename(&staging, data_dir).map_err(|e| io("move", &staging, e))?;
    Ok(true)
}

fn chown_one(path: &Path, user: &RunAs) -> std::io::Result<()> {
    nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(std::io::Error::from)
}

/// argv of the postmaster.
pub fn argv(bin_dir: &Path, data_dir: &Path, port: u16) -> Vec<String> {
    let dir = data_dir.display().to_string();
    let mut argv = vec![
        bin_dir.join("postgres").display().to_string(),
        "-D".into(),
        dir.clone(),
        "-p".into(),
        port.to_string(),
    ];
    for setting in [
        "listen_addresses=127.0.0.1".to_owned(),
        format!("unix_socket_directories={dir}"),
        // A killed server loses nothing (commits reach the kernel before they return); only a power loss could,
        // and that is a fair trade for a development database's speed.
        "fsync=off".into(),
        "full_page_writes=off".into(),
        "max_connections=200".into(),
    ] {
        argv.push("-c".into());
        argv.push(setting);
    }
    argv
}

/// What [`ensure_database`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// It existed.
    Existing,
    /// It was created empty (and seeded).
    Fresh,
    /// It was copied from the template database.
    Cloned,
    /// The template database was busy, so it was created empty (and seeded) instead.
    FreshBecauseTemplateBusy,
}

/// Makes sure `database` exists, copying `template` when given (retrying while other sessions use it).
pub async fn ensure_database(
    port: u16,
    user: &str,
    database: &str,
    template: Option<&str>,
) -> Result<Created, RequirementError> {
    let pg = |e: pgwire::PgError| RequirementError::postgres(port, e.to_string());
    if database_exists(port, user, database).await? {
        return Ok(Created::Existing);
    }
    if let Some(template) = template
        && database_exists(port, user, template).await?
    {
        // FILE_COPY (Postgres 15+) copies a small database's files directly, much faster than logging every
        // block; older servers do not know the option and get the plain statement.
        let plain = format!("CREATE DATABASE {} TEMPLATE {}", ident(database), ident(template));
        let mut sql = format!("{plain} STRATEGY = FILE_COPY");
        for attempt in 0..5u32 {
            match pgwire::query(port, user, "postgres", &sql).await {
                Ok(_) => return Ok(Created::Cloned),
                Err(e) if matches!(e.code(), Some("42601" | "42704")) => sql.clone_from(&plain),
                Err(e) if e.code() == Some("55006") && attempt < 4 => {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                Err(e) if e.code() == Some("55006") => break,
                Err(e) => return Err(pg(e)),
            }
        }
        pgwire::query(port, user, "postgres", &format!("CREATE DATABASE {}", ident(database)))
            .await
            .map_err(pg)?;
        return Ok(Created::FreshBecauseTemplateBusy);
    }
    pgwire::query(port, user, "postgres", &format!("CREATE DATABASE {}", ident(database)))
        .await
        .map_err(pg)?;
    Ok(Created::Fresh)
}

/// Makes `copy` a fresh copy of `database` for a test suite; what it did, in words.
pub async fn copy_for_tests(port: u16, database: &str, copy: &str) -> Result<String, RequirementError> {
    let began = std::time::Instant::now();
    drop_database(port, super::PG_USER, copy).await?;
    match ensure_database(port, super::PG_USER, copy, Some(database)).await? {
        Created::Cloned => Ok(format!("a copy of {database} made in {:.1} s", began.elapsed().as_secs_f64())),
        other => Err(RequirementError::postgres(port, format!("{database} could not be copied ({other:?})"))),
    }
}

/// Whether `database` exists in the cluster on `port`.
async fn database_exists(port: u16, user: &str, database: &str) -> Result<bool, RequirementError> {
    let sql = format!("SELECT 1 FROM pg_database WHERE datname = '{}'", database.replace('\'', "''"));
    let rows =
        pgwire::query(port, user, "postgres", &sql).await.map_err(|e| RequirementError::postgres(port, e))?;
    Ok(!rows.is_empty())
}

/// Drops `database` (after ending its sessions).
pub async fn drop_database(port: u16, user: &str, database: &str) -> Result<(), RequirementError> {
    pgwire::query(
        port,
        user,
        "postgres",
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database)),
    )
    .await
    .map(|_| ())
    .map_err(|e| RequirementError::postgres(port, e.to_string()))
}

/// Runs a seed into `database`: an `.sql` file's statements, or a shell command with `DATABASE_URL` set.
pub async fn seed(
    port: u16,
    user: &str,
    database: &str,
    seed: &str,
    cwd: &Path,
    url: &str,
) -> Result<(), RequirementError> {
    let failed = |detail: String| RequirementError::Seed {
        seed: seed.to_owned(),
        database: database.to_owned(),
        detail,
    };
    let file = cwd.join(seed);
    let is_sql = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("sql"));
    if is_sql && file.is_file() {
        let sql = std::fs::read_to_string(&file).map_err(|e| RequirementError::io("read", &file, &e))?;
        return pgwire::query(port, user, database, &sql)
            .await
            .map(|_| ())
            .map_err(|e| failed(e.to_string()));
    }
    let output = tokio::process::Command::new("/bin/sh")
        .args(["-c", seed])
        .current_dir(cwd)
        .env("DATABASE_URL", url)
        .output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(format!("exited with {}: {}", output.status, super::output_tail(&output.stderr))))
    }
}
