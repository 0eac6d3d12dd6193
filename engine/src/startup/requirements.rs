//! The requirements phase of a start, in the host: prepare each server's data (a Postgres cluster copied from the
//! machine's template), start or reuse it, wait for its built-in probe, then create each target's database — a
//! worktree's as a copy of main's — and seed the ones created empty.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envctl_contracts::config::{Adapter, Isolation};
use envctl_contracts::control::{Progress, Reply, StartFailure};
use envctl_contracts::startup::{RequirementPlan, StartupPlan, TargetPlan};
use envctl_contracts::state::ProcessKind;
use tokio::sync::mpsc;

use super::layers::{Restart, TargetResult, run_target};
use crate::config::Settings;
use crate::host::{Host, Key};
use crate::requirements::{self, PG_USER, RequirementError, postgres};
use crate::supervisor::logs;
use crate::supervisor::service::ServiceSpec;

/// Phrases in a server's log that mean its port was taken between planning and binding.
const BIND_CONFLICT: &[&str] =
    &["Address already in use", "could not bind", "Could not create server TCP listening socket"];

/// Whether a failure is a port taken under the server's feet (the start retries on another port).
pub fn is_bind_conflict(failure: &StartFailure) -> bool {
    failure.log_tail.iter().any(|line| BIND_CONFLICT.iter().any(|p| line.contains(p)))
}

fn failure(owner: &str, name: &str, reason: String, log_path: Option<PathBuf>) -> StartFailure {
    StartFailure {
        target: owner.to_owned(),
        service: name.to_owned(),
        reason,
        log_tail: log_path.as_ref().map(|p| logs::tail(p, 20)).unwrap_or_default(),
        log_path: log_path.map(|p| p.display().to_string()),
    }
}

/// Starts (or reuses) every requirement `plan` needs and prepares each target's database.
pub async fn run(
    host: &Arc<Host>,
    settings: &Settings,
    plan: &StartupPlan,
    base_env: &BTreeMap<String, String>,
    tx: &mpsc::Sender<Reply>,
    began: Instant,
) -> TargetResult {
    let run_id = host.run_id();
    let mut servers: BTreeMap<Key, &RequirementPlan> = BTreeMap::new();
    let mut users: BTreeMap<String, BTreeSet<Key>> = BTreeMap::new();
    for target in &plan.targets {
        for req in &target.requirements {
            let key = (req.server_owner.clone(), req.name.clone());
            users.entry(target.name.clone()).or_default().insert(key.clone());
            servers.entry(key).or_insert(req);
        }
    }
    host.share_servers(users);
    let mut specs = Vec::new();
    for ((owner, name), req) in &servers {
        let log_path = logs::log_path(&host.paths().scope_dir, &run_id, owner, name);
        if let Err(why) = prepare(settings, req).await {
            let reason = format!("{why} (data directory {}; log {})", req.data_dir, log_path.display());
            return TargetResult {
                failure: Some(failure(owner, name, reason, None)),
                ..TargetResult::default()
            };
        }
        specs.push(ServiceSpec {
            kind: ProcessKind::Requirement,
            target: owner.clone(),
            log_path,
            stop_grace: Duration::from_secs(req.process.stop_grace_secs),
            base_env: base_env.clone(),
            plan: req.process.clone(),
        });
    }
    let mut result = run_target(host, specs, &Restart::Nothing, tx, began).await;
    if result.failure.is_some() {
        return result;
    }
    match databases(host, settings, plan, &servers, base_env, (tx, began)).await {
        Ok(notes) => result.notes = notes,
        Err(f) => result.failure = Some(f),
    }
    result
}

/// Makes the server's data directory ready.
async fn prepare(settings: &Settings, req: &RequirementPlan) -> Result<(), RequirementError> {
    let data_dir = PathBuf::from(&req.data_dir);
    let paths = settings.paths.clone();
    let postgres_bin = req.binaries.iter().find(|b| b.name == "postgres").and_then(|b| b.path.clone());
    let adapter = req.adapter;
    let password = req
        .process
        .env
        .get(requirements::REDIS_AUTH_VAR)
        .or_else(|| req.process.env.get(requirements::PG_AUTH_VAR))
        .cloned();
    tokio::task::spawn_blocking(move || match adapter {
        Adapter::Postgres => {
            let bin = postgres_bin.map(PathBuf::from).ok_or_else(|| RequirementError::Missing {
                binary: "postgres".into(),
                package: "postgresql".into(),
            })?;
            let bin_dir = bin.parent().map(PathBuf::from).unwrap_or_default();
            let run_as = postgres::run_as()?;
            let began = Instant::now();
            let created = postgres::prepare_cluster(&paths, &bin_dir, &data_dir, run_as.as_ref())?;
            if created {
                tracing::info!(data_dir = %data_dir.display(), elapsed_ms = began.elapsed().as_millis(), "postgres cluster created");
            }
            match password.as_deref() {
                Some(password) => postgres::require_password(&bin_dir, &data_dir, run_as.as_ref(), password),
                None => Ok(()),
            }
        }
        Adapter::Redis => {
            crate::state::create_private_dir_all(&data_dir).map_err(|e| RequirementError::io("create", &data_dir, &e))?;
            requirements::redis::write_config(&data_dir, password.as_deref())
                .map_err(|e| RequirementError::io("write the config file of", &data_dir, &e))
        }
        Adapter::Command => {
            crate::state::create_private_dir_all(&data_dir).map_err(|e| RequirementError::io("create", &data_dir, &e))
        }
    })
    .await
    .unwrap_or_else(|e| Err(RequirementError::Setup { program: "envctl".into(), dir: PathBuf::new(), detail: e.to_string() }))
}

/// Passes each line appended to `log` to `line`, looking every 200 ms, until `done` (then once more).
async fn follow(log: PathBuf, done: tokio_util::sync::CancellationToken, mut line: impl FnMut(String)) {
    let mut offset = 0u64;
    let mut partial = String::new();
    loop {
        let finished = tokio::select! {
            () = done.cancelled() => true,
            () = tokio::time::sleep(Duration::from_millis(200)) => false,
        };
        if let Ok(new) = read_from(&log, offset) {
            offset += new.len() as u64;
            partial.push_str(&String::from_utf8_lossy(&new));
            while let Some(end) = partial.find('\n') {
                line(partial[..end].to_owned());
                partial.drain(..=end);
            }
        }
        if finished {
            if !partial.is_empty() {
                line(std::mem::take(&mut partial));
            }
            return;
        }
    }
}

/// What `path` holds past `offset`.
fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Seek as _};
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut new = Vec::new();
    file.read_to_end(&mut new)?;
    Ok(new)
}

/// Creates each target's Postgres database (main's first; a worktree's as a copy of main's) and seeds new ones;
/// returns a note for each database it made, saying how and how long it took.
async fn databases(
    host: &Host,
    settings: &Settings,
    plan: &StartupPlan,
    servers: &BTreeMap<Key, &RequirementPlan>,
    base_env: &BTreeMap<String, String>,
    progress: (&mpsc::Sender<Reply>, Instant),
) -> Result<Vec<String>, StartFailure> {
    let mut notes = Vec::new();
    let mut targets: Vec<_> = plan.targets.iter().collect();
    targets.sort_by_key(|t| t.name != "main");
    for target in targets {
        for req in target.requirements.iter().filter(|r| r.adapter == Adapter::Postgres) {
            let Some(server) = servers.get(&(req.server_owner.clone(), req.name.clone())) else { continue };
            let mut db = Database::new(host, settings, target, req, server, base_env);
            db.progress = Some(progress);
            notes.extend(db.ensure().await?);
        }
    }
    Ok(notes)
}

/// One target's database of one Postgres requirement, and everything needed to make it.
struct Database<'a> {
    settings: &'a Settings,
    target: &'a TargetPlan,
    req: &'a RequirementPlan,
    port: u16,
    bin_dir: PathBuf,
    name: String,
    /// The database it is copied from (main's), when it is a worktree's in a shared cluster.
    source: Option<String>,
    seed_log: PathBuf,
    base_env: &'a BTreeMap<String, String>,
    /// The cluster's password (its URL carries it).
    password: Option<String>,
    /// Where a seed's output goes while it runs, and when the request began.
    progress: Option<(&'a mpsc::Sender<Reply>, Instant)>,
}

impl<'a> Database<'a> {
    fn new(
        host: &Host,
        settings: &'a Settings,
        target: &'a TargetPlan,
        req: &'a RequirementPlan,
        server: &RequirementPlan,
        base_env: &'a BTreeMap<String, String>,
    ) -> Self {
        let project = &settings.config.project.name;
        let postgres = server.binaries.iter().find(|b| b.name == "postgres").and_then(|b| b.path.clone());
        // The real directory of `postgres` (a `/usr/local/bin/postgres` symlink leads to Debian's), which has
        // the `pg_dump` and `pg_restore` of the same version.
        let real = postgres.map(|p| std::fs::canonicalize(&p).unwrap_or_else(|_| PathBuf::from(p)));
        let bin_dir = real.as_deref().and_then(Path::parent).map(Path::to_path_buf);
        let seed_name = format!("{}-seed", req.name);
        Self {
            settings,
            target,
            req,
            port: server.port.assigned,
            bin_dir: bin_dir.unwrap_or_default(),
            name: requirements::database_name(project, &target.name),
            source: (req.isolation == Isolation::Database && target.name != "main")
                .then(|| requirements::database_name(project, "main")),
            seed_log: logs::log_path(&host.paths().scope_dir, &host.run_id(), &target.name, &seed_name),
            base_env,
            password: requirements::url_password(&req.url),
            progress: None,
        }
    }

    fn login(&self) -> requirements::pgwire::Login<'_> {
        requirements::pgwire::Login::new(PG_USER, self.password.as_deref())
    }

    fn failed(&self, reason: String, log_path: Option<PathBuf>) -> StartFailure {
        failure(&self.target.name, &self.req.name, reason, log_path)
    }

    fn pg(&self, what: &str) -> impl Fn(RequirementError) -> StartFailure + '_ {
        let what = what.to_owned();
        move |e| self.failed(format!("cannot {what} database {}: {e}", self.name), None)
    }

    /// Makes sure the database exists and is finished: one whose making was cut short (its seed failed, its copy
    /// was interrupted) is dropped and made again.
    async fn ensure(&self) -> Result<Vec<String>, StartFailure> {
        let mut notes = Vec::new();
        let mut redo = None;
        if postgres::database_exists(self.port, self.login(), &self.name).await.map_err(self.pg("look up"))? {
            redo = postgres::unfinished(self.port, self.login(), &self.name)
                .await
                .map_err(self.pg("read the mark of"))?;
            if redo.is_none() {
                return Ok(notes);
            }
            postgres::drop_database(self.port, self.login(), &self.name)
                .await
                .map_err(self.pg("drop the unfinished"))?;
        }
        let began = Instant::now();
        let (how, seeded) = self.make().await?;
        let took = seconds(began.elapsed());
        let target = &self.target.name;
        if let Some(what) = redo {
            notes.push(format!("{target}: {}", self.redo_note(what, how, seeded)));
        }
        notes.push(format!("{target}: database {} {}", self.name, self.how_note(how, seeded, &took)));
        Ok(notes)
    }

    /// Creates the database: a copy of the source when there is one (and it exists, finished), else empty and
    /// seeded. Returns how, and whether a seed ran.
    async fn make(&self) -> Result<(postgres::Created, bool), StartFailure> {
        if let Some(source) = &self.source
            && postgres::database_exists(self.port, self.login(), source).await.map_err(self.pg("look up"))?
            && postgres::unfinished(self.port, self.login(), source)
                .await
                .map_err(self.pg("look up"))?
                .is_none()
        {
            let scratch = self.settings.paths.scope_dir.join("data").join("postgres-copies");
            let job = postgres::CopyJob {
                port: self.port,
                bin_dir: &self.bin_dir,
                scratch: &scratch,
                password: self.password.as_deref(),
            };
            let report = postgres::copy_database(&job, source, &self.name)
                .await
                .map_err(|e| self.failed(e.to_string(), None))?;
            return Ok((report.how, false));
        }
        postgres::create_empty(self.port, self.login(), &self.name).await.map_err(self.pg("create"))?;
        let Some(seed) = &self.req.seed else { return Ok((postgres::Created::Fresh, false)) };
        postgres::mark(self.port, self.login(), &self.name, Some(postgres::Unfinished::Seed))
            .await
            .map_err(self.pg("mark"))?;
        self.seed(seed).await?;
        postgres::mark(self.port, self.login(), &self.name, None).await.map_err(self.pg("unmark"))?;
        Ok((postgres::Created::Fresh, true))
    }

    /// Runs the seed with the target's requirement variables and envctl's markers, in the target's checkout.
    async fn seed(&self, seed: &str) -> Result<(), StartFailure> {
        let mut env = self.base_env.clone();
        env.extend(self.target.requirements.iter().flat_map(|r| r.env.clone()));
        env.insert("ENVCTL_SCOPE".into(), crate::plan::scope_of(&self.settings.paths));
        env.insert("ENVCTL_TARGET".into(), self.target.name.clone());
        env.insert("ENVCTL_SERVICE".into(), format!("{}-seed", self.req.name));
        env.insert(crate::supervisor::proc_info::ROLE_VAR.into(), "seed".into());
        let timeout = self
            .settings
            .config
            .requirements
            .get(&self.req.name)
            .map_or(envctl_contracts::config::DEFAULT_SEED_TIMEOUT_SECS, |r| r.seed_timeout_secs);
        let run = postgres::SeedRun {
            port: self.port,
            database: &self.name,
            requirement: &self.req.name,
            seed,
            cwd: Path::new(&self.target.root),
            env: &env,
            log_path: &self.seed_log,
            timeout: Duration::from_secs(timeout),
            password: self.password.as_deref(),
        };
        let done = tokio_util::sync::CancellationToken::new();
        let follower = self.progress.map(|(tx, began)| {
            let (tx, log, done) = (tx.clone(), self.seed_log.clone(), done.clone());
            let (target, service) = (self.target.name.clone(), format!("{}-seed", self.req.name));
            tokio::spawn(follow(log, done, move |line| {
                let progress = Progress {
                    target: target.clone(),
                    service: service.clone(),
                    status: envctl_contracts::state::ServiceStatus::Starting,
                    detail: String::new(),
                    elapsed_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
                    output: Some(line),
                };
                let _ = tx.try_send(Reply::Progress(progress));
            }))
        });
        let seeded = postgres::seed(&run).await;
        done.cancel();
        if let Some(follower) = follower {
            let _ = follower.await;
        }
        seeded.map_err(|e| {
            let log = self.seed_log.is_file().then(|| self.seed_log.clone());
            self.failed(e.to_string(), log)
        })
    }

    fn how_note(&self, how: postgres::Created, seeded: bool, took: &str) -> String {
        let source = self.source.as_deref().unwrap_or("main");
        match how {
            postgres::Created::Cloned => format!("cloned from {source} (template) in {took}"),
            postgres::Created::CopiedByDump => {
                format!("copied from {source} with pg_dump/pg_restore in {took} (main was in use)")
            }
            postgres::Created::Fresh if seeded => format!("created empty and seeded in {took}"),
            postgres::Created::Fresh | postgres::Created::Existing => format!("created empty in {took}"),
        }
    }

    fn redo_note(&self, what: postgres::Unfinished, how: postgres::Created, seeded: bool) -> String {
        let again = match (how, seeded) {
            (postgres::Created::Fresh, true) => "recreated it and seeded again",
            (postgres::Created::Cloned | postgres::Created::CopiedByDump, _) => "copied it again",
            _ => "recreated it",
        };
        let last = match what {
            postgres::Unfinished::Seed => "its last seed",
            postgres::Unfinished::Copy => "its last copy",
        };
        format!("database {}: {last} did not finish; {again}", self.name)
    }
}

/// A duration as envctl's notes give it: `1.3 s`.
fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
