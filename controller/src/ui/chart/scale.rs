//! Round numbers for axes (counts in steps of 1, 2 or 5 × 10ⁿ; durations in steps people
//! use: 5 s, 1 min, 15 min, 1 h…), durations written out, and percentiles.

/// Ticks from zero to at least `max`, about `target` steps of 1, 2 or 5 × 10ⁿ (never less
/// than 1: counts are whole). An all-zero chart gets the scale 0..1.
pub fn count_ticks(max: u64, target: u64) -> Vec<u64> {
    let target = target.max(1);
    if max == 0 {
        return vec![0, 1];
    }
    let raw = max.div_ceil(target);
    let mut step = 1u64;
    'outer: loop {
        for m in [1, 2, 5] {
            if step * m >= raw {
                step *= m;
                break 'outer;
            }
        }
        step *= 10;
    }
    let top = max.div_ceil(step) * step;
    (0..=top / step).map(|i| i * step).collect()
}

/// Steps of a duration axis, in seconds.
const DURATION_STEPS: &[u64] = &[
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
];

/// Ticks (in seconds) from zero to at least `max_secs`, at most `target` steps of a step
/// people read easily; beyond a day, whole days.
pub fn duration_ticks(max_secs: f64, target: u64) -> Vec<u64> {
    let target = target.max(1);
    let max = if max_secs.is_finite() && max_secs > 0.0 {
        max_secs.ceil() as u64
    } else {
        1
    };
    let step = DURATION_STEPS
        .iter()
        .copied()
        .find(|s| max.div_ceil(*s) <= target)
        .unwrap_or_else(|| max.div_ceil(target).div_ceil(86_400) * 86_400);
    let top = max.div_ceil(step) * step;
    (0..=top / step).map(|i| i * step).collect()
}

/// A number of seconds as people write it: "0 s", "45 s", "1 min 30 s", "15 min", "2 h",
/// "1 h 30 min", "2 d 4 h". Fractions of a second show below ten seconds ("1.5 s").
pub fn format_secs(secs: f64) -> String {
    if !secs.is_finite() || secs <= 0.0 {
        return "0 s".into();
    }
    if secs < 10.0 && secs.fract() >= 0.05 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as u64;
    let (d, h, m, r) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    let pair = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a} {ua}")
        } else {
            format!("{a} {ua} {b} {ub}")
        }
    };
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => pair(m, "min", r, "s"),
        3600..=86_399 => pair(h, "h", m, "min"),
        _ => pair(d, "d", h, "h"),
    }
}

/// The `p`-th percentile (0–100) of `sorted` (ascending) by nearest rank: a value that
/// occurred, so "p95 = 40 s" means 95 % of the runs took at most 40 s.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_ticks_are_round_and_cover_the_maximum() {
        assert_eq!(count_ticks(0, 4), vec![0, 1]);
        assert_eq!(count_ticks(1, 4), vec![0, 1]);
        assert_eq!(count_ticks(3, 4), vec![0, 1, 2, 3]);
        assert_eq!(count_ticks(7, 4), vec![0, 2, 4, 6, 8]);
        assert_eq!(count_ticks(10, 4), vec![0, 5, 10]);
        assert_eq!(count_ticks(95, 4), vec![0, 50, 100]);
        assert_eq!(count_ticks(1234, 4), vec![0, 500, 1000, 1500]);
        for max in 1..2000 {
            let t = count_ticks(max, 4);
            assert!(*t.last().unwrap() >= max, "{max}: {t:?}");
            assert!(t.len() <= 6, "{max}: {t:?}");
        }
    }

    #[test]
    fn duration_ticks_use_steps_people_read() {
        assert_eq!(duration_ticks(0.0, 4), vec![0, 1]);
        assert_eq!(duration_ticks(f64::NAN, 4), vec![0, 1]);
        assert_eq!(duration_ticks(3.2, 4), vec![0, 1, 2, 3, 4]);
        assert_eq!(duration_ticks(42.0, 4), vec![0, 15, 30, 45]);
        assert_eq!(duration_ticks(200.0, 4), vec![0, 60, 120, 180, 240]);
        assert_eq!(duration_ticks(5000.0, 4), vec![0, 1800, 3600, 5400]);
        let days = duration_ticks(10.0 * 86_400.0, 4);
        assert_eq!(days, vec![0, 259_200, 518_400, 777_600, 1_036_800]);
    }

    #[test]
    fn seconds_read_as_people_write_them() {
        assert_eq!(format_secs(0.0), "0 s");
        assert_eq!(format_secs(-3.0), "0 s");
        assert_eq!(format_secs(1.5), "1.5 s");
        assert_eq!(format_secs(45.0), "45 s");
        assert_eq!(format_secs(90.0), "1 min 30 s");
        assert_eq!(format_secs(900.0), "15 min");
        assert_eq!(format_secs(7200.0), "2 h");
        assert_eq!(format_secs(5400.0), "1 h 30 min");
        assert_eq!(format_secs(2.0 * 86_400.0 + 4.0 * 3600.0), "2 d 4 h");
    }

    #[test]
    fn percentiles_are_values_that_occurred() {
        assert_eq!(percentile(&[], 50.0), None);
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 95.0), Some(19.0));
        assert_eq!(percentile(&v, 100.0), Some(20.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
    }
}
