//! store::dashboard — the counts the web UI's dashboard shows, each one small aggregate over
//! an index the seed made for it: jobs by `(status, created_at)`, tickets by
//! `(status, priority)`.

use chrono::{DateTime, Utc};

use super::{on_pool, Result, Store, StoreError};
use crate::model::{JobStatus, TicketPriority, TicketStatus};

/// One ticket's timing, for time-open and time-to-resolve figures.
#[derive(Debug, Clone)]
pub struct TicketTiming {
    pub priority: TicketPriority,
    pub status: TicketStatus,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// How many tickets a timing read looks at, at most.
const TIMING_ROWS: i64 = 10_000;

fn parse<T: std::str::FromStr>(what: &'static str, s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::invalid(what, "holds a value outside its enum"))
}

impl Store {
    /// Jobs created since `since`, counted by status.
    pub async fn job_counts_since(&self, since: DateTime<Utc>) -> Result<Vec<(JobStatus, i64)>> {
        let rows: Vec<(String, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT status, COUNT(*) FROM jobs WHERE created_at >= ? GROUP BY status",
        ).bind(since.naive_utc()).fetch_all(p).await?);
        rows.iter()
            .map(|(s, n)| Ok((parse("jobs.status", s)?, *n)))
            .collect()
    }

    /// Jobs pending or running right now, whenever they were created.
    pub async fn active_job_counts(&self) -> Result<Vec<(JobStatus, i64)>> {
        let sql = format!(
            "SELECT status, COUNT(*) FROM jobs WHERE status IN {} GROUP BY status",
            super::jobs::ACTIVE_SQL
        );
        let rows: Vec<(String, i64)> =
            on_pool!(self, p => sqlx::query_as(&sql).fetch_all(p).await?);
        rows.iter()
            .map(|(s, n)| Ok((parse("jobs.status", s)?, *n)))
            .collect()
    }

    /// Tickets still open or in progress, counted by priority.
    pub async fn open_tickets_by_priority(&self) -> Result<Vec<(TicketPriority, i64)>> {
        let rows: Vec<(String, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT priority, COUNT(*) FROM tickets WHERE status IN ('open', 'in_progress') GROUP BY priority",
        ).fetch_all(p).await?);
        rows.iter()
            .map(|(s, n)| Ok((parse("tickets.priority", s)?, *n)))
            .collect()
    }

    /// The tickets still open, and those resolved since `since`: what the SLA figures are
    /// made of (at most the newest 10,000).
    pub async fn ticket_timings(&self, since: DateTime<Utc>) -> Result<Vec<TicketTiming>> {
        type Row = (String, String, DateTime<Utc>, Option<DateTime<Utc>>);
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(
            "SELECT priority, status, created_at, resolved_at FROM tickets \
             WHERE status IN ('open', 'in_progress') OR resolved_at >= ? \
             ORDER BY id DESC LIMIT ?",
        ).bind(since.naive_utc()).bind(TIMING_ROWS).fetch_all(p).await?);
        rows.into_iter()
            .map(|(priority, status, created_at, resolved_at)| {
                Ok(TicketTiming {
                    priority: parse("tickets.priority", &priority)?,
                    status: parse("tickets.status", &status)?,
                    created_at,
                    resolved_at,
                })
            })
            .collect()
    }
}
