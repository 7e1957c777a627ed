//! Agent sessions: one task per connected agent. It checks who the peer is (by certificate,
//! never by address), reconciles the jobs the agent says it holds with the store, registers the
//! agent with the scheduler, and then serves the session stream (heartbeats, status, cancel
//! requests, certificate renewal) and the job streams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::codec;
use outpost_protocol::message::{Down, Hello, Up, Welcome};
use outpost_protocol::pki::{self, Ca};
use outpost_protocol::{close, tls};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Settings;
use crate::dispatch::{self, Owner};
use crate::ingest::IngestHandle;
use crate::lifecycle;
use crate::metrics;
use crate::model::{Agent, JobStatus};
use crate::scheduler::{AgentLink, Event, SchedulerHandle, SessionCommand};
use crate::store::agents::AgentPresence;
use crate::store::jobs::Outcome;
use crate::store::Store;

/// Session-stream messages are small; a renewal CSR is the largest.
const MAX_SESSION_FRAME: usize = 256 * 1024;

/// What every session shares.
pub struct SessionContext {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub scheduler: SchedulerHandle,
    pub ingest: IngestHandle,
    pub ca: Arc<Ca>,
    pub stop: CancellationToken,
    next_session: AtomicU64,
}

impl SessionContext {
    pub fn new(
        store: Store,
        settings: Arc<Settings>,
        scheduler: SchedulerHandle,
        ingest: IngestHandle,
        ca: Arc<Ca>,
        stop: CancellationToken,
    ) -> SessionContext {
        SessionContext {
            store,
            settings,
            scheduler,
            ingest,
            ca,
            stop,
            next_session: AtomicU64::new(1),
        }
    }
}

fn close_conn(conn: &quinn::Connection, code: u32, reason: &str) {
    conn.close(quinn::VarInt::from_u32(code), reason.as_bytes());
}

/// Runs one agent connection from handshake to close.
pub async fn handle(ctx: Arc<SessionContext>, incoming: quinn::Incoming) {
    let conn = match incoming.await {
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
    if let Err(reason) = run(&ctx, &conn, agent).await {
        tracing::info!(%reason, "agent session ended");
    }
}

async fn identify(ctx: &SessionContext, conn: &quinn::Connection) -> Result<Agent, (u32, String)> {
    let uuid = tls::peer_agent_uuid(conn).map_err(|e| (close::UNKNOWN_AGENT, e.to_string()))?;
    let agent = ctx
        .store
        .get_agent_by_uuid(&uuid.to_string())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound(_) => (
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

async fn run(
    ctx: &Arc<SessionContext>,
    conn: &quinn::Connection,
    agent: Agent,
) -> Result<(), String> {
    let (mut send, recv) = tokio::time::timeout(Duration::from_secs(10), conn.accept_bi())
        .await
        .map_err(|_| "no session stream".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut reader = codec::spawn_reader::<_, Up>(recv, MAX_SESSION_FRAME);
    let hello = match tokio::time::timeout(Duration::from_secs(10), reader.recv()).await {
        Ok(Some(Ok(Up::Hello(h)))) => h,
        other => {
            close_conn(conn, close::PROTOCOL, "expected Hello");
            return Err(format!("expected Hello, got {other:?}"));
        }
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
        close_conn(conn, close::VERSION, &reason);
        return Err(reason);
    }
    // More jobs than streams the connection allows would stall: hold the agent to the limit.
    let capacity = hello
        .capacity
        .clamp(1, outpost_protocol::MAX_AGENT_CAPACITY);
    let presence = AgentPresence {
        version: hello.agent_version.chars().take(50).collect(),
        hostname: hello.hostname.chars().take(255).collect(),
        ansible_version: hello.ansible_version.clone(),
        capacity: i32::try_from(capacity).unwrap_or(i32::MAX),
        controller: ctx.settings.controller_id.clone(),
        session: Uuid::new_v4().to_string(),
    };
    ctx.store
        .agent_connected(agent.id, &presence)
        .await
        .map_err(|e| e.to_string())?;
    let in_flight = reconcile(ctx, &agent, &hello)
        .await
        .map_err(|e| e.to_string())?;

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
        .map_err(|e| e.to_string())?;

    let session = ctx.next_session.fetch_add(1, Ordering::Relaxed);
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
    }));
    audit(
        &ctx.store,
        &agent,
        "AGENT_CONNECTED",
        serde_json::json!({"controller": ctx.settings.controller_id, "hostname": hello.hostname}),
    )
    .await;

    let mut jobs = JoinSet::new();

    let end: Result<(), String> = loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break Ok(()),
            reason = conn.closed() => break Err(format!("connection closed: {reason}")),
            cmd = commands.recv() => match cmd {
                Some(SessionCommand::Assign(d)) => {
                    jobs.spawn(dispatch::run_assigned(ctx.clone(), conn.clone(), owner, *d));
                }
                Some(SessionCommand::Cancel { job, reason }) => {
                    tracing::info!(%job, agent = %agent.name, "delivering a cancel request");
                    if let Err(e) = codec::write_frame(&mut send, &Down::Cancel { job, reason }, MAX_SESSION_FRAME).await {
                        break Err(e.to_string());
                    }
                }
                Some(SessionCommand::Close { code, reason }) => {
                    close_conn(conn, code, &reason);
                    break Err(reason);
                }
                None => break Ok(()),
            },
            msg = reader.recv() => match msg {
                Some(Ok(Up::Heartbeat { seq })) => {
                    if let Err(e) = codec::write_frame(&mut send, &Down::HeartbeatAck { seq }, MAX_SESSION_FRAME).await {
                        break Err(e.to_string());
                    }
                }
                Some(Ok(Up::Status(s))) => {
                    ctx.scheduler.send(Event::Status { agent: agent.id, session, capacity: s.capacity.clamp(1, outpost_protocol::MAX_AGENT_CAPACITY), draining: s.draining });
                }
                Some(Ok(Up::Renew { csr_der })) => {
                    let answer = renew(ctx, &agent, &csr_der).await;
                    if let Err(e) = codec::write_frame(&mut send, &answer, MAX_SESSION_FRAME).await {
                        break Err(e.to_string());
                    }
                }
                Some(Ok(Up::Hello(_))) => break Err("a second Hello".into()),
                Some(Err(e)) => {
                    close_conn(conn, close::PROTOCOL, "bad frame on the session stream");
                    break Err(e.to_string());
                }
                None => break Err("the agent closed its session stream".into()),
            },
            stream = conn.accept_bi() => match stream {
                Ok((s, r)) => { jobs.spawn(dispatch::run_resumed(ctx.clone(), owner, s, r)); }
                Err(e) => break Err(e.to_string()),
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

/// Squares the store with what the agent says it holds. Jobs it resumes stay with it; a job it
/// never started goes back to the queue; a job it ran but no longer knows fails. Returns how
/// many jobs the agent holds.
async fn reconcile(
    ctx: &SessionContext,
    agent: &Agent,
    hello: &Hello,
) -> crate::store::Result<u32> {
    let held = ctx.store.agent_active_jobs(agent.id).await?;
    let mut in_flight = 0;
    for job in held {
        let reported = hello.running.iter().any(|r| {
            r.job.to_string() == job.job_id
                && Some(r.dispatch_id.as_str()) == job.celery_task_id.as_deref()
        });
        if reported {
            in_flight += 1;
            continue;
        }
        match (job.status, job.celery_task_id.as_deref()) {
            (JobStatus::Pending, Some(dispatch)) => {
                ctx.store
                    .release_job(job.id, dispatch, "the agent reconnected without it")
                    .await?;
            }
            _ => {
                let outcome = Outcome {
                    status: JobStatus::Failed,
                    exit_code: None,
                    error_message: Some(format!(
                        "agent {} reconnected without this job (its spool was lost)",
                        agent.name
                    )),
                };
                lifecycle::finish(&ctx.store, &job, &outcome).await?;
            }
        }
    }
    Ok(in_flight)
}

async fn renew(ctx: &SessionContext, agent: &Agent, csr_der: &[u8]) -> Down {
    let Ok(uuid) = Uuid::parse_str(&agent.uuid) else {
        return Down::RenewRefused {
            reason: "agent uuid unreadable".into(),
        };
    };
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
