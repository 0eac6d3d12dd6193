//! Start orchestration, run inside the host: carrying out the plan ([`crate::plan`]) of what `start`, `restart`
//! and `resume` do for the selected targets. Requirements start first (in parallel, each probed until ready, then
//! each target's database), then services layer by layer, in parallel within a layer, each waited on until its
//! readiness probe passes; the first failure stops what this start began for that target.
//!
//! The host is composed with [`Startup`] as its [`Orchestrator`]; startup drives the host only through its
//! narrow face (launch, stop, snapshot, event and the run's bookkeeping).

mod error;
mod layers;
mod requirements;
mod run;

use std::sync::Arc;

use envctl_contracts::control::{Reply, ResumeRequest, StartRequest};
use tokio::sync::mpsc;

pub use error::StartupError;

use crate::host::{Host, Orchestrator, ReplyFuture};

/// The orchestrator the host runs `start` and `resume` requests with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Startup;

impl Orchestrator for Startup {
    fn start<'a>(
        &'a self,
        host: &'a Arc<Host>,
        request: StartRequest,
        tx: &'a mpsc::Sender<Reply>,
    ) -> ReplyFuture<'a> {
        Box::pin(run::start(host, request, tx))
    }

    fn resume<'a>(
        &'a self,
        host: &'a Arc<Host>,
        request: ResumeRequest,
        tx: &'a mpsc::Sender<Reply>,
    ) -> ReplyFuture<'a> {
        Box::pin(run::resume(host, request, tx))
    }
}
