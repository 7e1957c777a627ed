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
mod duties;
mod hold;
mod placement;
mod reservation;
mod round;
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
use crate::lifecycle::{Attempt, Lifecycle};
use crate::metrics;
use crate::model::{AgentId, Job, Playbook, Server};
use crate::store::Store;

/// A cancel request is sent again this often until its job ends: one sent while the assignment
/// was in flight, or to a session being replaced, may have been lost.
const CANCEL_RESEND: Duration = Duration::from_secs(2);

pub use assignment::LaunchReads;
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

impl AgentLink {
    /// Ends the session with `code`: the connection is closed here, not only through the
    /// session's own loop, which a peer that stops reading could keep busy; the loop is told
    /// too, so that it ends with the same reason.
    pub fn close(&self, code: u32, reason: &str) {
        if let Some(conn) = &self.conn {
            conn.close(quinn::VarInt::from_u32(code), reason.as_bytes());
        }
        let _ = self.commands.try_send(SessionCommand::Close {
            code,
            reason: reason.to_owned(),
        });
    }
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
    /// The queue changed (jobs created, a job ended and freed its server, a wave released):
    /// look at it now.
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
        /// The other rows of its assignment, when the launch read them.
        reads: Option<Box<LaunchReads>>,
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
    /// The rows of its assignment its launch read, until its first hand-over.
    reads: Option<Box<LaunchReads>>,
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

    /// Publishes how many sessions the scheduler holds, after the map changed.
    fn count_connected(&self) {
        metrics::global()
            .agents_connected
            .set(self.agents.len() as u64);
    }

    /// Applies an event; returns whether a dispatch round is worth doing.
    fn on_event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Up(link) => {
                tracing::info!(agent = %link.name, uuid = %link.uuid, capacity = link.capacity, in_flight = link.in_flight, "agent connected");
                if let Some(old) = self.agents.insert(link.id, link) {
                    old.close(
                        outpost_protocol::close::REPLACED,
                        "a newer session of this agent replaced this one",
                    );
                }
                self.count_connected();
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
                    self.count_connected();
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
                reads,
                attempt,
            } => {
                self.claimed.push(Undelivered {
                    agent: place.agent,
                    place: Some(place),
                    job,
                    server,
                    playbook,
                    reads,
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
        give_back(&mut self.agents, r);
    }
}

/// Gives back a place counted in an agent's load, on the session it was counted in.
fn give_back(agents: &mut HashMap<AgentId, AgentLink>, r: Place) {
    if let Some(l) = agents.get_mut(&r.agent).filter(|l| l.session == r.session) {
        l.in_flight = l.in_flight.saturating_sub(1);
    }
}
