//! `envctl list-targets [--json]`: main and every worktree, with planned ports.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::ports::PortPlan;
use envctl_contracts::targets::{TargetInfo, TargetList};

use crate::config::Settings;
use crate::plan::{PortTable, plan_ports};
use crate::ports::{named_owner, server_owner};
use crate::runtime::cli::ListTargetsArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::targets::Target;
use crate::ui::Table;

/// The ports one target uses: its services' and the requirements' servers it connects to, named ones as
/// `<name>.ports.<port>`.
fn ports_of(settings: &Settings, target: &Target, table: &PortTable) -> BTreeMap<String, PortPlan> {
    let mut out = BTreeMap::new();
    let mut add = |owner: &str, name: &str, ports: &BTreeMap<String, u16>| {
        let names = std::iter::once(name.to_owned()).chain(ports.keys().map(|p| named_owner(name, p)));
        for key in names {
            if let Some(plan) = table.get(owner, &key) {
                out.insert(key, *plan);
            }
        }
    };
    for (name, req) in
        settings.config.requirements.iter().filter(|(_, r)| r.enabled && target.in_scope(r.targets))
    {
        add(server_owner(req.isolation, target), name, &req.ports);
    }
    for (name, service) in
        settings.config.services.iter().filter(|(_, s)| s.enabled && target.in_scope(s.targets))
    {
        add(&target.name, name, &service.ports);
    }
    out
}

/// Lists the targets.
pub fn exec(rt: &EngineRuntime, args: &ListTargetsArgs) -> Result<Outcome, EngineError> {
    let settings = rt.settings()?;
    let targets = rt.targets()?;
    let all: Vec<&Target> = targets.all.iter().collect();
    let table = plan_ports(settings, &all)?;
    let running: Vec<String> = match rt.state()?.run_state() {
        Ok(state) => state.map(|s| s.services.into_iter().map(|r| r.target).collect()).unwrap_or_default(),
        Err(err) => {
            rt.printer().warn(&err.to_string());
            Vec::new()
        }
    };
    let list = TargetList {
        schema_version: SCHEMA_VERSION,
        repo_root: settings.paths.repo_root.display().to_string(),
        targets: all
            .iter()
            .map(|t| TargetInfo {
                name: t.name.clone(),
                kind: t.kind,
                root: t.root.display().to_string(),
                branch: t.branch.clone(),
                slot: t.slot,
                state_present: running.contains(&t.name),
                ports: ports_of(settings, t, &table),
            })
            .collect(),
        skipped: targets.skipped.clone(),
        job_server: super::job_server(rt)?,
    };
    for skipped in &list.skipped {
        rt.printer().warn(&format!("worktree skipped: {skipped}"));
    }
    if args.json {
        rt.printer().json(&list);
        return Ok(Outcome::Success);
    }
    let mut out = Table::new(&["TARGET", "BRANCH", "PORTS", "ROOT"]);
    for t in &list.targets {
        let ports: Vec<String> = t
            .ports
            .iter()
            .map(|(name, p)| {
                if p.assigned == p.requested {
                    format!("{name}={}", p.assigned)
                } else {
                    format!("{name}={} (wanted {})", p.assigned, p.requested)
                }
            })
            .collect();
        out.row(vec![
            t.name.clone(),
            t.branch.clone().unwrap_or_else(|| "(detached)".into()),
            ports.join(" "),
            t.root.clone(),
        ]);
    }
    let mut text = out.render();
    if let Some(server) = &list.job_server {
        let _ = writeln!(text, "job server: {} ({})", server.url, super::job_server_status(server));
    }
    rt.printer().data(&text);
    Ok(Outcome::Success)
}
