//! store::schedules — schedules, the claim of their slots and the record of their runs.
//!
//! A slot is claimed by moving `next_run_at` forward with a conditional UPDATE (`... AND
//! next_run_at = <slot>`): among any number of controllers on one database exactly one sees
//! the row change, and it writes the slot's run rows in the same transaction. The UNIQUE
//! (schedule_id, slot_at) of `schedule_runs` is the second guard. A slot that fires is claimed
//! in the transaction of the launch it fires ([`claim_slot_in!`], from the lifecycle's launch),
//! so that its job reaches an agent after one commit, not two, and a controller that stops
//! between the two leaves no claimed run behind; a slot that does not fire (skipped, failed)
//! is claimed alone ([`Store::claim_slot`]).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::{now, on_pool, page, InsertedId, Result, Store, StoreError, WritePool};
use crate::model::{
    JsonObject, OverlapRule, Page, Paging, Schedule, ScheduleId, ScheduleRun, ScheduleRunStatus,
};

const COLUMNS: &str = "id, uuid, name, template_id, cron, timezone, enabled, ends_at, answers, \
     overlap, next_run_at, created_by, created_at, updated_at";
const RUN_COLUMNS: &str =
    "id, schedule_id, slot_at, status, reason, jobs, controller_id, created_at";

/// A schedule to create, checked by the service.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub name: String,
    pub template_id: crate::model::TemplateId,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    pub ends_at: Option<DateTime<Utc>>,
    pub answers: JsonObject,
    pub overlap: OverlapRule,
    pub next_run_at: Option<DateTime<Utc>>,
}

impl NewSchedule {
    /// The plainest schedule: hourly in UTC, enabled, no answers, runs queued behind each
    /// other, its next slot as given (the service computes it from the expression).
    pub fn hourly(
        name: &str,
        template: crate::model::TemplateId,
        next: DateTime<Utc>,
    ) -> NewSchedule {
        NewSchedule {
            name: name.to_owned(),
            template_id: template,
            cron: "0 * * * *".into(),
            timezone: "UTC".into(),
            enabled: true,
            ends_at: None,
            answers: Default::default(),
            overlap: OverlapRule::Queue,
            next_run_at: Some(next),
        }
    }
}

/// One run row written with a claim.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub slot_at: DateTime<Utc>,
    pub status: ScheduleRunStatus,
    pub reason: Option<String>,
    /// The jobs the slot launched (those of a fired run, written in the same commit).
    pub jobs: i32,
}

/// The claim of a schedule's slot: its next slot moved from `slot` to `next` if it still is
/// `slot`, and `runs` written, in one transaction (see [`claim_slot_in!`]).
#[derive(Debug, Clone)]
pub struct SlotClaim {
    pub schedule: ScheduleId,
    /// The slot the schedule was due at, as read.
    pub slot: DateTime<Utc>,
    pub next: Option<DateTime<Utc>>,
    pub runs: Vec<NewRun>,
    /// The controller that claims it, recorded on its runs.
    pub controller: String,
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotClaimed {
    /// The slot is this claim's: its runs are written, for the transaction to commit.
    Ours,
    /// Another controller claimed it first, or the schedule changed meanwhile: nothing is
    /// written, and the transaction is to be rolled back.
    Taken,
    /// The slot to fire has a run already (it fired once): it must not fire again. The next
    /// slot moved on all the same, for the transaction to commit, so that it does not stay due.
    FiredBefore,
}

/// Claims a slot ([`SlotClaim`]) through an executor of either backend, inside the caller's
/// transaction; evaluates to [`SlotClaimed`], the caller committing or rolling back as it says.
/// The conditional UPDATE comes first: a second controller waits on the schedule's row before
/// it takes any other lock, and then finds the slot moved. Its run rows are dated now, or at
/// the moment given (a launch written ahead of the slot it commits at).
macro_rules! claim_slot_in {
    ($exec:expr, $dialect:expr, $claim:expr) => {
        $crate::store::schedules::claim_slot_in!($exec, $dialect, $claim, $crate::store::now())
    };
    ($exec:expr, $dialect:expr, $claim:expr, $ts:expr) => {{
        let claim: &$crate::store::schedules::SlotClaim = $claim;
        let ts: chrono::NaiveDateTime = $ts;
        async {
            use $crate::model::ScheduleRunStatus;
            use $crate::store::schedules::SlotClaimed;
            let moved = sqlx::query($crate::store::schedules::claim_sql($dialect))
                .bind(claim.next.map(|t| t.naive_utc())).bind(claim.schedule).bind(claim.slot.naive_utc())
                .execute(&mut *$exec).await?.rows_affected();
            if moved != 1 {
                return Ok::<_, $crate::store::StoreError>(SlotClaimed::Taken);
            }
            let mut fired_before = false;
            for r in &claim.runs {
                let inserted = sqlx::query(
                    "INSERT INTO schedule_runs (schedule_id, slot_at, status, reason, jobs, controller_id, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)")
                    .bind(claim.schedule).bind(r.slot_at.naive_utc()).bind(r.status.as_str())
                    .bind(r.reason.as_deref().map(|t| $crate::text::fit_chars(t, $crate::text::VARCHAR_255)))
                    .bind(r.jobs).bind(&claim.controller).bind(ts)
                    .execute(&mut *$exec).await;
                match inserted {
                    Ok(_) => {}
                    // Already recorded: this slot was fired once, never again. The failed
                    // statement alone is undone; the next slot still moves on.
                    Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                        tracing::warn!(schedule = %claim.schedule, slot = %r.slot_at, "slot already recorded; not fired again");
                        fired_before |= matches!(r.status, ScheduleRunStatus::Claimed | ScheduleRunStatus::Fired);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(if fired_before { SlotClaimed::FiredBefore } else { SlotClaimed::Ours })
        }
        .await
    }};
}
pub(crate) use claim_slot_in;

/// The claim's conditional UPDATE. On MySQL it goes by the primary key only: left to
/// itself, MariaDB reads it through the `(enabled, next_run_at)` index, which every schedule
/// due at one slot shares, and locks the neighbouring entries of that index as well: a
/// launch written ahead of its slot would then hold the other slots' claims until it commits.
pub fn claim_sql(dialect: super::Dialect) -> &'static str {
    match dialect {
        super::Dialect::Mysql => {
            "UPDATE schedules FORCE INDEX (PRIMARY) SET next_run_at = ? \
             WHERE id = ? AND enabled = TRUE AND next_run_at = ?"
        }
        super::Dialect::Sqlite => {
            "UPDATE schedules SET next_run_at = ? WHERE id = ? AND enabled = TRUE AND next_run_at = ?"
        }
    }
}

fn naive(t: Option<DateTime<Utc>>) -> Option<chrono::NaiveDateTime> {
    t.map(|t| t.naive_utc())
}

impl Store {
    pub async fn create_schedule(&self, s: &NewSchedule, actor: &Actor) -> Result<Schedule> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let answers = serde_json::Value::Object(s.answers.clone()).to_string();
        let ts = now();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO schedules (uuid, name, template_id, cron, timezone, enabled, ends_at, answers, \
                 overlap, next_run_at, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&uuid).bind(&s.name).bind(s.template_id).bind(&s.cron).bind(&s.timezone)
                .bind(s.enabled).bind(naive(s.ends_at)).bind(&answers).bind(s.overlap.as_str())
                .bind(naive(s.next_run_at)).bind(actor.user_id).bind(ts).bind(ts)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::on_write(e, || format!("schedule {}", s.name)))?;
            let id = res.inserted_id() as i32;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "SCHEDULE_CREATE", resource_type: "schedule", resource_id: Some(id),
                details: Some(json!({"name": s.name, "template_id": s.template_id, "cron": s.cron,
                    "timezone": s.timezone, "overlap": s.overlap.as_str()})),
            })?;
            tx.commit().await?;
            id
        });
        self.get_schedule(ScheduleId(id)).await
    }

    pub async fn get_schedule(&self, id: ScheduleId) -> Result<Schedule> {
        let sql = format!("SELECT {COLUMNS} FROM schedules WHERE id = ?");
        on_pool!(self, p => sqlx::query_as::<_, Schedule>(&sql).bind(id).fetch_optional(p).await?)
            .ok_or_else(|| StoreError::NotFound(format!("schedule {id}")))
    }

    pub async fn get_schedule_by_name(&self, name: &str) -> Result<Schedule> {
        let sql = format!("SELECT {COLUMNS} FROM schedules WHERE name = ?");
        on_pool!(self, p => sqlx::query_as::<_, Schedule>(&sql).bind(name).fetch_optional(p).await?)
            .ok_or_else(|| StoreError::NotFound(format!("schedule {name}")))
    }

    pub async fn list_schedules(&self, paging: Paging) -> Result<Page<Schedule>> {
        Ok(
            page!(self, Schedule, select: COLUMNS, from: "schedules", order: "name", paging: paging,
            filters: []),
        )
    }

    /// Writes a schedule's changed fields (the service has checked them and computed its next
    /// slot); audited.
    pub async fn update_schedule(
        &self,
        s: &Schedule,
        changed: &[&str],
        actor: &Actor,
    ) -> Result<Schedule> {
        let answers = s
            .answers
            .as_ref()
            .map(|a| serde_json::Value::Object(a.0.clone()).to_string());
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "UPDATE schedules SET name = ?, cron = ?, timezone = ?, enabled = ?, ends_at = ?, answers = ?, \
                 overlap = ?, next_run_at = ?, updated_at = ? WHERE id = ?")
                .bind(&s.name).bind(&s.cron).bind(&s.timezone).bind(s.enabled).bind(naive(s.ends_at))
                .bind(answers).bind(s.overlap.as_str()).bind(naive(s.next_run_at)).bind(now()).bind(s.id)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::on_write(e, || format!("schedule {}", s.name)))?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "SCHEDULE_UPDATE", resource_type: "schedule", resource_id: Some(s.id.0),
                details: Some(json!({"name": s.name, "changed": changed, "enabled": s.enabled})),
            })?;
            tx.commit().await?;
        });
        self.get_schedule(s.id).await
    }

    pub async fn delete_schedule(&self, s: &Schedule, actor: &Actor) -> Result<()> {
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // The schedule's row first, as a firing takes it: a delete and a launch's claim
            // then wait for each other rather than deadlock.
            sqlx::query("UPDATE schedules SET enabled = enabled WHERE id = ?").bind(s.id).execute(&mut *tx).await?;
            // SQLite's column has no foreign key to do it (see the migration).
            sqlx::query("UPDATE jobs SET schedule_id = NULL WHERE schedule_id = ?")
                .bind(s.id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM schedule_runs WHERE schedule_id = ?").bind(s.id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM schedules WHERE id = ?").bind(s.id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "SCHEDULE_DELETE", resource_type: "schedule", resource_id: Some(s.id.0),
                details: Some(json!({"name": s.name})),
            })?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Enabled schedules whose next slot is at or before `at`, oldest slot first; after
    /// `after` (a slot and a schedule) when given, so that a pass pages on past the ones it
    /// has looked at, whether their firing moved them or not.
    pub async fn due_schedules(
        &self,
        at: DateTime<Utc>,
        after: Option<(DateTime<Utc>, ScheduleId)>,
        limit: i64,
    ) -> Result<Vec<Schedule>> {
        let page = if after.is_some() {
            "AND (next_run_at > ? OR (next_run_at = ? AND id > ?))"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM schedules WHERE enabled = TRUE AND next_run_at <= ? {page} \
             ORDER BY next_run_at, id LIMIT ?"
        );
        Ok(on_pool!(self, p => {
            let mut q = sqlx::query_as::<_, Schedule>(&sql).bind(at.naive_utc());
            if let Some((slot, id)) = after {
                q = q.bind(slot.naive_utc()).bind(slot.naive_utc()).bind(id);
            }
            q.bind(limit).fetch_all(p).await?
        }))
    }

    /// The earliest next slot of the enabled schedules later than `after`: when the firing
    /// task sleeps until. Slots already due are left out: one that could not be fired must
    /// not hold the others' wake-ups back.
    pub async fn earliest_slot(&self, after: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        Ok(
            on_pool!(self, p => sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT MIN(next_run_at) FROM schedules WHERE enabled = TRUE AND next_run_at > ?")
            .bind(after.naive_utc()).fetch_one(p).await?),
        )
    }

    /// Claims a slot that launches nothing (its runs skipped or failed) in a transaction of
    /// its own. `false`: another controller claimed it first (or the schedule changed
    /// meanwhile), or the slot to fire has a run already (its next slot is moved on all the
    /// same, so that it does not stay due).
    pub async fn claim_slot(&self, claim: &SlotClaim) -> Result<bool> {
        Ok(on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            match claim_slot_in!(&mut *tx, self.dialect(), claim)? {
                SlotClaimed::Taken => {
                    tx.rollback().await?;
                    false
                }
                claimed => {
                    tx.commit().await?;
                    claimed == SlotClaimed::Ours
                }
            }
        }))
    }

    /// Runs this controller claimed and never settled (it stopped between claim and launch),
    /// and anyone's claim older than `stale`: recorded failed. A slot is claimed in its
    /// launch's commit now; claimed runs are an earlier version's, left by a stop.
    pub async fn fail_abandoned_claims(
        &self,
        controller: &str,
        stale: DateTime<Utc>,
    ) -> Result<u64> {
        Ok(on_pool!(self, p => sqlx::query(
            "UPDATE schedule_runs SET status = 'failed', \
             reason = 'claimed, but its controller stopped before launching it' \
             WHERE status = 'claimed' AND (controller_id = ? OR created_at < ?)")
            .bind(controller).bind(stale.naive_utc()).execute(p).await?.rows_affected()))
    }

    /// How many jobs of the schedule are pending or running.
    pub async fn schedule_active_jobs(&self, id: ScheduleId) -> Result<i64> {
        Ok(on_pool!(self, p => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM jobs WHERE schedule_id = ? AND status IN ('pending', 'running')")
            .bind(id).fetch_one(p).await?))
    }

    /// A schedule's runs, newest slot first.
    pub async fn list_schedule_runs(
        &self,
        id: ScheduleId,
        paging: Paging,
    ) -> Result<Page<ScheduleRun>> {
        Ok(
            page!(self, ScheduleRun, select: RUN_COLUMNS, from: "schedule_runs", order: "slot_at DESC, id DESC",
            paging: paging, filters: [("schedule_id", Some(id))]),
        )
    }
}
