//! `envctl resume`: a host adopts every service still running from the saved state (same pid and start time),
//! restarts the ones that are gone, and reports live services whose port nothing of theirs listens on.

use envctl_contracts::control::{Reply, Request, ResumeRequest};

use super::start::{report, show_progress};
use crate::config::process_environment;
use crate::host::client::HostClient;
use crate::runtime::{EngineError, EngineRuntime, Outcome};

/// Arguments of `resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {}

/// Resumes the saved environment.
pub fn exec(rt: &EngineRuntime, _args: &ResumeArgs) -> Result<Outcome, EngineError> {
    let paths = rt.paths()?;
    let printer = *rt.printer();
    let request = Request::Resume(ResumeRequest { env: process_environment() });
    let reply = HostClient::call(&paths, true, &request, |p| show_progress(printer, p))?
        .unwrap_or(Reply::Error { message: "no host".into() });
    if let Reply::Started(outcome) = &reply {
        printer.note(&format!(
            "resumed {}: {} adopted, {} restarted",
            outcome.run_id,
            outcome.reused.len(),
            outcome.started.len()
        ));
    }
    report(printer, reply)
}
