//! The scheduler's periodic duties, beside its rounds: settling agents whose grace ran out,
//! noticing revocations (and stamping last_seen, closing the sessions whose rows were taken
//! away), and re-sending open cancel requests.

use std::collections::{HashMap, HashSet};

use tokio::time::Instant;
use uuid::Uuid;

use super::{Scheduler, SessionCommand, CANCEL_RESEND};
use crate::model::AgentId;

impl Scheduler {
    /// Agents gone longer than the grace period, on any controller: their running jobs fail
    /// ("agent lost", with a ticket); jobs they held but never started go back to the queue.
    pub(super) async fn settle_abandoned(&mut self) {
        match self
            .lifecycle
            .settle_abandoned(self.settings.agent_grace)
            .await
        {
            Ok(settled) => {
                for agent in settled {
                    // Had it come back here meanwhile, it would not have been settled.
                    tracing::debug!(agent = %agent.name, "lost agent settled");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot settle lost agents; trying again at the next sweep")
            }
        }
    }

    /// Drops the sessions of agents revoked since they connected; refreshes last_seen, and
    /// closes the sessions whose rows that finds taken away ([`Scheduler::drop_disowned`]).
    pub(super) async fn check_presence(&mut self, stamp_last_seen: bool) {
        if self.agents.is_empty() {
            return;
        }
        let controller = self.settings.controller_id.clone();
        match self.store.revoked_agents().await {
            Ok(revoked) => {
                for id in revoked {
                    if let Some(link) = self.agents.get(&id) {
                        tracing::warn!(agent = %link.name, "agent revoked: dropping its session");
                        link.close(outpost_protocol::close::REVOKED, "agent revoked");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot check revocations"),
        }
        if stamp_last_seen {
            match self.store.agents_seen(&controller).await {
                // Fewer rows name this controller than it holds sessions: some were taken
                // away meanwhile.
                Ok(stamped) if stamped < self.agents.len() as u64 => {
                    self.drop_disowned(&controller).await
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cannot stamp last_seen"),
            }
        }
    }

    /// Closes the sessions whose agents' rows no longer name this controller. Another
    /// controller's sweep takes the rows of a controller that stopped stamping them (one cut
    /// off from the database for longer than the grace, and then some) and settles their jobs
    /// as lost; an agent may also have a newer session on another controller. Such a session
    /// is no longer the agent's in the database: kept, its agent would look offline to every
    /// other controller while this one dispatched to it, and what it records by session (a
    /// renewed certificate) would be dropped. Closed, its agent reconnects, and its Hello sets
    /// the row and its jobs straight, as after any reconnect.
    async fn drop_disowned(&mut self, controller: &str) {
        let named: HashSet<AgentId> = match self.store.agents_on(controller).await {
            Ok(ids) => ids.into_iter().collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read which sessions are this controller's");
                return;
            }
        };
        // A session whose own goodbye cleared its row is ending anyway (its Down is queued).
        let disowned: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(id, link)| {
                !named.contains(id)
                    && link
                        .conn
                        .as_ref()
                        .is_some_and(|c| c.close_reason().is_none())
            })
            .map(|(id, _)| *id)
            .collect();
        if disowned.is_empty() {
            return;
        }
        // One line for them all: after a long outage it may be every session.
        let names: Vec<&str> = disowned
            .iter()
            .take(10)
            .filter_map(|id| self.agents.get(id).map(|l| l.name.as_str()))
            .collect();
        tracing::warn!(sessions = disowned.len(), first = ?names, "agents' rows no longer name this controller (another controller settled them, or they connected elsewhere): closing their sessions so that they reconnect");
        // Jobs this controller handed them meanwhile are settled after the grace, as any lost
        // agent's, should they not come back: a row without a session gets its deadline.
        if let Err(e) = self.store.sessions_disowned(&disowned).await {
            tracing::warn!(error = %e, "cannot start the grace of the closed sessions' agents");
        }
        for id in disowned {
            if let Some(link) = self.agents.remove(&id) {
                link.close(
                    outpost_protocol::close::REPLACED,
                    "this session is no longer the agent's in the database",
                );
            }
        }
        self.count_connected();
    }

    /// Sends each open cancel request to the session holding its job, again every
    /// [`CANCEL_RESEND`] and at once to a new session, until the job ends.
    pub(super) async fn deliver_cancels(&mut self) {
        if self.agents.is_empty() {
            return;
        }
        let wanted = match self.store.cancel_requested_jobs().await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read cancel requests");
                return;
            }
        };
        let now = Instant::now();
        let mut open = HashMap::new();
        for (uuid, agent) in wanted {
            let Ok(job) = Uuid::parse_str(&uuid) else {
                continue;
            };
            let last = self.cancel_sent.get(&job).copied();
            let Some(link) = self.agents.get(&agent) else {
                if let Some(l) = last {
                    open.insert(job, l);
                }
                continue;
            };
            let due = match last {
                Some((session, at)) => session != link.session || now >= at + CANCEL_RESEND,
                None => true,
            };
            if due
                && link
                    .commands
                    .try_send(SessionCommand::Cancel {
                        job,
                        reason: "cancelled on request".into(),
                    })
                    .is_ok()
            {
                open.insert(job, (link.session, now));
            } else if let Some(l) = last {
                open.insert(job, l);
            }
        }
        self.cancel_sent = open;
    }
}
