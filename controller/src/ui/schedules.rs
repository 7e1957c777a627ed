//! Schedules and blackout windows. Everyone signed in sees the schedules with their next run,
//! each schedule's runs (fired, skipped and why, failed and why) and the blackout windows.
//! Admins create schedules with a form that first shows the next five runs (a preview round
//! trip, values kept) and only then offers to save; they create and delete blackouts.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use maud::{html, Markup};
use outpost_api::{
    IdOrName, NewBlackoutRequest, NewScheduleRequest, OverlapRule, PageQuery, PreviewRequest,
    PreviewResponse,
};
use serde::Deserialize;

use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::{ApiError, Path};
use crate::http::WebState;
use crate::service;

const ALL: PageQuery = PageQuery {
    limit: Some(1000),
    offset: Some(0),
};

/// What the schedule form posts (also to the preview).
#[derive(Debug, Deserialize, Default)]
pub struct ScheduleForm {
    name: Option<String>,
    template: Option<String>,
    cron: Option<String>,
    timezone: Option<String>,
    overlap: Option<String>,
}

/// What the blackout form posts.
#[derive(Debug, Deserialize, Default)]
pub struct BlackoutForm {
    name: Option<String>,
    environment: Option<String>,
    timezone: Option<String>,
    weekly_start: Option<String>,
    weekly_end: Option<String>,
    applies_to_manual: Option<String>,
}

fn text(v: &Option<String>) -> String {
    v.as_deref().unwrap_or_default().trim().to_owned()
}

fn filled(v: &Option<String>) -> Option<String> {
    Some(text(v)).filter(|s| !s.is_empty())
}

/// What the page shows besides the listings: the form as typed, its preview, an error.
#[derive(Default)]
struct State2 {
    form: ScheduleForm,
    preview: Option<PreviewResponse>,
    error: Option<String>,
    blackout_error: Option<String>,
}

async fn list_page(st: Arc<WebState>, v: &Viewer, s: State2) -> PageResult {
    let schedules = or_page(service::schedules::list(&st.core, &ALL).await)?;
    let blackouts = or_page(service::blackouts::list(&st.core, &ALL).await)?;
    let body = html! {
        @if schedules.items.is_empty() {
            p.muted { "No schedule yet." }
        } @else {
            div.scroll { table #schedules {
                thead { tr {
                    th scope="col" { "name" } th scope="col" { "template" } th scope="col" { "cron" }
                    th scope="col" { "time zone" } th scope="col" { "overlap" } th scope="col" { "next run (UTC)" }
                } }
                tbody { @for x in &schedules.items {
                    tr data-schedule=(x.id) {
                        td { a href=(format!("/schedules/{}", x.id)) { (x.name) } }
                        td { (x.template.name) }
                        td { code { (x.cron) } }
                        td { (x.timezone) }
                        td { (x.overlap) }
                        td.next-run { @if x.enabled {
                            @if let Some(t) = x.next_run_at { (t.format("%Y-%m-%d %H:%M:%S")) } @else { span.muted { "ended" } }
                        } @else { span.muted { "disabled" } } }
                    }
                } }
            } }
        }
        @if v.may("POST", "/api/v1/schedules") { (schedule_form(v, &s)) }
        h2 { "Blackout windows" }
        @if let Some(e) = &s.blackout_error { p.error #blackout-error role="alert" { (e) } }
        @if blackouts.items.is_empty() {
            p.muted { "No blackout window." }
        } @else {
            div.scroll { table #blackouts {
                thead { tr {
                    th scope="col" { "name" } th scope="col" { "environment" } th scope="col" { "window" }
                    th scope="col" { "manual launches" } th scope="col" { "in force until" } th {}
                } }
                tbody { @for b in &blackouts.items {
                    tr data-blackout=(b.id) {
                        td { (b.name) }
                        td { (b.environment.as_deref().unwrap_or("(all)")) }
                        td {
                            @if let (Some(a), Some(z)) = (&b.weekly_start, &b.weekly_end) { (a) " – " (z) " " (b.timezone) " " }
                            @if let (Some(a), Some(z)) = (b.starts_at, b.ends_at) { (a.format("%Y-%m-%d %H:%M")) " – " (z.format("%Y-%m-%d %H:%M")) " UTC" }
                        }
                        td { @if b.applies_to_manual { "held (not admins')" } @else { "not held" } }
                        td { @if let Some(t) = b.active_until { (t.format("%Y-%m-%d %H:%M UTC")) } @else { span.muted { "not now" } } }
                        td { @if v.may("DELETE", "/api/v1/blackouts/{id}") {
                            form method="post" action=(format!("/blackouts/{}/delete", b.id)) {
                                (layout::csrf(v)) button type="submit" { "Delete" }
                            }
                        } }
                    }
                } }
            } }
        }
        @if v.may("POST", "/api/v1/blackouts") { (blackout_form(v)) }
    };
    let status = if s.error.is_some() || s.blackout_error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, layout::page(v, Area::Schedules, "Schedules", body)).into_response())
}

fn schedule_form(v: &Viewer, s: &State2) -> Markup {
    let f = &s.form;
    let tz = filled(&f.timezone).unwrap_or_else(|| "UTC".into());
    let overlap = text(&f.overlap);
    html! {
        section.card {
            h2 { "Schedule a template" }
            @if let Some(e) = &s.error { p.error #schedule-error role="alert" { (e) } }
            form #schedule-form method="post" action="/schedules/preview" autocomplete="off" {
                (layout::csrf(v))
                div.row {
                    div { label for="s-name" { "Name" } input #s-name name="name" required value=(text(&f.name)); }
                    div { label for="s-template" { "Template (name)" } input #s-template name="template" required value=(text(&f.template)); }
                    div { label for="s-cron" { "Cron (minute hour day month weekday; seconds first optional)" } input #s-cron name="cron" required value=(text(&f.cron)) placeholder="30 2 * * *"; }
                    div { label for="s-timezone" { "Time zone" } input #s-timezone name="timezone" value=(tz); }
                    div {
                        label for="s-overlap" { "When the previous run is still going" }
                        select #s-overlap name="overlap" {
                            option value="skip" selected[overlap != "queue"] { "skip the slot" }
                            option value="queue" selected[overlap == "queue"] { "queue another run" }
                        }
                    }
                }
                @if let Some(p) = &s.preview {
                    h3 { "Next five runs (" (p.timezone) ")" }
                    ol #schedule-preview { @for l in &p.local { li { (l) } } }
                    button.primary #schedule-save type="submit" formaction="/schedules" { "Save schedule" }
                    " "
                }
                button #schedule-preview-button type="submit" { "Preview the next runs" }
            }
        }
    }
}

fn blackout_form(v: &Viewer) -> Markup {
    html! {
        section.card {
            h2 { "Add a weekly blackout window" }
            form #blackout-form method="post" action="/blackouts" autocomplete="off" {
                (layout::csrf(v))
                div.row {
                    div { label for="b-name" { "Name" } input #b-name name="name" required; }
                    div { label for="b-env" { "Environment (empty: all)" } input #b-env name="environment"; }
                    div { label for="b-from" { "From" } input #b-from name="weekly_start" required placeholder="Fri 16:00"; }
                    div { label for="b-to" { "To" } input #b-to name="weekly_end" required placeholder="Mon 08:00"; }
                    div { label for="b-tz" { "Time zone" } input #b-tz name="timezone" value="UTC"; }
                    div { label { input name="applies_to_manual" type="checkbox" value="on"; " Also hold operators' manual launches" } }
                }
                button.primary type="submit" { "Add window" }
            }
        }
    }
}

/// GET /schedules
pub async fn list(State(st): State<Arc<WebState>>, Extension(v): Extension<Viewer>) -> PageResult {
    list_page(st, &v, State2::default()).await
}

/// POST /schedules/preview: the form again, with the next five runs and the save button.
pub async fn preview(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Form(f): Form<ScheduleForm>,
) -> PageResult {
    let req = PreviewRequest {
        cron: text(&f.cron),
        timezone: filled(&f.timezone).unwrap_or_else(|| "UTC".into()),
    };
    let mut s = State2 {
        form: f,
        ..State2::default()
    };
    match service::schedules::preview(&req)
        .await
        .map_err(ApiError::from)
    {
        Ok(p) => s.preview = Some(p),
        Err(e) if e.status.is_client_error() => s.error = Some(e.message),
        Err(e) => return Err(e.into()),
    }
    list_page(st, &v, s).await
}

/// POST /schedules
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Form(f): Form<ScheduleForm>,
) -> PageResult {
    let template = text(&f.template);
    let req = NewScheduleRequest {
        name: text(&f.name),
        template: match template.parse::<i64>() {
            Ok(id) => IdOrName::Id(id),
            Err(_) => IdOrName::Name(template),
        },
        cron: text(&f.cron),
        timezone: filled(&f.timezone).unwrap_or_else(|| "UTC".into()),
        enabled: true,
        ends_at: None,
        answers: None,
        overlap: Some(if text(&f.overlap) == "queue" {
            OverlapRule::Queue
        } else {
            OverlapRule::Skip
        }),
    };
    match service::schedules::create(&st.core, &v.caller, req)
        .await
        .map_err(ApiError::from)
    {
        Ok(s) => Ok(Redirect::to(&format!("/schedules/{}", s.id)).into_response()),
        Err(e) if e.status.is_client_error() => {
            let s = State2 {
                form: f,
                error: Some(e.message),
                ..State2::default()
            };
            list_page(st, &v, s).await
        }
        Err(e) => Err(e.into()),
    }
}

/// GET /schedules/{id}: a schedule and its runs.
pub async fn show(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i32>,
) -> PageResult {
    let key = id.to_string();
    let s = or_page(service::schedules::get(&st.core, &key).await)?;
    let runs = or_page(service::schedules::runs(&st.core, &key, &ALL).await)?;
    let body = html! {
        dl #schedule {
            dt { "template" } dd { (s.template.name) }
            dt { "cron" } dd { code { (s.cron) } " (" (s.timezone) ")" }
            dt { "overlap" } dd { (s.overlap) }
            dt { "next run" } dd { @if let Some(t) = s.next_run_at { (t.format("%Y-%m-%d %H:%M:%S UTC")) } @else { "none" } }
            dt { "enabled" } dd { (s.enabled) }
        }
        h2 { "Runs" }
        @if runs.items.is_empty() { p.muted { "No run yet." } } @else {
            div.scroll { table #schedule-runs {
                thead { tr { th scope="col" { "slot (UTC)" } th scope="col" { "status" } th scope="col" { "jobs" } th scope="col" { "reason" } } }
                tbody { @for r in &runs.items { tr {
                    td { (r.slot_at.format("%Y-%m-%d %H:%M:%S")) }
                    td { (r.status) }
                    td { (r.jobs) }
                    td { (r.reason.as_deref().unwrap_or("")) }
                } } }
            } }
        }
    };
    Ok(layout::page(&v, Area::Schedules, &format!("Schedule {}", s.name), body).into_response())
}

/// POST /blackouts
pub async fn create_blackout(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Form(f): Form<BlackoutForm>,
) -> PageResult {
    let req = NewBlackoutRequest {
        name: text(&f.name),
        environment: filled(&f.environment),
        timezone: filled(&f.timezone).unwrap_or_else(|| "UTC".into()),
        weekly_start: filled(&f.weekly_start),
        weekly_end: filled(&f.weekly_end),
        starts_at: None,
        ends_at: None,
        applies_to_manual: f.applies_to_manual.is_some(),
        enabled: true,
    };
    match service::blackouts::create(&st.core, &v.caller, req)
        .await
        .map_err(ApiError::from)
    {
        Ok(_) => Ok(Redirect::to("/schedules").into_response()),
        Err(e) if e.status.is_client_error() => {
            let s = State2 {
                blackout_error: Some(e.message),
                ..State2::default()
            };
            list_page(st, &v, s).await
        }
        Err(e) => Err(e.into()),
    }
}

/// POST /blackouts/{id}/delete
pub async fn delete_blackout(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i32>,
) -> PageResult {
    or_page(service::blackouts::delete(&st.core, &v.caller, &id.to_string()).await)?;
    Ok(Redirect::to("/schedules").into_response())
}
