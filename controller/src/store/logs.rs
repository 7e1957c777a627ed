//! store::logs — job output, the high-volume table. Lines are written in multi-row INSERTs
//! that ignore a `(job_id, line_number)` already stored, so a batch replayed after a reconnect
//! lands once. On MySQL/MariaDB they go through `LOAD DATA LOCAL INFILE … IGNORE` instead
//! ([`super::bulk`]), with the same effect at about twice the rate, unless job_logs is
//! partitioned (its marks need the INSERT path) or the server refuses LOCAL INFILE.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::QueryBuilder;

use super::{on_pool, Dialect, Result, Store, StoreError, WritePool};
use crate::model::{JobId, LogLine};

/// Rows per INSERT statement: 5 binds each, far below the 65,535-placeholder ceiling and small
/// enough to stay within a default `max_allowed_packet` for lines of a few KiB.
pub const ROWS_PER_STATEMENT: usize = 1000;
/// The most lines a reader asks for at a time.
pub const MAX_PAGE_LINES: i64 = 10_000;

/// Splits rows into statements of at most [`ROWS_PER_STATEMENT`] rows and about `max_bytes`
/// of values (a backlog of long lines must not exceed the server's packet limit).
fn statements(lines: &[NewLogLine], max_bytes: usize) -> Vec<&[NewLogLine]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, l) in lines.iter().enumerate() {
        let size = l.content.len() + 64;
        if i > start && (i - start >= ROWS_PER_STATEMENT || bytes + size > max_bytes) {
            out.push(&lines[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < lines.len() {
        out.push(&lines[start..]);
    }
    out
}

pub use crate::model::NewLogLine;

impl Store {
    /// Stores lines from any number of jobs in one transaction; returns how many were new.
    pub async fn insert_log_lines(&self, lines: &[NewLogLine]) -> Result<u64> {
        self.insert_log_lines_in_turn(lines, async {}, || {}, async {})
            .await
    }

    /// [`Store::insert_log_lines`] in a sequence of writers: waits for `before_insert` before
    /// the first statement, calls `inserted` once every statement ran, and waits for
    /// `before_commit` before committing. Ingest uses it so that flushes written side by side
    /// still become visible in order (readers page a job's lines by line number and must never
    /// see line 3,000 before line 2,000).
    pub async fn insert_log_lines_in_turn(
        &self,
        lines: &[NewLogLine],
        before_insert: impl std::future::Future<Output = ()>,
        inserted: impl FnOnce(),
        before_commit: impl std::future::Future<Output = ()>,
    ) -> Result<u64> {
        before_insert.await;
        if lines.is_empty() {
            inserted();
            before_commit.await;
            return Ok(0);
        }
        let (head, tail) = match self.dialect() {
            // ON DUPLICATE KEY UPDATE would count found rows (sqlx sets CLIENT_FOUND_ROWS), so
            // the count of new lines needs IGNORE. IGNORE would also swallow a foreign-key miss
            // or an over-long value: ingest only writes for jobs it has looked up, and the
            // protocol caps a line well below TEXT's 65,535 bytes.
            Dialect::Mysql => ("INSERT IGNORE INTO job_logs", ""),
            Dialect::Sqlite => (
                "INSERT INTO job_logs",
                " ON CONFLICT (job_id, line_number) DO NOTHING",
            ),
        };
        if let (super::Backend::Mysql(p), true) = (&self.backend, self.logs_partitioned()) {
            let mut tx = p.begin_write().await?;
            let count = super::partitions::marks::insert(
                &mut tx,
                lines,
                |rows| statements(rows, self.statement_bytes),
                |l| to_db_time(l.timestamp),
            )
            .await?;
            inserted();
            before_commit.await;
            tx.commit().await?;
            return Ok(count);
        }
        if let Some(bulk) = self.bulk.as_ref().filter(|b| b.usable()) {
            // Not connecting is the database being away (retried), never a refusal of rows.
            let mut conn = bulk.conn().await.map_err(|e| StoreError::Unreachable {
                target: self.target.clone(),
                detail: e.to_string(),
            })?;
            let mut tx = conn
                .start_transaction(mysql_async::TxOpts::default())
                .await?;
            match super::bulk::load(&mut tx, lines).await {
                Ok(count) => {
                    inserted();
                    before_commit.await;
                    tx.commit().await?;
                    crate::metrics::global().ingest_bulk_load.set(1);
                    return Ok(count);
                }
                Err(e) if super::bulk::is_local_infile_refused(&e) => {
                    // Nothing was written: the same turn goes on with INSERTs below.
                    drop(tx);
                    bulk.refuse(&e);
                }
                Err(e) => {
                    drop(tx);
                    if !matches!(e, mysql_async::Error::Server(_)) {
                        // The exchange may have stopped midway (a file request refused, a
                        // broken stream): this connection must not go back to the pool.
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(1),
                            conn.disconnect(),
                        )
                        .await;
                    }
                    return Err(e.into());
                }
            }
        }
        let inserted = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut count = 0;
            for chunk in statements(lines, self.statement_bytes) {
                let mut qb = QueryBuilder::new(head);
                qb.push(" (job_id, line_number, content, log_level, timestamp) ");
                qb.push_values(chunk, |mut row, l| {
                    row.push_bind(l.job)
                        .push_bind(l.line_number)
                        .push_bind(l.content.as_str())
                        .push_bind(l.level.as_deref())
                        .push_bind(to_db_time(l.timestamp));
                });
                qb.push(tail);
                // Batch sizes vary: keep these out of the statement cache.
                let res = qb.build().persistent(false).execute(&mut *tx).await?;
                count += res.rows_affected();
            }
            inserted();
            before_commit.await;
            tx.commit().await?;
            count
        });
        Ok(inserted)
    }

    /// This store writing log lines with INSERTs only, never LOAD DATA LOCAL INFILE: for
    /// benchmarks that set the two paths side by side, and for a database where the bulk path
    /// must not be tried.
    pub fn without_bulk_load(mut self) -> Store {
        self.bulk = None;
        self
    }

    /// Whether log lines are written with LOAD DATA LOCAL INFILE now: on MySQL/MariaDB, while
    /// job_logs is not partitioned and the server has not refused it.
    pub fn writes_logs_in_bulk(&self) -> bool {
        !self.logs_partitioned() && self.bulk.as_ref().is_some_and(|b| b.usable())
    }

    /// Up to `limit` lines of a job after line `after`, in line order.
    pub async fn read_log_lines(&self, job: JobId, after: i32, limit: i64) -> Result<Vec<LogLine>> {
        self.find_log_lines(job, after, None, None, limit).await
    }

    /// Up to `limit` lines of a job after line `after` that have `level` and hold `needle`
    /// (case-insensitively, as text: `%` and `_` match themselves), in line order.
    pub async fn find_log_lines(
        &self,
        job: JobId,
        after: i32,
        level: Option<&str>,
        needle: Option<&str>,
        limit: i64,
    ) -> Result<Vec<LogLine>> {
        let span = self.log_id_span(job).await?;
        Ok(on_pool!(self, p => {
            let mut qb = QueryBuilder::new("SELECT line_number, content, log_level, timestamp");
            push_log_filter(&mut qb, job, span, after, level, needle, limit);
            // At most eight shapes of statement (level, needle, span): all worth preparing once.
            qb.build_query_as::<LogLine>().fetch_all(p).await?
        }))
    }

    /// A page of a job's lines after `after` (those with `level` and holding `needle`, when
    /// given): up to `limit` lines whose text together stays within `budget` bytes (at least
    /// one line), in one pass. Rows are taken one at a time and the read stops at the budget,
    /// so no more than the budget and one line is ever held, however long the lines, and a
    /// page cut short by the budget on MySQL closes its connection rather than read the rest.
    pub async fn log_page(
        &self,
        job: JobId,
        after: i32,
        filter: (Option<&str>, Option<&str>),
        limit: i64,
        budget: usize,
    ) -> Result<LogPageRows> {
        use futures_util::TryStreamExt;
        let (level, needle) = filter;
        let limit = limit.clamp(1, MAX_PAGE_LINES);
        let span = self.log_id_span(job).await?;
        let mysql = self.dialect() == Dialect::Mysql;
        Ok(on_pool!(self, p => {
            let mut conn = p.acquire().await?;
            let mut qb = QueryBuilder::new("SELECT line_number, content, log_level, timestamp");
            // One row past the page tells whether lines follow it.
            push_log_filter(&mut qb, job, span, after, level, needle, limit + 1);
            let mut rows = qb.build_query_as::<LogLine>().fetch(&mut *conn);
            let mut page = LogPageRows::default();
            let mut fill = PageFill::new(limit, budget);
            while let Some(line) = rows.try_next().await? {
                match fill.admit(line.content.len()) {
                    Admit::Take => page.lines.push(line),
                    Admit::Cut => {
                        page.cut = true;
                        break;
                    }
                    Admit::Full => {
                        page.more = true;
                        break;
                    }
                }
            }
            drop(rows);
            if page.cut && mysql {
                // The rest of the result is still on its way (up to the page's limit of lines
                // of up to 64 KiB each): closing the connection stops it, where returning it
                // to the pool would read every row of it first. Only a page of long lines
                // gets here; the pool opens another connection when it needs one.
                drop(conn.detach());
            }
            page
        }))
    }

    /// The last `n` ERROR lines of a job, oldest first (for failure tickets).
    pub async fn last_error_lines(&self, job: JobId, n: i64) -> Result<Vec<String>> {
        let mut lines: Vec<String> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT content FROM job_logs WHERE job_id = ? AND log_level = 'ERROR' ORDER BY line_number DESC LIMIT ?",
        ).bind(job).bind(n).fetch_all(p).await?);
        lines.reverse();
        Ok(lines)
    }

    /// The highest line number stored for a job (0 when none): one index probe.
    pub async fn last_line_number(&self, job: JobId) -> Result<i32> {
        let max: Option<i32> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT MAX(line_number) FROM job_logs WHERE job_id = ?",
        ).bind(job).fetch_one(p).await?);
        Ok(max.unwrap_or(0))
    }

    /// The highest line number stored for a job and how many lines it has (equal when there
    /// is no gap).
    pub async fn log_extent(&self, job: JobId) -> Result<(i32, i64)> {
        let (max, count): (Option<i32>, i64) = on_pool!(self, p => sqlx::query_as(
            "SELECT MAX(line_number), COUNT(*) FROM job_logs WHERE job_id = ?",
        ).bind(job).fetch_one(p).await?);
        Ok((max.unwrap_or(0), count))
    }

    /// Deletes at most `batch` lines older than `cutoff`; call until it returns 0. Small
    /// batches keep locks short on a busy table.
    pub async fn delete_log_lines_before(&self, cutoff: DateTime<Utc>, batch: i64) -> Result<u64> {
        let sql = match self.dialect() {
            Dialect::Mysql => "DELETE FROM job_logs WHERE timestamp < ? ORDER BY id LIMIT ?",
            Dialect::Sqlite => {
                "DELETE FROM job_logs WHERE id IN \
                 (SELECT id FROM job_logs WHERE timestamp < ? ORDER BY id LIMIT ?)"
            }
        };
        Ok(
            on_pool!(self, p => sqlx::query(sql).bind(to_db_time(cutoff)).bind(batch).execute(p).await?.rows_affected()),
        )
    }
}

/// A page of log lines as [`Store::log_page`] read it.
#[derive(Debug, Default)]
pub struct LogPageRows {
    pub lines: Vec<LogLine>,
    /// The byte budget ended the page before its line limit.
    pub cut: bool,
    /// Lines follow the page's last (within the limit).
    pub more: bool,
}

/// How a page fills: lines are taken while both the line limit and the byte budget allow, and
/// the first line always (a line is far below any budget, but a page must move on).
struct PageFill {
    limit: i64,
    budget: usize,
    taken: i64,
    used: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Take,
    /// The line would pass the byte budget.
    Cut,
    /// The page has its limit of lines; this one follows it.
    Full,
}

impl PageFill {
    fn new(limit: i64, budget: usize) -> PageFill {
        PageFill {
            limit,
            budget,
            taken: 0,
            used: 0,
        }
    }

    fn admit(&mut self, size: usize) -> Admit {
        if self.taken >= self.limit {
            return Admit::Full;
        }
        let used = self.used.saturating_add(size);
        if used > self.budget && self.taken > 0 {
            return Admit::Cut;
        }
        self.used = used;
        self.taken += 1;
        Admit::Take
    }
}

/// `FROM … WHERE … ORDER BY … LIMIT` of a job's lines after `after`, filtered alike for every
/// reader.
fn push_log_filter<'a, DB: sqlx::Database>(
    qb: &mut QueryBuilder<'a, DB>,
    job: JobId,
    span: Option<(i64, i64)>,
    after: i32,
    level: Option<&str>,
    needle: Option<&str>,
    limit: i64,
) where
    JobId: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i32: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    qb.push(" FROM job_logs WHERE job_id = ")
        .push_bind(job)
        .push(" AND line_number > ")
        .push_bind(after);
    // On partitioned job_logs, the job's id span lets MySQL read only its partitions.
    if let Some((first, last)) = span {
        qb.push(" AND id BETWEEN ")
            .push_bind(first)
            .push(" AND ")
            .push_bind(last);
    }
    if let Some(level) = level {
        qb.push(" AND log_level = ").push_bind(level.to_owned());
    }
    if let Some(needle) = needle {
        // '!' escapes on both dialects alike (a backslash does not).
        qb.push(" AND content LIKE ")
            .push_bind(format!("%{}%", like_escape(needle)))
            .push(" ESCAPE '!'");
    }
    // One row past the longest page, so that a reader can tell whether more lines follow.
    qb.push(" ORDER BY line_number LIMIT ")
        .push_bind(limit.clamp(1, MAX_PAGE_LINES + 1));
}

/// `s` for a LIKE pattern escaped with '!': its wildcards match themselves.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '!' | '%' | '_') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

/// DATETIME holds seconds; bind as naive UTC so both backends store the same text.
fn to_db_time(t: DateTime<Utc>) -> NaiveDateTime {
    use chrono::SubsecRound;
    t.naive_utc().trunc_subsecs(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_fills_to_its_line_limit_and_its_byte_budget() {
        use super::{Admit, PageFill};
        let fill = |limit, budget, sizes: &[usize]| {
            let mut f = PageFill::new(limit, budget);
            sizes.iter().map(|s| f.admit(*s)).collect::<Vec<_>>()
        };
        use Admit::{Cut, Full, Take};
        assert_eq!(fill(10, 10, &[4, 4, 4]), [Take, Take, Cut]);
        assert_eq!(fill(10, 10, &[4, 4, 2]), [Take, Take, Take]);
        assert_eq!(fill(10, 10, &[50]), [Take], "one line always fits");
        assert_eq!(fill(2, 100, &[1, 1, 1]), [Take, Take, Full]);
    }

    use super::*;

    fn line(n: i32, len: usize) -> NewLogLine {
        NewLogLine {
            job: JobId(1),
            line_number: n,
            content: "x".repeat(len),
            level: None,
            timestamp: Utc::now(),
        }
    }

    #[test]
    fn like_patterns_match_wildcards_literally() {
        assert_eq!(like_escape("50%_done!"), "50!%!_done!!");
        assert_eq!(like_escape("plain <b>"), "plain <b>");
    }

    #[test]
    fn statements_are_bounded_by_rows_and_bytes() {
        let short: Vec<_> = (1..=2500).map(|n| line(n, 10)).collect();
        let sizes: Vec<usize> = statements(&short, 1 << 30)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let long: Vec<_> = (1..=10).map(|n| line(n, 30_000)).collect();
        let chunks = statements(&long, 100_000);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        assert!(
            chunks.iter().all(|c| c.len() <= 3),
            "{:?}",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
        let huge = vec![line(1, 500_000)];
        assert_eq!(
            statements(&huge, 100_000).len(),
            1,
            "a single row always goes"
        );
    }
}
