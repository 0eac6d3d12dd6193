//! `[jobs]` and `[jobs.types.<name>]`.

use std::collections::BTreeMap;

use envctl_contracts::config::{
    DEFAULT_JOBS_BIND, DEFAULT_JOBS_PORT, JobTypeConfig, JobsBackend, JobsConfig, Priority,
};

use super::{Checker, valid_name};
use crate::config::raw::RawConfig;

const BACKENDS: &[(&str, JobsBackend)] =
    &[("embedded", JobsBackend::Embedded), ("redis", JobsBackend::Redis)];
const PRIORITIES: &[(&str, Priority)] = &[
    ("low", Priority::Low),
    ("normal", Priority::Normal),
    ("high", Priority::High),
    ("critical", Priority::Critical),
];

impl Checker<'_> {
    pub(super) fn jobs(&mut self, raw: &RawConfig) -> JobsConfig {
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
            }
            let Some(body) = body else { continue };
            let command = self
                .non_empty(body.command.as_ref(), &format!("{key}.command"), &name.span())
                .unwrap_or_default();
            let attempts = self.positive(body.max_attempts.as_ref(), &format!("{key}.max_attempts"), 3);
            let timeout_secs =
                self.duration(body.timeout.as_ref(), &format!("{key}.timeout")).map(|d| d.as_secs().max(1));
            let priority =
                self.choice(body.priority.as_ref(), &format!("{key}.priority"), PRIORITIES, Priority::Normal);
            let max_attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            if valid {
                types.insert(
                    name.get_ref().clone(),
                    JobTypeConfig { command, max_attempts, timeout_secs, priority },
                );
            }
        }
        JobsConfig {
            backend: self.choice(jobs.backend.as_ref(), "jobs.backend", BACKENDS, JobsBackend::Embedded),
            redis_url: jobs.redis_url.as_ref().map(|u| u.get_ref().clone()),
            redis_prefix: jobs
                .redis_prefix
                .as_ref()
                .map_or_else(|| "envctl".to_owned(), |p| p.get_ref().clone()),
            lease_secs: self.positive(jobs.lease_secs.as_ref(), "jobs.lease_secs", 30),
            bind: self.bind_address(jobs.bind.as_ref()),
            port: self.port(jobs.port.as_ref(), "jobs.port").unwrap_or(DEFAULT_JOBS_PORT),
            types,
        }
    }

    /// `jobs.bind`: an IP address the managed job server can listen on.
    fn bind_address(&mut self, value: Option<&toml::Spanned<String>>) -> String {
        let Some(value) = value else { return DEFAULT_JOBS_BIND.to_owned() };
        if let Ok(ip) = value.get_ref().trim().parse::<std::net::IpAddr>() {
            return ip.to_string();
        }
        self.error(
            &value.span(),
            "jobs.bind",
            format!(
                "{:?} is not an IP address; use 127.0.0.1 (this machine only, the default), 0.0.0.0 (every interface) or one interface's address",
                value.get_ref()
            ),
        );
        DEFAULT_JOBS_BIND.to_owned()
    }
}
