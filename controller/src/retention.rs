//! Retention: job output older than the configured period (default 90 days) leaves the
//! database only after it is archived. Each pass runs two separate steps: [`archive_pass`]
//! writes, verifies and records an archive for every finished job whose last line is past the
//! retention, and [`removal_pass`] removes what is archived: on partitioned MySQL tables by
//! dropping whole months ([`drop_expired_months`]), elsewhere by deleting the rows of archived
//! jobs in small batches so the table's locks stay short. A job whose archive fails
//! keeps its lines and raises a ticket. Audit records are never deleted here: past
//! `audit_retention_days` (default: never) they are exported to the archive.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::archive::{audit, jobs, Archive, ArchiveError};
use crate::store::partitions::{calendar, LoggedTable};
use crate::store::Store;

/// What to keep and where archives go.
#[derive(Debug, Clone)]
pub struct Policy {
    pub retention: Duration,
    pub audit_retention: Option<Duration>,
    pub archive: Archive,
}

/// Archives the output of every finished job whose last line is older than the retention.
pub async fn archive_pass(
    store: &Store,
    policy: &Policy,
    stop: &CancellationToken,
) -> Result<jobs::Pass, ArchiveError> {
    let cutoff = Utc::now()
        - chrono::Duration::from_std(policy.retention).unwrap_or(chrono::Duration::days(90));
    jobs::archive_expired(store, &policy.archive, cutoff, stop).await
}

/// Removes archived job output; returns how many lines went.
pub async fn removal_pass(
    store: &Store,
    policy: &Policy,
    stop: &CancellationToken,
) -> Result<u64, ArchiveError> {
    if store.refresh_layout().await? {
        return Ok(drop_expired_months(store, policy, Utc::now()).await?.lines);
    }
    Ok(jobs::remove_archived(store, stop).await?)
}

/// What [`drop_expired_months`] removed.
#[derive(Debug, Default, Clone)]
pub struct Dropped {
    pub partitions: Vec<(LoggedTable, String)>,
    pub lines: u64,
    pub audit_records: u64,
}

/// Drops each month of job_logs whose newest line is past the retention and whose every job
/// has a verified archive, and — only when an audit retention is set — each month of
/// audit_logs whose newest record is past it, once verified exports cover all its records
/// (exporting them first if none does). A month still holding an unarchived job stays, and
/// says so in the log; the job's archive failure has its own ticket. `now` is a parameter so
/// that tests can stand in the future.
pub async fn drop_expired_months(
    store: &Store,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Dropped, ArchiveError> {
    let mut done = Dropped::default();
    let cutoff = (now
        - chrono::Duration::from_std(policy.retention).unwrap_or(chrono::Duration::days(90)))
    .naive_utc();
    let audit_cutoff = policy.audit_retention.map(|r| {
        (now - chrono::Duration::from_std(r).unwrap_or(chrono::Duration::days(36_500))).naive_utc()
    });
    for layout in store.partition_layout().await? {
        let table = layout.table;
        let Some(cutoff) = (match table {
            LoggedTable::JobLogs => Some(cutoff),
            LoggedTable::AuditLogs => audit_cutoff,
        }) else {
            continue;
        };
        for part in &layout.partitions {
            if part.name == calendar::FUTURE {
                continue;
            }
            let contents = store.partition_contents(table, &part.name).await?;
            let expired = match (contents.newest, part.month) {
                (Some(newest), _) => newest < cutoff,
                // An empty month is dropped once it is wholly past.
                (None, Some(m)) => m.next().first_day().and_time(NaiveTime::MIN) <= cutoff,
                (None, None) => false,
            };
            if !expired {
                continue;
            }
            match table {
                LoggedTable::JobLogs => {
                    let unarchived = store.unarchived_jobs_in_partition(&part.name).await?;
                    if unarchived > 0 {
                        tracing::warn!(partition = %part.name, unarchived, "a month past the retention stays: some of its jobs have no verified archive");
                        continue;
                    }
                    done.lines += contents.rows;
                }
                LoggedTable::AuditLogs => {
                    if let (Some(first), Some(last)) = (contents.first_id, contents.last_id) {
                        if !audit::covered(store, first, last).await? {
                            let label = part
                                .month
                                .map(|m| m.to_string())
                                .unwrap_or_else(|| part.name.clone());
                            audit::export_audit_range(store, &policy.archive, first, last, &label)
                                .await?;
                        }
                    }
                    done.audit_records += contents.rows;
                }
            }
            store.drop_partition(table, &part.name).await?;
            tracing::info!(table = table.name(), partition = %part.name, rows = contents.rows, "month past the retention dropped");
            done.partitions.push((table, part.name.clone()));
        }
    }
    Ok(done)
}

/// One whole sweep: archive, remove, export old audit records. Returns the lines removed.
pub async fn sweep(
    store: &Store,
    policy: &Policy,
    stop: &CancellationToken,
) -> Result<u64, ArchiveError> {
    let pass = archive_pass(store, policy, stop).await?;
    if pass.archived > 0 || pass.failed > 0 {
        tracing::info!(
            archived = pass.archived,
            failed = pass.failed,
            "archive pass done"
        );
    }
    let removed = removal_pass(store, policy, stop).await?;
    if let Some(r) = policy.audit_retention {
        if let Some(a) = audit::export_expired_audit(store, &policy.archive, r).await? {
            tracing::info!(first = a.first_id, last = a.last_id, records = a.row_count, key = %a.location, "audit records exported");
        }
    }
    Ok(removed)
}

/// Runs [`sweep`] at start-up and then hourly.
pub async fn run(store: Store, policy: Policy, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => match sweep(&store, &policy, &stop).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "expired job output deleted"),
                Err(e) => tracing::warn!(error = %e, "retention sweep failed; next try in an hour"),
            },
        }
    }
}
