//! Port planning and the lease ledger.
//!
//! How it works: every service and requirement asks for its base port plus its target's slot (0 for main). The
//! ledger — one JSON file per leased port in a directory shared by every repository of this user — remembers who
//! holds which port. An owner (repository, target, service) that already holds a lease keeps that port, so a
//! target keeps its ports from run to run. Otherwise the planner walks upward from the requested port past ports
//! leased by live owners and ports something else is listening on. A lease whose holder process (pid and start
//! time) is gone is stale and may be taken over.

mod ledger;

pub use ledger::{Ledger, PortError};

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

/// Port requests for every enabled service and requirement of `targets`, deduplicated (a shared server is
/// requested once).
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
            let owner =
                LeaseOwner { repo: repo.clone(), target: owner_target.to_owned(), service: name.clone() };
            push(PortRequest { owner, base: req.port, slot });
        }
        for (name, service) in &settings.config.services {
            let Some(base) = service.port.filter(|_| service.enabled && target.in_scope(service.targets))
            else {
                continue;
            };
            let owner = LeaseOwner { repo: repo.clone(), target: target.name.clone(), service: name.clone() };
            push(PortRequest { owner, base, slot: target.slot });
        }
    }
    out
}
