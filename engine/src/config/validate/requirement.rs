//! `[requirements.<name>]`: adapter defaults, isolation, port, named ports (`command` only), command, seed and its
//! timeout, probe.

use std::ops::Range;

use envctl_contracts::config::{
    Adapter, DEFAULT_SEED_TIMEOUT_SECS, Isolation, RequirementConfig, TargetScope,
};
use toml::Spanned;

use super::{Checker, SCOPES};
use crate::config::raw::RawRequirement;

const ADAPTERS: &[(&str, Adapter)] =
    &[("postgres", Adapter::Postgres), ("redis", Adapter::Redis), ("command", Adapter::Command)];
const ISOLATIONS: &[(&str, Isolation)] =
    &[("server", Isolation::Server), ("database", Isolation::Database), ("db-index", Isolation::DbIndex)];

impl Checker<'_> {
    /// Postgres and Redis listen on `port` alone.
    fn no_named_ports(&mut self, body: &RawRequirement, key: &str) {
        if let Some((first, _)) = body.ports.iter().flatten().next() {
            self.error(
                &first.span(),
                &format!("{key}.ports"),
                "only `command` requirements take named ports (postgres and redis listen on `port` alone)"
                    .into(),
            );
        }
    }

    pub(super) fn requirement(&mut self, name: &Spanned<String>, body: &RawRequirement) -> RequirementConfig {
        let key = format!("requirements.{}", name.get_ref());
        let default_adapter = match name.get_ref().as_str() {
            "postgres" => Adapter::Postgres,
            "redis" => Adapter::Redis,
            _ => Adapter::Command,
        };
        let adapter =
            self.choice(body.adapter.as_ref(), &format!("{key}.adapter"), ADAPTERS, default_adapter);
        // With the adapter reported, checks of what that adapter allows would only guess.
        let adapter_known = !self.reported(&format!("{key}.adapter"));
        // A key whose value was reported and left out is still there as far as "does not apply here" goes.
        let present = |checker: &Self, value: Option<Range<usize>>, field: &str| {
            value.or_else(|| checker.reported_at(&format!("{key}.{field}")))
        };
        let (default_isolation, allowed, default_port): (Isolation, &[Isolation], Option<u16>) = match adapter
        {
            Adapter::Postgres => (Isolation::Database, &[Isolation::Database, Isolation::Server], Some(5432)),
            Adapter::Redis => (Isolation::Server, &[Isolation::Server, Isolation::DbIndex], Some(6379)),
            Adapter::Command => (Isolation::Server, &[Isolation::Server], None),
        };
        let isolation =
            self.choice(body.isolation.as_ref(), &format!("{key}.isolation"), ISOLATIONS, default_isolation);
        let isolation = if allowed.contains(&isolation) || !adapter_known {
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
        if port.is_none() && body.port.is_none() && adapter_known && !self.reported(&format!("{key}.port")) {
            self.error(
                &name.span(),
                &format!("{key}.port"),
                "is required for a `command` requirement".into(),
            );
        }
        let ports = self.named_ports(body.ports.as_ref(), &key, port);
        if adapter_known && adapter != Adapter::Command {
            self.no_named_ports(body, &key);
        }
        let command = body.command.as_ref().map(|c| c.get_ref().clone());
        let command_at = present(self, body.command.as_ref().map(Spanned::span), "command");
        match (adapter, command_at) {
            _ if !adapter_known => {}
            (Adapter::Command, None) => self.error(&name.span(), &format!("{key}.command"), "is required for a `command` requirement".into()),
            (Adapter::Postgres | Adapter::Redis, Some(at)) => self.error(
                &at,
                &format!("{key}.command"),
                "only `command` requirements take a command; set `adapter = \"command\"` to run your own server".into(),
            ),
            _ => {}
        }
        for (field, value) in [
            ("seed", body.seed.as_ref().map(Spanned::span)),
            ("seed_timeout", body.seed_timeout.as_ref().map(Spanned::span)),
        ] {
            if let Some(at) = present(self, value, field)
                && adapter_known
                && adapter != Adapter::Postgres
            {
                self.error(&at, &format!("{key}.{field}"), "only applies to postgres requirements".into());
            }
        }
        let seed_timeout_secs = self
            .duration(body.seed_timeout.as_ref(), &format!("{key}.seed_timeout"))
            .map_or(DEFAULT_SEED_TIMEOUT_SECS, |d| d.as_secs().max(1));
        let ready_given = body.ready.is_some() || self.reported(&format!("{key}.ready"));
        let ready = self.ready(body.ready.as_ref(), &key, port);
        if ready_given && adapter_known && adapter != Adapter::Command {
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
            ports,
            command,
            ready,
            env: self.env(body.env.as_ref(), &key),
            targets: self.choice(body.targets.as_ref(), &format!("{key}.targets"), SCOPES, TargetScope::All),
            enabled: body.enabled.unwrap_or(true),
            seed: body.seed.as_ref().map(|s| s.get_ref().clone()),
            seed_timeout_secs,
        }
    }
}
