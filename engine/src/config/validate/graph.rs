//! Cross-references: `depends_on` targets, placeholders naming other services, dependency cycles.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::Checker;
use super::ports::NamedPorts;
use crate::config::raw::{RawRequirement, RawService};
use crate::config::{suggest, template};

/// The name `{jobs.url}` and its kin refer to: the job runtime's Redis store (unless a service or requirement has
/// the name).
const JOB_STORE: &str = "jobs";
/// What `{jobs.…}` offers.
const JOB_STORE_ATTRS: &[&str] = &["url", "port", "host", "password"];

impl Checker<'_> {
    pub(super) fn check_references(
        &mut self,
        service: &str,
        body: &RawService,
        known: &[&str],
        requirements: &BTreeSet<&str>,
        named: &NamedPorts<'_>,
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
                let hint =
                    suggest(dep_name, known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
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
            .chain(body.setup.iter().map(|c| (c, "setup".to_owned())))
            .chain(body.test.iter().map(|t| (t, "test".to_owned())))
            .chain(body.migrate.iter().map(|m| (m, "migrate".to_owned())))
            .chain(body.env.iter().flatten().map(|(k, v)| (v, format!("env.{}", k.get_ref()))));
        for (text, field) in texts {
            let key = format!("{key}.{field}");
            self.check_named_port_refs(service, text, &key, named);
            self.check_placeholders(service, text, &key, known, requirements);
        }
    }

    /// Checks the placeholders of a requirement's `command`, `seed` and `env` values as a service's are checked.
    pub(super) fn check_requirement_references(
        &mut self,
        name: &str,
        body: &RawRequirement,
        known: &[&str],
        requirements: &BTreeSet<&str>,
    ) {
        let key = format!("requirements.{name}");
        let texts = body
            .command
            .iter()
            .map(|c| (c, "command".to_owned()))
            .chain(body.seed.iter().map(|s| (s, "seed".to_owned())))
            .chain(body.env.iter().flatten().map(|(k, v)| (v, format!("env.{}", k.get_ref()))));
        for (text, field) in texts {
            self.check_placeholders(name, text, &format!("{key}.{field}"), known, requirements);
        }
    }

    /// Reports each `{name.attr}` in `text` that names no service or requirement, or an attribute it does not
    /// offer, under `key`.
    pub(super) fn check_placeholders(
        &mut self,
        own: &str,
        text: &Spanned<String>,
        key: &str,
        known: &[&str],
        requirements: &BTreeSet<&str>,
    ) {
        for p in template::placeholders(text.get_ref()) {
            // Named ports (`{ports.web}`, `{mail.ports.web}`) are checked on their own.
            let Some(attr) = p.attr.filter(|_| p.named_port(own).is_none()) else { continue };
            let job_store = p.name == JOB_STORE && !known.contains(&p.name);
            let problem = if job_store {
                (!JOB_STORE_ATTRS.contains(&attr)).then(|| {
                    format!("`{{{}.{attr}}}`: the job store offers {}", p.name, JOB_STORE_ATTRS.join(", "))
                })
            } else if !known.contains(&p.name) {
                let listing = if known.is_empty() {
                    "none are defined".to_owned()
                } else {
                    format!("known: {}", known.join(", "))
                };
                let hint =
                    suggest(p.name, known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                Some(format!(
                    "`{{{}.{attr}}}` names `{}`, which is not a service or requirement ({listing}){hint}",
                    p.name, p.name
                ))
            } else if !template::ATTRS.contains(&attr) {
                Some(format!(
                    "`{{{}.{attr}}}`: `{attr}` is not one of {}",
                    p.name,
                    template::ATTRS.join(", ")
                ))
            } else if !requirements.contains(p.name) && !matches!(attr, "url" | "port" | "host") {
                Some(format!("`{{{}.{attr}}}`: services offer url, port and host", p.name))
            } else {
                None
            };
            if let Some(message) = problem {
                self.error(&text.span(), key, message);
            }
        }
    }

    /// Reports each dependency cycle among services once, with its path. A service naming itself is reported by
    /// [`Self::check_references`], so it is no cycle here.
    pub(super) fn check_cycles(&mut self, services: &[(Spanned<String>, Option<RawService>)]) {
        let graph: BTreeMap<&str, Vec<&str>> = services
            .iter()
            .map(|(name, body)| {
                let name = name.get_ref().as_str();
                (
                    name,
                    depends_on(body.as_ref()).map(|d| d.get_ref().as_str()).filter(|d| *d != name).collect(),
                )
            })
            .collect();
        let mut reported = BTreeSet::new();
        for (name, body) in services {
            let mut stack = vec![name.get_ref().as_str()];
            if let Some(cycle) = find_cycle(&graph, &mut stack) {
                let members: BTreeSet<&str> = cycle.iter().copied().collect();
                if reported.insert(members) {
                    let span = depends_on(body.as_ref()).next().map_or_else(|| name.span(), Spanned::span);
                    self.error(
                        &span,
                        &format!("services.{}.depends_on", name.get_ref()),
                        format!("dependency cycle: {}", cycle.join(" -> ")),
                    );
                }
            }
        }
    }
}

/// A service's `depends_on` entries (none when its body could not be read).
fn depends_on(body: Option<&RawService>) -> impl Iterator<Item = &Spanned<String>> {
    body.into_iter().flat_map(|b| b.depends_on.iter().flatten())
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
