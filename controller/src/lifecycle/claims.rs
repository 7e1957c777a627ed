//! The claims: a job given to an agent under a dispatch id, conditional on the job still
//! being free and on its server's limit. On MySQL the limit is read under the server's row
//! lock, so that claims for one server (from a batch, a launch, or another controller) are
//! taken one after another; SQLite (one writer) checks it in the claim's UPDATE.
//! Private to the lifecycle module, as its other records ([`super::records`]).

use std::collections::{BTreeSet, HashMap};

use super::{Attempt, Claim, Wanted};
use crate::model::{JobId, ServerId};
use crate::store::audit::insert_audits;
use crate::store::jobs::ACTIVE_SQL;
use crate::store::{on_pool, Dialect, Result, Store, WritePool};

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
                        sqlx::query_scalar::<_, i64>(&crate::lifecycle::claims::lock_server_sql())
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
        sqlx::query_scalar::<_, i64>(&crate::lifecycle::claims::busy_sql())
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
            let busy_sql = crate::lifecycle::claims::busy_sql();
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
                        if crate::lifecycle::claims::busy_count!($exec, server)? >= limit {
                            return Ok(crate::lifecycle::Claim::ServerBusy);
                        }
                    }
                    claimed
                }
            };
            if !claimed {
                return Ok(crate::lifecycle::Claim::Taken);
            }
            Ok::<crate::lifecycle::Claim, crate::store::StoreError>(crate::lifecycle::claims::dispatched!(job, agent, dispatch_id, $audits))
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
        let claims: Vec<Claim> = claims.into_iter().map(|c| c.unwrap_or(Claim::Taken)).collect();
        // Nothing was written for a claim not taken; the commit releases the servers' locks.
        match tx.commit().await {
            Ok(()) => Ok(claims),
            Err(e) => settle_after_failed_commit(store, claims, e.into()).await,
        }
    })
}

/// How long a failed commit's claims may take to read back before the commit's error is
/// returned: the round waits on it, and a store that cannot answer fails the round as before.
const READ_BACK_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);
/// How long the read back waits for a row's lock, on the server (within [`READ_BACK_WITHIN`]).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A commit that returned an error may still have been written (the connection broke after
/// the server committed). A claim the round then took for failed would leave its job held by
/// an agent that was never given it, until that agent's next session. So the claims are read
/// back ([`attempts_written`], which waits for a commit still under way): when a row names its
/// attempt's dispatch id (unique to this try) the commit applied, and each claim stands where
/// its row names its own, and is [`Claim::Taken`] elsewhere (changed since). When no row does,
/// nothing was written, and the commit's error is returned, as it is when the claims cannot be
/// read in time.
async fn settle_after_failed_commit(
    store: &Store,
    claims: Vec<Claim>,
    error: crate::store::StoreError,
) -> Result<Vec<Claim>> {
    let tried: Vec<Attempt> = claims
        .iter()
        .filter_map(|c| match c {
            Claim::Claimed(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    if tried.is_empty() {
        return Err(error);
    }
    let written =
        match tokio::time::timeout(READ_BACK_WITHIN, attempts_written(store, &tried)).await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "a failed claims' commit cannot be read back");
                return Err(error);
            }
            Err(_) => {
                tracing::debug!("a failed claims' commit was not read back in time");
                return Err(error);
            }
        };
    let kept = written.iter().filter(|w| **w).count();
    if kept == 0 {
        return Err(error);
    }
    tracing::warn!(error = %error, claimed = kept, of = tried.len(),
        "a claims' commit reported a failure but was written; its claims stand");
    Ok(settle(claims, &written))
}

/// Whether each attempt is the one its job's row names now. On MySQL each row is read with a
/// shared lock, so the read waits for a transaction still writing it (a commit under way), for
/// [`LOCK_WAIT`] at most. On SQLite a commit that failed wrote nothing a reader can see.
pub(super) async fn attempts_written(store: &Store, attempts: &[Attempt]) -> Result<Vec<bool>> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let list = vec!["?"; attempts.len()].join(", ");
    let lock = match store.dialect() {
        Dialect::Mysql => " LOCK IN SHARE MODE",
        Dialect::Sqlite => "",
    };
    let sql = format!("SELECT id, celery_task_id FROM jobs WHERE id IN ({list}){lock}");
    let mysql = store.dialect() == Dialect::Mysql;
    let rows: Vec<(JobId, Option<String>)> = on_pool!(store, p => {
        let mut tx = p.begin().await?;
        // The server gives up waiting for the lock as soon as the caller would: a wait the
        // caller dropped would otherwise hold this pooled connection for the server's 50 s.
        if mysql {
            sqlx::query(&format!("SET SESSION innodb_lock_wait_timeout = {}", LOCK_WAIT.as_secs()))
                .execute(&mut *tx).await?;
        }
        let mut q = sqlx::query_as(&sql);
        for a in attempts {
            q = q.bind(a.job);
        }
        let rows = q.fetch_all(&mut *tx).await;
        if mysql {
            sqlx::query("SET SESSION innodb_lock_wait_timeout = DEFAULT").execute(&mut *tx).await?;
        }
        tx.rollback().await?;
        rows?
    });
    Ok(attempts
        .iter()
        .map(|a| {
            rows.iter()
                .any(|(id, d)| *id == a.job && d.as_deref() == Some(a.dispatch_id.as_str()))
        })
        .collect())
}

/// The claims as a read back shows them: `written` holds one answer per [`Claim::Claimed`], in
/// order; a claim not written is [`Claim::Taken`].
fn settle(claims: Vec<Claim>, written: &[bool]) -> Vec<Claim> {
    let mut written = written.iter();
    claims
        .into_iter()
        .map(|c| match c {
            Claim::Claimed(a) if written.next().copied().unwrap_or(false) => Claim::Claimed(a),
            Claim::Claimed(_) => Claim::Taken,
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(job: i32) -> Claim {
        Claim::Claimed(Attempt {
            job: JobId(job),
            dispatch_id: format!("d-{job}"),
        })
    }

    #[test]
    fn after_a_failed_commit_only_the_claims_written_stand() {
        let claims = vec![
            claimed(1),
            claimed(2),
            Claim::ServerBusy,
            claimed(4),
            Claim::Taken,
        ];
        // Read back: job 1 names its attempt, jobs 2 and 4 do not (changed since).
        let settled = settle(claims, &[true, false, false]);
        assert!(matches!(&settled[0], Claim::Claimed(a) if a.job == JobId(1)));
        assert!(matches!(settled[1], Claim::Taken));
        assert!(matches!(settled[2], Claim::ServerBusy));
        assert!(matches!(settled[3], Claim::Taken));
        assert!(matches!(settled[4], Claim::Taken));
    }
}
