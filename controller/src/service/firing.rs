//! The firing task: just ahead of the earliest schedule's next slot ([`LEAD`]; and at least
//! every second) it looks for schedules due at it, plans the launch of each one's template as its
//! owner (with the rest of its job's assignment read then, not beside the write), and launches
//! it with the slot's claim in the same commit (a conditional UPDATE of
//! `next_run_at`, so one controller among many fires it), written just before the slot on
//! MySQL ([`WRITE_AHEAD`]) and committed at it, dated at it; the slots missed during downtime
//! are recorded with it as one skipped run. A slot that cannot fire is claimed alone, its run
//! recorded skipped or failed with the reason. The decisions are
//! [`crate::schedule::catchup`]'s; this is the thin async shell.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::error::{Kind, ServiceError};
use crate::core::Core;
use crate::model::{OverlapRule, Schedule, ScheduleRunStatus};
use crate::schedule::calendar::Calendar;
use crate::schedule::catchup;
use crate::store::schedules::{NewRun, SlotClaim};
use crate::store::Dialect;

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
    // The slot the next pass fires, when the task woke ahead of it to plan.
    let mut ahead: Option<chrono::DateTime<Utc>> = None;
    loop {
        let pass = Utc::now();
        // Only just ahead: a clock stepped back meanwhile must not hold the pass.
        let at = ahead
            .take()
            .filter(|slot| (*slot - pass).to_std().is_ok_and(|d| d <= 2 * LEAD))
            .unwrap_or(pass);
        let next = match fire_due(&core, at).await {
            Ok(()) => next_slot(&core, at).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read due schedules; trying again in a second");
                None
            }
        };
        let wait = match next {
            Some(slot) => {
                let until = (slot - Utc::now()).to_std().unwrap_or_default();
                match until.checked_sub(LEAD) {
                    Some(before) if until <= TICK => {
                        ahead = Some(slot);
                        before
                    }
                    _ => until.min(TICK),
                }
            }
            None => TICK,
        };
        tokio::select! {
            _ = core.stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            // A schedule saved here may be due before the wait ends: a pass now, not ahead.
            _ = core.schedules_changed.notified() => ahead = None,
        }
    }
}

/// How long the task sleeps at most: schedules saved on another controller, and slots whose
/// firing failed, are looked at again within this.
const TICK: Duration = Duration::from_secs(1);

/// How long before a slot the task wakes to read the schedules due at it and plan their
/// launches (each plan with its job's assignment rows,
/// [`crate::service::launch::LaunchPlan::read_ahead`]), so that at the slot only the launches'
/// commits are left (each firing then waits for the slot before it writes). More than a few
/// rounds of `schedule_fire_concurrency` firings' reads take; on MySQL three times the setting
/// may wait for the slot, and firings past them plan after it. An edit made in this window is
/// one made at the slot itself: the claim checks the slot and that the schedule is enabled, not
/// its other fields.
const LEAD: Duration = Duration::from_millis(25);

/// How long before its slot a planned launch starts its transaction (on MySQL), to commit at
/// the slot: about what ten launches' statements take side by side on two cores. Its rows
/// (the schedule's, its servers') stay locked from then until the slot.
const WRITE_AHEAD: chrono::Duration = chrono::Duration::milliseconds(8);

/// The earliest slot after a pass that fired those due at `at`, to sleep until (a [`TICK`]
/// at most). A slot that was due at `at` and still is failed to fire in it: it is left out,
/// and tried again at the tick (it must not spin the task, nor hold the others back).
async fn next_slot(core: &Core, at: chrono::DateTime<Utc>) -> Option<chrono::DateTime<Utc>> {
    match core.store.earliest_slot(at).await {
        Ok(slot) => slot,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the next schedule slot; trying again in a second");
            None
        }
    }
}

/// Fires every slot due at `at` (now, or a slot the task woke ahead of). A few at a time: a
/// thousand schedules due at one minute would otherwise launch one after another. On MySQL
/// the reads and the writes are bounded apart, so that the firings due at one slot (up to
/// three times the setting) are all planned ahead of it and none waits at the slot for
/// another's reads.
async fn fire_due(core: &Arc<Core>, at: chrono::DateTime<Utc>) -> crate::store::Result<()> {
    use futures_util::StreamExt;
    // A firing holds up to three pooled connections while it plans, one while it writes: the
    // setting bounds the plans, and as many connections' worth of planned firings may wait
    // for their slot and write. Every firing under way is polled to its end: a plan is never
    // left half-way holding connections while writers wait for them. SQLite writes one at a
    // time whatever this does, each writer holding one of its (at most eight) pooled
    // connections while it waits for the lock, so there a firing plans and writes in one turn.
    let planning = core.settings.schedule_fire_concurrency.max(1) as usize;
    let writing = match core.store.dialect() {
        Dialect::Mysql => 3 * planning,
        Dialect::Sqlite => planning,
    };
    let plans = tokio::sync::Semaphore::new(planning);
    // Each batch reads on past the last one, whether its slots fired or not: a batch whose
    // firings all failed is not read again in this pass.
    let mut after = None;
    loop {
        let due = core.store.due_schedules(at, after, BATCH).await?;
        let n = due.len();
        after = due
            .last()
            .and_then(|s| Some((s.next_run_at?, s.id)))
            .or(after);
        futures_util::stream::iter(due)
            .take_while(|_| std::future::ready(!core.stop.is_cancelled()))
            .for_each_concurrent(writing, |s| {
                let plans = &plans;
                async move {
                    let ready = {
                        // Never closed: the permit is always there.
                        let _plan = plans.acquire().await.ok();
                        plan_one(core, &s, at).await
                    };
                    fire_one(core, s, ready, at).await
                }
            })
            .await;
        if n < BATCH as usize || core.stop.is_cancelled() {
            return Ok(());
        }
    }
}

/// Writes a slot's firing as planned, saying why when it could not.
async fn fire_one(
    core: &Arc<Core>,
    s: Schedule,
    ready: Result<Option<Ready>, ServiceError>,
    at: chrono::DateTime<Utc>,
) {
    let fired = match ready {
        Ok(Some(ready)) => write_one(core, &s, ready, at).await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = fired {
        tracing::warn!(schedule = %s.name, error = %e, "schedule slot not fired");
    }
}

/// A slot's firing as decided and planned ahead of it: what [`write_one`] writes at the slot.
struct Ready {
    /// The slot the schedule was due at, as read.
    slot: chrono::DateTime<Utc>,
    /// Its next slot after this firing, if any.
    next: Option<chrono::DateTime<Utc>>,
    /// Slots missed during downtime, recorded skipped with it.
    missed: Vec<NewRun>,
    /// The slot it fires and its launch, or why it does not; `None` when only missed slots
    /// are left to record.
    fire: Option<(chrono::DateTime<Utc>, Planned)>,
}

/// A launch planned, or the run's status and reason when it cannot be.
type Planned = Result<super::templates::TemplatePlan, (ScheduleRunStatus, String)>;

/// Decides a slot's firing as of `at` and plans its launch; `None` when the schedule has no
/// slot. An error (the database's) leaves the slot due, for the next pass (or another
/// controller) to try again.
async fn plan_one(
    core: &Arc<Core>,
    s: &Schedule,
    at: chrono::DateTime<Utc>,
) -> Result<Option<Ready>, ServiceError> {
    let Some(slot) = s.next_run_at else {
        return Ok(None);
    };
    let calendar = match Calendar::new(&s.cron, &s.timezone) {
        Ok(c) => c,
        Err(e) => {
            // Checked when saved; a zone dropped from the database since: stop, say why.
            let reason = format!("cannot compute the schedule: {e}");
            return Ok(Some(Ready {
                slot,
                next: None,
                missed: Vec::new(),
                fire: Some((slot, Err((ScheduleRunStatus::Failed, reason)))),
            }));
        }
    };
    let grace = core.settings.schedule_grace;
    // A long pass decides its last slots as of when it gets to them.
    let due = catchup::decide(&calendar, slot, at.max(Utc::now()), grace, s.ends_at);
    let missed: Vec<NewRun> = due
        .missed
        .iter()
        .map(|m| slot_run(m.first, ScheduleRunStatus::Skipped, Some(m.reason(grace))))
        .collect();
    let ready = |fire| Ready {
        slot,
        next: due.next,
        missed: missed.clone(),
        fire,
    };
    let Some(fire) = due.fire else {
        return Ok(Some(ready(None)));
    };
    // Read before the claim, which is made in the launch's commit; the claim still decides
    // which controller records the slot.
    let overlapping = async {
        match s.overlap {
            OverlapRule::Skip => core.store.schedule_active_jobs(s.id).await.map(|n| n > 0),
            OverlapRule::Queue => Ok(false),
        }
    };
    let (overlapping, planned) = tokio::join!(overlapping, super::schedules::plan_launch(core, s));
    let planned = match (overlapping.map_err(ServiceError::from), planned) {
        (Ok(true), _) => Err((
            ScheduleRunStatus::Skipped,
            "previous run still going (overlap rule: skip)".to_string(),
        )),
        (Ok(false), Ok(mut plan)) => {
            if core.settings.claim_at_launch {
                plan.launch.read_ahead(&core.store).await;
            }
            Ok(plan)
        }
        // The database's: the slot stays due, tried again while within its grace.
        (Err(e), _) | (_, Err(e)) if e.kind == Kind::Unavailable => return Err(e),
        (Err(e), _) | (_, Err(e)) => Err((ScheduleRunStatus::Failed, e.to_string())),
    };
    Ok(Some(ready(Some((fire, planned)))))
}

/// Writes a planned firing at `at`, not before: the launch with the slot's claim in its
/// commit, or the claim alone with the runs that record why the slot did not fire. An error
/// leaves the slot due.
async fn write_one(
    core: &Arc<Core>,
    s: &Schedule,
    ready: Ready,
    at: chrono::DateTime<Utc>,
) -> Result<(), ServiceError> {
    let Ready {
        slot,
        next,
        missed,
        fire,
    } = ready;
    let claim = |runs| SlotClaim {
        schedule: s.id,
        slot,
        next,
        runs,
        controller: core.settings.controller_id.clone(),
    };
    let with = |last: NewRun| missed.iter().cloned().chain([last]).collect::<Vec<_>>();
    let Some((fire, planned)) = fire else {
        until(at).await;
        if core.store.claim_slot(&claim(missed.clone())).await? {
            tracing::warn!(schedule = %s.name, "missed slots recorded as skipped");
        }
        return Ok(());
    };
    let refused = match planned {
        Ok(plan) => {
            let fired = NewRun {
                jobs: i32::try_from(plan.launch.jobs.len()).unwrap_or(i32::MAX),
                ..slot_run(fire, ScheduleRunStatus::Fired, None)
            };
            let owner = plan.launch.run.user_id;
            // On MySQL the launch is written just ahead of the slot and commits at it; SQLite's
            // one writer would hold every other write that long, so it writes at the slot.
            let not_before = match core.store.dialect() {
                Dialect::Mysql => {
                    until(at - WRITE_AHEAD).await;
                    Some(at)
                }
                Dialect::Sqlite => {
                    until(at).await;
                    None
                }
            };
            match super::schedules::fire(core, plan, claim(with(fired)), not_before, owner).await {
                Ok(Some(jobs)) => {
                    tracing::info!(schedule = %s.name, slot = %fire, jobs, "schedule fired");
                    return Ok(());
                }
                Ok(None) => return Ok(()),
                // The slot is tried again while within its grace.
                Err(e) if e.kind == Kind::Unavailable => return Err(e),
                Err(e) => (ScheduleRunStatus::Failed, e.to_string()),
            }
        }
        Err(refused) => refused,
    };
    until(at).await;
    let (status, reason) = refused;
    let recorded = slot_run(fire, status, Some(reason.clone()));
    if core.store.claim_slot(&claim(with(recorded))).await? {
        match status {
            ScheduleRunStatus::Failed => {
                tracing::warn!(schedule = %s.name, slot = %fire, %reason, "schedule run failed")
            }
            _ => tracing::info!(schedule = %s.name, slot = %fire, %reason, "schedule slot skipped"),
        }
    }
    Ok(())
}

/// A run row of no jobs.
fn slot_run(
    slot_at: chrono::DateTime<Utc>,
    status: ScheduleRunStatus,
    reason: Option<String>,
) -> NewRun {
    NewRun {
        slot_at,
        status,
        reason,
        jobs: 0,
    }
}

/// Waits until `at`, when a pass woke ahead of it; never much longer than the lead, whatever
/// the clock does meanwhile.
async fn until(at: chrono::DateTime<Utc>) {
    if let Ok(left) = (at - Utc::now()).to_std() {
        tokio::time::sleep(left.min(2 * LEAD)).await;
    }
}
