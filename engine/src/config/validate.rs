//! Resolution and validation: raw sections become the typed [`Config`], defaults are filled in, and every
//! value is checked (ports, choices, durations, names, `depends_on` targets, dependency cycles, placeholders).
//! Problems are collected, each with its location and key.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use envctl_contracts::config::{
    Adapter, Config, Isolation, JobTypeConfig, JobsBackend, JobsConfig, Mode, Priority, ProbeKind,
    ProjectConfig, ReadyProbe, RequirementConfig, RestartPolicy, ServiceConfig, TargetScope,
};
use toml::Spanned;

use super::error::Problem;
use super::layers::SourceMap;
use super::raw::{RawConfig, RawDuration, RawReady, RawRequirement, RawService};
use super::template;

/// Default readiness timeout.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_GRACE_SECS: u64 = 5;

const MODES: &[(&str, Mode)] = &[("main", Mode::Main), ("trees", Mode::Trees)];
const SCOPES: &[(&str, TargetScope)] =
    &[("all", TargetScope::All), ("main", TargetScope::Main), ("trees", TargetScope::Trees)];
const RESTARTS: &[(&str, RestartPolicy)] =
    &[("no", RestartPolicy::No), ("on-failure", RestartPolicy::OnFailure), ("always", RestartPolicy::Always)];
const ADAPTERS: &[(&str, Adapter)] =
    &[("postgres", Adapter::Postgres), ("redis", Adapter::Redis), ("command", Adapter::Command)];
const ISOLATIONS: &[(&str, Isolation)] =
    &[("server", Isolation::Server), ("database", Isolation::Database), ("db-index", Isolation::DbIndex)];
const BACKENDS: &[(&str, JobsBackend)] =
    &[("embedded", JobsBackend::Embedded), ("redis", JobsBackend::Redis)];
const PRIORITIES: &[(&str, Priority)] = &[
    ("low", Priority::Low),
    ("normal", Priority::Normal),
    ("high", Priority::High),
    ("critical", Priority::Critical),
];

/// Collects located problems while resolving.
#[derive(Debug)]
pub struct Checker<'m> {
    map: &'m SourceMap,
    problems: Vec<(usize, Problem)>,
}

/// Service and requirement names: letters, digits, `_` and `-`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 63
}

fn valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn relative_inside(path: &str) -> bool {
    let path = std::path::Path::new(path);
    !path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
}

impl<'m> Checker<'m> {
    /// A checker locating spans through `map`.
    pub fn new(map: &'m SourceMap) -> Self {
        Self { map, problems: Vec::new() }
    }

    /// Records a problem at `span` for `key`.
    pub fn error(&mut self, span: &Range<usize>, key: &str, message: String) {
        let problem = Problem { location: self.map.locate(span), key: Some(key.to_owned()), message };
        self.problems.push((span.start, problem));
    }

    /// The problems, in the order of their spans.
    pub fn finish(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|(at, _)| *at);
        self.problems.dedup_by(|a, b| a.1 == b.1);
        self.problems.into_iter().map(|(_, p)| p).collect()
    }

    fn choice<T: Copy>(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(value) = value else { return default };
        if let Some((_, chosen)) = options.iter().find(|(name, _)| *name == value.get_ref()) {
            return *chosen;
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let hint = super::suggest(value.get_ref(), &names)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        self.error(
            &value.span(),
            key,
            format!("`{}` is not one of {}{hint}", value.get_ref(), names.join(", ")),
        );
        default
    }

    fn port(&mut self, value: Option<&Spanned<i64>>, key: &str) -> Option<u16> {
        let value = value?;
        match u16::try_from(*value.get_ref()) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                self.error(
                    &value.span(),
                    key,
                    format!("{} is not a port; use a number from 1 to 65535", value.get_ref()),
                );
                None
            }
        }
    }

    fn positive(&mut self, value: Option<&Spanned<i64>>, key: &str, default: u64) -> u64 {
        let Some(value) = value else { return default };
        match u64::try_from(*value.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                self.error(
                    &value.span(),
                    key,
                    format!("{} must be a whole number of at least 1", value.get_ref()),
                );
                default
            }
        }
    }

    fn duration(&mut self, value: Option<&Spanned<RawDuration>>, key: &str) -> Option<Duration> {
        let value = value?;
        let parsed = match value.get_ref() {
            RawDuration::Seconds(secs) => {
                u64::try_from(*secs).map(Duration::from_secs).map_err(|_| "is negative".to_owned())
            }
            RawDuration::Text(text) => {
                humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration ({e})"))
            }
        };
        match parsed {
            Ok(d) => Some(d),
            Err(why) => {
                self.error(
                    &value.span(),
                    key,
                    format!("{why}; write seconds (30) or text such as \"500ms\", \"30s\", \"2m\""),
                );
                None
            }
        }
    }

    fn non_empty(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        parent: &Range<usize>,
    ) -> Option<String> {
        match value {
            Some(v) if !v.get_ref().trim().is_empty() => Some(v.get_ref().clone()),
            Some(v) => {
                self.error(&v.span(), key, "must not be empty".to_owned());
                None
            }
            None => {
                self.error(parent, key, "is required".to_owned());
                None
            }
        }
    }

    /// Turns raw sections into the resolved configuration, checking everything.
    pub fn resolve(&mut self, raw: &RawConfig, repo_name: &str) -> Config {
        let project = ProjectConfig {
            name: raw.project.name.as_ref().map_or_else(|| repo_name.to_owned(), |n| n.get_ref().clone()),
            default_mode: self.choice(
                raw.project.default_mode.as_ref(),
                "project.default_mode",
                MODES,
                Mode::Main,
            ),
            trees_dir: match &raw.project.trees_dir {
                Some(dir) if relative_inside(dir.get_ref()) => dir.get_ref().clone(),
                Some(dir) => {
                    self.error(
                        &dir.span(),
                        "project.trees_dir",
                        "must be a relative path inside the repository".to_owned(),
                    );
                    "trees".to_owned()
                }
                None => "trees".to_owned(),
            },
        };
        let mut names = BTreeMap::new();
        let mut requirements = BTreeMap::new();
        for (name, body) in &raw.requirements {
            if self.check_name(name, "requirements", &mut names) {
                let resolved = self.requirement(name, body);
                requirements.insert(name.get_ref().clone(), resolved);
            }
        }
        let mut services = BTreeMap::new();
        for (name, body) in &raw.services {
            if self.check_name(name, "services", &mut names) {
                services.insert(name.get_ref().clone(), self.service(name, body));
            }
        }
        let known: Vec<&str> = names.keys().map(String::as_str).collect();
        for (name, body) in &raw.services {
            self.check_references(name.get_ref(), body, &known, &requirements);
        }
        self.check_cycles(&raw.services);
        Config { project, services, requirements, jobs: self.jobs(raw) }
    }

    fn check_name(
        &mut self,
        name: &Spanned<String>,
        section: &str,
        seen: &mut BTreeMap<String, String>,
    ) -> bool {
        let key = format!("{section}.{}", name.get_ref());
        if !valid_name(name.get_ref()) {
            self.error(
                &name.span(),
                &key,
                "names use letters, digits, `_` and `-`, starting with a letter or digit".into(),
            );
            return false;
        }
        if let Some(other) = seen.get(name.get_ref()) {
            self.error(
                &name.span(),
                &key,
                format!("`{}` is already defined in [{other}]; names must be unique", name.get_ref()),
            );
            return false;
        }
        seen.insert(name.get_ref().clone(), section.to_owned());
        true
    }

    fn ready(
        &mut self,
        ready: Option<&Spanned<RawReady>>,
        key: &str,
        port: Option<u16>,
    ) -> Option<ReadyProbe> {
        let ready = ready?;
        let span = ready.span();
        let body = ready.get_ref();
        let key = format!("{key}.ready");
        let mut kinds = Vec::new();
        if let Some(path) = &body.http {
            if !path.get_ref().starts_with('/') {
                self.error(
                    &path.span(),
                    &format!("{key}.http"),
                    format!("`{}` must start with `/`", path.get_ref()),
                );
            }
            let status = body.status.as_ref().and_then(|s| match u16::try_from(*s.get_ref()) {
                Ok(code) if (100..=599).contains(&code) => Some(code),
                _ => {
                    self.error(
                        &s.span(),
                        &format!("{key}.status"),
                        format!("{} is not an HTTP status (100-599)", s.get_ref()),
                    );
                    None
                }
            });
            kinds.push(ProbeKind::Http { path: path.get_ref().clone(), status });
        }
        if let Some(tcp) = &body.tcp
            && *tcp.get_ref()
        {
            kinds.push(ProbeKind::Tcp);
        }
        if let Some(command) = &body.exec {
            kinds.push(ProbeKind::Exec { command: command.get_ref().clone() });
        }
        if let Some(pattern) = &body.log {
            kinds.push(ProbeKind::Log { pattern: pattern.get_ref().clone() });
        }
        if body.status.is_some() && body.http.is_none() {
            self.error(&span, &format!("{key}.status"), "only applies to an `http` probe".into());
        }
        let timeout =
            self.duration(body.timeout.as_ref(), &format!("{key}.timeout")).unwrap_or(DEFAULT_READY_TIMEOUT);
        if kinds.len() != 1 {
            self.error(&span, &key, "set exactly one of `http`, `tcp = true`, `exec` or `log`".into());
            return None;
        }
        let probe = kinds.remove(0);
        if matches!(probe, ProbeKind::Http { .. } | ProbeKind::Tcp) && port.is_none() {
            self.error(&span, &key, "an `http` or `tcp` probe needs `port` to be set".into());
        }
        Some(ReadyProbe { probe, timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) })
    }

    fn env(
        &mut self,
        env: Option<&BTreeMap<Spanned<String>, Spanned<String>>>,
        key: &str,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, value) in env.into_iter().flatten() {
            if valid_env_key(name.get_ref()) {
                out.insert(name.get_ref().clone(), value.get_ref().clone());
            } else {
                self.error(
                    &name.span(),
                    &format!("{key}.env.{}", name.get_ref()),
                    "is not a valid environment variable name".into(),
                );
            }
        }
        out
    }

    fn service(&mut self, name: &Spanned<String>, body: &RawService) -> ServiceConfig {
        let key = format!("services.{}", name.get_ref());
        let port = self.port(body.port.as_ref(), &format!("{key}.port"));
        let cwd = body.cwd.as_ref().and_then(|cwd| {
            if relative_inside(cwd.get_ref()) {
                Some(cwd.get_ref().clone())
            } else {
                self.error(
                    &cwd.span(),
                    &format!("{key}.cwd"),
                    "must be a relative path inside the checkout (no `..`, not absolute)".into(),
                );
                None
            }
        });
        ServiceConfig {
            command: self
                .non_empty(body.command.as_ref(), &format!("{key}.command"), &name.span())
                .unwrap_or_default(),
            cwd,
            port,
            ready: self.ready(body.ready.as_ref(), &key, port),
            depends_on: body.depends_on.iter().flatten().map(|d| d.get_ref().clone()).collect(),
            env: self.env(body.env.as_ref(), &key),
            restart: self.choice(
                body.restart.as_ref(),
                &format!("{key}.restart"),
                RESTARTS,
                RestartPolicy::No,
            ),
            targets: self.choice(body.targets.as_ref(), &format!("{key}.targets"), SCOPES, TargetScope::All),
            enabled: body.enabled.unwrap_or(true),
            test: body.test.as_ref().map(|t| t.get_ref().clone()),
            stop_grace_secs: self
                .duration(body.stop_grace.as_ref(), &format!("{key}.stop_grace"))
                .map_or(DEFAULT_STOP_GRACE_SECS, |d| d.as_secs()),
        }
    }

    fn requirement(&mut self, name: &Spanned<String>, body: &RawRequirement) -> RequirementConfig {
        let key = format!("requirements.{}", name.get_ref());
        let default_adapter = match name.get_ref().as_str() {
            "postgres" => Adapter::Postgres,
            "redis" => Adapter::Redis,
            _ => Adapter::Command,
        };
        let adapter =
            self.choice(body.adapter.as_ref(), &format!("{key}.adapter"), ADAPTERS, default_adapter);
        let (default_isolation, allowed, default_port): (Isolation, &[Isolation], Option<u16>) = match adapter
        {
            Adapter::Postgres => (Isolation::Database, &[Isolation::Database, Isolation::Server], Some(5432)),
            Adapter::Redis => (Isolation::Server, &[Isolation::Server, Isolation::DbIndex], Some(6379)),
            Adapter::Command => (Isolation::Server, &[Isolation::Server], None),
        };
        let isolation =
            self.choice(body.isolation.as_ref(), &format!("{key}.isolation"), ISOLATIONS, default_isolation);
        let isolation = if allowed.contains(&isolation) {
            isolation
        } else {
            let span = body.isolation.as_ref().map_or_else(|| name.span(), Spanned::span);
            let names: Vec<&str> =
                ISOLATIONS.iter().filter(|(_, i)| allowed.contains(i)).map(|(n, _)| *n).collect();
            self.error(
                &span,
                &format!("{key}.isolation"),
                format!("the {adapter:?} adapter supports {}", names.join(", ")).to_lowercase(),
            );
            default_isolation
        };
        let port = self.port(body.port.as_ref(), &format!("{key}.port")).or(default_port);
        if port.is_none() && body.port.is_none() {
            self.error(
                &name.span(),
                &format!("{key}.port"),
                "is required for a `command` requirement".into(),
            );
        }
        let command = body.command.as_ref().map(|c| c.get_ref().clone());
        match (adapter, &body.command) {
            (Adapter::Command, None) => self.error(&name.span(), &format!("{key}.command"), "is required for a `command` requirement".into()),
            (Adapter::Postgres | Adapter::Redis, Some(c)) => self.error(
                &c.span(),
                &format!("{key}.command"),
                "only `command` requirements take a command; set `adapter = \"command\"` to run your own server".into(),
            ),
            _ => {}
        }
        if let Some(seed) = &body.seed
            && adapter != Adapter::Postgres
        {
            self.error(&seed.span(), &format!("{key}.seed"), "only applies to postgres requirements".into());
        }
        let ready = self.ready(body.ready.as_ref(), &key, port);
        if ready.is_some() && adapter != Adapter::Command {
            self.error(
                &name.span(),
                &format!("{key}.ready"),
                "postgres and redis have built-in probes; remove `ready`".into(),
            );
        }
        RequirementConfig {
            adapter,
            isolation,
            port: port.unwrap_or_default(),
            command,
            ready,
            env: self.env(body.env.as_ref(), &key),
            targets: self.choice(body.targets.as_ref(), &format!("{key}.targets"), SCOPES, TargetScope::All),
            enabled: body.enabled.unwrap_or(true),
            seed: body.seed.as_ref().map(|s| s.get_ref().clone()),
        }
    }

    fn check_references(
        &mut self,
        service: &str,
        body: &RawService,
        known: &[&str],
        requirements: &BTreeMap<String, RequirementConfig>,
    ) {
        let key = format!("services.{service}");
        for dep in body.depends_on.iter().flatten() {
            let dep_name = dep.get_ref().as_str();
            if dep_name == service {
                self.error(
                    &dep.span(),
                    &format!("{key}.depends_on"),
                    "a service cannot depend on itself".into(),
                );
            } else if !known.contains(&dep_name) {
                let hint = super::suggest(dep_name, known)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                let listing = if known.is_empty() {
                    "none are defined".to_owned()
                } else {
                    format!("known: {}", known.join(", "))
                };
                self.error(
                    &dep.span(),
                    &format!("{key}.depends_on"),
                    format!("`{dep_name}` is not a service or requirement ({listing}){hint}"),
                );
            }
        }
        let texts = body
            .command
            .iter()
            .map(|c| (c, "command".to_owned()))
            .chain(body.env.iter().flatten().map(|(k, v)| (v, format!("env.{}", k.get_ref()))));
        for (text, field) in texts {
            for p in template::placeholders(text.get_ref()) {
                let Some(attr) = p.attr else { continue };
                let problem = if !known.contains(&p.name) {
                    Some(format!(
                        "`{{{}.{attr}}}` names `{}`, which is not a service or requirement",
                        p.name, p.name
                    ))
                } else if !template::ATTRS.contains(&attr) {
                    Some(format!(
                        "`{{{}.{attr}}}`: `{attr}` is not one of {}",
                        p.name,
                        template::ATTRS.join(", ")
                    ))
                } else if !requirements.contains_key(p.name) && !matches!(attr, "url" | "port" | "host") {
                    Some(format!("`{{{}.{attr}}}`: services offer url, port and host", p.name))
                } else {
                    None
                };
                if let Some(message) = problem {
                    self.error(&text.span(), &format!("{key}.{field}"), message);
                }
            }
        }
    }

    /// Reports each dependency cycle among services once, with its path.
    fn check_cycles(&mut self, services: &[(Spanned<String>, RawService)]) {
        let graph: BTreeMap<&str, Vec<&str>> = services
            .iter()
            .map(|(name, body)| {
                (
                    name.get_ref().as_str(),
                    body.depends_on.iter().flatten().map(|d| d.get_ref().as_str()).collect(),
                )
            })
            .collect();
        let mut reported = BTreeSet::new();
        for (name, body) in services {
            let mut stack = vec![name.get_ref().as_str()];
            if let Some(cycle) = find_cycle(&graph, &mut stack) {
                let members: BTreeSet<&str> = cycle.iter().copied().collect();
                if reported.insert(members) {
                    let span =
                        body.depends_on.iter().flatten().next().map_or_else(|| name.span(), Spanned::span);
                    self.error(
                        &span,
                        &format!("services.{}.depends_on", name.get_ref()),
                        format!("dependency cycle: {}", cycle.join(" -> ")),
                    );
                }
            }
        }
    }

    fn jobs(&mut self, raw: &RawConfig) -> JobsConfig {
        let jobs = &raw.jobs;
        let mut types = BTreeMap::new();
        for (name, body) in &raw.job_types {
            let key = format!("jobs.types.{}", name.get_ref());
            let valid = name.get_ref().split('.').all(valid_name) && name.get_ref().split('.').count() <= 2;
            if !valid {
                self.error(
                    &name.span(),
                    &key,
                    "job type names are `name` or `namespace.name` (letters, digits, `_`, `-`)".into(),
                );
                continue;
            }
            let command = self
                .non_empty(body.command.as_ref(), &format!("{key}.command"), &name.span())
                .unwrap_or_default();
            let attempts = self.positive(body.max_attempts.as_ref(), &format!("{key}.max_attempts"), 3);
            let timeout_secs =
                self.duration(body.timeout.as_ref(), &format!("{key}.timeout")).map(|d| d.as_secs().max(1));
            let priority =
                self.choice(body.priority.as_ref(), &format!("{key}.priority"), PRIORITIES, Priority::Normal);
            let max_attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            types.insert(
                name.get_ref().clone(),
                JobTypeConfig { command, max_attempts, timeout_secs, priority },
            );
        }
        JobsConfig {
            backend: self.choice(jobs.backend.as_ref(), "jobs.backend", BACKENDS, JobsBackend::Embedded),
            redis_url: jobs.redis_url.as_ref().map(|u| u.get_ref().clone()),
            redis_prefix: jobs
                .redis_prefix
                .as_ref()
                .map_or_else(|| "envctl".to_owned(), |p| p.get_ref().clone()),
            lease_secs: self.positive(jobs.lease_secs.as_ref(), "jobs.lease_secs", 30),
            types,
        }
    }
}

/// Depth-first search from the last node of `stack`; returns the cycle through the first node, if any.
fn find_cycle<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>, stack: &mut Vec<&'a str>) -> Option<Vec<&'a str>> {
    let current = *stack.last()?;
    for &next in graph.get(current).into_iter().flatten() {
        if next == stack[0] {
            let mut cycle = stack.clone();
            cycle.push(next);
            return Some(cycle);
        }
        if !stack.contains(&next) && graph.contains_key(next) {
            stack.push(next);
            if let Some(cycle) = find_cycle(graph, stack) {
                return Some(cycle);
            }
            stack.pop();
        }
    }
    None
}
