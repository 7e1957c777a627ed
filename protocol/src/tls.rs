//! rustls and quinn configuration for both ends. One crypto provider (ring) is used explicitly
//! everywhere, so no process-wide default is needed. TLS 1.3 only, no 0-RTT (it is replayable
//! and precedes client authentication).
//!
//! - Agent endpoint (ALPN `outpost/1`): client certificates are required and must chain to the
//!   Outpost CA; anything else fails the handshake.
//! - Enrolment endpoint (ALPN `outpost-enroll/1`): server authentication only; the agent pins
//!   the CA by the fingerprint in its token.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;
use uuid::Uuid;

use crate::pki;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC needs TLS 1.3: {0}")]
    Quic(String),
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate: {0}")]
    Pki(#[from] pki::PkiError),
}

/// Timers of a QUIC connection. A dead peer is noticed after `idle_timeout`; the agent sends a
/// keep-alive every `keep_alive` so an idle but healthy session never times out, at the cost of
/// one small packet each way. It is also the agent's heartbeat, unless the controller asks for
/// beats more often ([`crate::control::AgentSide::set_keep_alive`]).
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            idle_timeout: Duration::from_secs(15),
            keep_alive: Duration::from_secs(5),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the protocol needs of a QUIC connection, and no more: the library's defaults let a
/// peer open uni streams nobody reads and buffer more than any message needs.
#[derive(Debug, Clone, Copy)]
struct Limits {
    bidi_streams: u32,
    stream_window: u32,
    connection_window: u32,
}

/// Agent sessions, the agent's end: the controller opens one stream per job it assigns, and
/// agents run at most MAX_AGENT_CAPACITY jobs. A stream's window holds two of the largest
/// frames.
const SESSION: Limits = Limits {
    bidi_streams: 128,
    stream_window: 2 * crate::codec::MAX_FRAME as u32,
    connection_window: 64 * 1024 * 1024,
};

/// Agent sessions, the controller's end. quinn keeps an entry in two hash maps for every
/// stream it allows the peer to open, whether opened or not: with 128 allowed from the start
/// that was 10 KiB of each idle session's 56 KiB (1,024 allowed had cost 140 KiB in all;
/// BENCHMARKS.md, "Idle agents"). So a session starts by allowing only what comes before the
/// Hello (the session stream), and the controller then allows what the agent can use,
/// [`session_streams`] for its capacity and held jobs.
const SESSION_CONTROLLER: Limits = Limits {
    bidi_streams: SESSION_STREAMS_BEFORE_HELLO,
    ..SESSION
};

/// Streams an agent may open before its Hello: the session stream, and a spare.
pub const SESSION_STREAMS_BEFORE_HELLO: u32 = 2;

/// Fetch streams an agent may have open at once beside its session and resume streams. A fetch
/// beyond them waits for one to end (they are short); none ever waits for a job's end.
pub const SESSION_FETCH_STREAMS: u32 = 4;

/// The streams a controller allows an agent to open at once, once its Hello said its capacity
/// and the jobs it holds: its session stream, a resume stream per job it may hold, and
/// [`SESSION_FETCH_STREAMS`]. Never more than the agent end's own bound.
pub fn session_streams(capacity: u32, held: usize) -> u32 {
    let jobs = capacity.max(u32::try_from(held).unwrap_or(u32::MAX));
    jobs.saturating_add(1 + SESSION_FETCH_STREAMS)
        .clamp(SESSION_STREAMS_BEFORE_HELLO, SESSION.bidi_streams)
}

/// Enrolment: one request stream carrying a CSR, one answer.
const ENROL: Limits = Limits {
    bidi_streams: 1,
    stream_window: 128 * 1024,
    connection_window: 256 * 1024,
};

fn transport(timers: Timers, keep_alive: bool, limits: Limits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(timers.idle_timeout).ok());
    if keep_alive {
        t.keep_alive_interval(Some(timers.keep_alive));
        // The controller is asked to acknowledge every packet at once (the ACK frequency
        // extension, which quinn speaks on both ends). Otherwise a lone keep-alive PING is
        // acknowledged only when max_ack_delay (25 ms) runs out, which costs the controller a
        // timer and a second wake-up of the connection per idle agent per keep-alive: 42 µs
        // an idle tick instead of 33 µs at 10,000 agents (BENCHMARKS.md, "50,000 idle agents,
        // again"). Under load the ACK is still one per wake of the connection's driver, for
        // every packet that wake took in, not one per packet.
        let mut acks = quinn::AckFrequencyConfig::default();
        acks.ack_eliciting_threshold(0u32.into());
        t.ack_frequency_config(Some(acks));
    }
    t.max_concurrent_bidi_streams(limits.bidi_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window(limits.stream_window.into());
    t.receive_window(limits.connection_window.into());
    t
}

fn roots(ca: &CertificateDer<'static>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(roots)
}

/// The controller's agent endpoint: mutual TLS, client certificates from the Outpost CA only.
pub fn agent_server_config(
    ca: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    timers: Timers,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider.clone())
            .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![crate::ALPN_AGENT.to_vec()];
    tls.max_early_data_size = 0;
    server_config(tls, timers, SESSION_CONTROLLER)
}

/// The controller's enrolment endpoint: server authentication only.
pub fn enroll_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    timers: Timers,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![crate::ALPN_ENROLL.to_vec()];
    tls.max_early_data_size = 0;
    server_config(tls, timers, ENROL)
}

fn server_config(
    tls: rustls::ServerConfig,
    timers: Timers,
    limits: Limits,
) -> Result<quinn::ServerConfig, TlsError> {
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(Arc::new(transport(timers, false, limits)));
    Ok(cfg)
}

/// An agent's session: presents its certificate, trusts only the Outpost CA.
pub fn agent_client_config(
    ca: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    timers: Timers,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![crate::ALPN_AGENT.to_vec()];
    client_config(tls, timers, SESSION)
}

/// Enrolment: no client certificate yet; the server must present a chain whose CA has the
/// token's fingerprint.
pub fn enroll_client_config(
    ca_fingerprint: &str,
    timers: Timers,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(PinnedCaVerifier::new(ca_fingerprint))
        .with_no_client_auth();
    tls.alpn_protocols = vec![crate::ALPN_ENROLL.to_vec()];
    client_config(tls, timers, ENROL)
}

fn client_config(
    mut tls: rustls::ClientConfig,
    timers: Timers,
    limits: Limits,
) -> Result<quinn::ClientConfig, TlsError> {
    tls.enable_early_data = false;
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(Arc::new(transport(timers, true, limits)));
    Ok(cfg)
}

/// Verifies the server against the CA found in its own chain, after checking that CA's
/// fingerprint against the pinned one (as `kubeadm join` pins a cluster). Apart from where the
/// root comes from, this is the ordinary WebPKI verification (names, validity, signatures).
/// The enrolling agent uses it, and so does the CLI's first login.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    fingerprint: String,
    algorithms: WebPkiSupportedAlgorithms,
    provider: Arc<CryptoProvider>,
    /// The CA that matched, once a handshake succeeded.
    found: std::sync::Mutex<Option<CertificateDer<'static>>>,
}

impl PinnedCaVerifier {
    /// A verifier for the CA with this SHA-256 fingerprint (hex; colons and case ignored).
    pub fn new(ca_fingerprint: &str) -> Arc<PinnedCaVerifier> {
        let provider = provider();
        Arc::new(PinnedCaVerifier {
            fingerprint: ca_fingerprint.replace(':', "").to_ascii_lowercase(),
            algorithms: provider.signature_verification_algorithms,
            provider,
            found: std::sync::Mutex::new(None),
        })
    }

    /// The CA certificate that matched the fingerprint in the last successful handshake.
    pub fn found_ca(&self) -> Option<CertificateDer<'static>> {
        self.found.lock().ok().and_then(|f| f.clone())
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| pki::fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the controller's CA does not match the fingerprint in the enrolment token"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verified =
            inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        if let Ok(mut found) = self.found.lock() {
            *found = Some(ca.clone().into_owned());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The agent uuid named by the certificate a connection's peer presented. Agents are known by
/// their certificate, never by their address (QUIC migration can change it).
pub fn peer_agent_uuid(conn: &quinn::Connection) -> Result<Uuid, TlsError> {
    let identity = conn.peer_identity().ok_or(TlsError::NoPeerCertificate)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCertificate)?;
    let leaf = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    Ok(pki::agent_uuid(leaf)?)
}

/// The leaf certificate a connection's peer presented (for fingerprints and expiry).
pub fn peer_leaf(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?
        .into_iter()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_allows_its_agent_a_stream_per_job_it_may_hold_and_a_few_fetches() {
        // The session stream, four jobs, four fetches.
        assert_eq!(session_streams(4, 0), 9);
        // Held jobs beyond the capacity (it was lowered) still get their resume streams.
        assert_eq!(session_streams(4, 10), 15);
        assert_eq!(session_streams(1, 0), 6);
        // Never beyond what the agent's end allows the controller.
        assert_eq!(session_streams(crate::MAX_AGENT_CAPACITY, 0), 105);
        assert_eq!(session_streams(u32::MAX, usize::MAX), SESSION.bidi_streams);
        assert!(session_streams(0, 0) >= SESSION_STREAMS_BEFORE_HELLO);
    }
}
