//! Agent sessions: one task per connected agent. It checks who the peer is (by certificate,
//! never by address), reconciles the jobs the agent says it holds with the store, registers the
//! agent with the scheduler, and then serves the session stream (heartbeats, status, cancel
//! requests, certificate renewal) and the job streams. The session stream's rules are the
//! protocol's [`ControllerSide`]; this moves bytes between it, the store and the network.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::OptionFuture;

use outpost_protocol::codec::{self, FrameError};
use outpost_protocol::control::{
    sleep_until, ControlError, ControllerSide, Greeting, Inbound, RenewAnswer,
};
use outpost_protocol::message::{Down, StreamUp, Up};
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
use crate::store::agents::{AgentPresence, HeldCertificate};
use crate::store::{Store, StoreError};

/// Session-stream messages are small; a renewal CSR is the largest.
const MAX_SESSION_FRAME: usize = 256 * 1024;
/// The first frame of a stream the agent opens is a few names and numbers.
const MAX_OPENING_FRAME: usize = 4 * 1024;
/// How long an agent has to say what a stream it opened is for.
const OPENING_TIMEOUT: Duration = Duration::from_secs(30);
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
    /// The handshake did not complete or the agent broke a rule of the session stream.
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("bad frame on the session stream: {0}")]
    Frame(#[from] FrameError),
    #[error("cannot write to the session stream: {0}")]
    Write(FrameError),
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
            SessionError::Control(e) => e.close_code(),
            SessionError::Frame(_) => close::PROTOCOL,
            SessionError::Write(_) | SessionError::Connection(_) | SessionError::StreamClosed => {
                close::NORMAL
            }
            SessionError::Store(_) => close::SHUTDOWN,
            SessionError::Closed { code, .. } => *code,
        }
    }
}

/// The time on tokio's clock, as the protocol's machines take it.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
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
    // The store's futures are boxed wherever a session awaits them: inline, each would be
    // part of the session task's state for as long as the session lives (8 KiB of every idle
    // session's task before; BENCHMARKS.md, "50,000 idle agents, again").
    let agent = match Box::pin(identify(&ctx, &conn)).await {
        Ok(a) => a,
        Err((code, reason)) => {
            metrics::global().handshakes_refused.inc();
            tracing::warn!(remote = %conn.remote_address(), %reason, "agent session refused");
            close_conn(&conn, code, &reason);
            return;
        }
    };
    // The uuid (a copy, no allocation kept for the session's life) names the agent to revoke
    // when its session broke a rule; the scheduler's lines pair it with the name.
    let uuid = agent.uuid;
    if let Err(e) = run(&ctx, &conn, agent).await {
        if matches!(
            e,
            SessionError::Connection(_) | SessionError::StreamClosed | SessionError::Write(_)
        ) {
            tracing::info!(%uuid, reason = %e, "agent session ended");
        } else {
            tracing::warn!(%uuid, reason = %e, "agent session ended");
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
    let mut control = ControllerSide::new(now());
    let (mut send, recv) = loop {
        tokio::select! {
            stream = conn.accept_bi() => break stream?,
            _ = sleep_until(control.poll_timeout()) => control.handle_timeout(now())?,
        }
    };
    control.stream_opened(now());
    // Read in this task: a reader task and its channel cost each idle session about 6 KiB
    // (BENCHMARKS.md, "Idle agents") and a task hop per heartbeat.
    let mut reader = codec::FrameReader::new(recv, MAX_SESSION_FRAME);
    let (hello, capacity) = loop {
        tokio::select! {
            msg = reader.next::<Up>() => match msg {
                Some(Ok(msg)) => match control.receive(msg, now()) {
                    Ok(Inbound::Hello { hello, capacity }) => break (hello, capacity),
                    // Before the Welcome the machine yields a Hello or an error, nothing else.
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(refusal) = e.refusal() {
                            let _ = codec::write_frame(&mut send, &refusal, MAX_SESSION_FRAME).await;
                            let _ = send.finish();
                            let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
                            metrics::global().handshakes_refused.inc();
                        }
                        return Err(e.into());
                    }
                },
                Some(Err(e)) => return Err(e.into()),
                None => return Err(SessionError::StreamClosed),
            },
            _ = sleep_until(control.poll_timeout()) => control.handle_timeout(now())?,
        }
    };
    let presence = AgentPresence {
        version: hello.agent_version.clone(),
        hostname: hello.hostname.clone(),
        ansible_version: hello.ansible_version.clone(),
        capacity: i32::try_from(capacity).unwrap_or(i32::MAX),
        controller: ctx.settings.controller_id.clone(),
        session: Uuid::new_v4().to_string(),
        // What the agent holds, read off the handshake: a renewal it never received leaves
        // the row naming a certificate it does not have, until this corrects it.
        certificate: tls::peer_leaf(conn).and_then(|der| crate::pki::held_certificate(&der)),
    };
    Box::pin(ctx.store.agent_connected(agent.id, &presence)).await?;
    // Only the session's name is needed from here on; the rest would stay in every idle
    // session's task for its whole life.
    let session_name = presence.session;
    let held: Vec<(Uuid, String)> = hello
        .running
        .iter()
        .map(|r| (r.job, r.dispatch_id.clone()))
        .collect();
    // From here a failure before the session is up gives the row back, or it would name this
    // controller with no session behind it: stamped on, never lost, never settled.
    let up = async {
        let in_flight = Box::pin(ctx.lifecycle.reconcile(&agent, &held)).await?;
        // Now that the agent said what it can hold, it may open that many streams (its
        // resumes and fetches); before its Hello it could open only its session stream.
        let streams = tls::session_streams(capacity, held.len());
        conn.set_max_concurrent_bi_streams(streams.into());
        let welcome = control.welcome(Greeting {
            controller_version: env!("CARGO_PKG_VERSION").to_owned(),
            agent: agent.uuid.0,
            heartbeat_interval: ctx.settings.heartbeat_interval,
        });
        codec::write_frame(&mut send, &welcome, MAX_SESSION_FRAME)
            .await
            .map_err(SessionError::Write)?;
        Ok::<_, SessionError>((in_flight, streams))
    }
    .await;
    let (in_flight, mut streams) = match up {
        Ok(o) => o,
        Err(e) => {
            let _ = Box::pin(ctx.store.agent_disconnected(agent.id, &session_name)).await;
            return Err(e);
        }
    };

    let session = ctx.next_session();
    let owner = Owner {
        agent: agent.id,
        session,
    };
    let (commands_tx, mut commands) = mpsc::channel(256);
    ctx.scheduler.send(Event::Up(AgentLink {
        id: agent.id,
        uuid: agent.uuid.0,
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
    // Held for as long as the session otherwise.
    drop((hello, held));

    let mut jobs = JoinSet::new();
    // A renewal being looked at (a store read, a signature): the session reads, delivers
    // commands and notices a revocation meanwhile, however slow the store is.
    let mut renewing: Option<Pin<Box<dyn Future<Output = Renewal> + Send + '_>>> = None;

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
            msg = reader.next::<Up>() => match msg {
                Some(Ok(msg)) => match control.receive(msg, now()) {
                    Ok(Inbound::Reply(down)) => {
                        if let Err(e) = send_down(&mut send, &down).await {
                            break Err(e);
                        }
                    }
                    Ok(Inbound::Status { capacity, draining }) => {
                        // A raised capacity allows more streams; a lowered one keeps them
                        // (jobs held beyond it still resume).
                        let wanted = tls::session_streams(capacity, 0);
                        if wanted > streams {
                            streams = wanted;
                            conn.set_max_concurrent_bi_streams(streams.into());
                        }
                        ctx.scheduler.send(Event::Status { agent: agent.id, session, capacity, draining });
                    }
                    // The machine lets one through at a time.
                    Ok(Inbound::Renew { csr_der }) => renewing = Some(Box::pin(renew(ctx, &agent, csr_der))),
                    // The Hello was taken above; a second one is an error from the machine.
                    Ok(Inbound::Hello { .. }) => {}
                    Err(e) => break Err(e.into()),
                },
                Some(Err(e)) => break Err(e.into()),
                None => break Err(conn.close_reason().map(SessionError::from).unwrap_or(SessionError::StreamClosed)),
            },
            Some(renewal) = OptionFuture::from(renewing.as_mut()), if renewing.is_some() => {
                renewing = None;
                let reply = control.renewal(renewal.answer);
                if let Err(e) = send_down(&mut send, &reply.down).await {
                    break Err(e);
                }
                // Recorded once it is on its way, beside the session (a slow store must not
                // stop it), and only while this session is the agent's latest: an answer
                // written is not an answer received, and an agent that comes back with its
                // old certificate has it recorded by its new session.
                if let Some(held) = renewal.held {
                    let (ctx, id, session) = (ctx.clone(), agent.id, session_name.clone());
                    jobs.spawn(async move {
                        if let Err(e) = ctx.store.set_agent_certificate(id, &held, Some(&session)).await {
                            tracing::warn!(agent = %id, error = %e, "cannot record a renewed certificate");
                        }
                    });
                }
                if let Some(e) = reply.then_close {
                    close_conn(conn, e.close_code(), &e.to_string());
                    break Err(e.into());
                }
            },
            stream = conn.accept_bi() => match stream {
                Ok((s, r)) => { jobs.spawn(opened(ctx.clone(), owner, s, r)); }
                Err(e) => break Err(e.into()),
            },

            Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
        }
    };
    // A renewal cut short is dropped now: no longer polled, it could still hold a pooled
    // connection (or its place in the pool's queue) through the shutdown below, which needs
    // the store too.
    drop(renewing);

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
    let _ = Box::pin(ctx.store.agent_disconnected(agent.id, &session_name)).await;
    audit(
        &ctx.store,
        &agent,
        "AGENT_DISCONNECTED",
        serde_json::json!({"controller": ctx.settings.controller_id}),
    )
    .await;
    end
}

/// A stream the agent opened: its first frame says whether it resumes a job or fetches a
/// revision.
async fn opened(
    ctx: Arc<Core>,
    owner: Owner,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    // `read_frame` takes exactly one frame, so the stream goes on from the next one.
    let first = tokio::time::timeout(
        OPENING_TIMEOUT,
        codec::read_frame::<_, StreamUp>(&mut recv, MAX_OPENING_FRAME),
    )
    .await;
    match first {
        Ok(Ok(Some(StreamUp::Resume {
            job,
            dispatch_id,
            acked_through,
            results_acked,
        }))) => {
            let resume = dispatch::Resume {
                job,
                dispatch_id,
                acked_through,
                results_acked,
            };
            dispatch::run_resumed(ctx, owner, send, recv, resume).await
        }
        Ok(Ok(Some(StreamUp::Fetch { digest, offset }))) => {
            crate::fetch::serve(&ctx.revisions, &ctx.settings.data_dir, send, digest, offset).await
        }
        other => {
            tracing::debug!(?other, "agent opened a stream without saying what for");
            let _ = send.reset(quinn::VarInt::from_u32(close::PROTOCOL));
        }
    }
}

async fn audit(store: &Store, agent: &Agent, action: &str, details: serde_json::Value) {
    let _ = Box::pin(store.record_audit(&crate::store::audit::NewAudit {
        actor: &crate::store::audit::Actor::system(),
        action,
        resource_type: "agent",
        resource_id: Some(agent.id.0),
        details: Some(details),
    }))
    .await;
}

/// A renewal's answer, and the certificate to record once the answer is sent.
struct Renewal {
    answer: RenewAnswer,
    held: Option<HeldCertificate>,
}

impl From<RenewAnswer> for Renewal {
    fn from(answer: RenewAnswer) -> Renewal {
        Renewal { answer, held: None }
    }
}

async fn renew(ctx: &Core, agent: &Agent, csr_der: Vec<u8>) -> Renewal {
    let uuid = agent.uuid.0;
    // Revocation is looked up afresh: a revoked agent gets no new certificate, whatever its
    // session still holds.
    match Box::pin(ctx.store.get_agent(agent.id)).await {
        Ok(a) if !a.revoked => {}
        Ok(_) => return RenewAnswer::Revoked.into(),
        Err(e) => {
            return RenewAnswer::Refused {
                reason: format!("cannot check the agent now: {e}"),
            }
            .into()
        }
    }
    match ctx
        .ca
        .sign_agent_csr(&csr_der, uuid, ctx.settings.agent_cert_lifetime)
    {
        Ok(cert) => {
            tracing::info!(agent = %agent.name, "certificate renewed");
            Renewal {
                held: crate::pki::held_certificate(&cert),
                answer: RenewAnswer::Renewed {
                    cert_chain_der: vec![cert.to_vec(), ctx.ca.cert_der().to_vec()],
                },
            }
        }
        Err(e) => RenewAnswer::Refused {
            reason: e.to_string(),
        }
        .into(),
    }
}
