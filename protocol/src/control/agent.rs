//! The agent's side of the control stream: the Welcome it waits for, when its heartbeats are
//! due (or its keep-alive beats for it), the drain notice and the renewal exchange.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::*;
use crate::message::{AgentStatus, Down, Hello, Up, Welcome};

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
    use crate::control::samples::hello;

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
