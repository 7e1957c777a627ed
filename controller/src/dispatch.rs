//! Job streams: one bidirectional QUIC stream per job, so a chatty job never blocks another.
//!
//! The controller opens one to hand a job over ([`run_assigned`]); after a reconnect the agent
//! opens one to resume a job it still holds ([`run_resumed`]). Either way the stream then
//! carries the job's log batches (handed to ingest, acknowledged in order once committed) and
//! finally its outcome, which is recorded only once every line up to the last is stored. Task
//! results from the agent's callback travel beside the lines in their own sequence: each batch
//! is stored (a replay lands once) and then acknowledged, and the outcome also waits for every
//! result up to the last (see [`crate::task_results`]).
//!
//! A line longer than the protocol allows fails the job (see [`JobStream::on_logs`]): its
//! output cannot be stored as the agent sent it, and the agent would only send it again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use outpost_protocol::codec::{self, FrameError};
use outpost_protocol::jobstream::{FinishCheck, Intake, Violation};
use outpost_protocol::message::{Finished, JobDown, JobUp, LogBatch};
use outpost_protocol::result_intake::ResultIntake;
use outpost_protocol::results::ResultBatch;
use tokio::sync::mpsc;

use crate::core::Core;
use crate::ingest::Committed;
use crate::lifecycle::{Attempt, Outcome, Released, Starting};
use crate::model::{AgentId, Job, JobStatus, JobUuid};
use crate::scheduler::{Dispatch, Event};
use crate::store::logs::NewLogLine;
use crate::task_results;
/// How long the agent has to accept or reject an assignment.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Which session a job stream belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub agent: AgentId,
    pub session: u64,
}

/// Hands a job to the agent over a stream the controller opened.
pub async fn run_assigned(ctx: Arc<Core>, conn: quinn::Connection, owner: Owner, d: Dispatch) {
    let job = d.job;
    let dispatch_id = d.assignment.dispatch_id.clone();
    let outcome = async {
        let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        codec::write_frame(
            &mut send,
            &JobDown::Assign(Box::new(d.assignment)),
            codec::MAX_FRAME,
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut reader = codec::spawn_reader::<_, JobUp>(recv, codec::MAX_JOB_UP_FRAME);
        match tokio::time::timeout(ANSWER_TIMEOUT, reader.recv()).await {
            Ok(Some(Ok(JobUp::Accept { .. }))) => Ok((send, reader)),
            Ok(Some(Ok(JobUp::Reject { reason, .. }))) => {
                Err(format!("agent rejected the job: {reason}"))
            }
            Ok(Some(Ok(other))) => Err(format!("agent answered the assignment with {other:?}")),
            Ok(Some(Err(e))) => Err(format!("agent's answer was unreadable: {e}")),
            Ok(None) => Err("the job stream ended before the agent answered".into()),
            Err(_) => Err("the agent did not answer the assignment in time".into()),
        }
    }
    .await;
    match outcome {
        Ok((send, reader)) => {
            let Some(_slot) = ctx.stream_slot(job.job_id.0) else {
                return;
            };
            let stream = JobStream::new(ctx, owner, job, dispatch_id, (0, 0), send, reader);
            stream.run().await;
        }
        Err(reason) => {
            // If the connection itself died the agent may have accepted: leave the job with
            // it, reconciliation on reconnect (or the grace period) settles it. Otherwise the
            // agent clearly does not have it: back to the queue.
            if conn.close_reason().is_none() {
                let attempt = Attempt {
                    job: job.id,
                    dispatch_id: dispatch_id.clone(),
                };
                match ctx.lifecycle.release(&attempt, &reason).await {
                    Ok(Released::Cancelled) => {
                        tracing::info!(job = %job.job_id, %reason, "assignment not taken; the job was cancelled meanwhile")
                    }
                    Ok(_) => {
                        tracing::info!(job = %job.job_id, %reason, "assignment not taken; back to the queue")
                    }
                    Err(e) => {
                        tracing::warn!(job = %job.job_id, error = %e, "cannot release a job; reconciliation will")
                    }
                }
                ctx.scheduler.send(Event::Declined {
                    agent: owner.agent,
                    session: owner.session,
                    job: job.id,
                });
            }
        }
    }
}

/// What an agent's `Resume` asked for: the job, its attempt, the last line already stored.
#[derive(Debug, Clone)]
pub struct Resume {
    pub job: uuid::Uuid,
    pub dispatch_id: String,
    pub acked_through: u32,
    pub results_acked: u32,
}

/// Resumes a job on a stream the agent opened after a reconnect (its `Resume`, the stream's
/// first frame, already read).
pub async fn run_resumed(
    ctx: Arc<Core>,
    owner: Owner,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    resume: Resume,
) {
    let reader = codec::spawn_reader::<_, JobUp>(recv, codec::MAX_JOB_UP_FRAME);
    let Resume {
        job: job_uuid,
        dispatch_id,
        acked_through: acked,
        results_acked,
    } = resume;
    // One stream per job: a second resume while the first still runs is turned away (the
    // agent tries again once the first has ended).
    let Some(_slot) = ctx.stream_slot(job_uuid) else {
        tracing::debug!(job = %job_uuid, "a second stream for a job that has one; refused");
        let _ = send.reset(quinn::VarInt::from_u32(outpost_protocol::close::NORMAL));
        return;
    };
    let job = match ctx.store.get_job_by_uuid(JobUuid(job_uuid)).await {
        Ok(j)
            if j.agent_id == Some(owner.agent)
                && j.dispatch_id.as_deref() == Some(dispatch_id.as_str()) =>
        {
            j
        }
        Ok(_) | Err(crate::store::StoreError::NotFound(_)) => {
            // Not this agent's job (any more): tell it to let go.
            tracing::warn!(job = %job_uuid, "agent resumed a job it no longer holds; telling it to drop it");
            let _ = codec::write_frame(
                &mut send,
                &JobDown::FinishAck { job: job_uuid },
                codec::MAX_FRAME,
            )
            .await;
            let _ = send.finish();
            return;
        }
        Err(e) => {
            tracing::warn!(job = %job_uuid, error = %e, "cannot look up a resumed job; the agent will retry");
            let _ = send.reset(quinn::VarInt::from_u32(outpost_protocol::close::NORMAL));
            return;
        }
    };
    if job.status == JobStatus::Pending {
        // The agent only holds jobs it started; the Started message was lost with a connection.
        let attempt = Attempt {
            job: job.id,
            dispatch_id: dispatch_id.clone(),
        };
        if let Err(e) = ctx.lifecycle.start(&attempt).await {
            tracing::warn!(job = %job.job_id, error = %e, "cannot record the start yet; the outcome will");
        }
    }
    tracing::info!(job = %job.job_id, acked_through = acked, "job stream resumed");
    JobStream::new(
        ctx,
        owner,
        job,
        dispatch_id,
        (acked, results_acked),
        send,
        reader,
    )
    .run()
    .await;
}

/// A line's timestamp as the agent gave it, if it is within a day of the controller's clock;
/// otherwise the controller's time (an agent's clock is not trusted with the database: a
/// timestamp out of DATETIME's range would make the insert itself fail).
fn line_time(at_ms: i64) -> DateTime<Utc> {
    let now = Utc::now();
    match DateTime::<Utc>::from_timestamp_millis(at_ms) {
        Some(t) if (t - now).num_seconds().abs() <= 86_400 => t,
        _ => now,
    }
}

struct JobStream {
    ctx: Arc<Core>,
    owner: Owner,
    job: Job,
    dispatch_id: String,
    /// The stream's rules: sequencing, replays, acknowledgements, the outcome's completeness.
    intake: Intake,
    /// The same for task results.
    results: ResultIntake,
    send: quinn::SendStream,
    reader: mpsc::Receiver<Result<JobUp, FrameError>>,
    /// One per batch handed to ingest, in the intake's order: resolves once it is committed.
    committed: VecDeque<Committed>,
}

enum Step {
    Continue,
    Done,
}

impl JobStream {
    fn new(
        ctx: Arc<Core>,
        owner: Owner,
        job: Job,
        dispatch_id: String,
        (acked_through, results_acked): (u32, u32),
        send: quinn::SendStream,
        reader: mpsc::Receiver<Result<JobUp, FrameError>>,
    ) -> JobStream {
        let uuid = job.job_id.0;
        JobStream {
            ctx,
            owner,
            job,
            dispatch_id,
            intake: Intake::new(uuid, acked_through),
            results: ResultIntake::new(uuid, results_acked),
            send,
            reader,
            committed: VecDeque::new(),
        }
    }

    async fn run(mut self) {
        let stop = self.ctx.stop.clone();
        loop {
            tokio::select! {
                biased;
                committed = async { self.committed.front_mut().expect("guarded").await }, if !self.committed.is_empty() => {
                    self.committed.pop_front();
                    if committed.is_err() || self.send_ack().await.is_err() {
                        return;
                    }
                }
                _ = stop.cancelled() => {
                    // Acknowledge what is already committed, then let the session close.
                    let _ = tokio::time::timeout(Duration::from_secs(5), self.drain_acks()).await;
                    return;
                }
                msg = self.reader.recv() => {
                    let step = match msg {
                        Some(Ok(m)) => self.on_message(m).await,
                        Some(Err(FrameError::Io(e))) => {
                            // The connection went: the session logs that once, not every stream.
                            tracing::debug!(job = %self.job.job_id, error = %e, "job stream ended with its connection");
                            Step::Done
                        }
                        Some(Err(e)) => self.violation(&e.to_string()),
                        None => Step::Done,
                    };
                    if let Step::Done = step {
                        return;
                    }
                }
            }
        }
    }

    fn violation(&mut self, what: &str) -> Step {
        tracing::warn!(job = %self.job.job_id, error = %what, "job stream reset");
        let _ = self
            .send
            .reset(quinn::VarInt::from_u32(outpost_protocol::close::PROTOCOL));
        Step::Done
    }

    fn attempt(&self) -> Attempt {
        Attempt {
            job: self.job.id,
            dispatch_id: self.dispatch_id.clone(),
        }
    }

    /// Records that ansible started, as of now. The record is queued with the recorder, and
    /// the stream goes on reading: an outcome right behind the start (a quick job) is recorded
    /// after it, in the same commit or the next, instead of after the start's own commit. A
    /// start that cannot be recorded is tried again a few times while the database is away
    /// (not past shutdown). An outcome recorded first records the start itself (`started_at`
    /// and the START entry: a pending attempt may finish), so the job is never handed out a
    /// second time, and the start's retry then finds nothing to move.
    async fn record_start(&self) {
        let starting = Starting {
            attempt: self.attempt(),
            run: self.job.run_id,
            at: Utc::now(),
        };
        let first = self.ctx.outcomes.start(starting.clone()).await;
        let (lifecycle, stop, job) = (
            self.ctx.lifecycle.clone(),
            self.ctx.stop.clone(),
            self.job.job_id,
        );
        tokio::spawn(async move {
            let mut result = first.await.unwrap_or_else(|_| {
                Err(crate::store::StoreError::Interrupted(
                    "the recorder stopped".into(),
                ))
            });
            let mut wait = Duration::from_millis(200);
            for tries_left in (0..5).rev() {
                match &result {
                    Ok(true) => {
                        tracing::info!(job = %job, "running");
                        return;
                    }
                    Ok(false) => return,
                    Err(e) if tries_left == 0 => {
                        tracing::warn!(job = %job, error = %e, "cannot record the start; the outcome will fill in its time")
                    }
                    Err(e) => {
                        tracing::warn!(job = %job, error = %e, retry_in = ?wait, "cannot record the start")
                    }
                }
                if tries_left > 0 {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait *= 2;
                    result = lifecycle.record_start(&starting).await;
                }
            }
        });
    }

    /// Acknowledges the oldest batch (it is committed).
    async fn send_ack(&mut self) -> Result<(), FrameError> {
        match self.intake.stored() {
            Some(ack) => codec::write_frame(&mut self.send, &ack, codec::MAX_FRAME).await,
            None => Ok(()),
        }
    }

    /// Waits for every batch handed to ingest and acknowledges each.
    async fn drain_acks(&mut self) -> bool {
        while let Some(rx) = self.committed.pop_front() {
            if rx.await.is_err() || self.send_ack().await.is_err() {
                return false;
            }
        }
        true
    }

    async fn on_message(&mut self, msg: JobUp) -> Step {
        match msg {
            JobUp::Started { .. } => {
                self.record_start().await;
                Step::Continue
            }
            JobUp::Logs(batch) => self.on_logs(batch).await,
            JobUp::Results(batch) => self.on_results(batch).await,
            JobUp::Finished(f) => self.on_finished(f).await,
            JobUp::Accept { .. } | JobUp::Reject { .. } => Step::Continue,
        }
    }

    async fn on_finished(&mut self, f: Finished) -> Step {
        if !self.drain_acks().await {
            return Step::Done;
        }
        if let FinishCheck::Missing { received_through } = self.intake.finish(&f) {
            // Do not record the outcome yet; the agent resends from its spool on the next
            // stream.
            tracing::warn!(job = %self.job.job_id, received_through, last = f.last_line, "finish before all lines; waiting for a resume");
            let _ = self
                .send
                .reset(quinn::VarInt::from_u32(outpost_protocol::close::PROTOCOL));
            return Step::Done;
        }
        if !self.results.complete(f.last_result) {
            tracing::warn!(job = %self.job.job_id, received_through = self.results.received_through(), last = f.last_result, "finish before all task results; waiting for a resume");
            let _ = self
                .send
                .reset(quinn::VarInt::from_u32(outpost_protocol::close::PROTOCOL));
            return Step::Done;
        }
        if let Some(recap) = f.recap {
            if let Err(e) = self
                .ctx
                .store
                .insert_recap(self.job.id, &task_results::recap(&recap))
                .await
            {
                tracing::warn!(job = %self.job.job_id, error = %e, "cannot store the recap; the agent will resend the outcome");
                let _ = self
                    .send
                    .reset(quinn::VarInt::from_u32(outpost_protocol::close::NORMAL));
                return Step::Done;
            }
        }
        let outcome = Outcome {
            status: f.status.into(),
            exit_code: f.exit_code,
            error_message: f.error.clone(),
            unreachable: task_results::unreachable(f.exit_code, f.recap.as_ref()),
            started: true,
        };
        self.settle(&outcome).await
    }

    /// Stores a batch's new task results, then acknowledges them. A database that cannot take
    /// them now ends the stream unacknowledged: the agent sends them again on its next one.
    async fn on_results(&mut self, batch: ResultBatch) -> Step {
        let taken = match self.results.take(batch) {
            Ok(t) => t,
            Err(v) => return self.violation(&v.to_string()),
        };
        if let Some(t) = taken {
            let rows = task_results::rows(t.first_seq, t.results);
            if let Err(e) = self.ctx.store.insert_task_results(self.job.id, &rows).await {
                tracing::warn!(job = %self.job.job_id, error = %e, "cannot store task results; the agent will resend them");
                let _ = self
                    .send
                    .reset(quinn::VarInt::from_u32(outpost_protocol::close::NORMAL));
                return Step::Done;
            }
        }
        let ack = self.results.stored();
        match codec::write_frame(&mut self.send, &ack, codec::MAX_FRAME).await {
            Ok(()) => Step::Continue,
            Err(_) => Step::Done,
        }
    }

    /// Records the outcome and tells the agent it may forget the job; an outcome that cannot
    /// be recorded now is not acknowledged, so the agent sends it again on its next stream.
    async fn settle(&mut self, outcome: &Outcome) -> Step {
        match self.ctx.outcomes.record(&self.attempt(), outcome).await {
            Ok(recorded) => {
                tracing::info!(job = %self.job.job_id, status = %outcome.status, recorded, "finished");
                // The agent let go of its place when the run ended (it counts only jobs not
                // finished), and the job's server is free: the round may place the next job,
                // of this run's next wave perhaps, now rather than after the acknowledgement.
                self.ctx.scheduler.send(Event::Freed {
                    agent: self.owner.agent,
                    session: self.owner.session,
                });
            }
            Err(e) => {
                // Not acknowledged: the agent keeps the outcome and resends it on its next
                // stream for the job.
                tracing::warn!(job = %self.job.job_id, error = %e, "cannot record the outcome; the agent will resend it");
                let _ = self
                    .send
                    .reset(quinn::VarInt::from_u32(outpost_protocol::close::NORMAL));
                return Step::Done;
            }
        }
        let job = self.intake.job();
        let _ = codec::write_frame(
            &mut self.send,
            &JobDown::FinishAck { job },
            codec::MAX_FRAME,
        )
        .await;
        let _ = self.send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.send.stopped()).await;
        Step::Done
    }

    /// Stores a batch's new lines. A line above the protocol's cap fails the job: cutting it
    /// here would store output the agent never sent, and resetting the stream would only have
    /// the agent send it again, forever. So the lines before it are stored, the job is recorded
    /// failed with the reason, and the agent is told to let go (which stops its run).
    async fn on_logs(&mut self, batch: LogBatch) -> Step {
        let taken = match self.intake.take(batch) {
            Ok(Some(t)) => t,
            Ok(None) => return Step::Continue, // a replay of what is stored already
            Err(v @ Violation::LineTooLong { .. }) => {
                tracing::warn!(job = %self.job.job_id, error = %v, "agent broke the line limit; failing the job");
                if !self.drain_acks().await {
                    return Step::Done;
                }
                let reason = format!("the agent broke the protocol: {v}");
                return self
                    .settle(&Outcome {
                        started: true,
                        ..Outcome::failed(reason)
                    })
                    .await;
            }
            Err(v) => return self.violation(&v.to_string()),
        };
        let first = taken.first_line as usize;
        let rows: Vec<NewLogLine> = taken
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| NewLogLine {
                job: self.job.id,
                line_number: i32::try_from(first + i).unwrap_or(i32::MAX),
                content: l.text,
                level: Some(l.level.as_str().to_owned()),
                timestamp: line_time(l.at_ms),
            })
            .collect();
        match self.ctx.ingest.submit(rows).await {
            Some(rx) => {
                self.committed.push_back(rx);
                Step::Continue
            }
            None => Step::Done, // shutting down
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_timestamps_far_from_now_are_replaced() {
        let now = Utc::now().timestamp_millis();
        assert_eq!(line_time(now - 5_000).timestamp_millis(), now - 5_000);
        for wild in [
            i64::MIN,
            i64::MAX,
            -62_000_000_000_000,
            0,
            now + 3 * 86_400_000,
        ] {
            let t = line_time(wild);
            assert!((t - Utc::now()).num_seconds().abs() < 5, "{wild} -> {t}");
        }
    }
}
