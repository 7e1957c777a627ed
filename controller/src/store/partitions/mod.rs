//! store::partitions — `job_logs` and `audit_logs` in monthly partitions on MySQL/MariaDB.
//!
//! Both tables are partitioned `BY RANGE (id)`, each month owning a fixed id range
//! ([`calendar`]), which keeps the seed's primary keys. Two things of the seed's schema cannot
//! survive partitioning, because InnoDB refuses them on a partitioned table, and are kept by
//! other means (see `docs/partitions.md`):
//! - foreign keys: `job_logs.job_id → jobs ON DELETE CASCADE` and `audit_logs.user_id → users
//!   ON DELETE SET NULL` become triggers on `jobs` and `users`, and a line's job is checked
//!   through `job_log_marks`, which keeps its foreign key;
//! - the unique `(job_id, line_number)` that made a replayed batch land once: a unique key must
//!   contain the partitioning column. Its place is taken by `job_log_marks`, one row per job
//!   with the last line stored, locked by every write of that job's lines, so a line at or
//!   below the mark is a replay and is skipped. The seed's plain `(job_id, line_number)` index
//!   stays. The mark also records the job's first and last line ids, which a reader adds to its
//!   query so that MySQL reads only the partitions holding that job's lines.
//!
//! Partitioning an existing database copies both tables, so it is an operator's step
//! (`outpost-controller partitions enable`), measured first; [`Store::ensure_partitions`]
//! then keeps months created ahead, and retention drops whole months once archived.

pub mod calendar;
pub(crate) mod marks;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::MySqlPool;
use sqlx::{Executor, Row};

use self::calendar::Month;
use super::{Backend, Result, Store, StoreError};

/// The partitioned tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedTable {
    JobLogs,
    AuditLogs,
}

impl LoggedTable {
    pub const ALL: [LoggedTable; 2] = [LoggedTable::JobLogs, LoggedTable::AuditLogs];

    pub fn name(self) -> &'static str {
        match self {
            LoggedTable::JobLogs => "job_logs",
            LoggedTable::AuditLogs => "audit_logs",
        }
    }
}

/// One partition of a table, as the database reports it.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub name: String,
    /// The month it holds, for a month's partition.
    pub month: Option<Month>,
    /// InnoDB's estimate of its rows.
    pub rows_estimate: u64,
    pub bytes: u64,
}

/// A table's layout today.
#[derive(Debug, Clone)]
pub struct TableLayout {
    pub table: LoggedTable,
    pub partitions: Vec<PartitionInfo>,
    pub rows_estimate: u64,
    pub bytes: u64,
}

impl TableLayout {
    pub fn is_partitioned(&self) -> bool {
        !self.partitions.is_empty()
    }

    pub fn months(&self) -> Vec<Month> {
        self.partitions.iter().filter_map(|p| p.month).collect()
    }
}

/// How long partitioning an existing database should take, from a copy timed on a sample.
#[derive(Debug, Clone)]
pub struct EnableEstimate {
    pub tables: Vec<TableLayout>,
    pub sample_rows: u64,
    pub sample_took: Duration,
    pub estimate: Duration,
}

/// The contents of one month's partition that decide whether it may be dropped.
#[derive(Debug, Clone)]
pub struct PartitionContents {
    pub rows: u64,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    pub newest: Option<NaiveDateTime>,
}

/// What [`Store::ensure_partitions`] did.
#[derive(Debug, Default, Clone)]
pub struct Upkeep {
    /// `(table, month)` partitions created.
    pub created: Vec<(LoggedTable, Month)>,
    /// Tables whose `AUTO_INCREMENT` was raised to the month's first id.
    pub raised: Vec<LoggedTable>,
    /// Another controller held the lock: nothing was done.
    pub skipped: bool,
}

/// The named lock under which one controller at a time creates partitions. MySQL's named
/// locks are server-wide, so the name carries a digest of the database's: two installations on
/// one server (or two tests) must not skip each other's upkeep, which would leave a month's
/// `AUTO_INCREMENT` unraised and its rows filed under another month.
const UPKEEP_LOCK: &str = "CONCAT('outpost.partitions.', MD5(DATABASE()))";

/// How long [`Store::enable_partitions`] waits for another controller's upkeep to end: unlike
/// the periodic upkeep, it may not skip, since its own months' ids depend on it.
const ENABLE_LOCK_WAIT_SECS: i64 = 60;

/// Keeps the seed's `ON DELETE CASCADE` of job_logs.job_id once the foreign key is gone.
const JOBS_CASCADE_TRIGGER: &str =
    "CREATE TRIGGER jobs_delete_cascades_to_job_logs AFTER DELETE ON jobs FOR EACH ROW \
     DELETE FROM job_logs WHERE job_id = OLD.id";

/// Keeps the seed's `ON DELETE SET NULL` of audit_logs.user_id once the foreign key is gone.
const USERS_SET_NULL_TRIGGER: &str =
    "CREATE TRIGGER users_delete_detaches_audit_logs AFTER DELETE ON users FOR EACH ROW \
     UPDATE audit_logs SET user_id = NULL WHERE user_id = OLD.id";

/// audit_logs stays append-only (migration 0021), with the one change the seed's foreign key
/// made: a deleted user's records lose their user, and nothing else about them changes.
const AUDIT_APPEND_ONLY_TRIGGER: &str = "CREATE TRIGGER audit_logs_append_only_update BEFORE UPDATE ON audit_logs FOR EACH ROW \
     IF NOT (NEW.user_id IS NULL AND OLD.user_id IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM users WHERE id = OLD.user_id) \
             AND NEW.id <=> OLD.id AND NEW.action <=> OLD.action \
             AND NEW.resource_type <=> OLD.resource_type AND NEW.resource_id <=> OLD.resource_id \
             AND NEW.details <=> OLD.details AND NEW.ip_address <=> OLD.ip_address \
             AND NEW.user_agent <=> OLD.user_agent AND NEW.timestamp <=> OLD.timestamp) THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only: an audit record cannot be changed'; \
     END IF";

/// audit_logs.user_id's foreign key: the new record's user must exist.
const AUDIT_USER_EXISTS_TRIGGER: &str =
    "CREATE TRIGGER audit_logs_user_exists BEFORE INSERT ON audit_logs FOR EACH ROW \
     IF NEW.user_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM users WHERE id = NEW.user_id) THEN \
         SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = 'audit_logs.user_id names no user'; \
     END IF";

/// One row per job whose lines are in a partitioned job_logs: the last line stored and the
/// range of ids its lines have.
const MARKS_TABLE: &str = "CREATE TABLE IF NOT EXISTS job_log_marks (\
     job_id INT NOT NULL PRIMARY KEY, \
     last_line INT NOT NULL DEFAULT 0, \
     first_id BIGINT NULL, \
     last_id BIGINT NULL, \
     CONSTRAINT fk_job_log_marks_job_id FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE\
     ) ENGINE=InnoDB";

impl Store {
    fn mysql(&self, what: &str) -> Result<&MySqlPool> {
        match &self.backend {
            Backend::Mysql(p) => Ok(p),
            Backend::Sqlite(_) => Err(StoreError::invalid(
                "database",
                format!("{what} needs MySQL or MariaDB: SQLite keeps job output in one table and removes old lines in batches"),
            )),
        }
    }

    /// Whether job_logs is partitioned, as last seen ([`Store::refresh_layout`]).
    pub fn logs_partitioned(&self) -> bool {
        self.partitioned.load(Ordering::Relaxed)
    }

    /// Reads whether job_logs is partitioned (it may have been partitioned while this
    /// controller ran) and remembers it for the log writers and readers.
    pub async fn refresh_layout(&self) -> Result<bool> {
        let Backend::Mysql(p) = &self.backend else {
            return Ok(false);
        };
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.PARTITIONS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'job_logs' AND PARTITION_NAME IS NOT NULL",
        )
        .fetch_one(p)
        .await?;
        self.partitioned.store(n > 0, Ordering::Relaxed);
        Ok(n > 0)
    }

    /// The layout of both tables.
    pub async fn partition_layout(&self) -> Result<Vec<TableLayout>> {
        let p = self.mysql("partitioning")?;
        let mut out = Vec::new();
        for table in LoggedTable::ALL {
            let rows = sqlx::query(
                "SELECT PARTITION_NAME, CAST(TABLE_ROWS AS SIGNED), CAST(DATA_LENGTH + INDEX_LENGTH AS SIGNED) \
                 FROM information_schema.PARTITIONS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY PARTITION_ORDINAL_POSITION",
            )
            .bind(table.name())
            .fetch_all(p)
            .await?;
            let mut layout = TableLayout {
                table,
                partitions: Vec::new(),
                rows_estimate: 0,
                bytes: 0,
            };
            for row in rows {
                let name: Option<String> = row.try_get(0)?;
                let est = row.try_get::<Option<i64>, _>(1)?.unwrap_or(0).max(0) as u64;
                let bytes = row.try_get::<Option<i64>, _>(2)?.unwrap_or(0).max(0) as u64;
                layout.rows_estimate += est;
                layout.bytes += bytes;
                if let Some(name) = name {
                    layout.partitions.push(PartitionInfo {
                        month: Month::from_partition_name(&name),
                        name,
                        rows_estimate: est,
                        bytes,
                    });
                }
            }
            out.push(layout);
        }
        Ok(out)
    }

    /// Times copying up to `sample` rows of job_logs into a partitioned scratch table, and
    /// scales it to both tables' sizes: how long [`Store::enable_partitions`] should take.
    pub async fn estimate_enable(&self, sample: u64) -> Result<EnableEstimate> {
        let p = self.mysql("partitioning")?;
        let tables = self.partition_layout().await?;
        let mut conn = p.acquire().await?;
        conn.execute("DROP TEMPORARY TABLE IF EXISTS outpost_partition_sample")
            .await?;
        conn.execute("CREATE TEMPORARY TABLE outpost_partition_sample LIKE job_logs")
            .await?;
        let started = Instant::now();
        let copied = sqlx::query(
            "INSERT INTO outpost_partition_sample SELECT * FROM job_logs ORDER BY id LIMIT ?",
        )
        .bind(sample as i64)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let took = started.elapsed();
        conn.execute("DROP TEMPORARY TABLE IF EXISTS outpost_partition_sample")
            .await?;
        let rows: u64 = tables.iter().map(|t| t.rows_estimate).sum();
        let per_row = if copied > 0 {
            took.as_secs_f64() / copied as f64
        } else {
            // An empty table: a copy costs its DDL only.
            0.0
        };
        // Each table is copied once; the indexes are rebuilt as part of the copy, which the
        // sample's INSERT … SELECT also pays.
        let estimate = Duration::from_secs_f64(per_row * rows as f64 + 1.0);
        Ok(EnableEstimate {
            tables,
            sample_rows: copied,
            sample_took: took,
            estimate,
        })
    }

    /// Partitions both tables by month (copying them), from this month through `ahead` months
    /// on, and puts the seed's foreign keys and the unique line key in the places described in
    /// the module's documentation. `progress` hears each step as it starts. Refuses a database
    /// already partitioned.
    pub async fn enable_partitions(
        &self,
        now: DateTime<Utc>,
        ahead: u32,
        mut progress: impl FnMut(&str),
    ) -> Result<()> {
        let p = self.mysql("partitioning")?;
        // A run that died partway is taken up again: each step checks what is done already.
        let layout = self.partition_layout().await?;
        let done = |t: LoggedTable| layout.iter().any(|l| l.table == t && l.is_partitioned());
        if done(LoggedTable::JobLogs) && done(LoggedTable::AuditLogs) {
            return Err(StoreError::Conflict(
                "a partitioned layout (see `outpost-controller partitions status`)".into(),
            ));
        }
        let month = Month::of(now);
        let clause = calendar::partition_clause(month, ahead);
        progress("creating job_log_marks and filling it from job_logs");
        p.execute(MARKS_TABLE).await?;
        p.execute(
            "INSERT INTO job_log_marks (job_id, last_line, first_id, last_id) \
             SELECT job_id, MAX(line_number), MIN(id), MAX(id) FROM job_logs GROUP BY job_id \
             ON DUPLICATE KEY UPDATE last_line = VALUES(last_line), first_id = VALUES(first_id), last_id = VALUES(last_id)",
        )
        .await?;
        progress("replacing the foreign keys of job_logs and audit_logs with triggers");
        // A run that died after this step finds the keys gone already and goes on.
        for (table, key) in [
            ("job_logs", "fk_job_logs_job_id"),
            ("audit_logs", "fk_audit_logs_user_id"),
        ] {
            let present: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = ?",
            )
            .bind(table)
            .bind(key)
            .fetch_one(p)
            .await?;
            if present > 0 {
                p.execute(format!("ALTER TABLE {table} DROP FOREIGN KEY {key}").as_str())
                    .await?;
            }
        }
        for stmt in [
            "DROP TRIGGER IF EXISTS jobs_delete_cascades_to_job_logs",
            JOBS_CASCADE_TRIGGER,
            "DROP TRIGGER IF EXISTS users_delete_detaches_audit_logs",
            USERS_SET_NULL_TRIGGER,
            "DROP TRIGGER IF EXISTS audit_logs_append_only_update",
            AUDIT_APPEND_ONLY_TRIGGER,
            "DROP TRIGGER IF EXISTS audit_logs_user_exists",
            AUDIT_USER_EXISTS_TRIGGER,
        ] {
            p.execute(stmt).await?;
        }
        if !done(LoggedTable::JobLogs) {
            progress("copying job_logs into monthly partitions");
            p.execute(
                format!(
                    "ALTER TABLE job_logs DROP KEY ix_job_logs_job_id_line_number, \
                     ADD KEY ix_job_logs_job_id_line_number (job_id, line_number) {clause}"
                )
                .as_str(),
            )
            .await?;
        }
        if !done(LoggedTable::AuditLogs) {
            progress("copying audit_logs into monthly partitions");
            p.execute(format!("ALTER TABLE audit_logs {clause}").as_str())
                .await?;
        }
        self.partitioned.store(true, Ordering::Relaxed);
        progress("starting this month's ids");
        if self
            .upkeep_under_lock(now, ahead, ENABLE_LOCK_WAIT_SECS)
            .await?
            .skipped
        {
            return Err(StoreError::Held {
                what: "the partitions' upkeep lock",
                waited: Duration::from_secs(ENABLE_LOCK_WAIT_SECS as u64),
                hint: "both tables are partitioned, but this month's ids start only at the next \
                       upkeep, which every controller runs at start-up: restart one now",
            });
        }
        Ok(())
    }

    /// Turns both tables back into one partition each, with the foreign keys and the unique
    /// line key (the undo of [`Store::enable_partitions`]; it copies both tables too).
    pub async fn disable_partitions(&self, mut progress: impl FnMut(&str)) -> Result<()> {
        let p = self.mysql("partitioning")?;
        progress("copying job_logs out of its partitions");
        p.execute("ALTER TABLE job_logs REMOVE PARTITIONING")
            .await?;
        // Only now may a unique key leave out id. The marks made sure no line is stored twice.
        p.execute(
            "ALTER TABLE job_logs DROP KEY ix_job_logs_job_id_line_number, \
             ADD UNIQUE KEY ix_job_logs_job_id_line_number (job_id, line_number)",
        )
        .await?;
        progress("copying audit_logs out of its partitions");
        p.execute("ALTER TABLE audit_logs REMOVE PARTITIONING")
            .await?;
        progress("restoring the foreign keys");
        for stmt in [
            "DROP TRIGGER IF EXISTS jobs_delete_cascades_to_job_logs",
            "DROP TRIGGER IF EXISTS users_delete_detaches_audit_logs",
            "DROP TRIGGER IF EXISTS audit_logs_user_exists",
            "DROP TRIGGER IF EXISTS audit_logs_append_only_update",
            "CREATE TRIGGER audit_logs_append_only_update BEFORE UPDATE ON audit_logs FOR EACH ROW \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only: an audit record cannot be changed'",
            "ALTER TABLE job_logs ADD CONSTRAINT fk_job_logs_job_id FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE",
            "ALTER TABLE audit_logs ADD CONSTRAINT fk_audit_logs_user_id FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL",
            "DROP TABLE IF EXISTS job_log_marks",
        ] {
            p.execute(stmt).await?;
        }
        self.partitioned.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Under a database lock (one controller at a time; the others skip): creates the months
    /// from this one through `ahead` on that are missing, and raises each table's
    /// `AUTO_INCREMENT` to this month's first id if it is below it, so that new rows land in
    /// this month's partition. Does nothing on an unpartitioned table.
    pub async fn ensure_partitions(&self, now: DateTime<Utc>, ahead: u32) -> Result<Upkeep> {
        self.upkeep_under_lock(now, ahead, 0).await
    }

    /// [`Store::ensure_partitions`], waiting up to `wait_secs` for the lock.
    async fn upkeep_under_lock(
        &self,
        now: DateTime<Utc>,
        ahead: u32,
        wait_secs: i64,
    ) -> Result<Upkeep> {
        let p = self.mysql("partitioning")?;
        let mut conn = p.acquire().await?;
        let got: Option<i64> = sqlx::query_scalar(&format!("SELECT GET_LOCK({UPKEEP_LOCK}, ?)"))
            .bind(wait_secs)
            .fetch_one(&mut *conn)
            .await?;
        if got != Some(1) {
            return Ok(Upkeep {
                skipped: true,
                ..Upkeep::default()
            });
        }
        let result = self.upkeep(&mut conn, Month::of(now), ahead).await;
        let _ = sqlx::query(&format!("SELECT RELEASE_LOCK({UPKEEP_LOCK})"))
            .execute(&mut *conn)
            .await;
        result
    }

    async fn upkeep(
        &self,
        conn: &mut sqlx::MySqlConnection,
        month: Month,
        ahead: u32,
    ) -> Result<Upkeep> {
        let mut done = Upkeep::default();
        for layout in self.partition_layout().await? {
            if !layout.is_partitioned() {
                continue;
            }
            let table = layout.table;
            let missing = calendar::missing_months(&layout.months(), month, ahead);
            if let Some(stmt) = calendar::split_future(table.name(), &missing) {
                conn.execute(stmt.as_str()).await?;
                done.created.extend(missing.iter().map(|m| (table, *m)));
            }
            let next_id: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(AUTO_INCREMENT AS SIGNED) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            )
            .bind(table.name())
            .fetch_one(&mut *conn)
            .await?;
            // information_schema may cache table statistics; the rows themselves are the truth.
            let max_id: Option<i64> =
                sqlx::query_scalar(&format!("SELECT MAX(id) FROM {}", table.name()))
                    .fetch_one(&mut *conn)
                    .await?;
            let next = next_id.unwrap_or(1).max(max_id.unwrap_or(0) + 1);
            if next < month.base_id() {
                conn.execute(
                    format!(
                        "ALTER TABLE {} AUTO_INCREMENT = {}",
                        table.name(),
                        month.base_id()
                    )
                    .as_str(),
                )
                .await?;
                done.raised.push(table);
            }
        }
        self.partitioned.store(
            done.created.iter().any(|(t, _)| *t == LoggedTable::JobLogs)
                || self.refresh_layout().await?,
            Ordering::Relaxed,
        );
        Ok(done)
    }

    /// What one partition holds: its rows, id range and newest timestamp.
    pub async fn partition_contents(
        &self,
        table: LoggedTable,
        partition: &str,
    ) -> Result<PartitionContents> {
        let p = self.mysql("partitioning")?;
        check_partition_name(partition)?;
        let row = sqlx::query(&format!(
            "SELECT COUNT(*), MIN(id), MAX(id), MAX(timestamp) FROM {} PARTITION ({partition})",
            table.name()
        ))
        .fetch_one(p)
        .await?;
        Ok(PartitionContents {
            rows: row.try_get::<i64, _>(0)?.max(0) as u64,
            first_id: row.try_get(1)?,
            last_id: row.try_get(2)?,
            newest: row.try_get(3)?,
        })
    }

    /// How many jobs with lines in a partition of job_logs have no verified archive (the
    /// partition may be dropped only when none is left).
    pub async fn unarchived_jobs_in_partition(&self, partition: &str) -> Result<i64> {
        let p = self.mysql("partitioning")?;
        check_partition_name(partition)?;
        Ok(sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM (SELECT DISTINCT job_id FROM job_logs PARTITION ({partition})) d \
             LEFT JOIN job_log_archives a ON a.job_id = d.job_id WHERE a.job_id IS NULL"
        ))
        .fetch_one(p)
        .await?)
    }

    /// Drops a month's partition with every row in it: DDL, so no trigger fires (audit_logs'
    /// append-only triggers refuse row deletes, not this). [`calendar::FUTURE`] is never
    /// dropped.
    pub async fn drop_partition(&self, table: LoggedTable, partition: &str) -> Result<()> {
        let p = self.mysql("partitioning")?;
        check_partition_name(partition)?;
        if partition == calendar::FUTURE {
            return Err(StoreError::invalid(
                "partition",
                "p_future holds the rows of months not created yet and is never dropped",
            ));
        }
        p.execute(format!("ALTER TABLE {} DROP PARTITION {partition}", table.name()).as_str())
            .await?;
        Ok(())
    }
}

/// Partition names go into DDL, which cannot take a bound parameter: only the names this
/// module makes pass.
fn check_partition_name(name: &str) -> Result<()> {
    if name == calendar::BEFORE
        || name == calendar::FUTURE
        || Month::from_partition_name(name).is_some()
    {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "partition",
            format!(
                "'{}' is not a partition of Outpost's",
                crate::text::fit_chars(name, 40)
            ),
        ))
    }
}
