//! `outpost-controller serve`: wires the store, the endpoints and the tasks together, and
//! shuts them down in order on SIGTERM (stop accepting, let job streams acknowledge what is
//! committed, drain ingest, close sessions with a reason, close the database).

use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::core::Core;
use crate::enroll::EnrollService;
use crate::pki::{self, PkiPaths};
use crate::session;
use crate::store::replica::{self, Replica};
use crate::store::{Store, StoreError};
use crate::{ingest, retention, scheduler};

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("PKI: {0}")]
    Pki(#[from] outpost_protocol::pki::PkiError),
    #[error("TLS: {0}")]
    Tls(#[from] outpost_protocol::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the API's certificate: {0}")]
    ApiCert(String),
    #[error(transparent)]
    Routes(#[from] crate::http::MissingRule),
    #[error(transparent)]
    Credentials(#[from] crate::credential::KeyCheckError),
    #[error("{0}")]
    Archive(String),
}

/// Agent handshakes in progress at once.
const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// Bound addresses, for callers that asked for port 0.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub agents: SocketAddr,
    pub enroll: SocketAddr,
    /// The HTTPS API and web UI (TCP).
    pub api: SocketAddr,
}

/// A UDP socket with a receive buffer big enough that bursts are not dropped before quinn
/// reads them (Linux's default is about 208 KB).
fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, ServeError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = |source| ServeError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(bind)?;
    let _ = socket.set_recv_buffer_size(8 * 1024 * 1024);
    let _ = socket.set_send_buffer_size(4 * 1024 * 1024);
    socket.bind(&addr.into()).map_err(bind)?;
    Ok(socket.into())
}

fn endpoint(
    addr: SocketAddr,
    config: quinn::ServerConfig,
    endpoint_config: quinn::EndpointConfig,
) -> Result<quinn::Endpoint, ServeError> {
    let bind = |source| ServeError::Bind { addr, source };
    let socket = crate::socket::SegmentCapped::wrap(udp_socket(addr)?).map_err(bind)?;
    quinn::Endpoint::new_with_abstract_socket(
        endpoint_config,
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind)
}

/// Watches a task the controller cannot work without: if it panics, the process exits with
/// status 70 so that systemd restarts it, rather than staying up and doing nothing.
fn supervised(
    name: &'static str,
    task: tokio::task::JoinHandle<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = task.await {
            if e.is_panic() {
                tracing::error!(task = name, "a long-lived task panicked; exiting so that the service manager restarts the controller");
                std::process::exit(70);
            }
        }
    })
}

/// The API's TLS configuration: the operator's certificate and key, or the controller's own
/// (issued by the Outpost CA, which the CLI trusts by fingerprint).
fn api_tls(
    settings: &Settings,
    pki: &crate::pki::ControllerPki,
) -> Result<rustls::ServerConfig, ServeError> {
    let (chain, key) = match (&settings.api_cert, &settings.api_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| ServeError::ApiCert(format!("cannot read {}: {e}", p.display())))
            };
            let chain = outpost_protocol::pki::certs_from_pem(&read(cert)?)
                .map_err(|e| ServeError::ApiCert(e.to_string()))?;
            let key = outpost_protocol::pki::private_key_from_pem(&read(key)?)
                .map_err(|e| ServeError::ApiCert(e.to_string()))?;
            (chain, key)
        }
        _ => (pki.chain.clone(), pki.server_key()?),
    };
    crate::http::tls_config(chain, key).map_err(|e| ServeError::ApiCert(e.to_string()))
}

/// Runs the controller until `stop` fires. `ready` is called once everything is up.
pub async fn serve(
    settings: Settings,
    stop: CancellationToken,
    ready: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    let settings = Arc::new(settings);
    let mut store = Store::connect(&settings.database_url, &settings.pool).await?;
    if settings.migrate_on_start {
        for m in store.migrate_up().await? {
            tracing::info!(version = m.version, description = %m.description, "migration applied");
        }
    }
    tracing::info!(store = %crate::store::redact_url(&settings.database_url), dialect = ?store.dialect(), "store opened");
    // The replica is not connected here: one that is down is bypassed until it answers, it
    // does not keep the controller down. Its monitor starts with the other tasks.
    if let Some(url) = &settings.read_database_url {
        let replica = Replica::open(url, &settings.pool, settings.read_replica_max_lag)?;
        tracing::info!(replica = %replica.target(), max_lag_secs = settings.read_replica_max_lag.as_secs(), "read replica configured");
        store = store.with_replica(replica)?;
    }
    // Work directories of syncs a crash interrupted: unpacked trees, and perhaps a git
    // credential's opened key (those older than a sync may run: another controller sharing
    // the data directory may be syncing now).
    match crate::project::sweep_work_dirs(&settings.data_dir, settings.project_sync_time_limit * 2)
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            dirs = n,
            "removed the work directories of interrupted syncs"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot clear the sync work directories"),
    }
    // Playbook rows made before projects become one-file projects (idempotent; a row whose
    // file is missing stays as it was, and still runs from its file).
    match crate::project::adopt_unadopted(&store, &settings.data_dir).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(playbooks = n, "playbooks adopted into one-file projects"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot adopt playbooks into projects; they still run from their files")
        }
    }
    // Sessions this controller held before it stopped are gone: their agents' grace periods
    // start now, kept in the database so that any controller settles them.
    let stale = store
        .sessions_of_controller_lost(&settings.controller_id)
        .await?;
    if stale > 0 {
        tracing::warn!(
            agents = stale,
            "agents held before a restart: waiting for them to come back"
        );
    }
    let pki_paths = PkiPaths::new(&settings.data_dir);
    let pki = pki::load(&pki_paths)?;
    // Before anything is served: the stored credentials must open with the keys on disk.
    let keyring = Arc::new(crate::credential::checked_keyring(&store, &pki_paths.dir).await?);
    tracing::info!(key = keyring.current_id(), "credentials key loaded");
    let timers = outpost_protocol::tls::Timers {
        idle_timeout: settings.idle_timeout,
        keep_alive: settings.idle_timeout / 3,
    };
    let agent_cfg = outpost_protocol::tls::agent_server_config(
        pki.ca.cert_der(),
        pki.chain.clone(),
        pki.server_key()?,
        timers,
    )?;
    let enroll_cfg =
        outpost_protocol::tls::enroll_server_config(pki.chain.clone(), pki.server_key()?, timers)?;
    let agents_ep = endpoint(settings.listen, agent_cfg, pki.quic_endpoint_config())?;
    let enroll_ep = endpoint(
        settings.enroll_listen,
        enroll_cfg,
        pki.quic_endpoint_config(),
    )?;
    let api_listener = tokio::net::TcpListener::bind(settings.api_listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: settings.api_listen,
            source,
        })?;
    let bound = Bound {
        agents: agents_ep.local_addr().map_err(|source| ServeError::Bind {
            addr: settings.listen,
            source,
        })?,
        enroll: enroll_ep.local_addr().map_err(|source| ServeError::Bind {
            addr: settings.enroll_listen,
            source,
        })?,
        api: api_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: settings.api_listen,
                source,
            })?,
    };
    let api_tls = api_tls(&settings, &pki)?;
    let bundle_origin = crate::bundle::Origin {
        names: pki.server_names(),
        agent_port: bound.agents.port(),
        enroll_port: bound.enroll.port(),
        ca_fingerprint: pki.ca.fingerprint(),
        agent_binary: settings.agent_binary.clone(),
    };
    let ca = Arc::new(pki.ca);

    // Ingest outlives the sessions: it gets its own token, fired after they are gone.
    let ingest_stop = CancellationToken::new();
    let (ingest, ingest_task) = ingest::spawn(store.clone(), ingest_stop.clone());
    let ingest_task = supervised("ingest", ingest_task);
    let (scheduler, scheduler_task) = scheduler::spawn(
        store.clone(),
        settings.clone(),
        keyring.clone(),
        stop.clone(),
    );
    let scheduler_task = supervised("scheduler", scheduler_task);
    let tasks = TaskTracker::new();
    tasks.spawn(crate::partitioner::run(store.clone(), stop.clone()));
    if let Some(r) = store.replica() {
        tasks.spawn(replica::monitor(r.clone(), stop.clone()));
    }
    let archive = crate::archive::Archive::new(&settings.archive)
        .map_err(|e| ServeError::Archive(e.to_string()))?;
    tasks.spawn(retention::run(
        store.clone(),
        retention::Policy {
            retention: settings.retention,
            audit_retention: settings.audit_retention,
            archive: archive.clone(),
        },
        stop.clone(),
    ));
    // The outbox worker: sends what committed transactions queued, also what was queued
    // before a crash or a kill.
    tasks.spawn(crate::notifier::run(
        crate::notifier::Worker {
            store: store.clone(),
            keyring: keyring.clone(),
            settings: settings.notifications.clone(),
            pki_dir: pki_paths.dir.clone(),
        },
        stop.clone(),
    ));
    let enroll = Arc::new(EnrollService::new(
        store.clone(),
        ca.clone(),
        settings.agent_cert_lifetime,
    ));
    tasks.spawn(enroll.serve(enroll_ep.clone(), stop.clone(), tasks.clone()));

    let core = Arc::new(Core::new(
        store.clone(),
        settings.clone(),
        scheduler,
        ingest,
        ca,
        keyring,
        bundle_origin,
        archive,
        stop.clone(),
    ));
    // Schedules fire from every controller; the claim in the database keeps each slot to one.
    tasks.spawn(crate::service::firing::run(core.clone()));
    let api_state = Arc::new(crate::http::WebState::new(
        core.clone(),
        vec![bound.agents, bound.enroll, bound.api],
    ));
    let api_edge = api_state.edge.clone();
    let api_app = crate::web::app(api_state)?;
    let api_task = supervised(
        "api",
        tokio::spawn(crate::http::serve(
            api_listener,
            api_tls,
            api_app,
            api_edge,
            stop.clone(),
            std::time::Duration::from_secs(5),
        )),
    );

    tracing::info!(agents = %bound.agents, enroll = %bound.enroll, api = %bound.api, controller = %settings.controller_id, "controller ready");
    ready(bound);

    let sessions = TaskTracker::new();
    // Handshakes are the costly part of a session: after a controller restart every agent
    // comes back at once, so only so many are done at a time and the excess is refused
    // cheaply (agents retry with jittered backoff).
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            incoming = agents_ep.accept() => match incoming {
                Some(i) => {
                    let Ok(slot) = handshakes.clone().try_acquire_owned() else {
                        crate::metrics::global().handshakes_refused.inc();
                        i.refuse();
                        continue;
                    };
                    sessions.spawn(session::handle(core.clone(), i, slot));
                }
                None => break,
            },
        }
    }
    tracing::info!("shutting down: draining sessions");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), api_task).await;
    drop(core);
    sessions.close();
    if tokio::time::timeout(settings.shutdown_timeout, sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("sessions did not finish in time");
    }
    ingest_stop.cancel();
    let _ = tokio::time::timeout(settings.shutdown_timeout, ingest_task).await;
    let _ = scheduler_task.await;
    tasks.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tasks.wait()).await;
    agents_ep.close(
        quinn::VarInt::from_u32(outpost_protocol::close::SHUTDOWN),
        b"controller shutting down",
    );
    enroll_ep.close(
        quinn::VarInt::from_u32(outpost_protocol::close::SHUTDOWN),
        b"controller shutting down",
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), agents_ep.wait_idle()).await;
    store.close().await;
    tracing::info!("controller stopped");
    Ok(())
}
