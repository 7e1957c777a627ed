//! The rules of the control (session) stream, without any I/O: Hello first and only once, the
//! version check, the Welcome, heartbeats and when they are due, the drain notice, and the
//! certificate renewal exchange. The controller's [`ControllerSide`] and the agent's
//! [`AgentSide`] are fed decoded messages and the time, and answer with what to send, what
//! happened, or which rule was broken; the async code on both sides only moves bytes between
//! them and the network (as [`crate::jobstream`] does for job streams).

use std::time::{Duration, Instant};

use thiserror::Error;

use crate::message::{Down, Up};
use crate::{close, MAX_AGENT_CAPACITY, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

mod agent;
mod controller;

pub use agent::{AgentAction, AgentEvent, AgentSide};
pub use controller::{ControllerSide, Greeting, Inbound, RenewAnswer, RenewReply};

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
/// the controller reads them, so the burst also covers what arrives at once after a stall:
/// beats held back by a network outage shorter than the idle timeout, or a controller busy
/// elsewhere. 128 is two minutes of beats at the fastest interval. Each message costs
/// the controller a decode and an answer (a renewal, a store lookup and a signature: hence
/// [`RENEW_MIN_SPACING`] too), and a flood that reads its answers is bounded by nothing else.
pub const SESSION_BURST: u32 = 128;
/// The steady pace of the budget: one message per gap, five a second.
pub const SESSION_MESSAGE_GAP: Duration = Duration::from_millis(200);
/// A renewal request this soon after the session's previous one, or before that one is
/// answered, is refused unread (the agent asks again after [`RENEW_RETRY`]); a well-behaved
/// agent asks one at a time and leaves [`RENEW_MIN_GAP`] after each answer.
pub const RENEW_MIN_SPACING: Duration = Duration::from_millis(2500);
// A well-behaved agent's renewals, RENEW_MIN_GAP apart at least, are never too soon.
const _: () = assert!(RENEW_MIN_GAP.as_millis() > RENEW_MIN_SPACING.as_millis());
/// The reason a renewal refused under [`RENEW_MIN_SPACING`] carries.
pub(crate) const RENEW_TOO_SOON: &str =
    "renewal asked again too soon, or before the last one was answered; ask later";

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
pub(crate) const REVOKED: &str = "agent revoked";

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
pub(crate) fn up_kind(msg: &Up) -> &'static str {
    match msg {
        Up::Hello(_) => "Hello",
        Up::Heartbeat { .. } => "Heartbeat",
        Up::Status(_) => "Status",
        Up::Renew { .. } => "Renew",
    }
}

pub(crate) fn down_kind(msg: &Down) -> &'static str {
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

#[cfg(test)]
pub(crate) mod samples {
    //! What both sides' tests start from.

    use crate::message::Hello;

    pub(crate) fn hello(version: u16, capacity: u32) -> Hello {
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
}
