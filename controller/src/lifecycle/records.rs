//! The recorded transitions after a claim ([`super::claims`]): starts, releases, outcomes,
//! cancels and stops. Conditional UPDATEs (one each, but for an end that finds its job not
//! running), naming the states they leave (from [`Move::leaves`]) and setting the state they
//! enter ([`Move::enters`]), and, for an agent's
//! attempt, its dispatch id, with its audit record in the same transaction. Private to the
//! lifecycle module: nothing else in the crate can move a job.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;

use super::machine::Move;
use super::run_end::{check_budget, release_next_wave, settle_run, stop_run};
use super::{Attempt, CancelResult, Finishing, Released, Starting};
use crate::model::{JobId, JobStatus, RunId};
use crate::notification::facts::{job_event, JobFacts, JOB_FACTS_SQL, PREVIOUS_FINAL_SQL};
use crate::notification::TicketRef;
use crate::store::audit::{insert_audit, insert_audits, Actor, NewAudit};
use crate::store::jobs::ACTIVE_SQL;
use crate::store::outbox::{enqueue_event, insert_sql};
use crate::store::tickets::insert_ticket;
use crate::store::{now, on_pool, Dialect, Result, Store, WritePool};
use crate::text::{fit_bytes, fit_chars, TEXT_BYTES, VARCHAR_255};

/// Takes the run's row lock first on MySQL, so that the jobs of one run ending at once are
/// recorded one after another and the last one sees the others as over (the count that ends
/// the run reads after the lock). SQLite has one writer.
macro_rules! lock_run {
    ($exec:expr, $store:expr, $run:expr) => {
        async {
            if let (Some(r), Dialect::Mysql) = ($run, $store.dialect()) {
                sqlx::query("SELECT id FROM runs WHERE id = ? FOR UPDATE")
                    .bind(r)
                    .fetch_optional(&mut *$exec)
                    .await?;
            }
            Ok::<(), crate::store::StoreError>(())
        }
        .await
    };
}

/// The actor of the system's own records (an `Actor` with no one in it).
pub(super) static SYSTEM: Actor = Actor {
    user_id: None,
    ip_address: None,
    user_agent: None,
};

/// pending → running for this attempt, started at `$ts`, through `$exec`; evaluates to whether
/// the job moved. Only while an agent holds the job: a released job keeps its last dispatch id,
/// and a start of that attempt arriving late must not set it running with no agent. Its START
/// record ([`start_audit`]) is the caller's to write, in the same transaction.
macro_rules! start_locked {
    ($exec:expr, $attempt:expr, $ts:expr) => {{
        let a: &Attempt = $attempt;
        sqlx::query(&format!(
            "UPDATE jobs SET status = ?, started_at = ? \
             WHERE id = ? AND status IN {} AND celery_task_id = ? AND agent_id IS NOT NULL",
            Move::Start.leaves_sql()
        ))
        .bind(Move::Start.enters().as_str())
        .bind($ts)
        .bind(a.job)
        .bind(&a.dispatch_id)
        .execute(&mut *$exec)
        .await
        .map(|r| r.rows_affected() == 1)
    }};
}

/// The START record of an attempt that moved.
fn start_audit(a: &Attempt) -> NewAudit<'_> {
    NewAudit {
        actor: &SYSTEM,
        action: "START",
        resource_type: "job",
        resource_id: Some(a.job.0),
        details: Some(json!({"dispatch_id": a.dispatch_id})),
    }
}

/// The START record an agent's outcome writes for the start that never got its own: dated by
/// the outcome, and saying so.
fn start_audit_from_outcome(a: &Attempt) -> NewAudit<'_> {
    NewAudit {
        details: Some(json!({"dispatch_id": a.dispatch_id, "from_outcome": true})),
        ..start_audit(a)
    }
}

/// pending → running, for this attempt, started at `ts`, in its own transaction.
pub(super) async fn start(store: &Store, a: &Attempt, ts: chrono::NaiveDateTime) -> Result<bool> {
    Ok(on_pool!(store, p => {
        let mut tx = p.begin_write().await?;
        let moved = start_locked!(&mut *tx, a, ts)?;
        if moved {
            insert_audit!(&mut *tx, &start_audit(a))?;
        }
        tx.commit().await?;
        moved
    }))
}

/// Gives an attempt the agent never started back to the queue — or, when a cancel was asked
/// for meanwhile, ends the job cancelled (a released job with a cancel request would otherwise
/// wait forever: the queue skips it).
pub(super) async fn release(
    store: &Store,
    a: &Attempt,
    reason: &str,
    run: Option<RunId>,
) -> Result<Released> {
    let ts = now();
    let (from, cancelled_from) = (
        Move::Release.leaves_sql(),
        Move::ReleaseCancelled.leaves_sql(),
    );
    let cancel_sql = format!(
        "UPDATE jobs SET status = ?, completed_at = ?, error_message = ?, agent_id = NULL \
         WHERE id = ? AND status IN {cancelled_from} AND celery_task_id = ? AND cancel_requested_at IS NOT NULL"
    );
    let release_sql = format!(
        "UPDATE jobs SET agent_id = NULL, assigned_at = NULL, pending_reason = ? \
         WHERE id = ? AND status IN {from} AND celery_task_id = ? AND agent_id IS NOT NULL"
    );
    let reason = fit_chars(reason, VARCHAR_255);
    let outbox_sql = insert_sql(store.dialect());
    Ok(on_pool!(store, p => {
        let mut tx = p.begin_write().await?;
        lock_run!(&mut *tx, store, run)?;
        let cancelled = sqlx::query(&cancel_sql)
            .bind(Move::ReleaseCancelled.enters().as_str()).bind(ts).bind("cancelled before it started").bind(a.job).bind(&a.dispatch_id)
            .execute(&mut *tx).await?.rows_affected() == 1;
        let result = if cancelled {
            insert_audit!(&mut *tx, &NewAudit {
                actor: &Actor::system(), action: "FINISH", resource_type: "job", resource_id: Some(a.job.0),
                details: Some(json!({"status": Move::ReleaseCancelled.enters(), "dispatch_id": a.dispatch_id, "before_start": true})),
            })?;
            if let Some(r) = run {
                settle_run!(&mut *tx, r, outbox_sql)?;
            }
            Released::Cancelled
        } else {
            let res = sqlx::query(&release_sql)
                .bind(reason.as_ref()).bind(a.job).bind(&a.dispatch_id)
                .execute(&mut *tx).await?;
            if res.rows_affected() == 1 { Released::Queued } else { Released::NotHeld }
        };
        tx.commit().await?;
        result
    }))
}

/// Empties a job's sealed secret answers as it ends: a final job never runs again, so nothing
/// needs them, and a sealed value that is gone cannot be opened by a key that leaks later. Their
/// names stay, for the job's view.
macro_rules! wipe_secret_answers {
    ($exec:expr, $jobs:expr) => {
        async {
            let mut qb = sqlx::QueryBuilder::new("UPDATE job_secret_vars SET sealed = ");
            qb.push_bind(Vec::<u8>::new()).push(" WHERE job_id IN (");
            let mut jobs = qb.separated(", ");
            let mut any = false;
            for job in $jobs {
                jobs.push_bind(job);
                any = true;
            }
            if any {
                qb.push(")").build().execute(&mut *$exec).await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await
    };
}

/// A row of a shared record, by its index in the starts or in the outcomes.
#[derive(Clone, Copy)]
enum Row {
    Start(usize),
    Finish(usize),
}

/// Records the attempts in `starts` as started ([`start`] each), then moves each item's job
/// to its final state, with its ticket and its notifications (the outbox rows), all in one
/// transaction and one commit: starts and outcomes that arrive together share one turn on
/// their runs' locks and one synchronous commit, and an outcome may follow its own start in
/// it (an agent's quick job sends both at once). Each run with a job that ended is settled
/// once, after all of them. Returns, per attempt and per item in order, whether its job moved.
pub(super) async fn record_all(
    store: &Store,
    starts: &[Starting],
    items: &[Finishing],
) -> Result<(Vec<bool>, Vec<bool>)> {
    for f in items {
        if let Some(t) = &f.ticket {
            t.check()?;
        }
    }
    // Rows are taken in id order: the runs' locks first (the starts' runs too), then the jobs,
    // a job's start before its end (the order a run's stop takes them in), so two batches
    // cannot wait for each other.
    let runs: BTreeSet<RunId> = items
        .iter()
        .filter_map(|f| f.run)
        .chain(starts.iter().filter_map(|s| s.run))
        .collect();
    let mut order: Vec<Row> = (0..starts.len())
        .map(Row::Start)
        .chain((0..items.len()).map(Row::Finish))
        .collect();
    order.sort_by_key(|row| match *row {
        Row::Start(i) => (starts[i].attempt.job, 0),
        Row::Finish(i) => (items[i].attempt.job, 1),
    });
    let from = |f: &Finishing| Move::Finish(f.outcome.status).leaves_sql();
    let pending_sql = Move::Start.leaves_sql();
    let running_sql = format!("('{}')", Move::Start.enters().as_str());
    let ts = now();
    let outbox_sql = insert_sql(store.dialect());
    Ok(on_pool!(store, p => {
        let mut tx = p.begin_write().await?;
        for &r in &runs {
            lock_run!(&mut *tx, store, Some(r))?;
        }
        let mut started = vec![false; starts.len()];
        let mut moved = vec![false; items.len()];
        let mut started_by_end = vec![false; items.len()];
        // A quick job's start and end often come in one batch: its end first tries both moves
        // in one UPDATE (pending and held → final, started when reported), which takes the
        // job as the start's and the end's UPDATEs together would. One statement instead of
        // two; when it moves nothing (the job started already, or was released), each is
        // tried on its own as usual.
        // A report sent twice (an agent resends what it was not told was recorded) pairs its
        // first end with its last start: any other copy runs in its place, as before, and the
        // first start still dates the job.
        let mut ends_of: HashMap<&Attempt, usize> = HashMap::new();
        for (i, f) in items.iter().enumerate() {
            ends_of.entry(&f.attempt).or_insert(i);
        }
        let mut start_of: Vec<Option<usize>> = vec![None; items.len()];
        let mut folded = vec![false; starts.len()];
        for (i, s) in starts.iter().enumerate().rev() {
            if let Some(f) = ends_of.remove(&s.attempt) {
                (start_of[f], folded[i]) = (Some(i), true);
            }
        }
        for row in &order {
            let i = match *row {
                Row::Start(i) if folded[i] => continue,
                Row::Start(i) => {
                    let s = &starts[i];
                    started[i] = start_locked!(&mut *tx, &s.attempt, crate::store::stamp(s.at))?;
                    continue;
                }
                Row::Finish(i) => i,
            };
            let Finishing { attempt: a, outcome, .. } = &items[i];
            let error = outcome.error_message.as_deref().map(|e| fit_bytes(e, TEXT_BYTES));
            let enters = Move::Finish(outcome.status).enters().as_str();
            if let Some(si) = start_of[i] {
                let res = sqlx::query(&format!(
                    "UPDATE jobs SET status = ?, exit_code = ?, error_message = ?, completed_at = ?, \
                     started_at = ?, unreachable = ? \
                     WHERE id = ? AND status IN {} AND status IN {} AND celery_task_id = ? \
                     AND agent_id IS NOT NULL", Move::Start.leaves_sql(), from(&items[i])))
                    .bind(enters).bind(outcome.exit_code).bind(error.as_deref()).bind(ts)
                    .bind(crate::store::stamp(starts[si].at)).bind(outcome.unreachable).bind(a.job)
                    .bind(&a.dispatch_id).execute(&mut *tx).await?;
                if res.rows_affected() == 1 {
                    (started[si], moved[i]) = (true, true);
                    continue;
                }
                let s = &starts[si];
                started[si] = start_locked!(&mut *tx, &s.attempt, crate::store::stamp(s.at))?;
            }
            // A running job first (the usual end), then a pending one: an end that finds its
            // job pending moved it without a recorded start, and says so (`started_by_end`).
            // Running once more last: a start recorded outside this transaction between the
            // two (its retry's own) would otherwise leave the end matching neither. A job
            // never goes back to pending, so the third try settles it.
            for (k, leaves) in [&running_sql, &pending_sql, &running_sql].into_iter().enumerate() {
                let res = sqlx::query(&format!(
                    "UPDATE jobs SET status = ?, exit_code = ?, error_message = ?, completed_at = ?, \
                     started_at = COALESCE(started_at, ?), unreachable = ? \
                     WHERE id = ? AND status IN {leaves} AND status IN {} AND celery_task_id = ?", from(&items[i])))
                    .bind(enters).bind(outcome.exit_code).bind(error.as_deref())
                    .bind(ts).bind(ts).bind(outcome.unreachable).bind(a.job).bind(&a.dispatch_id).execute(&mut *tx).await?;
                if res.rows_affected() == 1 {
                    (moved[i], started_by_end[i]) = (true, k == 1);
                    break;
                }
            }
        }
        let ended: Vec<usize> = order.iter().filter_map(|row| match *row {
            Row::Finish(i) if moved[i] => Some(i),
            _ => None,
        }).collect();
        // The batch's records (a job's START before its FINISH) and its wipe of sealed
        // answers, a statement each.
        // An end that moved its job out of pending, as its agent reported it, records the
        // start that was lost on the way (the start's own record failed, or its message went
        // with a connection): the job ran, and its trail says when it started.
        let mut audits: Vec<NewAudit<'_>> = order.iter().filter_map(|row| match *row {
            Row::Start(i) if started[i] => Some(start_audit(&starts[i].attempt)),
            Row::Finish(i) if started_by_end[i] && items[i].outcome.started => {
                Some(start_audit_from_outcome(&items[i].attempt))
            }
            _ => None,
        }).collect();
        audits.extend(ended.iter().map(|&i| {
            let Finishing { attempt: a, outcome, .. } = &items[i];
            NewAudit {
                actor: &SYSTEM, action: "FINISH", resource_type: "job", resource_id: Some(a.job.0),
                details: Some(json!({"status": JobStatus::from(outcome.status), "exit_code": outcome.exit_code, "unreachable": outcome.unreachable, "dispatch_id": a.dispatch_id})),
            }
        }));
        insert_audits!(&mut *tx, &audits)?;
        wipe_secret_answers!(&mut *tx, ended.iter().map(|&i| items[i].attempt.job))?;
        let mut settle = BTreeSet::new();
        for &i in &ended {
            let Finishing { attempt: a, outcome, ticket, run, in_larger_run } = &items[i];
            let ticket_id = match ticket {
                Some(t) => Some(insert_ticket!(&mut *tx, t, &Actor::system())?),
                None => None,
            };
            if let Some(r) = *run {
                if let Some(id) = ticket_id {
                    sqlx::query("UPDATE tickets SET run_id = ? WHERE id = ?").bind(r).bind(id).execute(&mut *tx).await?;
                }
                if outcome.status == super::Final::Failed {
                    check_budget!(&mut *tx, r)?;
                }
                settle.insert(r);
            }
            // The notification is committed with the job's end (and its ticket) or not at all.
            // A job of a run on several servers tells nobody on its own: its run tells once.
            let facts: Option<JobFacts> = if *in_larger_run {
                None
            } else {
                sqlx::query_as(JOB_FACTS_SQL).bind(a.job).fetch_optional(&mut *tx).await?
            };
            if let Some(f) = facts {
                let status = JobStatus::from(outcome.status);
                let previous_failed = status == JobStatus::Success && {
                    let prev: Option<String> = sqlx::query_scalar(PREVIOUS_FINAL_SQL)
                        .bind(f.playbook_id).bind(f.server_id).bind(a.job).fetch_optional(&mut *tx).await?;
                    prev.as_deref() == Some(JobStatus::Failed.as_str())
                };
                let opened = match (ticket_id, ticket) {
                    (Some(id), Some(t)) => {
                        let uuid: String = sqlx::query_scalar("SELECT ticket_id FROM tickets WHERE id = ?")
                            .bind(id).fetch_one(&mut *tx).await?;
                        Some(TicketRef { id: uuid, title: t.title.clone(), priority: t.priority })
                    }
                    _ => None,
                };
                if let Some(event) = job_event(&f, status, opened, previous_failed) {
                    enqueue_event!(&mut *tx, &event, outbox_sql)?;
                }
            }
        }
        // Each run ends (or not) once, reading its count after every job of the batch moved:
        // under its lock, so the last of its jobs to end, in whichever transaction, ends it.
        let mut released = Vec::new();
        for r in settle {
            if !settle_run!(&mut *tx, r, outbox_sql)? {
                if let Some(wave) = release_next_wave!(&mut *tx, r)? {
                    released.push((r, wave));
                }
            }
        }
        tx.commit().await?;
        for (run, wave) in released {
            tracing::info!(%run, wave = wave + 1, "wave released");
        }
        (started, moved)
    }))
}

/// Cancels a job no agent holds at once; otherwise records the request, which is delivered
/// to whichever agent holds the job until it ends.
pub(super) async fn cancel(
    store: &Store,
    job: JobId,
    actor: &Actor,
    run: Option<RunId>,
) -> Result<Option<CancelResult>> {
    let ts = now();
    let from = Move::CancelQueued.leaves_sql();
    let direct_sql = format!(
        "UPDATE jobs SET status = ?, cancel_requested_at = ?, completed_at = ?, \
         error_message = 'cancelled before it started' \
         WHERE id = ? AND status IN {from} AND agent_id IS NULL"
    );
    let request_sql = format!(
        "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?) \
         WHERE id = ? AND status IN {ACTIVE_SQL}"
    );
    let outbox_sql = insert_sql(store.dialect());
    Ok(on_pool!(store, p => {
        let mut tx = p.begin_write().await?;
        lock_run!(&mut *tx, store, run)?;
        let direct = sqlx::query(&direct_sql).bind(Move::CancelQueued.enters().as_str()).bind(ts).bind(ts).bind(job).execute(&mut *tx).await?;
        let result = if direct.rows_affected() == 1 {
            Some(CancelResult::Cancelled)
        } else {
            let req = sqlx::query(&request_sql)
            .bind(ts).bind(job).execute(&mut *tx).await?;
            (req.rows_affected() == 1).then_some(CancelResult::Requested)
        };
        if let Some(r) = result {
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "CANCEL", resource_type: "job", resource_id: Some(job.0),
                details: Some(json!({"immediate": r == CancelResult::Cancelled})),
            })?;
            if r == CancelResult::Cancelled {
                wipe_secret_answers!(&mut *tx, [job])?;
                if let Some(run) = run {
                    settle_run!(&mut *tx, run, outbox_sql)?;
                }
            }
        }
        tx.commit().await?;
        result
    }))
}

/// Stops a run (see [`super::run_end`]) and ends it at once when nothing of it is still with
/// an agent. Returns whether this call stopped it.
pub(super) async fn stop(
    store: &Store,
    run: RunId,
    stop: &crate::rollout::Stop,
    running_too: bool,
    actor: &Actor,
) -> Result<bool> {
    let outbox_sql = insert_sql(store.dialect());
    Ok(on_pool!(store, p => {
        let mut tx = p.begin_write().await?;
        lock_run!(&mut *tx, store, Some(run))?;
        let stopped = stop_run!(&mut *tx, run, stop, running_too, actor)?;
        if stopped {
            settle_run!(&mut *tx, run, outbox_sql)?;
        }
        tx.commit().await?;
        stopped
    }))
}
