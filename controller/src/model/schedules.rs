//! The records of schedules, their runs and blackout windows (migration 0017).

use chrono::{DateTime, Utc};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{JsonObject, UserId};
pub use outpost_api::enums::{OverlapRule, ScheduleRunStatus};

id_type! {
    ScheduleId(i32);
    ScheduleRunId(i32);
    BlackoutId(i32);
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Schedule {
    pub id: ScheduleId,
    pub uuid: String,
    pub name: String,
    pub template_id: super::TemplateId,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    pub ends_at: Option<DateTime<Utc>>,
    /// Non-secret survey answers.
    pub answers: Option<sqlx::types::Json<JsonObject>>,
    #[sqlx(try_from = "crate::model::Named<OverlapRule>")]
    pub overlap: OverlapRule,
    /// The next slot to fire (UTC); `None`: disabled or ended.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The runs launch as this user.
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ScheduleRun {
    pub id: ScheduleRunId,
    pub schedule_id: ScheduleId,
    pub slot_at: DateTime<Utc>,
    #[sqlx(try_from = "crate::model::Named<ScheduleRunStatus>")]
    pub status: ScheduleRunStatus,
    pub reason: Option<String>,
    pub jobs: i32,
    pub controller_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Blackout {
    pub id: BlackoutId,
    pub name: String,
    pub environment: Option<String>,
    pub timezone: String,
    /// Minutes since Monday 00:00 in `timezone`.
    pub weekly_start: Option<i32>,
    pub weekly_end: Option<i32>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub applies_to_manual: bool,
    pub enabled: bool,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
