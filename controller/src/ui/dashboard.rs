//! The dashboard: what runs and waits now, how the last 24 hours went, agents online per
//! datacenter, open tickets by priority and the latest failures, and charts of the last day
//! and week ([`super::trends`]). The page holds the figures
//! once; an event stream sends them again whenever they change.
//!
//! The figures are a dozen aggregates over jobs, tickets and agents: at 100,000 jobs one
//! rendering costs tens of milliseconds. A page load shows the last rendering and, once that is
//! older than [`REFRESH`] (the live feed renders them that often anyway), has the next one made
//! in the background: the page is at most a rendering behind the stream that follows it, and
//! no load waits for the database unless the dashboard went unwatched for [`SHOWN_FOR`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::Utc;
use maud::{html, Markup};
use tokio::sync::watch;

use super::layout::{self, Area, PageResult};
use super::viewer::Viewer;
use crate::http::WebState;
use crate::model::{JobStatus, Paging, TicketPriority};
use crate::service;
use crate::store::jobs::JobFilter;
use crate::store::{Store, StoreError};

/// How often the live dashboard looks again.
const REFRESH: Duration = Duration::from_secs(2);
/// How old figures a page load may show while newer ones are rendered in the background: a
/// dashboard in use never waits for its aggregates; the first load after a pause does.
const SHOWN_FOR: Duration = Duration::from_secs(30);

/// Renders the figures (the part of the page that the stream replaces), read from the read
/// replica while it is good.
pub async fn figures(st: &Arc<WebState>) -> Result<Markup, StoreError> {
    st.core.store.read(|store| figures_from(st, store)).await
}

async fn figures_from(st: &Arc<WebState>, store: Store) -> Result<Markup, StoreError> {
    let since = Utc::now() - chrono::Duration::hours(24);
    let day: BTreeMap<JobStatus, i64> = store.job_counts_since(since).await?.into_iter().collect();
    let now: BTreeMap<JobStatus, i64> = store.active_job_counts().await?.into_iter().collect();
    let count = |m: &BTreeMap<JobStatus, i64>, s| m.get(&s).copied().unwrap_or(0);
    let (ok, failed) = (
        count(&day, JobStatus::Success),
        count(&day, JobStatus::Failed),
    );
    let rate = if ok + failed > 0 {
        format!("{:.0} %", 100.0 * ok as f64 / (ok + failed) as f64)
    } else {
        "—".to_owned()
    };
    let tickets: BTreeMap<TicketPriority, i64> = store
        .open_tickets_by_priority()
        .await?
        .into_iter()
        .collect();
    let mut agents = Vec::new();
    loop {
        let page = st
            .core
            .store
            .list_agents(Paging::new(1000, agents.len() as i64))
            .await?;
        let done = page.items.len() < 1000;
        agents.extend(page.items);
        if done {
            break;
        }
    }
    let key = st
        .core
        .settings
        .routing_keys
        .first()
        .cloned()
        .unwrap_or_else(|| "dc".into());
    let mut per_dc: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for a in agents.iter().filter(|a| !a.revoked) {
        let dc = a
            .labels
            .as_ref()
            .and_then(|l| l.0.get(&key))
            .and_then(|v| v.as_str())
            .unwrap_or("(no label)")
            .to_owned();
        let e = per_dc.entry(dc).or_default();
        e.1 += 1;
        if a.connected_controller.is_some() {
            e.0 += 1;
        }
    }
    let failures = store
        .list_named_jobs(
            &JobFilter {
                status: Some(JobStatus::Failed),
                ..Default::default()
            },
            Paging::new(5, 0),
        )
        .await?;
    let charts = super::trends::charts(st).await?;
    let latest: Vec<_> = failures
        .items
        .iter()
        .map(service::job_views::listed)
        .collect();
    Ok(html! {
        div.cards {
            a.card.stat href="/jobs?status=running" { span.n #n-running { (count(&now, JobStatus::Running)) } span { "running" } }
            a.card.stat href="/jobs?status=pending" { span.n #n-pending { (count(&now, JobStatus::Pending)) } span { "pending" } }
            a.card.stat.bad href="/jobs?status=failed" { span.n #n-failed { (failed) } span { "failed, 24 h" } }
            div.card.stat { span.n #n-rate { (rate) } span { "success rate, 24 h (" (ok) " of " (ok + failed) ")" } }
        }
        (charts)
        div.grid {
            section.card {
                h2 { "Agents online" }
                @if per_dc.is_empty() {
                    p.muted { "No agent is enrolled yet: make a token on the " a href="/agents" { "agents" } " page." }
                } @else {
                    table {
                        thead { tr { th scope="col" { (key) } th scope="col" { "online" } th scope="col" { "enrolled" } } }
                        tbody {
                            @for (dc, (on, all)) in &per_dc {
                                tr { td { (dc) } td class=[(*on < *all).then_some("warn")] { (on) } td { (all) } }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { "Open tickets" }
                table {
                    tbody {
                        @for p in [TicketPriority::Critical, TicketPriority::High, TicketPriority::Medium, TicketPriority::Low] {
                            tr { td { (layout::priority(p)) } td { a href=(format!("/tickets?priority={}", p.as_str())) { (tickets.get(&p).copied().unwrap_or(0)) } } }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Latest failures" }
            @if latest.is_empty() {
                p.muted { "No job has failed." }
            } @else {
                table.jobs {
                    thead { tr { th scope="col" { "job" } th scope="col" { "playbook" } th scope="col" { "server" } th scope="col" { "error" } th scope="col" { "when" } } }
                    tbody {
                        @for j in &latest {
                            tr {
                                td { a href=(format!("/jobs/{}", j.id)) { code { (&j.id[..8]) } } }
                                td { (j.playbook.name) }
                                td { (j.server.name) }
                                td.clip { (j.error_message.as_deref().unwrap_or("")) }
                                td { (layout::time(j.completed_at.or(Some(j.created_at)))) }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The figures for a page load: the last rendering, renewed in the background once it is
/// older than [`REFRESH`]; rendered now only when none is younger than [`SHOWN_FOR`].
async fn recent_figures(st: &Arc<WebState>) -> Result<Markup, StoreError> {
    crate::http::rendered(
        st,
        |st| &st.figures,
        REFRESH,
        SHOWN_FOR,
        |st| async move { figures(&st).await },
    )
    .await
}

/// GET /
pub async fn page(State(st): State<Arc<WebState>>, Extension(v): Extension<Viewer>) -> PageResult {
    let body = recent_figures(&st).await.map_err(layout::Refusal::from)?;
    Ok(layout::page(
        &v,
        Area::Dashboard,
        "Dashboard",
        html! {
            @if v.may("POST", "/api/v1/jobs") {
                p.actions { a.button href="/jobs/new" { "Launch a playbook" } }
            }
            div #dashboard data-live="/events/dashboard" aria-live="polite" { (body) }
        },
    )
    .into_response())
}

async fn render_while_watched(st: Arc<WebState>, tx: watch::Sender<String>) {
    loop {
        if let Ok(m) = figures(&st).await {
            st.figures.keep(&m.0);
            let html = m.into_string();
            tx.send_if_modified(|current| {
                let changed = *current != html;
                if changed {
                    *current = html;
                }
                changed
            });
        }
        let stopping = tokio::select! {
            _ = st.core.stop.cancelled() => true,
            _ = tokio::time::sleep(REFRESH) => false,
        };
        if st.dashboard.release(&tx, stopping) {
            return;
        }
    }
}

/// GET /events/dashboard: the figures again whenever they change (`update` events carrying
/// the rendered HTML), until the browser leaves, the session ends or the controller stops.
pub async fn events(State(st): State<Arc<WebState>>, Extension(v): Extension<Viewer>) -> Response {
    use futures_util::StreamExt;
    let mut pass = match st.live.open(&v.caller) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let updates = tokio_stream::wrappers::WatchStream::new(st.dashboard.subscribe(|tx| {
        // The figures shared by every open dashboard: one task renders them every REFRESH
        // while anyone watches (as a job's followers share one poll).
        tokio::spawn(render_while_watched(st.clone(), tx));
    }))
    .filter(|html| std::future::ready(!html.is_empty()))
    .map(|html| Ok::<_, Infallible>(Event::default().event("update").data(html)))
    // The pass is held by the stream: counted while it is open, and it ends the stream
    // when the session ends.
    .take_until(async move { pass.ended().await });
    Sse::new(updates)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
