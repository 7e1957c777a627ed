//! Per-task results: what the agent's callback plugin saw of each task on each host, numbered
//! in their own sequence (1, 2, 3 … per job) and delivered on the job stream beside the lines,
//! with the same rules: the agent resends from the first unacknowledged one, the controller
//! trims a replay to what is new and acknowledges once stored, and the outcome is recorded only
//! once every result up to the last has arrived. Text in a result comes from the managed host:
//! every field has a byte cap the agent fits it to and the controller holds it to.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest host name, play or task name, in bytes.
pub const MAX_RESULT_NAME_BYTES: usize = 255;
/// The longest module name, in bytes.
pub const MAX_RESULT_ACTION_BYTES: usize = 100;
/// The longest failure message kept, in bytes (the module's `msg`, trimmed).
pub const MAX_RESULT_MESSAGE_BYTES: usize = 1024;
/// Results per batch on the wire.
pub const MAX_RESULTS_PER_BATCH: usize = 200;

/// How a task ended on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskStatus {
    Ok,
    Changed,
    Failed,
    Unreachable,
    Skipped,
    /// Failed inside a block whose `rescue` took over.
    Rescued,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Ok,
        TaskStatus::Changed,
        TaskStatus::Failed,
        TaskStatus::Unreachable,
        TaskStatus::Skipped,
        TaskStatus::Rescued,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Ok => "ok",
            TaskStatus::Changed => "changed",
            TaskStatus::Failed => "failed",
            TaskStatus::Unreachable => "unreachable",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Rescued => "rescued",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One task on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub host: String,
    pub play: String,
    pub task: String,
    /// The module (`ansible.builtin.command`…).
    pub action: String,
    pub status: TaskStatus,
    /// When the task started on the host, milliseconds since the Unix epoch (agent's clock).
    pub started_ms: i64,
    pub duration_ms: u32,
    /// For a failure: the module's message, trimmed.
    pub message: Option<String>,
}

impl TaskResult {
    /// Cuts every text field to its cap, on a character boundary.
    pub fn fitted(mut self) -> TaskResult {
        fit(&mut self.host, MAX_RESULT_NAME_BYTES);
        fit(&mut self.play, MAX_RESULT_NAME_BYTES);
        fit(&mut self.task, MAX_RESULT_NAME_BYTES);
        fit(&mut self.action, MAX_RESULT_ACTION_BYTES);
        if let Some(m) = self.message.as_mut() {
            fit(m, MAX_RESULT_MESSAGE_BYTES);
        }
        self
    }

    /// Whether every field is within its cap.
    pub fn fits(&self) -> bool {
        self.host.len() <= MAX_RESULT_NAME_BYTES
            && self.play.len() <= MAX_RESULT_NAME_BYTES
            && self.task.len() <= MAX_RESULT_NAME_BYTES
            && self.action.len() <= MAX_RESULT_ACTION_BYTES
            && self
                .message
                .as_ref()
                .is_none_or(|m| m.len() <= MAX_RESULT_MESSAGE_BYTES)
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn fit(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Consecutive results of one job: `results[i]` is result `first_seq + i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultBatch {
    pub job: Uuid,
    pub first_seq: u32,
    pub results: Vec<TaskResult>,
}

/// ansible's recap of a run (its `PLAY RECAP`), summed over the hosts it lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayRecap {
    pub ok: u32,
    pub changed: u32,
    pub unreachable: u32,
    pub failed: u32,
    pub skipped: u32,
    pub rescued: u32,
    pub ignored: u32,
}
