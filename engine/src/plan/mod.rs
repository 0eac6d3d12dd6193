//! Pure planning, no side effects: each target's ports ([`plan_ports`], read-only against the lease ledger), its
//! requirements and the environment, argv and layer of each service ([`explain`]). `start` carries the plan out;
//! `explain-startup`, `env`, job handlers, the doctor and debug bundles read it.

use std::collections::BTreeMap;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::config::ServiceConfig;
use envctl_contracts::ports::PortPlan;
use envctl_contracts::startup::{RequirementPlan, ServicePlan, StartupPlan, TargetPlan};

use crate::config::{EnvVars, Settings, template};
use crate::ports::{Ledger, PortError, PortRequest, is_free, named_owner, requests, server_owner};
use crate::requirements;
use crate::targets::{Selection, Target, TargetError, Targets};

/// Port plans by (owner target, service or requirement).
#[derive(Debug, Clone, Default)]
pub struct PortTable(BTreeMap<(String, String), PortPlan>);

impl PortTable {
    /// The plan for `service` of `target` (a shared requirement's plan lives under `main`).
    pub fn get(&self, target: &str, service: &str) -> Option<&PortPlan> {
        self.0.get(&(target.to_owned(), service.to_owned()))
    }

    /// Plans of one owner target, by service.
    pub fn of_target(&self, target: &str) -> BTreeMap<String, PortPlan> {
        self.0.iter().filter(|((t, _), _)| t == target).map(|((_, s), p)| (s.clone(), *p)).collect()
    }
}

/// Plans the ports of `targets` against the ledger (read-only).
pub fn plan_ports(settings: &Settings, targets: &[&Target]) -> Result<PortTable, PortError> {
    let requests = requests(settings, targets);
    let plans = Ledger::new(&settings.paths.ledger_dir).plan(&requests, &is_free)?;
    Ok(PortTable::from_plans(requests, plans))
}

impl PortTable {
    /// The table of `requests` and the plans made for them (in the same order).
    pub fn from_plans(requests: Vec<PortRequest>, plans: Vec<PortPlan>) -> Self {
        Self(requests.into_iter().zip(plans).map(|(r, p)| ((r.owner.target, r.owner.service), p)).collect())
    }
}

/// The variables that mark every process envctl starts as this repository's (`ENVCTL_SCOPE`), target's and
/// service's: how a torn state is recovered from `/proc`.
fn marker(settings: &Settings, target: &str, service: &str) -> [(String, String); 3] {
    [
        ("ENVCTL_SCOPE".into(), scope_of(&settings.paths)),
        ("ENVCTL_TARGET".into(), target.to_owned()),
        ("ENVCTL_SERVICE".into(), service.to_owned()),
    ]
}

/// The marks only processes envctl spawns as a service carry. What is handed to a shell or a job (`envctl env`, a
/// service's `test`) goes without them: a process started from such a shell must never be taken for the service.
pub const PROCESS_MARKS: [&str; 2] = ["ENVCTL_SCOPE", "ENVCTL_SERVICE"];

/// `env` without [`PROCESS_MARKS`].
pub fn without_process_marks(mut env: BTreeMap<String, String>) -> BTreeMap<String, String> {
    env.retain(|key, _| !PROCESS_MARKS.contains(&key.as_str()));
    env
}

/// The repository's scope as `ENVCTL_SCOPE` carries it: its scope directory, so two runtime directories of one
/// repository never take each other's processes for their own.
pub fn scope_of(paths: &crate::config::Paths) -> String {
    paths.scope_dir.display().to_string()
}

/// What a target's services can refer to: `{name.attr}` values and per-requirement exports.
struct Context<'a> {
    settings: &'a Settings,
    target: &'a Target,
    ports: &'a PortTable,
    /// What one plan shares across its targets.
    shared: &'a Shared,
}

/// What one plan's targets share: the databases it replaces and the servers' passwords, each read once.
#[derive(Debug, Default)]
struct Shared {
    /// Postgres requirements whose database this plan replaces (a test suite's throwaway copy), by name.
    databases: BTreeMap<String, String>,
    /// Each server's password by (owner, requirement), read from its secrets file the first time it is needed.
    passwords: std::cell::RefCell<BTreeMap<(String, String), Option<String>>>,
    /// Only these services are planned (a start or restart of named ones: a set closed under `depends_on`, so
    /// each keeps its layer); every one when none.
    only: Option<std::collections::BTreeSet<String>>,
}

impl Context<'_> {
    fn requirement_endpoint(&self, name: &str) -> Option<requirements::Endpoint> {
        let req = self
            .settings
            .config
            .requirements
            .get(name)
            .filter(|r| r.enabled && self.target.in_scope(r.targets))?;
        let owner = server_owner(req.isolation, self.target);
        let plan = self.ports.get(owner, name)?;
        let password = self.password(req, owner, name);
        let endpoint = requirements::endpoint(
            req,
            &self.settings.config.project.name,
            self.target,
            plan.assigned,
            password.as_deref(),
        );
        Some(match self.shared.databases.get(name) {
            Some(database) => requirements::with_database(req, endpoint, database),
            None => endpoint,
        })
    }

    /// The password of requirement `name`'s server (made the first time it is asked for).
    fn password(
        &self,
        req: &envctl_contracts::config::RequirementConfig,
        owner: &str,
        name: &str,
    ) -> Option<String> {
        if !requirements::has_password(req.adapter) {
            return None;
        }
        let key = (owner.to_owned(), name.to_owned());
        if let Some(known) = self.shared.passwords.borrow().get(&key) {
            return known.clone();
        }
        let password = requirements::secrets::password(&self.settings.paths.scope_dir, owner, name)
            .map_err(|e| tracing::warn!(error = %e, requirement = name, "cannot keep the server's password"))
            .ok();
        self.shared.passwords.borrow_mut().insert(key, password.clone());
        password
    }

    fn service_port(&self, name: &str) -> Option<u16> {
        self.ports.get(&self.target.name, name).map(|p| p.assigned)
    }

    /// The target whose port table holds `name`'s ports: a requirement's server owner, else this target.
    fn owner_of(&self, name: &str) -> &str {
        match self.settings.config.requirements.get(name) {
            Some(req) => server_owner(req.isolation, self.target),
            None => &self.target.name,
        }
    }

    /// The plans of `name`'s named `ports` as this target reaches them, by port name.
    fn named_plans(&self, name: &str, ports: &BTreeMap<String, u16>) -> BTreeMap<String, PortPlan> {
        let owner = self.owner_of(name);
        ports
            .keys()
            .filter_map(|port| Some((port.clone(), *self.ports.get(owner, &named_owner(name, port))?)))
            .collect()
    }

    fn lookup(&self, service: &str, name: &str, attr: Option<&str>) -> Option<String> {
        if let Some((whose, port)) = template::named_port(service, name, attr) {
            let plan = self.ports.get(self.owner_of(whose), &named_owner(whose, port))?;
            return Some(plan.assigned.to_string());
        }
        match (name, attr) {
            ("port", None) => self.service_port(service).map(|p| p.to_string()),
            ("target", None) => Some(self.target.name.clone()),
            ("root", None) => Some(self.target.root.display().to_string()),
            ("service", None) => Some(service.to_owned()),
            (other, Some(attr)) => {
                if let Some(endpoint) = self.requirement_endpoint(other) {
                    let req = self.settings.config.requirements.get(other)?;
                    return requirements::attribute(req, &endpoint, attr);
                }
                if other == requirements::job_server::NAME && self.service_port(other).is_none() {
                    return job_store_attribute(self.settings, attr);
                }
                let port = self.service_port(other)?;
                match attr {
                    "url" => Some(format!("http://{}:{port}", requirements::HOST)),
                    "port" => Some(port.to_string()),
                    "host" => Some(requirements::HOST.to_owned()),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// `text` filled in by `lookup`, each value one shell word when `for_shell`; `Err` names what nothing fills.
fn fill_in(
    text: &str,
    for_shell: bool,
    lookup: impl Fn(&str, Option<&str>) -> Option<String>,
) -> Result<String, String> {
    if for_shell { template::expand_for_shell(text, lookup) } else { template::expand(text, lookup) }
}

/// Services of a target in start order, each with its dependency layer.
fn layered<'a>(services: &'a BTreeMap<String, &'a ServiceConfig>) -> Vec<(u32, &'a str, &'a ServiceConfig)> {
    fn layer_of(name: &str, services: &BTreeMap<String, &ServiceConfig>, depth: u32) -> u32 {
        let Some(service) = services.get(name).filter(|_| depth < 64) else {
            return 0;
        };
        service
            .depends_on
            .iter()
            .filter(|d| services.contains_key(*d))
            .map(|d| layer_of(d, services, depth + 1) + 1)
            .max()
            .unwrap_or(0)
    }
    let mut out: Vec<_> =
        services.iter().map(|(name, s)| (layer_of(name, services, 0), name.as_str(), *s)).collect();
    out.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    out
}

/// The requirements one target uses, each with the process that runs its server.
/// Binaries found per requirement, looked up once per plan.
type Found = BTreeMap<String, Vec<envctl_contracts::startup::BinaryCheck>>;

fn plan_requirements(
    ctx: &Context<'_>,
    env: &EnvVars,
    found: &mut Found,
    problems: &mut Vec<String>,
) -> Vec<RequirementPlan> {
    let (settings, target, ports) = (ctx.settings, ctx.target, ctx.ports);
    let config = &settings.config;
    let mut requirement_plans = Vec::new();
    for (name, req) in config.requirements.iter().filter(|(_, r)| r.enabled && target.in_scope(r.targets)) {
        let owner = server_owner(req.isolation, target);
        let (Some(plan), Some(endpoint)) = (ports.get(owner, name), ctx.requirement_endpoint(name)) else {
            continue;
        };
        let binaries =
            found.entry(name.clone()).or_insert_with(|| requirements::binaries(req, env.get("PATH"))).clone();
        for missing in binaries.iter().filter(|b| b.path.is_none()) {
            problems.push(format!(
                "{}: requirement `{name}` needs `{}`, which is not installed; install it with `{}`",
                target.name,
                missing.name,
                missing.install_hint.as_deref().unwrap_or_default()
            ));
        }
        let mut exported = requirements::exports(req, &endpoint);
        // Placeholders are filled in as for a service's command and env: `{port}` is the requirement's own.
        let mut fill = |value: &str, what: &str, for_shell: bool| {
            let lookup = |n: &str, a: Option<&str>| match (n, a) {
                ("port", None) => Some(endpoint.port.to_string()),
                _ => ctx.lookup(name, n, a),
            };
            fill_in(value, for_shell, lookup).unwrap_or_else(|missing| {
                problems.push(format!(
                    "{}: requirements.{name}.{what}: {missing} cannot be filled in for this target",
                    target.name
                ));
                value.to_owned()
            })
        };
        let env_filled: BTreeMap<String, String> = req
            .env
            .iter()
            .map(|(key, value)| (key.clone(), fill(value, &format!("env.{key}"), false)))
            .collect();
        exported.extend(env_filled.clone());
        let seed = req.seed.as_ref().map(|s| fill(s, "seed", true));
        let command_line = req.command.as_ref().map(|c| fill(c, "command", true));
        let data_dir = match requirements::data_dir(&settings.paths, req, name, owner) {
            Ok(dir) => dir,
            Err(why) => {
                problems.push(format!("{}: requirement `{name}`: {why}", target.name));
                continue;
            }
        };
        let owner_root =
            if owner == target.name { target.root.clone() } else { settings.paths.repo_root.clone() };
        let command = command_line.map(|c| (c, env_filled, owner_root));
        let named = ctx.named_plans(name, &req.ports);
        let mut process = requirements::process(&requirements::ProcessInput {
            name,
            req,
            data_dir: &data_dir,
            port: *plan,
            ports: &named,
            binaries: &binaries,
            url: &endpoint.url,
            command,
            password: endpoint.password.as_deref(),
        });
        process.env.extend(marker(settings, owner, name));
        requirement_plans.push(RequirementPlan {
            url: endpoint.url.clone(),
            data_dir: data_dir.display().to_string(),
            process,
            name: name.clone(),
            adapter: req.adapter,
            isolation: req.isolation,
            server_owner: owner.to_owned(),
            port: *plan,
            ports: named,
            binaries,
            env: exported,
            seed,
        });
    }
    requirement_plans
}

fn plan_target(
    settings: &Settings,
    target: &Target,
    ports: &PortTable,
    shared: &Shared,
    env: &EnvVars,
    found: &mut Found,
    problems: &mut Vec<String>,
) -> TargetPlan {
    let ctx = Context { settings, target, ports, shared };
    let config = &settings.config;
    let requirement_plans = plan_requirements(&ctx, env, found, problems);
    let services: BTreeMap<String, &ServiceConfig> = config
        .services
        .iter()
        .filter(|(_, s)| s.enabled && target.in_scope(s.targets))
        .filter(|(n, _)| shared.only.as_ref().is_none_or(|only| only.contains(*n)))
        .map(|(n, s)| (n.clone(), s))
        .collect();
    let mut service_plans = Vec::new();
    for (layer, name, service) in layered(&services) {
        let mut env_out = BTreeMap::new();
        for dep in &service.depends_on {
            if let Some(plan) = requirement_plans.iter().find(|r| &r.name == dep) {
                env_out.extend(plan.env.clone());
            } else if !services.contains_key(dep) {
                problems.push(format!(
                    "{}: `{name}` depends on `{dep}`, which does not run for this target",
                    target.name
                ));
            }
        }
        let files = config.project.env_file.iter().chain(&service.env_file);
        let from_files = env_files(settings, target, files, name, problems);
        let port = ports.get(&target.name, name).copied();
        if let Some(plan) = port {
            env_out.insert("PORT".into(), plan.assigned.to_string());
        }
        let named = ctx.named_plans(name, &service.ports);
        for (port_name, plan) in &named {
            env_out.insert(requirements::port_var(port_name), plan.assigned.to_string());
        }
        env_out.extend(marker(settings, &target.name, name));
        let mut fill = |text: &str, what: &str, for_shell: bool| {
            let lookup = |n: &str, a: Option<&str>| ctx.lookup(name, n, a);
            fill_in(text, for_shell, lookup).unwrap_or_else(|missing| {
                problems.push(format!(
                    "{}: {name}.{what}: {missing} cannot be filled in for this target",
                    target.name
                ));
                text.to_owned()
            })
        };
        for (key, value) in &service.env {
            let filled = fill(value, &format!("env.{key}"), false);
            env_out.insert(key.clone(), filled);
        }
        // Under everything envctl sets: a project's `.env` written for another setup never points a worktree
        // at main's database.
        let mut env_sources = BTreeMap::new();
        for (key, value, source) in from_files {
            if !env_out.contains_key(&key) {
                env_out.insert(key.clone(), value);
                env_sources.insert(key, source);
            }
        }
        // Filled in for `sh`: each filled-in value stays one word, whatever characters a worktree's path or a
        // password holds. Plain words are then exec'd directly; anything else goes through `sh -c`.
        let command = fill(&service.command, "command", true);
        let (launch, argv) = crate::config::command_line::launch_of(&command);
        let cwd = service.cwd.as_ref().map_or_else(|| target.root.clone(), |c| target.root.join(c));
        service_plans.push(ServicePlan {
            name: name.to_owned(),
            layer,
            cwd: cwd.display().to_string(),
            argv,
            launch,
            env: env_out,
            url: port.map(|p| format!("http://{}:{}", requirements::HOST, p.assigned)),
            port,
            ports: named,
            ready: service.ready.clone(),
            depends_on: service.depends_on.clone(),
            restart: service.restart,
            stop_grace_secs: service.stop_grace_secs,
            stop_signal: "TERM".into(),
            user: None,
            env_sources,
        });
    }
    TargetPlan {
        name: target.name.clone(),
        root: target.root.display().to_string(),
        requirements: requirement_plans,
        services: service_plans,
    }
}

/// The variables of a service's dotenv `files`, later files overriding earlier ones, each with its `file:line`.
/// A file is looked for in the target's checkout, then (for a worktree, where an untracked `.env` is usually
/// missing) in the main checkout; one found in neither is a problem.
fn env_files<'a>(
    settings: &Settings,
    target: &Target,
    files: impl Iterator<Item = &'a String>,
    service: &str,
    problems: &mut Vec<String>,
) -> Vec<(String, String, String)> {
    let mut vars: BTreeMap<String, (String, String)> = BTreeMap::new();
    for file in files {
        let path =
            [target.root.join(file), settings.paths.repo_root.join(file)].into_iter().find(|p| p.is_file());
        let Some(path) = path else {
            problems.push(format!(
                "{}: {service}.env_file: `{file}` does not exist in {}; create it or remove it from `env_file`",
                target.name,
                target.root.display()
            ));
            continue;
        };
        match crate::config::dotenv::read(&path) {
            Ok(read) => {
                for var in read {
                    vars.insert(var.key, (var.value, format!("{}:{}", path.display(), var.line)));
                }
            }
            Err(e) => problems.push(format!("{}: {service}.env_file: {e}", target.name)),
        }
    }
    vars.into_iter().map(|(k, (v, s))| (k, v, s)).collect()
}

/// What `start` would do for `targets`.
pub fn explain(settings: &Settings, targets: &[&Target], ports: &PortTable, env: &EnvVars) -> StartupPlan {
    explain_with(settings, targets, ports, env, &BTreeMap::new())
}

/// [`explain`] of only the services in `only` (every requirement is planned), which must hold what each of them
/// depends on ([`with_dependencies`]): a start of named services at a thousand plans those, not the thousand.
pub fn explain_only(
    settings: &Settings,
    targets: &[&Target],
    ports: &PortTable,
    env: &EnvVars,
    only: std::collections::BTreeSet<String>,
) -> StartupPlan {
    plan_all(settings, targets, ports, env, &Shared { only: Some(only), ..Shared::default() })
}

/// [`explain`] with the databases of some Postgres requirements replaced (by requirement name): what a test
/// suite running against a throwaway copy sees.
pub fn explain_with(
    settings: &Settings,
    targets: &[&Target],
    ports: &PortTable,
    env: &EnvVars,
    databases: &BTreeMap<String, String>,
) -> StartupPlan {
    plan_all(settings, targets, ports, env, &Shared { databases: databases.clone(), ..Shared::default() })
}

fn plan_all(
    settings: &Settings,
    targets: &[&Target],
    ports: &PortTable,
    env: &EnvVars,
    shared: &Shared,
) -> StartupPlan {
    let mut problems = Vec::new();
    let mut found = Found::new();
    let plans = targets
        .iter()
        .map(|t| plan_target(settings, t, ports, shared, env, &mut found, &mut problems))
        .collect();
    problems.dedup();
    StartupPlan {
        schema_version: SCHEMA_VERSION,
        repo_root: settings.paths.repo_root.display().to_string(),
        config_file: settings.paths.config_file.as_ref().map(|f| f.display().to_string()),
        mode: settings.config.project.default_mode,
        targets: plans,
        problems,
        // Filled in by what shows the plan (`explain-startup`): a job's environment never needs it.
        job_server: None,
    }
}

/// A target's plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No such target.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Its ports could not be planned.
    #[error(transparent)]
    Port(#[from] PortError),
    /// The service does not run for the target.
    #[error("service `{service}` does not run for target `{target}` (see its `targets` and `enabled` keys)")]
    NotHere {
        /// Service.
        service: String,
        /// Target.
        target: String,
    },
    /// The plan has problems (a placeholder that cannot be filled in, a missing env file).
    #[error("{}", .0.join("\n"))]
    Problems(Vec<String>),
    /// A placeholder names something that does not run for the target.
    #[error("{what}: {placeholder} cannot be filled in for target {target} (it does not run there)")]
    Unfilled {
        /// The key whose text it is (`services.api.test`, `jobs.types.lint.command`).
        what: String,
        /// The placeholder.
        placeholder: String,
        /// The target.
        target: String,
    },
}

/// Where a repository's jobs live, as `[jobs]` and the references in its `redis_url` resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStoreLocation {
    /// The embedded SQLite store.
    Embedded,
    /// A Redis server at this URL, started by someone else (or a requirement of `main`'s, `{redis.url}`).
    External(String),
    /// The job runtime's own Redis server, which envctl starts and keeps (`backend = "redis"`, no URL).
    Managed,
}

/// Where `settings` put the repository's jobs. A `redis_url` with references (`{redis.url}`) is filled in as
/// `main`'s services see it; `{jobs.url}` (or no URL at all) means the managed server.
pub fn job_store(settings: &Settings) -> Result<JobStoreLocation, PlanError> {
    let jobs = &settings.config.jobs;
    if jobs.backend == envctl_contracts::config::JobsBackend::Embedded {
        return Ok(JobStoreLocation::Embedded);
    }
    let Some(url) = jobs.redis_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(JobStoreLocation::Managed);
    };
    if url == "{jobs.url}" {
        return Ok(JobStoreLocation::Managed);
    }
    if template::placeholders(url).is_empty() {
        return Ok(JobStoreLocation::External(url.to_owned()));
    }
    let targets = Targets::discover(&settings.paths, &settings.config.project.trees_dir);
    let selected = targets.select(&Selection::Main, settings.config.project.default_mode)?;
    let ports = plan_ports(settings, &selected)?;
    let Some(main) = selected.first() else { return Ok(JobStoreLocation::External(url.to_owned())) };
    let shared = Shared::default();
    let ctx = Context { settings, target: main, ports: &ports, shared: &shared };
    let filled =
        template::expand(
            url,
            |n, a| if n == requirements::job_server::NAME { None } else { ctx.lookup("", n, a) },
        )
        .map_err(|placeholder| PlanError::Unfilled {
            what: "jobs.redis_url".into(),
            placeholder,
            target: "main".into(),
        })?;
    Ok(JobStoreLocation::External(filled))
}

/// The managed job server as it is now (its status checked against `/proc` by pid and start time), or as it
/// would start, when it is the repository's job store; `None` for any other store.
pub fn job_server(settings: &Settings, path_var: Option<&str>) -> Option<envctl_contracts::jobs::JobServer> {
    use envctl_contracts::jobs::JobServerStatus;
    if job_store(settings).ok()? != JobStoreLocation::Managed {
        return None;
    }
    let port = job_server_port(settings).unwrap_or(settings.config.jobs.port);
    let binary = requirements::find_binary("redis-server", path_var).map(|p| p.display().to_string());
    let mut server = requirements::job_server::describe(settings, port, binary);
    let alive = server
        .pid
        .zip(server.pid_start_time)
        .is_some_and(|(pid, started)| crate::supervisor::proc_info::is_same_process(pid, started));
    if server.status == JobServerStatus::Running && !alive {
        server.status = JobServerStatus::Stopped;
        server.pid = None;
        server.pid_start_time = None;
    }
    Some(server)
}

/// The port the managed job server has (its record's, while its lease holds) or would get now.
pub fn job_server_port(settings: &Settings) -> Result<u16, PortError> {
    let record = requirements::job_server::read_record(&settings.paths.scope_dir);
    let request = PortRequest {
        owner: requirements::job_server::lease_owner(&settings.paths),
        base: record.map_or(settings.config.jobs.port, |r| r.port),
        slot: 0,
    };
    let plans = Ledger::new(&settings.paths.ledger_dir).plan(std::slice::from_ref(&request), &is_free)?;
    Ok(plans.first().map_or(request.base, |p| p.assigned))
}

/// The URL, password included, a worker anywhere reaches the repository's Redis job store at (`ENVCTL_JOBS_URL`,
/// `{jobs.url}`); `None` for the embedded store.
pub fn job_store_url(settings: &Settings) -> Result<Option<String>, PlanError> {
    Ok(match job_store(settings)? {
        JobStoreLocation::Embedded => None,
        JobStoreLocation::External(url) => Some(url),
        JobStoreLocation::Managed => {
            let port = job_server_port(settings)?;
            let password = requirements::job_server::password(&settings.paths.scope_dir)
                .map_err(|e| tracing::warn!(error = %e, "cannot keep the job server's password"))
                .ok();
            Some(requirements::job_server::url(&settings.config.jobs.bind, port, password.as_deref()))
        }
    })
}

/// `{jobs.attr}`: the job store's URL, port, host or password.
fn job_store_attribute(settings: &Settings, attr: &str) -> Option<String> {
    let url = job_store_url(settings).ok().flatten()?;
    let rest = url.split_once("://")?.1;
    let address = rest.rsplit_once('@').map_or(rest, |(_, a)| a);
    let address = address.split('/').next().unwrap_or(address);
    let (host, port) = address.rsplit_once(':')?;
    match attr {
        "url" => Some(url.clone()),
        "port" => Some(port.to_owned()),
        "host" => Some(host.trim_start_matches('[').trim_end_matches(']').to_owned()),
        "password" => requirements::url_password(&url),
        _ => None,
    }
}

/// `text` — a service's `test` or `migrate`, a job type's `command`, the key `what` — with its placeholders filled
/// in for `target` as a service's command is, each value one shell word; `{port}` and `{service}` are
/// `service`'s. A text without placeholders is returned as it is, without planning anything.
pub fn fill_command(
    settings: &Settings,
    target: &str,
    service: &str,
    (what, text): (&str, &str),
) -> Result<String, PlanError> {
    if template::placeholders(text).is_empty() {
        return Ok(text.to_owned());
    }
    let targets = Targets::discover(&settings.paths, &settings.config.project.trees_dir);
    let selected =
        targets.select(&Selection::Trees(vec![target.to_owned()]), settings.config.project.default_mode)?;
    let ports = plan_ports(settings, &selected)?;
    let Some(chosen) = selected.first() else { return Ok(text.to_owned()) };
    let shared = Shared::default();
    let ctx = Context { settings, target: chosen, ports: &ports, shared: &shared };
    template::expand_for_shell(text, |n, a| ctx.lookup(service, n, a)).map_err(|placeholder| {
        PlanError::Unfilled { what: what.to_owned(), placeholder, target: target.to_owned() }
    })
}

/// The environment every service of `target` shares (each requirement's exports and `ENVCTL_TARGET`) and the
/// target's root: what a job for the target runs with.
pub fn target_env(
    settings: &Settings,
    target: &str,
    env: &EnvVars,
) -> Result<(BTreeMap<String, String>, std::path::PathBuf), PlanError> {
    let targets = Targets::discover(&settings.paths, &settings.config.project.trees_dir);
    let selected =
        targets.select(&Selection::Trees(vec![target.to_owned()]), settings.config.project.default_mode)?;
    let ports = plan_ports(settings, &selected)?;
    let plan = explain(settings, &selected, &ports, env);
    let mut vars = BTreeMap::new();
    let mut root = settings.paths.repo_root.clone();
    if let Some(target_plan) = plan.targets.into_iter().next() {
        vars.extend(target_plan.requirements.into_iter().flat_map(|r| r.env));
        vars.insert("ENVCTL_TARGET".into(), target_plan.name);
        root = std::path::PathBuf::from(target_plan.root);
    }
    Ok((vars, root))
}

/// `services` and every service they depend on, directly or not (empty: every service).
pub fn with_dependencies(settings: &Settings, services: &[String]) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut queue = services.to_vec();
    while let Some(name) = queue.pop() {
        if let Some(service) = settings.config.services.get(&name)
            && out.insert(name)
        {
            queue.extend(service.depends_on.iter().cloned());
        }
    }
    out.into_iter().collect()
}

/// The environment envctl gives `service` of `target` (what `envctl env --service` prints, without the marks of
/// the service's own process), the target's root and
/// the service's working directory: what the service's `test`, `migrate` and `setup` run with.
pub fn service_env(
    settings: &Settings,
    target: &str,
    service: &str,
    env: &EnvVars,
    databases: &BTreeMap<String, String>,
) -> Result<ServiceEnv, PlanError> {
    let targets = Targets::discover(&settings.paths, &settings.config.project.trees_dir);
    let selected =
        targets.select(&Selection::Trees(vec![target.to_owned()]), settings.config.project.default_mode)?;
    let ports = plan_ports(settings, &selected)?;
    let plan = explain_with(settings, &selected, &ports, env, databases);
    let databases_of = |t: &TargetPlan| {
        t.requirements
            .iter()
            .filter(|r| r.adapter == envctl_contracts::config::Adapter::Postgres)
            .map(|r| Database {
                requirement: r.name.clone(),
                port: r.port.assigned,
                name: r.env.get("DB_NAME").cloned().unwrap_or_default(),
                password: requirements::url_password(&r.url),
                bin_dir: r
                    .binaries
                    .iter()
                    .find(|b| b.name == "postgres")
                    .and_then(|b| b.path.as_deref())
                    .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.into()))
                    .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
                    .unwrap_or_default(),
            })
            .collect::<Vec<_>>()
    };
    let target_plan = plan.targets.into_iter().next().ok_or_else(|| {
        PlanError::Target(TargetError::Unknown { name: target.to_owned(), suggestion: None })
    })?;
    let root = std::path::PathBuf::from(&target_plan.root);
    let postgres = databases_of(&target_plan);
    let found = target_plan.services.into_iter().find(|s| s.name == service);
    let Some(found) = found else {
        return Err(PlanError::NotHere { service: service.to_owned(), target: target.to_owned() });
    };
    if !plan.problems.is_empty() {
        return Err(PlanError::Problems(plan.problems));
    }
    let postgres = postgres.into_iter().filter(|d| found.depends_on.contains(&d.requirement)).collect();
    let vars = without_process_marks(found.env);
    Ok(ServiceEnv { vars, cwd: std::path::PathBuf::from(found.cwd), root, postgres })
}

/// A Postgres database a service uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// The requirement.
    pub requirement: String,
    /// Its server's port.
    pub port: u16,
    /// The database's name.
    pub name: String,
    /// The password its URL carries.
    pub password: Option<String>,
    /// The directory of the server's `postgres` (with its `pg_dump` and `pg_restore`).
    pub bin_dir: std::path::PathBuf,
}

/// What [`service_env`] found.
#[derive(Debug, Clone)]
pub struct ServiceEnv {
    /// The variables.
    pub vars: BTreeMap<String, String>,
    /// The service's working directory.
    pub cwd: std::path::PathBuf,
    /// The target's root.
    pub root: std::path::PathBuf,
    /// The Postgres databases of the requirements it depends on.
    pub postgres: Vec<Database>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LoadOptions;

    /// A repository (a `.git` directory is enough for discovery) with `config` as its `.envctl`, and its settings.
    fn settings(config: &str) -> (tempfile::TempDir, Settings) {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).expect("git dir");
        std::fs::write(repo.join(".envctl"), config).expect("config");
        let runtime = dir.path().join("runtime").display().to_string();
        let env = EnvVars::from_pairs([("ENVCTL_RUNTIME_DIR", runtime.as_str())]);
        let load = LoadOptions { start_dir: repo, config_file: None, sets: Vec::new() };
        (dir, Settings::load(&load, &env).expect("settings"))
    }

    fn main_target(settings: &Settings) -> Target {
        Targets::discover(&settings.paths, &settings.config.project.trees_dir).all.remove(0)
    }

    #[test]
    fn services_are_layered_by_dependency_and_get_their_port_and_target() {
        let (_dir, settings) = settings(
            "[services.api]\ncommand = \"serve --port {port}\"\nport = 47110\n\n[services.web]\ncommand = \"web {api.url}\"\ndepends_on = [\"api\"]\n",
        );
        let target = main_target(&settings);
        let ports = plan_ports(&settings, &[&target]).expect("ports");
        let plan = explain(&settings, &[&target], &ports, &EnvVars::default());
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        let services = &plan.targets[0].services;
        let api = services.iter().find(|s| s.name == "api").expect("api");
        let web = services.iter().find(|s| s.name == "web").expect("web");
        assert!(api.layer < web.layer, "api {} web {}", api.layer, web.layer);
        let port = api.port.expect("api port").assigned;
        assert_eq!(api.env.get("PORT"), Some(&port.to_string()));
        assert_eq!(api.env.get("ENVCTL_TARGET").map(String::as_str), Some("main"));
        assert_eq!(api.argv, ["serve", "--port", &port.to_string()]);
        assert_eq!(api.launch, envctl_contracts::startup::Launch::Direct);
        assert_eq!(web.argv, ["web", &format!("http://127.0.0.1:{port}")]);
    }

    #[test]
    fn a_dependency_that_does_not_run_for_the_target_is_a_problem_naming_it() {
        let (_dir, settings) = settings(
            "[services.web]\ncommand = \"web\"\ndepends_on = [\"api\"]\n\n[services.api]\ncommand = \"api\"\ntargets = \"trees\"\n",
        );
        let target = main_target(&settings);
        let ports = plan_ports(&settings, &[&target]).expect("ports");
        let plan = explain(&settings, &[&target], &ports, &EnvVars::default());
        assert_eq!(
            plan.problems,
            vec!["main: `web` depends on `api`, which does not run for this target".to_owned()]
        );
    }

    #[test]
    fn a_command_requirements_named_ports_reach_its_server_and_the_services_that_name_them() {
        let (_dir, settings) = settings(
            "[requirements.mail]\nadapter = \"command\"\ncommand = \"catch --smtp {port} --web {ports.web}\"\nport = 47120\nports = { web = 47121 }\n\n[services.api]\ncommand = \"api\"\nenv = { MAIL_UI = \"http://127.0.0.1:{mail.ports.web}\" }\n",
        );
        let target = main_target(&settings);
        let ports = plan_ports(&settings, &[&target]).expect("ports");
        let plan = explain(&settings, &[&target], &ports, &EnvVars::default());
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        let mail = &plan.targets[0].requirements[0];
        let (smtp, web) = (mail.port.assigned, mail.ports["web"].assigned);
        assert_ne!(smtp, web);
        assert_eq!(mail.process.argv.join(" "), format!("catch --smtp {smtp} --web {web}"));
        assert_eq!(mail.process.env.get("PORT_WEB"), Some(&web.to_string()));
        let api = &plan.targets[0].services[0];
        assert_eq!(api.env.get("MAIL_UI"), Some(&format!("http://127.0.0.1:{web}")));
    }

    #[test]
    fn a_test_command_gets_the_placeholders_of_a_service_command() {
        let (_dir, settings) = settings(
            "[services.api]\ncommand = \"api\"\nport = 47120\ntest = \"pytest --base {api.url} --port {port} -k {target}\"\n\n[services.web]\ncommand = \"web\"\ntargets = \"trees\"\nport = 47130\n",
        );
        let filled = fill_command(
            &settings,
            "main",
            "api",
            ("services.api.test", "pytest --base {api.url} --port {port} -k {target}"),
        );
        let filled = filled.expect("filled");
        // The port planned for api: 47120, or the next free one while anything else on the machine holds it (an
        // ephemeral port of another test's connection may be that very number).
        let port: u16 = filled
            .split("--port ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .expect("a port");
        assert!((47120..47130).contains(&port), "{filled}");
        assert_eq!(filled, format!("pytest --base http://127.0.0.1:{port} --port {port} -k main"));
        let unfilled = fill_command(&settings, "main", "api", ("services.api.test", "x {web.url}"));
        assert_eq!(
            unfilled.expect_err("web does not run for main").to_string(),
            "services.api.test: {web.url} cannot be filled in for target main (it does not run there)"
        );
    }

    #[test]
    fn target_env_names_the_target_and_its_root() {
        let (_dir, settings) = settings("[services.api]\ncommand = \"api\"\n");
        let (vars, root) = target_env(&settings, "main", &EnvVars::default()).expect("env");
        assert_eq!(vars.get("ENVCTL_TARGET").map(String::as_str), Some("main"));
        assert_eq!(root, settings.paths.repo_root);
        assert!(matches!(target_env(&settings, "nope", &EnvVars::default()), Err(PlanError::Target(_))));
    }
}
