//! `envctl resume`: a host adopts every service still running from the saved state (same pid and start time),
//! restarts the ones that are gone, and reports live services whose port nothing of theirs listens on.

use envctl_contracts::control::{Reply, Request, ResumeRequest};

use super::report_start;
use crate::host::client::HostClient;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

// Arguments of `resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {}

/// Resumes the saved environment.
pub fn exec(rt: &EngineRuntime, _args: &ResumeArgs) -> Result<Outcome, EngineError> {
    let printer = *rt.printer();
    // A configuration that does not load does not stop a resume (the saved state says what ran): the host then
    // runs no job worker until a `start`.
    let config = rt.settings().ok().map(|s| s.config.clone());
    let request = Request::Resume(ResumeRequest { env: rt.env().inherited().clone(), config });
    let mut progress = super::progress(rt);
    let reply = HostClient::call(rt.paths()?, true, &request, |p| progress.host_step(p))?;
    drop(progress);
    if let Some(Reply::Started(outcome)) = &reply {
        printer.note(&format!(
            "resumed {}: {} adopted, {} restarted",
            outcome.run_id,
            outcome.reused.len(),
            outcome.started.len()
        ));
    }
    report_start(rt, reply, super::Urls::Planned)
}
