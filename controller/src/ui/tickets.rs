//! Tickets as a board by status, each card with its priority, its job and how long it has
//! been open; status and priority changed in place (operators and admins). Above the board,
//! the SLA figures the seed keeps `created_at` and `resolved_at` for: per priority, how long
//! open tickets have waited and how long resolving took over the last 30 days.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use chrono::Utc;
use maud::html;
use outpost_api::{TicketPatchRequest, TicketQuery, TicketView};
use serde::Deserialize;

use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::{Path, Query};
use crate::http::WebState;
use crate::model::{TicketPriority, TicketStatus};
use crate::service;
use crate::store::dashboard::TicketTiming;

const PRIORITIES: [TicketPriority; 4] = [
    TicketPriority::Critical,
    TicketPriority::High,
    TicketPriority::Medium,
    TicketPriority::Low,
];
const STATUSES: [TicketStatus; 4] = [
    TicketStatus::Open,
    TicketStatus::InProgress,
    TicketStatus::Resolved,
    TicketStatus::Closed,
];

/// The median of some durations in seconds.
fn median(mut v: Vec<i64>) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Per priority: (open count, median time open, resolved count, median time to resolve).
pub fn sla(
    timings: &[TicketTiming],
    now: chrono::DateTime<Utc>,
) -> BTreeMap<TicketPriority, (usize, Option<i64>, usize, Option<i64>)> {
    let mut out = BTreeMap::new();
    for p in PRIORITIES {
        let open: Vec<i64> = timings
            .iter()
            .filter(|t| {
                t.priority == p && matches!(t.status, TicketStatus::Open | TicketStatus::InProgress)
            })
            .map(|t| (now - t.created_at).num_seconds())
            .collect();
        let resolved: Vec<i64> = timings
            .iter()
            .filter(|t| t.priority == p)
            .filter_map(|t| t.resolved_at.map(|r| (r - t.created_at).num_seconds()))
            .collect();
        out.insert(
            p,
            (open.len(), median(open), resolved.len(), median(resolved)),
        );
    }
    out
}

fn secs(s: Option<i64>) -> String {
    s.map(|s| layout::span(chrono::Duration::seconds(s)))
        .unwrap_or_else(|| "—".into())
}

#[derive(Debug, Default, Deserialize)]
pub struct BoardQuery {
    priority: Option<String>,
}

fn card(v: &Viewer, t: &TicketView, may_edit: bool) -> maud::Markup {
    html! {
        article.ticket data-ticket=(t.id) {
            h3 { (t.title) }
            p { (layout::priority(t.priority)) " " (layout::ticket_status(t.status)) " · job " a href=(format!("/jobs/{}", t.job_id)) { code { (&t.job_id[..8.min(t.job_id.len())]) } } }
            @if let Some(d) = &t.description { details { summary { "Description" } pre.wrap { (d) } } }
            p.muted {
                "opened " (layout::time(Some(t.created_at)))
                @if let Some(r) = t.resolved_at { " · resolved after " (layout::span(r - t.created_at)) }
            }
            @if may_edit {
                form.inline method="post" action=(format!("/tickets/{}", t.id)) {
                    (layout::csrf(v))
                    label.sr for=(format!("st-{}", t.id)) { "Status" }
                    select id=(format!("st-{}", t.id)) name="status" {
                        @for s in STATUSES { option value=(s.as_str()) selected[s == t.status] { (s.as_str().replace('_', " ")) } }
                    }
                    label.sr for=(format!("pr-{}", t.id)) { "Priority" }
                    select id=(format!("pr-{}", t.id)) name="priority" {
                        @for p in PRIORITIES { option value=(p.as_str()) selected[p == t.priority] { (p.as_str()) } }
                    }
                    button type="submit" { "Save" }
                    @if matches!(t.status, TicketStatus::Open | TicketStatus::InProgress) {
                        button.resolve type="submit" name="resolve" value="1" { "Resolve" }
                    }
                }
            }
        }
    }
}

/// GET /tickets
pub async fn board(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<BoardQuery>,
) -> PageResult {
    let priority: Option<TicketPriority> = q.priority.as_deref().and_then(|p| p.parse().ok());
    let now = Utc::now();
    let timings = or_page(
        st.core
            .store
            .ticket_timings(now - chrono::Duration::days(30))
            .await,
    )?;
    let figures = sla(&timings, now);
    let may_edit = v.may("PATCH", "/api/v1/tickets/{ticket_id}");
    let mut columns = Vec::new();
    for s in STATUSES {
        let page = or_page(
            service::tickets::list(
                &st.core,
                &(TicketQuery {
                    status: Some(s),
                    priority,
                    limit: Some(100),
                    offset: Some(0),
                }),
            )
            .await,
        )?;
        columns.push((s, page));
    }
    let body = html! {
        section.card {
            h2 { "Service levels" }
            div.scroll {
                table {
                    thead { tr { th scope="col" { "priority" } th scope="col" { "open" } th scope="col" { "median time open" } th scope="col" { "resolved, 30 d" } th scope="col" { "median time to resolve" } } }
                    tbody {
                        @for (p, (open, open_for, resolved, took)) in figures.iter().rev() {
                            tr { td { (layout::priority(*p)) } td { (open) } td { (secs(*open_for)) } td { (resolved) } td { (secs(*took)) } }
                        }
                    }
                }
            }
        }
        form.filters method="get" action="/tickets" {
            label { "Priority "
                select name="priority" {
                    option value="" { "any" }
                    @for p in PRIORITIES { option value=(p.as_str()) selected[priority == Some(p)] { (p.as_str()) } }
                }
            }
            button type="submit" { "Filter" }
        }
        div.board {
            @for (s, page) in &columns {
                section.column aria-label=(s.as_str()) {
                    h2 { (s.as_str().replace('_', " ")) " " span.muted { (page.total) } }
                    @for t in &page.items { (card(&v, t, may_edit)) }
                }
            }
        }
    };
    Ok(layout::page(&v, Area::Tickets, "Tickets", body).into_response())
}

#[derive(Debug, Deserialize)]
pub struct TicketForm {
    status: Option<TicketStatus>,
    priority: Option<TicketPriority>,
    /// The card's Resolve button.
    resolve: Option<String>,
}

/// POST /tickets/{ticket_id}
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    Form(f): Form<TicketForm>,
) -> PageResult {
    let status = if f.resolve.is_some() {
        Some(TicketStatus::Resolved)
    } else {
        f.status
    };
    let patch = TicketPatchRequest {
        status,
        priority: f.priority,
        ..Default::default()
    };
    or_page(service::tickets::update(&st.core, &v.caller, &id, patch).await)?;
    Ok(Redirect::to("/tickets").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sla_figures_take_medians_per_priority() {
        let now = Utc::now();
        let t = |p, s, age_h: i64, took_h: Option<i64>| TicketTiming {
            priority: p,
            status: s,
            created_at: now - chrono::Duration::hours(age_h),
            resolved_at: took_h
                .map(|h| now - chrono::Duration::hours(age_h) + chrono::Duration::hours(h)),
        };
        let rows = [
            t(TicketPriority::High, TicketStatus::Open, 2, None),
            t(TicketPriority::High, TicketStatus::Open, 4, None),
            t(TicketPriority::High, TicketStatus::Open, 6, None),
            t(TicketPriority::High, TicketStatus::Resolved, 10, Some(1)),
            t(TicketPriority::Low, TicketStatus::Closed, 10, Some(3)),
        ];
        let f = sla(&rows, now);
        let (open, open_for, resolved, took) = f[&TicketPriority::High];
        assert_eq!((open, resolved), (3, 1));
        assert_eq!(open_for, Some(4 * 3600));
        assert_eq!(took, Some(3600));
        assert_eq!(f[&TicketPriority::Low].3, Some(3 * 3600));
        assert_eq!(f[&TicketPriority::Critical], (0, None, 0, None));
    }
}
