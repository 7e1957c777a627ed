//! The controller's side of a job stream's task results: the pure rules that take a batch
//! (replays trimmed, gaps, foreign jobs and oversized fields refused) and the acknowledgement
//! of what was stored.

use uuid::Uuid;

use crate::jobstream::Violation;
use crate::message::JobDown;
use crate::results::*;

/// The controller's side of a job stream's results.
#[derive(Debug)]
pub struct ResultIntake {
    job: Uuid,
    /// The next result not yet taken.
    next: u32,
}

/// Results to store, taken from a batch.
#[derive(Debug, PartialEq)]
pub struct TakenResults {
    pub first_seq: u32,
    pub results: Vec<TaskResult>,
}

impl ResultIntake {
    /// Results through `stored_through` are stored already.
    pub fn new(job: Uuid, stored_through: u32) -> ResultIntake {
        ResultIntake {
            job,
            next: stored_through.saturating_add(1),
        }
    }

    /// Takes what is new in a batch; `None` for a pure replay.
    pub fn take(&mut self, batch: ResultBatch) -> Result<Option<TakenResults>, Violation> {
        if batch.job != self.job {
            return Err(Violation::WrongJob {
                expected: self.job,
                got: batch.job,
            });
        }
        if batch.first_seq == 0 {
            return Err(Violation::LineZero);
        }
        if batch.first_seq > self.next {
            return Err(Violation::Gap {
                first: batch.first_seq,
                expected: self.next,
            });
        }
        if batch.results.len() > MAX_RESULTS_PER_BATCH {
            return Err(Violation::TooManyResults(batch.results.len()));
        }
        if let Some(i) = batch.results.iter().position(|r| !r.fits()) {
            return Err(Violation::ResultTooLong(
                batch.first_seq.saturating_add(i as u32),
            ));
        }
        let end = batch.first_seq.saturating_add(batch.results.len() as u32);
        if end <= self.next {
            return Ok(None);
        }
        let skip = (self.next - batch.first_seq) as usize;
        let first_seq = self.next;
        self.next = end;
        Ok(Some(TakenResults {
            first_seq,
            results: batch.results.into_iter().skip(skip).collect(),
        }))
    }

    /// The acknowledgement of every result taken so far (send it once they are stored).
    pub fn stored(&self) -> JobDown {
        JobDown::ResultAck {
            job: self.job,
            through_seq: self.next - 1,
        }
    }

    /// Whether every result through `last` has been taken.
    pub fn complete(&self, last: u32) -> bool {
        self.next > last
    }

    /// The last result taken.
    pub fn received_through(&self) -> u32 {
        self.next - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(task: &str) -> TaskResult {
        TaskResult {
            host: "web1".into(),
            play: "site".into(),
            task: task.into(),
            action: "ansible.builtin.command".into(),
            status: TaskStatus::Ok,
            started_ms: 1,
            duration_ms: 2,
            message: None,
        }
    }

    fn batch(job: Uuid, first: u32, n: u32) -> ResultBatch {
        ResultBatch {
            job,
            first_seq: first,
            results: (first..first + n)
                .map(|i| result(&format!("t{i}")))
                .collect(),
        }
    }

    #[test]
    fn results_are_taken_in_sequence_and_replays_trimmed() {
        let job = Uuid::new_v4();
        let mut intake = ResultIntake::new(job, 2);
        assert_eq!(intake.take(batch(job, 1, 2)).unwrap(), None, "all stored");
        let t = intake.take(batch(job, 2, 3)).unwrap().unwrap();
        assert_eq!(t.first_seq, 3);
        assert_eq!(t.results[0].task, "t3");
        assert_eq!(t.results.len(), 2);
        assert_eq!(
            intake.stored(),
            JobDown::ResultAck {
                job,
                through_seq: 4
            }
        );
        assert!(intake.complete(4) && !intake.complete(5));
        assert!(
            ResultIntake::new(job, 0).complete(0),
            "a job with no result"
        );
    }

    #[test]
    fn gaps_foreign_jobs_and_oversized_results_are_violations() {
        let job = Uuid::new_v4();
        let mut intake = ResultIntake::new(job, 0);
        assert!(matches!(
            intake.take(batch(job, 2, 1)),
            Err(Violation::Gap { .. })
        ));
        assert!(matches!(
            intake.take(batch(Uuid::new_v4(), 1, 1)),
            Err(Violation::WrongJob { .. })
        ));
        let mut b = batch(job, 1, 2);
        b.results[1].message = Some("m".repeat(MAX_RESULT_MESSAGE_BYTES + 1));
        assert_eq!(intake.take(b), Err(Violation::ResultTooLong(2)));
        let b = batch(job, 1, MAX_RESULTS_PER_BATCH as u32 + 1);
        assert!(matches!(intake.take(b), Err(Violation::TooManyResults(_))));
        assert_eq!(intake.received_through(), 0, "nothing was taken");
    }

    #[test]
    fn fitting_keeps_every_field_within_its_cap_on_a_character_boundary() {
        let mut r = result(&"é".repeat(MAX_RESULT_NAME_BYTES));
        r.message = Some("日".repeat(MAX_RESULT_MESSAGE_BYTES));
        r.action = "a".repeat(500);
        assert!(!r.fits());
        let r = r.fitted();
        assert!(r.fits());
        assert!(r.task.chars().all(|c| c == 'é'));
        assert!(r.message.unwrap().chars().all(|c| c == '日'));
    }

    #[test]
    fn statuses_read_back_from_their_names() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskStatus::parse("OK"), None);
    }
}
