//! Jobs: the list with filters and pages, a job's page (status, timings, agent, why it waits,
//! cancel, and the log viewer), and the whole log as text. The log viewer is the script's: it
//! reads pages of the log from the API and keeps only the lines on screen in the page, so a
//! job of 200,000 lines stays as quick as one of twenty.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::Extension;
use maud::html;
use outpost_api::{JobQuery, JobView};
use serde::Deserialize;

use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::{Path, Query};
use crate::http::WebState;
use crate::model::{JobStatus, Paging};
use crate::service;

const PER_PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    playbook: Option<String>,
    server: Option<String>,
    /// Links made before cursors page by offset; they still work.
    offset: Option<i64>,
    after: Option<String>,
}

fn id_of(s: &Option<String>) -> Option<i32> {
    s.as_deref().and_then(|s| s.trim().parse().ok())
}

/// GET /jobs
pub async fn list(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let status: Option<JobStatus> = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok());
    let after = q.after.clone().filter(|a| !a.is_empty());
    let query = JobQuery {
        status,
        playbook: id_of(&q.playbook),
        server: id_of(&q.server),
        limit: Some(PER_PAGE),
        offset: q.offset.filter(|_| after.is_none()),
        after: after.clone(),
        ..Default::default()
    };
    let page = or_page(service::jobs::list(&st.core, &(query.clone())).await)?;
    let playbooks = or_page(
        st.core
            .store
            .list_playbooks(None, Paging::new(1000, 0))
            .await,
    )?;
    let servers = or_page(
        st.core
            .store
            .list_servers(&Default::default(), Paging::new(1000, 0))
            .await,
    )?;
    let base = layout::with_filters(
        "/jobs",
        &[
            ("status", q.status.as_deref()),
            ("playbook", q.playbook.as_deref()),
            ("server", q.server.as_deref()),
        ],
    );
    let body = html! {
        form.filters method="get" action="/jobs" {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in [JobStatus::Pending, JobStatus::Running, JobStatus::Success, JobStatus::Failed, JobStatus::Cancelled] {
                        option value=(s.as_str()) selected[status == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "Playbook "
                select name="playbook" {
                    option value="" { "any" }
                    @for p in &playbooks.items {
                        option value=(p.id.0) selected[query.playbook == Some(p.id.0)] { (p.name) }
                    }
                }
            }
            label { "Server "
                select name="server" {
                    option value="" { "any" }
                    @for s in &servers.items {
                        option value=(s.id.0) selected[query.server == Some(s.id.0)] { (s.hostname) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if v.may("POST", "/api/v1/jobs") { a.button href="/jobs/new" { "Launch" } }
        }
        (table(&page.items))
        (layout::cursor_pager(&base, &page, after.is_some()))
    };
    Ok(layout::page(&v, Area::Jobs, "Jobs", body).into_response())
}

/// A table of jobs, newest first.
pub fn table(items: &[JobView]) -> maud::Markup {
    html! {
        @if items.is_empty() {
            p.muted { "No job matches." }
        } @else {
            div.scroll {
                table.jobs {
                    thead { tr {
                        th scope="col" { "job" } th scope="col" { "status" } th scope="col" { "playbook" }
                        th scope="col" { "server" } th scope="col" { "agent" } th scope="col" { "created" } th scope="col" { "took" }
                    } }
                    tbody {
                        @for j in items {
                            tr {
                                td { a href=(format!("/jobs/{}", j.id)) { code { (&j.id[..8]) } } }
                                td { (layout::job_status(j.status)) }
                                td { (j.playbook.name) }
                                td { (j.server.name) }
                                td { (j.agent.as_ref().map(|a| a.name.as_str()).unwrap_or("—")) }
                                td { (layout::time(Some(j.created_at))) }
                                td { @if let (Some(a), Some(b)) = (j.started_at, j.completed_at) { (layout::span(b - a)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Task rows a job page shows at most (failed ones first).
const RESULT_ROWS: i64 = 500;

/// The recap and the task results, failed, unreachable and rescued tasks first. Names and
/// messages come from the managed host: maud escapes them.
fn results_card(r: &outpost_api::JobResults) -> maud::Markup {
    use outpost_api::TaskStatus;
    let bad = |s: TaskStatus| matches!(s, TaskStatus::Failed | TaskStatus::Unreachable);
    html! {
        section.card #job-results {
            h2 { "Results" }
            @if r.unreachable {
                p.error #job-unreachable { "Unreachable: the server could not be reached (this is not a failure of the playbook)." }
            }
            @if let Some(c) = &r.recap {
                p #job-recap {
                    span.label { "ok " (c.ok) } " "
                    span.label { "changed " (c.changed) } " "
                    span.label { "unreachable " (c.unreachable) } " "
                    span.label { "failed " (c.failed) } " "
                    span.label { "skipped " (c.skipped) } " "
                    span.label { "rescued " (c.rescued) } " "
                    span.label { "ignored " (c.ignored) }
                }
            }
            @if r.results.is_empty() {
                p.muted { "No task results yet." }
            } @else {
                // Long task names and messages scroll inside the card, not the page.
                div.scroll {
                    table #job-tasks {
                        thead { tr { th { "Task" } th { "Host" } th { "Status" } th { "Duration" } th { "Message" } } }
                        tbody {
                            @for t in &r.results {
                                tr.failed[bad(t.status)] data-status=(t.status.as_str()) {
                                    td { (t.task) }
                                    td { (t.host) }
                                    td { (t.status.as_str()) }
                                    td { (format!("{:.1} s", t.duration_ms as f64 / 1000.0)) }
                                    td { (t.message.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
                @if r.total > r.results.len() as i64 {
                    p.muted { (r.results.len()) " of " (r.total) " task results shown; the API has them all." }
                }
            }
        }
    }
}

/// GET /jobs/{job_id}
pub async fn show(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(job_id): Path<String>,
) -> PageResult {
    let j = or_page(service::jobs::get(&st.core, &job_id).await)?;
    // The rest of the page from the read replica too, while it is good.
    let (last, run, archived) = or_page(
        st.core
            .store
            .read(|store| {
                let id = &j.id;
                async move {
                    let job = service::jobs::by_uuid(&store, id).await?;
                    // An archived job's lines are in its archive, no longer in the database.
                    let archive = store.log_archive(job.id).await?;
                    let last = match &archive {
                        Some(a) => a.last_line,
                        None => store.last_line_number(job.id).await?,
                    };
                    // The run the job belongs to (every launch makes one since runs came).
                    let run = match job.run_id {
                        Some(r) => Some(store.get_run(r).await?),
                        None => None,
                    };
                    Ok::<_, crate::service::ServiceError>((
                        last,
                        run.map(|r| r.run_id.to_string()),
                        archive.map(|a| a.archived_at),
                    ))
                }
            })
            .await,
    )?;
    let results = or_page(
        st.core
            .store
            .read(|store| {
                let id = &j.id;
                async move {
                    let job = service::jobs::by_uuid(&store, id).await?;
                    service::results::job_summary(&store, &job, RESULT_ROWS).await
                }
            })
            .await,
    )?;
    let final_ = j.status.is_final();
    let opts = &j.run_options;
    let body = html! {
        section.card.job #job data-job=(j.id) data-status=(j.status.as_str()) {
            dl.facts {
                dt { "Status" } dd #job-status { (layout::job_status(j.status)) }
                dt { "Playbook" } dd { (j.playbook.name) }
                dt { "Server" } dd { (j.server.name) }
                @if let Some(r) = &run {
                    dt { "Run" } dd { a #job-run href=(format!("/runs/{r}")) { code { (r.get(..8).unwrap_or(r)) } } }
                }
                @if let Some(t) = &j.template {
                    dt { "Template" } dd #job-template { (t.name) }
                }
                @if let Some(secrets) = j.secret_answers.as_ref().filter(|s| !s.is_empty()) {
                    dt { "Secret answers" } dd #job-secret-answers {
                        @for (name, mask) in secrets { code { (name) } " " (mask) " " }
                    }
                }
                @if let Some(r) = &j.revision {
                    // The tree the job runs: its project, the git commit and the revision's digest.
                    dt { "Revision" } dd #job-revision {
                        (r.project.name) " "
                        @if let Some(c) = &r.commit { "commit " code { (c.get(..12).unwrap_or(c)) } " " }
                        "digest " code title=(r.digest) { (r.digest.get(..12).unwrap_or(&r.digest)) }
                    }
                }
                dt { "Agent" } dd #job-agent { (j.agent.as_ref().map(|a| a.name.as_str()).unwrap_or("—")) }
                dt { "Created" } dd { (layout::time(Some(j.created_at))) }
                dt { "Started" } dd #job-started { (layout::time(j.started_at)) }
                dt { "Finished" } dd #job-completed { (layout::time(j.completed_at)) }
                dt { "Exit code" } dd #job-exit { (j.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into())) }
                @if opts.check || opts.diff || opts.verbosity > 0 || !opts.tags.is_empty() || !opts.skip_tags.is_empty() {
                    dt { "Options" } dd {
                        @if opts.check { span.label { "check" } " " }
                        @if opts.diff { span.label { "diff" } " " }
                        @if opts.verbosity > 0 { span.label { "-" (("v".repeat(opts.verbosity.into()))) } " " }
                        @if !opts.tags.is_empty() { span.label { "tags: " (opts.tags.join(",")) } " " }
                        @if !opts.skip_tags.is_empty() { span.label { "skip: " (opts.skip_tags.join(",")) } }
                    }
                }
            }
            p.notice #job-pending hidden[j.status != JobStatus::Pending || j.pending_reason.is_none()] {
                "Waiting: " span #job-pending-reason { (j.pending_reason.as_deref().unwrap_or("")) }
            }
            p.error #job-error hidden[j.error_message.is_none()] { (j.error_message.as_deref().unwrap_or("")) }
            div.actions {
                @if !final_ && v.may("POST", "/api/v1/jobs/{job_id}/cancel") {
                    form #cancel-form method="post" action=(format!("/jobs/{}/cancel", j.id)) {
                        (layout::csrf(&v))
                        button.danger #cancel type="submit" disabled[j.cancel_requested_at.is_some()] {
                            @if j.cancel_requested_at.is_some() { "Cancel requested" } @else { "Cancel job" }
                        }
                    }
                }
                a.button href=(format!("/jobs/{}/log.txt", j.id)) download { "Download log" }
            }
        }
        (results_card(&results))
        section.card.log {
            div.logbar {
                h2 { "Log " span.muted #log-count { (last) " lines" } }
                @if let Some(at) = archived {
                    span.label #log-archived title="Past the retention: read from the archive" { "archived " (layout::time(Some(at))) }
                }
                form #log-search role="search" {
                    label.sr for="log-q" { "Search the log" }
                    input #log-q type="search" placeholder="Search the log" maxlength="200";
                    button type="submit" { "Find next" }
                }
                button #log-first-error type="button" { "First error" }
                label { input #log-follow type="checkbox" checked[!final_]; " Follow" }
            }
            p.muted #log-note role="status" {}
            div #log-view tabindex="0" aria-label="Job log" data-job=(j.id) data-last=(last) data-final=(final_) {
                div #log-spacer { div #log-rows {} }
            }
            noscript { p { "The log viewer needs JavaScript; " a href=(format!("/jobs/{}/log.txt", j.id)) { "download the log" } " instead." } }
        }
    };
    Ok(layout::page(&v, Area::Jobs, &format!("Job {}", &j.id[..8]), body).into_response())
}

/// POST /jobs/{job_id}/cancel
pub async fn cancel(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(job_id): Path<String>,
) -> PageResult {
    let r = or_page(service::jobs::cancel(&st.core, &v.caller, &job_id).await)?;
    Ok(Redirect::to(&format!("/jobs/{}", r.job.id)).into_response())
}

/// Lines as the download's text, one a line.
fn text_of(lines: &[crate::model::LogLine]) -> Result<String, std::io::Error> {
    let mut chunk = String::new();
    for l in lines {
        chunk.push_str(&l.content);
        chunk.push('\n');
    }
    Ok(chunk)
}

/// GET /jobs/{job_id}/log.txt: every line, streamed from the database a page at a time (from
/// the archive, for an archived job).
pub async fn download(State(st): State<Arc<WebState>>, Path(job_id): Path<String>) -> PageResult {
    // The job and its lines from the read replica while it is good.
    let job = or_page(
        st.core
            .store
            .read(|s| {
                let job_id = &job_id;
                async move { service::jobs::by_uuid(&s, job_id).await }
            })
            .await,
    )?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    let store = st.core.store.clone();
    let archive = st.core.archive.clone();
    tokio::spawn(async move {
        let fail = |e: String| Err(std::io::Error::other(e));
        match store.log_archive(job.id).await {
            Ok(Some(a)) => {
                // Past the retention: the archive, a frame (1,000 lines) at a time.
                let mut frames = match crate::archive::jobs::Frames::open(&archive, &a, 0).await {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = tx.send(fail(e.to_string())).await;
                        return;
                    }
                };
                loop {
                    let chunk = match frames.next_lines().await {
                        Ok(Some(lines)) => text_of(&lines),
                        Ok(None) => return,
                        Err(e) => fail(e.to_string()),
                    };
                    let failed = chunk.is_err();
                    if tx.send(chunk).await.is_err() || failed {
                        return;
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(fail(e.to_string())).await;
                return;
            }
        }
        let mut after = 0;
        loop {
            // 500 lines of at most 60,000 bytes: a bounded read however long the lines are.
            // Each chunk from the read replica while it is good: the line number is the
            // cursor, so a chunk read again from the primary continues where it stopped.
            let lines = match store
                .read(|s| async move { s.read_log_lines(job.id, after, 500).await })
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(fail(e.to_string())).await;
                    return;
                }
            };
            let Some(last) = lines.last().map(|l| l.line_number) else {
                return;
            };
            if tx.send(text_of(&lines)).await.is_err() {
                return;
            }
            after = last;
        }
    });
    let name = format!("outpost-job-{}.log", job.job_id);
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}
