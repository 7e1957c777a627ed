//! The outcome recorder: agents' outcomes that arrive together are recorded in one transaction
//! and one commit (a group commit), instead of one commit each taking turns on their run's
//! lock. A wave's jobs end together; their records used to queue one synchronous commit behind
//! another before the run's next wave could go.
//!
//! Nothing waits to fill a batch: each of a few tasks takes what has queued for it while its
//! last commit ran, so a lone outcome is recorded at once and a batch grows only with the load.
//! Outcomes go to a task by their run, so the outcomes of one run share commits, and a run
//! whose lock is held elsewhere holds up only the runs that share its task.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::{Attempt, Finishing, Lifecycle, Outcome};
use crate::store::{Result, StoreError};

/// Tasks recording outcomes side by side (each holds one database connection while it writes).
const TASKS: usize = 4;

/// Outcomes waiting for a task beyond the ones it records: callers wait when it is full.
const QUEUE: usize = 256;

struct Request {
    finishing: Finishing,
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

    /// Records an attempt's outcome as [`Lifecycle::finish`] does, in a commit it may share
    /// with other outcomes. What the record needs read first is read here, in the caller's
    /// task, so that the shared transaction holds its locks only for the writes.
    pub async fn record(&self, a: &Attempt, outcome: &Outcome) -> Result<bool> {
        let Some(finishing) = self.lifecycle.prepare_finish(a, outcome).await? else {
            return Ok(false);
        };
        let key = finishing.run.map_or(finishing.attempt.job.0, |r| r.0);
        let Some(task) = self
            .tasks
            .get(usize::try_from(key).unwrap_or(0) % self.tasks.len().max(1))
        else {
            return self.lifecycle.record_alone(&finishing).await;
        };
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(r)) = task.send(Request { finishing, done }).await {
            // The task is gone (the runtime is stopping): record it here.
            return self.lifecycle.record_alone(&r.finishing).await;
        }
        rx.await
            .map_err(|_| StoreError::Interrupted("the recorder stopped before its commit".into()))?
    }
}

async fn run(lifecycle: Lifecycle, mut rx: mpsc::Receiver<Request>, per_commit: usize) {
    let mut batch: Vec<Request> = Vec::with_capacity(per_commit);
    while rx.recv_many(&mut batch, per_commit).await > 0 {
        let (items, waiting): (Vec<Finishing>, Vec<_>) =
            batch.drain(..).map(|r| (r.finishing, r.done)).unzip();
        // A panic in one batch fails its outcomes (their agents send them again), not every
        // outcome after it: the task goes on.
        let results = match AssertUnwindSafe(lifecycle.finish_all(&items))
            .catch_unwind()
            .await
        {
            Ok(results) => results,
            Err(_) => {
                tracing::error!(
                    outcomes = items.len(),
                    "recording outcomes panicked; their agents will send them again"
                );
                items
                    .iter()
                    .map(|_| Err(StoreError::Interrupted("the recorder failed".into())))
                    .collect()
            }
        };
        if items.len() > 1 {
            tracing::debug!(outcomes = items.len(), "outcomes recorded in one commit");
        }
        for (done, result) in waiting.into_iter().zip(results) {
            // A caller that stopped waiting (its stream ended) finds its outcome recorded
            // when the agent sends it again.
            let _ = done.send(result);
        }
    }
}
