//! The dispatch round: the queue read beside the loads, the windows and the rollouts' step,
//! each queued job placed on an agent and claimed, and its assignment handed to the agent's
//! session; and the hand-over of jobs a launch claimed itself.

use std::collections::HashMap;
use std::time::Duration;

use outpost_protocol::message::Assignment;
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    assignment, hold, placement, waves, Dispatch, Place, Scheduler, SessionCommand, Undelivered,
    QUEUE_READ,
};
use crate::lifecycle::{Attempt, Claim, Outcome, Released};
use crate::metrics;
use crate::model::{AgentId, Job, Playbook, Server, ServerId};

impl Scheduler {
    /// One round over the queue: every job that can be placed now is claimed and handed over;
    /// the others get (or keep) the reason they wait.
    pub(super) async fn dispatch_round(&mut self) -> crate::store::Result<()> {
        // Side by side: a round's latency is its round trips, and the rollouts' step, the
        // queue, its servers, the servers' loads and the windows do not depend on each other.
        // A step that released a wave or stopped a run changed the queue and the loads: they
        // are read again, after it.
        let (moved, queue, busy_servers, enabled, servers) = tokio::join!(
            waves::advance(&self.store, &self.lifecycle),
            self.store.unassigned_jobs(QUEUE_READ),
            self.store.active_jobs_per_server(),
            self.store.enabled_blackouts(),
            self.store.servers_of_unassigned(QUEUE_READ),
        );
        let (queue, busy_servers, servers) = if moved? {
            tokio::join!(
                self.store.unassigned_jobs(QUEUE_READ),
                self.store.active_jobs_per_server(),
                self.store.servers_of_unassigned(QUEUE_READ),
            )
        } else {
            (queue, busy_servers, servers)
        };
        let queue = queue?;
        if queue.is_empty() {
            self.reasons.clear();
            return Ok(());
        }
        let (mut busy_servers, enabled) = (busy_servers?, enabled?);
        let now = Instant::now();
        self.paused.retain(|_, until| *until > now);
        // A job queued between the two reads may have its server missing: read when met.
        let mut servers: HashMap<ServerId, Server> =
            servers?.into_iter().map(|s| (s.id, s)).collect();
        let blackouts = hold::Blackouts::load(&self.store, &enabled, &queue).await?;
        for job in queue {
            if self.paused.contains_key(&job.id) {
                continue;
            }
            let server = match servers.get(&job.server_id) {
                Some(s) => s.clone(),
                None => {
                    let s = self.store.get_server(job.server_id).await?;
                    servers.insert(job.server_id, s.clone());
                    s
                }
            };
            let busy = busy_servers.get(&job.server_id).copied().unwrap_or(0);
            let placed = if let Some(reason) = blackouts.held(&job, &server) {
                Err(reason)
            } else if busy >= i64::from(self.settings.max_running_per_server) {
                Err(format!(
                    "server {} is busy with another job",
                    server.hostname
                ))
            } else {
                placement::place(self.agents.values(), &server, &self.settings.routing_keys)
            };
            let agent_id = match placed {
                Ok(a) => a,
                Err(reason) => {
                    if self.reasons.get(&job.id) != Some(&reason) {
                        self.store.set_pending_reason(job.id, Some(&reason)).await?;
                        self.reasons.insert(job.id, reason);
                    }
                    continue;
                }
            };
            match self.hand_over(&job, &server, agent_id).await? {
                Claim::Claimed(_) => {
                    *busy_servers.entry(job.server_id).or_insert(0) += 1;
                    self.reasons.remove(&job.id);
                }
                Claim::ServerBusy => {
                    // Another controller's job got there first.
                    busy_servers.insert(
                        job.server_id,
                        i64::from(self.settings.max_running_per_server),
                    );
                }
                Claim::Taken => {}
            }
        }
        Ok(())
    }

    /// Claims the job for the agent and gives it to the agent's session. The assignment is
    /// made while the claim commits: it needs only the dispatch id, chosen here, and reads
    /// nothing the claim writes. It is thrown away when the claim is not taken.
    async fn hand_over(
        &mut self,
        job: &Job,
        server: &Server,
        agent_id: AgentId,
    ) -> crate::store::Result<Claim> {
        let dispatch_id = Uuid::new_v4().to_string();
        let time_limit = self.time_limit(job);
        let (claim, made) = tokio::join!(
            self.lifecycle.claim_as(
                job.id,
                job.server_id,
                agent_id,
                self.settings.max_running_per_server,
                &dispatch_id,
            ),
            self.playbooks.assignment(
                &self.store,
                &self.keyring,
                &self.settings.data_dir,
                job,
                server,
                None,
                &dispatch_id,
                time_limit,
            ),
        );
        let claim = claim?;
        let Claim::Claimed(attempt) = &claim else {
            return Ok(claim);
        };
        match self.send(job, server, agent_id, attempt, None, made).await {
            Ok(true) => Ok(claim),
            Ok(false) => Ok(Claim::Taken),
            Err(e) => {
                // The claim is committed: it is handed over at a later pass, not left behind.
                self.claimed.push(Undelivered {
                    agent: agent_id,
                    place: None,
                    job: Box::new(job.clone()),
                    server: Box::new(server.clone()),
                    playbook: None,
                    attempt: attempt.clone(),
                });
                Err(e)
            }
        }
    }

    /// Hands over the claimed jobs not handed over yet.
    /// On an error the job and those after it stay, for the next pass.
    pub(super) async fn hand_over_claimed(&mut self) -> crate::store::Result<()> {
        let mut pending = std::mem::take(&mut self.claimed).into_iter();
        while let Some(c) = pending.next() {
            let delivered = self
                .deliver(
                    &c.job,
                    &c.server,
                    c.playbook.as_deref(),
                    c.agent,
                    &c.attempt,
                    c.place,
                )
                .await;
            if let Err(e) = delivered {
                self.claimed.push(c);
                self.claimed.extend(pending);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Gives a claimed job to the agent's session. `reserved`: the place it takes was already
    /// counted in the agent's load (a launch's reservation). Returns false when the job went
    /// back to the queue (the agent is gone or not taking work); a job whose assignment cannot
    /// be made fails, and counts as placed.
    async fn deliver(
        &mut self,
        job: &Job,
        server: &Server,
        playbook: Option<&Playbook>,
        agent_id: AgentId,
        attempt: &Attempt,
        reserved: Option<Place>,
    ) -> crate::store::Result<bool> {
        let time_limit = self.time_limit(job);
        let made = self
            .playbooks
            .assignment(
                &self.store,
                &self.keyring,
                &self.settings.data_dir,
                job,
                server,
                playbook,
                &attempt.dispatch_id,
                time_limit,
            )
            .await;
        self.send(job, server, agent_id, attempt, reserved, made)
            .await
    }

    /// A template may give its jobs their own limit; the others run under the default.
    fn time_limit(&self, job: &Job) -> Duration {
        job.time_limit_secs
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(self.settings.default_time_limit)
    }

    /// Sends a claimed job's assignment, as made, to the agent's session (see
    /// [`Scheduler::deliver`] for what it returns).
    async fn send(
        &mut self,
        job: &Job,
        server: &Server,
        agent_id: AgentId,
        attempt: &Attempt,
        reserved: Option<Place>,
        made: Result<Assignment, assignment::Unmade>,
    ) -> crate::store::Result<bool> {
        let assignment = match made {
            Ok(a) => a,
            // The claim stands: the job is handed over again at the next pass (a launch's
            // place still counted).
            Err(assignment::Unmade::Away(e)) => return Err(e),
            Err(assignment::Unmade::Refused(reason)) => {
                if let Some(r) = reserved {
                    self.unreserve(r);
                }
                self.lifecycle
                    .finish(attempt, &Outcome::failed(reason))
                    .await?;
                return Ok(true);
            }
        };
        let Some(link) = self.agents.get_mut(&agent_id) else {
            self.release(attempt, "agent went away").await?;
            return Ok(false);
        };
        // Counted already when reserved on this very session; a newer session counts it now.
        let counted = reserved.is_some_and(|r| r.session == link.session);
        let mut claimed = job.clone();
        claimed.dispatch_id = Some(attempt.dispatch_id.clone());
        claimed.agent_id = Some(agent_id);
        if link
            .commands
            .try_send(SessionCommand::Assign(Box::new(Dispatch {
                job: claimed,
                assignment,
            })))
            .is_err()
        {
            if counted {
                link.in_flight = link.in_flight.saturating_sub(1);
            }
            self.release(attempt, "agent session is not taking work")
                .await?;
            return Ok(false);
        }
        if !counted {
            link.in_flight += 1;
        }
        metrics::global().jobs_dispatched.inc();
        tracing::info!(job = %job.job_id, agent = %link.name, server = %server.hostname, "dispatched");
        Ok(true)
    }

    async fn release(&self, attempt: &Attempt, reason: &str) -> crate::store::Result<Released> {
        self.lifecycle.release(attempt, reason).await
    }
}
