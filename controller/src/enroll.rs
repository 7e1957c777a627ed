//! Enrolment: one-time tokens ([`issue_token`], for the CLI, the API and install bundles), and
//! the endpoint (ALPN `outpost-enroll/1`, server authentication only) where a new agent trades
//! such a token and a CSR for its client certificate.

use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::codec;
use outpost_protocol::message::{EnrollRequest, EnrollResponse};
use outpost_protocol::pki::Ca;
use outpost_protocol::token::EnrollToken;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::model::EnrollmentToken;
use crate::store::agents::NewEnrollmentToken;
use crate::store::audit::Actor;
use crate::store::{Store, StoreError};

/// A token just made: its text (shown once, never stored) and its record.
pub struct IssuedToken {
    pub token: EnrollToken,
    pub record: EnrollmentToken,
}

/// Makes a one-time enrolment token for the agent `name` with `labels`, valid for `ttl`; only
/// the secret's hash is stored, and the audit trail names the token, never its secret.
pub async fn issue_token(
    store: &Store,
    ca_fingerprint: &str,
    name: &str,
    labels: &[(String, String)],
    ttl: chrono::Duration,
    actor: &Actor,
) -> Result<IssuedToken, StoreError> {
    let token = EnrollToken::generate(ca_fingerprint);
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let record = store
        .create_enrollment_token(
            &NewEnrollmentToken {
                secret_hash: EnrollToken::secret_hash(&token.secret),
                name: name.to_owned(),
                labels: serde_json::Value::Object(labels),
                expires_at: chrono::Utc::now() + ttl,
            },
            actor,
        )
        .await?;
    Ok(IssuedToken { token, record })
}

/// An enrolment request is a CSR and a few strings: far below this.
const MAX_REQUEST: usize = 64 * 1024;
/// Enrolments handled at once; anyone may knock on this port, so the excess is refused before
/// its handshake costs anything.
pub const MAX_CONCURRENT_ENROLMENTS: usize = 32;

pub struct EnrollService {
    pub store: Store,
    pub ca: Arc<Ca>,
    pub cert_lifetime: Duration,
    pub slots: Arc<tokio::sync::Semaphore>,
}

impl EnrollService {
    pub fn new(store: Store, ca: Arc<Ca>, cert_lifetime: Duration) -> EnrollService {
        EnrollService {
            store,
            ca,
            cert_lifetime,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_ENROLMENTS)),
        }
    }
}

/// What an agent is told when the store refuses its enrolment.
fn token_refusal(e: StoreError) -> String {
    match e {
        StoreError::NotFound(_) => {
            "unknown enrolment token: make one with `outpost agent token`".to_owned()
        }
        StoreError::Invalid { reason, .. } => reason,
        StoreError::Conflict(what) => format!("{what} already exists"),
        other => {
            tracing::error!(error = %other, "enrolment failed in the store");
            "the controller could not record the agent; try again".to_owned()
        }
    }
}

impl EnrollService {
    pub async fn serve(
        self: Arc<Self>,
        endpoint: quinn::Endpoint,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) {
        loop {
            let incoming = tokio::select! {
                _ = stop.cancelled() => return,
                i = endpoint.accept() => match i { Some(i) => i, None => return },
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                tracing::warn!(remote = %incoming.remote_address(), "too many enrolments at once; refusing one");
                incoming.refuse();
                continue;
            };
            let this = self.clone();
            tasks.spawn(async move {
                let _slot = slot;
                if let Err(e) =
                    tokio::time::timeout(Duration::from_secs(30), this.handle(incoming)).await
                {
                    tracing::debug!(error = %e, "enrolment timed out");
                }
            });
        }
    }

    async fn handle(&self, incoming: quinn::Incoming) {
        let conn = match incoming.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "enrolment handshake failed");
                return;
            }
        };
        let peer = conn.remote_address();
        let Ok((mut send, mut recv)) = conn.accept_bi().await else {
            return;
        };
        let request: EnrollRequest = match codec::read_frame(&mut recv, MAX_REQUEST).await {
            Ok(Some(r)) => r,
            other => {
                tracing::info!(%peer, ?other, "unreadable enrolment request");
                conn.close(
                    quinn::VarInt::from_u32(outpost_protocol::close::PROTOCOL),
                    b"unreadable enrolment request",
                );
                return;
            }
        };
        let response = match self.enroll(&request).await {
            Ok(r) => r,
            Err(reason) => {
                tracing::warn!(%peer, hostname = %crate::text::fit_chars(&request.hostname, 255), %reason, "enrolment refused");
                EnrollResponse::Refused { reason }
            }
        };
        if codec::write_frame(&mut send, &response, codec::MAX_FRAME)
            .await
            .is_ok()
        {
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
        }
        conn.close(
            quinn::VarInt::from_u32(outpost_protocol::close::NORMAL),
            b"done",
        );
    }

    async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, String> {
        if req.protocol_version < outpost_protocol::MIN_PROTOCOL_VERSION
            || req.protocol_version > outpost_protocol::PROTOCOL_VERSION
        {
            return Err(format!(
                "protocol version {} is not supported; this controller speaks {}..={}",
                req.protocol_version,
                outpost_protocol::MIN_PROTOCOL_VERSION,
                outpost_protocol::PROTOCOL_VERSION
            ));
        }
        let hash = EnrollToken::secret_hash(&req.secret);
        // The token first: nobody without one gets a CSR parsed or signed.
        self.store
            .check_enrollment_token(&hash)
            .await
            .map_err(token_refusal)?;
        let agent = Uuid::new_v4();
        // Sign before spending: a bad CSR must not spend the token.
        let cert = self
            .ca
            .sign_agent_csr(&req.csr_der, agent, self.cert_lifetime)
            .map_err(|e| format!("bad certificate request: {e}"))?;
        let labels: serde_json::Map<String, serde_json::Value> = req
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let row = self
            .store
            .enroll_agent(&hash, &agent.to_string(), &labels, &req.hostname)
            .await
            .map_err(token_refusal)?;
        let held = crate::pki::held_certificate(&cert)
            .ok_or_else(|| "the signed certificate cannot be read back".to_owned())?;
        if let Err(e) = self.store.set_agent_certificate(row.id, &held, None).await {
            tracing::warn!(error = %e, "cannot record the agent's certificate");
        }
        tracing::info!(agent = %row.name, uuid = %agent, hostname = %crate::text::fit_chars(&req.hostname, 255), "agent enrolled");
        Ok(EnrollResponse::Enrolled {
            agent,
            name: row.name.clone(),
            cert_chain_der: vec![cert.to_vec(), self.ca.cert_der().to_vec()],
            labels: row.label_pairs(),
        })
    }
}
