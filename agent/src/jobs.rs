//! The agent's jobs: the table of jobs it holds (running, or finished with output or an outcome
//! the controller has not yet acknowledged), starting them, and delivering their spools over
//! job streams.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use outpost_protocol::codec::{self, FrameError};
use outpost_protocol::jobstream::{Delivery, Received, Violation};
use outpost_protocol::message::{Assignment, Finished, JobDown, JobUp, LogBatch, RunningJob};
use outpost_protocol::results::{ResultBatch, MAX_RESULTS_PER_BATCH};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::fetch::Revisions;
use crate::runner::{self, RunnerConfig, Stop};
use crate::spool::{Meta, Outcome, Spool};

/// A batch carries at most this many lines…
pub const BATCH_LINES: usize = 500;
/// …or about this many bytes of text.
pub const BATCH_BYTES: usize = 64 * 1024;

// A batch is cut once it holds BATCH_BYTES, so it ends at most one line later; a line is at
// most the protocol's MAX_LOG_LINE_BYTES (cut after decoding, so invalid UTF-8 turned into
// U+FFFD cannot grow it); each line adds a few bytes of framing. The controller refuses larger
// frames.
// A batch of results: each at most its capped fields plus a few bytes of framing.
const _: () = assert!(
    outpost_protocol::results::MAX_RESULTS_PER_BATCH
        * (3 * outpost_protocol::results::MAX_RESULT_NAME_BYTES
            + outpost_protocol::results::MAX_RESULT_ACTION_BYTES
            + outpost_protocol::results::MAX_RESULT_MESSAGE_BYTES
            + 64)
        < outpost_protocol::codec::MAX_JOB_UP_FRAME
);
const _: () = assert!(
    BATCH_BYTES + outpost_protocol::MAX_LOG_LINE_BYTES + 64 + BATCH_LINES * 32
        < outpost_protocol::codec::MAX_JOB_UP_FRAME
);

/// Why a job stream stopped delivering. Every kind ends the stream; the job stays held and its
/// delivery resumes on a new stream.
#[derive(Debug, Error)]
pub enum DeliveryError {
    #[error("the spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error("the job stream: {0}")]
    Stream(#[from] FrameError),
    #[error("the controller broke the job stream's rules: {0}")]
    Violation(#[from] Violation),
    #[error("the job stream ended")]
    Ended,
}

pub struct JobEntry {
    pub job: Uuid,
    pub dispatch_id: String,
    pub spool: Arc<Spool>,
    /// Stops the run (a controller's request, or the drain timeout).
    pub stop: Stop,
    /// The last line spooled so far.
    progress: watch::Receiver<u32>,
    /// Set once the run ended.
    outcome: watch::Receiver<Option<Outcome>>,
    /// A job stream is delivering this job right now.
    delivering: std::sync::atomic::AtomicBool,
}

impl JobEntry {
    /// Claims the job's delivery; false if a stream already delivers it. The claim ends when
    /// the guard is dropped.
    pub fn claim_delivery(self: &Arc<Self>) -> Option<DeliveryGuard> {
        use std::sync::atomic::Ordering;
        self.delivering
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| DeliveryGuard(self.clone()))
    }

    pub fn finished(&self) -> bool {
        self.outcome.borrow().is_some()
    }

    /// Waits until the run has ended.
    pub async fn ended(&self) {
        let mut rx = self.outcome.clone();
        let _ = rx.wait_for(|o| o.is_some()).await;
    }
}

/// Marks a job as being delivered while it lives.
pub struct DeliveryGuard(Arc<JobEntry>);

impl Drop for DeliveryGuard {
    fn drop(&mut self) {
        self.0
            .delivering
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// The jobs this agent holds. A narrow handle over a map: every access is a short critical
/// section, never held across an await.
#[derive(Default)]
pub struct JobTable {
    jobs: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    entries: HashMap<Uuid, Arc<JobEntry>>,
    /// Jobs accepted whose spools are being made: they count as held and as running, so two
    /// assignments arriving at once cannot both pass the checks (one job started twice, or
    /// one job over the capacity) while the first writes its spool.
    starting: HashSet<Uuid>,
    /// The agent is draining: no job takes a place any more.
    closed: bool,
}

impl Held {
    /// Jobs whose ansible-playbook is still running (places being taken not counted).
    fn running(&self) -> usize {
        self.entries.values().filter(|e| !e.finished()).count()
    }
}

/// Why an assignment finds no room on this agent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NoRoom {
    #[error("agent is shutting down")]
    Closed,
    #[error("job already held by this agent")]
    AlreadyHeld,
    #[error("agent at capacity ({0} jobs)")]
    AtCapacity(u32),
}

/// A place taken in the table for a job about to start ([`JobTable::reserve`]); given back
/// when dropped unless [`JobTable::start`] took it.
pub struct Reservation<'a> {
    table: &'a JobTable,
    job: Uuid,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.table.lock().starting.remove(&self.job);
    }
}

impl JobTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for `job`, in one critical section with the checks: refused if the job
    /// is held (or starting) already, or if `capacity` jobs are running or starting.
    pub fn reserve(&self, job: Uuid, capacity: u32) -> Result<Reservation<'_>, NoRoom> {
        let mut held = self.lock();
        if held.closed {
            return Err(NoRoom::Closed);
        }
        if held.entries.contains_key(&job) || held.starting.contains(&job) {
            return Err(NoRoom::AlreadyHeld);
        }
        let running = held.running();
        if running + held.starting.len() >= capacity as usize {
            return Err(NoRoom::AtCapacity(capacity));
        }
        held.starting.insert(job);
        Ok(Reservation { table: self, job })
    }

    /// Takes no more jobs, and waits until those already taking a place hold it (or gave it
    /// back): after this, [`JobTable::all`] lists every job the agent will run.
    pub async fn close(&self) {
        self.lock().closed = true;
        // A place is held only while its spool is made, which takes milliseconds.
        while !self.lock().starting.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    pub fn get(&self, job: &Uuid) -> Option<Arc<JobEntry>> {
        self.lock().entries.get(job).cloned()
    }

    pub fn all(&self) -> Vec<Arc<JobEntry>> {
        self.lock().entries.values().cloned().collect()
    }

    pub fn remove(&self, job: &Uuid) {
        self.lock().entries.remove(job);
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Jobs whose ansible-playbook is still running.
    pub fn running(&self) -> usize {
        self.lock().running()
    }

    /// What the Hello reports.
    pub fn report(&self) -> Vec<RunningJob> {
        self.lock()
            .entries
            .values()
            .map(|e| RunningJob {
                job: e.job,
                dispatch_id: e.dispatch_id.clone(),
                acked_through: e.spool.acked(),
                finished: e.finished(),
            })
            .collect()
    }

    /// Takes up the spools left on disk by a previous run of the agent. A job that was still
    /// running was interrupted: its process group is killed and it is reported failed, with
    /// every line it had spooled.
    pub fn recover(&self, spool_root: &std::path::Path) -> std::io::Result<usize> {
        let mut n = 0;
        for entry in std::fs::read_dir(spool_root)? {
            let dir = entry?.path();
            let spool = match Spool::open(&dir) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "unreadable spool left aside");
                    continue;
                }
            };
            let meta = spool.meta();
            let outcome = match meta.outcome.clone() {
                Some(o) => o,
                None => {
                    // The recorded group may be stale (a reboot, or a number reused since):
                    // it is killed only while it is still the job's.
                    let group = meta.pgid.filter(|pg| runner::group_is_jobs(*pg, meta.job));
                    runner::kill_job(meta.job, group);
                    let o = Outcome {
                        status: outpost_protocol::message::FinalStatus::Failed,
                        exit_code: None,
                        error: Some("agent restarted while the job was running; its output up to then is kept".into()),
                        last_line: spool.last_line(),
                        last_result: spool.results().last(),
                        recap: None,
                    };
                    spool.set_outcome(o.clone())?;
                    tracing::warn!(job = %meta.job, lines = o.last_line, "interrupted job reported failed");
                    o
                }
            };
            let (_p, progress) = watch::channel(outcome.last_line);
            let (_o, outcome_rx) = watch::channel(Some(outcome));
            self.lock().entries.insert(
                meta.job,
                Arc::new(JobEntry {
                    job: meta.job,
                    dispatch_id: meta.dispatch_id,
                    spool,
                    stop: Stop::default(),
                    progress,
                    outcome: outcome_rx,
                    delivering: Default::default(),
                }),
            );
            n += 1;
        }
        Ok(n)
    }

    /// Accepts an assignment on its reserved place: creates its spool and starts
    /// ansible-playbook. The caller holds the job's delivery from the start (the stream the
    /// assignment came on delivers it).
    pub fn start(
        &self,
        place: Reservation<'_>,
        cfg: Arc<RunnerConfig>,
        revisions: Arc<Revisions>,
        spool_root: &std::path::Path,
        job: Assignment,
    ) -> std::io::Result<(Arc<JobEntry>, DeliveryGuard)> {
        debug_assert_eq!(place.job, job.job, "a job starts on its own place");
        let meta = Meta {
            job: job.job,
            dispatch_id: job.dispatch_id.clone(),
            playbook_name: job.playbook_name.clone(),
            pgid: None,
            outcome: None,
        };
        let spool = Arc::new(Spool::create(spool_root, meta)?);
        let (progress_tx, progress) = watch::channel(0);
        let (outcome_tx, outcome) = watch::channel(None);
        let entry = Arc::new(JobEntry {
            job: job.job,
            dispatch_id: job.dispatch_id.clone(),
            spool: spool.clone(),
            stop: Stop::default(),
            progress,
            outcome,
            delivering: std::sync::atomic::AtomicBool::new(true),
        });
        let guard = DeliveryGuard(entry.clone());
        {
            // In one step, so the job is never counted twice (a second assignment then could
            // be refused for a capacity it does not lack).
            let mut held = self.lock();
            held.entries.insert(job.job, entry.clone());
            held.starting.remove(&place.job);
        }
        // The entry holds the place now; dropping the reservation finds nothing to give back.
        drop(place);
        let stop = entry.stop.clone();
        tokio::spawn(async move {
            tracing::info!(job = %job.job, playbook = %job.playbook_name, revision = %job.revision.digest, host = %job.target.hostname, "job started");
            let outcome =
                runner::run(&cfg, &revisions, &job, spool.clone(), stop, progress_tx).await;
            tracing::info!(job = %job.job, status = ?outcome.status, exit = ?outcome.exit_code, lines = outcome.last_line, "job ended");
            if let Err(e) = spool.set_outcome(outcome.clone()) {
                tracing::error!(job = %job.job, error = %e, "cannot record the outcome in the spool");
            }
            let _ = outcome_tx.send(Some(outcome));
        });
        Ok((entry, guard))
    }
}

/// Sends a job's spool from the first unacknowledged line, then its outcome, over one job
/// stream; applies the controller's acknowledgements. Returns when the controller has recorded
/// the outcome (the spool is then removed) or the stream ends. The rules of the stream are
/// the protocol's [`Delivery`]; this only moves bytes between it, the spool and the stream.
pub async fn deliver(
    table: &JobTable,
    entry: Arc<JobEntry>,
    send: &mut quinn::SendStream,
    reader: &mut mpsc::Receiver<Result<JobDown, FrameError>>,
) -> Result<(), DeliveryError> {
    let spool = &entry.spool;
    let mut delivery = Delivery::new(entry.job, spool.acked(), spool.results().acked());
    let mut offset = spool.offset_of(spool.acked() + 1)?;
    let mut progress = entry.progress.clone();
    let mut outcome_rx = entry.outcome.clone();
    // The runner drops its progress sender a moment before it publishes the outcome: each
    // channel is watched until it closes on its own, never one closing the other.
    let (mut progress_open, mut outcome_open) = (true, true);
    loop {
        // Apply acknowledgements that arrived meanwhile.
        while let Ok(msg) = reader.try_recv() {
            if receive(table, &entry, &mut delivery, msg?)? {
                return Ok(());
            }
        }
        if let Some(next) = delivery.next_line(spool.last_line()) {
            let chunk = spool.read(next, offset, BATCH_LINES, BATCH_BYTES)?;
            if !chunk.lines.is_empty() {
                let n = chunk.lines.len() as u32;
                let batch = JobUp::Logs(LogBatch {
                    job: entry.job,
                    first_line: next,
                    lines: chunk.lines,
                });
                codec::write_frame(send, &batch, codec::MAX_FRAME).await?;
                delivery.sent(n);
                offset = chunk.next_offset;
                continue;
            }
        }
        if let Some(next) = delivery.next_result(spool.results().last()) {
            let results = spool.results().read(next, MAX_RESULTS_PER_BATCH)?;
            if !results.is_empty() {
                let n = results.len() as u32;
                let batch = JobUp::Results(ResultBatch {
                    job: entry.job,
                    first_seq: next,
                    results,
                });
                codec::write_frame(send, &batch, codec::MAX_FRAME).await?;
                delivery.results_sent(n);
                continue;
            }
        }
        let outcome = outcome_rx.borrow().clone();
        if let Some(o) = outcome
            .as_ref()
            .filter(|o| delivery.finish_due(o.last_line, o.last_result))
        {
            let f = Finished {
                job: entry.job,
                status: o.status,
                exit_code: o.exit_code,
                error: o.error.clone(),
                last_line: o.last_line,
                last_result: o.last_result,
                recap: o.recap,
            };
            codec::write_frame(send, &JobUp::Finished(f), codec::MAX_FRAME).await?;
            delivery.finish_sent();
        }
        tokio::select! {
            msg = reader.recv() => match msg {
                Some(m) => if receive(table, &entry, &mut delivery, m?)? { return Ok(()) },
                None => return Err(DeliveryError::Ended),
            },
            r = progress.changed(), if progress_open && outcome.is_none() => if r.is_err() { progress_open = false },
            r = outcome_rx.changed(), if outcome_open && outcome.is_none() => if r.is_err() { outcome_open = false },
        }
    }
}

/// Applies one controller message; true when the job is fully delivered.
fn receive(
    table: &JobTable,
    entry: &JobEntry,
    delivery: &mut Delivery,
    msg: JobDown,
) -> Result<bool, DeliveryError> {
    match delivery.receive(&msg)? {
        Received::Acked(through_line) => {
            entry.spool.ack(through_line)?;
            Ok(false)
        }
        Received::ResultsAcked(through) => {
            entry.spool.results().ack(through)?;
            Ok(false)
        }
        Received::Delivered => {
            // Normally the run is over; if the controller let go of a job still running here
            // (it was settled elsewhere), stop it too.
            entry
                .stop
                .request("cancelled: the controller settled this job elsewhere");
            if let Err(e) = entry.spool.remove() {
                tracing::warn!(job = %entry.job, error = %e, "cannot remove a delivered spool");
            }
            table.remove(&entry.job);
            tracing::info!(job = %entry.job, "delivered");
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_taken_once_per_job_and_within_the_capacity() {
        let table = JobTable::default();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let held_a = table.reserve(a, 2).expect("room for a");
        assert_eq!(table.reserve(a, 2).err(), Some(NoRoom::AlreadyHeld));
        let held_b = table.reserve(b, 2).expect("room for b");
        assert_eq!(table.reserve(c, 2).err(), Some(NoRoom::AtCapacity(2)));
        // A place not taken up (the spool could not be made) is given back.
        drop(held_b);
        let _held_c = table.reserve(c, 2).expect("b's place, given back");
        drop(held_a);
        assert!(table.reserve(a, 2).is_ok());
    }

    #[tokio::test]
    async fn closing_refuses_new_places_and_waits_for_those_being_taken() {
        let table = Arc::new(JobTable::default());
        let early = Uuid::new_v4();
        let place = table.reserve(early, 10).expect("room before the drain");
        let closing = tokio::spawn({
            let table = table.clone();
            async move { table.close().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !closing.is_finished(),
            "a place being taken holds the drain's snapshot back"
        );
        assert_eq!(
            table.reserve(Uuid::new_v4(), 10).err(),
            Some(NoRoom::Closed)
        );
        drop(place);
        tokio::time::timeout(std::time::Duration::from_secs(5), closing)
            .await
            .expect("the drain goes on once the place is given back")
            .unwrap();
    }

    #[test]
    fn copies_of_one_assignment_arriving_together_get_one_place() {
        let table = JobTable::default();
        let job = Uuid::new_v4();
        let all = std::sync::Barrier::new(16);
        let taken = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    all.wait();
                    let place = table.reserve(job, 100);
                    if place.is_ok() {
                        taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Every copy has tried before any place is given back.
                    all.wait();
                    drop(place);
                });
            }
        });
        assert_eq!(taken.into_inner(), 1);
    }
}
