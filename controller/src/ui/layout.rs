//! The page shell (navigation by role, the stylesheet and script) and the small pieces pages
//! share: status badges, times, pagers, refusals. Everything shown is escaped by maud: text
//! from playbooks, logs, hostnames and tickets is always text, never markup.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::viewer::Viewer;
use crate::http::error::ApiError;
use crate::model::{JobStatus, TicketPriority, TicketStatus};

/// The areas of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Dashboard,
    Jobs,
    Runs,
    Templates,
    Servers,
    Playbooks,
    Projects,
    Tickets,
    Schedules,
    Agents,
    Users,
    Credentials,
    Notifications,
    Audit,
    Account,
}

/// (area, label, link, the API route the user must be allowed to read to see it)
const NAV: &[(Area, &str, &str, &str)] = &[
    (Area::Dashboard, "Dashboard", "/", "/api/v1/jobs"),
    (Area::Jobs, "Jobs", "/jobs", "/api/v1/jobs"),
    (Area::Runs, "Runs", "/runs", "/api/v1/runs"),
    (
        Area::Templates,
        "Templates",
        "/templates",
        "/api/v1/templates",
    ),
    (Area::Servers, "Servers", "/servers", "/api/v1/servers"),
    (
        Area::Playbooks,
        "Playbooks",
        "/playbooks",
        "/api/v1/playbooks",
    ),
    (Area::Projects, "Projects", "/projects", "/api/v1/projects"),
    (Area::Tickets, "Tickets", "/tickets", "/api/v1/tickets"),
    (
        Area::Schedules,
        "Schedules",
        "/schedules",
        "/api/v1/schedules",
    ),
    (Area::Agents, "Agents", "/agents", "/api/v1/agents"),
    (Area::Users, "Users", "/users", "/api/v1/users"),
    (
        Area::Credentials,
        "Credentials",
        "/admin/credentials",
        "/api/v1/credentials",
    ),
    (
        Area::Notifications,
        "Notifications",
        "/admin/notifications",
        "/api/v1/notifications/deliveries",
    ),
    (Area::Audit, "Audit", "/audit", "/api/v1/audit"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · Outpost" }
            link rel="stylesheet" href="/static/app.css";
            script src="/static/app.js" defer {}
        }
    }
}

/// A whole page for a signed-in user.
pub fn page(v: &Viewer, area: Area, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Outpost" }
                    nav aria-label="Main" {
                        @for (a, label, href, api) in NAV {
                            @if v.may("GET", api) {
                                a href=(href) aria-current=[(*a == area).then_some("page")] { (label) }
                            }
                        }
                    }
                    div.who {
                        span title=(format!("signed in as {} ({})", v.caller.user.username, v.caller.user.role)) {
                            (v.caller.user.username) " · " (v.caller.user.role)
                        }
                        form method="post" action="/logout" {
                            input type="hidden" name="_csrf" value=(v.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page for nobody in particular (sign-in, refusals).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                main #main {
                    p.brand { "Outpost" }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A refusal as a page, with its status.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::UNAUTHORIZED => "Sign in again",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Not now",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        s if s.is_client_error() => "That did not work",
        _ => "Something went wrong",
    };
    let body = html! {
        p.error role="alert" { (message) }
        p { a href="/" { "Back to the dashboard" } }
    };
    (status, bare(title, body)).into_response()
}

/// An API error as a page.
pub fn api_refusal(e: ApiError) -> Response {
    refusal(e.status, &e.message)
}

/// Why a page handler refused: shown as a page with its status.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal {
            status: e.status,
            message: e.message,
        }
    }
}

impl From<crate::service::ServiceError> for Refusal {
    fn from(e: crate::service::ServiceError) -> Refusal {
        ApiError::from(e).into()
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Refusal {
        ApiError::from(e).into()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refusal(self.status, &self.message)
    }
}

/// The result of a page handler.
pub type PageResult = Result<Response, Refusal>;

/// Turns an API error into its page (`?` in page handlers).
pub fn or_page<T, E: Into<ApiError>>(r: Result<T, E>) -> Result<T, Refusal> {
    r.map_err(|e| Refusal::from(e.into()))
}

pub fn job_status(s: JobStatus) -> Markup {
    html! { span class=(format!("badge st-{}", s.as_str())) data-status=(s.as_str()) { (s.as_str()) } }
}

pub fn ticket_status(s: TicketStatus) -> Markup {
    html! { span class=(format!("badge tk-{}", s.as_str())) { (s.as_str().replace('_', " ")) } }
}

pub fn priority(p: TicketPriority) -> Markup {
    html! { span class=(format!("badge pr-{}", p.as_str())) { (p.as_str()) } }
}

/// A timestamp, readable, with the exact UTC time on hover.
pub fn time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => html! {
            time datetime=(t.to_rfc3339()) title=(t.format("%Y-%m-%d %H:%M:%S UTC").to_string()) {
                (ago(Utc::now() - t))
            }
        },
        None => html! { span.muted { "—" } },
    }
}

/// "3 min ago", "2 h ago", "5 d ago".
pub fn ago(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < 0 {
        return "just now".into();
    }
    format!("{} ago", span(d))
}

/// A duration as people read it: "45 s", "12 min", "3 h 5 min", "2 d 4 h".
pub fn span(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `k=v` pairs of a JSON object, as small labels.
pub fn labels(obj: Option<&serde_json::Map<String, serde_json::Value>>) -> Markup {
    html! {
        @if let Some(o) = obj {
            @for (k, v) in o {
                span.label { (k) "=" (v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())) }
                " "
            }
        }
    }
}

/// `path` with the filters that are set, as a query: what a pager keeps across pages.
pub fn with_filters(path: &str, filters: &[(&str, Option<&str>)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in filters {
        if let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{q}")
    }
}

/// Previous/next links over a listing; `base` is the page's query without paging.
pub fn pager(base: &str, offset: i64, limit: i64, total: i64) -> Markup {
    let sep = if base.contains('?') { '&' } else { '?' };
    html! {
        nav.pager aria-label="Pages" {
            span { (offset.min(total).max(0) + i64::from(total > 0)) "–" ((offset + limit).min(total)) " of " (total) }
            @if offset > 0 {
                a href=(format!("{base}{sep}offset={}", (offset - limit).max(0))) rel="prev" { "← Newer" }
            }
            @if offset + limit < total {
                a href=(format!("{base}{sep}offset={}", offset + limit)) rel="next" { "Older →" }
            }
        }
    }
}

/// The pager of a list paged by cursor (jobs, audit): "Older" follows the page's `next`,
/// "Newest" goes back to the head. There is no "Newer": a cursor only reads on, and the head is
/// where new items appear anyway. The total may be a lower bound (`total_exact` false).
pub fn cursor_pager<T>(base: &str, page: &outpost_api::Page<T>, paged: bool) -> Markup {
    let sep = if base.contains('?') { '&' } else { '?' };
    let total = if page.total_exact {
        page.total.to_string()
    } else {
        format!("more than {}", page.total)
    };
    html! {
        nav.pager aria-label="Pages" {
            span { (page.items.len()) " shown of " (total) }
            @if paged || page.offset > 0 {
                a href=(base) rel="first" { "← Newest" }
            }
            @if let Some(next) = &page.next {
                a href=(format!("{base}{sep}after={next}")) rel="next" { "Older →" }
            }
        }
    }
}

/// The hidden field every form carries.
pub fn csrf(v: &Viewer) -> Markup {
    html! { input type="hidden" name="_csrf" value=(v.csrf); }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(chrono::Duration::seconds(45)), "45 s");
        assert_eq!(span(chrono::Duration::seconds(750)), "12 min");
        assert_eq!(span(chrono::Duration::seconds(3 * 3600 + 300)), "3 h 5 min");
        assert_eq!(
            span(chrono::Duration::seconds(2 * 86_400 + 4 * 3600)),
            "2 d 4 h"
        );
    }

    #[test]
    fn filters_that_are_set_are_kept() {
        assert_eq!(
            with_filters(
                "/jobs",
                &[
                    ("status", Some("failed")),
                    ("server", None),
                    ("x", Some(" "))
                ]
            ),
            "/jobs?status=failed"
        );
        assert_eq!(
            with_filters("/audit", &[("action", Some("a&b"))]),
            "/audit?action=a%26b"
        );
        assert_eq!(with_filters("/servers", &[]), "/servers");
    }

    #[test]
    fn text_is_escaped() {
        let m = html! { p { ("<script>alert(1)</script>") } };
        assert_eq!(
            m.into_string(),
            "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
        );
    }
}
