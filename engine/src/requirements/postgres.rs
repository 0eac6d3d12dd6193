//! The native Postgres adapter: one cluster per repository scope (or per target with `isolation = "server"`),
//! listening on 127.0.0.1 only, with trust authentication and durability settings meant for development.
//!
//! How it works: a template cluster is made once per machine and user with `initdb` and copied for every new
//! cluster (a copy takes a fraction of an `initdb`). The postmaster runs as a supervised process; when envctl runs
//! as root, Postgres (which refuses root) runs as the `postgres` user if there is one, else `nobody`, with its
//! data under the temporary directory where that user can reach it. Each target's database is created on first
//! start: main's from scratch (then seeded), a worktree's as a copy of main's, so it starts with the same schema
//! and data — by `CREATE DATABASE … TEMPLATE` when main's has no sessions, else by `pg_dump`/`pg_restore`
//! ([`copy_database`]). A database whose copy or seed has not finished carries a comment saying so, and is made
//! again by the next start.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::RequirementError;
use super::pgwire::{self, Login, ident};
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

/// What the Unix socket and TCP accept: the socket lives in the cluster's own 0700 directory, so only its owner
/// (and root) can reach it and it trusts them; over TCP every connection needs the role's password.
const HBA: &str = "# Written by envctl. The Unix socket is in this 0700 directory: only its owner reaches it.\n\
local all all trust\n\
host all all 127.0.0.1/32 scram-sha-256\n\
host all all ::1/128 scram-sha-256\n";

/// The file that says which password the cluster was given (its sha256, never the password).
const AUTH_MARK: &str = "envctl-auth";

/// Makes the cluster in `data_dir` require `password` for [`super::PG_USER`] over TCP (scram-sha-256): writes its
/// `pg_hba.conf` and sets the password in single-user mode, once per password. A cluster that runs now (an older
/// envctl's, with trust authentication) is left as it is until it is next started.
pub fn require_password(
    bin_dir: &Path,
    data_dir: &Path,
    run_as: Option<&RunAs>,
    password: &str,
) -> Result<(), RequirementError> {
    let io = |what: &'static str, path: &Path, e: std::io::Error| RequirementError::io(what, path, &e);
    let digest = crate::state::sha256_hex(password.as_bytes());
    let mark = data_dir.join(AUTH_MARK);
    if std::fs::read_to_string(&mark).is_ok_and(|m| m.trim() == digest) {
        return Ok(());
    }
    if runs_now(data_dir) {
        tracing::warn!(data_dir = %data_dir.display(), "the cluster runs; its password is set when it next starts");
        return Ok(());
    }
    let hba = data_dir.join("pg_hba.conf");
    crate::state::write_atomic(&hba, HBA.as_bytes()).map_err(|e| io("write", &hba, e))?;
    let program = bin_dir.join("postgres");
    let mut single = std::process::Command::new(&program);
    single
        .arg("--single")
        .arg("-D")
        .arg(data_dir)
        .args(["-c", "password_encryption=scram-sha-256", super::PG_USER])
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(user) = run_as {
        use std::os::unix::process::CommandExt as _;
        chown_one(&hba, user).map_err(|e| io("hand over", &hba, e))?;
        single.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let mut child = single.spawn().map_err(|e| io("run", &program, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        // On stdin, never on the command line.
        let statement = format!("ALTER USER {} PASSWORD {};\n", ident(super::PG_USER), literal(password));
        stdin.write_all(statement.as_bytes()).map_err(|e| io("write to", &program, e))?;
    }
    let output = child.wait_with_output().map_err(|e| io("run", &program, e))?;
    // Postgres may echo the failing statement: the password never reaches a message.
    let stderr = String::from_utf8_lossy(&output.stderr).replace(password, crate::state::redact::REDACTED);
    if !output.status.success() || stderr.contains("ERROR") {
        return Err(RequirementError::Setup {
            program,
            dir: data_dir.to_path_buf(),
            detail: format!("setting the password: {}", stderr.trim()),
        });
    }
    crate::state::write_atomic(&mark, digest.as_bytes()).map_err(|e| io("write", &mark, e))?;
    if let Some(user) = run_as {
        chown_one(&mark, user).map_err(|e| io("hand over", &mark, e))?;
    }
    Ok(())
}

/// Whether a postmaster runs on `data_dir` now (its `postmaster.pid` names a live process).
fn runs_now(data_dir: &Path) -> bool {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
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

/// How a target's database came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// It existed.
    Existing,
    /// It was created empty (and then seeded).
    Fresh,
    /// It was copied from the source database by `CREATE DATABASE … TEMPLATE`.
    Cloned,
    /// The source database was in use, so it was copied with `pg_dump` and `pg_restore`.
    CopiedByDump,
}

/// What [`copy_database`] did and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    /// [`Created::Cloned`] or [`Created::CopiedByDump`].
    pub how: Created,
    /// Wall time of the whole copy, the template attempts included.
    pub elapsed: std::time::Duration,
}

/// Where and how [`copy_database`] reaches the cluster.
#[derive(Debug, Clone, Copy)]
pub struct CopyJob<'a> {
    /// The cluster's port on 127.0.0.1.
    pub port: u16,
    /// The directory holding `postgres`, whose `pg_dump` and `pg_restore` are used.
    pub bin_dir: &'a Path,
    /// A private directory of envctl's where a dump is kept while it is restored (removed afterwards).
    pub scratch: &'a Path,
    /// The password of [`super::PG_USER`], when the URL has one (given to the tools through `PGPASSWORD`).
    pub password: Option<&'a str>,
}

impl CopyJob<'_> {
    fn login(&self) -> Login<'_> {
        Login::new(super::PG_USER, self.password)
    }
}

/// The comment on a database whose making did not finish: a later start drops and makes it again. A database
/// without one of these comments (one made by an older envctl, or by hand) is never dropped.
const SEED_PENDING: &str = "envctl: seed pending";
const COPY_PENDING: &str = "envctl: copy pending";

/// What a database's comment says did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// Its seed was started and did not succeed.
    Seed,
    /// Its copy with `pg_dump`/`pg_restore` was started and did not finish.
    Copy,
}

impl Unfinished {
    fn comment(self) -> &'static str {
        match self {
            Self::Seed => SEED_PENDING,
            Self::Copy => COPY_PENDING,
        }
    }
}

/// Pauses between looks at whether the source has other sessions before it counts as in use: a connection that
/// is closing gets its moment; one that stays open sends the copy to `pg_dump`. (Postgres itself waits five
/// seconds before `CREATE DATABASE … TEMPLATE` gives up on a busy source, so envctl looks first.)
const BUSY_PAUSES_MS: [u64; 2] = [100, 200];

/// How long `pg_dump` waits for a table that another session holds locked before the copy fails.
const DUMP_LOCK_WAIT: &str = "10s";

/// Makes `copy` a fresh copy of `database` for a test suite (the way [`copy_database`] does); what it did, in
/// words.
pub async fn copy_for_tests(
    job: &CopyJob<'_>,
    database: &str,
    copy: &str,
) -> Result<String, RequirementError> {
    drop_database(job.port, job.login(), copy).await?;
    let report = copy_database(job, database, copy).await?;
    let how = if report.how == Created::CopiedByDump { "with pg_dump/pg_restore, " } else { "" };
    Ok(format!("a copy of {database} made {how}in {:.1} s", report.elapsed.as_secs_f64()))
}

/// Whether `database` exists in the cluster on `port`.
pub async fn database_exists(port: u16, login: Login<'_>, database: &str) -> Result<bool, RequirementError> {
    let sql = format!("SELECT 1 FROM pg_database WHERE datname = {}", literal(database));
    let rows = pgwire::query(port, login, "postgres", &sql)
        .await
        .map_err(|e| RequirementError::postgres(port, e))?;
    Ok(!rows.is_empty())
}

/// What the mark on `database` says did not finish (`None` for a database without envctl's mark).
pub async fn unfinished(
    port: u16,
    login: Login<'_>,
    database: &str,
) -> Result<Option<Unfinished>, RequirementError> {
    let sql = format!(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = {}",
        literal(database)
    );
    let rows = pgwire::query(port, login, "postgres", &sql)
        .await
        .map_err(|e| RequirementError::postgres(port, e))?;
    let comment = rows.into_iter().next().and_then(|row| row.into_iter().next().flatten());
    Ok(match comment.as_deref() {
        Some(SEED_PENDING) => Some(Unfinished::Seed),
        Some(COPY_PENDING) => Some(Unfinished::Copy),
        _ => None,
    })
}

/// Marks `database` as unfinished (`Some`) or finished (`None`, removing the mark).
pub async fn mark(
    port: u16,
    login: Login<'_>,
    database: &str,
    what: Option<Unfinished>,
) -> Result<(), RequirementError> {
    let value = what.map_or_else(|| "NULL".to_owned(), |w| literal(w.comment()));
    let sql = format!("COMMENT ON DATABASE {} IS {value}", ident(database));
    pgwire::query(port, login, "postgres", &sql)
        .await
        .map(|_| ())
        .map_err(|e| RequirementError::postgres(port, e))
}

/// Creates `database` empty.
pub async fn create_empty(port: u16, login: Login<'_>, database: &str) -> Result<(), RequirementError> {
    pgwire::query(port, login, "postgres", &format!("CREATE DATABASE {}", ident(database)))
        .await
        .map(|_| ())
        .map_err(|e| RequirementError::postgres(port, e))
}

/// Copies database `from` to a new database `to` in the cluster on `job.port`: by `CREATE DATABASE … TEMPLATE`
/// (a file copy, the fastest way) when `from` has no other sessions, else — `from` is in use, by a running
/// service say — with `pg_dump` and `pg_restore` (directory format, a few jobs), which read `from` without
/// disturbing its sessions. A failed copy leaves no `to` behind; a copy cut short leaves it marked, and the next
/// start makes it again.
pub async fn copy_database(job: &CopyJob<'_>, from: &str, to: &str) -> Result<CopyReport, RequirementError> {
    let began = std::time::Instant::now();
    if clone_from_template(job.port, job.login(), from, to).await? {
        return Ok(CopyReport { how: Created::Cloned, elapsed: began.elapsed() });
    }
    if let Err(e) = dump_and_restore(job, from, to).await {
        let _ = drop_database(job.port, job.login(), to).await;
        return Err(e);
    }
    Ok(CopyReport { how: Created::CopiedByDump, elapsed: began.elapsed() })
}

/// `CREATE DATABASE to TEMPLATE from` once `from` has no other sessions; `false` when it stays in use.
async fn clone_from_template(
    port: u16,
    login: Login<'_>,
    from: &str,
    to: &str,
) -> Result<bool, RequirementError> {
    let mut pauses = BUSY_PAUSES_MS.iter();
    while sessions_on(port, login, from).await? > 0 {
        match pauses.next() {
            Some(ms) => tokio::time::sleep(std::time::Duration::from_millis(*ms)).await,
            None => return Ok(false),
        }
    }
    // FILE_COPY (Postgres 15+) copies a small database's files directly, much faster than logging every
    // block; older servers do not know the option and get the plain statement.
    let plain = format!("CREATE DATABASE {} TEMPLATE {}", ident(to), ident(from));
    let mut sql = format!("{plain} STRATEGY = FILE_COPY");
    loop {
        match pgwire::query(port, login, "postgres", &sql).await {
            Ok(_) => return Ok(true),
            Err(e) if matches!(e.code(), Some("42601" | "42704")) && sql != plain => sql.clone_from(&plain),
            // A session opened on `from` between the look and the statement.
            Err(e) if e.code() == Some("55006") => return Ok(false),
            Err(e) => return Err(RequirementError::postgres(port, e)),
        }
    }
}

/// How many sessions other than envctl's own are connected to `database` (autovacuum, which `CREATE DATABASE`
/// ends by itself, aside).
async fn sessions_on(port: u16, login: Login<'_>, database: &str) -> Result<u64, RequirementError> {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid() \
         AND backend_type <> 'autovacuum worker'",
        literal(database)
    );
    let rows = pgwire::query(port, login, "postgres", &sql)
        .await
        .map_err(|e| RequirementError::postgres(port, e))?;
    Ok(rows.first().and_then(|r| r.first()).cloned().flatten().and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// Creates `to` empty and fills it from a directory-format dump of `from`, marked unfinished until done.
async fn dump_and_restore(job: &CopyJob<'_>, from: &str, to: &str) -> Result<(), RequirementError> {
    create_empty(job.port, job.login(), to).await?;
    mark(job.port, job.login(), to, Some(Unfinished::Copy)).await?;
    crate::state::create_private_dir_all(job.scratch)
        .map_err(|e| RequirementError::io("create", job.scratch, &e))?;
    let dump_dir = job.scratch.join(format!("{to}.{}.dump", std::process::id()));
    let _ = std::fs::remove_dir_all(&dump_dir);
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get().min(4)).to_string();
    // The dump lives for seconds on the same disk: compressing it would only cost CPU. A table that a session of
    // main's holds locked (a migration half-way) fails the copy after a while instead of hanging the start.
    let mut dump = vec!["--format=directory".to_owned(), "--compress=0".into(), format!("--jobs={jobs}")];
    dump.push(format!("--lock-wait-timeout={DUMP_LOCK_WAIT}"));
    dump.extend([format!("--file={}", dump_dir.display()), format!("--dbname={from}")]);
    let restore = vec![
        format!("--jobs={jobs}"),
        "--no-owner".into(),
        format!("--dbname={to}"),
        dump_dir.display().to_string(),
    ];
    let result = async {
        run_tool(job, "pg_dump", &dump, from, to).await?;
        run_tool(job, "pg_restore", &restore, from, to).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&dump_dir);
    result?;
    mark(job.port, job.login(), to, None).await
}

/// Runs `pg_dump` or `pg_restore` of `job.bin_dir` against the cluster over TCP; a failure names the copy, the
/// step and the last lines the tool wrote.
async fn run_tool(
    job: &CopyJob<'_>,
    tool: &'static str,
    args: &[String],
    from: &str,
    to: &str,
) -> Result<(), RequirementError> {
    let program = job.bin_dir.join(tool);
    let failed =
        |detail: String| RequirementError::Copy { from: from.into(), to: to.into(), step: tool, detail };
    if !program.is_file() {
        return Err(failed(format!(
            "{} is not installed (it comes with postgres's client tools: `apt-get install postgresql-client`)",
            program.display()
        )));
    }
    let mut command = tokio::process::Command::new(&program);
    command
        .args([
            "--host",
            super::HOST,
            "--port",
            &job.port.to_string(),
            "--username",
            super::PG_USER,
            "--no-password",
        ])
        .args(args)
        .env_clear()
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", "envctl")
        // The restore's index builds get room; its commits need not wait for the disk (fsync is off anyway).
        .env("PGOPTIONS", "-c maintenance_work_mem=256MB -c synchronous_commit=off")
        .current_dir(job.scratch)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(password) = job.password {
        command.env("PGPASSWORD", password);
    }
    let output =
        command.output().await.map_err(|e| failed(format!("cannot run {}: {e}", program.display())))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    Err(failed(format!("{} ({})", tail.trim(), output.status)))
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Drops `database` (after ending its sessions).
pub async fn drop_database(port: u16, login: Login<'_>, database: &str) -> Result<(), RequirementError> {
    pgwire::query(
        port,
        login,
        "postgres",
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database)),
    )
    .await
    .map(|_| ())
    .map_err(|e| RequirementError::postgres(port, e.to_string()))
}

/// A seed to run into a new database.
#[derive(Debug, Clone, Copy)]
pub struct SeedRun<'a> {
    /// The cluster's port.
    pub port: u16,
    /// The database.
    pub database: &'a str,
    /// The requirement it belongs to (for messages naming its keys).
    pub requirement: &'a str,
    /// An `.sql` file (relative to `cwd`) or a shell command line, placeholders filled in.
    pub seed: &'a str,
    /// The target's checkout, where it runs.
    pub cwd: &'a Path,
    /// The whole environment a seed command gets.
    pub env: &'a std::collections::BTreeMap<String, String>,
    /// Where its output goes.
    pub log_path: &'a Path,
    /// How long it may run.
    pub timeout: std::time::Duration,
    /// The cluster's password.
    pub password: Option<&'a str>,
}

/// Runs a seed: an `.sql` file's statements, or a shell command in its own process group with its output in
/// `log_path`; past `timeout` it is stopped (its whole group) and fails.
pub async fn seed(run: &SeedRun<'_>) -> Result<(), RequirementError> {
    let file = run.cwd.join(run.seed);
    let is_sql = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("sql"));
    let work =
        async { if is_sql && file.is_file() { seed_sql(run, &file).await } else { seed_command(run).await } };
    match tokio::time::timeout(run.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(RequirementError::SeedTimedOut {
            database: run.database.to_owned(),
            requirement: run.requirement.to_owned(),
            secs: run.timeout.as_secs(),
        }),
    }
}

async fn seed_sql(run: &SeedRun<'_>, file: &Path) -> Result<(), RequirementError> {
    let sql = std::fs::read_to_string(file).map_err(|e| RequirementError::io("read", file, &e))?;
    pgwire::query(run.port, Login::new(super::PG_USER, run.password), run.database, &sql)
        .await
        .map(|_| ())
        .map_err(|e| seed_failed(run, e.to_string()))
}

fn seed_failed(run: &SeedRun<'_>, detail: String) -> RequirementError {
    RequirementError::Seed { seed: run.seed.to_owned(), database: run.database.to_owned(), detail }
}

/// The seed as `/bin/sh -c`, output appended to its log; dropped (on a timeout) it kills its process group.
async fn seed_command(run: &SeedRun<'_>) -> Result<(), RequirementError> {
    let log = crate::state::open_private_append(run.log_path)
        .map_err(|e| RequirementError::io("open", run.log_path, &e))?;
    let log_err = log.try_clone().map_err(|e| RequirementError::io("open", run.log_path, &e))?;
    let child = tokio::process::Command::new("/bin/sh")
        .args(["-c", run.seed])
        .current_dir(run.cwd)
        .env_clear()
        .envs(run.env)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|e| seed_failed(run, format!("cannot run /bin/sh in {}: {e}", run.cwd.display())))?;
    let group = GroupGuard::of(&child);
    let output = child.wait_with_output().await.map_err(|e| seed_failed(run, e.to_string()))?;
    drop(group);
    if output.status.success() {
        Ok(())
    } else {
        let how = output
            .status
            .code()
            .map_or_else(|| "was killed by a signal".to_owned(), |c| format!("exited with code {c}"));
        Err(seed_failed(run, how))
    }
}

/// Kills what is left of a seed's process group when dropped: after it exits (something it left in the
/// background) or when its wait is abandoned (a timeout).
struct GroupGuard {
    leader: u32,
    started: u64,
}

impl GroupGuard {
    fn of(child: &tokio::process::Child) -> Self {
        let leader = child.id().unwrap_or_default();
        Self { leader, started: crate::supervisor::proc_info::start_time(leader).unwrap_or_default() }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        use crate::supervisor::{proc_info, signal};
        if self.leader == 0 {
            return;
        }
        if proc_info::start_time(self.leader) == Some(self.started) {
            signal::signal_all(self.leader, self.started, &[], nix::sys::signal::Signal::SIGKILL);
        }
        signal::kill_rest_of_group(self.leader);
    }
}
