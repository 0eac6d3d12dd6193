//! `[services.<name>]`: command, cwd, port, named ports, readiness probe, env, restart, targets, stop grace.

use std::collections::BTreeMap;

use envctl_contracts::config::{
    DEFAULT_SETUP_TIMEOUT_SECS, DEFAULT_SUITE_TIMEOUT_SECS, ProbeKind, ReadyProbe, RestartPolicy,
    ServiceConfig, TargetScope, TestDatabase,
};
use toml::Spanned;

use super::{
    Checker, DEFAULT_READY_TIMEOUT, DEFAULT_STOP_GRACE_SECS, Keys, SCOPES, relative_inside, valid_env_key,
};
use crate::config::raw::{RawReady, RawService};

const TEST_DATABASES: &[(&str, TestDatabase)] =
    &[("clone", TestDatabase::Clone), ("target", TestDatabase::Target)];

const RESTARTS: &[(&str, RestartPolicy)] =
    &[("no", RestartPolicy::No), ("on-failure", RestartPolicy::OnFailure), ("always", RestartPolicy::Always)];

impl Checker<'_> {
    pub(super) fn ready(
        &mut self,
        ready: Option<&Spanned<RawReady>>,
        key: &str,
        port: Option<u16>,
    ) -> Option<ReadyProbe> {
        let ready = ready?;
        let span = ready.span();
        let body = ready.get_ref();
        let port_reported = self.reported(&format!("{key}.port"));
        let key = format!("{key}.ready");
        // An unknown or mistyped probe key was reported and left out: the probe is not also "missing".
        let probe_reported = self
            .reported_keys()
            .filter_map(|k| k.strip_prefix(key.as_str())?.strip_prefix('.'))
            .any(|rest| !matches!(rest, "timeout" | "status"));
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
        if (body.status.is_some() || self.reported(&format!("{key}.status")))
            && body.http.is_none()
            && !self.reported(&format!("{key}.http"))
        {
            self.error(&span, &format!("{key}.status"), "only applies to an `http` probe".into());
        }
        let timeout =
            self.duration(body.timeout.as_ref(), &format!("{key}.timeout")).unwrap_or(DEFAULT_READY_TIMEOUT);
        if kinds.is_empty() && probe_reported {
            return None;
        }
        if kinds.len() != 1 {
            self.error(&span, &key, "set exactly one of `http`, `tcp = true`, `exec` or `log`".into());
            return None;
        }
        let probe = kinds.remove(0);
        if matches!(probe, ProbeKind::Http { .. } | ProbeKind::Tcp) && port.is_none() && !port_reported {
            self.error(&span, &key, "an `http` or `tcp` probe needs `port` to be set".into());
        }
        Some(ReadyProbe { probe, timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) })
    }

    pub(super) fn env(
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

    pub(super) fn service(&mut self, name: &Spanned<String>, body: &RawService) -> ServiceConfig {
        let key = format!("services.{}", name.get_ref());
        let mut at = Keys::new(&key);
        let port = self.port(body.port.as_ref(), at.at("port"));
        let ports = self.named_ports(body.ports.as_ref(), &key, port);
        let cwd = body.cwd.as_ref().and_then(|cwd| {
            if relative_inside(cwd.get_ref()) {
                Some(cwd.get_ref().clone())
            } else {
                self.error(
                    &cwd.span(),
                    at.at("cwd"),
                    "must be a relative path inside the checkout (no `..`, not absolute)".into(),
                );
                None
            }
        });
        ServiceConfig {
            command: self
                .non_empty(body.command.as_ref(), at.at("command"), &name.span())
                .unwrap_or_default(),
            cwd,
            port,
            ports,
            ready: self.ready(body.ready.as_ref(), &key, port),
            depends_on: body.depends_on.iter().flatten().map(|d| d.get_ref().clone()).collect(),
            env: self.env(body.env.as_ref(), &key),
            restart: self.choice(body.restart.as_ref(), at.at("restart"), RESTARTS, RestartPolicy::No),
            targets: self.choice(body.targets.as_ref(), at.at("targets"), SCOPES, TargetScope::All),
            enabled: body.enabled.unwrap_or(true),
            test: body.test.as_ref().map(|t| t.get_ref().clone()),
            migrate: body.migrate.as_ref().map(|t| t.get_ref().clone()),
            stop_grace_secs: self
                .duration(body.stop_grace.as_ref(), at.at("stop_grace"))
                .map_or(DEFAULT_STOP_GRACE_SECS, |d| d.as_secs()),
            env_file: self.relative_paths(body.env_file.as_ref(), at.at("env_file")),
            setup: self.non_blank(body.setup.as_ref(), at.at("setup")),
            setup_inputs: self.setup_inputs(body.setup.as_ref(), body.setup_inputs.as_ref(), &key, "setup"),
            setup_timeout_secs: self
                .duration(body.setup_timeout.as_ref(), at.at("setup_timeout"))
                .map_or(DEFAULT_SETUP_TIMEOUT_SECS, |d| d.as_secs().max(1)),
            test_timeout_secs: self
                .duration(body.test_timeout.as_ref(), at.at("test_timeout"))
                .map_or(DEFAULT_SUITE_TIMEOUT_SECS, |d| d.as_secs().max(1)),
            migrate_timeout_secs: self
                .duration(body.migrate_timeout.as_ref(), at.at("migrate_timeout"))
                .map_or(DEFAULT_SUITE_TIMEOUT_SECS, |d| d.as_secs().max(1)),
            test_database: self.choice(
                body.test_database.as_ref(),
                at.at("test_database"),
                TEST_DATABASES,
                TestDatabase::Clone,
            ),
        }
    }

    /// Paths that must stay inside the checkout (`env_file`, `setup_inputs`).
    pub(super) fn relative_paths(&mut self, paths: Option<&Vec<Spanned<String>>>, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for path in paths.into_iter().flatten() {
            if relative_inside(path.get_ref()) && !path.get_ref().is_empty() {
                out.push(path.get_ref().clone());
            } else {
                self.error(
                    &path.span(),
                    key,
                    format!(
                        "`{}` must be a relative path inside the checkout (no `..`, not absolute)",
                        path.get_ref()
                    ),
                );
            }
        }
        out
    }

    /// An optional command that, when given, must not be blank.
    pub(super) fn non_blank(&mut self, value: Option<&Spanned<String>>, key: &str) -> Option<String> {
        let value = value?;
        if value.get_ref().trim().is_empty() {
            self.error(&value.span(), key, "must not be empty".into());
            return None;
        }
        Some(value.get_ref().clone())
    }

    /// A setup step's inputs (`<key>.<inputs>`), which need its command (`<key>.<command>`).
    pub(super) fn setup_inputs(
        &mut self,
        command: Option<&Spanned<String>>,
        inputs: Option<&Vec<Spanned<String>>>,
        key: &str,
        command_name: &str,
    ) -> Vec<String> {
        if inputs.is_none() {
            return Vec::new();
        }
        let inputs_key =
            if command_name == "setup" { format!("{key}.setup_inputs") } else { format!("{key}.inputs") };
        if command.is_none()
            && let Some(first) = inputs.and_then(|list| list.first())
        {
            self.error(
                &first.span(),
                &inputs_key,
                format!("needs `{command_name}`, the command these inputs feed"),
            );
        }
        self.relative_paths(inputs, &inputs_key)
    }
}
