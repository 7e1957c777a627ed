//! The senders: one delivery to one channel. A webhook gets the JSON body, signed; a chat
//! webhook `{"text": …}` (escaped); email a plain-text message over SMTP with STARTTLS
//! required (no login before TLS). Errors never carry a URL or a secret: a chat webhook's
//! URL is its credential.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use thiserror::Error;

use super::payload;
use super::secret::ChannelSecret;
use super::signing::signature;
use super::ChannelKind;
use outpost_api::EmailSettings;

/// How long one attempt may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// The most bytes of a receiver's answer kept in the log.
const ANSWER_BYTES: usize = 200;

#[derive(Debug, Error)]
pub enum SendError {
    /// The channel cannot send as configured (retrying will not help until it is changed).
    #[error("channel misconfigured: {0}")]
    Config(String),
    #[error("{0}")]
    Transport(String),
    #[error("the receiver answered {status}: {answer}")]
    Rejected { status: u16, answer: String },
}

/// What one attempt needs.
pub struct Outgoing<'a> {
    pub kind: ChannelKind,
    pub delivery_id: &'a str,
    pub event: &'a str,
    pub body: &'a serde_json::Value,
    pub secret: &'a ChannelSecret,
    pub email: Option<&'a EmailSettings>,
}

/// An HTTP client for webhooks: rustls with the public roots and the extra CA file, no
/// redirects (a signed body goes where it was configured to go, nowhere else).
pub fn http_client(extra_ca: Option<&std::path::Path>) -> Result<reqwest::Client, SendError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| SendError::Config(format!("cannot read {}: {e}", path.display())))?;
        let certs = outpost_protocol::pki::certs_from_pem(&pem)
            .map_err(|e| SendError::Config(format!("{}: {e}", path.display())))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| SendError::Config(format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SendError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(SEND_TIMEOUT)
        .build()
        .map_err(|e| SendError::Config(e.without_url().to_string()))
}

/// Sends one attempt.
pub async fn send(http: &reqwest::Client, o: &Outgoing<'_>) -> Result<(), SendError> {
    match o.kind {
        ChannelKind::Webhook => {
            let body = serde_json::to_vec(o.body).unwrap_or_default();
            let key = o.secret.secret.as_deref().unwrap_or_default();
            let sig = signature(key.as_bytes(), &body);
            post(http, o, body, Some(sig)).await
        }
        ChannelKind::Chat => {
            let body = serde_json::to_vec(&serde_json::json!({"text": payload::chat_text(o.body)}))
                .unwrap_or_default();
            post(http, o, body, None).await
        }
        ChannelKind::Email => email(o).await,
    }
}

async fn post(
    http: &reqwest::Client,
    o: &Outgoing<'_>,
    body: Vec<u8>,
    signature: Option<String>,
) -> Result<(), SendError> {
    let url = o
        .secret
        .url
        .as_deref()
        .ok_or_else(|| SendError::Config("no URL stored".into()))?;
    let mut req = http
        .post(url)
        .header("Content-Type", "application/json")
        .header("User-Agent", "outpost-notifications")
        .header("X-Outpost-Delivery", o.delivery_id)
        .header("X-Outpost-Event", o.event)
        .body(body);
    if let Some(sig) = signature {
        req = req.header("X-Outpost-Signature", sig);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| SendError::Transport(chain(&e.without_url())))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(SendError::Rejected {
        status: status.as_u16(),
        answer: payload::plain_line(&crate::text::fit_bytes(&text, ANSWER_BYTES)),
    })
}

/// An error and its causes in one line ("error sending request: … Connection refused"):
/// reqwest's own words alone do not say what went wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !s.contains(&more) {
            s.push_str(": ");
            s.push_str(&more);
        }
        cause = c.source();
    }
    s
}

async fn email(o: &Outgoing<'_>) -> Result<(), SendError> {
    let cfg = o
        .email
        .ok_or_else(|| SendError::Config("no SMTP settings stored".into()))?;
    let bad = |what: &str, e: &dyn std::fmt::Display| SendError::Config(format!("{what}: {e}"));
    let mut tls = TlsParameters::builder(cfg.host.clone());
    if let Some(path) = &cfg.ca_file {
        let pem = tokio::fs::read(path)
            .await
            .map_err(|e| bad(&format!("cannot read the CA file {path}"), &e))?;
        tls = tls.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| bad(path, &e))?);
    }
    let tls = tls.build_rustls().map_err(|e| bad("TLS", &e))?;
    // STARTTLS required: the transport refuses to go on (and to log in) without TLS.
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str())
        .port(cfg.port)
        .tls(Tls::Required(tls))
        .timeout(Some(SEND_TIMEOUT));
    if let Some(user) = &cfg.username {
        let password = o.secret.secret.clone().unwrap_or_default();
        b = b.credentials(Credentials::new(user.clone(), password));
    }
    let mailer = b.build();
    let from: Mailbox = cfg.from.parse().map_err(|e| bad("from", &e))?;
    let mut m = Message::builder()
        .from(from)
        .subject(payload::subject(o.body))
        .message_id(Some(format!("<{}@outpost>", o.delivery_id)))
        .header(ContentType::TEXT_PLAIN);
    for to in &cfg.to {
        m = m.to(to.parse().map_err(|e| bad("to", &e))?);
    }
    let msg = m
        .body(payload::email_text(o.body))
        .map_err(|e| bad("message", &e))?;
    mailer
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| SendError::Transport(format!("SMTP: {}", chain(&e))))
}
