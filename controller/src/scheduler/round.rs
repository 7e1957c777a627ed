//! The dispatch round: the queue read beside the loads, the windows and the rollouts' step,
//! each queued job placed on an agent and claimed, and its assignment handed to the agent's
//! session; and the hand-over of jobs a launch claimed itself.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use outpost_protocol::message::Assignment;
use tokio::time::Instant;
use uuid::Uuid;

use futures_util::StreamExt;

use super::assignment::BatchReads;
use super::{
    assignment, give_back, hold, placement, waves, AgentLink, Dispatch, Place, Scheduler,
    SessionCommand, Undelivered, QUEUE_READ,
};
use crate::lifecycle::{Attempt, Claim, Lifecycle, Outcome, Wanted};
use crate::metrics;
use crate::model::{AgentId, Job, Server, ServerId};

/// Assignments of a batch made at the same time.
const ASSIGNMENTS_AT_ONCE: usize = 8;

/// A queued job the round placed on an agent, its place counted there, not claimed yet.
struct Placed {
    job: Job,
    server: Server,
    place: Place,
}

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
        let mut batch = Vec::new();
        // An error stops the placing; what was placed is still claimed (or its places given
        // back) before the round ends with it.
        let mut failed = None;
        for job in queue {
            if self.paused.contains_key(&job.id) {
                continue;
            }
            let server = match servers.get(&job.server_id) {
                Some(s) => s.clone(),
                None => match self.store.get_server(job.server_id).await {
                    Ok(s) => {
                        servers.insert(job.server_id, s.clone());
                        s
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                },
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
            let place = match placed.map(|a| self.agents.get_mut(&a)) {
                Ok(Some(link)) => {
                    // Counted now, so that the round's next placements see this one; given
                    // back when the claim is not taken.
                    link.in_flight += 1;
                    Place {
                        agent: link.id,
                        session: link.session,
                    }
                }
                Ok(None) => continue,
                Err(reason) => {
                    if self.reasons.get(&job.id) != Some(&reason) {
                        if let Err(e) = self.store.set_pending_reason(job.id, Some(&reason)).await {
                            failed = Some(e);
                            break;
                        }
                        self.reasons.insert(job.id, reason);
                    }
                    continue;
                }
            };
            *busy_servers.entry(job.server_id).or_insert(0) += 1;
            batch.push(Placed { job, server, place });
            if batch.len() >= self.settings.claims_per_commit as usize {
                let full = std::mem::take(&mut batch);
                if let Err(e) = self.hand_over_all(full, &mut busy_servers).await {
                    failed = Some(e);
                    break;
                }
            }
        }
        let handed = self.hand_over_all(batch, &mut busy_servers).await;
        failed.map_or(handed, Err)
    }

    /// Claims the placed jobs in one commit and gives each claimed one to its agent's
    /// session. The assignments are made while the claims commit (they need only the dispatch
    /// ids, chosen here, and read nothing the claims write), and each claimed job is sent as
    /// soon as its own is made; one whose claim is not taken is thrown away, and its place
    /// given back. `busy` is set right for what the claims found.
    async fn hand_over_all(
        &mut self,
        batch: Vec<Placed>,
        busy: &mut HashMap<ServerId, i64>,
    ) -> crate::store::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let wanted: Vec<Wanted> = batch
            .iter()
            .map(|p| Wanted {
                job: p.job.id,
                server: p.job.server_id,
                agent: p.place.agent,
                dispatch_id: Uuid::new_v4().to_string(),
            })
            .collect();
        let limits: Vec<Duration> = batch.iter().map(|p| self.time_limit(&p.job)).collect();
        let max = self.settings.max_running_per_server;
        // Apart: the assignments borrow the cache and the store while jobs are sent.
        let Scheduler {
            agents,
            lifecycle,
            playbooks,
            store,
            keyring,
            settings,
            claimed,
            reasons,
            ..
        } = self;
        let shared = BatchReads::new(batch.iter().map(|p| (&p.job, &p.server)));
        let making = playbooks.assignments(
            store,
            keyring,
            &settings.data_dir,
            &shared,
            batch
                .iter()
                .zip(&wanted)
                .zip(limits)
                .map(|((p, w), limit)| (&p.job, &p.server, None, w.dispatch_id.as_str(), limit)),
        );
        // A few at a time: they read on the pool the claims need too (the rows of the batch's
        // playbooks, projects and revisions once each, and every job's own in two queries).
        let mut made = futures_util::stream::iter(making).buffered(ASSIGNMENTS_AT_ONCE);
        let claiming = lifecycle.claim_all(&wanted, max);
        tokio::pin!(claiming);
        let mut early = VecDeque::new();
        let claims = loop {
            tokio::select! {
                claims = &mut claiming => break claims,
                Some(a) = made.next() => early.push_back(a),
            }
        };
        let claims = match claims {
            Ok(c) => c,
            // Nothing was claimed: a commit that reported a failure was read back first, and
            // comes here only when it wrote nothing, or when it could not be read in time (a
            // claim the server wrote then waits for its agent's next session).
            Err(e) => {
                for p in &batch {
                    give_back(agents, p.place);
                    not_busy_with(busy, p.job.server_id);
                }
                return Err(e);
            }
        };
        let mut failed = None;
        for (p, claim) in batch.iter().zip(claims) {
            // In the batch's order, one per job, claimed or not.
            let made_one = match early.pop_front() {
                Some(a) => a,
                None => made.next().await.unwrap_or_else(|| {
                    Err(assignment::Unmade::Refused(
                        "the job's assignment was never made".into(),
                    ))
                }),
            };
            let attempt = match claim {
                Claim::Claimed(attempt) => attempt,
                Claim::ServerBusy => {
                    // Another controller's job got there first.
                    give_back(agents, p.place);
                    busy.insert(p.job.server_id, i64::from(max));
                    continue;
                }
                Claim::Taken => {
                    give_back(agents, p.place);
                    not_busy_with(busy, p.job.server_id);
                    continue;
                }
            };
            reasons.remove(&p.job.id);
            let sent = send(
                agents,
                lifecycle,
                &p.job,
                &p.server,
                p.place.agent,
                &attempt,
                Some(p.place),
                made_one,
            )
            .await;
            match sent {
                Ok(true) => {}
                // Back in the queue: its server is not busy with it.
                Ok(false) => not_busy_with(busy, p.job.server_id),
                Err(e) => {
                    // The claim is committed: it is handed over at a later pass, not left
                    // behind, its place still counted.
                    claimed.push(Undelivered {
                        agent: p.place.agent,
                        place: Some(p.place),
                        job: Box::new(p.job.clone()),
                        server: Box::new(p.server.clone()),
                        playbook: None,
                        reads: None,
                        attempt,
                    });
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Hands over the claimed jobs not handed over yet, as one batch: their assignments are
    /// made side by side on the batch's shared reads (launches that fire together, say a
    /// minute's schedules, would otherwise wait for each other's reads one by one in this
    /// task). The rows a launch read for its job before its claim committed are used, not read
    /// again, so a lone launch's job usually leaves with nothing to read. A job whose hand-over
    /// meets an error stays, for the next pass (its rows then read here); the others go.
    pub(super) async fn hand_over_claimed(&mut self) -> crate::store::Result<()> {
        let mut pending = std::mem::take(&mut self.claimed);
        let limits: Vec<Duration> = pending.iter().map(|c| self.time_limit(&c.job)).collect();
        let Scheduler {
            agents,
            lifecycle,
            playbooks,
            store,
            keyring,
            settings,
            ..
        } = self;
        let mut shared = BatchReads::new(pending.iter().map(|c| (&*c.job, &*c.server)));
        for c in &mut pending {
            if let Some(reads) = c.reads.take() {
                shared.know(&c.job, *reads);
            }
        }
        let making = playbooks.assignments(
            store,
            keyring,
            &settings.data_dir,
            &shared,
            pending.iter().zip(limits).map(|(c, limit)| {
                let playbook = c.playbook.as_deref();
                (
                    &*c.job,
                    &*c.server,
                    playbook,
                    c.attempt.dispatch_id.as_str(),
                    limit,
                )
            }),
        );
        let mut made = futures_util::stream::iter(making).buffered(ASSIGNMENTS_AT_ONCE);
        let mut failed = None;
        let mut kept = Vec::new();
        for (i, c) in pending.iter().enumerate() {
            let made_one = made.next().await.unwrap_or_else(|| {
                Err(assignment::Unmade::Refused(
                    "the job's assignment was never made".into(),
                ))
            });
            let sent = send(
                agents, lifecycle, &c.job, &c.server, c.agent, &c.attempt, c.place, made_one,
            )
            .await;
            if let Err(e) = sent {
                kept.push(i);
                failed.get_or_insert(e);
            }
        }
        drop(made);
        if !kept.is_empty() {
            let mut kept = kept.into_iter().peekable();
            for (i, c) in pending.into_iter().enumerate() {
                if kept.next_if_eq(&i).is_some() {
                    self.claimed.push(c);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// A template may give its jobs their own limit; the others run under the default.
    fn time_limit(&self, job: &Job) -> Duration {
        job.time_limit_secs
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(self.settings.default_time_limit)
    }
}

/// Sends a claimed job's assignment, as made, to the agent's session. `reserved`: the place it
/// takes was already counted in the agent's load (a launch's reservation). Returns false when
/// the job went back to the queue (the agent is gone or not taking work); a job whose
/// assignment cannot be made fails, and counts as placed. Takes the scheduler's agents and
/// lifecycle apart from the rest of it, so that a batch's assignments are made while its jobs
/// are sent.
#[allow(clippy::too_many_arguments)]
async fn send(
    agents: &mut HashMap<AgentId, AgentLink>,
    lifecycle: &Lifecycle,
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
            // The place is given back once the failure is recorded: a record that fails
            // leaves the job for a later pass, its place still counted.
            lifecycle.finish(attempt, &Outcome::failed(reason)).await?;
            if let Some(r) = reserved {
                give_back(agents, r);
            }
            return Ok(true);
        }
    };
    let Some(link) = agents.get_mut(&agent_id) else {
        lifecycle.release(attempt, "agent went away").await?;
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
        // As above: given back only once the release is recorded.
        lifecycle
            .release(attempt, "agent session is not taking work")
            .await?;
        if counted {
            link.in_flight = link.in_flight.saturating_sub(1);
        }
        return Ok(false);
    }
    if !counted {
        link.in_flight += 1;
    }
    metrics::global().jobs_dispatched.inc();
    tracing::info!(job = %job.job_id, agent = %link.name, server = %server.hostname, "dispatched");
    Ok(true)
}

/// Takes back the round's count of a job on its server that the server is not busy with.
fn not_busy_with(busy: &mut HashMap<ServerId, i64>, server: ServerId) {
    if let Some(b) = busy.get_mut(&server) {
        *b -= 1;
    }
}
