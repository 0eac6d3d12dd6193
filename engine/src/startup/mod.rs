//! Start orchestration: the plan of what `start` does for the selected targets — ports, the requirements each
//! target uses, each service's layer, argv and projected environment ([`explain`]) — and carrying it out in the
//! host ([`start`], [`resume`]): services start layer by layer, in parallel within a layer, each waited on until
//! its readiness probe passes; the first failure stops what this start began for that target.

mod plan;
mod requirements;
mod run;

pub use plan::{PortTable, explain, plan_ports};
pub use run::{resume, start};
