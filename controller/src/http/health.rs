//! Probes and numbers: `/healthz` (the process answers), `/readyz` (database reachable,
//! migrations applied, listeners bound; the read replica's state, if there is one), `/metrics` (Prometheus text: the controller's
//! counters, HTTP request counts and latencies by method, route and status, and the API's
//! connections), and the OpenAPI document.
//!
//! Every label value comes from a fixed set, never from what a client sent: anyone may send
//! requests, so a label taken from the request would let them grow `/metrics` (and this
//! process's memory) without end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use outpost_api::Health;

use super::error::Json;
use super::WebState;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Request counts and latency histograms by (method, route, status).
#[derive(Default)]
pub struct HttpMetrics {
    series: Mutex<BTreeMap<(String, String, u16), Series>>,
}

#[derive(Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

impl HttpMetrics {
    pub fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = map
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default();
        s.count += 1;
        s.sum += seconds;
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                s.buckets[i] += 1;
            }
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::from(
            "# HELP outpost_http_requests_total HTTP requests by route and status.\n# TYPE outpost_http_requests_total counter\n",
        );
        for ((m, r, st), s) in map.iter() {
            out.push_str(&format!(
                "outpost_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{st}\"}} {}\n",
                s.count
            ));
        }
        out.push_str("# HELP outpost_http_request_duration_seconds HTTP request latency.\n# TYPE outpost_http_request_duration_seconds histogram\n");
        for ((m, r, st), s) in map.iter() {
            let labels = format!("method=\"{m}\",route=\"{r}\",status=\"{st}\"");
            for (i, le) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "outpost_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}\n",
                    s.buckets[i]
                ));
            }
            out.push_str(&format!(
                "outpost_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n",
                s.count
            ));
            out.push_str(&format!(
                "outpost_http_request_duration_seconds_sum{{{labels}}} {}\n",
                s.sum
            ));
            out.push_str(&format!(
                "outpost_http_request_duration_seconds_count{{{labels}}} {}\n",
                s.count
            ));
        }
        out
    }
}

/// The method's label: a standard method by its name, any other (HTTP allows any token, of any
/// length) as `OTHER`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts and times every request by its method's label and its route template (never the raw
/// path: ids would make a series each, and anyone could make up paths); a request no route
/// matched is `unmatched`.
pub async fn observe(
    State(st): State<Arc<WebState>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = matched
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    st.http_metrics.record(
        method,
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// GET /healthz: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: BTreeMap::new(),
    })
}

/// How long each of `/readyz`'s database checks may take. Without a bound of their own they
/// would wait out the pool's acquire timeout (30 s by default) when the database is down, and a
/// probe gives up long before that (Kubernetes' default is 1 s, rarely set above 5 s): it would
/// see a timeout instead of a 503 that says why. Short, but roomy for a round trip on a
/// loaded database; `/readyz` answers within about twice this.
const READY_DEADLINE: Duration = Duration::from_secs(2);

/// GET /readyz: the database answers, every migration is applied, the listeners are bound.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(st): State<Arc<WebState>>) -> Response {
    let mut checks = BTreeMap::new();
    let mut ready = true;
    let reachable = match st.core.store.ping_within(READY_DEADLINE).await {
        Ok(()) => {
            checks.insert("database".into(), "ok".into());
            true
        }
        Err(e) => {
            ready = false;
            checks.insert("database".into(), format!("unreachable: {e}"));
            false
        }
    };
    // Without the database the migrations cannot be read: asking would only wait again.
    let migrations = if reachable {
        tokio::time::timeout(READY_DEADLINE, st.core.store.applied_migrations())
            .await
            .map_err(|_| format!("unknown: no answer within {READY_DEADLINE:?}"))
            .and_then(|r| r.map_err(|e| format!("unknown: {e}")))
    } else {
        Err("skipped: database unreachable".to_owned())
    };
    match migrations {
        Ok(applied) if applied.len() >= st.core.store.known_migrations() => {
            checks.insert("migrations".into(), format!("{} applied", applied.len()));
        }
        Ok(applied) => {
            ready = false;
            checks.insert(
                "migrations".into(),
                format!(
                    "{} of {} applied: run outpost-controller migrate",
                    applied.len(),
                    st.core.store.known_migrations()
                ),
            );
        }
        Err(why) => {
            ready = false;
            checks.insert("migrations".into(), why);
        }
    }
    // A replica that is bypassed costs the primary some load, not readiness: said, not counted.
    if let Some(r) = st.core.store.replica() {
        checks.insert("replica".into(), r.describe());
    }
    let listeners: Vec<String> = st.listeners.iter().map(|a| a.to_string()).collect();
    checks.insert("listeners".into(), listeners.join(", "));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if ready { "ready" } else { "not ready" }.into(),
        checks,
    };
    (status, axum::Json(body)).into_response()
}

/// GET /metrics: Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(st): State<Arc<WebState>>) -> Response {
    let mut text = crate::metrics::global().render();
    text.push_str(&st.http_metrics.render());
    text.push_str(&st.edge.render());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// GET /api/v1/openapi.json: the API's description, generated from its handlers.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi(State(st): State<Arc<WebState>>) -> Response {
    let doc = st.openapi.get().cloned().unwrap_or_else(|| "{}".into());
    ([(header::CONTENT_TYPE, "application/json")], doc).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_with_a_histogram() {
        let m = HttpMetrics::default();
        m.record("GET", "/api/v1/jobs", 200, 0.003);
        m.record("GET", "/api/v1/jobs", 200, 0.2);
        let text = m.render();
        assert!(text.contains(
            "outpost_http_requests_total{method=\"GET\",route=\"/api/v1/jobs\",status=\"200\"} 2"
        ));
        assert!(text.contains("le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2\n"));
    }

    #[test]
    fn only_standard_methods_are_labelled_by_name() {
        for m in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            assert_eq!(method_label(&Method::from_bytes(m.as_bytes()).unwrap()), m);
        }
        for m in ["CONNECT", "TRACE", "PROPFIND", "get", &"X".repeat(8192)] {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "OTHER", "{}", &m[..m.len().min(10)]);
        }
    }
}
