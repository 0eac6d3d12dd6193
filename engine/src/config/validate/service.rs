//! `[services.<name>]`: command, cwd, port, named ports, readiness probe, env, restart, targets, stop grace.

use std::collections::BTreeMap;

use envctl_contracts::config::{ProbeKind, ReadyProbe, RestartPolicy, ServiceConfig, TargetScope};
use toml::Spanned;

use super::{
    Checker, DEFAULT_READY_TIMEOUT, DEFAULT_STOP_GRACE_SECS, SCOPES, relative_inside, valid_env_key,
};
use crate::config::raw::{RawReady, RawService};

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
        let port = self.port(body.port.as_ref(), &format!("{key}.port"));
        let ports = self.named_ports(body.ports.as_ref(), &key, port);
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
            ports,
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
            migrate: body.migrate.as_ref().map(|t| t.get_ref().clone()),
            stop_grace_secs: self
                .duration(body.stop_grace.as_ref(), &format!("{key}.stop_grace"))
                .map_or(DEFAULT_STOP_GRACE_SECS, |d| d.as_secs()),
        }
    }
}
