//! Port plans, leases and `ports_manifest.json`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a port was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PortSource {
    /// The configured base port (the main checkout).
    Config,
    /// The base port plus the worktree's slot.
    Slot,
    /// Kept from this owner's existing lease.
    Lease,
    /// The preferred port was taken; walked upward to the next free one.
    Retry,
}

/// How one service's or requirement's port was planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortPlan {
    /// The port the configuration asks for (base, plus the slot for a worktree).
    pub requested: u16,
    /// The port the planner gave it.
    pub assigned: u16,
    /// The port actually in use (equals `assigned` until the process binds elsewhere).
    #[serde(rename = "final")]
    pub final_port: u16,
    /// Why `assigned` is what it is.
    pub source: PortSource,
    /// How many ports were skipped to reach `assigned`.
    pub retries: u32,
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct LeaseOwner {
    /// Repository root.
    pub repo: String,
    /// Target name (`main` or a worktree).
    pub target: String,
    /// Service or requirement name.
    pub service: String,
}

/// One port held in the machine-wide lease ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortLease {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The leased port.
    pub port: u16,
    /// Who holds it.
    pub owner: LeaseOwner,
    /// The process that holds it (the host of the owner's repository).
    pub pid: u32,
    /// That process's start time (clock ticks since boot), so a reused pid is not mistaken for it.
    pub pid_start_time: u64,
    /// When the lease was taken (RFC 3339).
    pub created_at: String,
}

/// Ports of one target in `ports_manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetPorts {
    /// Target name.
    pub target: String,
    /// Target root directory.
    pub root: String,
    /// Plans by service or requirement name.
    pub ports: BTreeMap<String, PortPlan>,
}

/// `ports_manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortsManifest {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run that planned these ports.
    pub run_id: String,
    /// One entry per target.
    pub targets: Vec<TargetPorts>,
}
