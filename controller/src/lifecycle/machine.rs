//! The job state machine itself, without a database: which moves exist and which states each
//! may leave. The records module turns these into the `WHERE status IN (…)` of its conditional
//! UPDATEs, so the SQL cannot allow what this table does not.
//!
//! ```text
//! pending ──claim──▶ pending+agent ──start──▶ running ──finish──▶ success | failed | cancelled
//!    │                    │  └──release──▶ pending (or cancelled, when a cancel was requested)
//!    │                    └──finish (the agent ran it; its "started" was lost)──▶ final
//!    └──────────cancel (no agent holds it)──────────────────────────────────────▶ cancelled
//! ```

use crate::model::JobStatus;

/// A move of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// An agent is chosen (the job stays pending until the agent starts it).
    Claim,
    /// The agent started ansible.
    Start,
    /// The agent did not take the job: back to the queue.
    Release,
    /// The job ended with this final status.
    Finish(JobStatus),
    /// Cancelled before any agent held it.
    CancelQueued,
}

/// The move is not part of the state machine (a caller's mistake, not the database's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a move of the job state machine")]
pub struct NoSuchMove(pub Move);

impl Move {
    /// The states a job may be in for this move to apply.
    pub fn leaves(self) -> Result<&'static [JobStatus], NoSuchMove> {
        use JobStatus::*;
        match self {
            Move::Claim | Move::Release | Move::Start | Move::CancelQueued => Ok(&[Pending]),
            // An agent reports an outcome only for a job it started; the "started" record may
            // have been lost with a connection, so a pending attempt may finish too.
            Move::Finish(Success | Failed | Cancelled) => Ok(&[Pending, Running]),
            Move::Finish(Pending | Running) => Err(NoSuchMove(self)),
        }
    }

    /// The state the job is in after the move.
    pub fn enters(self) -> Result<JobStatus, NoSuchMove> {
        match self {
            Move::Claim | Move::Release => Ok(JobStatus::Pending),
            Move::Start => Ok(JobStatus::Running),
            Move::CancelQueued => Ok(JobStatus::Cancelled),
            Move::Finish(s) if s.is_final() => Ok(s),
            Move::Finish(_) => Err(NoSuchMove(self)),
        }
    }

    /// `('pending', 'running')`: the SQL list of [`Move::leaves`].
    pub(super) fn leaves_sql(self) -> Result<String, NoSuchMove> {
        let states: Vec<String> = self
            .leaves()?
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        Ok(format!("({})", states.join(", ")))
    }
}

/// Whether any move leads from `from` to `to`.
pub fn reachable(from: JobStatus, to: JobStatus) -> bool {
    let moves = [
        Move::Claim,
        Move::Start,
        Move::Release,
        Move::CancelQueued,
        Move::Finish(JobStatus::Success),
        Move::Finish(JobStatus::Failed),
        Move::Finish(JobStatus::Cancelled),
    ];
    moves
        .iter()
        .any(|m| m.leaves().is_ok_and(|f| f.contains(&from)) && m.enters().is_ok_and(|t| t == to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    #[test]
    fn final_states_are_never_left() {
        for from in [Success, Failed, Cancelled] {
            for to in JobStatus::ALL {
                assert!(!reachable(from, *to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn jobs_only_move_forward() {
        assert!(reachable(Pending, Running));
        assert!(reachable(Running, Success));
        assert!(reachable(Pending, Cancelled));
        assert!(
            !reachable(Running, Pending),
            "a started job never goes back to the queue"
        );
    }

    #[test]
    fn finishing_needs_a_final_status() {
        assert_eq!(
            Move::Finish(Running).leaves(),
            Err(NoSuchMove(Move::Finish(Running)))
        );
        assert!(Move::Finish(Pending).enters().is_err());
        assert_eq!(
            Move::Finish(Success).leaves_sql().unwrap(),
            "('pending', 'running')"
        );
        assert_eq!(Move::Start.leaves_sql().unwrap(), "('pending')");
    }
}
