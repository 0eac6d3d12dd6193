//! Named ports: `ports = { smtp = 1025, web = 1080 }` of a service or requirement, and the `{ports.<name>}` and
//! `{<entry>.ports.<name>}` placeholders that name them.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::Checker;
use crate::config::raw::{RawPorts, RawRequirement};
use crate::config::template;

/// The port names each service and requirement of the file declares, by entry name.
pub(super) type NamedPorts<'a> = BTreeMap<&'a str, BTreeSet<&'a str>>;

/// Port names: lower-case letters, digits and `_` (each becomes `PORT_<NAME>`).
pub(super) fn valid_port_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Every entry's declared port names, whatever else is wrong with them (a misspelt reference is reported once, as
/// the reference's problem, only when the name is really not there).
pub(super) fn declared<'a>(entries: impl Iterator<Item = (&'a str, Option<&'a RawPorts>)>) -> NamedPorts<'a> {
    entries
        .map(|(name, ports)| (name, ports.into_iter().flatten().map(|(p, _)| p.get_ref().as_str()).collect()))
        .collect()
}

impl Checker<'_> {
    /// The named ports of `key` (`services.mail`), checked: names `[a-z0-9_]+`, ports 1–65535, no number twice,
    /// none that is `port`'s.
    pub(super) fn named_ports(
        &mut self,
        ports: Option<&RawPorts>,
        key: &str,
        port: Option<u16>,
    ) -> BTreeMap<String, u16> {
        let mut out = BTreeMap::new();
        for (name, value) in ports.into_iter().flatten() {
            let at = format!("{key}.ports.{}", name.get_ref());
            let valid = valid_port_name(name.get_ref());
            if !valid {
                self.error(
                    &name.span(),
                    &at,
                    "port names use lower-case letters, digits and `_` (each becomes `PORT_<NAME>`)".into(),
                );
            }
            let Some(number) = self.port(Some(value), &at) else { continue };
            let clash = if port == Some(number) {
                Some("`port`".to_owned())
            } else {
                out.iter().find(|(_, n)| **n == number).map(|(other, _)| format!("`ports.{other}`"))
            };
            if let Some(other) = clash {
                self.error(
                    &value.span(),
                    &at,
                    format!("{number} is also {other} of {key}; give each port a number of its own"),
                );
            } else if valid {
                out.insert(name.get_ref().clone(), number);
            }
        }
        out
    }

    /// Reports each `{ports.<name>}` (of `owner` itself) and `{<entry>.ports.<name>}` in `text` (at `key`) that
    /// names a port nobody declared.
    pub(super) fn check_named_port_refs(
        &mut self,
        owner: &str,
        text: &Spanned<String>,
        key: &str,
        named: &NamedPorts<'_>,
    ) {
        for p in template::placeholders(text.get_ref()) {
            let Some((entry, port)) = p.named_port(owner) else { continue };
            let written = &text.get_ref()[p.range.clone()];
            let message = match named.get(entry) {
                None => format!("`{written}` names `{entry}`, which is not a service or requirement"),
                Some(ports) if ports.contains(port) => continue,
                Some(ports) => {
                    let whose = if entry == owner { "this entry".to_owned() } else { format!("`{entry}`") };
                    let listing = if ports.is_empty() {
                        format!("it has no named ports; add `ports = {{ {port} = … }}` to it")
                    } else {
                        format!("its ports: {}", ports.iter().copied().collect::<Vec<_>>().join(", "))
                    };
                    format!("`{written}`: {whose} has no port named `{port}` ({listing})")
                }
            };
            self.error(&text.span(), key, message);
        }
    }

    /// [`Self::check_named_port_refs`] for a requirement's `command` and `env` values.
    pub(super) fn check_requirement_port_refs(
        &mut self,
        name: &str,
        body: &RawRequirement,
        named: &NamedPorts<'_>,
    ) {
        let key = format!("requirements.{name}");
        if let Some(command) = &body.command {
            self.check_named_port_refs(name, command, &format!("{key}.command"), named);
        }
        for (var, value) in body.env.iter().flatten() {
            self.check_named_port_refs(name, value, &format!("{key}.env.{}", var.get_ref()), named);
        }
    }
}
