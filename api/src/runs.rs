//! Runs: one launch's jobs as a whole, with its optional rollout (canary, batches, an approval
//! gate between waves) and failure budgets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::enums::RunStatus;
use crate::types::{JobView, NameRef, Rollout};

/// Jobs by where they stand. `failed` counts failed jobs whose server was reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunCounts {
    pub pending: u32,
    pub running: u32,
    pub success: u32,
    pub failed: u32,
    pub unreachable: u32,
    pub cancelled: u32,
    pub total: u32,
}

/// A run's budgets and how much of them is used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    pub max_failures: Option<u32>,
    pub failed: u32,
    pub max_unreachable: Option<u32>,
    pub unreachable: u32,
    pub spent: bool,
}

/// A run in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    /// The run's uuid.
    pub id: String,
    pub status: RunStatus,
    pub playbook: NameRef,
    pub user: NameRef,
    pub template: Option<NameRef>,
    pub schedule_id: Option<i32>,
    pub counts: RunCounts,
    pub waves: u32,
    /// The highest wave released (1-based).
    pub current_wave: u32,
    /// Whether the next wave waits for an operator's approval now.
    pub awaiting_approval: bool,
    /// Why it stopped early, in words.
    pub stop_reason: Option<String>,
    /// The run this one relaunched.
    pub relaunch_of: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub rollout: Option<Rollout>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A group of a run's jobs (one datacenter, one wave) and their counts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunGroup {
    /// The datacenter's name (`-` for servers without one), or the wave's number (1-based).
    pub name: String,
    pub counts: RunCounts,
}

/// A run with its counts per datacenter and per wave, its budgets and its jobs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    pub run: RunView,
    pub budget: BudgetView,
    pub datacenters: Vec<RunGroup>,
    pub waves: Vec<RunGroup>,
    pub jobs: Vec<RunJob>,
    /// Tickets this run opened.
    pub tickets: Vec<String>,
}

/// One job of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunJob {
    /// 1-based.
    pub wave: u32,
    pub datacenter: Option<String>,
    pub unreachable: bool,
    pub job: JobView,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    pub status: Option<RunStatus>,
    pub user: Option<i32>,
    pub playbook: Option<i32>,
    pub template: Option<i32>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// Which servers a relaunch runs on again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RelaunchOnly {
    /// The servers whose job failed (their server reached).
    #[default]
    Failed,
    /// The servers whose job failed, reached or not.
    FailedOrUnreachable,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelaunchRequest {
    #[serde(default)]
    pub only: RelaunchOnly,
}

/// What a run action (cancel, approve) did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunActionResponse {
    pub outcome: String,
    pub run: RunView,
}
