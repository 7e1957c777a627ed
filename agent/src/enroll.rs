//! `outpost-agent enroll`: make a key pair here, send a CSR with the one-time token over a
//! server-authenticated connection that pins the CA from the token, and store what comes back.

use std::time::Duration;

use outpost_protocol::codec::{self, FrameError};
use outpost_protocol::message::{EnrollRequest, EnrollResponse};
use outpost_protocol::pki::{self, AgentKey};
use outpost_protocol::tls::{self, Timers};
use outpost_protocol::token::EnrollToken;
use thiserror::Error;

use crate::session::ResolveError;
use crate::state::{Identity, StateDir, StateError};

#[derive(Debug, Error)]
pub enum EnrollError {
    #[error("this agent is already enrolled in {0}; pass --force to enrol it again (the old identity is replaced)")]
    AlreadyEnrolled(String),
    #[error("{0}")]
    Token(#[from] outpost_protocol::token::TokenError),
    #[error("cannot reach the controller at {addr}: {reason}")]
    Connect { addr: String, reason: Unreachable },
    #[error("the controller refused the enrolment: {0}")]
    Refused(String),
    #[error("the controller's answer does not fit this agent: {0}")]
    BadAnswer(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

/// Why the enrolment endpoint could not be asked.
#[derive(Debug, Error)]
pub enum Unreachable {
    #[error(transparent)]
    Address(#[from] ResolveError),
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Connect(#[from] quinn::ConnectError),
    #[error("timed out")]
    TimedOut,
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the controller closed the stream without an answer")]
    NoAnswer,
}

pub struct EnrollRequestArgs {
    /// Enrolment endpoint, HOST:PORT.
    pub controller: String,
    pub token: String,
    pub labels: Vec<(String, String)>,
    /// Agent endpoints to store; defaults to the enrolment host on the default agent port.
    pub connect: Vec<String>,
    pub hostname: String,
    pub force: bool,
}

pub async fn enroll(state: &StateDir, args: &EnrollRequestArgs) -> Result<Identity, EnrollError> {
    // The token is checked before anything else happens, and before any byte is sent.
    let token = EnrollToken::parse(&args.token)?;
    if state.is_enrolled() && !args.force {
        return Err(EnrollError::AlreadyEnrolled(
            state.root.display().to_string(),
        ));
    }
    state.create()?;
    let key = AgentKey::generate()?;
    let csr = key.csr(&args.hostname)?;
    let request = EnrollRequest {
        protocol_version: outpost_protocol::PROTOCOL_VERSION,
        secret: token.secret.clone(),
        csr_der: csr,
        hostname: args.hostname.clone(),
        labels: args.labels.clone(),
    };
    let (host, response) = ask(&args.controller, &token, &request)
        .await
        .map_err(|reason| EnrollError::Connect {
            addr: args.controller.clone(),
            reason,
        })?;
    let (agent, name, chain, labels) = match response {
        EnrollResponse::Enrolled {
            agent,
            name,
            cert_chain_der,
            labels,
        } => (agent, name, cert_chain_der, labels),
        EnrollResponse::Refused { reason } => return Err(EnrollError::Refused(reason)),
    };
    // Check what came back: the certificate is ours (our uuid) and its CA is the pinned one.
    let leaf = chain
        .first()
        .ok_or_else(|| EnrollError::BadAnswer("no certificate".into()))?;
    let ca = chain
        .get(1)
        .ok_or_else(|| EnrollError::BadAnswer("no CA certificate".into()))?;
    if pki::fingerprint(ca) != token.ca_fingerprint {
        return Err(EnrollError::BadAnswer(
            "the CA certificate is not the one the token names".into(),
        ));
    }
    if pki::agent_uuid(leaf)? != agent {
        return Err(EnrollError::BadAnswer(
            "the certificate names another agent".into(),
        ));
    }
    pki::write_private(&state.key_file(), &key.pem())?;
    state.save_chain(&chain)?;
    pki::write_public(&state.ca_file(), &pki::to_pem("CERTIFICATE", ca))?;
    let controllers = if args.connect.is_empty() {
        vec![format!(
            "{}:{}",
            if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            },
            outpost_protocol::DEFAULT_AGENT_PORT
        )]
    } else {
        args.connect.clone()
    };
    let identity = Identity {
        uuid: agent,
        name,
        labels,
        controllers,
        ca_fingerprint: token.ca_fingerprint,
    };
    state.save_identity(&identity)?;
    Ok(identity)
}

/// Sends the request over a connection that pins the token's CA; the controller's host name
/// (for the agent endpoints to store) and its answer.
async fn ask(
    controller: &str,
    token: &EnrollToken,
    request: &EnrollRequest,
) -> Result<(String, EnrollResponse), Unreachable> {
    let (sock, host) = crate::session::resolve(controller).await?;
    let bind: std::net::SocketAddr = if sock.is_ipv6() {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(Unreachable::Socket)?;
    let cfg = tls::enroll_client_config(&token.ca_fingerprint, Timers::default())?;
    let conn = tokio::time::timeout(
        Duration::from_secs(15),
        endpoint.connect_with(cfg, sock, &host)?,
    )
    .await
    .map_err(|_| Unreachable::TimedOut)??;
    let (mut send, mut recv) = conn.open_bi().await?;
    codec::write_frame(&mut send, request, codec::MAX_FRAME).await?;
    let _ = send.finish();
    let response: EnrollResponse = codec::read_frame(&mut recv, codec::MAX_FRAME)
        .await?
        .ok_or(Unreachable::NoAnswer)?;
    conn.close(quinn::VarInt::from_u32(0), b"enrolled");
    endpoint.wait_idle().await;
    Ok((host, response))
}
