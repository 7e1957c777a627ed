//! Real QUIC on loopback: who gets past the handshake of each endpoint, and what the framing
//! does with a frame over the limit.

use std::net::SocketAddr;
use std::time::Duration;

use outpost_protocol::codec::{self, FrameError, FramedStream};
use outpost_protocol::message::{Down, Up};
use outpost_protocol::pki::{self, AgentKey, Ca};
use outpost_protocol::tls::{self, Timers};
use outpost_protocol::token::EnrollToken;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(86400);

struct Controller {
    ca: Ca,
    chain: Vec<CertificateDer<'static>>,
    key_pem: String,
}

impl Controller {
    fn new() -> Controller {
        let ca = Ca::generate("Outpost test CA", DAY).unwrap();
        let server = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()], DAY)
            .unwrap();
        Controller {
            chain: vec![server.cert_der, ca.cert_der().clone()],
            ca,
            key_pem: server.key_pem,
        }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        pki::private_key_from_pem(&self.key_pem).unwrap()
    }

    fn agent_endpoint(&self) -> (quinn::Endpoint, SocketAddr) {
        let cfg = tls::agent_server_config(
            self.ca.cert_der(),
            self.chain.clone(),
            self.key(),
            Timers::default(),
        )
        .unwrap();
        let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = ep.local_addr().unwrap();
        (ep, addr)
    }

    fn enroll_endpoint(&self) -> (quinn::Endpoint, SocketAddr) {
        let cfg =
            tls::enroll_server_config(self.chain.clone(), self.key(), Timers::default()).unwrap();
        let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = ep.local_addr().unwrap();
        (ep, addr)
    }

    /// A client certificate for a fresh agent, signed by `ca`.
    fn agent_identity(
        ca: &Ca,
        agent: Uuid,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = AgentKey::generate().unwrap();
        let cert = ca
            .sign_agent_csr(&key.csr("bastion").unwrap(), agent, DAY)
            .unwrap();
        (vec![cert], key.private_key_der())
    }
}

fn client(cfg: quinn::ClientConfig) -> quinn::Endpoint {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    ep
}

/// Why a test session did not happen, by kind: the refusal tests tell a handshake refused from
/// a test that merely timed out.
#[derive(Debug, Error)]
enum Failure {
    #[error("no connection within 10 s")]
    NoConnection,
    #[error("the endpoint was closed")]
    EndpointClosed,
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("peer identity: {0}")]
    Identity(#[from] tls::TlsError),
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    #[error("stream: {0}")]
    Stream(#[from] quinn::ClosedStream),
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// Accepts one connection and reports the agent uuid its certificate names (or the error).
async fn accept_one(ep: &quinn::Endpoint) -> Result<Uuid, Failure> {
    let incoming = tokio::time::timeout(Duration::from_secs(10), ep.accept())
        .await
        .map_err(|_| Failure::NoConnection)?
        .ok_or(Failure::EndpointClosed)?;
    let conn = incoming.await?;
    let uuid = tls::peer_agent_uuid(&conn)?;
    // Answer one heartbeat so the client can see the session works.
    let (send, recv) = conn.accept_bi().await?;
    let mut s = FramedStream::new(recv, send);
    if let Some(Up::Heartbeat { seq }) = s.recv::<Up>().await? {
        s.send(&Down::HeartbeatAck { seq }).await?;
        s.send.finish()?;
        let _ = s.send.stopped().await;
    }
    Ok(uuid)
}

/// Connects, sends a heartbeat and waits for its ack.
async fn session(cfg: quinn::ClientConfig, addr: SocketAddr) -> Result<(), Failure> {
    let ep = client(cfg);
    let conn = ep.connect(addr, "localhost")?.await?;
    let (send, recv) = conn.open_bi().await?;
    let mut s = FramedStream::new(recv, send);
    s.send(&Up::Heartbeat { seq: 42 }).await?;
    match tokio::time::timeout(Duration::from_secs(10), s.recv::<Down>()).await {
        Ok(Ok(Some(Down::HeartbeatAck { seq: 42 }))) => Ok(()),
        other => Err(Failure::Answer(format!("{other:?}"))),
    }
}

#[tokio::test]
async fn a_good_agent_connects_and_is_known_by_its_certificate() {
    let ctl = Controller::new();
    let (ep, addr) = ctl.agent_endpoint();
    let agent = Uuid::new_v4();
    let (chain, key) = Controller::agent_identity(&ctl.ca, agent);
    let cfg = tls::agent_client_config(ctl.ca.cert_der(), chain, key, Timers::default()).unwrap();
    let (server, client) = tokio::join!(accept_one(&ep), session(cfg, addr));
    client.unwrap();
    assert_eq!(server.unwrap(), agent);
}

/// The server must refuse `cfg` at the handshake: no session, no uuid. Returns the server's
/// error text.
async fn assert_refused(ctl: &Controller, cfg: quinn::ClientConfig) -> String {
    let (ep, addr) = ctl.agent_endpoint();
    let (server, client) = tokio::join!(accept_one(&ep), session(cfg, addr));
    assert!(client.is_err(), "client must not get a session");
    match server {
        Err(e @ Failure::Connection(_)) => e.to_string(),
        other => panic!("the server must refuse at the handshake, got {other:?}"),
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ctl = Controller::new();
    let other = Ca::generate("Evil CA", DAY).unwrap();
    let (chain, key) = Controller::agent_identity(&other, Uuid::new_v4());
    let err = assert_refused(
        &ctl,
        tls::agent_client_config(ctl.ca.cert_der(), chain, key, Timers::default()).unwrap(),
    )
    .await;
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("handshake"),
        "{err}"
    );
}

#[tokio::test]
async fn a_self_signed_certificate_is_refused() {
    let ctl = Controller::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, Uuid::new_v4().to_string());
    let cert = params.self_signed(&key).unwrap();
    let pk = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    assert_refused(
        &ctl,
        tls::agent_client_config(
            ctl.ca.cert_der(),
            vec![cert.der().clone()],
            pk,
            Timers::default(),
        )
        .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let ctl = Controller::new();
    let key = AgentKey::generate().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let cert = ctl
        .ca
        .sign_agent_csr_between(
            &key.csr("b").unwrap(),
            Uuid::new_v4(),
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        )
        .unwrap();
    let err = assert_refused(
        &ctl,
        tls::agent_client_config(
            ctl.ca.cert_der(),
            vec![cert],
            key.private_key_der(),
            Timers::default(),
        )
        .unwrap(),
    )
    .await;
    assert!(
        err.to_lowercase().contains("expired") || err.contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let ctl = Controller::new();
    // The enrolment client presents no certificate; aim it at the agent endpoint.
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates({
        let mut r = rustls::RootCertStore::empty();
        r.add(ctl.ca.cert_der().clone()).unwrap();
        r
    })
    .with_no_client_auth();
    cfg.alpn_protocols = vec![outpost_protocol::ALPN_AGENT.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap();
    assert_refused(&ctl, quinn::ClientConfig::new(std::sync::Arc::new(quic))).await;
}

#[tokio::test]
async fn the_wrong_alpn_is_refused() {
    let ctl = Controller::new();
    // A perfectly good enrolment client, at the agent endpoint: its ALPN is outpost-enroll/1.
    let cfg = tls::enroll_client_config(&ctl.ca.fingerprint(), Timers::default()).unwrap();
    let err = assert_refused(&ctl, cfg).await;
    assert!(
        err.to_lowercase().contains("protocol") || err.contains("alpn") || err.contains("120"),
        "{err}"
    );
}

#[tokio::test]
async fn enrolment_pins_the_ca_from_the_token() {
    let ctl = Controller::new();
    let (ep, addr) = ctl.enroll_endpoint();
    let token = EnrollToken::parse(&EnrollToken::generate(&ctl.ca.fingerprint()).encode()).unwrap();

    // Right fingerprint: the handshake completes and frames flow.
    let server = async {
        let conn = ep.accept().await.unwrap().await.unwrap();
        let (send, recv) = conn.accept_bi().await.unwrap();
        let mut s = FramedStream::new(recv, send);
        let got: Option<Up> = s.recv().await.unwrap();
        s.send(&Down::HeartbeatAck { seq: 1 }).await.unwrap();
        s.send.finish().unwrap();
        let _ = s.send.stopped().await;
        got
    };
    let enrolling = session(
        tls::enroll_client_config(&token.ca_fingerprint, Timers::default()).unwrap(),
        addr,
    );
    let (got, res) = tokio::join!(server, enrolling);
    assert!(matches!(got, Some(Up::Heartbeat { seq: 42 })));
    res.unwrap_err(); // the test server answers seq 1, not 42: only the handshake mattered

    // A controller whose CA is not the token's: the agent refuses before it sends a byte.
    let impostor = Controller::new();
    let (ep2, addr2) = impostor.enroll_endpoint();
    let server = async {
        let incoming = ep2.accept().await.unwrap();
        let conn = incoming.await?;
        conn.accept_bi().await.map(|_| ()).map_err(Failure::from)
    };
    let ep = client(tls::enroll_client_config(&token.ca_fingerprint, Timers::default()).unwrap());
    let connect = async { ep.connect(addr2, "localhost").unwrap().await.map(|_| ()) };
    let (srv, cli): (Result<(), Failure>, _) = tokio::join!(server, connect);
    let cli = cli.unwrap_err().to_string();
    assert!(cli.contains("does not match the fingerprint"), "{cli}");
    assert!(srv.is_err(), "the impostor never gets a stream");
}

#[tokio::test]
async fn an_oversized_frame_ends_the_stream_with_an_error() {
    let ctl = Controller::new();
    let (ep, addr) = ctl.agent_endpoint();
    let (chain, key) = Controller::agent_identity(&ctl.ca, Uuid::new_v4());
    let cfg = tls::agent_client_config(ctl.ca.cert_der(), chain, key, Timers::default()).unwrap();
    let server = async {
        let conn = ep.accept().await.unwrap().await.unwrap();
        let (_send, mut recv) = conn.accept_bi().await.unwrap();
        codec::read_frame::<_, Up>(&mut recv, 1024).await
    };
    let sender = async {
        let ep = client(cfg);
        let conn = ep.connect(addr, "localhost").unwrap().await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        // Announce 3 GiB, send a few bytes: the reader must refuse on the prefix alone.
        send.write_all(&(3u32 << 30).to_be_bytes()).await.unwrap();
        send.write_all(&[0u8; 16]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn
    };
    let (res, _conn) = tokio::join!(server, sender);
    assert!(
        matches!(
            res,
            Err(FrameError::Oversized {
                len: 3221225472,
                max: 1024
            })
        ),
        "{res:?}"
    );
}
