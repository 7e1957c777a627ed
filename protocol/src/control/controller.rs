//! The controller's side of the control stream: the deadlines for the stream and the Hello,
//! the version check, the Welcome, the message budget and the renewal answers.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::*;
use crate::message::{Down, Hello, Up, Welcome};

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
    /// A renewal request is being looked at: the next waits for its answer.
    renewing: bool,
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
    /// soon or before the last one was answered.
    Reply(Down),
    /// The agent's capacity (clamped) or drain state changed.
    Status { capacity: u32, draining: bool },
    /// Sign this request (or refuse to), then give the answer to [`ControllerSide::renewal`].
    /// Reading goes on meanwhile; another request before that answer is refused.
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
            renewing: false,
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
                let soon =
                    last.is_some_and(|at| now.saturating_duration_since(at) < RENEW_MIN_SPACING);
                if soon || self.renewing {
                    return Ok(Inbound::Reply(Down::RenewRefused {
                        reason: RENEW_TOO_SOON.into(),
                    }));
                }
                self.renewing = true;
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
        self.renewing = false;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::samples::hello;
    use crate::message::AgentStatus;

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
    fn a_renewal_asked_again_too_soon_or_before_its_answer_is_refused_unread() {
        let t0 = Instant::now();
        let mut c = open_controller(t0);
        let renew = || Up::Renew { csr_der: vec![7] };
        let answer = || RenewAnswer::Refused {
            reason: "store away".into(),
        };
        let refused = |got: Result<Inbound, ControlError>| match got {
            Ok(Inbound::Reply(Down::RenewRefused { reason })) => reason.contains("too soon"),
            _ => false,
        };
        assert_eq!(
            c.receive(renew(), t0),
            Ok(Inbound::Renew { csr_der: vec![7] })
        );
        // Not answered yet: another request waits for the answer, however late it comes.
        let late = t0 + RENEW_MIN_SPACING * 4;
        assert!(refused(c.receive(renew(), late)), "one renewal at a time");
        c.renewal(answer());
        // Answered, but asked again within the spacing (which runs from the refused request).
        let soon = late + RENEW_MIN_SPACING - Duration::from_millis(1);
        assert!(refused(c.receive(renew(), soon)), "too soon");
        assert!(matches!(
            c.receive(renew(), soon + RENEW_MIN_SPACING),
            Ok(Inbound::Renew { .. })
        ));
        c.renewal(answer());
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
}
