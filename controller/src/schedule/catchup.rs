//! What a controller does with a schedule's due slot, after any downtime: the slots it missed
//! beyond the grace window become one skipped record (how many, from when to when), at most
//! the latest missed slot still within the grace fires, and the schedule moves on to its first
//! slot after now. Never a burst. Pure: the clock is an argument.

use chrono::{DateTime, Duration, Utc};

use super::calendar::Calendar;

/// Missed slots counted one by one at most this many; beyond, the count says "at least".
const MAX_COUNTED: u64 = 100_000;

/// The missed slots that will not fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub count: u64,
    /// More than `count` were missed (counting stopped).
    pub more: bool,
}

impl Missed {
    pub fn reason(&self, grace: std::time::Duration) -> String {
        let at_least = if self.more { "at least " } else { "" };
        let slots = if self.count == 1 { "slot" } else { "slots" };
        format!(
            "{at_least}{} missed {slots} ({} to {} UTC) older than the grace of {} s: not run late",
            self.count,
            self.first.format("%Y-%m-%d %H:%M:%S"),
            self.last.format("%Y-%m-%d %H:%M:%S"),
            grace.as_secs()
        )
    }
}

/// The decision for a due slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The slot to launch now, if any.
    pub fire: Option<DateTime<Utc>>,
    /// Missed slots recorded as one skipped run.
    pub missed: Option<Missed>,
    /// The schedule's next slot (`None`: it has ended).
    pub next: Option<DateTime<Utc>>,
}

/// Decides what to do with `slot` (the schedule's `next_run_at`, at or before `now`).
pub fn decide(
    calendar: &Calendar,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: std::time::Duration,
    ends_at: Option<DateTime<Utc>>,
) -> Due {
    let grace = Duration::from_std(grace).unwrap_or(Duration::MAX);
    let mut latest = slot;
    let mut before_latest: Option<Missed> = None;
    let mut counted = 1u64;
    let mut more = false;
    while let Some(n) = calendar.next_after(latest).filter(|n| *n <= now) {
        if counted >= MAX_COUNTED {
            more = true;
            break;
        }
        before_latest = Some(match before_latest {
            None => Missed {
                first: slot,
                last: latest,
                count: 1,
                more: false,
            },
            Some(m) => Missed {
                last: latest,
                count: m.count + 1,
                ..m
            },
        });
        latest = n;
        counted += 1;
    }
    let ended = |t: DateTime<Utc>| ends_at.is_some_and(|e| t > e);
    let next = if more {
        calendar.next_after(now)
    } else {
        calendar.next_after(latest)
    }
    .filter(|n| !ended(*n));
    if more || now - latest > grace || ended(latest) {
        // Everything up to `latest` is skipped.
        let missed = Missed {
            first: slot,
            last: latest,
            count: counted,
            more,
        };
        return Due {
            fire: None,
            missed: Some(missed),
            next,
        };
    }
    Due {
        fire: Some(latest),
        missed: before_latest,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const GRACE: std::time::Duration = std::time::Duration::from_secs(300);

    fn hourly() -> Calendar {
        Calendar::new("0 * * * *", "UTC").unwrap()
    }

    #[test]
    fn on_time_fires_the_slot() {
        let d = decide(
            &hourly(),
            utc("2026-12-03T10:00:00Z"),
            utc("2026-12-03T10:00:01Z"),
            GRACE,
            None,
        );
        assert_eq!(d.fire, Some(utc("2026-12-03T10:00:00Z")));
        assert_eq!(d.missed, None);
        assert_eq!(d.next, Some(utc("2026-12-03T11:00:00Z")));
    }

    #[test]
    fn downtime_skips_all_but_the_latest_within_grace() {
        // Down from before 10:00 to 13:02: 10, 11 and 12 are missed; 13:00 is within grace.
        let d = decide(
            &hourly(),
            utc("2026-12-03T10:00:00Z"),
            utc("2026-12-03T13:02:00Z"),
            GRACE,
            None,
        );
        assert_eq!(d.fire, Some(utc("2026-12-03T13:00:00Z")));
        let m = d.missed.unwrap();
        assert_eq!(
            (m.first, m.last, m.count),
            (utc("2026-12-03T10:00:00Z"), utc("2026-12-03T12:00:00Z"), 3)
        );
        assert!(m
            .reason(GRACE)
            .starts_with("3 missed slots (2026-12-03 10:00:00 to 2026-12-03 12:00:00 UTC)"));
        assert_eq!(d.next, Some(utc("2026-12-03T14:00:00Z")));
    }

    #[test]
    fn downtime_past_grace_fires_nothing() {
        let d = decide(
            &hourly(),
            utc("2026-12-03T10:00:00Z"),
            utc("2026-12-03T13:30:00Z"),
            GRACE,
            None,
        );
        assert_eq!(d.fire, None);
        assert_eq!(d.missed.unwrap().count, 4);
        assert_eq!(d.next, Some(utc("2026-12-03T14:00:00Z")));
    }

    #[test]
    fn a_long_outage_of_a_seconds_schedule_is_counted_without_a_burst() {
        let every_second = Calendar::new("* * * * * *", "UTC").unwrap();
        let d = decide(
            &every_second,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-03-01T00:00:00Z"),
            GRACE,
            None,
        );
        assert_eq!(d.fire, None);
        let m = d.missed.unwrap();
        assert!(m.more && m.count == MAX_COUNTED);
        assert!(m.reason(GRACE).starts_with("at least 100000 missed slots"));
        assert_eq!(d.next, Some(utc("2026-03-01T00:00:01Z")));
    }

    #[test]
    fn the_end_date_stops_the_schedule() {
        let d = decide(
            &hourly(),
            utc("2026-12-03T10:00:00Z"),
            utc("2026-12-03T10:00:00Z"),
            GRACE,
            Some(utc("2026-12-03T10:30:00Z")),
        );
        assert_eq!(d.fire, Some(utc("2026-12-03T10:00:00Z")));
        assert_eq!(d.next, None);
    }
}
