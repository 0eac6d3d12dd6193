//! `envctl show-state [--json]`: the last saved run; exit 1 with `{"found": false}` when there is none.

use std::fmt::Write as _;

use envctl_contracts::state::ShowState;

use crate::runtime::{EngineError, EngineRuntime, Outcome};
use crate::ui::Table;

// Arguments of `show-state`.
#[derive(Debug, clap::Args)]
pub struct ShowStateArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the saved state.
pub fn exec(rt: &EngineRuntime, args: &ShowStateArgs) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    let repo = rt.state()?;
    let run_state = repo.run_state()?;
    let runtime_map = repo.runtime_map()?;
    let found = run_state.is_some();
    let scope_dir = Some(paths.scope_dir.display().to_string()).filter(|_| found);
    let shown = ShowState { found, scope_dir, run_state, runtime_map };
    if args.json {
        rt.printer().json(&shown);
        // The process ends next (see show-config): the state of many services is not freed piece by piece.
        std::mem::forget(shown);
    } else if let Some(state) = &shown.run_state {
        let mut out = format!(
            "run: {} ({}, {})\nupdated: {}\n",
            state.run_id,
            state.command,
            state.targets.join(", "),
            state.updated_at
        );
        if let Some(failure) = &state.failure {
            let _ = writeln!(out, "failed: {failure}");
        }
        let mut table = Table::new(&["TARGET", "SERVICE", "STATUS", "PID", "PORT"]);
        for s in &state.services {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            table.row(vec![
                s.target.clone(),
                s.service.clone(),
                format!("{:?}", s.status).to_lowercase(),
                opt(s.pid.map(|p| p.to_string())),
                opt(s.port.map(|p| p.to_string())),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
        rt.printer().data(&out);
    } else {
        rt.printer().note("no saved state for this repository (nothing has been started yet)");
    }
    Ok(if found { Outcome::Success } else { Outcome::Failure })
}
