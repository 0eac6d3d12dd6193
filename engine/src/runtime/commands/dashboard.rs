//! `envctl dashboard [--snapshot] [--json]`: what runs, live. The host pushes a view on every change over its
//! control socket (`watch`); the dashboard draws it, and its keys act through envctl's own commands. With no
//! terminal, or with `--snapshot`, it prints the view once as text (`--json`: as JSON) and exits.

#[cfg(feature = "dashboard")]
mod live;

use std::io::IsTerminal as _;
use std::time::SystemTime;

use envctl_contracts::SCHEMA_VERSION;
use envctl_contracts::control::HostView;
use envctl_contracts::state::ServiceRecord;

use crate::config::Paths;
use crate::host::client::HostClient;
use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::ui::dashboard::Board;

// Arguments of `dashboard`.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Print the view once as text and exit (what it does anyway when stdout is no terminal).
    #[arg(long)]
    pub snapshot: bool,
    /// Print the view once as JSON and exit.
    #[arg(long)]
    pub json: bool,
}

/// Shows the dashboard.
pub fn exec(rt: &EngineRuntime, args: &DashboardArgs) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?.clone();
    let view = current_view(rt, &paths)?;
    if args.json {
        rt.printer().json(&view);
        return Ok(Outcome::Success);
    }
    let mut targets: Vec<String> = view.services.iter().map(|r| r.target.clone()).collect();
    targets.dedup();
    let requirements = super::requirement_urls(rt, &targets);
    let title = title_of(&paths);
    let once = args.snapshot || !std::io::stdout().is_terminal();
    #[cfg(feature = "dashboard")]
    if !once {
        return live::run(rt, &paths, view, title, requirements);
    }
    // A build without the `dashboard` feature always prints the text view.
    #[cfg(not(feature = "dashboard"))]
    let _ = once;
    rt.printer().data(&Board::new(&title, &view, &requirements, SystemTime::now()).text());
    Ok(Outcome::Success)
}

/// The host's view when one answers, else the saved state's.
fn current_view(rt: &EngineRuntime, paths: &Paths) -> Result<HostView, EngineError> {
    if let Some(client) = HostClient::connect(paths) {
        let mut first = None;
        if client
            .watch(|v| {
                first = Some(v);
                false
            })
            .is_ok()
            && let Some(view) = first
        {
            return Ok(view);
        }
    }
    let state = rt.state()?.run_state()?;
    Ok(HostView {
        schema_version: SCHEMA_VERSION,
        seq: 0,
        host: None,
        run_id: state.as_ref().map(|s| s.run_id.clone()).unwrap_or_default(),
        services: state
            .map(|s| s.services.into_iter().map(|r| ServiceRecord { spec: None, ..r }).collect())
            .unwrap_or_default(),
        jobs: None,
    })
}

fn title_of(paths: &Paths) -> String {
    paths
        .repo_root
        .file_name()
        .map_or_else(|| paths.repo_root.display().to_string(), |n| n.to_string_lossy().into_owned())
}
