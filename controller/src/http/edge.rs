//! The API listener's defences against anonymous clients, who may open connections and send
//! anything before they are anyone:
//!
//! - [`Edge::admit`]: open connections are counted in total and per client address; beyond
//!   either cap a new connection is closed as soon as it is accepted, before a TLS handshake
//!   or a task is spent on it.
//! - [`drive`]: a connection must bring a request within the header timeout of its TLS
//!   handshake, and one with no request in flight for the idle timeout is closed. hyper's own
//!   header timeout (set by [`super::serve`]) closes a half-sent HTTP/1 head; this closes the
//!   rest — a client silent after TLS, a partial HTTP/2 preface (hyper's protocol detection
//!   waits for it with no timer), an HTTP/2 connection kept open with pings or half-sent
//!   HEADERS.
//! - [`hsts`]: every response says the API is HTTPS-only.
//!
//! What it counts is on `/metrics` ([`Edge::render`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::metrics::Counter;

/// How long a connection told to close (idle, or the controller stopping) has to finish what it
/// is doing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The edge's limits and what it counted, shared by the listener and `/metrics`.
pub struct Edge {
    header_timeout: Duration,
    idle_timeout: Duration,
    max_total: u32,
    max_per_address: u32,
    open: Mutex<Open>,
    refused_total: Counter,
    refused_address: Counter,
    timed_out: Counter,
}

#[derive(Default)]
struct Open {
    total: u32,
    // Only addresses with a connection open are kept, so this holds at most `max_total` keys.
    by_address: HashMap<IpAddr, u32>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `api_max_connections` are open.
    Total,
    /// `api_max_connections_per_address` are open from this client's address.
    Address,
}

/// One admitted connection; dropping it frees its place.
pub struct Permit {
    edge: Arc<Edge>,
    key: IpAddr,
}

/// The key a client is counted under: its IPv4 address, or the /64 of its IPv6 address (one
/// host commonly has a whole /64, and would otherwise have as many addresses as it likes).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Edge {
    pub fn new(settings: &Settings) -> Edge {
        Edge {
            header_timeout: settings.api_header_timeout,
            idle_timeout: settings.api_idle_timeout,
            max_total: settings.api_max_connections,
            max_per_address: settings.api_max_connections_per_address,
            open: Mutex::new(Open::default()),
            refused_total: Counter::default(),
            refused_address: Counter::default(),
            timed_out: Counter::default(),
        }
    }

    /// The time a client has to send a request head.
    pub fn header_timeout(&self) -> Duration {
        self.header_timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `peer`, unless the caps are reached.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, Refusal> {
        let key = address_key(peer);
        let mut open = self.lock();
        if open.total >= self.max_total {
            self.refused_total.inc();
            return Err(Refusal::Total);
        }
        let from_here = open.by_address.entry(key).or_insert(0);
        if *from_here >= self.max_per_address {
            self.refused_address.inc();
            return Err(Refusal::Address);
        }
        *from_here += 1;
        open.total += 1;
        Ok(Permit {
            edge: self.clone(),
            key,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> u32 {
        self.lock().total
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        format!(
            "# HELP outpost_api_connections_open Open connections to the HTTPS API.\n\
             # TYPE outpost_api_connections_open gauge\n\
             outpost_api_connections_open {}\n\
             # HELP outpost_api_connections_refused_total API connections closed as soon as accepted, by the cap that was reached.\n\
             # TYPE outpost_api_connections_refused_total counter\n\
             outpost_api_connections_refused_total{{reason=\"max_connections\"}} {}\n\
             outpost_api_connections_refused_total{{reason=\"max_connections_per_address\"}} {}\n\
             # HELP outpost_api_connections_timed_out_total API connections closed for not sending a request (or its head) in time, or for idling.\n\
             # TYPE outpost_api_connections_timed_out_total counter\n\
             outpost_api_connections_timed_out_total {}\n",
            self.open(),
            self.refused_total.get(),
            self.refused_address.get(),
            self.timed_out.get(),
        )
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.edge.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_address.remove(&self.key);
            }
        }
    }
}

/// Whether a connection has a request in flight, and since when it has had none.
#[derive(Default)]
pub struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    in_flight: usize,
    idle_since: Instant,
    served: bool,
}

impl Default for ActivityState {
    fn default() -> Self {
        ActivityState {
            in_flight: 0,
            idle_since: Instant::now(),
            served: false,
        }
    }
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request has come; it is in flight until the returned guard is dropped (with the
    /// response's body, see [`Tracked`]).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        {
            let mut s = self.lock();
            s.in_flight += 1;
            s.served = true;
        }
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// Resolves once the connection has gone without a request for too long: `first` from its
    /// start until its first request, `idle` with none in flight after that.
    async fn expired(&self, first: Duration, idle: Duration) {
        loop {
            // notify_one keeps a wake-up given while nobody waits, so a change between reading
            // the state and waiting is not missed.
            let deadline = {
                let s = self.lock();
                (s.in_flight == 0).then(|| s.idle_since + if s.served { idle } else { first })
            };
            match deadline {
                None => self.changed.notified().await,
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => {
                            let s = self.lock();
                            if s.in_flight == 0 && s.idle_since + if s.served { idle } else { first } <= Instant::now() {
                                return;
                            }
                        }
                        _ = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// A request in flight on its connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut s = self.0.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        }
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request in flight until it is sent (or dropped): a live log
/// stream is a request in flight for as long as it is followed.
pub struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl Tracked {
    pub fn new(body: Body, in_flight: InFlight) -> Tracked {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Runs one connection until it ends, it goes without a request too long (the header timeout
/// before its first, then the idle timeout with none in flight) or `stop` fires; then it is told
/// to close and given `CLOSE_GRACE`, 5 s (after `stop`: `grace`), to do so before it is dropped.
pub async fn drive<C>(
    conn: C,
    edge: &Edge,
    activity: &Activity,
    stop: &CancellationToken,
    grace: Duration,
) where
    C: GracefulConnection<Error = Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    let expired = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                if e.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_timeout()) {
                    // hyper's header timeout: a head not sent in time.
                    edge.timed_out.inc();
                }
                tracing::debug!(error = %e, "API connection ended with an error");
            }
            return;
        }
        _ = activity.expired(edge.header_timeout, edge.idle_timeout) => true,
        _ = stop.cancelled() => false,
    };
    if expired {
        edge.timed_out.inc();
    }
    conn.as_mut().graceful_shutdown();
    // What did not finish within the grace is dropped, which closes the socket.
    let grace = if expired { CLOSE_GRACE } else { grace };
    let _ = tokio::time::timeout(grace, conn.as_mut()).await;
}

/// Tells an HTTP/1 client to drop the connection when its request's body was not read to the
/// end: refused by its size (413), or answered before it was read (no session, no such route,
/// the wrong media type). hyper drains a small unread body to keep the connection, but gives up
/// on a larger one and closes the socket silently after the answer: a client that reused the
/// connection then saw its next request fail ("EOF occurred in violation of protocol",
/// "connection closed before message completed"). Said in the answer, the client opens a new
/// one instead.
pub async fn close_after_unread_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let http1 = req.version() <= axum::http::Version::HTTP_11;
    let (parts, body) = req.into_parts();
    let had_body = !hyper::body::Body::is_end_stream(&body);
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(!had_body));
    let body = Body::new(Watched {
        body,
        ended: ended.clone(),
    });
    let mut resp = next
        .run(axum::extract::Request::from_parts(parts, body))
        .await;
    if http1 && !ended.load(std::sync::atomic::Ordering::Acquire) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A request body that notes when it has been read to its end.
struct Watched {
    body: Body,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || this.body.is_end_stream() {
            this.ended.store(true, std::sync::atomic::Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Adds `Strict-Transport-Security` to every response: the API and UI are served over HTTPS
/// only, so a browser that once reached them should never try plain HTTP (where anyone on the
/// path could answer for them).
pub async fn hsts(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(total: u32, per_address: u32) -> Arc<Edge> {
        let mut s = Settings::new("sqlite://x".into(), "/tmp".into());
        s.api_max_connections = total;
        s.api_max_connections_per_address = per_address;
        Arc::new(Edge::new(&s))
    }

    #[test]
    fn connections_are_capped_per_address_and_in_total_and_freed_on_drop() {
        let e = edge(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = e.admit(a).unwrap();
        let _a2 = e.admit(a).unwrap();
        assert_eq!(e.admit(a).err(), Some(Refusal::Address));
        let _b1 = e.admit(b).unwrap();
        assert_eq!(e.admit(b).err(), Some(Refusal::Total));
        drop(a1);
        assert_eq!(e.open(), 2);
        let _a3 = e.admit(a).unwrap();
        let text = e.render();
        assert!(text.contains("outpost_api_connections_open 3\n"), "{text}");
        assert!(text.contains("reason=\"max_connections\"} 1\n"), "{text}");
        assert!(
            text.contains("reason=\"max_connections_per_address\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let e = edge(10, 1);
        let _first = e.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(
            e.admit("2001:db8:1:2:ffff::9".parse().unwrap()).err(),
            Some(Refusal::Address)
        );
        assert!(e.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
        // An IPv4 client on a dual-stack socket is the same client as over IPv4.
        let _v4 = e.admit("::ffff:192.0.2.7".parse().unwrap()).unwrap();
        assert_eq!(
            e.admit("192.0.2.7".parse().unwrap()).err(),
            Some(Refusal::Address)
        );
        assert!(e.lock().by_address.len() <= 3);
    }

    #[tokio::test]
    async fn a_connection_expires_only_with_no_request_in_flight() {
        let first = Duration::from_millis(200);
        let idle = Duration::from_millis(500);
        let near = |took: Duration, want: Duration| {
            assert!(
                took >= want && took < want + Duration::from_millis(150),
                "took {took:?}, wanted {want:?}"
            )
        };
        let a = Arc::new(Activity::default());
        // No request at all: the header timeout.
        let start = Instant::now();
        a.expired(first, idle).await;
        near(start.elapsed(), first);
        // A request in flight for longer than both: not expired until it ends, then the idle
        // timeout from its end.
        let req = a.begin();
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move {
                a.expired(first, idle).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!waiting.is_finished());
        let ended = Instant::now();
        drop(req);
        near(waiting.await.unwrap() - ended, idle);
    }
}
