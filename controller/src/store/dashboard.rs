//! store::dashboard — the counts the web UI's dashboard shows, each one small aggregate over
//! an index the seed made for it: jobs by `(status, created_at)`, tickets by
//! `(status, priority)`; and the aggregates its charts are drawn from (jobs per hour by
//! status, outcomes per datacenter, a bounded sample of durations per playbook), grouped by
//! the database so that what crosses the wire stays small however many jobs there are.

use chrono::{DateTime, Utc};

use super::{on_pool, Dialect, Result, Store, StoreError};
use crate::model::{JobStatus, PlaybookId, TicketPriority, TicketStatus};

/// Jobs created in one hour with one status: `hour` counts hours since 1970-01-01 00:00 UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCount {
    pub hour: i64,
    pub status: JobStatus,
    pub count: i64,
}

/// Finished jobs of one datacenter with one status. `datacenter` is the value of the routing
/// key in the server's tags, or else in the labels of the agent that ran the job (a server
/// without a routing tag may be run by any agent); `None` when neither has it. `unreachable`
/// sets apart the failures whose server could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatacenterCount {
    pub datacenter: Option<String>,
    pub status: JobStatus,
    pub unreachable: bool,
    pub count: i64,
}

/// How long one finished job ran, with its playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDuration {
    pub playbook: PlaybookId,
    pub playbook_name: String,
    pub seconds: f64,
}

/// The JSON path of a top-level key, quoted so that dots and dashes in it are part of the
/// name. A key holding a quote or a backslash cannot be written as a path both databases read
/// the same way, so it is refused.
fn key_path(key: &str) -> Result<String> {
    if key.is_empty() || key.contains(['"', '\\']) || key.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "routing key",
            "must be a non-empty name without quotes, backslashes or control characters",
        ));
    }
    Ok(format!("$.\"{key}\""))
}

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

    /// Jobs created since `since`, counted per hour (UTC) and status: at most 24 × 5 rows a
    /// day, over the `created_at` index.
    pub async fn jobs_per_hour(&self, since: DateTime<Utc>) -> Result<Vec<HourCount>> {
        let hour = match self.dialect() {
            // The session's time zone is UTC (see `connect`), so UNIX_TIMESTAMP is too.
            Dialect::Mysql => "CAST(UNIX_TIMESTAMP(created_at) DIV 3600 AS SIGNED)",
            Dialect::Sqlite => "CAST(strftime('%s', created_at) AS INTEGER) / 3600",
        };
        let sql = format!(
            "SELECT {hour} AS hour, status, COUNT(*) FROM jobs WHERE created_at >= ? \
             GROUP BY hour, status"
        );
        let rows: Vec<(i64, String, i64)> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(since.naive_utc()).fetch_all(p).await?);
        rows.into_iter()
            .map(|(hour, status, count)| {
                Ok(HourCount {
                    hour,
                    status: parse("jobs.status", &status)?,
                    count,
                })
            })
            .collect()
    }

    /// Jobs created since `since` that ended in success or failure, counted per datacenter
    /// (the value of `routing_key`, see [`DatacenterCount`]) and status. At most `limit` rows.
    pub async fn outcomes_per_datacenter(
        &self,
        since: DateTime<Utc>,
        routing_key: &str,
        limit: i64,
    ) -> Result<Vec<DatacenterCount>> {
        let path = key_path(routing_key)?;
        let dc = match self.dialect() {
            // MariaDB's JSON_UNQUOTE answers in a binary string type: made text again.
            Dialect::Mysql => {
                "CAST(COALESCE(JSON_UNQUOTE(JSON_EXTRACT(s.tags, ?)), JSON_UNQUOTE(JSON_EXTRACT(a.labels, ?))) AS CHAR)"
            }
            Dialect::Sqlite => {
                "CAST(COALESCE(json_extract(s.tags, ?), json_extract(a.labels, ?)) AS TEXT)"
            }
        };
        let sql = format!(
            "SELECT {dc} AS dc, j.status, j.unreachable, COUNT(*) FROM jobs j \
             JOIN servers s ON s.id = j.server_id LEFT JOIN agents a ON a.id = j.agent_id \
             WHERE j.status IN ('success', 'failed') AND j.created_at >= ? \
             GROUP BY dc, j.status, j.unreachable ORDER BY COUNT(*) DESC LIMIT ?"
        );
        let rows: Vec<(Option<String>, String, bool, i64)> = on_pool!(self, p => sqlx::query_as(&sql)
            .bind(&path).bind(&path).bind(since.naive_utc()).bind(limit).fetch_all(p).await?);
        rows.into_iter()
            .map(|(datacenter, status, unreachable, count)| {
                Ok(DatacenterCount {
                    datacenter,
                    status: parse("jobs.status", &status)?,
                    unreachable,
                    count,
                })
            })
            .collect()
    }

    /// How long the newest jobs created since `since` ran (at most `limit` of them, those
    /// that started and ended in success or failure): the sample duration percentiles are
    /// taken from, so their cost is bounded however many jobs ran.
    pub async fn recent_durations(
        &self,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<JobDuration>> {
        type Row = (i32, String, DateTime<Utc>, DateTime<Utc>);
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(
            "SELECT j.playbook_id, p.name, j.started_at, j.completed_at FROM jobs j \
             JOIN playbooks p ON p.id = j.playbook_id \
             WHERE j.created_at >= ? AND j.status IN ('success', 'failed') \
             AND j.started_at IS NOT NULL AND j.completed_at IS NOT NULL \
             ORDER BY j.created_at DESC LIMIT ?",
        ).bind(since.naive_utc()).bind(limit).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(|(id, name, started, completed)| JobDuration {
                playbook: PlaybookId(id),
                playbook_name: name,
                seconds: (completed - started).num_milliseconds().max(0) as f64 / 1000.0,
            })
            .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_become_quoted_paths_or_are_refused() {
        assert_eq!(key_path("dc").unwrap(), "$.\"dc\"");
        assert_eq!(key_path("site.zone-a").unwrap(), "$.\"site.zone-a\"");
        assert!(key_path("").is_err());
        assert!(key_path("a\"b").is_err());
        assert!(key_path("a\\b").is_err());
        assert!(key_path("a\nb").is_err());
    }
}
