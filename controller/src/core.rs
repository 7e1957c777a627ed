//! What one controller process shares, built once by [`crate::server`]: the store and the job
//! lifecycle (with its outcome recorder), the scheduler and ingest handles, the CA, the settings, the login throttle and
//! the stop signal. The services ([`crate::service`]), the web port and every agent session
//! hold the same [`Core`], so there is one lifecycle and one view of the settings.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use outpost_protocol::pki::Ca;
use tokio_util::sync::CancellationToken;

use crate::bundle::Origin;
use crate::config::Settings;
use crate::ingest::IngestHandle;
use crate::lifecycle::outcomes::OutcomeRecorder;
use crate::lifecycle::Lifecycle;
use crate::model::User;
use crate::scheduler::SchedulerHandle;
use crate::store::Store;
use crate::throttle::Throttle;

pub struct Core {
    pub store: Store,
    pub lifecycle: Lifecycle,
    /// Records agents' outcomes, those that arrive together in one commit.
    pub outcomes: OutcomeRecorder,
    pub settings: Arc<Settings>,
    pub scheduler: SchedulerHandle,
    pub ingest: IngestHandle,
    pub ca: Arc<Ca>,
    /// The keys that seal credentials at rest.
    pub keyring: Arc<crate::keyring::Keyring>,
    /// What install bundles made here carry and where they send agents.
    pub bundle_origin: Origin,
    /// Failed sign-ins, per account and per address.
    pub throttle: Throttle,
    /// When each API token's use was last noted.
    pub token_uses: crate::token_uses::TokenUses,
    /// Where archived job output is read from (and written to, by retention).
    pub archive: crate::archive::Archive,
    /// Agents' fetch streams of project revisions: their turns, the manifests they share.
    pub revisions: crate::fetch::RevisionServer,
    pub stop: CancellationToken,
    /// Told when a schedule is saved here, so that the firing task looks at its next slot.
    pub schedules_changed: tokio::sync::Notify,
    next_session: AtomicU64,
    /// Jobs with a live stream on this controller: one at a time each, however many times an
    /// agent asks to resume.
    streams: Mutex<HashSet<uuid::Uuid>>,
}

/// Holds a job's one stream; released when dropped.
pub struct StreamSlot {
    core: Arc<Core>,
    job: uuid::Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut s = self.core.streams.lock().unwrap_or_else(|p| p.into_inner());
        s.remove(&self.job);
    }
}

impl Core {
    // Each is a separate handle that only `server` builds; a struct of them would be this list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        settings: Arc<Settings>,
        scheduler: SchedulerHandle,
        ingest: IngestHandle,
        ca: Arc<Ca>,
        keyring: Arc<crate::keyring::Keyring>,
        bundle_origin: Origin,
        archive: crate::archive::Archive,
        stop: CancellationToken,
    ) -> Core {
        let lifecycle = Lifecycle::new(store.clone());
        // The recorder's tasks end once the last handle is gone, with the last session.
        let outcomes = OutcomeRecorder::spawn(lifecycle.clone(), settings.outcomes_per_commit);
        Core {
            lifecycle,
            outcomes,
            store,
            settings,
            scheduler,
            ingest,
            ca,
            keyring,
            bundle_origin,
            archive,
            throttle: Throttle::default(),
            token_uses: Default::default(),
            revisions: Default::default(),
            stop,
            schedules_changed: tokio::sync::Notify::new(),
            next_session: AtomicU64::new(1),
            streams: Default::default(),
        }
    }

    /// Takes the stream slot of `job`, unless a stream already holds it.
    pub fn stream_slot(self: &Arc<Self>, job: uuid::Uuid) -> Option<StreamSlot> {
        let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        s.insert(job).then(|| StreamSlot {
            core: self.clone(),
            job,
        })
    }

    /// A number naming a new session of this controller.
    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Where uploaded playbooks are kept.
    pub fn playbook_dir(&self) -> PathBuf {
        self.settings.data_dir.join("playbooks")
    }

    /// Whether the user must change their password before anything else: an admin set it, or
    /// it is older than the maximum age.
    pub fn password_expired(&self, user: &User) -> bool {
        if user.must_change_password {
            return true;
        }
        if self.settings.password_max_age.is_zero() {
            return false;
        }
        let set = user.password_changed_at.unwrap_or(user.created_at);
        let age = chrono::Utc::now() - set;
        age.to_std().unwrap_or_default() > self.settings.password_max_age
    }
}
