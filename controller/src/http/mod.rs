//! The HTTPS API (`/api/v1`), health and metrics, on axum over rustls.
//!
//! - [`auth`]: login, tokens and the authorization layer; the one access table is [`crate::service::access`].
//! - One module per resource: [`users`], [`servers`], [`playbooks`], [`projects`], [`credentials`], [`templates`], [`notifications`], [`jobs`], [`runs`], [`logs`] (pages
//!   and live follow, counted and ended with their session by [`live`]), [`tickets`], [`agents`], [`audit`]; [`health`] for probes and metrics.
//! - [`error`]: the JSON error body; [`views`]: records as the API shows them; [`openapi`]: the
//!   document's header and the error responses every operation gets from its route.
//! - [`edge`]: what an anonymous client may hold — connections per address and in total, the
//!   header and idle timeouts ([`serve`]) — and HSTS on every answer.
//!
//! The router is built with utoipa's, so the OpenAPI document is generated from the same
//! handlers that serve the routes, and every route must have a row in the access table. The
//! web UI's pages are put beside it by [`crate::web`], which imports both; nothing here
//! imports the UI.

pub mod agents;
pub mod audit;
pub mod auth;
pub mod credentials;
pub mod download;
pub mod edge;
pub mod error;
pub mod health;
pub mod jobs;
pub mod live;
pub mod logs;
pub mod notifications;
pub mod openapi;
pub mod playbooks;
pub mod projects;
pub mod runs;
pub mod schedules;
pub mod servers;
pub mod templates;
pub mod tickets;
pub mod users;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::core::Core;

/// Request bodies are limited to this…
pub const MAX_BODY: usize = 1024 * 1024;
/// …except playbooks, which may be larger.
pub const MAX_PLAYBOOK_BODY: usize = 5 * 1024 * 1024;

/// What the HTTPS port's handlers and pages share: the controller's [`Core`] and what belongs
/// to the port alone (live streams, metrics, connection caps).
pub struct WebState {
    pub core: Arc<Core>,
    pub follow: logs::FollowHub,
    /// Open live streams, capped, each ended with its session.
    pub live: live::LiveStreams,
    /// The web UI's dashboard figures, rendered once for every open dashboard.
    pub dashboard: live::SharedFeed,
    /// The dashboard's charts, rendered at most every few seconds however many watch.
    pub trends: RenderCache,
    /// The dashboard's figures, reused by page loads for as long as the live feed waits
    /// between two renderings of them (see [`crate::ui::dashboard`]).
    pub figures: RenderCache,
    pub http_metrics: health::HttpMetrics,
    /// The listener's connection caps and timeouts, and what they counted.
    pub edge: Arc<edge::Edge>,
    /// The bound agent and enrolment addresses, for readiness.
    pub listeners: Vec<SocketAddr>,
    openapi: OnceLock<String>,
}

impl WebState {
    pub fn new(core: Arc<Core>, listeners: Vec<SocketAddr>) -> WebState {
        let edge = Arc::new(edge::Edge::new(&core.settings));
        WebState {
            follow: logs::FollowHub::new(core.store.clone(), core.stop.clone()),
            live: live::LiveStreams::new(core.store.clone(), core.stop.clone()),
            dashboard: Default::default(),
            trends: Default::default(),
            figures: Default::default(),
            http_metrics: health::HttpMetrics::default(),
            edge,
            listeners,
            openapi: OnceLock::new(),
            core,
        }
    }
}

/// The routes and their OpenAPI document, before state and layers.
pub fn routes() -> (Router<Arc<WebState>>, utoipa::openapi::OpenApi) {
    let playbooks = OpenApiRouter::new()
        .routes(routes!(playbooks::list, playbooks::create))
        .routes(routes!(
            playbooks::get,
            playbooks::update,
            playbooks::delete
        ))
        .layer(DefaultBodyLimit::max(MAX_PLAYBOOK_BODY));
    let (router, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::whoami))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update))
        .routes(routes!(users::password))
        .routes(routes!(servers::list, servers::create))
        .routes(routes!(servers::get, servers::update, servers::delete))
        .merge(playbooks)
        .routes(routes!(projects::list, projects::create))
        .routes(routes!(projects::get, projects::update, projects::delete))
        .routes(routes!(projects::sync))
        .merge(
            // The upload enforces its own limit (a setting) while it streams to disk.
            OpenApiRouter::new()
                .routes(routes!(projects::upload))
                .layer(DefaultBodyLimit::disable()),
        )
        .routes(routes!(projects::revisions))
        .routes(routes!(projects::files))
        .routes(routes!(credentials::list, credentials::create))
        .routes(routes!(
            credentials::get,
            credentials::update,
            credentials::delete
        ))
        .routes(routes!(templates::list, templates::create))
        .routes(routes!(
            templates::get,
            templates::update,
            templates::delete
        ))
        .routes(routes!(templates::launch))
        .routes(routes!(
            notifications::list_channels,
            notifications::create_channel
        ))
        .routes(routes!(
            notifications::get_channel,
            notifications::update_channel,
            notifications::delete_channel
        ))
        .routes(routes!(notifications::test_channel))
        .routes(routes!(
            notifications::list_rules,
            notifications::create_rule
        ))
        .routes(routes!(notifications::delete_rule))
        .routes(routes!(notifications::deliveries))
        .routes(routes!(jobs::list, jobs::launch))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::results))
        .routes(routes!(jobs::run_results))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::approve))
        .routes(routes!(runs::relaunch))
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
        .routes(routes!(schedules::list, schedules::create))
        .routes(routes!(schedules::preview))
        .routes(routes!(
            schedules::get,
            schedules::update,
            schedules::delete
        ))
        .routes(routes!(schedules::runs))
        .routes(routes!(
            schedules::list_blackouts,
            schedules::create_blackout
        ))
        .routes(routes!(schedules::get_blackout, schedules::delete_blackout))
        .routes(routes!(audit::list))
        .routes(routes!(health::openapi))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .split_for_parts();
    // After the merge: only now does the document hold the operations to walk.
    utoipa::Modify::modify(&openapi::ErrorResponses, &mut doc);
    (router, doc)
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
#[error("route {method} {path} has no rule in the access table (service/access.rs)")]
pub struct MissingRule {
    pub method: String,
    pub path: String,
}

/// The API's routes behind the authorization layer, each checked against the access table;
/// [`crate::web::app`] puts them on the port beside the web UI.
pub fn api(state: Arc<WebState>) -> Result<Router<Arc<WebState>>, MissingRule> {
    let (router, doc) = routes();
    for (method, path) in documented_routes(&doc) {
        let m =
            axum::http::Method::from_bytes(method.as_bytes()).unwrap_or(axum::http::Method::GET);
        if crate::service::access::rule(&m, &path).is_none() {
            return Err(MissingRule { method, path });
        }
    }
    let _ = state
        .openapi
        .set(doc.to_json().unwrap_or_else(|_| "{}".into()));
    Ok(router.layer(axum::middleware::from_fn_with_state(state, auth::authorize)))
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

/// HTTP/2 connections are pinged this often while open, and closed when a ping is not
/// answered in [`H2_PING_TIMEOUT`]: a vanished peer (a laptop closed on a live log) is noticed
/// without waiting for TCP to give up.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest HTTP/1 request head (and read buffer) a connection may hold: hyper's default,
/// about 400 KiB, times `api_max_connections` half-sent heads would be gigabytes. Browsers
/// and the CLI send a few KiB; HTTP/2 heads are limited to 16 KiB by hyper already.
const H1_MAX_BUF: usize = 64 * 1024;

/// Serves `app` over TLS on `listener` until `stop` fires, then lets requests in flight finish
/// (live log streams end with the stop signal) for up to `grace`.
///
/// Each connection is first admitted by `edge` (its caps, before TLS), then must send a
/// request head within the header timeout, and is closed when idle (see [`edge`]).
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    app: Router,
    edge: Arc<edge::Edge>,
    stop: CancellationToken,
    grace: Duration,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let connections = TaskTracker::new();
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
        // Responses leave as a few TLS records: with Nagle on, the last one waits for the
        // client's delayed ACK (40 ms on Linux), which was the whole p99 of the log page.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY on an API connection");
        }
        // Dropping the socket closes it: a refused client costs no handshake and no task.
        let permit = match edge.admit(peer.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "API connection refused: too many open");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let edge = edge.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "API TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "API TLS handshake not done within 10 s");
                        return;
                    }
                };
            let activity = Arc::new(edge::Activity::default());
            let service = {
                let activity = activity.clone();
                hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(auth::ClientAddr(peer));
                    let in_flight = activity.begin();
                    let mut app = app.clone();
                    async move {
                        use tower::Service;
                        let resp = app.call(req.map(axum::body::Body::new)).await;
                        resp.map(|r| r.map(|body| edge::Tracked::new(body, in_flight)))
                    }
                })
            };
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // hyper applies a header timeout only with a timer; without one a half-sent head
            // held the connection for as long as the client liked.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(edge.header_timeout())
                .max_buf_size(H1_MAX_BUF);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(H2_PING_INTERVAL)
                .keep_alive_timeout(H2_PING_TIMEOUT);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            edge::drive(conn, &edge, &activity, &stop, grace).await;
        });
    }
    drop(listener);
    connections.close();
    // Each connection has `grace` from the stop signal to finish; one more second for the
    // tasks to end.
    let _ = tokio::time::timeout(grace + Duration::from_secs(1), connections.wait()).await;
}

/// A rendered fragment and when it was made, shared by every page that shows it and renewed
/// off the request path: a request that finds it a little old shows it as it is and has one
/// rendering started in the background, so that page loads never wait for the aggregates
/// behind it while someone keeps looking.
#[derive(Debug, Default)]
pub struct RenderCache(std::sync::Mutex<Rendering>);

#[derive(Debug, Default)]
struct Rendering {
    kept: Option<(Instant, String)>,
    /// When a background rendering was handed out; one that has not come back within
    /// [`RenderCache::CLAIM_LAPSES`] (it failed, or its task died) is handed out again.
    claimed: Option<Instant>,
}

/// What a [`RenderCache`] has for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached {
    /// Young enough to show as it is.
    Fresh(String),
    /// Older than it should be but still fit to show: show it, and render it again without
    /// waiting, then [`RenderCache::keep`] it: this caller was chosen to do so, no one else is.
    Renew(String),
    /// Nothing fit to show: render it now.
    Missing,
}

impl RenderCache {
    const CLAIM_LAPSES: Duration = Duration::from_secs(60);

    /// The fragment, if it was rendered less than `max_age` ago.
    pub fn fresh(&self, max_age: Duration) -> Option<String> {
        match self.take(max_age, max_age) {
            Cached::Fresh(html) => Some(html),
            _ => None,
        }
    }

    /// The fragment for a request: fresh while younger than `fresh_for`, to be renewed while
    /// younger than `shown_for`, missing when older.
    pub fn take(&self, fresh_for: Duration, shown_for: Duration) -> Cached {
        self.take_at(Instant::now(), fresh_for, shown_for)
    }

    fn take_at(&self, now: Instant, fresh_for: Duration, shown_for: Duration) -> Cached {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some((at, html)) = r.kept.as_ref() else {
            return Cached::Missing;
        };
        let age = now.saturating_duration_since(*at);
        if age < fresh_for {
            return Cached::Fresh(html.clone());
        }
        if age >= shown_for {
            return Cached::Missing;
        }
        let html = html.clone();
        let claim_free = r
            .claimed
            .is_none_or(|c| now.saturating_duration_since(c) >= Self::CLAIM_LAPSES);
        if claim_free {
            r.claimed = Some(now);
            Cached::Renew(html)
        } else {
            Cached::Fresh(html)
        }
    }

    pub fn keep(&self, html: &str) {
        let mut r = self.0.lock().unwrap_or_else(|p| p.into_inner());
        r.kept = Some((Instant::now(), html.to_owned()));
        r.claimed = None;
    }

    /// A background rendering failed: the next request may start another.
    pub fn release(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).claimed = None;
    }
}

/// The fragment that `cache` (one of `st`'s) holds, renewed in the background as
/// [`RenderCache::take`] says, or rendered now when nothing is fit to show.
pub async fn rendered<R, Fut>(
    st: &Arc<WebState>,
    cache: fn(&WebState) -> &RenderCache,
    fresh_for: Duration,
    shown_for: Duration,
    render: R,
) -> Result<maud::Markup, crate::store::StoreError>
where
    R: FnOnce(Arc<WebState>) -> Fut,
    Fut: std::future::Future<Output = Result<maud::Markup, crate::store::StoreError>>
        + Send
        + 'static,
{
    match cache(st).take(fresh_for, shown_for) {
        Cached::Fresh(html) => Ok(maud::PreEscaped(html)),
        Cached::Renew(html) => {
            let again = render(st.clone());
            let st = st.clone();
            tokio::spawn(async move {
                match again.await {
                    Ok(m) => cache(&st).keep(&m.0),
                    Err(e) => {
                        tracing::warn!(error = %e, "rendering a dashboard fragment");
                        cache(&st).release();
                    }
                }
            });
            Ok(maud::PreEscaped(html))
        }
        Cached::Missing => {
            let m = render(st.clone()).await?;
            cache(st).keep(&m.0);
            Ok(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_render_cache_hands_out_one_renewal_at_a_time() {
        let c = RenderCache::default();
        let (fresh, shown) = (Duration::from_secs(2), Duration::from_secs(30));
        assert_eq!(c.take_at(Instant::now(), fresh, shown), Cached::Missing);
        c.keep("a");
        let kept = c.0.lock().unwrap().kept.as_ref().unwrap().0;
        assert_eq!(c.take_at(kept, fresh, shown), Cached::Fresh("a".into()));
        let old = kept + Duration::from_secs(5);
        assert_eq!(c.take_at(old, fresh, shown), Cached::Renew("a".into()));
        // Someone renews it already: the others show it and wait for nothing.
        assert_eq!(c.take_at(old, fresh, shown), Cached::Fresh("a".into()));
        // A renewal that never came back is handed out again…
        let lapsed = old + RenderCache::CLAIM_LAPSES;
        let long = Duration::from_secs(600);
        assert_eq!(c.take_at(lapsed, fresh, long), Cached::Renew("a".into()));
        // …as is one that failed.
        c.release();
        assert_eq!(c.take_at(old, fresh, shown), Cached::Renew("a".into()));
        // Too old to show at all.
        assert_eq!(c.take_at(kept + shown, fresh, shown), Cached::Missing);
        c.keep("b");
        assert!(c.0.lock().unwrap().claimed.is_none());
        assert_eq!(c.fresh(fresh), Some("b".into()));
    }
}
