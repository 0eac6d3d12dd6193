//! Resolution and validation: raw sections become the typed [`Config`], defaults are filled in, and every
//! value is checked (ports, choices, durations, names, `depends_on` targets, dependency cycles, placeholders).
//! Problems are collected, each with its location and key. Each section is checked in its own file here.
//!
//! Every entry is checked, whatever else is wrong, and no problem is reported as a consequence of another: a value
//! already reported (and so left out, see [`super::load`]) is not also "required", and a check that needs a value
//! that was reported asks [`Checker::reported`] and stays quiet.

mod graph;
mod jobs;
mod ports;
mod requirement;
mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use envctl_contracts::config::{
    Config, DEFAULT_SETUP_TIMEOUT_SECS, Mode, ProjectConfig, SetupConfig, TargetScope,
};
use toml::Spanned;

use super::error::Problem;
use super::layers::SourceMap;
use super::raw::{RawConfig, RawDuration};

/// Default readiness timeout.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_GRACE_SECS: u64 = 5;

const MODES: &[(&str, Mode)] = &[("main", Mode::Main), ("trees", Mode::Trees)];
pub(super) const SCOPES: &[(&str, TargetScope)] =
    &[("all", TargetScope::All), ("main", TargetScope::Main), ("trees", TargetScope::Trees)];

/// Collects located problems while resolving.
#[derive(Debug)]
pub struct Checker<'m> {
    map: &'m SourceMap,
    problems: Vec<(Range<usize>, Problem)>,
}

/// Service and requirement names: letters, digits, `_` and `-`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 63
}

pub(crate) fn valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn relative_inside(path: &str) -> bool {
    let path = std::path::Path::new(path);
    !path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
}

/// The keys under one base (`services.api`), each spelled into one buffer when a check asks for it: a check names
/// its key only to report a problem, so a config of many services should not make a string per key it checks.
pub(super) struct Keys {
    buf: String,
    base: usize,
}

impl Keys {
    pub(super) fn new(base: &str) -> Self {
        let mut buf = String::with_capacity(base.len() + 32);
        buf.push_str(base);
        Self { base: buf.len(), buf }
    }

    /// `<base>.<leaf>`.
    pub(super) fn at(&mut self, leaf: &str) -> &str {
        self.buf.truncate(self.base);
        self.buf.push('.');
        self.buf.push_str(leaf);
        &self.buf
    }
}

impl<'m> Checker<'m> {
    /// A checker locating spans through `map`.
    pub fn new(map: &'m SourceMap) -> Self {
        Self { map, problems: Vec::new() }
    }

    /// Records a problem at `span` for `key`.
    pub fn error(&mut self, span: &Range<usize>, key: &str, message: String) {
        let problem = Problem { location: self.map.locate(span), key: Some(key.to_owned()), message };
        self.problems.push((span.clone(), problem));
    }

    /// Whether a problem was already reported for `key` or a key under it.
    pub fn reported(&self, key: &str) -> bool {
        self.reported_keys()
            .any(|k| k == key || k.strip_prefix(key).is_some_and(|rest| rest.starts_with('.')))
    }

    /// Where the first problem reported for exactly `key` is.
    pub fn reported_at(&self, key: &str) -> Option<Range<usize>> {
        self.problems.iter().find(|(_, p)| p.key.as_deref() == Some(key)).map(|(span, _)| span.clone())
    }

    /// The keys problems were reported for so far.
    pub(super) fn reported_keys(&self) -> impl Iterator<Item = &str> {
        self.problems.iter().filter_map(|(_, p)| p.key.as_deref())
    }

    /// The problems, in the order of their spans.
    pub fn finish(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|(span, _)| span.start);
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
            // A value of the wrong type was reported and left out: it is there, just wrong.
            None if self.reported(key) => None,
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
            env_file: self.relative_paths(raw.project.env_file.as_ref(), "project.env_file"),
        };
        let setup = raw.setup.as_ref().and_then(|setup| self.project_setup(setup));
        // Every name in the file is defined, even one that is invalid, a duplicate or has a broken body: naming
        // it in `depends_on` is not a second problem.
        let defined: BTreeSet<&str> = raw
            .requirements
            .iter()
            .map(|(name, _)| name)
            .chain(raw.services.iter().map(|(name, _)| name))
            .map(|name| name.get_ref().as_str())
            .collect();
        let requirement_names: BTreeSet<&str> =
            raw.requirements.iter().map(|(name, _)| name.get_ref().as_str()).collect();
        let mut names = BTreeMap::new();
        let mut requirements = BTreeMap::new();
        for (name, body) in &raw.requirements {
            let usable = self.check_name(name, "requirements", &mut names);
            if let Some(body) = body {
                let resolved = self.requirement(name, body);
                if usable {
                    requirements.insert(name.get_ref().clone(), resolved);
                }
            }
        }
        let mut services = BTreeMap::new();
        for (name, body) in &raw.services {
            let usable = self.check_name(name, "services", &mut names);
            if let Some(body) = body {
                let resolved = self.service(name, body);
                if usable {
                    services.insert(name.get_ref().clone(), resolved);
                }
            }
        }
        let known: Vec<&str> = defined.into_iter().collect();
        let port_names = ports::declared(
            raw.services
                .iter()
                .map(|(n, b)| (n.get_ref().as_str(), b.as_ref().and_then(|b| b.ports.as_ref())))
                .chain(
                    raw.requirements
                        .iter()
                        .map(|(n, b)| (n.get_ref().as_str(), b.as_ref().and_then(|b| b.ports.as_ref()))),
                ),
        );
        for (name, body) in &raw.services {
            if let Some(body) = body {
                self.check_references(name.get_ref(), body, &known, &requirement_names, &port_names);
            }
        }
        for (name, body) in &raw.requirements {
            if let Some(body) = body {
                self.check_requirement_port_refs(name.get_ref(), body, &port_names);
            }
        }
        for (name, body) in &raw.requirements {
            if let Some(body) = body {
                self.check_requirement_references(name.get_ref(), body, &known, &requirement_names);
            }
        }
        for (name, body) in &raw.job_types {
            if let Some(command) = body.as_ref().and_then(|b| b.command.as_ref()) {
                let key = format!("jobs.types.{}.command", name.get_ref());
                self.check_placeholders(name.get_ref(), command, &key, &known, &requirement_names);
            }
        }
        if let Some(url) = raw.jobs.redis_url.as_ref() {
            self.check_placeholders("", url, "jobs.redis_url", &known, &requirement_names);
        }
        self.check_cycles(&raw.services);
        Config { project, services, setup, requirements, jobs: self.jobs(raw) }
    }

    /// `[setup]`: a command (required), its inputs and its timeout.
    fn project_setup(&mut self, setup: &Spanned<super::raw::RawSetup>) -> Option<SetupConfig> {
        let body = setup.get_ref();
        let inputs = self.setup_inputs(body.command.as_ref(), body.inputs.as_ref(), "setup", "command");
        let timeout_secs = self
            .duration(body.timeout.as_ref(), "setup.timeout")
            .map_or(DEFAULT_SETUP_TIMEOUT_SECS, |d| d.as_secs().max(1));
        if body.command.is_none() && body.inputs.is_none() && !self.reported("setup.command") {
            self.error(&setup.span(), "setup.command", "is required".into());
        }
        let command = self.non_blank(body.command.as_ref(), "setup.command")?;
        Some(SetupConfig { command, inputs, timeout_secs })
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
        if name.get_ref() == super::template::OWN_PORTS {
            self.error(
                &name.span(),
                &key,
                "`ports` is reserved: `{ports.<name>}` names an entry's own ports; pick another name".into(),
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
}
