//! Blackout windows: times when jobs on the servers of an environment must not start (e.g.
//! "production, Friday 16:00 to Monday 08:00"). A window is weekly (minutes of the week in its
//! time zone; an end before the start crosses the week's end) and/or one-off (two instants).
//! Pure: the test of a time against a window, and which jobs a window holds back.

use chrono::{DateTime, Datelike, Duration, LocalResult, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// Minutes in a week; a weekly bound is a minute of the week, 0 = Monday 00:00.
pub const WEEK: i32 = 7 * 24 * 60;

/// A blackout as the scheduler tests it.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    /// `None`: every environment.
    pub environment: Option<String>,
    pub zone: Tz,
    /// (start, end) minutes of the week in `zone`.
    pub weekly: Option<(i32, i32)>,
    /// (start, end) instants.
    pub once: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Whether it also holds manual launches of non-admins (schedules are always held).
    pub applies_to_manual: bool,
}

/// Where a job came from, as far as blackouts care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Schedule,
    /// A launch by a person; admins are never held.
    Manual {
        admin: bool,
    },
}

/// The minute of the week of `t` in `zone` (0 = Monday 00:00).
pub fn minute_of_week(t: DateTime<Utc>, zone: Tz) -> i32 {
    let l = t.with_timezone(&zone);
    (l.weekday().num_days_from_monday() * 24 * 60 + l.hour() * 60 + l.minute()) as i32
}

impl Window {
    /// When the window ends, if `now` is inside it.
    pub fn active_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if let Some((start, end)) = self.once {
            if start <= now && now < end {
                return Some(end);
            }
        }
        let (start, end) = self.weekly?;
        let m = minute_of_week(now, self.zone);
        let inside = if start <= end {
            start <= m && m < end
        } else {
            m >= start || m < end
        };
        if !inside {
            return None;
        }
        // The end's wall-clock time, this week or the next, back to an instant.
        let local = now.with_timezone(&self.zone).naive_local();
        let floor = local.with_second(0)?.with_nanosecond(0)?;
        let wall = floor + Duration::minutes(i64::from((end - m).rem_euclid(WEEK)));
        Some(match self.zone.from_local_datetime(&wall) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(_, last) => last.with_timezone(&Utc),
            LocalResult::None => {
                let before = self
                    .zone
                    .offset_from_utc_datetime(&(wall - Duration::days(1)))
                    .fix();
                Utc.from_utc_datetime(&(wall - before))
            }
        })
    }

    /// Whether the window covers a server of `environment` for a job of `origin`.
    fn covers(&self, environment: Option<&str>, origin: Origin) -> bool {
        let env_ok = match &self.environment {
            None => true,
            Some(e) => environment.is_some_and(|s| s.eq_ignore_ascii_case(e)),
        };
        let origin_ok = match origin {
            Origin::Schedule => true,
            Origin::Manual { admin } => self.applies_to_manual && !admin,
        };
        env_ok && origin_ok
    }
}

/// The pending reason of a job held by a blackout, or `None` when no window holds it. When
/// several do, the one ending last is named: the job waits for it.
pub fn held(
    windows: &[Window],
    environment: Option<&str>,
    origin: Origin,
    now: DateTime<Utc>,
) -> Option<String> {
    windows
        .iter()
        .filter(|w| w.covers(environment, origin))
        .filter_map(|w| w.active_until(now).map(|until| (w, until)))
        .max_by_key(|(_, until)| *until)
        .map(|(w, until)| {
            format!(
                "blackout '{}' until {} ({})",
                w.name,
                until.with_timezone(&w.zone).format("%Y-%m-%d %H:%M"),
                w.zone.name()
            )
        })
}

/// A weekly bound from a weekday (0 = Monday) and a wall-clock time.
pub fn week_minute(day: u32, hour: u32, minute: u32) -> Option<i32> {
    (day < 7 && hour < 24 && minute < 60).then(|| (day * 1440 + hour * 60 + minute) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Friday 16:00 to Monday 08:00 in Berlin, production only.
    fn weekend() -> Window {
        Window {
            name: "freeze".into(),
            environment: Some("production".into()),
            zone: "Europe/Berlin".parse().unwrap(),
            weekly: Some((
                week_minute(4, 16, 0).unwrap(),
                week_minute(0, 8, 0).unwrap(),
            )),
            once: None,
            applies_to_manual: false,
        }
    }

    #[test]
    fn weekly_window_across_the_weekend_in_its_zone() {
        let w = weekend();
        // 2026-12-04 is a Friday; Berlin is UTC+1 in December.
        assert_eq!(w.active_until(utc("2026-12-04T14:59:00Z")), None); // 15:59 local
        assert_eq!(
            w.active_until(utc("2026-12-04T15:00:00Z")), // 16:00 local
            Some(utc("2026-12-07T07:00:00Z"))
        );
        assert_eq!(
            w.active_until(utc("2026-12-06T23:30:00Z")), // Monday 00:30 local
            Some(utc("2026-12-07T07:00:00Z"))
        );
        assert_eq!(w.active_until(utc("2026-12-07T07:00:00Z")), None); // Monday 08:00
        assert_eq!(w.active_until(utc("2026-12-09T12:00:00Z")), None); // Wednesday
    }

    #[test]
    fn the_same_window_in_another_zone_is_another_instant() {
        let mut w = weekend();
        w.zone = "America/New_York".parse().unwrap();
        // 16:00 Friday in Berlin is 10:00 in New York: not yet.
        assert_eq!(w.active_until(utc("2026-12-04T15:00:00Z")), None);
        assert_eq!(
            w.active_until(utc("2026-12-04T21:00:00Z")), // 16:00 EST
            Some(utc("2026-12-07T13:00:00Z"))
        );
    }

    #[test]
    fn window_within_a_day_and_one_off() {
        let w = Window {
            name: "nightly".into(),
            environment: None,
            zone: Tz::UTC,
            weekly: Some((week_minute(2, 1, 0).unwrap(), week_minute(2, 3, 0).unwrap())),
            once: Some((utc("2026-12-24T00:00:00Z"), utc("2026-12-27T00:00:00Z"))),
            applies_to_manual: true,
        };
        assert!(w.active_until(utc("2026-12-09T01:00:00Z")).is_some()); // Wednesday 01:00
        assert!(w.active_until(utc("2026-12-09T03:00:00Z")).is_none());
        assert_eq!(
            w.active_until(utc("2026-12-25T12:00:00Z")),
            Some(utc("2026-12-27T00:00:00Z"))
        );
        assert!(w.active_until(utc("2026-12-27T00:00:00Z")).is_none());
    }

    #[test]
    fn who_is_held() {
        let now = utc("2026-12-05T12:00:00Z"); // Saturday
        let mut windows = vec![weekend()];
        let reason = held(&windows, Some("production"), Origin::Schedule, now).unwrap();
        assert_eq!(
            reason,
            "blackout 'freeze' until 2026-12-07 08:00 (Europe/Berlin)"
        );
        assert_eq!(held(&windows, Some("staging"), Origin::Schedule, now), None);
        assert_eq!(held(&windows, None, Origin::Schedule, now), None);
        // Not marked for manual launches: an operator's job starts.
        let op = Origin::Manual { admin: false };
        assert_eq!(held(&windows, Some("production"), op, now), None);
        windows[0].applies_to_manual = true;
        assert!(held(&windows, Some("production"), op, now).is_some());
        // Admins bypass.
        let admin = Origin::Manual { admin: true };
        assert_eq!(held(&windows, Some("production"), admin, now), None);
    }

    #[test]
    fn week_minute_bounds() {
        assert_eq!(week_minute(0, 0, 0), Some(0));
        assert_eq!(week_minute(6, 23, 59), Some(WEEK - 1));
        assert_eq!(week_minute(7, 0, 0), None);
        assert_eq!(week_minute(0, 24, 0), None);
    }
}
