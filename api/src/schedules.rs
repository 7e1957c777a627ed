//! Schedules (a job template run by a cron expression in a time zone), the record of their
//! runs, and blackout windows that hold jobs back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::enums::{OverlapRule, ScheduleRunStatus};
use crate::types::{JsonObject, NameRef};

/// A schedule as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub id: i32,
    pub name: String,
    pub template: NameRef,
    /// 5 fields (minute hour day month weekday), or 6 with seconds first.
    pub cron: String,
    /// An IANA time zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
    pub enabled: bool,
    /// No run after this instant.
    pub ends_at: Option<DateTime<Utc>>,
    /// The survey answers each run launches with (never secret ones).
    #[schema(value_type = Object)]
    pub answers: JsonObject,
    pub overlap: OverlapRule,
    /// The next slot (UTC); none when disabled or ended.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The user the runs launch as.
    pub created_by: Option<NameRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new schedule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScheduleRequest {
    pub name: String,
    /// The template, by id or name.
    pub template: crate::types::IdOrName,
    pub cron: String,
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub answers: Option<JsonObject>,
    #[serde(default)]
    pub overlap: Option<OverlapRule>,
}

fn utc() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// Changes to a schedule; what is left out stays. `enabled` alone enables or disables it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `null` keeps the end date; to remove it, set `clear_ends_at`.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub clear_ends_at: bool,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub answers: Option<JsonObject>,
    #[serde(default)]
    pub overlap: Option<OverlapRule>,
}

/// A cron expression and a time zone to preview.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    pub cron: String,
    #[serde(default = "utc")]
    pub timezone: String,
}

/// The next five runs of a cron expression in its time zone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PreviewResponse {
    pub timezone: String,
    /// UTC instants.
    pub runs: Vec<DateTime<Utc>>,
    /// The same, as wall-clock times of the zone (`2026-12-04 16:00 CET`).
    pub local: Vec<String>,
}

/// One slot of a schedule: fired, skipped (and why) or failed (and why).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleRunView {
    pub id: i32,
    pub slot_at: DateTime<Utc>,
    pub status: ScheduleRunStatus,
    pub reason: Option<String>,
    /// How many jobs it launched.
    pub jobs: i32,
    pub created_at: DateTime<Utc>,
}

/// A blackout window. `weekly_*` bounds are `Mon 16:00` style wall-clock times in `timezone`;
/// `starts_at`/`ends_at` a one-off window; either or both.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlackoutView {
    pub id: i32,
    pub name: String,
    /// `null`: every environment.
    pub environment: Option<String>,
    pub timezone: String,
    pub weekly_start: Option<String>,
    pub weekly_end: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// Also holds manual launches by non-admins (schedules are always held).
    pub applies_to_manual: bool,
    pub enabled: bool,
    /// When it is in force now: until when.
    pub active_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A new blackout window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBlackoutRequest {
    pub name: String,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default = "utc")]
    pub timezone: String,
    /// e.g. `Fri 16:00`.
    #[serde(default)]
    pub weekly_start: Option<String>,
    /// e.g. `Mon 08:00`.
    #[serde(default)]
    pub weekly_end: Option<String>,
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub applies_to_manual: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// Weekday names of weekly bounds, Monday first.
pub const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Reads `Fri 16:00` into the minute of the week (0 = Monday 00:00).
pub fn parse_week_minute(s: &str) -> Option<i32> {
    let (day, time) = s.trim().split_once(char::is_whitespace)?;
    let d = WEEKDAYS
        .iter()
        .position(|w| day.len() >= 3 && w.eq_ignore_ascii_case(&day[..3.min(day.len())]))?;
    let (h, m) = time.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then(|| (d as u32 * 1440 + h * 60 + m) as i32)
}

/// Writes a minute of the week as `Fri 16:00`.
pub fn week_minute_text(m: i32) -> String {
    let m = m.rem_euclid(7 * 1440);
    format!(
        "{} {:02}:{:02}",
        WEEKDAYS[(m / 1440) as usize],
        (m % 1440) / 60,
        m % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn week_minutes_round_trip() {
        assert_eq!(parse_week_minute("Mon 00:00"), Some(0));
        assert_eq!(parse_week_minute("friday 16:00"), Some(4 * 1440 + 960));
        assert_eq!(week_minute_text(4 * 1440 + 960), "Fri 16:00");
        for bad in ["", "Fri", "Fri 24:00", "Xyz 10:00", "Fri 10:60", "F 10:00"] {
            assert_eq!(parse_week_minute(bad), None, "{bad:?}");
        }
    }
}
