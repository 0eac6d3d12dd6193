//! `envctl env [--main | --tree NAME] [--service S] [--json]`: the variables envctl gives a target's services
//! (ports, URLs, projected requirement variables), so shells, IDEs and test runners use the same values.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::inspect::EnvReport;

use crate::plan::{explain, plan_ports};
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::targets::Selection;

/// The variable the Redis job store's URL is exported in.
pub const JOBS_URL_VAR: &str = "ENVCTL_JOBS_URL";

// Arguments of `env`.
#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// The main checkout (default: the checkout you are in).
    #[arg(long, conflicts_with = "tree")]
    pub main: bool,
    /// A worktree by name.
    #[arg(long, value_name = "NAME")]
    pub tree: Option<String>,
    /// Only this service.
    #[arg(long, value_name = "S")]
    pub service: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the environment.
pub fn exec(rt: &EngineRuntime, args: &EnvArgs) -> Result<Outcome, EngineError> {
    let settings = rt.settings()?;
    let targets = rt.targets()?;
    let selection = match (&args.tree, args.main) {
        (Some(name), _) => Selection::Trees(vec![name.clone()]),
        (None, true) => Selection::Main,
        (None, false) => {
            let here = targets.containing(rt.cwd()).map_or_else(|| "main".to_owned(), |t| t.name.clone());
            Selection::Trees(vec![here])
        }
    };
    let selected = rt.select(&selection)?;
    let ports = plan_ports(settings, &selected)?;
    let plan = explain(settings, &selected, &ports, rt.env());
    let Some(target) = plan.targets.into_iter().next() else {
        return Err(EngineError::Failed("no target selected".into()));
    };
    let mut services: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut sources: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for service in target.services {
        if !service.env_sources.is_empty() {
            sources.insert(service.name.clone(), service.env_sources);
        }
        services.insert(service.name, crate::plan::without_process_marks(service.env));
    }
    if let Some(name) = &args.service {
        let Some(env) = services.remove(name) else {
            let names: Vec<&str> = services.keys().map(String::as_str).collect();
            return Err(EngineError::Failed(format!(
                "`{name}` is not a service of {} (its services: {})",
                target.name,
                if names.is_empty() { "none".to_owned() } else { names.join(", ") }
            )));
        };
        services = BTreeMap::from([(name.clone(), env)]);
        sources.retain(|service, _| service == name);
    }
    // Where the repository's Redis job store is, password included, so a worker elsewhere can be pointed at it
    // (`envctl worker --backend "$ENVCTL_JOBS_URL"`).
    let jobs_url = crate::plan::job_store_url(settings)?;
    if let Some(url) = &jobs_url {
        for env in services.values_mut() {
            env.insert(JOBS_URL_VAR.into(), url.clone());
        }
    }
    let report =
        EnvReport { schema_version: SCHEMA_VERSION, target: target.name, services, sources, jobs_url };
    if args.json {
        rt.printer().json(&report);
        return Ok(Outcome::Success);
    }
    let mut out = String::new();
    if let (true, Some(url)) = (report.services.is_empty(), &report.jobs_url) {
        let _ = writeln!(out, "export {JOBS_URL_VAR}={}", crate::config::template::shell_word(url));
    }
    let many = report.services.len() > 1;
    for (service, env) in &report.services {
        if many {
            let _ = writeln!(out, "# {}/{service}", report.target);
        }
        let sources = report.sources.get(service);
        for (key, value) in env {
            let _ = write!(out, "export {key}={}", crate::config::template::shell_word(value));
            if let Some(source) = sources.and_then(|s| s.get(key)) {
                let _ = write!(out, "  # {source}");
            }
            out.push('\n');
        }
    }
    rt.printer().data(&out);
    Ok(Outcome::Success)
}
