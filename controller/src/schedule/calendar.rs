//! The calendar of a schedule: a cron expression read in a named IANA time zone, turned into the
//! instants (UTC) it fires at. Pure: no clock, no I/O.
//!
//! Daylight saving is handled here, by walking the zone's local wall clock rather than UTC:
//! - a local time skipped by a spring-forward change fires once, shifted by the change (02:30
//!   in Berlin on the last Sunday of March fires at 03:30 CEST), and the slots that the shift
//!   lands on are not fired twice;
//! - a local time that occurs twice in a fall-back change fires once, at its first occurrence:
//!   the repeated hour is not run again.
//!
//! croner parses the expression (5 fields, or 6 with a leading seconds field) and matches wall
//! clock times; the zone's offsets come from chrono-tz.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use thiserror::Error;

/// The longest cron expression accepted (the column holds 255; no sane expression needs more).
pub const MAX_EXPRESSION: usize = 128;
/// The longest time zone name accepted.
pub const MAX_ZONE: usize = 64;
/// An expression must fire within this many years to be accepted: February 29 fires every four
/// years (eight across a skipped century leap day), "February 30" never.
const HORIZON_YEARS: i64 = 9;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CalendarError {
    #[error("cron: longer than {MAX_EXPRESSION} characters")]
    TooLong,
    #[error("cron: {0}")]
    Syntax(String),
    #[error("cron: {0:?} never fires (no date matches it, e.g. February 30)")]
    Never(String),
    #[error(
        "timezone: {0:?} is not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)"
    )]
    Zone(String),
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Calendar {
    cron: croner::Cron,
    zone: Tz,
}

impl Calendar {
    /// Parses `expression` in `zone`; refuses one that never fires.
    pub fn new(expression: &str, zone: &str) -> Result<Calendar, CalendarError> {
        let zone = parse_zone(zone)?;
        let expression = expression.trim();
        if expression.len() > MAX_EXPRESSION {
            return Err(CalendarError::TooLong);
        }
        if expression.is_empty() {
            return Err(CalendarError::Syntax(
                "empty: give 5 fields (minute hour day month weekday), or 6 with seconds first"
                    .into(),
            ));
        }
        let cron = croner::Cron::new(expression)
            .with_seconds_optional()
            .parse()
            .map_err(|e| CalendarError::Syntax(e.to_string()))?;
        let calendar = Calendar { cron, zone };
        // Any start will do: a pattern that fires at all fires within the horizon of any date.
        let probe = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single();
        let Some(probe) = probe else {
            return Err(CalendarError::Never(expression.to_owned()));
        };
        match calendar.next_wall(probe.naive_utc()) {
            Some(n) if n < probe.naive_utc() + Duration::days(366 * HORIZON_YEARS) => Ok(calendar),
            _ => Err(CalendarError::Never(expression.to_owned())),
        }
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first firing instant strictly after `after`, if any.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = after.with_timezone(&self.zone).naive_local();
        // Each step moves the wall clock forward; a few steps cover the skipped and repeated
        // times of one change, the bound only guards against a zone database surprise.
        for _ in 0..10_000 {
            let next = self.next_wall(wall)?;
            let instant = match self.zone.from_local_datetime(&next) {
                LocalResult::Single(t) => t.with_timezone(&Utc),
                // The repeated hour: its first occurrence only.
                LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
                // Skipped by a spring-forward change: shifted by the change.
                LocalResult::None => {
                    let before = self
                        .zone
                        .offset_from_utc_datetime(&(next - Duration::days(1)))
                        .fix();
                    Utc.from_utc_datetime(&(next - before))
                }
            };
            if instant > after {
                return Some(instant);
            }
            wall = next;
        }
        None
    }

    /// The next `n` firing instants after `after` (the preview shows five).
    pub fn next_n(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(t) => {
                    out.push(t);
                    at = t;
                }
                None => break,
            }
        }
        out
    }

    /// The first wall-clock time strictly after `wall` that the expression matches. croner is
    /// asked in UTC, a zone without changes, so it matches wall clock times as they are.
    fn next_wall(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        let as_utc = Utc.from_utc_datetime(&wall);
        self.cron
            .find_next_occurrence(&as_utc, false)
            .ok()
            .map(|t| t.naive_utc())
    }
}

/// A time zone by its IANA name.
pub fn parse_zone(zone: &str) -> Result<Tz, CalendarError> {
    if zone.len() > MAX_ZONE {
        return Err(CalendarError::Zone(zone.chars().take(MAX_ZONE).collect()));
    }
    Tz::from_str(zone).map_err(|_| CalendarError::Zone(zone.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn runs(expr: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
        Calendar::new(expr, zone)
            .unwrap()
            .next_n(utc(after), n)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn spring_forward_runs_the_skipped_time_once_shifted() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        assert_eq!(
            runs("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00+00:00",
                "2026-03-29T01:30:00+00:00", // 03:30 CEST: the 02:30 that did not exist
                "2026-03-30T00:30:00+00:00",
            ]
        );
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        assert_eq!(
            runs("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08T07:30:00+00:00", // 03:30 EDT
                "2026-03-09T06:30:00+00:00",
                "2026-03-10T06:30:00+00:00",
            ]
        );
        // Slots inside the gap do not pile onto the times after it.
        assert_eq!(
            runs("*/30 * * * *", "Europe/Berlin", "2026-03-29T00:15:00Z", 4),
            [
                "2026-03-29T00:30:00+00:00", // 01:30 CET
                "2026-03-29T01:00:00+00:00", // 02:00 shifted = 03:00 CEST
                "2026-03-29T01:30:00+00:00", // 03:30 CEST, once
                "2026-03-29T02:00:00+00:00",
            ]
        );
    }

    #[test]
    fn fall_back_runs_the_repeated_hour_once() {
        // Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        assert_eq!(
            runs("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
        // Hourly: 02:00 and 02:30 of the second pass are not run again.
        assert_eq!(
            runs("0,30 * * * *", "Europe/Berlin", "2026-10-24T23:45:00Z", 5),
            [
                "2026-10-25T00:00:00+00:00", // 02:00 CEST
                "2026-10-25T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T02:00:00+00:00", // 03:00 CET
                "2026-10-25T02:30:00+00:00",
                "2026-10-25T03:00:00+00:00",
            ]
        );
        // New York, 2026-11-01: 01:30 happens twice (EDT, then EST).
        assert_eq!(
            runs("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"]
        );
        // Started inside the second pass of the hour: the repeated slot is not fired.
        assert_eq!(
            runs("45 1 * * *", "America/New_York", "2026-11-01T06:10:00Z", 1),
            ["2026-11-02T06:45:00+00:00"]
        );
    }

    #[test]
    fn seconds_field_is_optional() {
        assert_eq!(
            runs("*/5 * * * * *", "UTC", "2026-01-01T00:00:01Z", 3),
            [
                "2026-01-01T00:00:05+00:00",
                "2026-01-01T00:00:10+00:00",
                "2026-01-01T00:00:15+00:00"
            ]
        );
        assert_eq!(
            runs("0 9 * * 1-5", "UTC", "2026-12-04T10:00:00Z", 2), // a Friday
            ["2026-12-07T09:00:00+00:00", "2026-12-08T09:00:00+00:00"]
        );
    }

    #[test]
    fn leap_day_is_possible_and_february_30_is_not() {
        assert_eq!(
            runs("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00+00:00"]
        );
        let e = Calendar::new("0 0 30 2 *", "UTC").unwrap_err();
        assert!(matches!(e, CalendarError::Never(_)), "{e}");
        assert!(e.to_string().contains("never fires"));
    }

    #[test]
    fn bad_input_is_refused_with_the_field_named() {
        let long = format!("0 0 * * * {}", " ".repeat(10) + &"1,".repeat(80));
        assert_eq!(
            Calendar::new(&long, "UTC").unwrap_err(),
            CalendarError::TooLong
        );
        for bad in ["", "61 * * * *", "* * *", "a b c d e", "0 0 0 0 0 0 0 0"] {
            let e = Calendar::new(bad, "UTC").unwrap_err();
            assert!(e.to_string().starts_with("cron:"), "{bad:?}: {e}");
        }
        let e = Calendar::new("0 * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.to_string().starts_with("timezone:"), "{e}");
        assert!(Calendar::new("0 * * * *", &"A".repeat(500)).is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Any text within the length limit is refused or accepted quickly, never a panic or a hang:
    /// expressions come from callers (the preview is open to every signed-in user).
    #[test]
    fn arbitrary_expressions_are_answered_quickly() {
        let alphabet: Vec<char> = "0123456789*/,-LW#?  ".chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let started = std::time::Instant::now();
        for _ in 0..3000 {
            let fields = 5 + (next() % 2) as usize;
            let expr: Vec<String> = (0..fields)
                .map(|_| {
                    let len = 1 + (next() % 6) as usize;
                    (0..len)
                        .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                        .collect()
                })
                .collect();
            let expr = expr.join(" ");
            let t = std::time::Instant::now();
            if let Ok(c) = Calendar::new(&expr, "Europe/Berlin") {
                let runs = c.next_n(Utc::now(), 5);
                assert!(!runs.is_empty(), "{expr:?} accepted but never fires");
            }
            assert!(t.elapsed().as_secs() < 2, "{expr:?} took {:?}", t.elapsed());
        }
        assert!(started.elapsed().as_secs() < 60);
    }
}
