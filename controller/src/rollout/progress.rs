//! A run's progress: its status from its jobs' counts, and what the scheduler does next for a
//! rollout (release a wave, wait for approval, stop after a canary that did not succeed).

use serde::{Deserialize, Serialize};

use outpost_api::enums::{JobStatus, RunStatus};

use super::{Stop, StopKind};

/// Jobs of a run (or of one wave, or one datacenter) by where they stand. `failed` holds the
/// failed jobs that were not unreachable; `unreachable` the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub pending: u32,
    pub running: u32,
    pub success: u32,
    pub failed: u32,
    pub unreachable: u32,
    pub cancelled: u32,
}

impl Counts {
    pub fn total(&self) -> u32 {
        self.pending + self.running + self.success + self.failed + self.unreachable + self.cancelled
    }

    /// Jobs not over yet.
    pub fn active(&self) -> u32 {
        self.pending + self.running
    }

    /// Adds one job of `status` (and unreachable, when it failed so).
    pub fn add(&mut self, status: JobStatus, unreachable: bool, n: u32) {
        use JobStatus as S;
        match status {
            S::Pending => self.pending += n,
            S::Running => self.running += n,
            S::Success => self.success += n,
            S::Failed if unreachable => self.unreachable += n,
            S::Failed => self.failed += n,
            S::Cancelled => self.cancelled += n,
        }
    }
}

/// A run's status from its jobs and why it stopped early, if it did.
pub fn aggregate(c: &Counts, stop: Option<StopKind>) -> RunStatus {
    if c.active() > 0 {
        return RunStatus::Running;
    }
    match stop {
        Some(StopKind::Budget) => return RunStatus::StoppedByBudget,
        Some(StopKind::Cancelled) => return RunStatus::Cancelled,
        Some(StopKind::Canary) => return RunStatus::Failed,
        None => {}
    }
    let bad = c.failed + c.unreachable;
    match (bad, c.success, c.cancelled) {
        (0, _, 0) => RunStatus::Succeeded,
        (0, 0, _) => RunStatus::Cancelled,
        (_, 0, _) => RunStatus::Failed,
        _ => RunStatus::PartiallyFailed,
    }
}

/// What the scheduler knows of a running run's rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunState {
    pub waves: u32,
    /// The highest wave released.
    pub current_wave: u32,
    /// The highest wave an operator let through.
    pub approved_wave: u32,
    pub pause: bool,
    pub has_canary: bool,
    /// The run was stopped (budget, canary, cancel): nothing more is released.
    pub stopped: bool,
}

/// The next thing to do for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: every wave is out, or the run stopped.
    Nothing,
    /// The released waves still have jobs to finish.
    Wait,
    /// Release this wave.
    Release { wave: u32 },
    /// This wave waits for an operator.
    AwaitApproval { wave: u32 },
    /// Stop the run.
    Stop(Stop),
}

/// What to do next, from the run's state and its counts per wave (index = wave).
pub fn next(s: &RunState, per_wave: &[Counts]) -> Step {
    if s.stopped || s.current_wave + 1 >= s.waves {
        return Step::Nothing;
    }
    let released = per_wave.iter().take(s.current_wave as usize + 1);
    if released.clone().any(|c| c.active() > 0) {
        return Step::Wait;
    }
    if s.has_canary && s.current_wave == 0 {
        let c = per_wave.first().copied().unwrap_or_default();
        if c.success < c.total() {
            return Step::Stop(Stop {
                kind: StopKind::Canary,
                reason: format!(
                    "canary did not succeed: {} of {} canary servers did not",
                    c.total() - c.success,
                    c.total()
                ),
            });
        }
    }
    let wave = s.current_wave + 1;
    if s.pause && s.approved_wave < wave {
        Step::AwaitApproval { wave }
    } else {
        Step::Release { wave }
    }
}

/// Why a job of `job_wave` may not start yet, if it may not (`step` is [`next`]'s answer).
pub fn held_reason(s: &RunState, step: &Step, job_wave: u32) -> Option<String> {
    if job_wave <= s.current_wave {
        return None;
    }
    Some(match step {
        Step::AwaitApproval { wave } if *wave == job_wave => {
            format!("waiting for approval of wave {}", job_wave + 1)
        }
        _ => queued_reason(job_wave)?,
    })
}

/// The pending reason of a job of `wave` when it is queued (none for the first wave).
pub fn queued_reason(wave: u32) -> Option<String> {
    (wave > 0).then(|| format!("waiting for wave {}", wave + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(success: u32, failed: u32, unreachable: u32, cancelled: u32, active: u32) -> Counts {
        Counts {
            pending: active,
            running: 0,
            success,
            failed,
            unreachable,
            cancelled,
        }
    }

    #[test]
    fn the_status_follows_the_counts() {
        assert_eq!(aggregate(&c(3, 0, 0, 0, 1), None), RunStatus::Running);
        assert_eq!(aggregate(&c(3, 0, 0, 0, 0), None), RunStatus::Succeeded);
        assert_eq!(aggregate(&c(0, 3, 0, 0, 0), None), RunStatus::Failed);
        assert_eq!(
            aggregate(&c(2, 1, 0, 0, 0), None),
            RunStatus::PartiallyFailed
        );
        assert_eq!(
            aggregate(&c(2, 0, 1, 0, 0), None),
            RunStatus::PartiallyFailed
        );
        assert_eq!(aggregate(&c(0, 0, 0, 3, 0), None), RunStatus::Cancelled);
        assert_eq!(
            aggregate(&c(20, 4, 0, 6, 0), Some(StopKind::Budget)),
            RunStatus::StoppedByBudget
        );
        assert_eq!(
            aggregate(&c(2, 0, 0, 3, 0), Some(StopKind::Cancelled)),
            RunStatus::Cancelled
        );
        assert_eq!(
            aggregate(&c(0, 1, 0, 29, 0), Some(StopKind::Canary)),
            RunStatus::Failed
        );
    }

    #[test]
    fn counts_tell_unreachable_from_failed() {
        let mut k = Counts::default();
        k.add(JobStatus::Failed, true, 2);
        k.add(JobStatus::Failed, false, 1);
        k.add(JobStatus::Running, false, 1);
        assert_eq!(
            (k.failed, k.unreachable, k.active(), k.total()),
            (1, 2, 1, 4)
        );
    }

    fn state(current: u32, approved: u32, pause: bool) -> RunState {
        RunState {
            waves: 3,
            current_wave: current,
            approved_wave: approved,
            pause,
            has_canary: true,
            stopped: false,
        }
    }

    #[test]
    fn a_wave_is_released_only_when_the_previous_ones_are_over() {
        let s = state(0, 0, false);
        assert_eq!(next(&s, &[c(0, 0, 0, 0, 1), c(0, 0, 0, 0, 10)]), Step::Wait);
        assert_eq!(
            next(&s, &[c(1, 0, 0, 0, 0), c(0, 0, 0, 0, 10)]),
            Step::Release { wave: 1 }
        );
        let last = state(2, 0, false);
        assert_eq!(next(&last, &[]), Step::Nothing);
        let stopped = RunState {
            stopped: true,
            ..state(0, 0, false)
        };
        assert_eq!(next(&stopped, &[c(1, 0, 0, 0, 0)]), Step::Nothing);
    }

    #[test]
    fn a_canary_that_did_not_succeed_stops_the_run() {
        let s = state(0, 0, false);
        match next(&s, &[c(0, 1, 0, 0, 0), c(0, 0, 0, 0, 10)]) {
            Step::Stop(stop) => {
                assert_eq!(stop.kind, StopKind::Canary);
                assert!(stop.reason.contains("1 of 1"), "{}", stop.reason);
            }
            other => panic!("{other:?}"),
        }
        // Later waves' failures are the budget's business, not the canary's.
        let later = state(1, 0, false);
        assert_eq!(
            next(
                &later,
                &[c(1, 0, 0, 0, 0), c(5, 5, 0, 0, 0), c(0, 0, 0, 0, 5)]
            ),
            Step::Release { wave: 2 }
        );
    }

    #[test]
    fn a_paused_rollout_waits_for_approval() {
        let s = state(0, 0, true);
        let counts = [c(1, 0, 0, 0, 0), c(0, 0, 0, 0, 10)];
        let step = next(&s, &counts);
        assert_eq!(step, Step::AwaitApproval { wave: 1 });
        assert_eq!(
            held_reason(&s, &step, 1).unwrap(),
            "waiting for approval of wave 2"
        );
        assert_eq!(held_reason(&s, &step, 2).unwrap(), "waiting for wave 3");
        assert_eq!(held_reason(&s, &step, 0), None);
        let approved = state(0, 1, true);
        assert_eq!(next(&approved, &counts), Step::Release { wave: 1 });
    }
}
