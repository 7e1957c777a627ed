//! The rules of a job stream, without any I/O: what each side may send next and what it must
//! do with what it receives. The agent's [`Delivery`] sends numbered lines from its spool and
//! then the outcome; the controller's [`Intake`] takes lines in sequence (a replay overlapping
//! what it already has is trimmed), acknowledges them in order once stored, and accepts the
//! outcome only when every line up to the last has arrived. Every line is at most
//! [`MAX_LOG_LINE_BYTES`]: the agent cuts longer ones with [`fit_line`], the controller takes a
//! longer one as a broken rule. The async code on both sides only moves bytes between these and
//! the network.

use std::collections::VecDeque;

use thiserror::Error;
use uuid::Uuid;

use crate::message::{Finished, JobDown, LogBatch, LogLine};
use crate::MAX_LOG_LINE_BYTES;

/// A peer broke the rules of the job stream; the stream is reset.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Violation {
    #[error("a batch for job {got} on the stream of job {expected}")]
    WrongJob { expected: Uuid, got: Uuid },
    #[error("a batch starting at line {first}, but line {expected} is next")]
    Gap { first: u32, expected: u32 },
    #[error("line numbers start at 1")]
    LineZero,
    #[error("an acknowledgement through line {through}, but only {sent} lines were sent")]
    AckBeyondSent { through: u32, sent: u32 },
    #[error("an acknowledgement for job {0} on another job's stream")]
    AckWrongJob(Uuid),
    #[error("a second assignment on a job stream")]
    SecondAssignment,
    #[error("line {line} holds {bytes} bytes, above the protocol's limit of {max}", max = MAX_LOG_LINE_BYTES)]
    LineTooLong { line: u32, bytes: usize },
    #[error("a batch of {0} task results, above the protocol's limit")]
    TooManyResults(usize),
    #[error("task result {0} has a field above the protocol's limit")]
    ResultTooLong(u32),
    #[error("an acknowledgement through result {through}, but only {sent} results were sent")]
    ResultAckBeyondSent { through: u32, sent: u32 },
}

/// What ends a line that was cut.
pub const CUT_MARKER: &str = " …[truncated]";

/// Cuts `line` to at most [`MAX_LOG_LINE_BYTES`] bytes, marker included, on a character
/// boundary (so the cut never splits a UTF-8 sequence).
pub fn fit_line(line: String) -> String {
    if line.len() <= MAX_LOG_LINE_BYTES {
        line
    } else {
        mark_cut(line)
    }
}

/// Marks `line` as cut (its end was dropped before it got here), keeping as much of it as fits
/// in [`MAX_LOG_LINE_BYTES`] with the marker.
pub fn mark_cut(mut line: String) -> String {
    let keep = MAX_LOG_LINE_BYTES - CUT_MARKER.len();
    if line.len() > keep {
        let mut cut = keep;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line.push_str(CUT_MARKER);
    line
}

/// The controller's side of one job's stream.
#[derive(Debug)]
pub struct Intake {
    job: Uuid,
    /// The next line number not yet taken.
    next_line: u32,
    /// The last line of each batch taken and not yet acknowledged, in order.
    unacked: VecDeque<u32>,
}

/// Lines to store, taken from a batch.
#[derive(Debug, PartialEq)]
pub struct Taken {
    /// The number of the first line in `lines`.
    pub first_line: u32,
    pub lines: Vec<LogLine>,
}

/// Whether an outcome can be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishCheck {
    /// Every line arrived: record it once every batch taken is stored.
    Complete,
    /// Lines are missing; the agent resends them (and the outcome) on its next stream.
    Missing { received_through: u32 },
}

impl Intake {
    /// A stream for `job` whose lines through `acked_through` are already stored.
    pub fn new(job: Uuid, acked_through: u32) -> Intake {
        Intake {
            job,
            next_line: acked_through.saturating_add(1),
            unacked: VecDeque::new(),
        }
    }

    /// Takes the lines of a batch not taken before. `None` when the batch held nothing new
    /// (a replay); nothing is then to be stored or acknowledged for it.
    pub fn take(&mut self, batch: LogBatch) -> Result<Option<Taken>, Violation> {
        if batch.job != self.job {
            return Err(Violation::WrongJob {
                expected: self.job,
                got: batch.job,
            });
        }
        if batch.first_line == 0 {
            return Err(Violation::LineZero);
        }
        if batch.first_line > self.next_line {
            return Err(Violation::Gap {
                first: batch.first_line,
                expected: self.next_line,
            });
        }
        if let Some((i, l)) = batch
            .lines
            .iter()
            .enumerate()
            .find(|(_, l)| l.text.len() > MAX_LOG_LINE_BYTES)
        {
            return Err(Violation::LineTooLong {
                line: batch
                    .first_line
                    .saturating_add(u32::try_from(i).unwrap_or(u32::MAX)),
                bytes: l.text.len(),
            });
        }
        let count = u32::try_from(batch.lines.len()).unwrap_or(u32::MAX);
        let end = batch.first_line.saturating_add(count); // one past the batch's last line
        if end <= self.next_line {
            return Ok(None);
        }
        let skip = (self.next_line - batch.first_line) as usize;
        let first_line = self.next_line;
        let lines: Vec<LogLine> = batch.lines.into_iter().skip(skip).collect();
        self.next_line = end;
        self.unacked.push_back(end - 1);
        Ok(Some(Taken { first_line, lines }))
    }

    /// The oldest batch taken is stored: the acknowledgement to send.
    pub fn stored(&mut self) -> Option<JobDown> {
        self.unacked
            .pop_front()
            .map(|through_line| JobDown::LogAck {
                job: self.job,
                through_line,
            })
    }

    /// The job this stream is for.
    pub fn job(&self) -> Uuid {
        self.job
    }

    /// Batches taken and not yet stored.
    pub fn unstored(&self) -> usize {
        self.unacked.len()
    }

    /// Whether the outcome `f` may be recorded now.
    pub fn finish(&self, f: &Finished) -> FinishCheck {
        let received_through = self.next_line.saturating_sub(1);
        if received_through < f.last_line {
            FinishCheck::Missing { received_through }
        } else {
            FinishCheck::Complete
        }
    }
}

/// The agent's side of one job's stream.
#[derive(Debug)]
pub struct Delivery {
    job: Uuid,
    /// The next line to send.
    next: u32,
    /// The last line the controller acknowledged.
    acked: u32,
    /// The next task result to send, and the last one acknowledged.
    next_result: u32,
    results_acked: u32,
    finished_sent: bool,
}

/// What the controller's message means for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Lines through this one are stored: they may leave the spool.
    Acked(u32),
    /// Task results through this one are stored.
    ResultsAcked(u32),
    /// The outcome is recorded: the job may be forgotten.
    Delivered,
}

impl Delivery {
    /// A stream resuming after the lines through `acked` and the results through
    /// `results_acked`.
    pub fn new(job: Uuid, acked: u32, results_acked: u32) -> Delivery {
        Delivery {
            job,
            next: acked.saturating_add(1),
            acked,
            next_result: results_acked.saturating_add(1),
            results_acked,
            finished_sent: false,
        }
    }

    /// The next task result to send, if the spool has it (`last` is the last one spooled).
    pub fn next_result(&self, last: u32) -> Option<u32> {
        (self.next_result <= last).then_some(self.next_result)
    }

    /// `count` results from [`Delivery::next_result`] were sent.
    pub fn results_sent(&mut self, count: u32) {
        self.next_result = self.next_result.saturating_add(count);
    }

    /// The next line to send, if the spool has it (`last_line` is the last one spooled).
    pub fn next_line(&self, last_line: u32) -> Option<u32> {
        (self.next <= last_line).then_some(self.next)
    }

    /// `count` lines from [`Delivery::next_line`] were sent.
    pub fn sent(&mut self, count: u32) {
        self.next = self.next.saturating_add(count);
    }

    /// Whether the outcome is due: the run ended after `last_line` and `last_result`, and
    /// every line and result was sent.
    pub fn finish_due(&self, last_line: u32, last_result: u32) -> bool {
        !self.finished_sent && self.next > last_line && self.next_result > last_result
    }

    pub fn finish_sent(&mut self) {
        self.finished_sent = true;
    }

    /// Applies one message from the controller.
    pub fn receive(&mut self, msg: &JobDown) -> Result<Received, Violation> {
        match msg {
            JobDown::LogAck { job, .. } if *job != self.job => Err(Violation::AckWrongJob(*job)),
            JobDown::LogAck { through_line, .. } => {
                let sent = self.next.saturating_sub(1);
                if *through_line > sent {
                    return Err(Violation::AckBeyondSent {
                        through: *through_line,
                        sent,
                    });
                }
                self.acked = self.acked.max(*through_line);
                Ok(Received::Acked(self.acked))
            }
            JobDown::ResultAck { job, .. } if *job != self.job => Err(Violation::AckWrongJob(*job)),
            JobDown::ResultAck { through_seq, .. } => {
                let sent = self.next_result.saturating_sub(1);
                if *through_seq > sent {
                    return Err(Violation::ResultAckBeyondSent {
                        through: *through_seq,
                        sent,
                    });
                }
                self.results_acked = self.results_acked.max(*through_seq);
                Ok(Received::ResultsAcked(self.results_acked))
            }
            JobDown::FinishAck { .. } => Ok(Received::Delivered),
            JobDown::Assign(_) => Err(Violation::SecondAssignment),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{FinalStatus, Level};

    fn batch(job: Uuid, first: u32, n: u32) -> LogBatch {
        LogBatch {
            job,
            first_line: first,
            lines: (first..first + n)
                .map(|i| LogLine {
                    at_ms: 0,
                    level: Level::Info,
                    text: format!("line {i}"),
                })
                .collect(),
        }
    }

    fn finished(job: Uuid, last_line: u32) -> Finished {
        Finished {
            job,
            status: FinalStatus::Success,
            exit_code: Some(0),
            error: None,
            last_line,
            last_result: 0,
            recap: None,
        }
    }

    #[test]
    fn lines_are_taken_in_sequence_and_acknowledged_in_order() {
        let job = Uuid::new_v4();
        let mut intake = Intake::new(job, 0);
        let a = intake.take(batch(job, 1, 3)).unwrap().unwrap();
        assert_eq!((a.first_line, a.lines.len()), (1, 3));
        let b = intake.take(batch(job, 4, 2)).unwrap().unwrap();
        assert_eq!(b.first_line, 4);
        assert_eq!(intake.unstored(), 2);
        assert_eq!(
            intake.stored(),
            Some(JobDown::LogAck {
                job,
                through_line: 3
            })
        );
        assert_eq!(
            intake.stored(),
            Some(JobDown::LogAck {
                job,
                through_line: 5
            })
        );
        assert_eq!(intake.stored(), None);
    }

    #[test]
    fn a_replay_is_trimmed_to_what_is_new() {
        let job = Uuid::new_v4();
        let mut intake = Intake::new(job, 10);
        assert_eq!(intake.take(batch(job, 5, 6)).unwrap(), None, "all old");
        let t = intake.take(batch(job, 8, 6)).unwrap().unwrap();
        assert_eq!(t.first_line, 11);
        assert_eq!(t.lines[0].text, "line 11");
        assert_eq!(t.lines.len(), 3);
    }

    #[test]
    fn gaps_foreign_batches_and_line_zero_are_violations() {
        let job = Uuid::new_v4();
        let mut intake = Intake::new(job, 0);
        assert_eq!(
            intake.take(batch(job, 2, 1)),
            Err(Violation::Gap {
                first: 2,
                expected: 1
            })
        );
        assert!(matches!(
            intake.take(batch(Uuid::new_v4(), 1, 1)),
            Err(Violation::WrongJob { .. })
        ));
        assert_eq!(intake.take(batch(job, 0, 1)), Err(Violation::LineZero));
    }

    #[test]
    fn a_line_above_the_cap_is_a_violation_even_in_a_replay() {
        let job = Uuid::new_v4();
        let mut intake = Intake::new(job, 2);
        let mut b = batch(job, 1, 3);
        b.lines[2].text = "x".repeat(MAX_LOG_LINE_BYTES);
        assert!(
            intake.take(b.clone()).unwrap().is_some(),
            "exactly the cap is fine"
        );
        let mut intake = Intake::new(job, 2);
        b.lines[1].text = "é".repeat(MAX_LOG_LINE_BYTES / 2 + 1); // bytes, not characters
        assert_eq!(
            intake.take(b),
            Err(Violation::LineTooLong {
                line: 2,
                bytes: MAX_LOG_LINE_BYTES + 1
            })
        );
        assert_eq!(intake.unstored(), 0, "nothing of the batch was taken");
    }

    #[test]
    fn fitting_cuts_on_a_character_boundary_and_marks_the_cut() {
        let short = "ok: [web1]".to_owned();
        assert_eq!(fit_line(short.clone()), short);
        let exact = "y".repeat(MAX_LOG_LINE_BYTES);
        assert_eq!(fit_line(exact.clone()), exact);
        for long in [
            "y".repeat(MAX_LOG_LINE_BYTES + 1),
            "é".repeat(MAX_LOG_LINE_BYTES),
            "日本🦀".repeat(MAX_LOG_LINE_BYTES / 3),
        ] {
            let cut = fit_line(long.clone());
            assert!(cut.len() <= MAX_LOG_LINE_BYTES, "{}", cut.len());
            assert!(cut.len() > MAX_LOG_LINE_BYTES - CUT_MARKER.len() - 4);
            assert!(cut.ends_with(CUT_MARKER));
            let kept = &cut[..cut.len() - CUT_MARKER.len()];
            assert!(long.starts_with(kept));
            let job = Uuid::new_v4();
            let mut b = batch(job, 1, 1);
            b.lines[0].text = cut;
            assert!(Intake::new(job, 0).take(b).is_ok(), "a cut line is taken");
        }
        assert_eq!(mark_cut("short".into()), format!("short{CUT_MARKER}"));
    }

    #[test]
    fn an_outcome_waits_for_every_line() {
        let job = Uuid::new_v4();
        let mut intake = Intake::new(job, 0);
        intake.take(batch(job, 1, 4)).unwrap();
        assert_eq!(
            intake.finish(&finished(job, 6)),
            FinishCheck::Missing {
                received_through: 4
            }
        );
        intake.take(batch(job, 5, 2)).unwrap();
        assert_eq!(intake.finish(&finished(job, 6)), FinishCheck::Complete);
        assert_eq!(
            Intake::new(job, 0).finish(&finished(job, 0)),
            FinishCheck::Complete,
            "a job that printed nothing"
        );
    }

    #[test]
    fn the_agent_sends_from_the_first_unacknowledged_line_then_the_outcome() {
        let job = Uuid::new_v4();
        let mut d = Delivery::new(job, 3, 1);
        assert_eq!(d.next_line(3), None);
        assert_eq!(d.next_line(9), Some(4));
        d.sent(6);
        assert_eq!(d.next_line(9), None);
        assert!(!d.finish_due(9, 2), "result 2 is not sent yet");
        assert_eq!(d.next_result(2), Some(2));
        d.results_sent(1);
        assert_eq!(d.next_result(2), None);
        assert!(d.finish_due(9, 2));
        d.finish_sent();
        assert!(!d.finish_due(9, 2), "the outcome is sent once per stream");
    }

    #[test]
    fn acknowledgements_cannot_run_ahead_of_what_was_sent() {
        let job = Uuid::new_v4();
        let mut d = Delivery::new(job, 0, 0);
        d.sent(5);
        d.results_sent(2);
        assert_eq!(
            d.receive(&JobDown::ResultAck {
                job,
                through_seq: 2
            }),
            Ok(Received::ResultsAcked(2))
        );
        assert_eq!(
            d.receive(&JobDown::ResultAck {
                job,
                through_seq: 3
            }),
            Err(Violation::ResultAckBeyondSent {
                through: 3,
                sent: 2
            })
        );
        let ack = |through_line| JobDown::LogAck { job, through_line };
        assert_eq!(d.receive(&ack(3)), Ok(Received::Acked(3)));
        assert_eq!(
            d.receive(&ack(2)),
            Ok(Received::Acked(3)),
            "never backwards"
        );
        assert_eq!(
            d.receive(&ack(9)),
            Err(Violation::AckBeyondSent {
                through: 9,
                sent: 5
            })
        );
        assert_eq!(
            d.receive(&JobDown::FinishAck { job }),
            Ok(Received::Delivered)
        );
    }
}
