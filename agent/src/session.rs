//! The agent's side of the connection: dial the controller (several addresses, tried in turn),
//! say Hello, keep the session alive with heartbeats, take assignments and cancel requests,
//! resume the delivery of every job it still holds, renew its certificate, and reconnect
//! forever with capped, jittered backoff when anything breaks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::codec;
use outpost_protocol::message::{AgentStatus, Down, Hello, JobDown, JobUp, Up};
use outpost_protocol::pki::{self, AgentKey};
use outpost_protocol::{close, tls};
use rand::Rng;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::jobs::{self, JobTable};
use crate::runner::RunnerConfig;
use crate::state::{Identity, StateDir};
use crate::status::{Connection, StatusFile};

/// How long a handshake may take before the next controller address is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of `outpost-agent run`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub controllers: Vec<String>,
    pub capacity: u32,
    pub labels: Vec<(String, String)>,
    pub runner: Arc<RunnerConfig>,
    pub timers: tls::Timers,
    /// Reconnect backoff bounds.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// Ends the agent for good (as opposed to a connection that can be retried).
#[derive(Debug, Error)]
pub enum Fatal {
    #[error("the controller refused this agent: {0}. Enrol it again with a new token")]
    Refused(String),
}

/// Everything the agent's tasks share.
pub struct Agent {
    pub state: StateDir,
    pub identity: Identity,
    pub cfg: AgentConfig,
    pub table: JobTable,
    pub ansible_version: String,
    pub hostname: String,
    /// Fired on SIGTERM: take no more work.
    pub draining: CancellationToken,
    /// Fired when the agent is done: close the session and exit.
    pub shutdown: CancellationToken,
    /// Cancels that arrived before their job's assignment (the two travel on different
    /// streams): such a job is refused instead of started.
    pub early_cancels: EarlyCancels,
}

/// Cancel requests for jobs this agent does not hold (yet), forgotten after an hour.
#[derive(Default)]
pub struct EarlyCancels(
    std::sync::Mutex<std::collections::HashMap<uuid::Uuid, std::time::Instant>>,
);

impl EarlyCancels {
    const KEEP: Duration = Duration::from_secs(3600);

    pub fn remember(&self, job: uuid::Uuid) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        map.retain(|_, at| now.duration_since(*at) < Self::KEEP);
        map.insert(job, now);
    }

    /// Whether `job` was cancelled before it arrived (and forgets it).
    pub fn take(&self, job: &uuid::Uuid) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(job).is_some()
    }
}

enum SessionEnd {
    /// Try again (this or another controller) after a backoff.
    Retry(String),
    Fatal(Fatal),
    Shutdown,
}

/// Keeps a session up until shutdown. Returns an error only when retrying is pointless.
/// A client endpoint on a dual-stack socket, or IPv4 only where the host has no IPv6.
pub(crate) fn client_endpoint() -> std::io::Result<quinn::Endpoint> {
    quinn::Endpoint::client(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)))
        .or_else(|_| quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))))
}

pub async fn run(agent: Arc<Agent>) -> Result<(), Fatal> {
    let endpoint = match client_endpoint() {
        Ok(e) => e,
        Err(e) => return Err(Fatal::Refused(format!("cannot open a UDP socket: {e}"))),
    };
    let mut status = StatusFile::new(agent.state.status_file());
    let mut backoff = agent.cfg.backoff_min;
    let mut turn = 0usize;
    loop {
        if agent.shutdown.is_cancelled() {
            break;
        }
        let addr = agent.cfg.controllers[turn % agent.cfg.controllers.len()].clone();
        turn += 1;
        let started = tokio::time::Instant::now();
        match session(&agent, &endpoint, &addr, &mut status).await {
            SessionEnd::Shutdown => break,
            SessionEnd::Fatal(f) => {
                status.set(Connection::Stopped {
                    reason: f.to_string(),
                });
                endpoint.close(quinn::VarInt::from_u32(close::NORMAL), b"bye");
                return Err(f);
            }
            SessionEnd::Retry(reason) => {
                status.set(Connection::Connecting {
                    reason: format!("{addr}: {reason}"),
                });
                // A session that lasted a while resets the backoff.
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = agent.cfg.backoff_min;
                }
                let jitter = rand::thread_rng().gen_range(0.5..1.5);
                let wait = backoff.mul_f64(jitter);
                tracing::warn!(controller = %addr, %reason, retry_in = ?wait, "not connected");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = agent.shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(agent.cfg.backoff_max);
            }
        }
    }
    status.set(Connection::Stopped {
        reason: "the service was stopped".into(),
    });
    endpoint.close(quinn::VarInt::from_u32(close::NORMAL), b"agent stopping");
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    Ok(())
}

pub(crate) async fn resolve(addr: &str) -> Result<(SocketAddr, String), String> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => {
            return Err(format!(
                "controller address '{addr}' has no port (HOST:PORT)"
            ))
        }
    };
    let sock = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;
    Ok((sock, host))
}

async fn session(
    agent: &Arc<Agent>,
    endpoint: &quinn::Endpoint,
    addr: &str,
    status: &mut StatusFile,
) -> SessionEnd {
    let (sock, host) = match resolve(addr).await {
        Ok(r) => r,
        Err(e) => return SessionEnd::Retry(e),
    };
    let config = match agent.state.credentials().and_then(|(chain, key, ca)| {
        tls::agent_client_config(&ca, chain, key, agent.cfg.timers).map_err(|e| {
            crate::state::StateError::Invalid {
                path: "credentials".into(),
                message: e.to_string(),
            }
        })
    }) {
        Ok(c) => c,
        // Perhaps a moment's trouble with the disk: retried, and said why. Only a controller's
        // word (revoked) ends the agent for good.
        Err(e) => {
            return SessionEnd::Retry(format!(
                "cannot read this agent's credentials: {e} (enrol it again if they are gone)"
            ))
        }
    };
    let connecting = match endpoint.connect_with(config, sock, &host) {
        Ok(c) => c,
        Err(e) => return SessionEnd::Retry(e.to_string()),
    };
    // A dead address answers nothing: give up on it well before the idle timeout, so the next
    // controller in the list is tried soon.
    let connect_timeout = CONNECT_TIMEOUT.min(agent.cfg.timers.idle_timeout);
    let conn = tokio::select! {
        c = tokio::time::timeout(connect_timeout, connecting) => match c {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return classify(&e),
            Err(_) => return SessionEnd::Retry(format!("no answer within {connect_timeout:?}")),
        },
        _ = agent.shutdown.cancelled() => return SessionEnd::Shutdown,
    };
    let result = serve(agent, &conn, addr, status).await;
    if matches!(result, SessionEnd::Shutdown) {
        conn.close(quinn::VarInt::from_u32(close::NORMAL), b"agent stopping");
    }
    // A write or read that failed because the controller closed the connection says why only
    // through the close reason: a revocation must not pass for a lost connection.
    match (result, conn.close_reason()) {
        (SessionEnd::Retry(_), Some(reason)) => classify(&reason),
        (other, _) => other,
    }
}

/// Whether a connection error is worth retrying.
fn classify(e: &quinn::ConnectionError) -> SessionEnd {
    if let quinn::ConnectionError::ApplicationClosed(c) = e {
        let reason = String::from_utf8_lossy(&c.reason).into_owned();
        let code = c.error_code.into_inner();
        if code == u64::from(close::REVOKED) {
            return SessionEnd::Fatal(Fatal::Refused(reason));
        }
        if code == u64::from(close::UNKNOWN_AGENT) {
            return SessionEnd::Retry(format!(
                "the controller does not know this agent ({reason}): is it using the database the agent was enrolled in?"
            ));
        }
        return SessionEnd::Retry(format!("controller closed the session: {reason}"));
    }
    SessionEnd::Retry(e.to_string())
}

async fn serve(
    agent: &Arc<Agent>,
    conn: &quinn::Connection,
    addr: &str,
    status: &mut StatusFile,
) -> SessionEnd {
    let (mut send, recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return classify(&e),
    };
    let hello = Hello {
        protocol_version: outpost_protocol::PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        hostname: agent.hostname.clone(),
        labels: agent.cfg.labels.clone(),
        capacity: agent.cfg.capacity,
        ansible_version: agent.ansible_version.clone(),
        running: agent.table.report(),
        capabilities: vec!["renew".into(), "resume".into()],
    };
    if let Err(e) = codec::write_frame(&mut send, &Up::Hello(hello), codec::MAX_FRAME).await {
        return SessionEnd::Retry(e.to_string());
    }
    let mut reader = codec::spawn_reader::<_, Down>(recv, codec::MAX_FRAME);
    let welcome = match tokio::time::timeout(Duration::from_secs(15), reader.recv()).await {
        Ok(Some(Ok(Down::Welcome(w)))) => w,
        Ok(Some(Ok(Down::Refused { reason }))) => {
            return SessionEnd::Retry(format!("refused: {reason}"))
        }
        Ok(Some(Ok(other))) => {
            return SessionEnd::Retry(format!("expected Welcome, got {other:?}"))
        }
        Ok(Some(Err(e))) => return SessionEnd::Retry(e.to_string()),
        Ok(None) => {
            return match conn.close_reason() {
                Some(e) => classify(&e),
                None => SessionEnd::Retry("session stream closed before Welcome".into()),
            }
        }
        Err(_) => return SessionEnd::Retry("no Welcome in time".into()),
    };
    tracing::info!(controller = %conn.remote_address(), agent = %welcome.agent, held = agent.table.len(), "connected");
    status.set(Connection::Online {
        controller: addr.to_owned(),
    });

    // Resume every job still held (lines not yet acknowledged, outcomes not yet recorded),
    // now and whenever a job's stream ended while the session lives on.
    resume_deliveries(agent, conn);
    let mut resume = tokio::time::interval(Duration::from_secs(2));
    resume.tick().await;

    let heartbeat = Duration::from_millis(welcome.heartbeat_interval_ms.clamp(1000, 60_000).into());
    let mut beat = tokio::time::interval(heartbeat);
    let mut renew_at = renewal_at(agent);
    let mut seq = 0u64;
    let mut renewing = false;
    let mut draining_sent = false;
    loop {
        if agent.draining.is_cancelled() && !draining_sent {
            draining_sent = true;
            let status = AgentStatus {
                running: agent.table.running() as u32,
                capacity: agent.cfg.capacity,
                draining: true,
            };
            if let Err(e) =
                codec::write_frame(&mut send, &Up::Status(status), codec::MAX_FRAME).await
            {
                return SessionEnd::Retry(e.to_string());
            }
        }
        tokio::select! {
            _ = agent.shutdown.cancelled() => return SessionEnd::Shutdown,
            _ = agent.draining.cancelled(), if !draining_sent => {}
            _ = resume.tick() => resume_deliveries(agent, conn),
            _ = beat.tick() => {
                seq += 1;
                if let Err(e) = codec::write_frame(&mut send, &Up::Heartbeat { seq }, codec::MAX_FRAME).await {
                    return SessionEnd::Retry(e.to_string());
                }
            }
            _ = tokio::time::sleep_until(renew_at), if !renewing => {
                match renewal_csr(agent) {
                    Some(csr) => {
                        renewing = true;
                        if let Err(e) = codec::write_frame(&mut send, &Up::Renew { csr_der: csr }, codec::MAX_FRAME).await {
                            return SessionEnd::Retry(e.to_string());
                        }
                    }
                    None => renew_at = tokio::time::Instant::now() + Duration::from_secs(60),
                }
            }
            msg = reader.recv() => match msg {
                Some(Ok(Down::HeartbeatAck { .. })) => {}
                Some(Ok(Down::Cancel { job, reason })) => match agent.table.get(&job) {
                    Some(entry) => {
                        tracing::info!(%job, %reason, "cancel requested");
                        entry.stop.request(reason.clone());
                    }
                    None => {
                        tracing::info!(%job, "cancel for a job not held here (yet): it will not be started");
                        agent.early_cancels.remember(job);
                    }
                },
                Some(Ok(Down::Renewed { cert_chain_der })) => {
                    renewing = false;
                    match agent.state.save_chain(&cert_chain_der) {
                        Ok(()) => tracing::info!("certificate renewed; the next session uses it"),
                        Err(e) => tracing::error!(error = %e, "cannot store the renewed certificate"),
                    }
                    // Never straight again, whatever the controller's lifetimes.
                    renew_at = renewal_at(agent).max(tokio::time::Instant::now() + Duration::from_secs(5));
                }
                Some(Ok(Down::RenewRefused { reason })) => {
                    renewing = false;
                    tracing::error!(%reason, "certificate renewal refused; trying again in a minute");
                    renew_at = tokio::time::Instant::now() + Duration::from_secs(60);
                }
                Some(Ok(other)) => tracing::debug!(?other, "unexpected session message"),
                Some(Err(e)) => return SessionEnd::Retry(e.to_string()),
                None => return match conn.close_reason() {
                    Some(e) => classify(&e),
                    None => SessionEnd::Retry("session stream closed".into()),
                },
            },
            stream = conn.accept_bi() => match stream {
                Ok((s, r)) => { tokio::spawn(take_assignment(agent.clone(), s, r)); }
                Err(e) => return classify(&e),
            },
        }
    }
}

/// Opens a job stream with a Resume for every held job that no stream is delivering.
fn resume_deliveries(agent: &Arc<Agent>, conn: &quinn::Connection) {
    for entry in agent.table.all() {
        let Some(guard) = entry.claim_delivery() else {
            continue;
        };
        let (agent, conn) = (agent.clone(), conn.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let Ok((mut send, recv)) = conn.open_bi().await else {
                return;
            };
            let resume = JobUp::Resume {
                job: entry.job,
                dispatch_id: entry.dispatch_id.clone(),
                acked_through: entry.spool.acked(),
            };
            if codec::write_frame(&mut send, &resume, codec::MAX_FRAME)
                .await
                .is_err()
            {
                return;
            }
            let mut reader = codec::spawn_reader::<_, JobDown>(recv, codec::MAX_FRAME);
            if let Err(e) = jobs::deliver(&agent.table, entry.clone(), &mut send, &mut reader).await
            {
                tracing::debug!(job = %entry.job, error = %e, "job stream ended; resuming shortly");
            }
        });
    }
}

/// When to renew: once a third of the certificate's life is left (now, if that is past). An
/// unreadable certificate is looked at again in a minute.
fn renewal_at(agent: &Agent) -> tokio::time::Instant {
    let retry = tokio::time::Instant::now() + Duration::from_secs(60);
    let Some(info) = std::fs::read_to_string(agent.state.cert_file())
        .ok()
        .and_then(|pem| pki::certs_from_pem(&pem).ok())
        .and_then(|certs| certs.into_iter().next())
        .and_then(|leaf| pki::inspect(&leaf).ok())
    else {
        return retry;
    };
    let life = info.not_after - info.not_before;
    let left = info.not_after - time::OffsetDateTime::now_utc() - life / 3;
    let wait = Duration::try_from(left).unwrap_or(Duration::ZERO);
    tracing::debug!(expires = %info.not_after, renew_in = ?wait, "certificate renewal scheduled");
    tokio::time::Instant::now() + wait
}

/// A CSR for the agent's own key (the key never changes hands).
fn renewal_csr(agent: &Agent) -> Option<Vec<u8>> {
    let key = AgentKey::from_pem(&std::fs::read_to_string(agent.state.key_file()).ok()?).ok()?;
    tracing::info!("renewing the certificate");
    key.csr(&agent.hostname).ok()
}

/// A job stream the controller opened: an assignment to accept or reject, then delivery.
async fn take_assignment(agent: Arc<Agent>, mut send: quinn::SendStream, recv: quinn::RecvStream) {
    let mut reader = codec::spawn_reader::<_, JobDown>(recv, codec::MAX_FRAME);
    let job = match reader.recv().await {
        Some(Ok(JobDown::Assign(a))) => *a,
        other => {
            tracing::warn!(?other, "job stream without an assignment");
            return;
        }
    };
    let id = job.job;
    let refuse = if agent.early_cancels.take(&id) {
        Some("cancelled before it started".to_owned())
    } else if agent.draining.is_cancelled() {
        Some("agent is shutting down".to_owned())
    } else if agent.table.get(&id).is_some() {
        Some("job already held by this agent".to_owned())
    } else if agent.table.running() >= agent.cfg.capacity as usize {
        Some(format!("agent at capacity ({} jobs)", agent.cfg.capacity))
    } else {
        None
    };
    let started = match refuse {
        Some(reason) => Err(reason),
        None => agent
            .table
            .start(agent.cfg.runner.clone(), &agent.state.spool_dir(), job)
            .map_err(|e| format!("cannot create the job's spool: {e}")),
    };
    let (entry, _guard) = match started {
        Ok(e) => e,
        Err(reason) => {
            tracing::info!(job = %id, %reason, "assignment rejected");
            let _ = codec::write_frame(
                &mut send,
                &JobUp::Reject { job: id, reason },
                codec::MAX_FRAME,
            )
            .await;
            let _ = send.finish();
            return;
        }
    };
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    for msg in [JobUp::Accept { job: id }, JobUp::Started { job: id, at_ms }] {
        if codec::write_frame(&mut send, &msg, codec::MAX_FRAME)
            .await
            .is_err()
        {
            return; // the job runs on; its spool is resumed on the next session
        }
    }
    if let Err(e) = jobs::deliver(&agent.table, entry, &mut send, &mut reader).await {
        tracing::debug!(job = %id, error = %e, "job stream ended; resuming on the next session");
    }
}
