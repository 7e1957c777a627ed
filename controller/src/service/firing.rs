//! The firing task: at the earliest schedule's next slot (and at least every second) it looks
//! for schedules whose next slot is due, claims each slot (a conditional UPDATE of
//! `next_run_at`, so one controller among many fires it), records the slots missed during
//! downtime as one skipped run, and launches the schedule's template as its owner. The
//! decisions are [`crate::schedule::catchup`]'s; this is the thin async shell.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::core::Core;
use crate::model::{OverlapRule, Schedule, ScheduleRunStatus};
use crate::schedule::calendar::Calendar;
use crate::schedule::catchup;
use crate::store::schedules::NewRun;

/// Due schedules read at once; a pass reads batch after batch, oldest slot first.
const BATCH: i64 = 200;
/// A claim older than this, by any controller, was abandoned by its controller.
const STALE_CLAIM: Duration = Duration::from_secs(600);

/// Runs until the stop signal: first settles runs this controller claimed but never launched,
/// then fires due slots as they fall due.
pub async fn run(core: Arc<Core>) {
    let stale = Utc::now() - chrono::Duration::from_std(STALE_CLAIM).unwrap_or_default();
    match core
        .store
        .fail_abandoned_claims(&core.settings.controller_id, stale)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            runs = n,
            "schedule runs claimed before a stop were never launched; recorded failed"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot settle abandoned schedule runs"),
    }
    loop {
        let pass = Utc::now();
        let wait = match fire_due(&core).await {
            Ok(_) => until_next_slot(&core, pass).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read due schedules; trying again in a second");
                TICK
            }
        };
        tokio::select! {
            _ = core.stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            // A schedule saved here may be due before the wait ends.
            _ = core.schedules_changed.notified() => {}
        }
    }
}

/// How long the task sleeps at most: schedules saved on another controller, and slots whose
/// firing failed, are looked at again within this.
const TICK: Duration = Duration::from_secs(1);

/// How long to sleep after a pass that began at `pass`: until the earliest slot after it, so
/// that it fires on time rather than up to a tick late, and never longer than a [`TICK`]. A
/// slot that was due when the pass began and still is failed to fire in it: it is left out,
/// and tried again at the tick (it must not spin the task, nor hold the others back).
async fn until_next_slot(core: &Core, pass: chrono::DateTime<Utc>) -> Duration {
    match core.store.earliest_slot(pass).await {
        Ok(Some(slot)) => (slot - Utc::now()).to_std().unwrap_or_default().min(TICK),
        Ok(None) => TICK,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the next schedule slot; trying again in a second");
            TICK
        }
    }
}

/// Fires every due slot; returns how many schedules were looked at. A few at a time: a
/// thousand schedules due at one minute would otherwise launch one after another.
pub async fn fire_due(core: &Arc<Core>) -> crate::store::Result<usize> {
    use futures_util::StreamExt;
    // Each launch holds a database connection: the setting bounds how many at once.
    let concurrency = core.settings.schedule_fire_concurrency.max(1) as usize;
    let mut seen = 0;
    // Each batch reads on past the last one, whether its slots fired or not: a batch whose
    // firings all failed is not read again in this pass.
    let mut after = None;
    loop {
        let now = Utc::now();
        let due = core.store.due_schedules(now, after, BATCH).await?;
        let n = due.len();
        after = due
            .last()
            .and_then(|s| Some((s.next_run_at?, s.id)))
            .or(after);
        futures_util::stream::iter(due)
            .take_while(|_| std::future::ready(!core.stop.is_cancelled()))
            .for_each_concurrent(concurrency, |s| async move {
                if let Err(e) = fire_one(core, &s, now).await {
                    tracing::warn!(schedule = %s.name, error = %e, "schedule slot not fired");
                }
            })
            .await;
        seen += n;
        if n < BATCH as usize || core.stop.is_cancelled() {
            return Ok(seen);
        }
    }
}

async fn fire_one(
    core: &Arc<Core>,
    s: &Schedule,
    now: chrono::DateTime<Utc>,
) -> crate::store::Result<()> {
    let Some(slot) = s.next_run_at else {
        return Ok(());
    };
    let controller = &core.settings.controller_id;
    let calendar = match Calendar::new(&s.cron, &s.timezone) {
        Ok(c) => c,
        Err(e) => {
            // Checked when saved; a zone dropped from the database since: stop, say why.
            let run = NewRun {
                slot_at: slot,
                status: ScheduleRunStatus::Failed,
                reason: Some(format!("cannot compute the schedule: {e}")),
            };
            core.store
                .claim_slot(s.id, slot, None, &[run], controller)
                .await?;
            return Ok(());
        }
    };
    let grace = core.settings.schedule_grace;
    let due = catchup::decide(&calendar, slot, now, grace, s.ends_at);
    let mut runs = Vec::with_capacity(2);
    if let Some(m) = &due.missed {
        runs.push(NewRun {
            slot_at: m.first,
            status: ScheduleRunStatus::Skipped,
            reason: Some(m.reason(grace)),
        });
    }
    if let Some(f) = due.fire {
        runs.push(NewRun {
            slot_at: f,
            status: ScheduleRunStatus::Claimed,
            reason: None,
        });
    }
    if !core
        .store
        .claim_slot(s.id, slot, due.next, &runs, controller)
        .await?
    {
        return Ok(());
    }
    let Some(fire) = due.fire else {
        tracing::warn!(schedule = %s.name, "missed slots recorded as skipped");
        return Ok(());
    };
    if s.overlap == OverlapRule::Skip && core.store.schedule_active_jobs(s.id).await? > 0 {
        return core
            .store
            .finish_run(
                s.id,
                fire,
                ScheduleRunStatus::Skipped,
                Some("previous run still going (overlap rule: skip)"),
                0,
            )
            .await;
    }
    match super::schedules::launch(core, s).await {
        Ok(jobs) => {
            tracing::info!(schedule = %s.name, slot = %fire, jobs, "schedule fired");
            core.store
                .finish_run(s.id, fire, ScheduleRunStatus::Fired, None, jobs)
                .await
        }
        Err(reason) => {
            tracing::warn!(schedule = %s.name, slot = %fire, %reason, "schedule run failed");
            core.store
                .finish_run(s.id, fire, ScheduleRunStatus::Failed, Some(&reason), 0)
                .await
        }
    }
}
