//! store::archives — the records of verified archives (job output, audit exports) and the
//! queries the archive passes need: which jobs are due, which archived jobs still hold rows,
//! and the removal of those rows in small batches.

use chrono::{DateTime, Utc};

use super::{now, on_pool, Dialect, Result, Store};
use crate::model::{AuditEntry, JobId, UserId};

/// A verified archive of one job's output.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LogArchive {
    pub job_id: JobId,
    /// The object's key in the archive store.
    pub location: String,
    pub line_count: i64,
    pub last_line: i32,
    pub bytes: i64,
    pub sha256: String,
    pub archived_at: DateTime<Utc>,
}

/// A verified export of audit records `first_id..=last_id`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditArchive {
    pub id: i64,
    pub first_id: i64,
    pub last_id: i64,
    pub label: String,
    pub location: String,
    pub row_count: i64,
    pub bytes: i64,
    pub sha256: String,
    pub archived_at: DateTime<Utc>,
}

/// A finished job whose output is due for archiving.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueJob {
    pub id: JobId,
    pub job_id: String,
    pub user_id: UserId,
}

impl Store {
    /// The verified archive of a job's output, if it has one.
    pub async fn log_archive(&self, job: JobId) -> Result<Option<LogArchive>> {
        Ok(on_pool!(self, p => sqlx::query_as::<_, LogArchive>(
            "SELECT job_id, location, line_count, last_line, bytes, sha256, archived_at \
             FROM job_log_archives WHERE job_id = ?",
        ).bind(job).fetch_optional(p).await?))
    }

    /// Finished jobs after id `after` with lines, no archive yet, and no line at or after
    /// `cutoff`; in id order, at most `limit`.
    pub async fn jobs_due_for_archive(
        &self,
        cutoff: DateTime<Utc>,
        after: JobId,
        limit: i64,
    ) -> Result<Vec<DueJob>> {
        // Jobs completed after the cutoff are skipped without touching their lines (a job's
        // lines come before its end); for the others the NOT EXISTS on a recent line and the
        // EXISTS on any line probe job_logs by its job_id index. Jobs are walked by id.
        Ok(on_pool!(self, p => sqlx::query_as::<_, DueJob>(
            "SELECT j.id, j.job_id, j.user_id FROM jobs j \
             WHERE j.id > ? AND j.status IN ('success', 'failed', 'cancelled') \
             AND (j.completed_at IS NULL OR j.completed_at < ?) \
             AND NOT EXISTS (SELECT 1 FROM job_log_archives a WHERE a.job_id = j.id) \
             AND EXISTS (SELECT 1 FROM job_logs l WHERE l.job_id = j.id) \
             AND NOT EXISTS (SELECT 1 FROM job_logs l WHERE l.job_id = j.id AND l.timestamp >= ?) \
             ORDER BY j.id LIMIT ?",
        ).bind(after).bind(cutoff.naive_utc()).bind(cutoff.naive_utc()).bind(limit).fetch_all(p).await?))
    }

    /// Records a verified archive; a second record for the same job is refused (the first
    /// stands).
    pub async fn insert_log_archive(&self, a: &LogArchive) -> Result<()> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO job_log_archives (job_id, location, line_count, last_line, bytes, sha256, archived_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.job_id).bind(&a.location).bind(a.line_count).bind(a.last_line).bind(a.bytes)
        .bind(&a.sha256).bind(a.archived_at.naive_utc())
        .execute(p).await?.rows_affected());
        Ok(())
    }

    /// Every job archive after job `after`, in job order, at most `limit`.
    pub async fn log_archives(&self, after: JobId, limit: i64) -> Result<Vec<LogArchive>> {
        Ok(on_pool!(self, p => sqlx::query_as::<_, LogArchive>(
            "SELECT job_id, location, line_count, last_line, bytes, sha256, archived_at \
             FROM job_log_archives WHERE job_id > ? ORDER BY job_id LIMIT ?",
        ).bind(after).bind(limit).fetch_all(p).await?))
    }

    /// Archived jobs that still have rows the archive holds, at most `limit`.
    pub async fn archived_jobs_with_rows(&self, limit: i64) -> Result<Vec<LogArchive>> {
        Ok(on_pool!(self, p => sqlx::query_as::<_, LogArchive>(
            "SELECT a.job_id, a.location, a.line_count, a.last_line, a.bytes, a.sha256, a.archived_at \
             FROM job_log_archives a \
             WHERE EXISTS (SELECT 1 FROM job_logs l WHERE l.job_id = a.job_id AND l.line_number <= a.last_line) \
             ORDER BY a.job_id LIMIT ?",
        ).bind(limit).fetch_all(p).await?))
    }

    /// Deletes at most `batch` rows of an archived job, only lines the archive holds (up to
    /// its last line); call until it returns less than `batch`.
    pub async fn delete_archived_lines(&self, a: &LogArchive, batch: i64) -> Result<u64> {
        let sql = match self.dialect() {
            Dialect::Mysql => {
                "DELETE FROM job_logs WHERE job_id = ? AND line_number <= ? \
                 AND EXISTS (SELECT 1 FROM job_log_archives a WHERE a.job_id = job_logs.job_id) \
                 ORDER BY id LIMIT ?"
            }
            Dialect::Sqlite => {
                "DELETE FROM job_logs WHERE id IN (SELECT l.id FROM job_logs l \
                 JOIN job_log_archives a ON a.job_id = l.job_id \
                 WHERE l.job_id = ? AND l.line_number <= ? ORDER BY l.id LIMIT ?)"
            }
        };
        Ok(on_pool!(self, p => sqlx::query(sql)
            .bind(a.job_id).bind(a.last_line).bind(batch)
            .execute(p).await?.rows_affected()))
    }

    /// Whether a job has an unresolved ticket with exactly this title (an archive failure is
    /// reported once, not at every pass).
    pub async fn has_open_ticket_titled(&self, job: JobId, title: &str) -> Result<bool> {
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM tickets WHERE job_id = ? AND title = ? \
             AND status IN ('open', 'in_progress')",
        ).bind(job).bind(title).fetch_one(p).await?);
        Ok(n > 0)
    }

    /// Audit records with ids in `after+1..=last`, in id order, at most `limit`.
    pub async fn audit_range(&self, after: i64, last: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        Ok(on_pool!(self, p => sqlx::query_as::<_, AuditEntry>(
            "SELECT id, user_id, action, resource_type, resource_id, details, ip_address, user_agent, timestamp \
             FROM audit_logs WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
        ).bind(after).bind(last).bind(limit).fetch_all(p).await?))
    }

    /// The ids of audit records older than `cutoff` that no export covers yet: `(first, last)`.
    pub async fn audit_unexported_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Option<(i64, i64)>> {
        let (first, last): (Option<i64>, Option<i64>) = on_pool!(self, p => sqlx::query_as(
            "SELECT MIN(id), MAX(id) FROM audit_logs WHERE timestamp < ? \
             AND id > (SELECT COALESCE(MAX(last_id), 0) FROM audit_archives)",
        ).bind(cutoff.naive_utc()).fetch_one(p).await?);
        Ok(first.zip(last))
    }

    pub async fn insert_audit_archive(&self, a: &AuditArchive) -> Result<i64> {
        let id = on_pool!(self, p => super::InsertedId::inserted_id(&sqlx::query(
            "INSERT INTO audit_archives (first_id, last_id, label, location, row_count, bytes, sha256, archived_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.first_id).bind(a.last_id).bind(&a.label).bind(&a.location).bind(a.row_count)
        .bind(a.bytes).bind(&a.sha256).bind(now())
        .execute(p).await?));
        Ok(id)
    }

    /// Every audit export, oldest first.
    pub async fn audit_archives(&self) -> Result<Vec<AuditArchive>> {
        Ok(on_pool!(self, p => sqlx::query_as::<_, AuditArchive>(
            "SELECT id, first_id, last_id, label, location, row_count, bytes, sha256, archived_at \
             FROM audit_archives ORDER BY first_id",
        ).fetch_all(p).await?))
    }
}
