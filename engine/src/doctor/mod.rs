//! `envctl doctor`: readiness gates around the environment and the job runtime. Every check belongs to one gate
//! and ends `pass`, `warn`, `fail` or `skip` with a one-line finding, its evidence and a fix; the checks are one
//! flat registry ([`CHECKS`]), one file per gate. [`run`] runs the selected gates in order and builds the
//! [`ReadinessReport`]; [`fix`] applies the safe repairs (it never signals a process).

mod config;
mod contracts;
mod fix;
mod job_runtime;
mod prerequisites;
mod requirements;
mod services;
mod state_truth;

pub use contracts::validate_file as validate_artifact;
pub use envctl_contracts::doctor::Outcome;
pub use fix::fix;

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::doctor::{CheckReport, FixReport, GateReport, ReadinessReport};
use envctl_contracts::state::RunState;

use crate::config::{Paths, Settings};
use crate::jobs::JobStore;
use crate::ports::Ledger;
use crate::state::StateRepository;
use crate::targets::Target;

/// A gate: a group of checks that pass or fail together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The config file parses and validates.
    Config,
    /// git, the requirements' binaries, writable state directories.
    Prerequisites,
    /// The saved state against `/proc`, the host, leases, sockets, artifacts.
    StateTruth,
    /// Each requirement server answers a real query.
    Requirements,
    /// The health verdict, crash loops, recent failures.
    Services,
    /// The job store, workers, orphans, the queue, the canary.
    JobRuntime,
    /// Every artifact validates against its embedded schema.
    Contracts,
}

impl Gate {
    /// Every gate, in the order they run.
    pub const ALL: [Self; 7] = [
        Self::Config,
        Self::Prerequisites,
        Self::StateTruth,
        Self::Requirements,
        Self::Services,
        Self::JobRuntime,
        Self::Contracts,
    ];

    /// Its name (part of the report's contract and of `--gate`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Prerequisites => "prerequisites",
            Self::StateTruth => "state_truth",
            Self::Requirements => "requirements",
            Self::Services => "services",
            Self::JobRuntime => "job_runtime",
            Self::Contracts => "contracts",
        }
    }

    /// The gate called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// How it ended.
    pub outcome: Outcome,
    /// One line.
    pub finding: String,
    /// Path, pid, port, job id, version… by name.
    pub evidence: BTreeMap<String, String>,
    /// What to do, when it did not pass.
    pub hint: Option<String>,
}

impl Check {
    fn new(outcome: Outcome, finding: impl Into<String>) -> Self {
        Self { outcome, finding: finding.into(), evidence: BTreeMap::new(), hint: None }
    }

    /// It holds.
    pub fn pass(finding: impl Into<String>) -> Self {
        Self::new(Outcome::Pass, finding)
    }

    /// It holds, but `hint` should be done.
    pub fn warn(finding: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(Outcome::Warn, finding).hint(hint)
    }

    /// It does not hold; `hint` fixes it.
    pub fn fail(finding: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::new(Outcome::Fail, finding).hint(hint)
    }

    /// Nothing to check.
    pub fn skip(finding: impl Into<String>) -> Self {
        Self::new(Outcome::Skip, finding)
    }

    /// With a hint.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// With one more piece of evidence.
    #[must_use]
    #[allow(clippy::needless_pass_by_value)] // takes `x.display()` and numbers alike
    pub fn with(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.evidence.insert(key.into(), value.to_string());
        self
    }
}

/// One entry of the registry: its gate, its name, what it runs.
pub type Entry = (Gate, &'static str, fn(&Ctx<'_>) -> Check);

/// Every check, in the order they run: one flat list.
pub const CHECKS: &[Entry] = &[
    (Gate::Config, "config_file", config::config_file),
    (Gate::Config, "legacy_keys", config::legacy_keys),
    (Gate::Prerequisites, "git", prerequisites::git),
    (Gate::Prerequisites, "requirement_binaries", prerequisites::requirement_binaries),
    (Gate::Prerequisites, "scope_dir", prerequisites::scope_dir),
    (Gate::Prerequisites, "lease_dir", prerequisites::lease_dir),
    (Gate::StateTruth, "processes", state_truth::processes),
    (Gate::StateTruth, "listeners", state_truth::listeners),
    (Gate::StateTruth, "host", state_truth::host),
    (Gate::StateTruth, "stale_leases", state_truth::stale_leases),
    (Gate::StateTruth, "stale_sockets", state_truth::stale_sockets),
    (Gate::StateTruth, "artifacts", state_truth::artifacts),
    (Gate::Requirements, "probes", requirements::probes),
    (Gate::Requirements, "job_server", requirements::job_server),
    (Gate::Services, "readiness", services::readiness),
    (Gate::Services, "crash_loops", services::crash_loops),
    (Gate::Services, "recent_failures", services::recent_failures),
    (Gate::JobRuntime, "store", job_runtime::store),
    (Gate::JobRuntime, "schema", job_runtime::schema),
    (Gate::JobRuntime, "workers", job_runtime::workers),
    (Gate::JobRuntime, "orphans", job_runtime::orphans),
    (Gate::JobRuntime, "dead_jobs", job_runtime::dead_jobs),
    (Gate::JobRuntime, "queue_age", job_runtime::queue_age),
    (Gate::JobRuntime, "canary", job_runtime::canary),
    (Gate::Contracts, "artifacts", contracts::artifacts),
];

/// What a doctor run is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Warnings fail too.
    pub strict: bool,
    /// Enqueue the canary job when a worker should be running.
    pub canary: bool,
    /// Only these gates (all when empty).
    pub gates: Vec<Gate>,
    /// How long the canary may take.
    pub canary_timeout: Duration,
}

/// What the checks look at, built by the command from the composition root.
pub struct Ctx<'a> {
    /// The settings, or the config error's text.
    pub settings: Result<&'a Settings, String>,
    /// The repository's paths, when found (also with a broken config).
    pub paths: Option<&'a Paths>,
    /// The selected targets.
    pub targets: Vec<&'a Target>,
    /// `PATH` as the command sees it.
    pub path_var: Option<String>,
    /// The scope's artifacts.
    pub state: Option<StateRepository>,
    /// The machine-wide port leases.
    pub ledger: Option<Ledger>,
    /// Opens the job store (once).
    pub open_store: &'a dyn Fn() -> Result<Arc<dyn JobStore>, String>,
    /// The command's tokio runtime, for probes and the canary.
    pub tokio: &'a tokio::runtime::Runtime,
    /// The run's options.
    pub options: Options,
    /// Whether Ctrl-C was pressed (asked between checks and while the canary waits).
    pub interrupted: &'a dyn Fn() -> bool,
    store: OnceCell<Result<Arc<dyn JobStore>, String>>,
    run_state: OnceCell<Result<Option<RunState>, String>>,
    truths: OnceCell<Vec<crate::supervisor::truth::Truth>>,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("paths", &self.paths)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    /// A context over what the command gathered.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Result<&'a Settings, String>,
        paths: Option<&'a Paths>,
        targets: Vec<&'a Target>,
        path_var: Option<String>,
        state: Option<StateRepository>,
        ledger: Option<Ledger>,
        open_store: &'a dyn Fn() -> Result<Arc<dyn JobStore>, String>,
        tokio: &'a tokio::runtime::Runtime,
        options: Options,
        interrupted: &'a dyn Fn() -> bool,
    ) -> Self {
        Self {
            settings,
            paths,
            targets,
            path_var,
            state,
            ledger,
            open_store,
            tokio,
            options,
            interrupted,
            store: OnceCell::new(),
            run_state: OnceCell::new(),
            truths: OnceCell::new(),
        }
    }

    /// The same inputs with nothing read yet (for the run after `--fix`; the open store is kept).
    #[must_use]
    pub fn again(&self) -> Ctx<'a> {
        let fresh = Ctx::new(
            self.settings.clone(),
            self.paths,
            self.targets.clone(),
            self.path_var.clone(),
            self.state.clone(),
            self.ledger.clone(),
            self.open_store,
            self.tokio,
            self.options.clone(),
            self.interrupted,
        );
        if let Some(Ok(store)) = self.store.get() {
            let _ = fresh.store.set(Ok(Arc::clone(store)));
        }
        fresh
    }

    /// The job store, opened on first use.
    pub fn store(&self) -> Result<&Arc<dyn JobStore>, &str> {
        self.store.get_or_init(|| (self.open_store)()).as_ref().map_err(String::as_str)
    }

    /// The saved run state, read once (`Err`: its path and why it cannot be read).
    pub fn run_state(&self) -> Result<Option<&RunState>, &str> {
        let read = || match &self.state {
            Some(state) => state.run_state().map_err(|e| e.to_string()),
            None => Ok(None),
        };
        self.run_state.get_or_init(read).as_ref().map(Option::as_ref).map_err(String::as_str)
    }

    /// The recorded processes (services and requirement servers) of the selected targets, each with what
    /// `/proc` says of it now (checked once per run).
    pub fn recorded(
        &self,
    ) -> Vec<(&envctl_contracts::state::ServiceRecord, crate::supervisor::truth::Truth)> {
        let names = self.target_names();
        let Ok(Some(state)) = self.run_state() else { return Vec::new() };
        let records: Vec<_> = state.services.iter().filter(|r| names.contains(&r.target.as_str())).collect();
        let truths = self.truths.get_or_init(|| {
            let owned: Vec<_> = records.iter().map(|r| (*r).clone()).collect();
            crate::supervisor::truth::check_all(&owned)
        });
        records.into_iter().zip(truths.iter().copied()).collect()
    }

    /// The names of the selected targets.
    pub fn target_names(&self) -> Vec<&str> {
        self.targets.iter().map(|t| t.name.as_str()).collect()
    }

    /// The recorded services (not requirements) of the selected targets.
    pub fn service_records(&self) -> Vec<&envctl_contracts::state::ServiceRecord> {
        let names = self.target_names();
        let Ok(Some(state)) = self.run_state() else { return Vec::new() };
        state
            .services
            .iter()
            .filter(|r| {
                r.kind == envctl_contracts::state::ProcessKind::Service && names.contains(&r.target.as_str())
            })
            .collect()
    }

    /// Whether the recorded host runs (same pid and start time).
    pub fn host_alive(&self) -> bool {
        let host = self.run_state().ok().flatten().and_then(|s| s.host);
        crate::supervisor::health::Supervision::of(host) == crate::supervisor::health::Supervision::Host
    }
}

/// Runs the selected gates' checks in order; `interrupted` is asked between checks. A failed config gate skips
/// every later check (they all read the configuration). `None` when interrupted.
pub fn run(ctx: &Ctx<'_>) -> Option<(Vec<GateReport>, Vec<CheckReport>)> {
    let mut checks = Vec::new();
    let mut config_failed = false;
    for (gate, name, check) in CHECKS {
        if !ctx.options.gates.is_empty() && !ctx.options.gates.contains(gate) {
            continue;
        }
        if (ctx.interrupted)() {
            return None;
        }
        let started = Instant::now();
        let found = if config_failed && *gate != Gate::Config {
            Check::skip("skipped: the config gate failed")
        } else {
            check(ctx)
        };
        if (ctx.interrupted)() {
            return None;
        }
        if *gate == Gate::Config && found.outcome == Outcome::Fail {
            config_failed = true;
        }
        checks.push(CheckReport {
            gate: gate.name().to_owned(),
            name: (*name).to_owned(),
            outcome: found.outcome,
            finding: found.finding,
            evidence: found.evidence,
            hint: found.hint,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
    }
    let gates = Gate::ALL
        .iter()
        .filter(|g| ctx.options.gates.is_empty() || ctx.options.gates.contains(g))
        .map(|g| GateReport {
            name: g.name().to_owned(),
            outcome: checks
                .iter()
                .filter(|c| c.gate == g.name())
                .map(|c| c.outcome)
                .max()
                .unwrap_or(Outcome::Skip),
        })
        .collect();
    Some((gates, checks))
}

/// The report of one run: ok unless a gate failed (with `strict`, warned).
pub fn report(
    ctx: &Ctx<'_>,
    gates: Vec<GateReport>,
    checks: Vec<CheckReport>,
    fixes: Vec<FixReport>,
    took: Duration,
) -> ReadinessReport {
    let worst = gates.iter().map(|g| g.outcome).max().unwrap_or(Outcome::Skip);
    let ok = match worst {
        Outcome::Fail => false,
        Outcome::Warn => !ctx.options.strict,
        Outcome::Pass | Outcome::Skip => true,
    };
    let verdict = match (ok, worst) {
        (false, _) => "not ready",
        (true, Outcome::Warn) => "ready with warnings",
        (true, _) => "ready",
    };
    ReadinessReport {
        schema_version: SCHEMA_VERSION,
        generated_at: crate::state::now_rfc3339(),
        run_id: ctx.run_state().ok().flatten().map(|s| s.run_id.clone()),
        scope_dir: ctx.paths.map(|p| p.scope_dir.display().to_string()),
        strict: ctx.options.strict,
        ok,
        verdict: verdict.to_owned(),
        gates,
        checks,
        fixes,
        duration_ms: took.as_secs_f64() * 1000.0,
    }
}

/// The skip of a check that needs a configured repository, or `None` when it has one.
fn unconfigured(ctx: &Ctx<'_>) -> Option<Check> {
    match &ctx.settings {
        Ok(s) if s.paths.config_file.is_some() => None,
        _ => Some(Check::skip("no configuration to check against")),
    }
}

/// "a, b and 3 more" of up to four items.
fn listing(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1..=4 => items.join(", "),
        n => format!("{} and {} more", items[..3].join(", "), n - 3),
    }
}
