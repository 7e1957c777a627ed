//! store::results — per-task results and recaps. A batch is written in one multi-row INSERT
//! that ignores a `(job_id, seq)` already stored, so a batch replayed after a reconnect lands
//! once; a recap is written once per job the same way.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::QueryBuilder;

use super::{on_pool, Dialect, Result, Store, WritePool};
use crate::model::{JobId, RunId, ServerId, TaskStatus};

/// One task result to store.
#[derive(Debug, Clone)]
pub struct NewTaskResult {
    pub seq: i32,
    pub host: String,
    pub play: String,
    pub task: String,
    pub action: String,
    pub status: TaskStatus,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub message: Option<String>,
}

/// A stored task result.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskResultRow {
    pub seq: i32,
    pub host: String,
    pub play: String,
    pub task: String,
    pub action: String,
    #[sqlx(try_from = "crate::model::Named<TaskStatus>")]
    pub status: TaskStatus,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub message: Option<String>,
}

/// ansible's recap of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Recap {
    pub ok: i32,
    pub changed: i32,
    pub unreachable: i32,
    pub failed: i32,
    pub skipped: i32,
    pub rescued: i32,
    pub ignored: i32,
}

/// Which of a job's results to read.
#[derive(Debug, Clone, Default)]
pub struct ResultFilter<'a> {
    pub task: Option<&'a str>,
    pub status: Option<TaskStatus>,
    /// Failed, rescued and unreachable rows first, then in order.
    pub failed_first: bool,
    pub after: i32,
    pub limit: i64,
}

/// One task result of one of a run's jobs, for the run's aggregate.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RunTaskRow {
    pub server_id: ServerId,
    pub play: String,
    pub task: String,
    #[sqlx(try_from = "crate::model::Named<TaskStatus>")]
    pub status: TaskStatus,
}

/// The most rows a run's aggregate reads (300 servers × 1,000 tasks fit).
pub const MAX_RUN_ROWS: i64 = 300_000;

/// Rows per INSERT: 10 binds each, far below the placeholder ceiling.
const ROWS_PER_STATEMENT: usize = 500;

fn db_time(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

impl Store {
    /// Stores a job's results in one transaction; returns how many were new.
    pub async fn insert_task_results(&self, job: JobId, rows: &[NewTaskResult]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let (head, tail) = match self.dialect() {
            Dialect::Mysql => ("INSERT IGNORE INTO job_task_results", ""),
            Dialect::Sqlite => (
                "INSERT INTO job_task_results",
                " ON CONFLICT (job_id, seq) DO NOTHING",
            ),
        };
        Ok(on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut count = 0;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut qb = QueryBuilder::new(head);
                qb.push(" (job_id, seq, host, play, task, action, status, started_at, duration_ms, message) ");
                qb.push_values(chunk, |mut row, r| {
                    row.push_bind(job)
                        .push_bind(r.seq)
                        .push_bind(r.host.as_str())
                        .push_bind(r.play.as_str())
                        .push_bind(r.task.as_str())
                        .push_bind(r.action.as_str())
                        .push_bind(r.status.as_str())
                        .push_bind(db_time(r.started_at))
                        .push_bind(i32::try_from(r.duration_ms).unwrap_or(i32::MAX))
                        .push_bind(r.message.as_deref());
                });
                qb.push(tail);
                count += qb.build().persistent(false).execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            count
        }))
    }

    /// Stores a job's recap unless it has one.
    pub async fn insert_recap(&self, job: JobId, r: &Recap) -> Result<()> {
        let sql = match self.dialect() {
            Dialect::Mysql => {
                "INSERT IGNORE INTO job_recaps (job_id, ok, changed, unreachable, failed, skipped, rescued, ignored) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            }
            Dialect::Sqlite => {
                "INSERT INTO job_recaps (job_id, ok, changed, unreachable, failed, skipped, rescued, ignored) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING"
            }
        };
        on_pool!(self, p => sqlx::query(sql)
            .bind(job).bind(r.ok).bind(r.changed).bind(r.unreachable).bind(r.failed)
            .bind(r.skipped).bind(r.rescued).bind(r.ignored)
            .execute(p).await?.rows_affected());
        Ok(())
    }

    /// The results of a run's jobs (of `task` and `status` when given), with each job's server.
    pub async fn run_task_results(
        &self,
        run: RunId,
        task: Option<&str>,
        status: Option<TaskStatus>,
    ) -> Result<Vec<RunTaskRow>> {
        Ok(on_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "SELECT j.server_id, r.play, r.task, r.status FROM job_task_results r \
                 JOIN jobs j ON j.id = r.job_id WHERE j.run_id = ",
            );
            qb.push_bind(run);
            if let Some(t) = task {
                qb.push(" AND r.task = ").push_bind(t.to_owned());
            }
            if let Some(s) = status {
                qb.push(" AND r.status = ").push_bind(s.as_str().to_owned());
            }
            qb.push(" LIMIT ").push_bind(MAX_RUN_ROWS);
            qb.build_query_as::<RunTaskRow>().persistent(false).fetch_all(p).await?
        }))
    }

    /// How many of a run's jobs ended unreachable.
    pub async fn run_unreachable_jobs(&self, run: RunId) -> Result<i64> {
        Ok(on_pool!(self, p => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM jobs WHERE run_id = ? AND unreachable = TRUE",
        ).bind(run).fetch_one(p).await?))
    }

    pub async fn recap(&self, job: JobId) -> Result<Option<Recap>> {
        Ok(on_pool!(self, p => sqlx::query_as::<_, Recap>(
            "SELECT ok, changed, unreachable, failed, skipped, rescued, ignored FROM job_recaps WHERE job_id = ?",
        ).bind(job).fetch_optional(p).await?))
    }

    /// A job's results matching `f`, and how many match in all.
    pub async fn task_results(
        &self,
        job: JobId,
        f: &ResultFilter<'_>,
    ) -> Result<(Vec<TaskResultRow>, i64)> {
        let order = if f.failed_first {
            " ORDER BY CASE WHEN status IN ('failed', 'unreachable') THEN 0 \
             WHEN status = 'rescued' THEN 1 ELSE 2 END, seq"
        } else {
            " ORDER BY seq"
        };
        Ok(on_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "SELECT seq, host, play, task, action, status, started_at, duration_ms, message",
            );
            push_where(&mut qb, job, f);
            qb.push(order).push(" LIMIT ").push_bind(f.limit.clamp(1, 5_000));
            let rows = qb.build_query_as::<TaskResultRow>().persistent(false).fetch_all(p).await?;
            let mut qc = QueryBuilder::new("SELECT COUNT(*)");
            push_where(&mut qc, job, f);
            let total: i64 = qc.build_query_scalar().persistent(false).fetch_one(p).await?;
            (rows, total)
        }))
    }
}

/// `FROM … WHERE …` of a job's results as `f` filters them.
fn push_where<'a, DB: sqlx::Database>(
    qb: &mut QueryBuilder<'a, DB>,
    job: JobId,
    f: &ResultFilter<'_>,
) where
    JobId: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i32: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    qb.push(" FROM job_task_results WHERE job_id = ")
        .push_bind(job)
        .push(" AND seq > ")
        .push_bind(f.after);
    if let Some(t) = f.task {
        qb.push(" AND task = ").push_bind(t.to_owned());
    }
    if let Some(s) = f.status {
        qb.push(" AND status = ").push_bind(s.as_str().to_owned());
    }
}
