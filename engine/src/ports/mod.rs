//! Port planning and the lease ledger.
//!
//! How it works: every service and requirement asks for its base port plus its target's slot (0 for main). The
//! ledger — one JSON file per leased port in a directory shared by every repository of this user — remembers who
//! holds which port. An owner (repository, target, service) that already holds a lease keeps that port, so a
//! target keeps its ports from run to run. Otherwise the planner walks upward from the requested port past ports
//! leased by live owners and ports something else is listening on. A lease whose holder process (pid and start
//! time) is gone is stale and may be taken over.
//!
//! A named port (`ports = { web = 1080 }`) is one more request of its own, owned by `<name>.ports.<port name>`
//! ([`named_owner`]), planned, leased and released exactly like the entry's `port`.

mod ledger;

pub use ledger::{Ledger, PortError};

use std::collections::BTreeMap;

use envctl_contracts::config::Isolation;
use envctl_contracts::ports::LeaseOwner;

use crate::config::Settings;
use crate::targets::Target;

/// One port someone needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    /// Who it is for.
    pub owner: LeaseOwner,
    /// The configured base port.
    pub base: u16,
    /// The target's slot (added to `base`).
    pub slot: u16,
}

impl PortRequest {
    /// The port asked for: base plus slot, saturating at the top of the range.
    pub fn requested(&self) -> u16 {
        self.base.saturating_add(self.slot)
    }
}

/// Whether nothing is listening on `port` on the loopback interface (a bind there succeeds).
pub fn is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The target whose server a requirement of `target` uses: itself for per-target servers, `main` otherwise.
pub fn server_owner(isolation: Isolation, target: &Target) -> &str {
    if isolation == Isolation::Server { &target.name } else { "main" }
}

/// Who holds the named port `port` of service or requirement `name` in the ledger: `<name>.ports.<port>`.
pub fn named_owner(name: &str, port: &str) -> String {
    format!("{name}.ports.{port}")
}

/// Whether a lease owned by `owner` (a service name in the ledger) belongs to `name`: its `port` or a named one.
pub fn belongs_to(owner: &str, name: &str) -> bool {
    owner == name || owner.strip_prefix(name).is_some_and(|rest| rest.starts_with(".ports."))
}

/// The ledger names of `plan`'s ports (its `port`, then each named one) that were moved off the port they asked
/// for: the leases a stop gives up, so the next start asks for the requested ports again.
pub fn moved(plan: &envctl_contracts::startup::ServicePlan) -> Vec<String> {
    let moved = |p: &envctl_contracts::ports::PortPlan| p.assigned != p.requested;
    let main = plan.port.filter(moved).map(|_| plan.name.clone());
    let named = plan.ports.iter().filter(|(_, p)| moved(p)).map(|(port, _)| named_owner(&plan.name, port));
    main.into_iter().chain(named).collect()
}

/// The requests of one entry of `target_name` (its `port`, when it has one, then each named port).
fn entry_requests<'a>(
    repo: &'a str,
    target_name: &'a str,
    slot: u16,
    name: &'a str,
    (port, ports): (Option<u16>, &'a BTreeMap<String, u16>),
) -> impl Iterator<Item = PortRequest> + 'a {
    let owner =
        move |service: String| LeaseOwner { repo: repo.to_owned(), target: target_name.to_owned(), service };
    let main = port.map(|base| PortRequest { owner: owner(name.to_owned()), base, slot });
    let named = ports.iter().map(move |(port_name, base)| PortRequest {
        owner: owner(named_owner(name, port_name)),
        base: *base,
        slot,
    });
    main.into_iter().chain(named)
}

/// Port requests for every enabled service and requirement of `targets` (each named port too), deduplicated (a
/// shared server is requested once).
pub fn requests(settings: &Settings, targets: &[&Target]) -> Vec<PortRequest> {
    let repo = settings.paths.repo_root.display().to_string();
    let mut out: Vec<PortRequest> = Vec::new();
    let mut push = |request: PortRequest| {
        if !out.iter().any(|r| r.owner == request.owner) {
            out.push(request);
        }
    };
    for target in targets {
        for (name, req) in &settings.config.requirements {
            if !req.enabled || !target.in_scope(req.targets) {
                continue;
            }
            let owner_target = server_owner(req.isolation, target);
            let slot = if owner_target == "main" { 0 } else { target.slot };
            entry_requests(&repo, owner_target, slot, name, (Some(req.port), &req.ports)).for_each(&mut push);
        }
        for (name, service) in &settings.config.services {
            if !service.enabled || !target.in_scope(service.targets) {
                continue;
            }
            entry_requests(&repo, &target.name, target.slot, name, (service.port, &service.ports))
                .for_each(&mut push);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ports_are_owned_apart_and_belong_to_their_entry() {
        assert_eq!(named_owner("mail", "web"), "mail.ports.web");
        assert!(belongs_to("mail.ports.web", "mail") && belongs_to("mail", "mail"));
        assert!(!belongs_to("mailer.ports.web", "mail") && !belongs_to("mailer", "mail"));
    }
}
