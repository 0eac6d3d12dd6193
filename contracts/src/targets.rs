//! `envctl list-targets --json`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ports::PortPlan;

/// Main checkout or linked worktree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The repository's main checkout.
    Main,
    /// A linked git worktree.
    Worktree,
}

/// One target envctl can run an environment for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TargetInfo {
    /// `main`, or the worktree's name.
    pub name: String,
    /// Main or worktree.
    pub kind: TargetKind,
    /// The checkout's directory.
    pub root: String,
    /// Checked-out branch, if any (none when detached).
    pub branch: Option<String>,
    /// The worktree's slot (0 for main): its ports are the base ports plus this.
    pub slot: u16,
    /// Whether the last saved state has services of this target.
    pub state_present: bool,
    /// Planned ports by service or requirement name.
    pub ports: BTreeMap<String, PortPlan>,
}

/// `envctl list-targets --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TargetList {
    /// Always [`crate::SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The repository root.
    pub repo_root: String,
    /// Main first, then worktrees by name.
    pub targets: Vec<TargetInfo>,
    /// Worktrees that were skipped, with why.
    pub skipped: Vec<String>,
    /// The job runtime's managed Redis server (`[jobs] backend = "redis"` with no URL), when it is the job store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_server: Option<crate::jobs::JobServer>,
}
