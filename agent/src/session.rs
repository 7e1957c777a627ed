//! The agent's side of the connection: dial the controller (several addresses, tried in turn),
//! say Hello, keep the session alive (QUIC keep-alives, or heartbeats if the controller wants
//! them more often), take assignments and cancel requests, resume the delivery of every job it
//! still holds, renew its certificate, and reconnect forever with capped, jittered backoff when
//! anything breaks. The session stream's rules are the protocol's [`AgentSide`]; this moves
//! bytes between it, the agent and the network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::codec;
use outpost_protocol::control::{self, sleep_until, AgentAction, AgentEvent, AgentSide};
use outpost_protocol::message::{AgentStatus, Down, Hello, JobDown, JobUp, StreamUp};
use outpost_protocol::pki::{self, AgentKey};
use outpost_protocol::{close, tls};
use rand::Rng;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::fetch::Revisions;
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
    /// The revision cache, and the live session revisions are fetched over.
    pub revisions: Arc<Revisions>,
    /// Publishes the live session (for fetches) while there is one.
    pub link: tokio::sync::watch::Sender<Option<quinn::Connection>>,
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

/// A controller address that leads nowhere.
#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("controller address '{0}' has no port (HOST:PORT)")]
    NoPort(String),
    #[error("cannot resolve {addr}: {source}")]
    Lookup {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0} resolves to nothing")]
    Nothing(String),
}

/// The socket address to dial and the name to check the controller's certificate against.
pub(crate) async fn resolve(addr: &str) -> Result<(SocketAddr, String), ResolveError> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        None => return Err(ResolveError::NoPort(addr.to_owned())),
    };
    let sock = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| ResolveError::Lookup {
            addr: addr.to_owned(),
            source,
        })?
        .next()
        .ok_or_else(|| ResolveError::Nothing(addr.to_owned()))?;
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
        Err(e) => return SessionEnd::Retry(e.to_string()),
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
    // Fetches wait for the next session rather than try this one again.
    agent.link.send_replace(None);
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
        capabilities: control::CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
    };
    let (mut machine, hello) = AgentSide::new(hello, now());
    machine.set_keep_alive(agent.cfg.timers.keep_alive);
    if let Err(e) = codec::write_frame(&mut send, &hello, codec::MAX_FRAME).await {
        return SessionEnd::Retry(e.to_string());
    }
    let mut reader = codec::spawn_reader::<_, Down>(recv, codec::MAX_FRAME);
    let welcome = loop {
        tokio::select! {
            msg = reader.recv() => match msg {
                Some(Ok(msg)) => match machine.receive(msg, now()) {
                    Ok(AgentEvent::Welcomed(w)) => break w,
                    // Before the Welcome the machine yields a Welcome or an error, nothing else.
                    Ok(_) => {}
                    Err(e) => return SessionEnd::Retry(e.to_string()),
                },
                Some(Err(e)) => return SessionEnd::Retry(e.to_string()),
                None => {
                    return match conn.close_reason() {
                        Some(e) => classify(&e),
                        None => SessionEnd::Retry("session stream closed before Welcome".into()),
                    }
                }
            },
            _ = sleep_until(machine.poll_timeout()) => {
                if let Err(e) = machine.poll(now()) {
                    return SessionEnd::Retry(e.to_string());
                }
            }
        }
    };
    tracing::info!(controller = %conn.remote_address(), agent = %welcome.agent, held = agent.table.len(), "connected");
    status.set(Connection::Online {
        controller: addr.to_owned(),
    });
    // Fetches of revisions interrupted by a cut resume on this session.
    agent.link.send_replace(Some(conn.clone()));

    // Resume every job still held (lines not yet acknowledged, outcomes not yet recorded),
    // now and whenever a job's stream ended while the session lives on.
    resume_deliveries(agent, conn);
    let mut resume = tokio::time::interval(Duration::from_secs(2));
    resume.tick().await;

    machine.schedule_renewal(renewal_at(agent));
    loop {
        let mut due = Vec::new();
        if agent.draining.is_cancelled() {
            due.extend(machine.drain(AgentStatus {
                running: agent.table.running() as u32,
                capacity: agent.cfg.capacity,
                draining: true,
            }));
        }
        loop {
            match machine.poll(now()) {
                Ok(Some(AgentAction::Send(up))) => due.push(up),
                Ok(Some(AgentAction::Renew)) => {
                    due.extend(machine.renew(renewal_csr(agent), now()));
                }
                Ok(None) => break,
                Err(e) => return SessionEnd::Retry(e.to_string()),
            }
        }
        for up in &due {
            if let Err(e) = codec::write_frame(&mut send, up, codec::MAX_FRAME).await {
                return SessionEnd::Retry(e.to_string());
            }
        }
        tokio::select! {
            _ = agent.shutdown.cancelled() => return SessionEnd::Shutdown,
            _ = agent.draining.cancelled(), if !machine.drain_sent() => {}
            _ = resume.tick() => resume_deliveries(agent, conn),
            _ = sleep_until(machine.poll_timeout()) => {}
            msg = reader.recv() => match msg {
                Some(Ok(msg)) => match machine.receive(msg, now()) {
                    Ok(AgentEvent::Cancel { job, reason }) => match agent.table.get(&job) {
                        Some(entry) => {
                            tracing::info!(%job, %reason, "cancel requested");
                            entry.stop.request(reason.clone());
                        }
                        None => {
                            tracing::info!(%job, "cancel for a job not held here (yet): it will not be started");
                            agent.early_cancels.remember(job);
                        }
                    },
                    Ok(AgentEvent::Renewed { cert_chain_der }) => {
                        match agent.state.save_chain(&cert_chain_der) {
                            Ok(()) => tracing::info!("certificate renewed; the next session uses it"),
                            Err(e) => tracing::error!(error = %e, "cannot store the renewed certificate"),
                        }
                        machine.schedule_renewal(renewal_at(agent));
                    }
                    Ok(AgentEvent::RenewRefused { reason }) => {
                        tracing::error!(%reason, "certificate renewal refused; trying again in a minute");
                    }
                    Ok(AgentEvent::Ignored(kind)) => tracing::debug!(kind, "unexpected session message"),
                    Ok(AgentEvent::HeartbeatAcked(_) | AgentEvent::Welcomed(_)) => {}
                    Err(e) => return SessionEnd::Retry(e.to_string()),
                },
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

/// The time on tokio's clock, as the protocol's machines take it.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
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
            let resume = StreamUp::Resume {
                job: entry.job,
                dispatch_id: entry.dispatch_id.clone(),
                acked_through: entry.spool.acked(),
                results_acked: entry.spool.results().acked(),
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
fn renewal_at(agent: &Agent) -> std::time::Instant {
    let retry = now() + control::RENEW_RETRY;
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
    now() + wait
}

/// A CSR for the agent's own key (the key never changes hands).
fn renewal_csr(agent: &Agent) -> Option<Vec<u8>> {
    let key = AgentKey::from_pem(&std::fs::read_to_string(agent.state.key_file()).ok()?).ok()?;
    tracing::info!("renewing the certificate");
    key.csr(&agent.hostname).ok()
}

/// Why an assignment is rejected; the controller is told the text and queues the job again.
#[derive(Debug, Error)]
enum Refusal {
    #[error("cancelled before it started")]
    CancelledEarly,
    #[error("agent is shutting down")]
    Draining,
    #[error(transparent)]
    NoRoom(#[from] jobs::NoRoom),
    #[error("cannot create the job's spool: {0}")]
    Spool(std::io::Error),
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
    let started = if agent.early_cancels.take(&id) {
        Err(Refusal::CancelledEarly)
    } else if agent.draining.is_cancelled() {
        Err(Refusal::Draining)
    } else {
        // The checks and the place are one step, so a second copy of this assignment, or
        // one more beyond the capacity, arriving meanwhile is refused.
        match agent.table.reserve(id, agent.cfg.capacity) {
            Err(no_room) => Err(Refusal::from(no_room)),
            Ok(place) => agent
                .table
                .start(
                    place,
                    agent.cfg.runner.clone(),
                    agent.revisions.clone(),
                    &agent.state.spool_dir(),
                    job,
                )
                .map_err(Refusal::Spool),
        }
    };
    let (entry, _guard) = match started {
        Ok(e) => e,
        Err(refusal) => {
            tracing::info!(job = %id, reason = %refusal, "assignment rejected");
            let reject = JobUp::Reject {
                job: id,
                reason: refusal.to_string(),
            };
            let _ = codec::write_frame(&mut send, &reject, codec::MAX_FRAME).await;
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
