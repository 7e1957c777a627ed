//! What every agent session and job stream of this controller shares: the store and the job
//! lifecycle, the scheduler and ingest handles, the CA (for renewals) and the stop signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use outpost_protocol::pki::Ca;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::ingest::IngestHandle;
use crate::lifecycle::Lifecycle;
use crate::scheduler::SchedulerHandle;
use crate::store::Store;

pub struct SessionContext {
    pub store: Store,
    pub lifecycle: Lifecycle,
    pub settings: Arc<Settings>,
    pub scheduler: SchedulerHandle,
    pub ingest: IngestHandle,
    pub ca: Arc<Ca>,
    pub stop: CancellationToken,
    next_session: AtomicU64,
    /// Jobs with a live stream on this controller: one at a time each, however many times an
    /// agent asks to resume.
    streams: std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>,
}

/// Holds a job's one stream; released when dropped.
pub struct StreamSlot {
    ctx: Arc<SessionContext>,
    job: uuid::Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut s = self.ctx.streams.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(&self.job);
    }
}

impl SessionContext {
    pub fn new(
        store: Store,
        settings: Arc<Settings>,
        scheduler: SchedulerHandle,
        ingest: IngestHandle,
        ca: Arc<Ca>,
        stop: CancellationToken,
    ) -> SessionContext {
        SessionContext {
            lifecycle: Lifecycle::new(store.clone()),
            store,
            settings,
            scheduler,
            ingest,
            ca,
            stop,
            next_session: AtomicU64::new(1),
            streams: Default::default(),
        }
    }

    /// Takes the stream slot of `job`, unless a stream already holds it.
    pub fn stream_slot(self: &Arc<Self>, job: uuid::Uuid) -> Option<StreamSlot> {
        let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        s.insert(job).then(|| StreamSlot {
            ctx: self.clone(),
            job,
        })
    }

    /// A number naming a new session of this controller.
    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}
