//! `envctl blast-all`: stops every process recorded in any state of this repository (the latest view and every
//! run), stops the host, releases every port lease of this repository and removes the control socket. Every
//! process is checked by pid and start time first: nothing envctl did not start is touched.

use crate::host::direct;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

// Arguments of `blast-all`.
#[derive(Debug, clap::Args)]
pub struct BlastAllArgs {}

/// Stops everything this repository's envctl started.
pub fn exec(rt: &EngineRuntime, _args: &BlastAllArgs) -> Result<Outcome, EngineError> {
    let blasted = rt.block_on(direct::blast_all(rt.paths()?, &rt.ledger()?, &rt.state()?))??;
    if let Some(server) = rt.block_on(crate::jobs::server::stop(rt.paths()?))?? {
        rt.printer()
            .note(&format!("blast-all: stopped the job server (pid {}, port {})", server.pid, server.port));
    }
    rt.printer().note(&format!(
        "blast-all: stopped {} process(es), released {} port lease(s)",
        blasted.stopped, blasted.released
    ));
    Ok(Outcome::Success)
}
