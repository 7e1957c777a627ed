//! The scheduler: one task that owns the registry of agents connected to this controller and
//! hands pending jobs to them.
//!
//! It is woken by events (a job launched, capacity freed, an agent arriving) and by a slow
//! sweep as a safety net, which also settles agents whose grace period ran out (their deadlines
//! are in the database, so any controller does it, after any restart). Cancel requests are
//! re-sent to the session holding the job until the job ends. Claims go through the
//! [`crate::lifecycle`], conditional in the database, so several controllers sharing it never
//! dispatch a job twice nor exceed a server's limit; each only dispatches to its own agents.

mod assignment;
mod hold;
mod placement;
mod reservation;
mod waves;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::message::Assignment;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Settings;
use crate::lifecycle::{Attempt, Claim, Lifecycle, Outcome, Released};
use crate::metrics;
use crate::model::{AgentId, Job, Playbook, Server, ServerId};
use crate::store::Store;

/// A cancel request is sent again this often until its job ends: one sent while the assignment
/// was in flight, or to a session being replaced, may have been lost.
const CANCEL_RESEND: Duration = Duration::from_secs(2);

use assignment::PlaybookCache;
pub use reservation::{Place, Reservation};

/// What the scheduler tells a session to do.
#[derive(Debug)]
pub enum SessionCommand {
    /// Open a job stream and hand the job over.
    Assign(Box<Dispatch>),
    /// Deliver a cancel request for a job the agent holds.
    Cancel { job: Uuid, reason: String },
    /// End the session (a newer one replaced it, or the agent was lost).
    Close { code: u32, reason: String },
}

#[derive(Debug)]
pub struct Dispatch {
    pub job: Job,
    pub assignment: Assignment,
}

/// A connected agent as the scheduler sees it.
#[derive(Debug)]
pub struct AgentLink {
    pub id: AgentId,
    pub uuid: Uuid,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: u32,
    /// Jobs this agent holds (assigned or running).
    pub in_flight: u32,
    pub draining: bool,
    /// Distinguishes this session from a later one of the same agent.
    pub session: u64,
    pub commands: mpsc::Sender<SessionCommand>,
    /// The connection itself, so that a revocation closes it from outside the session's loop.
    pub conn: Option<quinn::Connection>,
}

#[derive(Debug)]
pub enum Event {
    Up(AgentLink),
    Down {
        agent: AgentId,
        session: u64,
    },
    Status {
        agent: AgentId,
        session: u64,
        capacity: u32,
        draining: bool,
    },
    /// A job of this agent ended or went back to the queue.
    Freed {
        agent: AgentId,
        session: u64,
    },
    /// An agent did not take a job (it rejected it, or never answered): its place is free,
    /// and the job waits a little before it is offered again, so that a refusing agent does
    /// not turn dispatch into a loop.
    Declined {
        agent: AgentId,
        session: u64,
        job: crate::model::JobId,
    },
    /// Jobs were created: look at the queue now.
    Wake,
    /// A launch of one job asks for a place on an agent, to claim its job in the transaction
    /// that creates it (see [`crate::lifecycle::Lifecycle::launch`]).
    Reserve {
        server: Box<Server>,
        reply: oneshot::Sender<Option<Reservation>>,
    },
    /// The launch claimed its job on the reserved place: hand it over.
    Claimed {
        place: Place,
        job: Box<Job>,
        server: Box<Server>,
        /// The job's playbook as the launch read it, not to be read again on the way.
        playbook: Option<Box<Playbook>>,
        attempt: Attempt,
    },
    /// A reserved place was not used (the server was busy, the launch failed or went away).
    Unreserve(Place),
}

/// How long a launch waits for the scheduler to set a place aside; past it (the scheduler is
/// busy with a round) the launch leaves its job to the round.
const RESERVE_WAIT: Duration = Duration::from_millis(10);

/// How long a declined job waits before it is offered again.
const DECLINED_PAUSE: Duration = Duration::from_secs(5);

/// The most queued jobs one dispatch round reads.
const QUEUE_READ: i64 = 500;

/// Talks to the scheduler task. Cheap to clone.
#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Event>,
}

impl SchedulerHandle {
    pub fn send(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    /// A place on a connected agent that may run a job for `server` now, if the scheduler
    /// finds one within [`RESERVE_WAIT`]. A place found too late is given back by the
    /// scheduler itself (the answer finds no one to take it).
    pub async fn reserve(&self, server: &Server) -> Option<Reservation> {
        let (reply, answer) = oneshot::channel();
        self.send(Event::Reserve {
            server: Box::new(server.clone()),
            reply,
        });
        // A reservation that arrives after the wait is dropped with the receiver, and so
        // given back.
        tokio::time::timeout(RESERVE_WAIT, answer)
            .await
            .ok()?
            .ok()?
    }
}

pub fn spawn(
    store: Store,
    settings: Arc<Settings>,
    keyring: Arc<crate::keyring::Keyring>,
    stop: CancellationToken,
) -> (SchedulerHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let scheduler = Scheduler {
        events: tx.clone(),
        lifecycle: Lifecycle::new(store.clone()),
        store,
        settings,
        keyring,
        agents: HashMap::new(),
        cancel_sent: HashMap::new(),
        paused: HashMap::new(),
        reasons: HashMap::new(),
        playbooks: PlaybookCache::default(),
        claimed: Vec::new(),
    };
    (
        SchedulerHandle { tx },
        tokio::spawn(scheduler.run(rx, stop)),
    )
}

struct Scheduler {
    /// Its own queue, for the reservations it grants to send their fate to.
    events: mpsc::UnboundedSender<Event>,
    store: Store,
    lifecycle: Lifecycle,
    settings: Arc<Settings>,
    /// Opens the credentials' secrets that assignments carry.
    keyring: Arc<crate::keyring::Keyring>,
    agents: HashMap<AgentId, AgentLink>,
    /// When each open cancel request was last sent, and to which session.
    cancel_sent: HashMap<Uuid, (u64, Instant)>,
    /// Jobs an agent declined, and until when they wait.
    paused: HashMap<crate::model::JobId, Instant>,
    /// The last pending reason written per job, so a sweep does not rewrite it.
    reasons: HashMap<crate::model::JobId, String>,
    playbooks: PlaybookCache,
    /// Claimed jobs to hand over before the next round: those launches claimed on reserved
    /// places, and those whose hand-over found the database away.
    claimed: Vec<Undelivered>,
}

/// A claimed job not handed over yet.
struct Undelivered {
    agent: AgentId,
    /// The place a launch reserved for it, counted in the agent's load already.
    place: Option<Place>,
    job: Box<Job>,
    server: Box<Server>,
    playbook: Option<Box<Playbook>>,
    attempt: Attempt,
}

impl Scheduler {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>, stop: CancellationToken) {
        let mut sweep = tokio::time::interval(self.settings.sweep_interval);
        let mut cancels = tokio::time::interval(Duration::from_millis(500));
        cancels.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Revocations are noticed within 5 s; last_seen is written every 30 s, for all agents
        // of this controller in one statement rather than one per heartbeat.
        let mut presence = tokio::time::interval(Duration::from_secs(5));
        presence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut presence_ticks = 0u64;
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut dispatch = false;
            tokio::select! {
                _ = stop.cancelled() => break,
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    dispatch = self.on_event(ev);
                    // Take whatever else is queued before doing a round.
                    while let Ok(ev) = rx.try_recv() {
                        dispatch |= self.on_event(ev);
                    }
                }
                _ = sweep.tick() => {
                    self.settle_abandoned().await;
                    dispatch = true;
                }
                _ = cancels.tick() => self.deliver_cancels().await,
                _ = presence.tick() => {
                    presence_ticks += 1;
                    self.check_presence(presence_ticks.is_multiple_of(6)).await;
                }
            }
            if !self.claimed.is_empty() {
                if let Err(e) = self.hand_over_claimed().await {
                    tracing::warn!(error = %e, "handing over launched jobs failed; the sweep settles them");
                }
            }
            if dispatch && !stop.is_cancelled() {
                if let Err(e) = self.dispatch_round().await {
                    tracing::warn!(error = %e, "scheduling round failed; retrying at the next sweep");
                }
            }
        }
        // Shutting down: sessions end with the endpoint; nothing to hand back here.
    }

    /// Applies an event; returns whether a dispatch round is worth doing.
    fn on_event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Up(link) => {
                tracing::info!(agent = %link.name, uuid = %link.uuid, capacity = link.capacity, in_flight = link.in_flight, "agent connected");
                if let Some(old) = self.agents.insert(link.id, link) {
                    let _ = old.commands.try_send(SessionCommand::Close {
                        code: outpost_protocol::close::REPLACED,
                        reason: "a newer session of this agent replaced this one".into(),
                    });
                }
                metrics::global()
                    .agents_connected
                    .set(self.agents.len() as u64);
                true
            }
            Event::Down { agent, session } => {
                if self
                    .agents
                    .get(&agent)
                    .is_some_and(|l| l.session == session)
                {
                    let link = self.agents.remove(&agent);
                    if let Some(link) = link {
                        tracing::warn!(agent = %link.name, grace = ?self.settings.agent_grace, "agent session ended; waiting for it to come back");
                    }
                    metrics::global()
                        .agents_connected
                        .set(self.agents.len() as u64);
                }
                false
            }
            Event::Status {
                agent,
                session,
                capacity,
                draining,
            } => {
                if let Some(l) = self.agents.get_mut(&agent).filter(|l| l.session == session) {
                    l.capacity = capacity;
                    l.draining = draining;
                }
                !draining
            }
            Event::Freed { agent, session } => {
                if let Some(l) = self.agents.get_mut(&agent).filter(|l| l.session == session) {
                    l.in_flight = l.in_flight.saturating_sub(1);
                }
                true
            }
            Event::Declined {
                agent,
                session,
                job,
            } => {
                if let Some(l) = self.agents.get_mut(&agent).filter(|l| l.session == session) {
                    l.in_flight = l.in_flight.saturating_sub(1);
                }
                self.paused.insert(job, Instant::now() + DECLINED_PAUSE);
                true
            }
            Event::Wake => true,
            Event::Reserve { server, reply } => {
                let placed =
                    placement::place(self.agents.values(), &server, &self.settings.routing_keys);
                let Some(link) = placed.ok().and_then(|a| self.agents.get_mut(&a)) else {
                    let _ = reply.send(None);
                    return false;
                };
                let place = Place {
                    agent: link.id,
                    session: link.session,
                };
                link.in_flight += 1;
                if let Err(Some(r)) = reply.send(Some(Reservation::new(place, self.events.clone())))
                {
                    // The launch stopped waiting: the place is not taken.
                    self.unreserve(r.forget());
                }
                false
            }
            Event::Claimed {
                place,
                job,
                server,
                playbook,
                attempt,
            } => {
                self.claimed.push(Undelivered {
                    agent: place.agent,
                    place: Some(place),
                    job,
                    server,
                    playbook,
                    attempt,
                });
                false
            }
            Event::Unreserve(r) => {
                self.unreserve(r);
                true
            }
        }
    }

    /// Gives back a reserved place (on the session it was counted in).
    fn unreserve(&mut self, r: Place) {
        if let Some(l) = self
            .agents
            .get_mut(&r.agent)
            .filter(|l| l.session == r.session)
        {
            l.in_flight = l.in_flight.saturating_sub(1);
        }
    }

    /// Agents gone longer than the grace period, on any controller: their running jobs fail
    /// ("agent lost", with a ticket); jobs they held but never started go back to the queue.
    async fn settle_abandoned(&mut self) {
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

    /// Drops the sessions of agents revoked since they connected; refreshes last_seen.
    async fn check_presence(&mut self, stamp_last_seen: bool) {
        if self.agents.is_empty() {
            return;
        }
        let controller = self.settings.controller_id.clone();
        match self.store.revoked_agents().await {
            Ok(revoked) => {
                for id in revoked {
                    if let Some(link) = self.agents.get(&id) {
                        tracing::warn!(agent = %link.name, "agent revoked: dropping its session");
                        // Closed here, not through the session's own loop, which a peer that
                        // stops reading could keep busy.
                        if let Some(conn) = &link.conn {
                            conn.close(
                                quinn::VarInt::from_u32(outpost_protocol::close::REVOKED),
                                b"agent revoked",
                            );
                        }
                        let _ = link.commands.try_send(SessionCommand::Close {
                            code: outpost_protocol::close::REVOKED,
                            reason: "agent revoked".into(),
                        });
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot check revocations"),
        }
        if stamp_last_seen {
            if let Err(e) = self.store.agents_seen(&controller).await {
                tracing::debug!(error = %e, "cannot stamp last_seen");
            }
        }
    }

    /// Sends each open cancel request to the session holding its job, again every
    /// [`CANCEL_RESEND`] and at once to a new session, until the job ends.
    async fn deliver_cancels(&mut self) {
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

    async fn dispatch_round(&mut self) -> crate::store::Result<()> {
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
    async fn hand_over_claimed(&mut self) -> crate::store::Result<()> {
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
