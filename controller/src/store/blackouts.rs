//! store::blackouts — blackout windows, and what the scheduler needs to test a job against
//! them (where it came from, who launched it).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::{now, on_pool, page, InsertedId, Result, Store, StoreError, WritePool};
use crate::model::{Blackout, BlackoutId, JobId, Page, Paging, Role};

const COLUMNS: &str = "id, name, environment, timezone, weekly_start, weekly_end, starts_at, \
     ends_at, applies_to_manual, enabled, created_by, created_at, updated_at";

/// A blackout to create, checked by the service.
#[derive(Debug, Clone)]
pub struct NewBlackout {
    pub name: String,
    pub environment: Option<String>,
    pub timezone: String,
    pub weekly: Option<(i32, i32)>,
    pub once: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub applies_to_manual: bool,
    pub enabled: bool,
}

/// Where a queued job came from: its schedule, if any, and its launcher's role.
#[derive(Debug, Clone, Copy)]
pub struct JobOrigin {
    pub scheduled: bool,
    pub role: Role,
}

impl Store {
    pub async fn create_blackout(&self, b: &NewBlackout, actor: &Actor) -> Result<Blackout> {
        let ts = now();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO blackouts (name, environment, timezone, weekly_start, weekly_end, starts_at, ends_at, \
                 applies_to_manual, enabled, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&b.name).bind(&b.environment).bind(&b.timezone)
                .bind(b.weekly.map(|w| w.0)).bind(b.weekly.map(|w| w.1))
                .bind(b.once.map(|o| o.0.naive_utc())).bind(b.once.map(|o| o.1.naive_utc()))
                .bind(b.applies_to_manual).bind(b.enabled).bind(actor.user_id).bind(ts).bind(ts)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::on_write(e, || format!("blackout {}", b.name)))?;
            let id = res.inserted_id() as i32;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "BLACKOUT_CREATE", resource_type: "blackout", resource_id: Some(id),
                details: Some(json!({"name": b.name, "environment": b.environment,
                    "applies_to_manual": b.applies_to_manual})),
            })?;
            tx.commit().await?;
            id
        });
        self.get_blackout(BlackoutId(id)).await
    }

    pub async fn get_blackout(&self, id: BlackoutId) -> Result<Blackout> {
        let sql = format!("SELECT {COLUMNS} FROM blackouts WHERE id = ?");
        on_pool!(self, p => sqlx::query_as::<_, Blackout>(&sql).bind(id).fetch_optional(p).await?)
            .ok_or_else(|| StoreError::NotFound(format!("blackout {id}")))
    }

    pub async fn get_blackout_by_name(&self, name: &str) -> Result<Blackout> {
        let sql = format!("SELECT {COLUMNS} FROM blackouts WHERE name = ?");
        on_pool!(self, p => sqlx::query_as::<_, Blackout>(&sql).bind(name).fetch_optional(p).await?)
            .ok_or_else(|| StoreError::NotFound(format!("blackout {name}")))
    }

    pub async fn list_blackouts(&self, paging: Paging) -> Result<Page<Blackout>> {
        Ok(
            page!(self, Blackout, select: COLUMNS, from: "blackouts", order: "name", paging: paging,
            filters: []),
        )
    }

    /// Every enabled blackout (the scheduler tests each dispatch round against them).
    pub async fn enabled_blackouts(&self) -> Result<Vec<Blackout>> {
        let sql =
            format!("SELECT {COLUMNS} FROM blackouts WHERE enabled = TRUE ORDER BY id LIMIT 1000");
        Ok(on_pool!(self, p => sqlx::query_as::<_, Blackout>(&sql).fetch_all(p).await?))
    }

    pub async fn delete_blackout(&self, b: &Blackout, actor: &Actor) -> Result<()> {
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("DELETE FROM blackouts WHERE id = ?").bind(b.id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "BLACKOUT_DELETE", resource_type: "blackout", resource_id: Some(b.id.0),
                details: Some(json!({"name": b.name})),
            })?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Where each of `jobs` came from, in one query.
    pub async fn job_origins(&self, jobs: &[JobId]) -> Result<HashMap<JobId, JobOrigin>> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(JobId, Option<i32>, String)> = on_pool!(self, p => {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT j.id, j.schedule_id, u.role FROM jobs j JOIN users u ON u.id = j.user_id WHERE j.id");
            super::push_in(&mut qb, jobs);
            qb.build_query_as().persistent(false).fetch_all(p).await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, schedule, role)| {
                (
                    id,
                    JobOrigin {
                        scheduled: schedule.is_some(),
                        // An unknown role is treated as the least trusted.
                        role: role.parse().unwrap_or(Role::Viewer),
                    },
                )
            })
            .collect())
    }
}
