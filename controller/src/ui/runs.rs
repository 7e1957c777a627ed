//! Runs: the list (status, progress, waves) and a run's page — status, counts, budgets, why it
//! stopped, progress bars per datacenter and per wave, its jobs, and the buttons to cancel it,
//! approve its next wave and relaunch its failed servers. The page's changing part follows
//! the run over Server-Sent Events until the run ends. Everything goes through the runs
//! service, so rules, audit and errors are the API's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use outpost_api::{
    RelaunchOnly, RelaunchRequest, Rollout, RunCounts, RunDetail, RunQuery, RunStatus, RunView,
};
use serde::Deserialize;

use super::chart::{self, svg, Group, Series};
use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::{Path, Query};
use crate::http::WebState;
use crate::service;

const PER_PAGE: i64 = 50;
/// How often a run's page looks again while the run goes on.
const REFRESH: Duration = Duration::from_secs(2);

/// A run's status as a badge.
pub fn status(s: RunStatus) -> Markup {
    html! { span class=(format!("badge rs-{}", s.as_str())) data-status=(s.as_str()) { (s.as_str().replace('_', " ")) } }
}

/// Jobs that have ended, of all of them.
fn done(c: &RunCounts) -> u32 {
    c.success + c.failed + c.unreachable + c.cancelled
}

/// The job states of a run in the order its bars show them: ended well, ended badly, then
/// what is still to come.
fn series() -> Vec<Series> {
    [
        ("success", "st-success"),
        ("failed", "st-failed"),
        ("unreachable", "st-unreachable"),
        ("cancelled", "st-cancelled"),
        ("running", "st-running"),
        ("pending", "st-pending"),
    ]
    .iter()
    .map(|(n, c)| Series {
        name: (*n).into(),
        class: (*c).into(),
    })
    .collect()
}

fn values(c: &RunCounts) -> Vec<u64> {
    [
        c.success,
        c.failed,
        c.unreachable,
        c.cancelled,
        c.running,
        c.pending,
    ]
    .iter()
    .map(|v| u64::from(*v))
    .collect()
}

/// "7 of 10 done".
fn done_note(c: &RunCounts) -> String {
    format!("{} of {} done", done(c), c.total)
}

/// "5 success, 1 failed, 4 pending": the counts that are not zero.
fn counts_text(c: &RunCounts) -> String {
    let parts: Vec<String> = series()
        .iter()
        .zip(values(c))
        .filter(|(_, v)| *v > 0)
        .map(|(s, v)| format!("{v} {}", s.name))
        .collect();
    if parts.is_empty() {
        "no job".into()
    } else {
        parts.join(", ")
    }
}

/// A rollout in words: "canary 1 · batches of 10% per datacenter · approval between waves ·
/// at most 2 failed".
pub fn rollout_text(r: &Rollout) -> String {
    let mut parts = Vec::new();
    if let Some(n) = r.canary {
        parts.push(format!("canary {n}"));
    }
    if let Some(dc) = &r.canary_datacenter {
        parts.push(format!("canary datacenter {dc}"));
    }
    if let Some(b) = &r.batch {
        parts.push(format!(
            "batches of {b}{}",
            if r.batch_per_datacenter {
                " per datacenter"
            } else {
                ""
            }
        ));
    }
    if r.pause {
        parts.push("approval between waves".into());
    }
    if let Some(m) = &r.max_failures {
        parts.push(format!("at most {m} failed"));
    }
    if let Some(m) = &r.max_unreachable {
        parts.push(format!("at most {m} unreachable"));
    }
    if parts.is_empty() {
        "all at once".into()
    } else {
        parts.join(" · ")
    }
}

/// Progress bars, one per group (datacenter or wave).
fn progress(
    id: &str,
    title: &str,
    groups: &[outpost_api::RunGroup],
    name: impl Fn(&str) -> String,
) -> Markup {
    let groups: Vec<Group> = groups
        .iter()
        .map(|g| Group {
            name: name(&g.name),
            values: values(&g.counts),
            note: done_note(&g.counts),
        })
        .collect();
    let desc = groups
        .iter()
        .map(|g| format!("{}: {}", g.name, g.note))
        .collect::<Vec<_>>()
        .join("; ");
    let c = chart::progress(series(), groups, 22.0, 720.0);
    svg::progress(id, title, &desc, &c)
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    offset: Option<i64>,
}

/// GET /runs
pub async fn list(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let wanted: Option<RunStatus> = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok());
    let offset = q.offset.unwrap_or(0).max(0);
    let page = or_page(
        service::runs::list(
            &st.core,
            &RunQuery {
                status: wanted,
                limit: Some(PER_PAGE),
                offset: Some(offset),
                ..Default::default()
            },
        )
        .await,
    )?;
    let base = layout::with_filters("/runs", &[("status", q.status.as_deref())]);
    let body = html! {
        form.filters method="get" action="/runs" {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in RunStatus::ALL {
                        option value=(s.as_str()) selected[wanted == Some(*s)] { (s.as_str().replace('_', " ")) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if v.may("POST", "/api/v1/jobs") { a.button href="/jobs/new" { "Launch" } }
        }
        @if page.items.is_empty() {
            p.muted { "No run matches." }
        } @else {
            div.scroll {
                table.runs {
                    thead { tr {
                        th scope="col" { "run" } th scope="col" { "status" } th scope="col" { "playbook" }
                        th scope="col" { "progress" } th scope="col" { "wave" } th scope="col" { "by" } th scope="col" { "created" }
                    } }
                    tbody {
                        @for r in &page.items {
                            tr data-run=(r.id) {
                                td { a href=(format!("/runs/{}", r.id)) { code { (r.id.get(..8).unwrap_or(&r.id)) } } }
                                td { (status(r.status)) }
                                td { (r.playbook.name) }
                                td { (done_note(&r.counts)) @if r.counts.failed + r.counts.unreachable > 0 { " · " span.error { (r.counts.failed + r.counts.unreachable) " failed" } } }
                                td {
                                    @if r.waves > 1 { (r.current_wave) " of " (r.waves) }
                                    @if r.awaiting_approval { " " span.label { "awaiting approval" } }
                                }
                                td { (r.user.name) }
                                td { (layout::time(Some(r.created_at))) }
                            }
                        }
                    }
                }
            }
        }
        (layout::pager(&base, offset, PER_PAGE, page.total))
    };
    Ok(layout::page(&v, Area::Runs, "Runs", body).into_response())
}

/// The part of a run's page that changes while it goes on.
fn live_part(v: &Viewer, d: &RunDetail) -> Markup {
    let r = &d.run;
    let running = r.status == RunStatus::Running;
    let b = &d.budget;
    let failed_any = r.counts.failed > 0;
    let unreachable_any = r.counts.unreachable > 0;
    html! {
        section.card #run-facts data-status=(r.status.as_str()) {
            dl.facts {
                dt { "Status" } dd #run-status { (status(r.status)) }
                dt { "Playbook" } dd { (r.playbook.name) }
                dt { "Launched by" } dd { (r.user.name) }
                @if let Some(t) = &r.template { dt { "Template" } dd { (t.name) } }
                @if let Some(old) = &r.relaunch_of {
                    dt { "Relaunch of" } dd { a #run-relaunch-of href=(format!("/runs/{old}")) { code { (old.get(..8).unwrap_or(old)) } } }
                }
                dt { "Rollout" } dd #run-rollout { (r.rollout.as_ref().map(rollout_text).unwrap_or_else(|| "all at once".into())) }
                @if r.waves > 1 { dt { "Waves" } dd #run-waves { (r.current_wave) " of " (r.waves) " released" } }
                dt { "Jobs" } dd #run-counts data-done=(done(&r.counts)) data-total=(r.counts.total) { (done_note(&r.counts)) ": " (counts_text(&r.counts)) }
                dt { "Failure budget" } dd #run-budget data-spent=(b.spent) {
                    (b.failed) " failed"
                    @match b.max_failures { Some(m) => { " of at most " (m) }, None => { " (no budget)" } }
                    " · " (b.unreachable) " unreachable"
                    @if let Some(m) = b.max_unreachable { " of at most " (m) }
                    @if b.spent { " " span.badge.rs-stopped_by_budget { "spent" } }
                }
                dt { "Created" } dd { (layout::time(Some(r.created_at))) }
                dt { "Finished" } dd #run-completed { (layout::time(r.completed_at)) }
                @if !d.tickets.is_empty() {
                    dt { "Tickets" } dd { a href="/tickets" { (d.tickets.len()) " opened" } }
                }
            }
            @if let Some(why) = &r.stop_reason {
                p.error #run-stop-reason role="status" { (why) }
            }
            @if r.awaiting_approval {
                p.notice #run-awaiting { "Wave " (r.current_wave + 1) " of " (r.waves) " waits for an operator's approval." }
            }
            div.actions {
                @if running && r.awaiting_approval && v.may("POST", "/api/v1/runs/{run_id}/approve") {
                    form method="post" action=(format!("/runs/{}/approve", r.id)) {
                        (layout::csrf(v))
                        button.primary #approve type="submit" { "Approve wave " (r.current_wave + 1) }
                    }
                }
                @if running && r.stop_reason.is_none() && v.may("POST", "/api/v1/runs/{run_id}/cancel") {
                    form method="post" action=(format!("/runs/{}/cancel", r.id)) data-confirm="Cancel every job of this run that has not ended?" {
                        (layout::csrf(v))
                        button.danger #cancel-run type="submit" { "Cancel run" }
                    }
                }
                @if !running && (failed_any || unreachable_any) && v.may("POST", "/api/v1/runs/{run_id}/relaunch") {
                    @if failed_any {
                        form method="post" action=(format!("/runs/{}/relaunch", r.id)) {
                            (layout::csrf(v))
                            input type="hidden" name="only" value="failed";
                            button #relaunch-failed type="submit" { "Relaunch the " (r.counts.failed) " failed" }
                        }
                    }
                    @if unreachable_any {
                        form method="post" action=(format!("/runs/{}/relaunch", r.id)) {
                            (layout::csrf(v))
                            input type="hidden" name="only" value="failed_or_unreachable";
                            button #relaunch-unreachable type="submit" { "Relaunch failed and unreachable (" (r.counts.failed + r.counts.unreachable) ")" }
                        }
                    }
                }
            }
        }
        section.card #run-progress {
            h2 { "Progress" }
            (progress("run-datacenters", "Per datacenter", &d.datacenters, |n| if n == "-" { "(none)".into() } else { n.to_owned() }))
            @if d.waves.len() > 1 {
                (progress("run-waves", "Per wave", &d.waves, |n| format!("wave {n}")))
            }
        }
        section.card #run-jobs {
            h2 { "Jobs" }
            div.scroll {
                table.jobs {
                    thead { tr {
                        th scope="col" { "job" } th scope="col" { "wave" } th scope="col" { "datacenter" } th scope="col" { "status" }
                        th scope="col" { "server" } th scope="col" { "agent" } th scope="col" { "took" } th scope="col" { "why" }
                    } }
                    tbody {
                        @for j in &d.jobs {
                            tr data-job=(j.job.id) {
                                td { a href=(format!("/jobs/{}", j.job.id)) { code { (j.job.id.get(..8).unwrap_or(&j.job.id)) } } }
                                td { (j.wave) }
                                td { (j.datacenter.as_deref().unwrap_or("—")) }
                                td { (layout::job_status(j.job.status)) @if j.unreachable { " " span.badge.st-unreachable { "unreachable" } } }
                                td { (j.job.server.name) }
                                td { (j.job.agent.as_ref().map(|a| a.name.as_str()).unwrap_or("—")) }
                                td { @if let (Some(a), Some(b)) = (j.job.started_at, j.job.completed_at) { (layout::span(b - a)) } }
                                td.clip { (j.job.error_message.as_deref().or(j.job.pending_reason.as_deref()).unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// At most this many rows of failed tasks on a run's page.
const FAILED_TASK_ROWS: usize = 50;

/// GET /runs/{run_id}
pub async fn show(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(run_id): Path<String>,
) -> PageResult {
    let d = or_page(service::runs::get(&st.core, &run_id).await)?;
    let id = d.run.id.clone();
    let live = d.run.status == RunStatus::Running;
    // Which task failed where, as the page loads (a results read is not worth repeating on
    // every live update); the full tally is the API's.
    let failing = if live || d.run.counts.failed + d.run.counts.unreachable == 0 {
        Vec::new()
    } else {
        let all =
            service::results::run_results(&st.core, &id, &outpost_api::ResultsQuery::default())
                .await
                .map(|r| r.tasks)
                .unwrap_or_default();
        all.into_iter()
            .filter(|t| {
                matches!(
                    t.status,
                    outpost_api::TaskStatus::Failed | outpost_api::TaskStatus::Unreachable
                )
            })
            .take(FAILED_TASK_ROWS)
            .collect()
    };
    let body = html! {
        div #run data-run=(id) data-live=[live.then(|| format!("/events/runs/{id}"))] aria-live="polite" {
            (live_part(&v, &d))
        }
        @if !failing.is_empty() {
            section.card #run-failed-tasks {
                h2 { "Failed tasks" }
                div.scroll {
                    table {
                        thead { tr {
                            th scope="col" { "task" } th scope="col" { "play" } th scope="col" { "status" }
                            th scope="col" { "datacenter" } th scope="col" { "servers" }
                        } }
                        tbody {
                            @for t in &failing {
                                tr data-status=(t.status.as_str()) {
                                    td { (t.task) } td { (t.play) } td { (t.status.as_str()) }
                                    td { @if t.datacenter.is_empty() { "(none)" } @else { (t.datacenter) } }
                                    td.num { (t.servers) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(
        &v,
        Area::Runs,
        &format!("Run {}", id.get(..8).unwrap_or(&id)),
        body,
    )
    .into_response())
}

/// GET /events/runs/{run_id}: the changing part of the run's page again whenever it changes
/// (`update` events carrying the rendered HTML), then `end` once the run has ended.
pub async fn events(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(run_id): Path<String>,
) -> Response {
    use futures_util::StreamExt;
    if let Err(e) = service::runs::by_uuid(&st.core, &run_id).await {
        return layout::api_refusal(e.into());
    }
    let mut pass = match st.live.open(&v.caller) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    struct Follow {
        st: Arc<WebState>,
        v: Viewer,
        id: String,
        last: String,
        ended: bool,
    }
    let start = Follow {
        st,
        v,
        id: run_id,
        last: String::new(),
        ended: false,
    };
    let events = futures_util::stream::unfold(start, |mut f| async move {
        if f.ended {
            return None;
        }
        loop {
            tokio::select! {
                _ = f.st.core.stop.cancelled() => return None,
                _ = tokio::time::sleep(REFRESH) => {}
            }
            let Ok(d) = service::runs::get(&f.st.core, &f.id).await else {
                // A database that does not answer now may answer at the next look.
                continue;
            };
            let html = live_part(&f.v, &d).into_string();
            f.ended = d.run.status != RunStatus::Running;
            if html != f.last {
                f.last = html.clone();
                let ev = Event::default().event("update").data(html);
                return Some((Ok::<_, Infallible>(ev), f));
            }
            if f.ended {
                return Some((Ok(Event::default().event("end").data("")), f));
            }
        }
    })
    .take_until(async move { pass.ended().await });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// POST /runs/{run_id}/cancel
pub async fn cancel(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(run_id): Path<String>,
) -> PageResult {
    let r = or_page(service::runs::cancel(&st.core, &v.caller, &run_id).await)?;
    Ok(Redirect::to(&format!("/runs/{}", r.run.id)).into_response())
}

/// POST /runs/{run_id}/approve
pub async fn approve(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(run_id): Path<String>,
) -> PageResult {
    let r = or_page(service::runs::approve(&st.core, &v.caller, &run_id).await)?;
    Ok(Redirect::to(&format!("/runs/{}", r.run.id)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct RelaunchForm {
    #[serde(default)]
    only: Option<String>,
}

/// POST /runs/{run_id}/relaunch: a new run on the failed (or failed and unreachable) servers;
/// the browser lands on it.
pub async fn relaunch(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(run_id): Path<String>,
    Form(f): Form<RelaunchForm>,
) -> PageResult {
    let only = match f.only.as_deref() {
        None | Some("") | Some("failed") => RelaunchOnly::Failed,
        Some("failed_or_unreachable") => RelaunchOnly::FailedOrUnreachable,
        Some(other) => {
            return Err(layout::Refusal {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                message: format!(
                    "relaunch only '{other}'? Choose failed or failed_or_unreachable."
                ),
            })
        }
    };
    let new: RunView = or_page(
        service::runs::relaunch(&st.core, &v.caller, &run_id, &RelaunchRequest { only }).await,
    )?;
    Ok(Redirect::to(&format!("/runs/{}", new.id)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(success: u32, failed: u32, unreachable: u32, pending: u32) -> RunCounts {
        RunCounts {
            pending,
            running: 0,
            success,
            failed,
            unreachable,
            cancelled: 0,
            total: success + failed + unreachable + pending,
        }
    }

    #[test]
    fn counts_read_as_words() {
        let c = counts(5, 1, 0, 4);
        assert_eq!(done_note(&c), "6 of 10 done");
        assert_eq!(counts_text(&c), "5 success, 1 failed, 4 pending");
        assert_eq!(counts_text(&counts(0, 0, 0, 0)), "no job");
    }

    #[test]
    fn a_rollout_reads_as_words() {
        assert_eq!(rollout_text(&Rollout::default()), "all at once");
        let r = Rollout {
            canary: Some(1),
            batch: Some("10%".into()),
            batch_per_datacenter: true,
            pause: true,
            max_failures: Some("2".into()),
            ..Default::default()
        };
        assert_eq!(
            rollout_text(&r),
            "canary 1 · batches of 10% per datacenter · approval between waves · at most 2 failed"
        );
    }
}
