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
        }
    }

    /// A number naming a new session of this controller.
    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}
