//! Agent sessions: one task per connected agent. It checks who the peer is (by certificate,
//! never by address), reconciles the jobs the agent says it holds with the store, registers the
//! agent with the scheduler, and then serves the session stream (heartbeats, status, cancel
//! requests, certificate renewal) and the job streams.

use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::codec::{self, FrameError};
use outpost_protocol::message::{Down, Up, Welcome};
use outpost_protocol::pki;
use outpost_protocol::{close, tls};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::core::Core;
use crate::dispatch::{self, Owner};
use crate::metrics;
use crate::model::Agent;
use crate::scheduler::{AgentLink, Event, SessionCommand};
use crate::store::agents::AgentPresence;
use crate::store::{Store, StoreError};

/// Session-stream messages are small; a renewal CSR is the largest.
const MAX_SESSION_FRAME: usize = 256 * 1024;
/// A write to the session stream that takes longer than this ends the session: an agent that
/// stops reading must not hold its session (and its revocation) hostage.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes one message to the session stream, within [`WRITE_TIMEOUT`].
async fn send_down(send: &mut quinn::SendStream, msg: &Down) -> Result<(), SessionError> {
    match tokio::time::timeout(
        WRITE_TIMEOUT,
        codec::write_frame(send, msg, MAX_SESSION_FRAME),
    )
    .await
    {
        Ok(r) => r.map_err(SessionError::Write),
        Err(_) => Err(SessionError::Write(FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the agent does not read its session stream",
        )))),
    }
}

/// Why a session ended. Each maps to the QUIC close code the agent is told.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error("the agent did not open its session stream in time")]
    NoSessionStream,
    #[error("expected Hello, got {0}")]
    NoHello(String),
    #[error("{0}")]
    Version(String),
    #[error("bad frame on the session stream: {0}")]
    Frame(#[from] FrameError),
    #[error("cannot write to the session stream: {0}")]
    Write(FrameError),
    #[error("a second Hello")]
    SecondHello,
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("the agent closed its session stream")]
    StreamClosed,
    #[error("the store cannot serve this session: {0}")]
    Store(#[from] StoreError),
    #[error("{reason}")]
    Closed { code: u32, reason: String },
}

impl SessionError {
    /// The close code the connection is closed with.
    pub fn close_code(&self) -> u32 {
        match self {
            SessionError::Version(_) => close::VERSION,
            SessionError::NoHello(_) | SessionError::Frame(_) | SessionError::SecondHello => {
                close::PROTOCOL
            }
            SessionError::NoSessionStream
            | SessionError::Write(_)
            | SessionError::Connection(_)
            | SessionError::StreamClosed => close::NORMAL,
            SessionError::Store(_) => close::SHUTDOWN,
            SessionError::Closed { code, .. } => *code,
        }
    }
}

fn close_conn(conn: &quinn::Connection, code: u32, reason: &str) {
    conn.close(quinn::VarInt::from_u32(code), reason.as_bytes());
}

/// Runs one agent connection from handshake to close. `handshake` is held until the
/// handshake is done.
pub async fn handle(
    ctx: Arc<Core>,
    incoming: quinn::Incoming,
    handshake: tokio::sync::OwnedSemaphorePermit,
) {
    let conn = incoming.await;
    drop(handshake);
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            metrics::global().handshakes_refused.inc();
            tracing::info!(error = %e, "agent handshake failed");
            return;
        }
    };
    let agent = match identify(&ctx, &conn).await {
        Ok(a) => a,
        Err((code, reason)) => {
            metrics::global().handshakes_refused.inc();
            tracing::warn!(remote = %conn.remote_address(), %reason, "agent session refused");
            close_conn(&conn, code, &reason);
            return;
        }
    };
    if let Err(e) = run(&ctx, &conn, agent).await {
        if matches!(
            e,
            SessionError::Connection(_) | SessionError::StreamClosed | SessionError::Write(_)
        ) {
            tracing::info!(reason = %e, "agent session ended");
        } else {
            tracing::warn!(reason = %e, "agent session ended");
            close_conn(&conn, e.close_code(), &e.to_string());
        }
    }
}

async fn identify(ctx: &Core, conn: &quinn::Connection) -> Result<Agent, (u32, String)> {
    let uuid = tls::peer_agent_uuid(conn).map_err(|e| (close::UNKNOWN_AGENT, e.to_string()))?;
    let agent = ctx
        .store
        .get_agent_by_uuid(&uuid.to_string())
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => (
                close::UNKNOWN_AGENT,
                format!("agent {uuid} is not enrolled here: enrol it again"),
            ),
            other => (
                close::SHUTDOWN,
                format!("the controller cannot check this agent now: {other}"),
            ),
        })?;
    if agent.revoked {
        return Err((close::REVOKED, format!("agent {} is revoked", agent.name)));
    }
    Ok(agent)
}

async fn run(ctx: &Arc<Core>, conn: &quinn::Connection, agent: Agent) -> Result<(), SessionError> {
    let (mut send, recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .map_err(|_| SessionError::NoSessionStream)??;
    let mut reader = codec::spawn_reader::<_, Up>(recv, MAX_SESSION_FRAME);
    let hello = match tokio::time::timeout(Duration::from_secs(10), reader.recv()).await {
        Ok(Some(Ok(Up::Hello(h)))) => h,
        Ok(Some(Ok(other))) => return Err(SessionError::NoHello(format!("{other:?}"))),
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(None) => return Err(SessionError::StreamClosed),
        Err(_) => return Err(SessionError::NoHello("nothing in 10 s".into())),
    };
    if hello.protocol_version < outpost_protocol::MIN_PROTOCOL_VERSION
        || hello.protocol_version > outpost_protocol::PROTOCOL_VERSION
    {
        let reason = format!(
            "protocol version {} is not supported; this controller speaks {}..={}",
            hello.protocol_version,
            outpost_protocol::MIN_PROTOCOL_VERSION,
            outpost_protocol::PROTOCOL_VERSION
        );
        let _ = codec::write_frame(
            &mut send,
            &Down::Refused {
                reason: reason.clone(),
            },
            MAX_SESSION_FRAME,
        )
        .await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
        metrics::global().handshakes_refused.inc();
        return Err(SessionError::Version(reason));
    }
    // More jobs than streams the connection allows would stall: hold the agent to the limit.
    let capacity = hello
        .capacity
        .clamp(1, outpost_protocol::MAX_AGENT_CAPACITY);
    let presence = AgentPresence {
        version: hello.agent_version.clone(),
        hostname: hello.hostname.clone(),
        ansible_version: hello.ansible_version.clone(),
        capacity: i32::try_from(capacity).unwrap_or(i32::MAX),
        controller: ctx.settings.controller_id.clone(),
        session: Uuid::new_v4().to_string(),
    };
    ctx.store.agent_connected(agent.id, &presence).await?;
    let held: Vec<(Uuid, String)> = hello
        .running
        .iter()
        .map(|r| (r.job, r.dispatch_id.clone()))
        .collect();
    let in_flight = ctx.lifecycle.reconcile(&agent, &held).await?;

    let welcome = Welcome {
        protocol_version: outpost_protocol::PROTOCOL_VERSION,
        controller_version: env!("CARGO_PKG_VERSION").to_owned(),
        agent: Uuid::parse_str(&agent.uuid).unwrap_or_default(),
        heartbeat_interval_ms: u32::try_from(ctx.settings.heartbeat_interval.as_millis())
            .unwrap_or(5000),
        capabilities: vec!["renew".into(), "resume".into()],
    };
    codec::write_frame(&mut send, &Down::Welcome(welcome), MAX_SESSION_FRAME)
        .await
        .map_err(SessionError::Write)?;

    let session = ctx.next_session();
    let owner = Owner {
        agent: agent.id,
        session,
    };
    let (commands_tx, mut commands) = mpsc::channel(256);
    ctx.scheduler.send(Event::Up(AgentLink {
        id: agent.id,
        uuid: Uuid::parse_str(&agent.uuid).unwrap_or_default(),
        name: agent.name.clone(),
        labels: agent.label_pairs().into_iter().collect(),
        capacity,
        in_flight,
        draining: false,
        session,
        commands: commands_tx,
        conn: Some(conn.clone()),
    }));
    audit(
        &ctx.store,
        &agent,
        "AGENT_CONNECTED",
        serde_json::json!({"controller": ctx.settings.controller_id, "hostname": hello.hostname}),
    )
    .await;

    let mut jobs = JoinSet::new();

    let end: Result<(), SessionError> = loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break Ok(()),
            reason = conn.closed() => break Err(reason.into()),
            cmd = commands.recv() => match cmd {
                Some(SessionCommand::Assign(d)) => {
                    jobs.spawn(dispatch::run_assigned(ctx.clone(), conn.clone(), owner, *d));
                }
                Some(SessionCommand::Cancel { job, reason }) => {
                    tracing::info!(%job, agent = %agent.name, "delivering a cancel request");
                    if let Err(e) = send_down(&mut send, &Down::Cancel { job, reason }).await {
                        break Err(e);
                    }
                }
                Some(SessionCommand::Close { code, reason }) => {
                    close_conn(conn, code, &reason);
                    break Err(SessionError::Closed { code, reason });
                }
                None => break Ok(()),
            },
            msg = reader.recv() => match msg {
                Some(Ok(Up::Heartbeat { seq })) => {
                    if let Err(e) = send_down(&mut send, &Down::HeartbeatAck { seq }).await {
                        break Err(e);
                    }
                }
                Some(Ok(Up::Status(s))) => {
                    ctx.scheduler.send(Event::Status { agent: agent.id, session, capacity: s.capacity.clamp(1, outpost_protocol::MAX_AGENT_CAPACITY), draining: s.draining });
                }
                Some(Ok(Up::Renew { csr_der })) => {
                    let answer = renew(ctx, &agent, &csr_der).await;
                    let refused = matches!(&answer, Down::RenewRefused { reason } if reason == "agent revoked");
                    if let Err(e) = send_down(&mut send, &answer).await {
                        break Err(e);
                    }
                    if refused {
                        close_conn(conn, close::REVOKED, "agent revoked");
                        break Err(SessionError::Closed { code: close::REVOKED, reason: "agent revoked".into() });
                    }
                }
                Some(Ok(Up::Hello(_))) => break Err(SessionError::SecondHello),
                Some(Err(e)) => break Err(e.into()),
                None => break Err(conn.close_reason().map(SessionError::from).unwrap_or(SessionError::StreamClosed)),
            },
            stream = conn.accept_bi() => match stream {
                Ok((s, r)) => { jobs.spawn(dispatch::run_resumed(ctx.clone(), owner, s, r)); }
                Err(e) => break Err(e.into()),
            },

            Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
        }
    };

    ctx.scheduler.send(Event::Down {
        agent: agent.id,
        session,
    });
    // Shutting down: job streams acknowledge what is committed, then the session closes with
    // a reason the agent understands (reconnect, maybe elsewhere).
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while jobs.join_next().await.is_some() {}
    })
    .await;
    jobs.abort_all();
    if ctx.stop.is_cancelled() {
        close_conn(conn, close::SHUTDOWN, "controller shutting down");
    }
    let _ = ctx
        .store
        .agent_disconnected(agent.id, &presence.session)
        .await;
    audit(
        &ctx.store,
        &agent,
        "AGENT_DISCONNECTED",
        serde_json::json!({"controller": ctx.settings.controller_id}),
    )
    .await;
    end
}

async fn audit(store: &Store, agent: &Agent, action: &str, details: serde_json::Value) {
    let _ = store
        .record_audit(&crate::store::audit::NewAudit {
            actor: &crate::store::audit::Actor::system(),
            action,
            resource_type: "agent",
            resource_id: Some(agent.id.0),
            details: Some(details),
        })
        .await;
}

async fn renew(ctx: &Core, agent: &Agent, csr_der: &[u8]) -> Down {
    let Ok(uuid) = Uuid::parse_str(&agent.uuid) else {
        return Down::RenewRefused {
            reason: "agent uuid unreadable".into(),
        };
    };
    // Revocation is looked up afresh: a revoked agent gets no new certificate, whatever its
    // session still holds.
    match ctx.store.get_agent(agent.id).await {
        Ok(a) if !a.revoked => {}
        Ok(_) => {
            return Down::RenewRefused {
                reason: "agent revoked".into(),
            }
        }
        Err(e) => {
            return Down::RenewRefused {
                reason: format!("cannot check the agent now: {e}"),
            }
        }
    }
    match ctx
        .ca
        .sign_agent_csr(csr_der, uuid, ctx.settings.agent_cert_lifetime)
    {
        Ok(cert) => {
            if let Ok(info) = pki::inspect(&cert) {
                let expires = chrono::DateTime::from_timestamp(info.not_after.unix_timestamp(), 0)
                    .unwrap_or_default();
                let _ = ctx
                    .store
                    .set_agent_certificate(agent.id, &pki::fingerprint(&cert), expires)
                    .await;
            }
            tracing::info!(agent = %agent.name, "certificate renewed");
            Down::Renewed {
                cert_chain_der: vec![cert.to_vec(), ctx.ca.cert_der().to_vec()],
            }
        }
        Err(e) => Down::RenewRefused {
            reason: e.to_string(),
        },
    }
}
