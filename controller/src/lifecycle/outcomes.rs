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

use super::{Attempt, Finishing, Lifecycle, Outcome, Starting};
use crate::store::{Result, StoreError};

/// Tasks recording starts and outcomes side by side (each holds one database connection while
/// it writes).
const TASKS: usize = 4;

/// Records waiting for a task beyond the ones it records: callers wait when it is full.
const QUEUE: usize = 256;

/// What a task records: an attempt started, or its outcome.
enum Work {
    Start(Starting),
    Finish(Finishing),
}

impl Work {
    /// The task it goes to: by its run, or by its job when it has none. A job's start and its
    /// outcome both name the job's run, so they go to the same task, in the order they came.
    fn key(&self) -> i32 {
        match self {
            Work::Start(s) => s.run.map_or(s.attempt.job.0, |r| r.0),
            Work::Finish(f) => f.run.map_or(f.attempt.job.0, |r| r.0),
        }
    }
}

struct Request {
    work: Work,
    done: oneshot::Sender<Result<bool>>,
}

/// The recorder's handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct OutcomeRecorder {
    lifecycle: Lifecycle,
    /// One queue per task; none when each record is to have its own commit.
    tasks: Vec<mpsc::Sender<Request>>,
}

impl OutcomeRecorder {
    /// Starts the tasks; each records up to `per_commit` starts and outcomes in one
    /// transaction, and ends when the last handle is dropped (after recording what was queued).
    /// With `per_commit` 1 there are no tasks: each caller records its own in its own commit.
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

    /// Records a reported start, as [`Lifecycle::record_start`] does, in a commit it may share
    /// with other records of its run. Returns once the start is queued, so that the caller may
    /// hand over the outcome that follows it at once: it goes to the same task, after the
    /// start. The receiver tells whether the job moved. Without tasks the start is recorded
    /// here, before this returns.
    pub async fn start(&self, s: Starting) -> oneshot::Receiver<Result<bool>> {
        let (done, rx) = oneshot::channel();
        self.submit(Work::Start(s), done).await;
        rx
    }

    /// Records an attempt's outcome as [`Lifecycle::finish`] does, in a commit it may share
    /// with other records. What the record needs read first is read here, in the caller's
    /// task, so that the shared transaction holds its locks only for the writes.
    pub async fn record(&self, a: &Attempt, outcome: &Outcome) -> Result<bool> {
        let Some(finishing) = self.lifecycle.prepare_finish(a, outcome).await? else {
            return Ok(false);
        };
        let (done, rx) = oneshot::channel();
        self.submit(Work::Finish(finishing), done).await;
        rx.await
            .map_err(|_| StoreError::Interrupted("the recorder stopped before its commit".into()))?
    }

    /// Hands `work` to its task, or records it here in its own commit when there are no tasks
    /// or its task is gone (the runtime is stopping); `done` is told the result either way.
    async fn submit(&self, work: Work, done: oneshot::Sender<Result<bool>>) {
        let n = self.tasks.len().max(1);
        let task = self.tasks.get(usize::try_from(work.key()).unwrap_or(0) % n);
        let request = Request { work, done };
        let request = match task {
            Some(task) => match task.send(request).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(r)) => r,
            },
            None => request,
        };
        let result = match &request.work {
            Work::Start(s) => self.lifecycle.record_start(s).await,
            Work::Finish(f) => self.lifecycle.record_alone(f).await,
        };
        let _ = request.done.send(result);
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
