//! Per-task results: a job's recap and its task rows (`GET /jobs/{id}/results`), and, over a
//! run, which task ended how on how many servers, per datacenter (`GET /runs/{id}/results`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::enums::TaskStatus;

/// ansible's PLAY RECAP of a job, summed over the hosts it lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobRecap {
    pub ok: i64,
    pub changed: i64,
    pub unreachable: i64,
    pub failed: i64,
    pub skipped: i64,
    pub rescued: i64,
    pub ignored: i64,
}

/// One task on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskResultView {
    /// The result's number in its job (1, 2, 3 … in the order the tasks ended).
    pub seq: i64,
    pub host: String,
    pub play: String,
    pub task: String,
    /// The module, e.g. `ansible.builtin.command`.
    pub action: String,
    pub status: TaskStatus,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// For a failure: the module's message, trimmed (text from the managed host: data).
    pub message: Option<String>,
}

/// A job's results: its recap (absent while running, or when ansible never got to it) and its
/// task rows, failed and unreachable ones first when `failed_first` was asked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobResults {
    pub job_id: String,
    pub recap: Option<JobRecap>,
    /// The target could not be reached (ansible's exit code 4, or its recap).
    pub unreachable: bool,
    pub results: Vec<TaskResultView>,
    /// Rows matching the filters in all (`results` holds at most `limit` of them).
    pub total: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// Only this task (its name, exactly).
    pub task: Option<String>,
    /// Only results of this status: ok, changed, failed, unreachable, skipped, rescued.
    pub status: Option<String>,
    /// Only servers of this datacenter (the `dc` routing label; runs only).
    pub datacenter: Option<String>,
    /// Results after this `seq` (jobs only; default 0).
    pub after: Option<i64>,
    /// At most this many rows (1–5,000, default 1,000).
    pub limit: Option<i64>,
}

/// How many servers of one datacenter ended one task with one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskTally {
    pub play: String,
    pub task: String,
    pub status: TaskStatus,
    /// The `dc` label of the servers ("" for servers without one).
    pub datacenter: String,
    pub servers: i64,
}

/// A run's results, aggregated.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunResults {
    pub run_id: String,
    /// Failed and unreachable rows first, then by how many servers.
    pub tasks: Vec<TaskTally>,
    /// Jobs of the run whose target was unreachable.
    pub unreachable_jobs: i64,
}
