//! The HTTPS API (`/api/v1`), health and metrics, on axum over rustls.
//!
//! - [`auth`]: login, tokens and the authorization layer; [`roles`]: the one access table.
//! - One module per resource: [`users`], [`servers`], [`playbooks`], [`jobs`], [`logs`] (pages
//!   and live follow), [`tickets`], [`agents`], [`audit`]; [`health`] for probes and metrics.
//! - [`error`]: the JSON error body; [`views`]: records as the API shows them.
//!
//! The router is built with utoipa's, so the OpenAPI document is generated from the same
//! handlers that serve the routes, and every route must have a row in the access table. The
//! web UI's pages ([`crate::ui`]) are merged in beside it, behind their own session guard.

pub mod agents;
pub mod audit;
pub mod auth;
pub mod error;
pub mod health;
pub mod jobs;
pub mod logs;
pub mod playbooks;
pub mod roles;
pub mod servers;
pub mod tickets;
pub mod users;
pub mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Settings;
use crate::lifecycle::Lifecycle;
use crate::model::User;
use crate::scheduler::SchedulerHandle;
use crate::store::Store;

/// Request bodies are limited to this…
pub const MAX_BODY: usize = 1024 * 1024;
/// …except playbooks, which may be larger.
pub const MAX_PLAYBOOK_BODY: usize = 5 * 1024 * 1024;

/// What every handler shares.
pub struct ApiState {
    pub store: Store,
    pub lifecycle: Lifecycle,
    pub scheduler: SchedulerHandle,
    pub settings: Arc<Settings>,
    pub throttle: auth::Throttle,
    pub follow: logs::FollowHub,
    /// The web UI's dashboard figures, rendered once for every open dashboard.
    pub dashboard: crate::ui::dashboard::Feed,
    /// The Outpost CA's fingerprint, for enrolment tokens.
    pub ca_fingerprint: String,
    /// Where uploaded playbooks are kept.
    pub playbook_dir: PathBuf,
    pub stop: CancellationToken,
    pub http_metrics: health::HttpMetrics,
    /// The bound agent and enrolment addresses, for readiness.
    pub listeners: Vec<SocketAddr>,
    /// What install bundles made here carry and where they send agents.
    pub bundle_origin: crate::bundle::Origin,
    openapi: OnceLock<String>,
}

impl ApiState {
    pub fn new(
        store: Store,
        scheduler: SchedulerHandle,
        settings: Arc<Settings>,
        ca_fingerprint: String,
        listeners: Vec<SocketAddr>,
        bundle_origin: crate::bundle::Origin,
        stop: CancellationToken,
    ) -> ApiState {
        ApiState {
            lifecycle: Lifecycle::new(store.clone()),
            follow: logs::FollowHub::new(store.clone(), stop.clone()),
            dashboard: Default::default(),
            playbook_dir: settings.data_dir.join("playbooks"),
            store,
            scheduler,
            settings,
            throttle: auth::Throttle::default(),
            ca_fingerprint,
            stop,
            http_metrics: health::HttpMetrics::default(),
            listeners,
            bundle_origin,
            openapi: OnceLock::new(),
        }
    }

    /// Whether the user must change their password before anything else: an admin set it, or
    /// it is older than the maximum age.
    pub fn password_expired(&self, user: &User) -> bool {
        if user.must_change_password {
            return true;
        }
        if self.settings.password_max_age.is_zero() {
            return false;
        }
        let set = user.password_changed_at.unwrap_or(user.created_at);
        let age = chrono::Utc::now() - set;
        age.to_std().unwrap_or_default() > self.settings.password_max_age
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Outpost API",
        description = "Run Ansible across datacenters: servers, playbooks, jobs and their logs, tickets, agents, users and the audit trail."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and their OpenAPI document, before state and layers.
pub fn routes() -> (Router<Arc<ApiState>>, utoipa::openapi::OpenApi) {
    let playbooks = OpenApiRouter::new()
        .routes(routes!(playbooks::list, playbooks::create))
        .routes(routes!(
            playbooks::get,
            playbooks::update,
            playbooks::delete
        ))
        .layer(DefaultBodyLimit::max(MAX_PLAYBOOK_BODY));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::whoami))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update))
        .routes(routes!(users::password))
        .routes(routes!(servers::list, servers::create))
        .routes(routes!(servers::get, servers::update, servers::delete))
        .merge(playbooks)
        .routes(routes!(jobs::list, jobs::launch))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(logs::page))
        .routes(routes!(logs::stream))
        .routes(routes!(tickets::list, tickets::create))
        .routes(routes!(tickets::get, tickets::update))
        .routes(routes!(agents::list))
        .routes(routes!(agents::get))
        .routes(routes!(agents::revoke))
        .routes(routes!(agents::list_tokens, agents::create_token))
        .routes(routes!(agents::delete_token))
        .routes(routes!(agents::create_bundle))
        .routes(routes!(audit::list))
        .routes(routes!(health::openapi))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .split_for_parts()
}

/// Every (method, path) the OpenAPI document lists.
pub fn documented_routes(doc: &utoipa::openapi::OpenApi) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc.paths.paths.iter() {
        let methods = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("PATCH", item.patch.is_some()),
            ("DELETE", item.delete.is_some()),
        ];
        for (m, present) in methods {
            if present {
                out.push((m.to_owned(), path.clone()));
            }
        }
    }
    out
}

/// A route of the router that the access table does not cover.
#[derive(Debug, Error)]
#[error("route {method} {path} has no rule in the access table (http/roles.rs)")]
pub struct MissingRule {
    pub method: String,
    pub path: String,
}

/// The whole application: routes, the authorization layer, body limits, metrics, JSON 404s.
pub fn app(state: Arc<ApiState>) -> Result<Router, MissingRule> {
    let (router, doc) = routes();
    for (method, path) in documented_routes(&doc) {
        let m =
            axum::http::Method::from_bytes(method.as_bytes()).unwrap_or(axum::http::Method::GET);
        if roles::rule(&m, &path).is_none() {
            return Err(MissingRule { method, path });
        }
    }
    let _ = state
        .openapi
        .set(doc.to_json().unwrap_or_else(|_| "{}".into()));
    let api = router.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::authorize,
    ));
    Ok(api
        .merge(crate::ui::router(state.clone()))
        .fallback(|uri: axum::http::Uri| async move {
            use axum::response::IntoResponse;
            if uri.path().starts_with("/api/") {
                error::ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
                    .into_response()
            } else {
                crate::ui::layout::refusal(StatusCode::NOT_FOUND, "There is no such page.")
            }
        })
        .method_not_allowed_fallback(|| async {
            error::ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            health::observe,
        ))
        .with_state(state))
}

/// How the API presents itself: the operator's certificate, or the controller's own.
pub fn tls_config(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serves `app` over TLS on `listener` until `stop` fires, then lets requests in flight finish
/// (live log streams end with the stop signal) for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    stop: CancellationToken,
    grace: Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let connections = TaskTracker::new();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an API connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "API TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(auth::ClientAddr(peer));
                    let mut app = app.clone();
                    async move {
                        use tower::Service;
                        app.call(req.map(axum::body::Body::new)).await
                    }
                },
            );
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), connections.wait()).await;
}
