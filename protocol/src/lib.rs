//! The one place where the Outpost agent and controller agree: the messages they exchange, the
//! framing that carries them, the small PKI that makes every connection mutual-TLS, the
//! enrolment token, and the QUIC/TLS configuration both ends build from it.
//!
//! - [`message`]: the serde types of the session, job, fetch and enrolment streams.
//! - [`codec`]: postcard in length-prefixed frames with a hard size limit.
//! - [`control`]: the rules of the control (session) stream on both sides, without I/O.
//! - [`jobstream`]: the rules of a job stream on both sides, without I/O.
//! - [`fetch`]: the rules of a fetch stream (a revision's bytes, chunk by chunk), without I/O.
//! - [`results`]: per-task results from the agent's callback plugin; [`result_intake`]: the
//!   controller's rules for taking them from a job stream.
//! - [`pki`]: the CA, the controller's certificate, agents' CSRs and their signing.
//! - [`token`]: the one-line enrolment token that pins the CA.
//! - [`tls`]: rustls and quinn configurations for both ends and both ALPNs.
//! - [`files`]: writing kept files atomically, with their mode, never through a link.
//! - [`tree`]: project trees packed into canonical revisions, and tars unpacked safely.

pub mod codec;
pub mod control;
pub mod fetch;
pub mod files;
pub mod jobstream;
pub mod message;
pub mod pki;
pub mod result_intake;
pub mod results;
pub mod tls;
pub mod token;
pub mod tree;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 7;
/// The oldest protocol version this build still accepts. 7 carries per-task results beside the
/// lines (a resume names the last result acknowledged, an outcome the last result sent). 6 hands a job the secret answers of its
/// template's survey (an agent speaking 5 could not read the assignment). 5 hands a job its credentials' secrets
/// (an agent speaking 4 would run the job without them). 4 hands a job a project revision (a
/// tree, fetched by digest) instead of one playbook's text: an agent speaking 3 cannot run it.
/// (3 split an assignment's variables into curated ones and launch values that must reach
/// ansible as data.)
pub const MIN_PROTOCOL_VERSION: u16 = 7;

/// ALPN of agent sessions: mutual TLS, the agent's certificate names its uuid.
pub const ALPN_AGENT: &[u8] = b"outpost/1";
/// ALPN of enrolment: server authentication only; the agent proves itself with its token.
pub const ALPN_ENROLL: &[u8] = b"outpost-enroll/1";

/// The most jobs an agent may run at once (each needs a stream; see `tls`).
pub const MAX_AGENT_CAPACITY: u32 = 100;

/// The longest line of job output, in bytes of UTF-8. Every line ends up in `job_logs.content`,
/// a TEXT column (the seed schema's type): MariaDB caps TEXT at 65,535 *bytes*, whatever the
/// character set, and in strict mode refuses a longer value outright, so the cap is in bytes,
/// not characters (a utf8mb4 character takes up to four). The agent cuts longer lines to fit
/// (on a character boundary, marker included); a longer line from an agent breaks the job
/// stream's rules.
pub const MAX_LOG_LINE_BYTES: usize = 65_535;

/// Default UDP port of the agent endpoint.
pub const DEFAULT_AGENT_PORT: u16 = 7443;
/// Default UDP port of the enrolment endpoint. Enrolment has its own endpoint because it
/// needs a TLS configuration that does not require a client certificate, and a QUIC endpoint
/// chooses its configuration before the ALPN is known.
pub const DEFAULT_ENROLL_PORT: u16 = 7444;

/// QUIC application close codes the controller uses, so an agent can tell why it was dropped.
pub mod close {
    /// A normal close (shutdown, session replaced).
    pub const NORMAL: u32 = 0;
    /// The agent's protocol version is not supported.
    pub const VERSION: u32 = 1;
    /// The agent is revoked.
    pub const REVOKED: u32 = 2;
    /// The certificate's uuid names no enrolled agent.
    pub const UNKNOWN_AGENT: u32 = 3;
    /// The peer broke the protocol (bad frame, unexpected message).
    pub const PROTOCOL: u32 = 4;
    /// The controller is shutting down; reconnect (to another one) later.
    pub const SHUTDOWN: u32 = 5;
    /// A newer session of the same agent replaced this one, or the agent's row no longer
    /// names this session (another controller took it): reconnect.
    pub const REPLACED: u32 = 6;
}
