//! `envctl endpoints [targets] [--json]`: URLs and ports of the running services.

use std::collections::BTreeMap;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::inspect::EndpointList;
use envctl_contracts::state::Endpoint;

use super::selected_records;
use crate::runtime::cli::TargetArgs;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::ui::Table;

// Arguments of `endpoints`.
#[derive(Debug, clap::Args)]
pub struct EndpointsArgs {
    /// Which targets (default: every running target).
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Lists endpoints; a requested target that is not running is an error.
pub fn exec(rt: &EngineRuntime, args: &EndpointsArgs) -> Result<Outcome, EngineError> {
    let records = selected_records(rt, &args.targets, &[])?;
    for name in &args.targets.tree {
        if !records.iter().any(|r| &r.target == name) {
            return Err(EngineError::Failed(format!(
                "`{name}` is not running\nhint: `envctl start --tree {name}` starts it"
            )));
        }
    }
    let mut targets: BTreeMap<String, BTreeMap<String, Endpoint>> = BTreeMap::new();
    for r in records {
        targets
            .entry(r.target)
            .or_default()
            .insert(r.service, Endpoint { port: r.port, ports: r.ports, url: r.url, status: r.status });
    }
    let names: Vec<String> = targets.keys().cloned().collect();
    let requirements = super::requirement_urls(rt, &names);
    let job_server = super::job_server(rt)?;
    let list = EndpointList { schema_version: SCHEMA_VERSION, targets, requirements, job_server };
    if args.json {
        rt.printer().json(&list);
    } else {
        let mut table = Table::new(&["TARGET", "SERVICE", "URL", "STATUS", "PORTS"]);
        for (target, services) in &list.targets {
            for (service, e) in services {
                let url = e
                    .url
                    .clone()
                    .or_else(|| e.port.map(|p| format!("port {p}")))
                    .unwrap_or_else(|| "-".into());
                table.row(vec![
                    target.clone(),
                    service.clone(),
                    url,
                    format!("{:?}", e.status).to_lowercase(),
                    named_ports_text(&e.ports),
                ]);
            }
            for (name, url) in list.requirements.get(target).into_iter().flatten() {
                table.row(vec![target.clone(), name.clone(), url.clone(), "requirement".into(), "-".into()]);
            }
        }
        if let Some(server) = &list.job_server {
            table.row(vec![
                "(repository)".into(),
                "jobs".into(),
                server.url.clone(),
                super::job_server_status(server),
                "-".into(),
            ]);
        }
        rt.printer().data(&table.render());
    }
    Ok(Outcome::Success)
}

/// Named ports as `smtp=1025 web=1080`, or `-`.
pub fn named_ports_text(ports: &BTreeMap<String, u16>) -> String {
    if ports.is_empty() {
        return "-".into();
    }
    ports.iter().map(|(name, port)| format!("{name}={port}")).collect::<Vec<_>>().join(" ")
}
