//! Ingest: one task gathers log batches from every session into flushes and writes each in one
//! transaction — a `LOAD DATA LOCAL INFILE` fed from memory on MySQL/MariaDB, multi-row INSERTs
//! on SQLite, on partitioned job_logs and where the server refuses LOCAL INFILE (see
//! `store::bulk`) — then acknowledges each batch, only after its transaction committed. Two
//! flushes may be in the database at once, so that one's statements run while the other
//! commits; they still take turns (a flush's statements start after the previous flush's ran,
//! and it commits after the previous one committed), so every job's lines become visible in
//! order to readers paging by line number, and acknowledgements go out in order.
//!
//! Its queue is bounded, so when the database is slow the sessions wait to hand over batches,
//! stop reading their QUIC streams, and flow control slows the agents, which keep the lines in
//! their spools. When the database goes away the task retries the same rows until it is back;
//! nothing is dropped or acknowledged early. When the database refuses the statement itself (a
//! permanent error, not a lost connection), the rows are stored one by one and a row it still
//! refuses is stored as a marker that says why, so one bad line never stops ingest for all.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::logs::NewLogLine;
use crate::store::{Dialect, Store};

/// Stores rows one at a time; a row the database refuses is stored as a marker naming the
/// reason. Returns false when the database went away meanwhile (the batch is retried).
async fn one_by_one(store: &Store, rows: &[NewLogLine]) -> bool {
    for row in rows {
        match store.insert_log_lines(std::slice::from_ref(row)).await {
            Ok(_) => {}
            Err(e) if e.refusal().is_some() => {
                let mut marker = row.clone();
                marker.content = format!(
                    "[outpost: this line ({} bytes) was refused by the database: {}]",
                    row.content.len(),
                    crate::text::fit_chars(e.refusal().unwrap_or_default(), 200)
                );
                if let Err(e) = store.insert_log_lines(std::slice::from_ref(&marker)).await {
                    tracing::error!(job = %row.job, line = row.line_number, error = %e, "a log line cannot be stored at all");
                    if e.refusal().is_none() {
                        return false;
                    }
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// Flush once this many lines are gathered…
const FLUSH_LINES: usize = 5_000;
/// …or this long after the first line of a flush arrived.
const FLUSH_AFTER: Duration = Duration::from_millis(5);
/// Batches waiting for the ingest task; senders wait when it is full.
const QUEUE: usize = 256;
/// Flushes in the database at once on MariaDB/MySQL, taking turns (through QUIC: 0.89–0.97×
/// raw single-client INSERTs with 2, 0.83–0.89× with 1; see BENCHMARKS.md). SQLite has one
/// writer whatever we do.
const WRITERS: usize = 2;

struct Request {
    lines: Vec<NewLogLine>,
    done: oneshot::Sender<()>,
}

/// Hands batches to the ingest task. Cheap to clone.
#[derive(Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<Request>,
}

/// Resolves when the batch is committed; fails if the controller shut down first.
pub type Committed = oneshot::Receiver<()>;

impl IngestHandle {
    /// Queues a batch; waits while the queue is full (that is the back-pressure).
    pub async fn submit(&self, lines: Vec<NewLogLine>) -> Option<Committed> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Request { lines, done }).await.ok()?;
        Some(rx)
    }
}

/// Starts the ingest task. It ends when every handle is dropped and the queue is drained, or
/// when `stop` fires (after writing what it already holds, if the database lets it).
pub fn spawn(store: Store, stop: CancellationToken) -> (IngestHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(store, rx, stop));
    (IngestHandle { tx }, task)
}

/// Where a flush stands, for the next one to take its turn after it.
#[derive(Clone)]
struct Turn {
    inserted: watch::Receiver<bool>,
    committed: watch::Receiver<bool>,
}

/// Waits until the previous flush reached a point (or gave up: its sender is gone).
async fn reached(rx: Option<watch::Receiver<bool>>) {
    if let Some(mut rx) = rx {
        let _ = rx.wait_for(|done| *done).await;
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Request>, stop: CancellationToken) {
    let writers = match store.dialect() {
        Dialect::Mysql => WRITERS,
        Dialect::Sqlite => 1,
    };
    let mut writing = tokio::task::JoinSet::new();
    let mut previous: Option<Turn> = None;
    loop {
        let first = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => break },
            _ = stop.cancelled() => match rx.try_recv() { Ok(r) => r, Err(_) => break },
        };
        let mut pending = vec![first];
        let mut count = pending[0].lines.len();
        let deadline = Instant::now() + FLUSH_AFTER;
        while count < FLUSH_LINES {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => {
                    count += r.lines.len();
                    pending.push(r);
                }
                _ => break,
            }
        }
        while writing.len() >= writers {
            let _ = writing.join_next().await;
        }
        let (inserted_tx, inserted) = watch::channel(false);
        let (committed_tx, committed) = watch::channel(false);
        let after = previous.replace(Turn {
            inserted,
            committed,
        });
        writing.spawn(write(
            store.clone(),
            pending,
            stop.clone(),
            after,
            (inserted_tx, committed_tx),
        ));
    }
    while writing.join_next().await.is_some() {}
}

/// Writes one flush in its turn, retrying until the database takes it, then acknowledges its
/// batches.
async fn write(
    store: Store,
    mut pending: Vec<Request>,
    stop: CancellationToken,
    after: Option<Turn>,
    (inserted, committed): (watch::Sender<bool>, watch::Sender<bool>),
) {
    let metrics = crate::metrics::global();
    // Moved, not copied: this is the hot path. The rows stay here for retries.
    let rows: Vec<NewLogLine> = pending
        .iter_mut()
        .flat_map(|r| std::mem::take(&mut r.lines))
        .collect();
    let prev_inserted = || reached(after.as_ref().map(|t| t.inserted.clone()));
    let prev_committed = || reached(after.as_ref().map(|t| t.committed.clone()));
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = store
            .insert_log_lines_in_turn(
                &rows,
                prev_inserted(),
                || {
                    let _ = inserted.send(true);
                },
                prev_committed(),
            )
            .await;
        match attempt {
            Ok(_) => break,
            Err(e) if e.refusal().is_some() => {
                metrics.ingest_errors.inc();
                tracing::error!(error = %e, lines = rows.len(), "the database refused a log batch; storing it line by line");
                prev_committed().await;
                if one_by_one(&store, &rows).await {
                    break;
                }
                tokio::time::sleep(backoff).await;
            }
            Err(e) => {
                metrics.ingest_errors.inc();
                tracing::warn!(error = %e, lines = rows.len(), "log insert failed; retrying (agents keep their spools)");
                if stop.is_cancelled() && backoff > Duration::from_secs(2) {
                    // Shutting down and the database is away: leave the lines with the
                    // agents (they were never acknowledged) rather than hang.
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    let _ = inserted.send(true);
    let _ = committed.send(true);
    metrics.lines_ingested.add(rows.len() as u64);
    metrics.ingest_flushes.inc();
    for r in pending {
        let _ = r.done.send(());
    }
}
