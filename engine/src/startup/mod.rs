//! Start orchestration. For now: the plan of what `start` would do for the selected targets — ports, the
//! requirements each target uses, and each service's layer, argv and projected environment. `explain-startup`
//! prints it; `start` will carry it out.

mod plan;

pub use plan::{PortTable, explain, plan_ports};
