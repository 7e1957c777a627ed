//! A job's log: pages by line number, and a live follow over Server-Sent Events — one event per
//! line with `id: <line_number>` (resumable with `Last-Event-ID`), then an `end` event with the
//! outcome. A finished job replays and ends.
//!
//! Followers of one job share one database poll: the [`FollowHub`] keeps a feed per followed
//! job, polled by one task while anyone listens. A follower first replays from the database,
//! then takes the feed; any gap (it joined late, or fell behind) is filled from the database,
//! so it sees every line once and in order.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use outpost_api::{LogEnd, LogLineView, LogPage, LogQuery};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, Json, Path, Query};
use super::WebState;
use crate::model::{Job, JobId, LogLine};
use crate::service::jobs::{by_uuid, job_uuid};
use crate::service::ServiceError;
use crate::store::Store;

/// How often a followed job is polled.
const POLL: Duration = Duration::from_millis(250);
/// Lines read from the database at a time.
const CHUNK: i64 = 1_000;
/// The text of one page of a log at most (a page of 10,000 lines of 64 KiB would be 640 MiB).
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A page's line, moved rather than copied: a page holds up to 4 MiB of text.
fn into_view(l: LogLine) -> LogLineView {
    LogLineView {
        line_number: l.line_number,
        content: l.content,
        level: l.log_level,
        timestamp: l.timestamp,
    }
}

fn line_view(l: &LogLine) -> LogLineView {
    LogLineView {
        line_number: l.line_number,
        content: l.content.clone(),
        level: l.log_level.clone(),
        timestamp: l.timestamp,
    }
}

fn end_of(job: &Job, last_line: i32) -> LogEnd {
    LogEnd {
        status: job.status,
        exit_code: job.exit_code,
        error_message: job.error_message.clone(),
        last_line,
    }
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/logs", tag = "jobs",
    params(("job_id" = String, Path), LogQuery),
    responses((status = 200, body = LogPage), (status = 404, body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody, description = "`level` over 20 characters or `q` over 200 bytes")))]
pub async fn page(
    State(st): State<Arc<WebState>>,
    Path(job_id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<LogPage>> {
    let after = q.after.unwrap_or(0).max(0);
    let limit = q
        .limit
        .unwrap_or(1_000)
        .clamp(1, crate::store::logs::MAX_PAGE_LINES);
    let level = q.level.as_deref().map(str::trim).filter(|l| !l.is_empty());
    let needle = q.q.as_deref().filter(|n| !n.is_empty());
    if level.is_some_and(|l| l.len() > 20) {
        return Err(ApiError::unprocessable("level: at most 20 characters"));
    }
    if needle.is_some_and(|n| n.len() > 200) {
        return Err(ApiError::unprocessable("q: at most 200 bytes"));
    }
    // The whole page from one database (the replica while it is good): `complete` is only
    // true if the job's status and its lines were read from the same one.
    let asked = PageAsk {
        job_id: &job_id,
        after,
        limit,
        level,
        needle,
        archive: &st.core.archive,
    };
    let page = st.core.store.read(|store| page_from(store, &asked)).await?;
    Ok(Json(page))
}

/// What a log page asks for, checked.
struct PageAsk<'a> {
    job_id: &'a str,
    after: i32,
    limit: i64,
    level: Option<&'a str>,
    needle: Option<&'a str>,
    archive: &'a crate::archive::Archive,
}

async fn page_from(store: Store, a: &PageAsk<'_>) -> Result<LogPage, ServiceError> {
    let (job, has_archive) = store.get_job_for_log(job_uuid(a.job_id)?).await?;
    let (after, limit, level, needle) = (a.after, a.limit, a.level, a.needle);
    let archived = match has_archive {
        true => store.log_archive(job.id).await?,
        false => None,
    };
    if let Some(ar) = archived {
        let filter = crate::archive::jobs::Filter { level, needle };
        let p = crate::archive::jobs::read_page(
            a.archive,
            &ar,
            after,
            limit as usize,
            filter,
            MAX_PAGE_BYTES,
        )
        .await
        .map_err(|e| {
            ServiceError::new(
                crate::service::Kind::Internal,
                format!("reading the job's archived log: {e}"),
            )
        })?;
        return Ok(LogPage {
            lines: p.lines.into_iter().map(into_view).collect(),
            next_after: p.next_after,
            job_status: job.status,
            complete: job.status.is_final() && p.at_end,
            last_line: ar.last_line,
            archived: true,
        });
    }
    let page = store
        .log_page(job.id, after, (level, needle), limit, MAX_PAGE_BYTES)
        .await?;
    let (lines, cut, more) = (page.lines, page.cut, page.more);
    let next_after = lines.last().map(|l| l.line_number).unwrap_or(after);
    let complete = job.status.is_final() && !cut && !more;
    // A page of every line to the end ends with the log's last line; otherwise ask.
    let last_line = match (level.or(needle), cut || more, lines.last()) {
        (None, false, Some(l)) => l.line_number,
        (None, false, None) if after == 0 => 0,
        _ => store.last_line_number(job.id).await?,
    };
    Ok(LogPage {
        lines: lines.into_iter().map(into_view).collect(),
        next_after,
        job_status: job.status,
        complete,
        last_line,
        archived: false,
    })
}

/// What a feed carries.
#[derive(Debug, Clone)]
enum FeedEvent {
    Lines(Arc<Vec<LogLine>>),
    End,
}

/// One polled job, alive while a follower holds it.
struct Feed {
    tx: broadcast::Sender<FeedEvent>,
}

/// The shared polls of followed jobs.
pub struct FollowHub {
    store: Store,
    stop: CancellationToken,
    feeds: Mutex<HashMap<JobId, Weak<Feed>>>,
}

impl FollowHub {
    pub fn new(store: Store, stop: CancellationToken) -> FollowHub {
        FollowHub {
            store,
            stop,
            feeds: Mutex::new(HashMap::new()),
        }
    }

    /// Joins (or starts) the feed of `job`.
    fn subscribe(&self, job: JobId) -> (Arc<Feed>, broadcast::Receiver<FeedEvent>) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.retain(|_, f| f.strong_count() > 0);
        if let Some(feed) = feeds.get(&job).and_then(Weak::upgrade) {
            let rx = feed.tx.subscribe();
            return (feed, rx);
        }
        let (tx, rx) = broadcast::channel(64);
        let feed = Arc::new(Feed { tx });
        feeds.insert(job, Arc::downgrade(&feed));
        tokio::spawn(poll(
            self.store.clone(),
            job,
            Arc::downgrade(&feed),
            self.stop.clone(),
        ));
        (feed, rx)
    }

    /// Jobs polled right now (for tests and metrics).
    pub fn active(&self) -> usize {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.values().filter(|f| f.strong_count() > 0).count()
    }
}

/// Polls one job while its feed has followers: new lines, then the end once the job is final
/// and every line is out.
async fn poll(store: Store, job: JobId, feed: Weak<Feed>, stop: CancellationToken) {
    let mut cursor = match store.log_extent(job).await {
        Ok((max, _)) => max,
        Err(_) => 0,
    };
    loop {
        let Some(f) = feed.upgrade() else { return };
        let final_before = store
            .get_job(job)
            .await
            .map(|j| j.status.is_final())
            .unwrap_or(false);
        loop {
            match store.read_log_lines(job, cursor, CHUNK).await {
                Ok(lines) if !lines.is_empty() => {
                    cursor = lines.last().map(|l| l.line_number).unwrap_or(cursor);
                    let _ = f.tx.send(FeedEvent::Lines(Arc::new(lines)));
                }
                _ => break,
            }
        }
        // A job final before this read has every line stored (outcomes are recorded only
        // after their lines): nothing more will come.
        if final_before {
            let _ = f.tx.send(FeedEvent::End);
            return;
        }
        drop(f);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The next line a follower wants: from `Last-Event-ID`, else `?after=`, else the first.
fn resume_point(headers: &HeaderMap, q: &LogQuery) -> Result<i32, ApiError> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a line number")),
        None => Ok(q.after.unwrap_or(0).max(0)),
    }
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/logs/stream", tag = "jobs",
    params(("job_id" = String, Path), LogQuery,
           ("Last-Event-ID" = Option<i32>, Header, description = "Resume after this line")),
    responses((status = 200, description = "Server-Sent Events: `line` events (id = line number, data = LogLineView), then one `end` event (data = LogEnd)", content_type = "text/event-stream"),
              (status = 404, body = outpost_api::ErrorBody), (status = 429, body = outpost_api::ErrorBody)))]
pub async fn stream(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<axum::response::Response> {
    let job = by_uuid(&st.core.store, &job_id).await?;
    let last = resume_point(&headers, &q)?;
    let mut pass = st.live.open(&caller)?;
    let (tx, rx) = mpsc::channel(256);
    let st2 = st.clone();
    tokio::spawn(async move {
        let stop = st2.core.stop.clone();
        tokio::select! {
            _ = follow(&st2, job.id, last, &tx) => {}
            _ = stop.cancelled() => {}
            _ = tx.closed() => {}
            // Logout, a password change, deactivation or expiry: the stream goes with it.
            _ = pass.ended() => {}
        }
    });
    use axum::response::IntoResponse;
    Ok(Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

type Out = mpsc::Sender<Result<Event, Infallible>>;

async fn send_line(tx: &Out, l: &LogLine) -> bool {
    let data = serde_json::to_string(&line_view(l)).unwrap_or_default();
    tx.send(Ok(Event::default()
        .id(l.line_number.to_string())
        .event("line")
        .data(data)))
        .await
        .is_ok()
}

/// Sends the lines after `*last` up to `through` (or to the end) from the database.
async fn catch_up(
    store: &Store,
    job: JobId,
    last: &mut i32,
    through: Option<i32>,
    tx: &Out,
) -> bool {
    loop {
        let Ok(lines) = store.read_log_lines(job, *last, CHUNK).await else {
            return false;
        };
        if lines.is_empty() {
            return true;
        }
        for l in &lines {
            if through.is_some_and(|t| l.line_number > t) {
                return true;
            }
            if !send_line(tx, l).await {
                return false;
            }
            *last = l.line_number;
        }
    }
}

async fn send_end(store: &Store, job: JobId, last: i32, tx: &Out) {
    if let Ok(j) = store.get_job(job).await {
        let data = serde_json::to_string(&end_of(&j, last)).unwrap_or_default();
        let _ = tx.send(Ok(Event::default().event("end").data(data))).await;
    }
}

async fn follow(st: &WebState, job: JobId, mut last: i32, tx: &Out) {
    let store = &st.core.store;
    if let Ok(Some(a)) = store.log_archive(job).await {
        // Archived: final, and its lines are in the archive only.
        let Ok(mut frames) = crate::archive::jobs::Frames::open(&st.core.archive, &a, last).await
        else {
            return;
        };
        loop {
            match frames.next_lines().await {
                Ok(Some(lines)) => {
                    for l in &lines {
                        if !send_line(tx, l).await {
                            return;
                        }
                        last = l.line_number;
                    }
                }
                Ok(None) => break,
                // No end event: the follower sees the stream break, not a short log.
                Err(_) => return,
            }
        }
        send_end(store, job, last, tx).await;
        return;
    }
    // Join the feed first, so nothing published while we replay is missed.
    let (_feed, mut rx) = st.follow.subscribe(job);
    if !catch_up(store, job, &mut last, None, tx).await {
        return;
    }
    if let Ok(j) = store.get_job(job).await {
        if j.status.is_final() && catch_up(store, job, &mut last, None, tx).await {
            send_end(store, job, last, tx).await;
            return;
        }
    }
    loop {
        match rx.recv().await {
            Ok(FeedEvent::Lines(lines)) => {
                for l in lines.iter() {
                    if l.line_number <= last {
                        continue;
                    }
                    if l.line_number > last + 1
                        && !catch_up(store, job, &mut last, Some(l.line_number - 1), tx).await
                    {
                        return;
                    }
                    if !send_line(tx, l).await {
                        return;
                    }
                    last = l.line_number;
                }
            }
            Ok(FeedEvent::End) | Err(broadcast::error::RecvError::Closed) => {
                if catch_up(store, job, &mut last, None, tx).await {
                    send_end(store, job, last, tx).await;
                }
                return;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if !catch_up(store, job, &mut last, None, tx).await {
                    return;
                }
            }
        }
    }
}
