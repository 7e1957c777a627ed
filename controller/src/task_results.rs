//! Per-task results as the agents report them, turned into the store's rows: the pure part of
//! their ingest (the job stream stores them, see [`crate::dispatch`]). Text in them is from
//! the managed host; the protocol has already held every field to its cap, and control
//! characters are replaced here so no reader of the database meets a terminal escape.

use chrono::{DateTime, Utc};
use outpost_protocol::results::{PlayRecap, TaskResult, TaskStatus as WireStatus};

use crate::model::TaskStatus;
use crate::store::results::{NewTaskResult, Recap};

/// The store's status for the wire's.
pub fn status(s: WireStatus) -> TaskStatus {
    match s {
        WireStatus::Ok => TaskStatus::Ok,
        WireStatus::Changed => TaskStatus::Changed,
        WireStatus::Failed => TaskStatus::Failed,
        WireStatus::Unreachable => TaskStatus::Unreachable,
        WireStatus::Skipped => TaskStatus::Skipped,
        WireStatus::Rescued => TaskStatus::Rescued,
    }
}

/// `text` with control characters (but tab) as U+FFFD: same byte count or fewer per
/// character replaced by three, so it is cut again to `max` bytes.
fn clean(text: String, max: usize) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return text;
    }
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    outpost_protocol::results::fit(&mut out, max);
    out
}

/// A start time as the agent gave it, if it is within a day of the controller's clock;
/// otherwise the controller's time (a DATETIME out of range would fail the insert).
fn start_time(at_ms: i64) -> DateTime<Utc> {
    let now = Utc::now();
    match DateTime::<Utc>::from_timestamp_millis(at_ms) {
        Some(t) if (t - now).num_seconds().abs() <= 86_400 => t,
        _ => now,
    }
}

/// Rows for results numbered from `first_seq`.
pub fn rows(first_seq: u32, results: Vec<TaskResult>) -> Vec<NewTaskResult> {
    use outpost_protocol::results::{
        MAX_RESULT_ACTION_BYTES as ACTION, MAX_RESULT_MESSAGE_BYTES as MESSAGE,
        MAX_RESULT_NAME_BYTES as NAME,
    };
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| NewTaskResult {
            seq: i32::try_from(u64::from(first_seq) + i as u64).unwrap_or(i32::MAX),
            host: clean(r.host, NAME),
            play: clean(r.play, NAME),
            task: clean(r.task, NAME),
            action: clean(r.action, ACTION),
            status: status(r.status),
            started_at: start_time(r.started_ms),
            duration_ms: i64::from(r.duration_ms),
            message: r.message.map(|m| clean(m, MESSAGE)),
        })
        .collect()
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub fn recap(r: &PlayRecap) -> Recap {
    Recap {
        ok: count(r.ok),
        changed: count(r.changed),
        unreachable: count(r.unreachable),
        failed: count(r.failed),
        skipped: count(r.skipped),
        rescued: count(r.rescued),
        ignored: count(r.ignored),
    }
}

/// ansible's exit code when a host could not be reached.
pub const EXIT_UNREACHABLE: i32 = 4;

/// Whether a job's target was unreachable: ansible said so by its exit code or its recap.
pub fn unreachable(exit_code: Option<i32>, recap: Option<&PlayRecap>) -> bool {
    exit_code == Some(EXIT_UNREACHABLE) || recap.is_some_and(|r| r.unreachable > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(task: &str) -> TaskResult {
        TaskResult {
            host: "web1".into(),
            play: "site".into(),
            task: task.into(),
            action: "command".into(),
            status: WireStatus::Rescued,
            started_ms: Utc::now().timestamp_millis(),
            duration_ms: 7,
            message: Some("bad\u{1b}[31m thing".into()),
        }
    }

    #[test]
    fn rows_are_numbered_from_the_batch_start_and_escapes_are_defused() {
        let rows = rows(41, vec![result("a"), result("b\nc")]);
        assert_eq!(rows[0].seq, 41);
        assert_eq!(rows[1].seq, 42);
        assert_eq!(rows[1].task, "b\u{fffd}c");
        assert_eq!(rows[0].status, TaskStatus::Rescued);
        assert_eq!(rows[0].message.as_deref(), Some("bad\u{fffd}[31m thing"));
        assert!(!rows[0].message.as_deref().unwrap().contains('\u{1b}'));
    }

    #[test]
    fn a_wild_start_time_is_replaced_with_now() {
        let mut r = result("a");
        r.started_ms = i64::MAX;
        let row = &rows(1, vec![r])[0];
        assert!((row.started_at - Utc::now()).num_seconds().abs() < 5);
    }

    #[test]
    fn exit_code_four_or_an_unreachable_recap_means_unreachable() {
        assert!(unreachable(Some(4), None));
        let r = PlayRecap {
            unreachable: 1,
            ..Default::default()
        };
        assert!(unreachable(Some(2), Some(&r)));
        assert!(!unreachable(Some(2), Some(&PlayRecap::default())));
        assert!(!unreachable(None, None));
    }
}
