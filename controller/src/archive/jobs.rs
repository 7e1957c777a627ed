//! A job's output in the archive: written and verified ([`archive_job`]), the pass over every
//! due job ([`archive_expired`]), the removal of the rows of archived jobs
//! ([`remove_archived`], batch DELETEs; a partition drop can stand beside it), and the reading
//! of an archived log a page at a time ([`read_page`], [`Frames`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::format::{Index, Writer};
use super::{Archive, ArchiveError};
use crate::model::{JobId, LogLine, TicketPriority};
use crate::store::archives::{DueJob, LogArchive};
use crate::store::audit::Actor;
use crate::store::tickets::NewTicket;
use crate::store::Store;
use crate::text::{fit_bytes, TEXT_BYTES};

/// Lines read from the database at a time while archiving, and rows deleted per statement.
const BATCH: i64 = 1_000;
/// Jobs looked at per query of a pass.
const JOBS_PER_QUERY: i64 = 100;
/// Frames a filtered read decompresses at most before answering with where it got to (a
/// search in a huge archived log goes on from `next_after`, page after page).
const SCAN_FRAMES: usize = 200;

/// One line in the archive: its JSON record (short keys: they repeat on every line).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    n: i32,
    t: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<String>,
    c: String,
}

impl From<Record> for LogLine {
    fn from(r: Record) -> LogLine {
        LogLine {
            line_number: r.n,
            content: r.c,
            log_level: r.l,
            timestamp: r.t,
        }
    }
}

/// The key of a job's archive object.
pub fn job_key(job_uuid: &str) -> String {
    format!("jobs/{job_uuid}.olog")
}

/// Writes a job's whole output to the archive, reads it back and verifies it, checks that the
/// database still holds exactly those lines, and records the archive. Only then may the
/// job's rows go.
pub async fn archive_job(
    store: &Store,
    archive: &Archive,
    job: &DueJob,
) -> Result<LogArchive, ArchiveError> {
    let key = job_key(&job.job_id);
    let mut w = Writer::new();
    let (mut after, mut last_line) = (0, 0);
    loop {
        let lines = store.read_log_lines(job.id, after, BATCH).await?;
        let Some(last) = lines.last().map(|l| l.line_number) else {
            break;
        };
        for l in lines {
            let n = l.line_number;
            let rec = Record {
                n,
                t: l.timestamp,
                l: l.log_level,
                c: l.content,
            };
            let json = serde_json::to_vec(&rec).map_err(|_| ArchiveError::Encode(n.into()))?;
            w.push(n.into(), &json)
                .map_err(|e| ArchiveError::format(&key, e))?;
        }
        after = last;
        last_line = last;
    }
    let (object, index) = w.finish().map_err(|e| ArchiveError::format(&key, e))?;
    let bytes = object.len() as i64;
    archive.put_verified(&key, object, &index).await?;
    let (max, count) = store.log_extent(job.id).await?;
    if max != last_line || count != index.records as i64 {
        return Err(ArchiveError::format(
            &key,
            super::format::FormatError::Corrupt(format!(
                "the job now has {count} lines up to {max}, the archive {} up to {last_line}",
                index.records
            )),
        ));
    }
    let row = LogArchive {
        job_id: job.id,
        location: key,
        line_count: index.records as i64,
        last_line,
        bytes,
        sha256: index.sha256_hex(),
        archived_at: Utc::now(),
    };
    store.insert_log_archive(&row).await?;
    Ok(row)
}

/// Reads a job's archive object back whole and checks it against its record: the line
/// count and the SHA-256 of its lines (a corrupted or truncated object is an error).
pub async fn verify_job_archive(archive: &Archive, a: &LogArchive) -> Result<(), ArchiveError> {
    let object = archive.sink.get(&a.location).await?;
    let mut sha = [0u8; 32];
    hex::decode_to_slice(&a.sha256, &mut sha).map_err(|_| {
        ArchiveError::format(
            &a.location,
            super::format::FormatError::Corrupt("the recorded SHA-256 is not hex".into()),
        )
    })?;
    let records = u64::try_from(a.line_count).unwrap_or(0);
    super::format::verify(&object, records, &sha)
        .map_err(|e| ArchiveError::format(&a.location, e))?;
    Ok(())
}

/// What one archive pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub archived: u64,
    pub failed: u64,
}

/// The title of the ticket a job's failed archive raises (one per job while it is open).
pub fn failure_title(job_uuid: &str) -> String {
    format!("Archive of job {job_uuid} failed: its output is kept")
}

/// Archives every finished job whose last line is older than `cutoff` and has no archive. A
/// job that fails keeps its rows, is logged, and raises one ticket (not one per pass); the
/// others go on.
pub async fn archive_expired(
    store: &Store,
    archive: &Archive,
    cutoff: DateTime<Utc>,
    stop: &CancellationToken,
) -> Result<Pass, ArchiveError> {
    let mut pass = Pass::default();
    let mut after = JobId(0);
    while !stop.is_cancelled() {
        let due = store
            .jobs_due_for_archive(cutoff, after, JOBS_PER_QUERY)
            .await?;
        let Some(last) = due.last().map(|j| j.id) else {
            break;
        };
        for job in &due {
            match archive_job(store, archive, job).await {
                Ok(a) => {
                    pass.archived += 1;
                    tracing::info!(job = %job.job_id, lines = a.line_count, bytes = a.bytes, key = %a.location, "job output archived");
                }
                Err(e) => {
                    pass.failed += 1;
                    tracing::warn!(job = %job.job_id, error = %e, "archiving a job's output failed; its lines are kept");
                    if let Err(t) = raise_ticket(store, job, &e).await {
                        tracing::warn!(job = %job.job_id, error = %t, "cannot raise the archive failure's ticket");
                    }
                }
            }
        }
        after = last;
    }
    Ok(pass)
}

async fn raise_ticket(store: &Store, job: &DueJob, e: &ArchiveError) -> crate::store::Result<()> {
    let title = failure_title(&job.job_id);
    if store.has_open_ticket_titled(job.id, &title).await? {
        return Ok(());
    }
    let description = format!(
        "The output of job {} could not be archived, so it stays in the database past the \
         retention until an archive succeeds (every retention pass tries again).\n\nError: {e}\n",
        job.job_id
    );
    store
        .create_ticket(
            &NewTicket {
                job_id: job.id,
                created_by: job.user_id,
                title,
                description: Some(fit_bytes(&description, TEXT_BYTES).into_owned()),
                priority: TicketPriority::High,
            },
            &Actor::system(),
        )
        .await?;
    Ok(())
}

/// Deletes the rows of jobs that have a verified archive, in batches; returns how many went.
pub async fn remove_archived(store: &Store, stop: &CancellationToken) -> crate::store::Result<u64> {
    let mut total = 0;
    'jobs: while !stop.is_cancelled() {
        let jobs = store.archived_jobs_with_rows(JOBS_PER_QUERY).await?;
        if jobs.is_empty() {
            break;
        }
        for a in &jobs {
            loop {
                if stop.is_cancelled() {
                    break 'jobs;
                }
                let n = store.delete_archived_lines(a, BATCH).await?;
                total += n;
                if n < BATCH as u64 {
                    break;
                }
                // Let other writers in between batches.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(total)
}

/// A filter of an archived log, as the log page takes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    pub level: Option<&'a str>,
    /// Matched case-insensitively, as the database's LIKE does.
    pub needle: Option<&'a str>,
}

impl Filter<'_> {
    fn is_empty(&self) -> bool {
        self.level.is_none() && self.needle.is_none()
    }

    fn matches(&self, l: &LogLine, needle_lower: Option<&str>) -> bool {
        self.level.is_none_or(|lv| {
            l.log_level
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(lv))
        }) && needle_lower.is_none_or(|n| l.content.to_lowercase().contains(n))
    }
}

/// One page of an archived log.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub lines: Vec<LogLine>,
    /// Where the next page starts: the last line returned, or for a filtered read the last
    /// line looked at.
    pub next_after: i32,
    /// Nothing after `next_after` (the log's end was reached).
    pub at_end: bool,
}

/// Up to `limit` lines after `after` (those the filter keeps), at most `budget` bytes of text
/// (at least one line), read frame by frame through the index.
pub async fn read_page(
    archive: &Archive,
    a: &LogArchive,
    after: i32,
    limit: usize,
    filter: Filter<'_>,
    budget: usize,
) -> Result<Page, ArchiveError> {
    let index = archive.index(&a.location, object_size(a)).await?;
    let needle = filter.needle.map(str::to_lowercase);
    let mut page = Page {
        lines: Vec::new(),
        next_after: after,
        at_end: true,
    };
    let mut used = 0usize;
    for (scanned, (i, f)) in index.frames_after(after.into()).enumerate() {
        if !filter.is_empty() && scanned >= SCAN_FRAMES {
            page.at_end = false;
            return Ok(page);
        }
        for line in archive.frame(&a.location, i, f).await? {
            let l = parse_line(&a.location, &line)?;
            let n = l.line_number;
            if n <= after {
                continue;
            }
            if page.lines.len() >= limit {
                page.at_end = false;
                return Ok(page);
            }
            if filter.matches(&l, needle.as_deref()) {
                used = used.saturating_add(l.content.len());
                if used > budget && !page.lines.is_empty() {
                    page.at_end = false;
                    return Ok(page);
                }
                page.lines.push(l);
            }
            // A filtered read moves past the lines it looked at, matched or not.
            page.next_after = n;
        }
    }
    Ok(page)
}

fn parse_line(key: &str, line: &str) -> Result<LogLine, ArchiveError> {
    serde_json::from_str::<Record>(line)
        .map(LogLine::from)
        .map_err(|e| {
            ArchiveError::format(
                key,
                super::format::FormatError::Corrupt(format!("a record is not a log line: {e}")),
            )
        })
}

fn object_size(a: &LogArchive) -> u64 {
    u64::try_from(a.bytes).unwrap_or(0)
}

/// An archived log read frame by frame from a line on (the download, the live stream's
/// replay): one frame's lines in memory at a time.
pub struct Frames<'a> {
    archive: &'a Archive,
    key: &'a str,
    index: Index,
    next: usize,
    after: i32,
}

impl<'a> Frames<'a> {
    pub async fn open(
        archive: &'a Archive,
        a: &'a LogArchive,
        after: i32,
    ) -> Result<Frames<'a>, ArchiveError> {
        let index = archive.index(&a.location, object_size(a)).await?;
        let next = index
            .frames
            .partition_point(|f| f.last_key <= i64::from(after));
        Ok(Frames {
            archive,
            key: &a.location,
            index,
            next,
            after,
        })
    }

    /// The next frame's lines after the starting line; `None` at the end.
    pub async fn next_lines(&mut self) -> Result<Option<Vec<LogLine>>, ArchiveError> {
        let Some(f) = self.index.frames.get(self.next) else {
            return Ok(None);
        };
        let i = self.next;
        self.next += 1;
        let mut lines = Vec::with_capacity(f.records as usize);
        for line in self.archive.frame(self.key, i, f).await? {
            let l = parse_line(self.key, &line)?;
            if l.line_number > self.after {
                lines.push(l);
            }
        }
        Ok(Some(lines))
    }
}
