//! The job state machine itself, without a database: which moves exist, which states each may
//! leave and which state each enters. The claims and records modules build their conditional
//! UPDATEs from these — the `WHERE status IN (…)` from [`Move::leaves`] and the `SET status =
//! ?` from [`Move::enters`] — so the SQL cannot allow or write what this table does not.
//!
//! ```text
//! pending ──claim──▶ pending+agent ──start──▶ running ──finish──▶ success | failed | cancelled
//!    │                    │  ├──release──▶ pending
//!    │                    │  └──release, a cancel was asked meanwhile──▶ cancelled
//!    │                    └──finish (the agent ran it; its "started" was lost)──▶ final
//!    └──────────cancel (no agent holds it)──────────────────────────────────────▶ cancelled
//! ```

use crate::model::JobStatus;

/// The states in which a job is not over: the queue and the jobs agents hold.
pub const ACTIVE: &[JobStatus] = &[JobStatus::Pending, JobStatus::Running];

/// How a job ended: the only states [`Move::Finish`] can enter, so that finishing a job as
/// "pending" cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    Success,
    Failed,
    Cancelled,
}

impl From<Final> for JobStatus {
    fn from(f: Final) -> JobStatus {
        match f {
            Final::Success => JobStatus::Success,
            Final::Failed => JobStatus::Failed,
            Final::Cancelled => JobStatus::Cancelled,
        }
    }
}

impl From<outpost_protocol::message::FinalStatus> for Final {
    fn from(f: outpost_protocol::message::FinalStatus) -> Final {
        use outpost_protocol::message::FinalStatus;
        match f {
            FinalStatus::Success => Final::Success,
            FinalStatus::Failed => Final::Failed,
            FinalStatus::Cancelled => Final::Cancelled,
        }
    }
}

impl std::fmt::Display for Final {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        JobStatus::from(*self).fmt(f)
    }
}

/// A move of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// An agent is chosen (the job stays pending until the agent starts it).
    Claim,
    /// The agent started ansible.
    Start,
    /// The agent did not take the job: back to the queue.
    Release,
    /// The agent did not take the job, and a cancel was asked for meanwhile: it ends here
    /// (a released job with a cancel request would otherwise wait forever: the queue skips it).
    ReleaseCancelled,
    /// The job ended so.
    Finish(Final),
    /// Cancelled before any agent held it.
    CancelQueued,
}

impl Move {
    /// Every move, for the checks of the whole table.
    pub const ALL: &'static [Move] = &[
        Move::Claim,
        Move::Start,
        Move::Release,
        Move::ReleaseCancelled,
        Move::Finish(Final::Success),
        Move::Finish(Final::Failed),
        Move::Finish(Final::Cancelled),
        Move::CancelQueued,
    ];

    /// The states a job may be in for this move to apply.
    pub fn leaves(self) -> &'static [JobStatus] {
        match self {
            Move::Claim
            | Move::Release
            | Move::ReleaseCancelled
            | Move::Start
            | Move::CancelQueued => &[JobStatus::Pending],
            // An agent reports an outcome only for a job it started; the "started" record may
            // have been lost with a connection, so a pending attempt may finish too.
            Move::Finish(_) => ACTIVE,
        }
    }

    /// The state the job is in after the move.
    pub fn enters(self) -> JobStatus {
        match self {
            Move::Claim | Move::Release => JobStatus::Pending,
            Move::Start => JobStatus::Running,
            Move::ReleaseCancelled | Move::CancelQueued => JobStatus::Cancelled,
            Move::Finish(f) => f.into(),
        }
    }

    /// `('pending', 'running')`: the SQL list of [`Move::leaves`].
    pub(super) fn leaves_sql(self) -> String {
        let states: Vec<String> = self
            .leaves()
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("({})", states.join(", "))
    }
}

/// Whether any move leads from `from` to `to`.
pub fn reachable(from: JobStatus, to: JobStatus) -> bool {
    Move::ALL
        .iter()
        .any(|m| m.leaves().contains(&from) && m.enters() == to)
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
    fn the_sql_lists_are_the_tables() {
        assert_eq!(
            Move::Finish(Final::Success).leaves_sql(),
            crate::store::jobs::ACTIVE_SQL
        );
        assert_eq!(Move::Start.leaves_sql(), "('pending')");
        let active: Vec<JobStatus> = JobStatus::ALL
            .iter()
            .copied()
            .filter(|s| !s.is_final())
            .collect();
        assert_eq!(active, ACTIVE, "ACTIVE is every state that is not final");
    }

    #[test]
    fn a_cancelled_release_ends_the_job() {
        assert_eq!(Move::ReleaseCancelled.enters(), Cancelled);
        assert_eq!(Move::Release.enters(), Pending);
        for m in Move::ALL {
            assert!(
                !m.leaves().iter().any(|s| s.is_final()),
                "{m:?} leaves a final state"
            );
        }
    }
}
