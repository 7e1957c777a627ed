//! Retention: job output older than the configured period (default 90 days) is deleted in
//! small batches so the table's locks stay short. Audit records are never deleted here: they
//! are kept at least a year, and removing older ones is left to the operator's archive policy.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

const BATCH: i64 = 1000;

/// Deletes expired lines until none are left; returns how many went.
pub async fn sweep(
    store: &Store,
    retention: Duration,
    stop: &CancellationToken,
) -> crate::store::Result<u64> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(90));
    let mut total = 0;
    while !stop.is_cancelled() {
        let n = store.delete_log_lines_before(cutoff, BATCH).await?;
        total += n;
        if n < BATCH as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(total)
}

/// Runs [`sweep`] at start-up and then hourly.
pub async fn run(store: Store, retention: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => match sweep(&store, retention, &stop).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "expired job output deleted"),
                Err(e) => tracing::warn!(error = %e, "retention sweep failed; next try in an hour"),
            },
        }
    }
}
