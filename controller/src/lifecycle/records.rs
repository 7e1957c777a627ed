//! The recorded transitions: one conditional UPDATE each, naming the states it leaves (from
//! [`Move::leaves`]) and setting the state it enters ([`Move::enters`]), and, for an agent's attempt, its dispatch id, with its audit record in the
//! same transaction. Private to the lifecycle module: nothing else in the crate can move a job.

use serde_json::json;

use super::machine::Move;
use super::run_end::{check_budget, release_next_wave, settle_run, stop_run};
use std::collections::{BTreeSet, HashMap};

use super::{Attempt, CancelResult, Claim, Finishing, Released, Starting, Wanted};
use crate::model::{JobId, JobStatus, RunId, ServerId};
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

/// The count that decides a claim: the jobs of a server that have agents.
pub(super) fn busy_sql() -> String {
    format!("SELECT COUNT(*) FROM jobs WHERE server_id = ? AND status IN {ACTIVE_SQL} AND agent_id IS NOT NULL")
}

/// The server's row, locked, with its busy count ([`busy_sql`]) in the same statement. The
/// count is correlated to the locked row, so it is read after the lock is granted and sees
/// every claim committed before: it is the transaction's first plain read, and InnoDB opens
/// a repeatable-read snapshot at that read, not at BEGIN.
pub(super) fn lock_server_sql() -> String {
    format!(
        "SELECT (SELECT COUNT(*) FROM jobs j WHERE j.server_id = s.id AND j.status IN {ACTIVE_SQL} \
         AND j.agent_id IS NOT NULL) FROM servers s WHERE s.id = ? FOR UPDATE"
    )
}

/// Takes a server's row lock on MySQL, so that claims for one server (from several
/// controllers, or a launch's own) are taken one after another, and reads its busy count
/// under that lock in the same round trip ([`lock_server_sql`]). A launch takes it before it
/// inserts its job: the insert's foreign-key check would take a shared lock first, and two
/// launches upgrading theirs would deadlock. Evaluates to the count on MySQL; to `None` on
/// SQLite, which has one writer and checks the count in the claim's own UPDATE.
macro_rules! lock_server {
    ($exec:expr, $dialect:expr, $server:expr) => {
        async {
            match $dialect {
                crate::store::Dialect::Mysql => {
                    let busy =
                        sqlx::query_scalar::<_, i64>(&crate::lifecycle::records::lock_server_sql())
                            .bind($server)
                            .fetch_optional(&mut *$exec)
                            .await?;
                    // No such server: nothing holds it, and the claim's UPDATE (or the
                    // launch's insert) finds out.
                    Ok::<Option<i64>, crate::store::StoreError>(Some(busy.unwrap_or(0)))
                }
                crate::store::Dialect::Sqlite => Ok(None),
            }
        }
        .await
    };
}
pub(super) use lock_server;

/// Several servers' rows, locked in one statement in id order (`ORDER BY` the primary key), so
/// that two batches over the same servers wait for each other instead of deadlocking. Unlike
/// [`lock_server_sql`] it reads no count: InnoDB would evaluate the first row's count, opening
/// the transaction's snapshot, before it waits for the next row's lock, and that row's count
/// would then miss a claim committed during the wait. [`busy_counts_sql`] is read after it.
pub(super) fn lock_servers_sql(n: usize) -> String {
    let list = vec!["?"; n].join(", ");
    format!("SELECT id FROM servers WHERE id IN ({list}) ORDER BY id FOR UPDATE")
}

/// The busy counts ([`busy_sql`]) of several servers; a server with none has no row.
pub(super) fn busy_counts_sql(n: usize) -> String {
    let list = vec!["?"; n].join(", ");
    format!(
        "SELECT server_id, COUNT(*) FROM jobs WHERE server_id IN ({list}) AND status IN {ACTIVE_SQL} \
         AND agent_id IS NOT NULL GROUP BY server_id"
    )
}

/// Reads the busy count of a server ([`busy_sql`]) through `$exec`; evaluates to its result.
macro_rules! busy_count {
    ($exec:expr, $server:expr) => {
        sqlx::query_scalar::<_, i64>(&crate::lifecycle::records::busy_sql())
            .bind($server)
            .fetch_one(&mut *$exec)
            .await
    };
}
pub(super) use busy_count;

/// The DISPATCH record of a claim, added to `$audits`; evaluates to the [`Claim`].
macro_rules! dispatched {
    ($job:expr, $agent:expr, $dispatch_id:expr, $audits:expr) => {{
        let (job, agent, dispatch_id): (crate::model::JobId, crate::model::AgentId, &str) =
            ($job, $agent, $dispatch_id);
        $audits.push(crate::store::audit::NewAudit {
            actor: &crate::lifecycle::records::SYSTEM,
            action: "DISPATCH",
            resource_type: "job",
            resource_id: Some(job.0),
            details: Some(serde_json::json!({"agent_id": agent, "dispatch_id": dispatch_id})),
        });
        crate::lifecycle::Claim::Claimed(crate::lifecycle::Attempt {
            job,
            dispatch_id: dispatch_id.to_owned(),
        })
    }};
}
pub(super) use dispatched;

/// The claim itself, in a transaction that holds the server's lock ([`lock_server!`]): the job
/// goes to `agent` under `dispatch_id` unless its server already has `max_per_server` jobs
/// with agents, with its DISPATCH audit record. On MySQL `$busy` is the count the lock read;
/// SQLite runs the check and the update as one statement (it has one writer, and one
/// controller). Evaluates to the [`Claim`]; nothing is written unless it is `Claimed`, and
/// then its DISPATCH record is added to `$audits` for the caller to write in the transaction.
macro_rules! claim_locked {
    ($exec:expr, $dialect:expr, $busy:expr, $job:expr, $server:expr, $agent:expr, $dispatch_id:expr, $max_per_server:expr, $audits:expr) => {{
        let (job, server, agent, dispatch_id): (crate::model::JobId, crate::model::ServerId, crate::model::AgentId, &str) =
            ($job, $server, $agent, $dispatch_id);
        async {
            let busy_sql = crate::lifecycle::records::busy_sql();
            let claim_sql = format!(
                "UPDATE jobs SET agent_id = ?, assigned_at = ?, celery_task_id = ?, pending_reason = NULL \
                 WHERE id = ? AND status IN {} AND agent_id IS NULL AND cancel_requested_at IS NULL",
                crate::lifecycle::machine::Move::Claim.leaves_sql()
            );
            let limit = i64::from($max_per_server);
            let ts = crate::store::now();
            let claimed = match $dialect {
                crate::store::Dialect::Mysql => {
                    // The count comes with the server's lock; without one, refuse rather
                    // than risk the limit.
                    let busy: Option<i64> = $busy;
                    if busy.is_none_or(|b| b >= limit) {
                        return Ok(crate::lifecycle::Claim::ServerBusy);
                    }
                    sqlx::query(&claim_sql)
                        .bind(agent)
                        .bind(ts)
                        .bind(dispatch_id)
                        .bind(job)
                        .execute(&mut *$exec)
                        .await?
                        .rows_affected()
                        == 1
                }
                crate::store::Dialect::Sqlite => {
                    let sql = format!("{claim_sql} AND ({busy_sql}) < ?");
                    let claimed = sqlx::query(&sql)
                        .bind(agent)
                        .bind(ts)
                        .bind(dispatch_id)
                        .bind(job)
                        .bind(server)
                        .bind(limit)
                        .execute(&mut *$exec)
                        .await?
                        .rows_affected()
                        == 1;
                    if !claimed {
                        if crate::lifecycle::records::busy_count!($exec, server)? >= limit {
                            return Ok(crate::lifecycle::Claim::ServerBusy);
                        }
                    }
                    claimed
                }
            };
            if !claimed {
                return Ok(crate::lifecycle::Claim::Taken);
            }
            Ok::<crate::lifecycle::Claim, crate::store::StoreError>(crate::lifecycle::records::dispatched!(job, agent, dispatch_id, $audits))
        }
        .await
    }};
}
pub(super) use claim_locked;

/// Claims a batch of jobs in one transaction: one commit for all of them. On MySQL the
/// servers' locks are taken first ([`lock_servers_sql`], or [`lock_server_sql`] with its count
/// for a batch of one server), then their busy counts read, so every count is read after every
/// lock is held; room under each server's limit is given in the batch's order, and the claims'
/// UPDATEs run in job-id order, the order in which a run's stop locks its jobs. SQLite (one
/// writer) checks each count in the claim's UPDATE, in the batch's order.
/// Returns one [`Claim`] per wanted job, in order.
pub(super) async fn claim_all(
    store: &Store,
    wanted: &[Wanted],
    max_per_server: u32,
) -> Result<Vec<Claim>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let dialect = store.dialect();
    let servers: Vec<ServerId> = wanted
        .iter()
        .map(|w| w.server)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let limit = i64::from(max_per_server);
    on_pool!(store, p => {
        let mut tx = p.begin_write().await?;
        let mut audits = Vec::new();
        let mut claims: Vec<Option<Claim>> = vec![None; wanted.len()];
        match dialect {
            Dialect::Mysql => {
                let mut busy: HashMap<ServerId, i64> = HashMap::new();
                if let [one] = servers.as_slice() {
                    if let Some(b) = lock_server!(&mut *tx, dialect, *one)? {
                        busy.insert(*one, b);
                    }
                } else {
                    let sql = lock_servers_sql(servers.len());
                    let mut q = sqlx::query(&sql);
                    for s in &servers {
                        q = q.bind(*s);
                    }
                    q.fetch_all(&mut *tx).await?;
                    let sql = busy_counts_sql(servers.len());
                    let mut q = sqlx::query_as::<_, (ServerId, i64)>(&sql);
                    for s in &servers {
                        q = q.bind(*s);
                    }
                    busy.extend(q.fetch_all(&mut *tx).await?);
                }
                // Room is given in the batch's order (the first queued first); the UPDATEs of
                // a pass run in job-id order. A job found taken gives its room back, to the
                // next of its server in another pass.
                loop {
                    let mut tried = Vec::new();
                    for (i, w) in wanted.iter().enumerate() {
                        let b = busy.entry(w.server).or_insert(0);
                        if claims[i].is_none() && *b < limit {
                            *b += 1;
                            tried.push(i);
                        }
                    }
                    if tried.is_empty() {
                        break;
                    }
                    tried.sort_by_key(|i| wanted[*i].job);
                    for i in tried {
                        let w = &wanted[i];
                        // The room was counted above: the claim is told there is some. One
                        // UPDATE a job, by its primary key, which locks that row alone: one
                        // UPDATE … WHERE id IN (…) for the pass (tried on 12-05) deadlocked
                        // with a launch's insert in the two-controllers test.
                        let claim = claim_locked!(&mut *tx, dialect, Some(0), w.job, w.server, w.agent, &w.dispatch_id, max_per_server, &mut audits)?;
                        if !matches!(claim, Claim::Claimed(_)) {
                            if let Some(b) = busy.get_mut(&w.server) {
                                *b -= 1;
                            }
                        }
                        claims[i] = Some(claim);
                    }
                }
                for c in claims.iter_mut().filter(|c| c.is_none()) {
                    *c = Some(Claim::ServerBusy);
                }
            }
            Dialect::Sqlite => {
                for (i, w) in wanted.iter().enumerate() {
                    claims[i] = Some(claim_locked!(&mut *tx, dialect, None, w.job, w.server, w.agent, &w.dispatch_id, max_per_server, &mut audits)?);
                }
            }
        }
        insert_audits!(&mut *tx, &audits)?;
        // Nothing was written for a claim not taken; the commit releases the servers' locks.
        tx.commit().await?;
        Ok(claims.into_iter().map(|c| c.unwrap_or(Claim::Taken)).collect())
    })
}

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
    let ts = now();
    let outbox_sql = insert_sql(store.dialect());
    Ok(on_pool!(store, p => {
        let mut tx = p.begin_write().await?;
        for &r in &runs {
            lock_run!(&mut *tx, store, Some(r))?;
        }
        let mut started = vec![false; starts.len()];
        let mut moved = vec![false; items.len()];
        for row in &order {
            let i = match *row {
                Row::Start(i) => {
                    let s = &starts[i];
                    started[i] = start_locked!(&mut *tx, &s.attempt, crate::store::stamp(s.at))?;
                    continue;
                }
                Row::Finish(i) => i,
            };
            let Finishing { attempt: a, outcome, .. } = &items[i];
            let error = outcome.error_message.as_deref().map(|e| fit_bytes(e, TEXT_BYTES));
            let res = sqlx::query(&format!(
                "UPDATE jobs SET status = ?, exit_code = ?, error_message = ?, completed_at = ?, \
                 started_at = COALESCE(started_at, ?), unreachable = ? \
                 WHERE id = ? AND status IN {} AND celery_task_id = ?", from(&items[i])))
                .bind(Move::Finish(outcome.status).enters().as_str()).bind(outcome.exit_code).bind(error.as_deref())
                .bind(ts).bind(ts).bind(outcome.unreachable).bind(a.job).bind(&a.dispatch_id).execute(&mut *tx).await?;
            moved[i] = res.rows_affected() == 1;
        }
        let ended: Vec<usize> = order.iter().filter_map(|row| match *row {
            Row::Finish(i) if moved[i] => Some(i),
            _ => None,
        }).collect();
        // The batch's records (a job's START before its FINISH) and its wipe of sealed
        // answers, a statement each.
        let mut audits: Vec<NewAudit<'_>> = order.iter().filter_map(|row| match *row {
            Row::Start(i) if started[i] => Some(start_audit(&starts[i].attempt)),
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
