//! Partition upkeep: on a partitioned MySQL/MariaDB database, whichever controller takes the
//! database lock creates the months ahead and starts each month's ids when the month begins.
//! It runs at start-up, at each month's first second and at least daily.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use tokio_util::sync::CancellationToken;

use crate::store::partitions::calendar::Month;
use crate::store::{Dialect, Store};

/// Months created beyond the current one.
pub const AHEAD: u32 = 2;

/// How long until the next round: the start of next month (plus a second) or a day, whichever
/// comes first.
fn until_next_round(now: chrono::DateTime<Utc>) -> Duration {
    let next_month = Month::of(now).next().first_day();
    let at = Utc.from_utc_datetime(&next_month.and_hms_opt(0, 0, 1).unwrap_or_default());
    let to_month = (at - now).to_std().unwrap_or(Duration::from_secs(1));
    to_month.min(Duration::from_secs(86_400))
}

pub async fn run(store: Store, stop: CancellationToken) {
    if store.dialect() != Dialect::Mysql {
        return;
    }
    loop {
        match store.refresh_layout().await {
            Ok(false) => {}
            Ok(true) => match store.ensure_partitions(Utc::now(), AHEAD).await {
                Ok(done) => {
                    for (table, month) in &done.created {
                        tracing::info!(table = table.name(), %month, "partition created");
                    }
                    for table in &done.raised {
                        tracing::info!(
                            table = table.name(),
                            "ids moved on to this month's partition"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "partition upkeep failed; next try within a day")
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot read the partition layout"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(until_next_round(Utc::now())) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_fall_on_month_starts_or_daily() {
        let end_of_month = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 0).unwrap();
        assert_eq!(until_next_round(end_of_month), Duration::from_secs(61));
        let mid = Utc.with_ymd_and_hms(2026, 12, 10, 0, 0, 0).unwrap();
        assert_eq!(until_next_round(mid), Duration::from_secs(86_400));
    }
}
