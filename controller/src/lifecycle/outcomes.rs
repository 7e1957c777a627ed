//! The outcome recorder: agents' starts and outcomes that arrive together are recorded in one
//! transaction and one commit (a group commit), instead of one commit each taking turns on
//! their run's lock. A wave's jobs end together; their records used to queue one synchronous
//! commit behind another before the run's next wave could go. A quick job's start and outcome
//! arrive together too, and the outcome no longer waits for its start's own commit.
//!
//! Nothing waits to fill a batch: each of a few tasks takes what has queued for it while its
//! last commit ran, so a lone record is made at once and a batch grows only with the load.
//! Records go to a task by their run (a job's start and its outcome to the same task, in the
//! order they came), so the records of one run share commits, and a run whose lock is held
//! elsewhere holds up only the runs that share its task.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::{Attempt, Finishing, Lifecycle, Outcome};
use crate::model::RunId;
use crate::store::{Result, StoreError};

/// Tasks recording outcomes side by side (each holds one database connection while it writes).
const TASKS: usize = 4;

/// Outcomes waiting for a task beyond the ones it records: callers wait when it is full.
const QUEUE: usize = 256;

/// What a task records: an attempt started, or its outcome.
enum Work {
    Start(Attempt),
    Finish(Finishing),
}

struct Request {
    work: Work,
    done: oneshot::Sender<Result<bool>>,
}

/// The recorder's handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct OutcomeRecorder {
    lifecycle: Lifecycle,
    /// One queue per task; none when each outcome is to have its own commit.
    tasks: Vec<mpsc::Sender<Request>>,
}

impl OutcomeRecorder {
    /// Starts the tasks; each records up to `per_commit` outcomes in one transaction, and ends
    /// when the last handle is dropped (after recording what was queued). With `per_commit`
    /// 1 there are no tasks: each caller records its own outcome in its own commit.
    pub fn spawn(lifecycle: Lifecycle, per_commit: u32) -> OutcomeRecorder {
        let per_commit = usize::try_from(per_commit).unwrap_or(1);
        let tasks = if per_commit > 1 {
            (0..TASKS)
                .map(|_| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(run(lifecycle.clone(), rx, per_commit));
                    tx
                })
                .collect()
        } else {
            Vec::new()
        };
        OutcomeRecorder { lifecycle, tasks }
    }

    /// Records that the agent started the attempt, as [`Lifecycle::start`] does, in a commit
    /// it may share with other records of its run (`run`, the job's). Returns once the start is
    /// queued, so that the caller may hand over the outcome that follows it at once: it goes
    /// to the same task, after the start. The receiver tells whether the job moved. Without
    /// tasks the start is recorded here, before this returns.
    pub async fn start(&self, a: &Attempt, run: Option<RunId>) -> oneshot::Receiver<Result<bool>> {
        let (done, rx) = oneshot::channel();
        let request = Request {
            work: Work::Start(a.clone()),
            done,
        };
        match self.task(run.map_or(a.job.0, |r| r.0)) {
            Some(task) => {
                if let Err(mpsc::error::SendError(r)) = task.send(request).await {
                    let _ = r.done.send(self.lifecycle.start(a).await);
                }
            }
            None => {
                let _ = request.done.send(self.lifecycle.start(a).await);
            }
        }
        rx
    }

    /// Records an attempt's outcome as [`Lifecycle::finish`] does, in a commit it may share
    /// with other records. What the record needs read first is read here, in the caller's
    /// task, so that the shared transaction holds its locks only for the writes.
    pub async fn record(&self, a: &Attempt, outcome: &Outcome) -> Result<bool> {
        let Some(finishing) = self.lifecycle.prepare_finish(a, outcome).await? else {
            return Ok(false);
        };
        let Some(task) = self.task(finishing.run.map_or(finishing.attempt.job.0, |r| r.0)) else {
            return self.lifecycle.record_alone(&finishing).await;
        };
        let (done, rx) = oneshot::channel();
        let request = Request {
            work: Work::Finish(finishing),
            done,
        };
        if let Err(mpsc::error::SendError(r)) = task.send(request).await {
            // The task is gone (the runtime is stopping): record it here.
            return match r.work {
                Work::Finish(f) => self.lifecycle.record_alone(&f).await,
                Work::Start(a) => self.lifecycle.start(&a).await,
            };
        }
        rx.await
            .map_err(|_| StoreError::Interrupted("the recorder stopped before its commit".into()))?
    }

    /// The task that records what belongs to `key` (a run's id, or a job's without a run).
    fn task(&self, key: i32) -> Option<&mpsc::Sender<Request>> {
        let n = self.tasks.len().max(1);
        self.tasks.get(usize::try_from(key).unwrap_or(0) % n)
    }
}

async fn run(lifecycle: Lifecycle, mut rx: mpsc::Receiver<Request>, per_commit: usize) {
    let mut batch: Vec<Request> = Vec::with_capacity(per_commit);
    while rx.recv_many(&mut batch, per_commit).await > 0 {
        let (mut starts, mut items) = (Vec::new(), Vec::new());
        let (mut start_done, mut item_done) = (Vec::new(), Vec::new());
        for r in batch.drain(..) {
            match r.work {
                Work::Start(a) => {
                    starts.push(a);
                    start_done.push(r.done);
                }
                Work::Finish(f) => {
                    items.push(f);
                    item_done.push(r.done);
                }
            }
        }
        // A panic in one batch fails its records (their agents send them again), not every
        // record after it: the task goes on.
        let (started, results) = match AssertUnwindSafe(lifecycle.record_all(&starts, &items))
            .catch_unwind()
            .await
        {
            Ok(results) => results,
            Err(_) => {
                tracing::error!(
                    starts = starts.len(),
                    outcomes = items.len(),
                    "recording starts and outcomes panicked; their agents will send them again"
                );
                let failed = || Err(StoreError::Interrupted("the recorder failed".into()));
                (
                    starts.iter().map(|_| failed()).collect(),
                    items.iter().map(|_| failed()).collect(),
                )
            }
        };
        if starts.len() + items.len() > 1 {
            tracing::debug!(
                starts = starts.len(),
                outcomes = items.len(),
                "recorded in one commit"
            );
        }
        // A caller that stopped waiting (its stream ended) finds its record made when the
        // agent sends it again.
        for (done, result) in start_done.into_iter().zip(started) {
            let _ = done.send(result);
        }
        for (done, result) in item_done.into_iter().zip(results) {
            let _ = done.send(result);
        }
    }
}
