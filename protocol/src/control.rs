//! The rules of the control (session) stream, without any I/O: Hello first and only once, the
//! version check, the Welcome, heartbeats and when they are due, the drain notice, and the
//! certificate renewal exchange. The controller's [`ControllerSide`] and the agent's
//! [`AgentSide`] are fed decoded messages and the time, and answer with what to send, what
//! happened, or which rule was broken; the async code on both sides only moves bytes between
//! them and the network (as [`crate::jobstream`] does for job streams).

use std::time::{Duration, Instant};

use thiserror::Error;
use uuid::Uuid;

use crate::message::{AgentStatus, Down, Hello, Up, Welcome};
use crate::{close, MAX_AGENT_CAPACITY, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// How long the controller waits for the agent to open its session stream, and then again for
/// its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent waits for the Welcome after its Hello.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// The bounds the agent holds the controller's heartbeat interval to: at least one beat a
/// minute, and none more often than every second.
pub const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(60);
/// The heartbeat interval a Welcome names when the controller's own does not fit in a `u32`
/// of milliseconds.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// After a refused renewal, or when no certificate request could be made, the agent asks again
/// this much later.
pub const RENEW_RETRY: Duration = Duration::from_secs(60);
/// After a renewal the next one is never sooner than this, whatever the certificate's lifetime
/// (a controller issuing very short certificates must not make the agent ask in a loop).
pub const RENEW_MIN_GAP: Duration = Duration::from_secs(5);
/// How many messages an agent may send on its session stream at once after its Hello, and at
/// what steady pace beyond that ([`SESSION_MESSAGE_GAP`]). A well-behaved agent sends a
/// Heartbeat at most every [`MIN_HEARTBEAT`], a Status when its capacity or drain state
/// changes and a renewal request at most every [`RENEW_MIN_GAP`]. Messages are counted when
/// the controller reads them, so the burst also covers what piles up while a session is not
/// read: a renewal waiting on the store, or beats held back by a network outage shorter than
/// the idle timeout. 128 is two minutes of beats at the fastest interval. Each message costs
/// the controller a decode and an answer (a renewal, a store lookup and a signature: hence
/// [`RENEW_MIN_SPACING`] too), and a flood that reads its answers is bounded by nothing else.
pub const SESSION_BURST: u32 = 128;
/// The steady pace of the budget: one message per gap, five a second.
pub const SESSION_MESSAGE_GAP: Duration = Duration::from_millis(200);
/// A renewal request this soon after the session's previous one is refused unread (the agent
/// asks again after [`RENEW_RETRY`]); a well-behaved agent leaves [`RENEW_MIN_GAP`] after each
/// answer.
pub const RENEW_MIN_SPACING: Duration = Duration::from_millis(2500);
// A well-behaved agent's renewals, RENEW_MIN_GAP apart at least, are never too soon.
const _: () = assert!(RENEW_MIN_GAP.as_millis() > RENEW_MIN_SPACING.as_millis());
/// The reason a renewal refused for [`RENEW_MIN_SPACING`] carries.
const RENEW_TOO_SOON: &str = "renewal asked again too soon; ask later";

/// Sleeps until a machine's next deadline ([`ControllerSide::poll_timeout`],
/// [`AgentSide::poll_timeout`]), forever if it has none.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The optional features both sides announce.
pub const CAPABILITIES: [&str; 2] = ["renew", "resume"];

/// The reason a renewal refused for revocation carries; the connection closes after it.
const REVOKED: &str = "agent revoked";

/// A rule of the control stream was broken, or the handshake did not complete: the session
/// ends.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    #[error("the agent did not open its session stream in time")]
    NoStream,
    #[error("expected Hello, got {0}")]
    NoHello(&'static str),
    #[error("expected Hello, got nothing in {0:?}")]
    HelloTimeout(Duration),
    #[error(
        "protocol version {got} is not supported; this controller speaks {}..={}",
        MIN_PROTOCOL_VERSION,
        PROTOCOL_VERSION
    )]
    Version { got: u16 },
    #[error("a second Hello")]
    SecondHello,
    #[error("{}", REVOKED)]
    Revoked,
    #[error("refused: {0}")]
    Refused(String),
    #[error("expected Welcome, got {0}")]
    NoWelcome(&'static str),
    #[error("no Welcome in time")]
    WelcomeTimeout,
    #[error(
        "the agent flooded its session stream (more than {} messages at once, or more than one \
         every {:?} for long)",
        SESSION_BURST,
        SESSION_MESSAGE_GAP
    )]
    Flooding,
}

impl ControlError {
    /// The QUIC close code the controller closes the connection with.
    pub fn close_code(&self) -> u32 {
        match self {
            ControlError::NoStream => close::NORMAL,
            ControlError::Version { .. } => close::VERSION,
            ControlError::Revoked => close::REVOKED,
            ControlError::NoHello(_)
            | ControlError::HelloTimeout(_)
            | ControlError::SecondHello
            | ControlError::Refused(_)
            | ControlError::NoWelcome(_)
            | ControlError::WelcomeTimeout
            | ControlError::Flooding => close::PROTOCOL,
        }
    }

    /// What the controller tells the agent before closing, where the agent is owed a reason on
    /// the stream itself (it then retries, or gives up, knowing why).
    pub fn refusal(&self) -> Option<Down> {
        match self {
            ControlError::Version { .. } => Some(Down::Refused {
                reason: self.to_string(),
            }),
            _ => None,
        }
    }
}

/// The name of a message's kind, for errors (never its contents: a CSR is no log material).
fn up_kind(msg: &Up) -> &'static str {
    match msg {
        Up::Hello(_) => "Hello",
        Up::Heartbeat { .. } => "Heartbeat",
        Up::Status(_) => "Status",
        Up::Renew { .. } => "Renew",
    }
}

fn down_kind(msg: &Down) -> &'static str {
    match msg {
        Down::Welcome(_) => "Welcome",
        Down::Refused { .. } => "Refused",
        Down::HeartbeatAck { .. } => "HeartbeatAck",
        Down::Cancel { .. } => "Cancel",
        Down::Renewed { .. } => "Renewed",
        Down::RenewRefused { .. } => "RenewRefused",
    }
}

/// Holds an agent's announced capacity to what the connection allows: more jobs than streams
/// would stall.
pub fn clamp_capacity(capacity: u32) -> u32 {
    capacity.clamp(1, MAX_AGENT_CAPACITY)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControllerState {
    /// Until the deadline for the agent to open its session stream.
    AwaitingStream(Instant),
    /// Until the deadline for the Hello.
    AwaitingHello(Instant),
    /// Hello taken; the Welcome is not sent yet.
    Greeting,
    Open,
}

/// The controller's side of one agent's control stream.
#[derive(Debug)]
pub struct ControllerSide {
    state: ControllerState,
    budget: MessageBudget,
    /// When the session's last renewal request came.
    last_renewal: Option<Instant>,
}

/// [`SESSION_BURST`] messages at once, then one every [`SESSION_MESSAGE_GAP`]: a generic cell
/// rate algorithm, which keeps one instant rather than a count and a clock.
#[derive(Debug, Default)]
struct MessageBudget {
    /// When the next message would be on time if every earlier one had used its whole gap.
    due: Option<Instant>,
}

impl MessageBudget {
    fn take(&mut self, now: Instant) -> bool {
        let due = self.due.map_or(now, |d| d.max(now));
        if due.saturating_duration_since(now) > SESSION_MESSAGE_GAP * (SESSION_BURST - 1) {
            return false;
        }
        self.due = Some(due + SESSION_MESSAGE_GAP);
        true
    }
}

/// What a message from the agent asks of the controller.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// The session's Hello, its version accepted; the capacity is already clamped.
    Hello { hello: Box<Hello>, capacity: u32 },
    /// Send this back: a heartbeat's acknowledgement, or a renewal refused for asking too
    /// soon.
    Reply(Down),
    /// The agent's capacity (clamped) or drain state changed.
    Status { capacity: u32, draining: bool },
    /// Sign this request (or refuse to), then give the answer to [`ControllerSide::renewal`].
    Renew { csr_der: Vec<u8> },
}

/// What the controller decided about a renewal request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewAnswer {
    Renewed {
        cert_chain_der: Vec<Vec<u8>>,
    },
    /// Not now (the store is away, the request is bad): the agent asks again later.
    Refused {
        reason: String,
    },
    /// Never: the agent is revoked.
    Revoked,
}

/// The answer to send, and whether the session ends after it.
#[derive(Debug, PartialEq)]
pub struct RenewReply {
    pub down: Down,
    pub then_close: Option<ControlError>,
}

/// What the controller says about itself in the Welcome.
#[derive(Debug, Clone)]
pub struct Greeting {
    pub controller_version: String,
    /// The agent's uuid as the controller knows it (from its certificate).
    pub agent: Uuid,
    pub heartbeat_interval: Duration,
}

impl ControllerSide {
    /// A connection just established: the agent now has [`HELLO_TIMEOUT`] to open its session
    /// stream.
    pub fn new(now: Instant) -> ControllerSide {
        ControllerSide {
            state: ControllerState::AwaitingStream(now + HELLO_TIMEOUT),
            budget: MessageBudget::default(),
            last_renewal: None,
        }
    }

    /// The agent opened its session stream: the Hello is due within [`HELLO_TIMEOUT`].
    pub fn stream_opened(&mut self, now: Instant) {
        if let ControllerState::AwaitingStream(_) = self.state {
            self.state = ControllerState::AwaitingHello(now + HELLO_TIMEOUT);
        }
    }

    /// When [`ControllerSide::handle_timeout`] is next due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ControllerState::AwaitingStream(at) | ControllerState::AwaitingHello(at) => Some(at),
            ControllerState::Greeting | ControllerState::Open => None,
        }
    }

    /// The time is `now`: a handshake step past its deadline ends the session.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ControlError> {
        match self.state {
            ControllerState::AwaitingStream(at) if now >= at => Err(ControlError::NoStream),
            ControllerState::AwaitingHello(at) if now >= at => {
                Err(ControlError::HelloTimeout(HELLO_TIMEOUT))
            }
            _ => Ok(()),
        }
    }

    /// Applies one message from the agent, received at `now`.
    pub fn receive(&mut self, msg: Up, now: Instant) -> Result<Inbound, ControlError> {
        let opened = matches!(
            self.state,
            ControllerState::Greeting | ControllerState::Open
        );
        if opened && !self.budget.take(now) {
            return Err(ControlError::Flooding);
        }
        match (self.state, msg) {
            (ControllerState::AwaitingStream(_) | ControllerState::AwaitingHello(_), msg) => {
                let Up::Hello(hello) = msg else {
                    return Err(ControlError::NoHello(up_kind(&msg)));
                };
                if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol_version) {
                    return Err(ControlError::Version {
                        got: hello.protocol_version,
                    });
                }
                self.state = ControllerState::Greeting;
                let capacity = clamp_capacity(hello.capacity);
                Ok(Inbound::Hello {
                    hello: Box::new(hello),
                    capacity,
                })
            }
            (_, Up::Hello(_)) => Err(ControlError::SecondHello),
            (_, Up::Heartbeat { seq }) => Ok(Inbound::Reply(Down::HeartbeatAck { seq })),
            (_, Up::Status(s)) => Ok(Inbound::Status {
                capacity: clamp_capacity(s.capacity),
                draining: s.draining,
            }),
            (_, Up::Renew { csr_der }) => {
                let last = self.last_renewal.replace(now);
                if last.is_some_and(|at| now.saturating_duration_since(at) < RENEW_MIN_SPACING) {
                    return Ok(Inbound::Reply(Down::RenewRefused {
                        reason: RENEW_TOO_SOON.into(),
                    }));
                }
                Ok(Inbound::Renew { csr_der })
            }
        }
    }

    /// The Welcome that opens the session once the Hello is taken.
    pub fn welcome(&mut self, greeting: Greeting) -> Down {
        self.state = ControllerState::Open;
        let heartbeat_interval_ms = u32::try_from(greeting.heartbeat_interval.as_millis())
            .unwrap_or(DEFAULT_HEARTBEAT.as_millis() as u32);
        Down::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            controller_version: greeting.controller_version,
            agent: greeting.agent,
            heartbeat_interval_ms,
            capabilities: CAPABILITIES.iter().map(|c| (*c).to_owned()).collect(),
        })
    }

    /// The answer to a renewal request. A revoked agent is told so and then disconnected.
    pub fn renewal(&mut self, answer: RenewAnswer) -> RenewReply {
        match answer {
            RenewAnswer::Renewed { cert_chain_der } => RenewReply {
                down: Down::Renewed { cert_chain_der },
                then_close: None,
            },
            RenewAnswer::Refused { reason } => RenewReply {
                down: Down::RenewRefused { reason },
                then_close: None,
            },
            RenewAnswer::Revoked => RenewReply {
                down: Down::RenewRefused {
                    reason: REVOKED.into(),
                },
                then_close: Some(ControlError::Revoked),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    /// Not scheduled yet (the certificate has not been looked at).
    Unscheduled,
    /// Due at this time.
    At(Instant),
    /// Asked for a request ([`AgentAction::Renew`]), or a request is out: wait for the answer.
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentState {
    AwaitingWelcome(Instant),
    Open {
        heartbeat: Duration,
        /// None when the session's QUIC keep-alive beats for the agent.
        next_beat: Option<Instant>,
        seq: u64,
        renewal: Renewal,
        /// No renewal is scheduled before this.
        renew_floor: Instant,
        draining_sent: bool,
    },
}

/// The agent's side of its control stream.
#[derive(Debug)]
pub struct AgentSide {
    state: AgentState,
    keep_alive: Option<Duration>,
}

/// What a message from the controller means for the agent.
#[derive(Debug, PartialEq)]
pub enum AgentEvent {
    /// The session is open.
    Welcomed(Welcome),
    HeartbeatAcked(u64),
    /// Stop this job (or refuse it, if its assignment has not arrived yet).
    Cancel {
        job: Uuid,
        reason: String,
    },
    /// A fresh certificate: store it, then [`AgentSide::schedule_renewal`] from it.
    Renewed {
        cert_chain_der: Vec<Vec<u8>>,
    },
    /// The renewal was refused; it is asked again after [`RENEW_RETRY`].
    RenewRefused {
        reason: String,
    },
    /// A message that has no meaning now (a second Welcome, a renewal answer nobody asked
    /// for): ignored.
    Ignored(&'static str),
}

/// Something the agent must do because time passed.
#[derive(Debug, PartialEq)]
pub enum AgentAction {
    Send(Up),
    /// A renewal is due: make a certificate request and give it to [`AgentSide::renew`].
    Renew,
}

impl AgentSide {
    /// A session starting with `hello`, which is to be sent first.
    pub fn new(hello: Hello, now: Instant) -> (AgentSide, Up) {
        (
            AgentSide {
                state: AgentState::AwaitingWelcome(now + WELCOME_TIMEOUT),
                keep_alive: None,
            },
            Up::Hello(hello),
        )
    }

    /// Tells the machine the session's QUIC keep-alive interval; to be called before the
    /// Welcome, which decides whether the agent beats. A heartbeat interval no shorter than
    /// the keep-alive sends no Heartbeat: the keep-alive's PING already tells the controller
    /// the agent is there about as often, and costs the controller less than a Heartbeat (no
    /// stream data, no wake-up of its session task; BENCHMARKS.md, "50,000 idle agents,
    /// again").
    pub fn set_keep_alive(&mut self, interval: Duration) {
        self.keep_alive = Some(interval);
    }

    /// Whether the Welcome has arrived.
    pub fn is_open(&self) -> bool {
        matches!(self.state, AgentState::Open { .. })
    }

    /// Applies one message from the controller.
    pub fn receive(&mut self, msg: Down, now: Instant) -> Result<AgentEvent, ControlError> {
        let AgentState::Open {
            renewal,
            renew_floor,
            ..
        } = &mut self.state
        else {
            return match msg {
                Down::Welcome(w) => {
                    let heartbeat = Duration::from_millis(w.heartbeat_interval_ms.into())
                        .clamp(MIN_HEARTBEAT, MAX_HEARTBEAT);
                    let beats = self.keep_alive.is_none_or(|k| heartbeat < k);
                    self.state = AgentState::Open {
                        heartbeat,
                        // The first beat goes out as soon as the session is open.
                        next_beat: beats.then_some(now),
                        seq: 0,
                        renewal: Renewal::Unscheduled,
                        renew_floor: now,
                        draining_sent: false,
                    };
                    Ok(AgentEvent::Welcomed(w))
                }
                Down::Refused { reason } => Err(ControlError::Refused(reason)),
                other => Err(ControlError::NoWelcome(down_kind(&other))),
            };
        };
        Ok(match msg {
            Down::HeartbeatAck { seq } => AgentEvent::HeartbeatAcked(seq),
            Down::Cancel { job, reason } => AgentEvent::Cancel { job, reason },
            Down::Renewed { cert_chain_der } if *renewal == Renewal::Pending => {
                *renewal = Renewal::Unscheduled;
                *renew_floor = now + RENEW_MIN_GAP;
                AgentEvent::Renewed { cert_chain_der }
            }
            Down::RenewRefused { reason } if *renewal == Renewal::Pending => {
                *renewal = Renewal::At(now + RENEW_RETRY);
                AgentEvent::RenewRefused { reason }
            }
            other => AgentEvent::Ignored(down_kind(&other)),
        })
    }

    /// The certificate wants renewing at `at` (never sooner than [`RENEW_MIN_GAP`] after the
    /// last renewal).
    pub fn schedule_renewal(&mut self, at: Instant) {
        if let AgentState::Open {
            renewal,
            renew_floor,
            ..
        } = &mut self.state
        {
            if *renewal != Renewal::Pending {
                *renewal = Renewal::At(at.max(*renew_floor));
            }
        }
    }

    /// When [`AgentSide::poll`] next has something to do; None while nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            AgentState::AwaitingWelcome(at) => Some(at),
            AgentState::Open {
                next_beat, renewal, ..
            } => match renewal {
                Renewal::At(at) => Some(next_beat.map_or(at, |beat| beat.min(at))),
                Renewal::Unscheduled | Renewal::Pending => next_beat,
            },
        }
    }

    /// What is due at `now`; call until it returns `Ok(None)`. Past the Welcome's deadline the
    /// session has failed.
    pub fn poll(&mut self, now: Instant) -> Result<Option<AgentAction>, ControlError> {
        match &mut self.state {
            AgentState::AwaitingWelcome(at) if now >= *at => Err(ControlError::WelcomeTimeout),
            AgentState::AwaitingWelcome(_) => Ok(None),
            AgentState::Open {
                heartbeat,
                next_beat,
                seq,
                renewal,
                ..
            } => {
                if let Some(beat) = next_beat.as_mut().filter(|at| now >= **at) {
                    *seq += 1;
                    *beat = now + *heartbeat;
                    return Ok(Some(AgentAction::Send(Up::Heartbeat { seq: *seq })));
                }
                if matches!(*renewal, Renewal::At(at) if now >= at) {
                    *renewal = Renewal::Pending;
                    return Ok(Some(AgentAction::Renew));
                }
                Ok(None)
            }
        }
    }

    /// The certificate request for a due renewal, if one could be made: the message to send.
    /// Without one the renewal is tried again after [`RENEW_RETRY`].
    pub fn renew(&mut self, csr_der: Option<Vec<u8>>, now: Instant) -> Option<Up> {
        let AgentState::Open { renewal, .. } = &mut self.state else {
            return None;
        };
        match csr_der {
            Some(csr_der) => {
                *renewal = Renewal::Pending;
                Some(Up::Renew { csr_der })
            }
            None => {
                *renewal = Renewal::At(now + RENEW_RETRY);
                None
            }
        }
    }

    /// The agent is draining: the status that says so, once per session and only once the
    /// session is open.
    pub fn drain(&mut self, status: AgentStatus) -> Option<Up> {
        match &mut self.state {
            AgentState::Open { draining_sent, .. } if !*draining_sent => {
                *draining_sent = true;
                Some(Up::Status(AgentStatus {
                    draining: true,
                    ..status
                }))
            }
            _ => None,
        }
    }

    /// Whether the drain notice went out on this session.
    pub fn drain_sent(&self) -> bool {
        matches!(
            self.state,
            AgentState::Open {
                draining_sent: true,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(version: u16, capacity: u32) -> Hello {
        Hello {
            protocol_version: version,
            agent_version: "1.0".into(),
            hostname: "bastion".into(),
            labels: vec![],
            capacity,
            ansible_version: "ansible-playbook [core 2.16]".into(),
            running: vec![],
            capabilities: vec![],
        }
    }

    fn greeting() -> Greeting {
        Greeting {
            controller_version: "9.9".into(),
            agent: Uuid::nil(),
            heartbeat_interval: Duration::from_secs(5),
        }
    }

    fn open_controller(now: Instant) -> ControllerSide {
        let mut c = ControllerSide::new(now);
        c.stream_opened(now);
        assert!(matches!(
            c.receive(Up::Hello(hello(PROTOCOL_VERSION, 4)), now),
            Ok(Inbound::Hello { capacity: 4, .. })
        ));
        c.welcome(greeting());
        c
    }

    fn welcome(interval_ms: u32) -> Down {
        Down::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            controller_version: "9.9".into(),
            agent: Uuid::nil(),
            heartbeat_interval_ms: interval_ms,
            capabilities: vec![],
        })
    }

    fn open_agent(now: Instant, interval_ms: u32) -> AgentSide {
        let (mut a, _) = AgentSide::new(hello(PROTOCOL_VERSION, 1), now);
        assert!(matches!(
            a.receive(welcome(interval_ms), now),
            Ok(AgentEvent::Welcomed(_))
        ));
        a
    }

    #[test]
    fn the_stream_and_then_the_hello_each_have_a_deadline() {
        let t0 = Instant::now();
        let mut c = ControllerSide::new(t0);
        assert_eq!(c.poll_timeout(), Some(t0 + HELLO_TIMEOUT));
        assert_eq!(c.handle_timeout(t0 + Duration::from_secs(9)), Ok(()));
        assert_eq!(
            c.handle_timeout(t0 + HELLO_TIMEOUT),
            Err(ControlError::NoStream)
        );
        assert_eq!(ControlError::NoStream.close_code(), close::NORMAL);

        let t1 = t0 + Duration::from_secs(3);
        c.stream_opened(t1);
        assert_eq!(c.poll_timeout(), Some(t1 + HELLO_TIMEOUT));
        assert_eq!(c.handle_timeout(t0 + HELLO_TIMEOUT), Ok(()));
        let late = c.handle_timeout(t1 + HELLO_TIMEOUT).unwrap_err();
        assert_eq!(late, ControlError::HelloTimeout(HELLO_TIMEOUT));
        assert_eq!(late.close_code(), close::PROTOCOL);
    }

    #[test]
    fn the_first_message_must_be_a_hello() {
        let now = Instant::now();
        let mut c = ControllerSide::new(now);
        c.stream_opened(now);
        let e = c.receive(Up::Heartbeat { seq: 1 }, now).unwrap_err();
        assert_eq!(e, ControlError::NoHello("Heartbeat"));
        assert_eq!(e.to_string(), "expected Hello, got Heartbeat");
        assert_eq!(e.close_code(), close::PROTOCOL);
        assert_eq!(e.refusal(), None, "a broken peer is owed no explanation");

        let mut c = ControllerSide::new(now);
        assert!(matches!(
            c.receive(
                Up::Renew {
                    csr_der: vec![1, 2, 3]
                },
                now
            ),
            Err(ControlError::NoHello("Renew"))
        ));
    }

    #[test]
    fn unsupported_versions_are_refused_with_a_reason() {
        let now = Instant::now();
        for got in [0, MIN_PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1] {
            let mut c = ControllerSide::new(now);
            c.stream_opened(now);
            let e = c.receive(Up::Hello(hello(got, 1)), now).unwrap_err();
            assert_eq!(e, ControlError::Version { got });
            assert_eq!(e.close_code(), close::VERSION);
            let Some(Down::Refused { reason }) = e.refusal() else {
                panic!("no refusal for version {got}");
            };
            assert!(
                reason.contains(&format!("protocol version {got} is not supported")),
                "{reason}"
            );
        }
        let mut c = ControllerSide::new(now);
        assert!(c
            .receive(Up::Hello(hello(MIN_PROTOCOL_VERSION, 1)), now)
            .is_ok());
    }

    #[test]
    fn capacity_is_held_to_what_the_connection_allows() {
        let now = Instant::now();
        for (asked, held) in [(0, 1), (7, 7), (MAX_AGENT_CAPACITY + 1, MAX_AGENT_CAPACITY)] {
            let mut c = ControllerSide::new(now);
            match c.receive(Up::Hello(hello(PROTOCOL_VERSION, asked)), now) {
                Ok(Inbound::Hello { capacity, hello }) => {
                    assert_eq!(capacity, held);
                    assert_eq!(
                        hello.capacity, asked,
                        "the Hello itself is passed on as sent"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        let mut c = open_controller(now);
        assert_eq!(
            c.receive(
                Up::Status(AgentStatus {
                    running: 0,
                    capacity: 1000,
                    draining: true
                }),
                now
            ),
            Ok(Inbound::Status {
                capacity: MAX_AGENT_CAPACITY,
                draining: true
            })
        );
    }

    #[test]
    fn the_welcome_names_the_agent_and_the_heartbeat_and_ends_the_deadlines() {
        let now = Instant::now();
        let mut c = ControllerSide::new(now);
        c.receive(Up::Hello(hello(PROTOCOL_VERSION, 1)), now)
            .unwrap();
        let agent = Uuid::new_v4();
        let Down::Welcome(w) = c.welcome(Greeting {
            agent,
            ..greeting()
        }) else {
            panic!("not a Welcome");
        };
        assert_eq!(w.agent, agent);
        assert_eq!(w.protocol_version, PROTOCOL_VERSION);
        assert_eq!(w.heartbeat_interval_ms, 5000);
        assert_eq!(w.capabilities, ["renew", "resume"]);
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.handle_timeout(now + Duration::from_secs(3600)), Ok(()));

        let mut c = ControllerSide::new(now);
        c.receive(Up::Hello(hello(PROTOCOL_VERSION, 1)), now)
            .unwrap();
        let Down::Welcome(w) = c.welcome(Greeting {
            heartbeat_interval: Duration::from_secs(u64::MAX / 2),
            ..greeting()
        }) else {
            panic!("not a Welcome");
        };
        assert_eq!(w.heartbeat_interval_ms, 5000, "an unsayable interval");
    }

    #[test]
    fn heartbeats_are_acknowledged_and_a_second_hello_is_a_violation() {
        let now = Instant::now();
        let mut c = open_controller(now);
        assert_eq!(
            c.receive(Up::Heartbeat { seq: 41 }, now),
            Ok(Inbound::Reply(Down::HeartbeatAck { seq: 41 }))
        );
        let e = c
            .receive(Up::Hello(hello(PROTOCOL_VERSION, 1)), now)
            .unwrap_err();
        assert_eq!(e, ControlError::SecondHello);
        assert_eq!(e.close_code(), close::PROTOCOL);
    }

    #[test]
    fn a_well_behaved_agent_never_meets_the_budget_and_a_flood_does() {
        let t0 = Instant::now();
        // A beat every MIN_HEARTBEAT for an hour, with a Status now and then.
        let mut c = open_controller(t0);
        for i in 0..3600u32 {
            let at = t0 + MIN_HEARTBEAT * i;
            assert!(
                c.receive(Up::Heartbeat { seq: i.into() }, at).is_ok(),
                "beat {i}"
            );
            if i % 100 == 0 {
                let status = Up::Status(AgentStatus {
                    running: 0,
                    capacity: 2,
                    draining: false,
                });
                assert!(c.receive(status, at).is_ok(), "status at beat {i}");
            }
        }

        // A burst is let through, the next message at the same instant is not.
        let mut c = open_controller(t0);
        for seq in 0..u64::from(SESSION_BURST) {
            assert!(
                c.receive(Up::Heartbeat { seq }, t0).is_ok(),
                "message {seq}"
            );
        }
        let e = c.receive(Up::Heartbeat { seq: 99 }, t0).unwrap_err();
        assert_eq!(e, ControlError::Flooding);
        assert_eq!(e.close_code(), close::PROTOCOL);
        assert!(e.to_string().contains("flooded"), "{e}");

        // The allowance comes back at its pace: one message a gap, and a whole burst after a
        // quiet spell, but no more than a burst.
        let mut c = open_controller(t0);
        for seq in 0..u64::from(SESSION_BURST) {
            c.receive(Up::Heartbeat { seq }, t0).unwrap();
        }
        let t1 = t0 + SESSION_MESSAGE_GAP;
        assert!(c.receive(Up::Heartbeat { seq: 1 }, t1).is_ok());
        assert!(c.receive(Up::Heartbeat { seq: 2 }, t1).is_err());
        let t2 = t1 + Duration::from_secs(3600);
        for seq in 0..u64::from(SESSION_BURST) {
            assert!(
                c.receive(Up::Heartbeat { seq }, t2).is_ok(),
                "message {seq}"
            );
        }
        assert!(c.receive(Up::Heartbeat { seq: 0 }, t2).is_err());

        // Five a second forever is the pace; faster for long is a flood.
        let mut c = open_controller(t0);
        let steady = (0..1000u32).all(|i| {
            let at = t0 + SESSION_MESSAGE_GAP * i;
            c.receive(Up::Heartbeat { seq: i.into() }, at).is_ok()
        });
        assert!(steady);
        let mut c = open_controller(t0);
        let fast = (0..1000u32)
            .position(|i| {
                let at = t0 + SESSION_MESSAGE_GAP / 2 * i;
                c.receive(Up::Heartbeat { seq: i.into() }, at).is_err()
            })
            .expect("twice the pace is cut off");
        assert!(fast > SESSION_BURST as usize, "cut off after {fast}");
    }

    #[test]
    fn a_renewal_asked_again_too_soon_is_refused_unread() {
        let t0 = Instant::now();
        let mut c = open_controller(t0);
        let renew = || Up::Renew { csr_der: vec![7] };
        assert_eq!(
            c.receive(renew(), t0),
            Ok(Inbound::Renew { csr_der: vec![7] })
        );
        let soon = t0 + RENEW_MIN_SPACING - Duration::from_millis(1);
        let Ok(Inbound::Reply(Down::RenewRefused { reason })) = c.receive(renew(), soon) else {
            panic!("a renewal right after another is looked at");
        };
        assert!(reason.contains("too soon"), "{reason}");
        // The refused request counts: the spacing runs from it.
        assert!(matches!(
            c.receive(renew(), soon + RENEW_MIN_SPACING),
            Ok(Inbound::Renew { .. })
        ));
        // A well-behaved agent waits RENEW_MIN_GAP after each answer: never refused.
        let t3 = soon + RENEW_MIN_SPACING + RENEW_MIN_GAP;
        assert!(matches!(c.receive(renew(), t3), Ok(Inbound::Renew { .. })));
    }

    #[test]
    fn renewals_are_answered_and_a_revoked_agent_is_disconnected() {
        let now = Instant::now();
        let mut c = open_controller(now);
        assert_eq!(
            c.receive(Up::Renew { csr_der: vec![7] }, now),
            Ok(Inbound::Renew { csr_der: vec![7] })
        );
        assert_eq!(
            c.renewal(RenewAnswer::Renewed {
                cert_chain_der: vec![vec![1], vec![2]]
            }),
            RenewReply {
                down: Down::Renewed {
                    cert_chain_der: vec![vec![1], vec![2]]
                },
                then_close: None
            }
        );
        assert_eq!(
            c.renewal(RenewAnswer::Refused {
                reason: "store away".into()
            }),
            RenewReply {
                down: Down::RenewRefused {
                    reason: "store away".into()
                },
                then_close: None
            }
        );
        let revoked = c.renewal(RenewAnswer::Revoked);
        assert_eq!(
            revoked.down,
            Down::RenewRefused {
                reason: "agent revoked".into()
            }
        );
        let e = revoked.then_close.expect("the session ends");
        assert_eq!(e.close_code(), close::REVOKED);
        assert_eq!(e.to_string(), "agent revoked");
    }

    #[test]
    fn the_agent_waits_a_bounded_time_for_the_welcome() {
        let t0 = Instant::now();
        let h = hello(PROTOCOL_VERSION, 2);
        let (mut a, first) = AgentSide::new(h.clone(), t0);
        assert_eq!(first, Up::Hello(h));
        assert!(!a.is_open());
        assert_eq!(a.poll_timeout(), Some(t0 + WELCOME_TIMEOUT));
        assert_eq!(a.poll(t0 + Duration::from_secs(14)), Ok(None));
        assert_eq!(
            a.poll(t0 + WELCOME_TIMEOUT),
            Err(ControlError::WelcomeTimeout)
        );
        assert_eq!(
            a.drain(status()),
            None,
            "nothing but the Hello before the Welcome"
        );
    }

    #[test]
    fn anything_but_a_welcome_first_ends_the_agents_session() {
        let now = Instant::now();
        let (mut a, _) = AgentSide::new(hello(PROTOCOL_VERSION, 1), now);
        let e = a
            .receive(
                Down::Refused {
                    reason: "too old".into(),
                },
                now,
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "refused: too old");
        let (mut a, _) = AgentSide::new(hello(PROTOCOL_VERSION, 1), now);
        assert_eq!(
            a.receive(Down::HeartbeatAck { seq: 1 }, now),
            Err(ControlError::NoWelcome("HeartbeatAck"))
        );
    }

    #[test]
    fn heartbeats_start_at_once_and_follow_the_clamped_interval() {
        let t0 = Instant::now();
        let mut a = open_agent(t0, 10); // 10 ms: held to the minimum
        assert_eq!(a.poll_timeout(), Some(t0));
        assert_eq!(
            a.poll(t0),
            Ok(Some(AgentAction::Send(Up::Heartbeat { seq: 1 })))
        );
        assert_eq!(a.poll(t0), Ok(None), "one beat per interval");
        assert_eq!(a.poll_timeout(), Some(t0 + MIN_HEARTBEAT));
        let t1 = t0 + MIN_HEARTBEAT;
        assert_eq!(
            a.poll(t1),
            Ok(Some(AgentAction::Send(Up::Heartbeat { seq: 2 })))
        );
        assert_eq!(
            a.receive(Down::HeartbeatAck { seq: 2 }, t1),
            Ok(AgentEvent::HeartbeatAcked(2))
        );

        let mut slow = open_agent(t0, u32::MAX);
        slow.poll(t0).unwrap();
        assert_eq!(slow.poll_timeout(), Some(t0 + MAX_HEARTBEAT));
    }

    #[test]
    fn a_keep_alive_at_least_as_frequent_as_the_heartbeat_beats_for_it() {
        let t0 = Instant::now();
        let keep_alive = Duration::from_secs(5);
        let open = |interval_ms: u32| {
            let (mut a, _) = AgentSide::new(hello(PROTOCOL_VERSION, 1), t0);
            a.set_keep_alive(keep_alive);
            a.receive(welcome(interval_ms), t0).unwrap();
            a
        };
        // The default: a beat every 5 s, the keep-alive's interval. No Heartbeat, ever.
        let mut a = open(5000);
        assert_eq!(a.poll_timeout(), None);
        for later in [0, 5, 60, 3600] {
            assert_eq!(a.poll(t0 + Duration::from_secs(later)), Ok(None));
        }
        // A renewal is still scheduled, and is all that is.
        let due = t0 + Duration::from_secs(30);
        a.schedule_renewal(due);
        assert_eq!(a.poll_timeout(), Some(due));
        assert_eq!(a.poll(due), Ok(Some(AgentAction::Renew)));
        // A controller asking for beats more often than the keep-alive gets them.
        let mut fast = open(2000);
        assert_eq!(fast.poll_timeout(), Some(t0));
        assert_eq!(
            fast.poll(t0),
            Ok(Some(AgentAction::Send(Up::Heartbeat { seq: 1 })))
        );
        assert_eq!(fast.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    }

    fn status() -> AgentStatus {
        AgentStatus {
            running: 2,
            capacity: 4,
            draining: false,
        }
    }

    #[test]
    fn the_drain_notice_goes_once_per_session() {
        let now = Instant::now();
        let mut a = open_agent(now, 5000);
        assert!(!a.drain_sent());
        assert_eq!(
            a.drain(status()),
            Some(Up::Status(AgentStatus {
                running: 2,
                capacity: 4,
                draining: true
            }))
        );
        assert!(a.drain_sent());
        assert_eq!(a.drain(status()), None);
    }

    #[test]
    fn cancels_are_passed_on() {
        let now = Instant::now();
        let mut a = open_agent(now, 5000);
        let job = Uuid::new_v4();
        assert_eq!(
            a.receive(
                Down::Cancel {
                    job,
                    reason: "by alice".into()
                },
                now
            ),
            Ok(AgentEvent::Cancel {
                job,
                reason: "by alice".into()
            })
        );
    }

    #[test]
    fn a_renewal_is_asked_once_and_answered_before_the_next() {
        let t0 = Instant::now();
        let mut a = open_agent(t0, 60_000);
        a.poll(t0).unwrap(); // the first heartbeat
        assert_eq!(a.poll(t0), Ok(None), "nothing scheduled yet");
        let due = t0 + Duration::from_secs(30);
        a.schedule_renewal(due);
        assert_eq!(a.poll_timeout(), Some(due));
        assert_eq!(a.poll(due), Ok(Some(AgentAction::Renew)));
        assert_eq!(a.poll(due), Ok(None), "asked once");
        assert_eq!(
            a.renew(Some(vec![9]), due),
            Some(Up::Renew { csr_der: vec![9] })
        );
        a.schedule_renewal(due); // a request is out: not asked again meanwhile
        assert_eq!(a.poll(due + Duration::from_secs(5)), Ok(None));

        let t1 = due + Duration::from_secs(1);
        assert_eq!(
            a.receive(
                Down::Renewed {
                    cert_chain_der: vec![vec![1]]
                },
                t1
            ),
            Ok(AgentEvent::Renewed {
                cert_chain_der: vec![vec![1]]
            })
        );
        // A certificate that wants renewing straight away is renewed no sooner than the gap.
        a.schedule_renewal(t1);
        assert_eq!(a.poll(t1), Ok(None));
        assert_eq!(a.poll(t1 + RENEW_MIN_GAP), Ok(Some(AgentAction::Renew)));
    }

    #[test]
    fn a_refused_or_impossible_renewal_is_asked_again_later() {
        let t0 = Instant::now();
        let mut a = open_agent(t0, 60_000);
        a.poll(t0).unwrap();
        a.schedule_renewal(t0);
        assert_eq!(a.poll(t0), Ok(Some(AgentAction::Renew)));
        assert_eq!(a.renew(None, t0), None, "no request could be made");
        assert_eq!(a.poll_timeout(), Some(t0 + RENEW_RETRY));
        let t1 = t0 + RENEW_RETRY;
        assert!(due(&mut a, t1).contains(&AgentAction::Renew));
        assert!(a.renew(Some(vec![1]), t1).is_some());
        assert_eq!(
            a.receive(
                Down::RenewRefused {
                    reason: "store away".into()
                },
                t1
            ),
            Ok(AgentEvent::RenewRefused {
                reason: "store away".into()
            })
        );
        assert_eq!(due(&mut a, t1 + Duration::from_secs(59)), []);
        assert!(
            due(&mut a, t1 + RENEW_RETRY).contains(&AgentAction::Renew),
            "asked again a minute later"
        );
    }

    /// Everything due at `now` (heartbeats included).
    fn due(a: &mut AgentSide, now: Instant) -> Vec<AgentAction> {
        std::iter::from_fn(|| a.poll(now).unwrap()).collect()
    }

    #[test]
    fn unasked_renewal_answers_and_a_second_welcome_are_ignored() {
        let now = Instant::now();
        let mut a = open_agent(now, 5000);
        assert_eq!(
            a.receive(
                Down::Renewed {
                    cert_chain_der: vec![vec![1]]
                },
                now
            ),
            Ok(AgentEvent::Ignored("Renewed"))
        );
        assert_eq!(
            a.receive(Down::RenewRefused { reason: "x".into() }, now),
            Ok(AgentEvent::Ignored("RenewRefused"))
        );
        assert_eq!(
            a.receive(welcome(5000), now),
            Ok(AgentEvent::Ignored("Welcome"))
        );
    }
}
