//! Schedules and blackouts, the pure parts: [`calendar`] (cron in a time zone → instants, DST
//! handled), [`catchup`] (what a due slot becomes after downtime: one skipped record, at most
//! one late run) and [`blackout`] (windows that hold jobs back). The firing task that uses them
//! is [`crate::service::firing`]; the scheduler applies blackouts when it places jobs.

pub mod blackout;
pub mod calendar;
pub mod catchup;

use crate::model::Blackout;

/// A stored blackout as a window to test; `None` when its time zone is no longer known.
pub fn window(b: &Blackout) -> Option<blackout::Window> {
    Some(blackout::Window {
        name: b.name.clone(),
        environment: b.environment.clone(),
        zone: calendar::parse_zone(&b.timezone).ok()?,
        weekly: b.weekly_start.zip(b.weekly_end),
        once: b.starts_at.zip(b.ends_at),
        applies_to_manual: b.applies_to_manual,
    })
}
