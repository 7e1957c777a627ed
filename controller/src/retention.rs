//! Retention: job output older than the configured period (default 90 days) leaves the
//! database only after it is archived. Each pass runs two separate steps: [`archive_pass`]
//! writes, verifies and records an archive for every finished job whose last line is past the
//! retention, and [`removal_pass`] deletes the rows of archived jobs in small batches so the
//! table's locks stay short (a partition drop can stand beside it). A job whose archive fails
//! keeps its lines and raises a ticket. Audit records are never deleted here: past
//! `audit_retention_days` (default: never) they are exported to the archive.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::archive::{audit, jobs, Archive, ArchiveError};
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

/// Deletes the rows of archived jobs; returns how many went.
pub async fn removal_pass(store: &Store, stop: &CancellationToken) -> crate::store::Result<u64> {
    jobs::remove_archived(store, stop).await
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
    let removed = removal_pass(store, stop).await?;
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
