//! Blackout windows in the dispatch round: which queued jobs a window in force holds back, and
//! the pending reason it gives them (the test itself is [`crate::schedule::blackout`]'s).

use std::collections::HashMap;

use crate::model::{Job, Server};
use crate::store::Store;

/// The blackout windows in force for one dispatch round.
pub(super) struct Blackouts {
    windows: Vec<crate::schedule::blackout::Window>,
    origins: HashMap<crate::model::JobId, crate::store::blackouts::JobOrigin>,
    now: chrono::DateTime<chrono::Utc>,
}

impl Blackouts {
    /// The blackout windows in force now, from the enabled ones (`enabled`, read by the caller
    /// beside its other reads), and where the queued jobs came from; nothing is read about the
    /// jobs when no window is in force.
    pub(super) async fn load(
        store: &Store,
        enabled: &[crate::model::Blackout],
        queue: &[Job],
    ) -> crate::store::Result<Blackouts> {
        let now = chrono::Utc::now();
        let windows: Vec<_> = enabled
            .iter()
            .filter_map(crate::schedule::window)
            .filter(|w| w.active_until(now).is_some())
            .collect();
        let origins = if windows.is_empty() {
            HashMap::new()
        } else {
            let ids: Vec<_> = queue.iter().map(|j| j.id).collect();
            store.job_origins(&ids).await?
        };
        Ok(Blackouts {
            windows,
            origins,
            now,
        })
    }

    /// Why `job` must not start now, if a window holds it.
    pub(super) fn held(&self, job: &Job, server: &Server) -> Option<String> {
        use crate::schedule::blackout::{held, Origin};
        if self.windows.is_empty() {
            return None;
        }
        let o = self.origins.get(&job.id)?;
        let origin = if o.scheduled {
            Origin::Schedule
        } else {
            Origin::Manual {
                admin: o.role == crate::model::Role::Admin,
            }
        };
        held(
            &self.windows,
            server.environment.as_deref(),
            origin,
            self.now,
        )
    }
}
