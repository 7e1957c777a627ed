//! Who may see which page: the session cookie (set by [`super::account`]), the CSRF token
//! every form carries, and for each page the API route whose rule it follows — so a page is
//! never more open than the API it uses, and the API's one access table stays the only one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::layout;
use super::viewer::Viewer;
use crate::http::auth;
use crate::http::{WebState, MAX_BODY, MAX_PLAYBOOK_BODY};
use crate::service;
use crate::service::access::{self as roles, Access};

/// What a page needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Anyone (the sign-in page, the stylesheet and script).
    Public,
    /// Any signed-in user, even one who must change their password first.
    Session,
    /// What this API route needs (method, path template as in the API's table).
    Api(&'static str, &'static str),
}

use Needs::{Api, Public, Session};

/// (method, page, what it needs). Paths are written as the router writes them.
pub const PAGES: &[(&str, &str, Needs)] = &[
    ("GET", "/static/{file}", Public),
    ("GET", "/login", Public),
    ("POST", "/login", Public),
    ("POST", "/logout", Session),
    ("GET", "/account/password", Session),
    ("POST", "/account/password", Session),
    ("GET", "/", Api("GET", "/api/v1/jobs")),
    ("GET", "/events/dashboard", Api("GET", "/api/v1/jobs")),
    ("GET", "/jobs", Api("GET", "/api/v1/jobs")),
    ("POST", "/jobs", Api("POST", "/api/v1/jobs")),
    ("GET", "/jobs/new", Api("POST", "/api/v1/jobs")),
    ("GET", "/jobs/preview", Api("GET", "/api/v1/servers")),
    ("GET", "/jobs/{job_id}", Api("GET", "/api/v1/jobs/{job_id}")),
    (
        "POST",
        "/jobs/{job_id}/cancel",
        Api("POST", "/api/v1/jobs/{job_id}/cancel"),
    ),
    (
        "GET",
        "/jobs/{job_id}/log.txt",
        Api("GET", "/api/v1/jobs/{job_id}/logs"),
    ),
    ("GET", "/runs", Api("GET", "/api/v1/runs")),
    ("GET", "/runs/{run_id}", Api("GET", "/api/v1/runs/{run_id}")),
    (
        "GET",
        "/events/runs/{run_id}",
        Api("GET", "/api/v1/runs/{run_id}"),
    ),
    (
        "POST",
        "/runs/{run_id}/cancel",
        Api("POST", "/api/v1/runs/{run_id}/cancel"),
    ),
    (
        "POST",
        "/runs/{run_id}/approve",
        Api("POST", "/api/v1/runs/{run_id}/approve"),
    ),
    (
        "POST",
        "/runs/{run_id}/relaunch",
        Api("POST", "/api/v1/runs/{run_id}/relaunch"),
    ),
    ("GET", "/templates", Api("GET", "/api/v1/templates")),
    ("POST", "/templates", Api("POST", "/api/v1/templates")),
    ("GET", "/templates/new", Api("POST", "/api/v1/templates")),
    (
        "GET",
        "/templates/{id}/launch",
        Api("POST", "/api/v1/templates/{id_or_name}/launch"),
    ),
    (
        "POST",
        "/templates/{id}/launch",
        Api("POST", "/api/v1/templates/{id_or_name}/launch"),
    ),
    (
        "GET",
        "/templates/{id}/edit",
        Api("PUT", "/api/v1/templates/{id_or_name}"),
    ),
    (
        "POST",
        "/templates/{id}/edit",
        Api("PUT", "/api/v1/templates/{id_or_name}"),
    ),
    ("GET", "/servers", Api("GET", "/api/v1/servers")),
    ("GET", "/agents", Api("GET", "/api/v1/agents")),
    (
        "POST",
        "/agents/{id}/revoke",
        Api("POST", "/api/v1/agents/{id}/revoke"),
    ),
    (
        "POST",
        "/agents/tokens",
        Api("POST", "/api/v1/enrollment-tokens"),
    ),
    (
        "POST",
        "/agents/bundles",
        Api("POST", "/api/v1/agent-bundles"),
    ),
    ("GET", "/playbooks", Api("GET", "/api/v1/playbooks")),
    (
        "GET",
        "/playbooks/{id}",
        Api("GET", "/api/v1/playbooks/{id}"),
    ),
    (
        "POST",
        "/playbooks/{id}",
        Api("PATCH", "/api/v1/playbooks/{id}"),
    ),
    ("GET", "/projects", Api("GET", "/api/v1/projects")),
    ("GET", "/projects/{id}", Api("GET", "/api/v1/projects/{id}")),
    (
        "POST",
        "/projects/{id}/sync",
        Api("POST", "/api/v1/projects/{id}/sync"),
    ),
    ("GET", "/tickets", Api("GET", "/api/v1/tickets")),
    (
        "POST",
        "/tickets/{ticket_id}",
        Api("PATCH", "/api/v1/tickets/{ticket_id}"),
    ),
    ("GET", "/users", Api("GET", "/api/v1/users")),
    ("POST", "/users", Api("POST", "/api/v1/users")),
    ("POST", "/users/{id}", Api("PATCH", "/api/v1/users/{id}")),
    ("GET", "/audit", Api("GET", "/api/v1/audit")),
    ("GET", "/schedules", Api("GET", "/api/v1/schedules")),
    ("POST", "/schedules", Api("POST", "/api/v1/schedules")),
    (
        "POST",
        "/schedules/preview",
        Api("POST", "/api/v1/schedules/preview"),
    ),
    (
        "GET",
        "/schedules/{id}",
        Api("GET", "/api/v1/schedules/{id}"),
    ),
    ("POST", "/blackouts", Api("POST", "/api/v1/blackouts")),
    (
        "POST",
        "/blackouts/{id}/delete",
        Api("DELETE", "/api/v1/blackouts/{id}"),
    ),
    (
        "GET",
        "/admin/credentials",
        Api("GET", "/api/v1/credentials"),
    ),
    (
        "POST",
        "/admin/credentials",
        Api("POST", "/api/v1/credentials"),
    ),
    (
        "GET",
        "/admin/credentials/{id}",
        Api("GET", "/api/v1/credentials/{id}"),
    ),
    (
        "POST",
        "/admin/credentials/{id}",
        Api("PATCH", "/api/v1/credentials/{id}"),
    ),
    (
        "POST",
        "/admin/credentials/{id}/delete",
        Api("DELETE", "/api/v1/credentials/{id}"),
    ),
    (
        "GET",
        "/admin/notifications",
        Api("GET", "/api/v1/notifications/deliveries"),
    ),
    (
        "POST",
        "/admin/notifications/channels/{id}/test",
        Api("POST", "/api/v1/notifications/channels/{id}/test"),
    ),
];

/// What a page needs, if it is in the table.
pub fn needs(method: &Method, path: &str) -> Option<Needs> {
    PAGES
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, n)| *n)
}

/// Headers every page carries: no script but ours, no framing, no sniffing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn harden(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The `_csrf` field of a URL-encoded form body.
fn form_csrf(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v.into_owned())
}

/// The guard in front of every page: finds the page's rule, the session and its user, checks
/// the form's CSRF token on every POST, the password policy and the role, and puts the
/// [`Viewer`] on the request.
pub async fn guard(
    State(st): State<Arc<WebState>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    harden(check(st, matched, req, next).await)
}

async fn check(
    st: Arc<WebState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(path) = matched.map(|m| m.as_str().to_owned()) else {
        return next.run(req).await;
    };
    let Some(need) = needs(req.method(), &path) else {
        tracing::error!(method = %req.method(), %path, "a page without an access rule");
        return layout::refusal(StatusCode::FORBIDDEN, "This page has no access rule.");
    };
    let post = req.method() == Method::POST;
    if post {
        // A browser says where a request comes from; refuse what another site sent.
        let site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok());
        if site.is_some_and(|s| s != "same-origin" && s != "none") {
            return layout::refusal(
                StatusCode::FORBIDDEN,
                "This form was sent from another site.",
            );
        }
    }
    if need == Public {
        return next.run(req).await;
    }
    let token = auth::session_cookie(req.headers());
    let ip = req.extensions().get::<auth::ClientAddr>().map(|a| a.0.ip());
    let caller = match &token {
        Some(t) => {
            match service::sessions::caller_for(&st.core, t, auth::user_agent(req.headers()), ip)
                .await
            {
                Ok(c) => c,
                Err(e) => return layout::api_refusal(e.into()),
            }
        }
        None => None,
    };
    let (Some(token), Some(caller)) = (token, caller) else {
        if post {
            return layout::refusal(
                StatusCode::UNAUTHORIZED,
                "Your session has ended: sign in again.",
            );
        }
        let next_page = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let to = format!(
            "/login?next={}",
            url::form_urlencoded::byte_serialize(next_page.as_bytes()).collect::<String>()
        );
        return Redirect::to(&to).into_response();
    };
    if post {
        let limit = if path.starts_with("/playbooks/") {
            MAX_PLAYBOOK_BODY
        } else {
            MAX_BODY
        };
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
            return layout::refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is larger than this page accepts.",
            );
        };
        if form_csrf(&bytes).is_none_or(|c| !auth::csrf_matches(&token, &c)) {
            return layout::refusal(
                StatusCode::FORBIDDEN,
                "This form is out of date or was not sent from Outpost: reload the page and try again.",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    if need != Session && st.core.password_expired(&caller.user) {
        if post {
            return layout::refusal(StatusCode::FORBIDDEN, "Change your password first.");
        }
        return Redirect::to("/account/password").into_response();
    }
    if let Api(method, api_path) = need {
        let m = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        let allowed = match roles::rule(&m, api_path) {
            Some(Access::Public | Access::Session) => true,
            Some(a) => roles::allows(a, caller.user.role),
            None => false,
        };
        if !allowed {
            return layout::refusal(
                StatusCode::FORBIDDEN,
                &format!(
                    "This needs a higher role than {}: ask an admin.",
                    caller.user.role
                ),
            );
        }
    }
    let viewer = Viewer {
        csrf: auth::csrf_token(&token),
        caller,
    };
    req.extensions_mut().insert(viewer);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_follows_a_rule_of_the_api() {
        let mut seen = std::collections::HashSet::new();
        for (m, p, n) in PAGES {
            assert!(seen.insert((m, p)), "{m} {p} twice");
            if let Api(am, ap) = n {
                let method = Method::from_bytes(am.as_bytes()).unwrap();
                assert!(
                    roles::rule(&method, ap).is_some(),
                    "{m} {p} follows {am} {ap}, which the API does not have"
                );
            }
        }
    }

    #[test]
    fn the_csrf_field_is_read_from_a_form() {
        assert_eq!(
            form_csrf(b"a=1&_csrf=abc%20d&b=2").as_deref(),
            Some("abc d")
        );
        assert_eq!(form_csrf(b"a=1"), None);
    }
}
