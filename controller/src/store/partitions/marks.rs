//! `job_log_marks`: what stands in for the unique `(job_id, line_number)` key on a partitioned
//! job_logs. Each write locks the marks of its jobs (in job order, so two writers never wait
//! on each other in a circle), skips the lines already stored, inserts the rest and moves the
//! marks on, all in the writer's transaction: a batch replayed after a reconnect, even by
//! another controller at the same moment, lands once.

use std::collections::{BTreeMap, HashSet};

use sqlx::{MySql, QueryBuilder, Row, Transaction};

use crate::model::{JobId, NewLogLine};
use crate::store::{Result, Store};

/// Where a job's marks stand: its highest line stored and the ids its lines span.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    last_line: i32,
    first_id: Option<i64>,
    last_id: Option<i64>,
}

/// Stores `lines` through the marks in `tx`; returns how many were new. `statements` splits
/// them into INSERTs within the server's packet limit.
pub(crate) async fn insert(
    tx: &mut Transaction<'_, MySql>,
    lines: &[NewLogLine],
    statements: impl Fn(&[NewLogLine]) -> Vec<&[NewLogLine]>,
    db_time: impl Fn(&NewLogLine) -> chrono::NaiveDateTime,
) -> Result<u64> {
    let jobs: Vec<JobId> = {
        let mut j: Vec<JobId> = lines.iter().map(|l| l.job).collect();
        j.sort_by_key(|j| j.0);
        j.dedup();
        j
    };
    // Creates missing marks and takes every mark's row lock, in job order. The marks' foreign
    // key refuses a job that does not exist, as job_logs' own key did.
    let mut qb = QueryBuilder::<MySql>::new("INSERT INTO job_log_marks (job_id) ");
    qb.push_values(&jobs, |mut row, j| {
        row.push_bind(*j);
    });
    qb.push(" ON DUPLICATE KEY UPDATE last_line = last_line");
    qb.build().persistent(false).execute(&mut **tx).await?;
    let mut marks: BTreeMap<i32, Mark> = BTreeMap::new();
    let mut qb = QueryBuilder::<MySql>::new(
        "SELECT job_id, last_line, first_id, last_id FROM job_log_marks WHERE job_id IN (",
    );
    let mut sep = qb.separated(", ");
    for j in &jobs {
        sep.push_bind(*j);
    }
    qb.push(") FOR UPDATE");
    for row in qb.build().persistent(false).fetch_all(&mut **tx).await? {
        marks.insert(
            row.try_get(0)?,
            Mark {
                last_line: row.try_get(1)?,
                first_id: row.try_get(2)?,
                last_id: row.try_get(3)?,
            },
        );
    }
    // Lines at or below a mark are replays, or (never in order, but the unique key allowed it)
    // lines that arrived late: those are looked up one job at a time and only the missing go.
    let mut seen: HashSet<(i32, i32)> = HashSet::new();
    let mut fresh: Vec<NewLogLine> = Vec::with_capacity(lines.len());
    let mut late: BTreeMap<i32, Vec<&NewLogLine>> = BTreeMap::new();
    for l in lines {
        if !seen.insert((l.job.0, l.line_number)) {
            continue;
        }
        let mark = marks.get(&l.job.0).copied().unwrap_or_default();
        if l.line_number > mark.last_line {
            fresh.push(l.clone());
        } else {
            late.entry(l.job.0).or_default().push(l);
        }
    }
    for (job, candidates) in late {
        let mark = marks.get(&job).copied().unwrap_or_default();
        let mut qb = QueryBuilder::<MySql>::new("SELECT line_number FROM job_logs WHERE job_id = ");
        qb.push_bind(job);
        if let (Some(first), Some(last)) = (mark.first_id, mark.last_id) {
            qb.push(" AND id BETWEEN ")
                .push_bind(first)
                .push(" AND ")
                .push_bind(last);
        }
        qb.push(" AND line_number IN (");
        let mut sep = qb.separated(", ");
        for l in &candidates {
            sep.push_bind(l.line_number);
        }
        qb.push(")");
        let stored: HashSet<i32> = qb
            .build_query_scalar::<i32>()
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
        fresh.extend(
            candidates
                .into_iter()
                .filter(|l| !stored.contains(&l.line_number))
                .cloned(),
        );
    }
    if fresh.is_empty() {
        return Ok(0);
    }
    let mut count = 0;
    let mut first_new_id = i64::MAX;
    for chunk in statements(&fresh) {
        let mut qb = QueryBuilder::<MySql>::new(
            "INSERT INTO job_logs (job_id, line_number, content, log_level, timestamp) ",
        );
        qb.push_values(chunk, |mut row, l| {
            row.push_bind(l.job)
                .push_bind(l.line_number)
                .push_bind(l.content.as_str())
                .push_bind(l.level.as_deref())
                .push_bind(db_time(l));
        });
        let res = qb.build().persistent(false).execute(&mut **tx).await?;
        count += res.rows_affected();
        // The first id of a multi-row INSERT; every row of it and of later ones is above it.
        first_new_id = first_new_id.min(res.last_insert_id() as i64);
    }
    // The ids the new lines took, per job: only rows from the first new id up are read, which
    // are in this month's partition.
    let mut qb = QueryBuilder::<MySql>::new(
        "SELECT job_id, MIN(id), MAX(id), MAX(line_number) FROM job_logs WHERE id >= ",
    );
    qb.push_bind(first_new_id).push(" AND job_id IN (");
    let mut sep = qb.separated(", ");
    for j in &jobs {
        sep.push_bind(*j);
    }
    qb.push(") GROUP BY job_id");
    let spans = qb.build().persistent(false).fetch_all(&mut **tx).await?;
    let mut qb = QueryBuilder::<MySql>::new(
        "INSERT INTO job_log_marks (job_id, last_line, first_id, last_id) ",
    );
    let mut moved = Vec::new();
    for row in spans {
        let (job, lo, hi, line): (i32, i64, i64, i32) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        moved.push((job, line, lo, hi));
    }
    if moved.is_empty() {
        return Ok(count);
    }
    qb.push_values(&moved, |mut row, (job, line, lo, hi)| {
        row.push_bind(*job)
            .push_bind(*line)
            .push_bind(*lo)
            .push_bind(*hi);
    });
    qb.push(
        " ON DUPLICATE KEY UPDATE last_line = GREATEST(last_line, VALUES(last_line)), \
         first_id = LEAST(COALESCE(first_id, VALUES(first_id)), VALUES(first_id)), \
         last_id = GREATEST(COALESCE(last_id, VALUES(last_id)), VALUES(last_id))",
    );
    qb.build().persistent(false).execute(&mut **tx).await?;
    Ok(count)
}

impl Store {
    /// The ids a job's lines span on a partitioned job_logs, for readers to add to their
    /// query so that only the partitions holding them are read. `None` when job_logs is not
    /// partitioned or the job has no lines.
    pub(crate) async fn log_id_span(&self, job: JobId) -> Result<Option<(i64, i64)>> {
        let crate::store::Backend::Mysql(p) = &self.backend else {
            return Ok(None);
        };
        if !self.logs_partitioned() {
            return Ok(None);
        }
        let span: Option<(Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT first_id, last_id FROM job_log_marks WHERE job_id = ?")
                .bind(job)
                .fetch_optional(p)
                .await?;
        Ok(match span {
            Some((Some(lo), Some(hi))) => Some((lo, hi)),
            _ => None,
        })
    }
}
