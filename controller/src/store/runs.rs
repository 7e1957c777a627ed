//! store::runs — runs (one launch's jobs as a whole): created with their jobs (see
//! [`Store::create_jobs_audited`]), read, counted, and the rollout's own moves (a wave
//! released, a wave approved). Ending and stopping a run happen in the lifecycle, in the
//! transaction of the job change that causes them.

use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::{now, on_pool, page, Result, Store, StoreError, WritePool};
use crate::model::{
    Page, Paging, PlaybookId, Run, RunId, RunStatus, RunUuid, ScheduleId, TemplateId, UserId,
};
use crate::rollout::{Budgets, Counts, Spec};

pub(crate) const COLUMNS: &str = "id, run_id, user_id, playbook_id, template_id, schedule_id, status, rollout, \
     total, waves, max_failures, max_unreachable, current_wave, pause_between_waves, approved_wave, \
     stop, stop_reason, relaunch_of, created_at, completed_at";

/// A run to create with its jobs.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run_uuid: RunUuid,
    pub user_id: UserId,
    pub playbook_id: PlaybookId,
    pub template_id: Option<TemplateId>,
    pub schedule_id: Option<ScheduleId>,
    /// The rollout as launched; `None` for all at once with no budget.
    pub spec: Option<Spec>,
    pub total: u32,
    pub waves: u32,
    pub budgets: Budgets,
    pub relaunch_of: Option<RunId>,
}

impl NewRun {
    pub(super) fn rollout_text(&self) -> Result<Option<String>> {
        self.spec
            .as_ref()
            .map(|s| {
                serde_json::to_string(s).map_err(|e| StoreError::invalid("rollout", e.to_string()))
            })
            .transpose()
    }
}

fn i32_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Releases `wave` of a run whose released wave is still `from`, in the transaction `$exec`:
/// its jobs' pending reasons cleared and the release audited. Evaluates to whether this call
/// released it (several controllers, or a round and a finish, may decide it at once).
macro_rules! release_wave {
    ($exec:expr, $run:expr, $from:expr, $wave:expr) => {{
        let (run, from, wave): ($crate::model::RunId, u32, u32) = ($run, $from, $wave);
        let as_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        async {
            let res = sqlx::query("UPDATE runs SET current_wave = ? WHERE id = ? AND current_wave = ? AND status = 'running' AND stop IS NULL")
                .bind(as_i32(wave)).bind(run).bind(as_i32(from)).execute(&mut *$exec).await?;
            let moved = res.rows_affected() == 1;
            if moved {
                sqlx::query("UPDATE jobs SET pending_reason = NULL WHERE run_id = ? AND wave = ? AND status = 'pending'")
                    .bind(run).bind(as_i32(wave)).execute(&mut *$exec).await?;
                $crate::store::audit::insert_audit!(&mut *$exec, &$crate::store::audit::NewAudit {
                    actor: &$crate::store::audit::Actor::system(), action: "RELEASE_WAVE", resource_type: "run", resource_id: Some(run.0),
                    details: Some(serde_json::json!({"wave": wave + 1})),
                })?;
            }
            Ok::<bool, $crate::store::StoreError>(moved)
        }
        .await
    }};
}
pub(crate) use release_wave;

/// Inserts a [`NewRun`] through an executor of either backend, in the transaction that creates
/// its jobs, and adds its audit record to `$audits` (written with the launch's others);
/// evaluates to its id.
macro_rules! insert_run {
    ($exec:expr, $new:expr, $rollout:expr, $ts:expr, $actor:expr, $audits:expr) => {{
        let r: &$crate::store::runs::NewRun = $new;
        async {
            let res = sqlx::query(
                "INSERT INTO runs (run_id, user_id, playbook_id, template_id, schedule_id, status, rollout, total, waves, \
                 max_failures, max_unreachable, current_wave, pause_between_waves, approved_wave, relaunch_of, created_at) \
                 VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, 0, ?, 0, ?, ?)",
            )
            .bind(r.run_uuid).bind(r.user_id).bind(r.playbook_id).bind(r.template_id).bind(r.schedule_id)
            .bind($rollout.as_deref()).bind(i32::try_from(r.total).unwrap_or(i32::MAX)).bind(i32::try_from(r.waves).unwrap_or(i32::MAX))
            .bind(r.budgets.max_failures.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
            .bind(r.budgets.max_unreachable.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
            .bind(r.spec.as_ref().is_some_and(|s| s.pause)).bind(r.relaunch_of).bind($ts)
            .execute(&mut *$exec).await?;
            let id = $crate::store::InsertedId::inserted_id(&res) as i32;
            $audits.push($crate::store::audit::NewAudit {
                actor: $actor, action: "LAUNCH", resource_type: "run", resource_id: Some(id),
                details: Some(serde_json::json!({"run_id": r.run_uuid, "playbook_id": r.playbook_id, "servers": r.total,
                    "waves": r.waves, "rollout": r.spec, "relaunch_of": r.relaunch_of})),
            });
            Ok::<$crate::model::RunId, $crate::store::StoreError>($crate::model::RunId(id))
        }.await
    }};
}
pub(crate) use insert_run;

/// Filters for [`Store::list_runs`]; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub user_id: Option<UserId>,
    pub playbook_id: Option<PlaybookId>,
    pub template_id: Option<TemplateId>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl Store {
    pub async fn get_run(&self, id: RunId) -> Result<Run> {
        let sql = format!("SELECT {COLUMNS} FROM runs WHERE id = ?");
        let row =
            on_pool!(self, p => sqlx::query_as::<_, Run>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("run {id}")))
    }

    pub async fn get_run_by_uuid(&self, uuid: RunUuid) -> Result<Run> {
        let sql = format!("SELECT {COLUMNS} FROM runs WHERE run_id = ?");
        let row =
            on_pool!(self, p => sqlx::query_as::<_, Run>(&sql).bind(uuid).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("run {uuid}")))
    }

    /// Newest first.
    pub async fn list_runs(&self, f: &RunFilter, paging: Paging) -> Result<Page<Run>> {
        let status = f.status.map(RunStatus::as_str);
        let since = f.since.map(|t| t.naive_utc());
        let until = f.until.map(|t| t.naive_utc());
        Ok(
            page!(self, Run, select: COLUMNS, from: "runs", order: "created_at DESC, id DESC", paging: paging,
            filters: [("status", status), ("user_id", f.user_id), ("playbook_id", f.playbook_id),
                      ("template_id", f.template_id)],
            ranges: [("created_at", ">=", since), ("created_at", "<", until)]),
        )
    }

    /// A run's jobs counted by where they stand.
    pub async fn run_counts(&self, run: RunId) -> Result<Counts> {
        let rows: Vec<(String, bool, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT status, unreachable, COUNT(*) FROM jobs WHERE run_id = ? GROUP BY status, unreachable")
            .bind(run).fetch_all(p).await?);
        Ok(counts_of(rows.into_iter().map(|(s, u, n)| (s, u, n, 0)), 1)
            .pop()
            .unwrap_or_default())
    }

    /// A run's jobs counted per wave (index = wave).
    pub async fn run_wave_counts(&self, run: RunId, waves: u32) -> Result<Vec<Counts>> {
        let rows: Vec<(String, bool, i64, i32)> = on_pool!(self, p => sqlx::query_as(
            "SELECT status, unreachable, COUNT(*), wave FROM jobs WHERE run_id = ? GROUP BY status, unreachable, wave")
            .bind(run).fetch_all(p).await?);
        Ok(counts_of(rows.into_iter(), waves as usize))
    }

    /// Running runs with waves still to release (the scheduler's rollouts).
    pub async fn rolling_runs(&self) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM runs WHERE status = 'running' AND stop IS NULL \
             AND current_wave + 1 < waves ORDER BY id"
        );
        Ok(on_pool!(self, p => sqlx::query_as::<_, Run>(&sql).fetch_all(p).await?))
    }

    /// Releases `wave` of a run whose released wave is still `from` (several controllers may
    /// decide it at once: one update wins). Returns whether this call released it.
    pub async fn release_wave(&self, run: RunId, from: u32, wave: u32) -> Result<bool> {
        let moved = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let moved = release_wave!(&mut *tx, run, from, wave)?;
            tx.commit().await?;
            moved
        });
        Ok(moved)
    }

    /// Lets `wave` of a paused rollout go once the waves before it are over. Returns whether
    /// it was not approved yet.
    pub async fn approve_wave(&self, run: RunId, wave: u32, actor: &Actor) -> Result<bool> {
        let ts = now();
        let moved = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query("UPDATE runs SET approved_wave = ? WHERE id = ? AND approved_wave < ? AND status = 'running' AND stop IS NULL")
                .bind(i32_of(wave)).bind(run).bind(i32_of(wave)).execute(&mut *tx).await?;
            let moved = res.rows_affected() == 1;
            if moved {
                insert_audit!(&mut *tx, &NewAudit {
                    actor, action: "APPROVE", resource_type: "run", resource_id: Some(run.0),
                    details: Some(json!({"wave": wave + 1, "at": ts.and_utc()})),
                })?;
            }
            tx.commit().await?;
            moved
        });
        Ok(moved)
    }

    /// Tells the pending jobs of one wave of a run why they wait (an approval). On MySQL the
    /// run's row is locked first, in the same order as the lifecycle's changes to the run's
    /// jobs, so the two never wait on each other in a cycle.
    pub async fn set_wave_reason(&self, run: RunId, wave: u32, reason: &str) -> Result<()> {
        let reason = crate::text::fit_chars(reason, crate::text::VARCHAR_255);
        let mysql = self.dialect() == super::Dialect::Mysql;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if mysql {
                sqlx::query("SELECT id FROM runs WHERE id = ? FOR UPDATE").bind(run).fetch_optional(&mut *tx).await?;
            }
            sqlx::query("UPDATE jobs SET pending_reason = ? WHERE run_id = ? AND wave = ? AND status = 'pending' \
                         AND agent_id IS NULL AND (pending_reason IS NULL OR pending_reason <> ?)")
                .bind(reason.as_ref()).bind(run).bind(i32_of(wave)).bind(reason.as_ref()).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The uuids of the tickets a run opened.
    pub async fn run_tickets(&self, run: RunId) -> Result<Vec<String>> {
        Ok(
            on_pool!(self, p => sqlx::query_scalar("SELECT ticket_id FROM tickets WHERE run_id = ? ORDER BY id")
            .bind(run).fetch_all(p).await?),
        )
    }
}

/// Counts from `(status, unreachable, count, wave)` rows, one per wave below `waves` (later
/// waves go to the last one).
pub(crate) fn counts_of(
    rows: impl Iterator<Item = (String, bool, i64, i32)>,
    waves: usize,
) -> Vec<Counts> {
    let mut out = vec![Counts::default(); waves.max(1)];
    let last = out.len() - 1;
    for (status, unreachable, n, wave) in rows {
        let Ok(status) = status.parse::<crate::model::JobStatus>() else {
            continue;
        };
        let w = usize::try_from(wave).unwrap_or(0).min(last);
        out[w].add(status, unreachable, u32::try_from(n).unwrap_or(u32::MAX));
    }
    out
}
