//! The month calendar of partitioned tables, as pure arithmetic: which id range a month owns,
//! what its partition is called, and which partitions are missing ahead of today.
//!
//! A month owns the ids `[base(month), base(next month))`, with `base` a fixed function of the
//! month (months since January 2000, shifted left by [`ID_BITS`]). Boundaries are therefore
//! known years ahead, so partitions can be created long before they fill, and the controller
//! only has to raise the table's `AUTO_INCREMENT` to the month's base when the month begins.

use chrono::{Datelike, NaiveDate};

/// Ids a month may use: 2^36 (about 68 billion), far beyond any month's lines, while ids stay
/// below 2^53 (exact in JSON numbers and JavaScript) until the year 12,900.
pub const ID_BITS: u32 = 36;

/// The partition holding every row written before partitioning began (and, for a month the
/// controller did not raise `AUTO_INCREMENT` in time, the first rows of that month).
pub const BEFORE: &str = "p_before";

/// The catch-all partition above the last month created: never dropped, kept empty by creating
/// months ahead, so that splitting it is instant.
pub const FUTURE: &str = "p_future";

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    /// 1..=12
    month: u32,
}

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Month> {
        (2000..=9999)
            .contains(&year)
            .then_some(())
            .filter(|_| (1..=12).contains(&month))
            .map(|_| Month { year, month })
    }

    /// The month a date falls in; dates before 2000 count as January 2000.
    pub fn of(date: impl Datelike) -> Month {
        Month::new(date.year(), date.month()).unwrap_or(Month {
            year: 2000,
            month: 1,
        })
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn plus(self, months: u32) -> Month {
        (0..months).fold(self, |m, _| m.next())
    }

    /// The first day of the month.
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or_default()
    }

    fn index(self) -> i64 {
        i64::from(self.year - 2000) * 12 + i64::from(self.month - 1)
    }

    /// The first id of the month.
    pub fn base_id(self) -> i64 {
        self.index() << ID_BITS
    }

    /// The month whose id range holds `id`. Ids below 2^36 (January 2000's range, which no
    /// partitioned database has) are rows written before partitioning: they belong to no month.
    pub fn of_id(id: i64) -> Option<Month> {
        let index = id >> ID_BITS;
        if index <= 0 {
            return None;
        }
        let year = 2000 + i32::try_from(index / 12).ok()?;
        Month::new(year, u32::try_from(index % 12).ok()? + 1)
    }

    /// The partition's name: `p202612`.
    pub fn partition_name(self) -> String {
        format!("p{:04}{:02}", self.year, self.month)
    }

    /// The month a partition name stands for, if it is a month's.
    pub fn from_partition_name(name: &str) -> Option<Month> {
        let digits = name.strip_prefix('p')?;
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Month::new(digits[..4].parse().ok()?, digits[4..].parse().ok()?)
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The months from `from` through `from + ahead` that `existing` lacks, oldest first. Only
/// months after the newest existing one can be added (a range partition is split off the top),
/// so a gap below it is not reported.
pub fn missing_months(existing: &[Month], from: Month, ahead: u32) -> Vec<Month> {
    let newest = existing.iter().max().copied();
    (0..=ahead)
        .map(|i| from.plus(i))
        .filter(|m| newest.is_none_or(|n| *m > n))
        .collect()
}

/// The `PARTITION BY` clause that turns a table into monthly partitions: everything written so
/// far in [`BEFORE`], the months from `from` through `from + ahead`, then [`FUTURE`].
pub fn partition_clause(from: Month, ahead: u32) -> String {
    let mut parts = vec![format!(
        "PARTITION {BEFORE} VALUES LESS THAN ({})",
        from.base_id()
    )];
    parts.extend((0..=ahead).map(|i| month_partition(from.plus(i))));
    parts.push(format!("PARTITION {FUTURE} VALUES LESS THAN MAXVALUE"));
    format!("PARTITION BY RANGE (id) ({})", parts.join(", "))
}

/// One month's partition definition.
pub fn month_partition(m: Month) -> String {
    format!(
        "PARTITION {} VALUES LESS THAN ({})",
        m.partition_name(),
        m.next().base_id()
    )
}

/// The statement that adds `months` (all above the newest existing one) by splitting the
/// empty [`FUTURE`] partition.
pub fn split_future(table: &str, months: &[Month]) -> Option<String> {
    if months.is_empty() {
        return None;
    }
    let mut parts: Vec<String> = months.iter().map(|m| month_partition(*m)).collect();
    parts.push(format!("PARTITION {FUTURE} VALUES LESS THAN MAXVALUE"));
    Some(format!(
        "ALTER TABLE {table} REORGANIZE PARTITION {FUTURE} INTO ({})",
        parts.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(y: i32, mo: u32) -> Month {
        Month::new(y, mo).unwrap()
    }

    #[test]
    fn months_own_disjoint_id_ranges_in_order() {
        let mut month = m(2026, 11);
        for _ in 0..30 {
            let next = month.next();
            assert!(month.base_id() < next.base_id());
            assert_eq!(Month::of_id(month.base_id()), Some(month));
            assert_eq!(Month::of_id(next.base_id() - 1), Some(month));
            month = next;
        }
        assert_eq!(m(2026, 12).next(), m(2027, 1));
        // Ids of rows written before partitioning (small) belong to no month.
        assert_eq!(Month::of_id(123_456_789), None);
        // And ids stay exact in a JavaScript number for centuries.
        assert!(m(9999, 12).base_id() < (1 << 53) * 128);
        assert!(m(2100, 1).base_id() < 1 << 53);
    }

    #[test]
    fn names_round_trip_and_refuse_others() {
        assert_eq!(m(2026, 3).partition_name(), "p202603");
        assert_eq!(Month::from_partition_name("p202603"), Some(m(2026, 3)));
        for bad in [
            "p_future", "p_before", "p202613", "p20261", "q202601", "p1999012",
        ] {
            assert_eq!(Month::from_partition_name(bad), None, "{bad}");
        }
        assert_eq!(Month::new(2026, 0), None);
        assert_eq!(
            Month::of(NaiveDate::from_ymd_opt(1990, 5, 1).unwrap()),
            m(2000, 1)
        );
    }

    #[test]
    fn missing_months_are_those_above_the_newest() {
        let now = m(2026, 12);
        assert_eq!(
            missing_months(&[], now, 2),
            vec![m(2026, 12), m(2027, 1), m(2027, 2)]
        );
        assert_eq!(
            missing_months(&[m(2026, 11), m(2026, 12), m(2027, 1)], now, 2),
            vec![m(2027, 2)]
        );
        assert!(missing_months(&[m(2027, 6)], now, 2).is_empty());
    }

    #[test]
    fn the_clause_names_every_boundary() {
        let clause = partition_clause(m(2026, 12), 2);
        assert!(clause
            .starts_with("PARTITION BY RANGE (id) (PARTITION p_before VALUES LESS THAN (22196390"));
        for name in ["p202612", "p202701", "p202702", "p_future"] {
            assert!(clause.contains(name), "{clause}");
        }
        assert_eq!(
            split_future("job_logs", &[m(2027, 3)]).unwrap(),
            format!(
                "ALTER TABLE job_logs REORGANIZE PARTITION p_future INTO (PARTITION p202703 VALUES LESS THAN ({}), PARTITION p_future VALUES LESS THAN MAXVALUE)",
                m(2027, 4).base_id()
            )
        );
        assert_eq!(split_future("job_logs", &[]), None);
    }
}
