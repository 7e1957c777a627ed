//! The dashboard's charts: jobs per hour by status over 24 hours and 7 days, the success rate
//! per datacenter and the duration per playbook (p50/p95) over 7 days. The store aggregates
//! (see `store::dashboard`); the pure functions here shape its rows into charts; the result is
//! kept for [`CACHE_FOR`] so that the live dashboard, which renders every two seconds, asks the
//! database for these week-long aggregates only a few times a minute, and renewed in the
//! background so that no page waits for them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use maud::{html, Markup};

use super::chart::{self, svg, Column, Frame, Row, Series};
use crate::http::WebState;
use crate::model::JobStatus;
use crate::store::dashboard::{DatacenterCount, HourCount, JobDuration};
use crate::store::{Store, StoreError};

/// Hours in the longer chart (and the window of the other charts).
pub const WEEK_HOURS: i64 = 168;
/// How many finished jobs the duration percentiles are taken from, at most.
const DURATION_SAMPLE: i64 = 5_000;
/// How many (datacenter, status) rows the rate chart reads, at most.
const DATACENTER_ROWS: i64 = 1_000;
/// Rows drawn in the bar charts; the rest are counted.
const MAX_ROWS: usize = 12;
/// How long rendered charts are reused.
pub const CACHE_FOR: Duration = Duration::from_secs(15);
/// How old charts may be shown while newer ones are drawn: their columns are hours, and the
/// week-long aggregates behind them take a few hundred milliseconds at 100,000 jobs.
const SHOWN_FOR: Duration = Duration::from_secs(600);

/// Statuses bottom up in a column: how jobs ended first, then what is still going on.
const STACK: [JobStatus; 5] = [
    JobStatus::Success,
    JobStatus::Failed,
    JobStatus::Cancelled,
    JobStatus::Running,
    JobStatus::Pending,
];

/// What the charts are drawn from.
#[derive(Debug, Clone)]
pub struct Trends {
    pub now: DateTime<Utc>,
    pub routing_key: String,
    pub per_hour: Vec<HourCount>,
    pub per_datacenter: Vec<DatacenterCount>,
    pub durations: Vec<JobDuration>,
}

/// Reads what the charts need from the store.
pub async fn load(st: &WebState) -> Result<Trends, StoreError> {
    let now = Utc::now();
    let first_hour = now.timestamp().div_euclid(3600) - (WEEK_HOURS - 1);
    let since = Utc
        .timestamp_opt(first_hour * 3600, 0)
        .single()
        .unwrap_or(now);
    let routing_key = st
        .core
        .settings
        .routing_keys
        .first()
        .cloned()
        .unwrap_or_else(|| "dc".into());
    // From the read replica while it is good: one chart set from one database.
    st.core
        .store
        .read(|store| load_from(store, now, since, routing_key.clone()))
        .await
}

async fn load_from(
    store: Store,
    now: DateTime<Utc>,
    since: DateTime<Utc>,
    routing_key: String,
) -> Result<Trends, StoreError> {
    Ok(Trends {
        now,
        per_hour: store.jobs_per_hour(since).await?,
        per_datacenter: match store
            .outcomes_per_datacenter(since, &routing_key, DATACENTER_ROWS)
            .await
        {
            // A routing key no JSON path can name (a quote in it) costs this chart, not the
            // dashboard.
            Err(StoreError::Invalid { .. }) => Vec::new(),
            other => other?,
        },
        durations: store.recent_durations(since, DURATION_SAMPLE).await?,
        routing_key,
    })
}

/// The charts: the last rendering, renewed in the background once it is older than
/// [`CACHE_FOR`]; drawn now only when none is younger than [`SHOWN_FOR`].
pub async fn charts(st: &Arc<WebState>) -> Result<Markup, StoreError> {
    crate::http::rendered(
        st,
        |st| &st.trends,
        CACHE_FOR,
        SHOWN_FOR,
        |st| async move { Ok(render(&load(&st).await?)) },
    )
    .await
}

fn status_series() -> Vec<Series> {
    STACK
        .iter()
        .map(|s| Series {
            name: s.as_str().into(),
            class: format!("st-{}", s.as_str()),
        })
        .collect()
}

/// One column per hour, the last `hours` hours up to the one `now` is in (UTC), each with its
/// count per status of [`STACK`]. A label every `label_every` hours: the time of day, or the
/// day at midnight when labels are a day apart.
pub fn hour_columns(
    counts: &[HourCount],
    now: DateTime<Utc>,
    hours: i64,
    label_every: i64,
) -> Vec<Column> {
    let last = now.timestamp().div_euclid(3600);
    let first = last - hours + 1;
    let mut by_hour: BTreeMap<i64, [u64; 5]> = BTreeMap::new();
    for c in counts.iter().filter(|c| c.hour >= first && c.hour <= last) {
        if let Some(i) = STACK.iter().position(|s| *s == c.status) {
            by_hour.entry(c.hour).or_default()[i] += c.count.max(0) as u64;
        }
    }
    (first..=last)
        .map(|h| {
            let at = Utc.timestamp_opt(h * 3600, 0).single().unwrap_or(now);
            let label = (h.rem_euclid(label_every.max(1)) == 0).then(|| {
                if label_every % 24 == 0 {
                    at.format("%a %-d").to_string()
                } else {
                    at.format("%H:00").to_string()
                }
            });
            Column {
                key: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                title: at.format("%b %-d, %H:00 UTC").to_string(),
                label,
                values: by_hour.get(&h).copied().unwrap_or_default().to_vec(),
            }
        })
        .collect()
}

/// A share as a whole percentage that never rounds a failure away: 99.7 % is "99 %", and
/// "100 %" means none failed.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "—".into();
    }
    if part >= whole {
        return "100 %".into();
    }
    format!("{} %", (part * 100 / whole).min(99))
}

/// One row per datacenter (by name; those without one last): its success rate among jobs
/// that succeeded or failed with their server reached, coloured by how good it is; servers
/// that could not be reached are counted apart, as the runs' budgets count them.
pub fn datacenter_rows(counts: &[DatacenterCount], routing_key: &str) -> Vec<Row> {
    // (succeeded, failed, unreachable)
    let mut by_dc: BTreeMap<(bool, String), (u64, u64, u64)> = BTreeMap::new();
    for c in counts {
        let key = match &c.datacenter {
            Some(d) => (false, d.clone()),
            None => (true, format!("(no {routing_key})")),
        };
        let e = by_dc.entry(key).or_default();
        let n = c.count.max(0) as u64;
        match (c.status, c.unreachable) {
            (JobStatus::Success, _) => e.0 += n,
            (JobStatus::Failed, false) => e.1 += n,
            (JobStatus::Failed, true) => e.2 += n,
            _ => {}
        }
    }
    by_dc
        .into_iter()
        .filter(|(_, (ok, bad, unr))| ok + bad + unr > 0)
        .map(|((_, name), (ok, bad, unr))| {
            let total = ok + bad;
            let rate = if total > 0 {
                ok as f64 / total as f64
            } else {
                0.0
            };
            let class = if total == 0 {
                "none"
            } else if rate >= 0.95 {
                "good"
            } else if rate >= 0.8 {
                "fair"
            } else {
                "poor"
            };
            let mut note = format!("{} ({ok} of {total})", percent(ok, total));
            if unr > 0 {
                note.push_str(&format!(" · {unr} unreachable"));
            }
            Row {
                name,
                values: vec![rate],
                note,
                class: Some(class.into()),
            }
        })
        .collect()
}

/// One row per playbook, the most run first: the median and 95th percentile of its runs'
/// durations (p95 drawn behind p50), and the longest p95 (the scale's end).
pub fn duration_rows(durations: &[JobDuration]) -> (Vec<Row>, f64) {
    let mut by_playbook: BTreeMap<(i32, &str), Vec<f64>> = BTreeMap::new();
    for d in durations {
        by_playbook
            .entry((d.playbook.0, &d.playbook_name))
            .or_default()
            .push(d.seconds);
    }
    let mut stats: Vec<(String, usize, f64, f64)> = by_playbook
        .into_iter()
        .filter_map(|((_, name), mut v)| {
            v.sort_by(f64::total_cmp);
            let p50 = chart::percentile(&v, 50.0)?;
            let p95 = chart::percentile(&v, 95.0)?;
            Some((name.to_owned(), v.len(), p50, p95))
        })
        .collect();
    stats.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let longest = stats.iter().take(MAX_ROWS).map(|s| s.3).fold(0.0, f64::max);
    let rows = stats
        .into_iter()
        .map(|(name, n, p50, p95)| Row {
            name,
            values: vec![p95, p50],
            note: format!(
                "p50 {} · p95 {} · {n} run{}",
                chart::format_secs(p50),
                chart::format_secs(p95),
                if n == 1 { "" } else { "s" }
            ),
            class: None,
        })
        .collect();
    (rows, longest)
}

fn hour_frame() -> Frame {
    Frame {
        width: 720.0,
        height: 170.0,
        left: 36.0,
        right: 20.0,
        top: 8.0,
        bottom: 22.0,
    }
}

fn describe_columns(c: &chart::ColumnChart, span: &str) -> String {
    let parts: Vec<String> = c
        .series
        .iter()
        .zip(&c.totals)
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{n} {}", s.name))
        .collect();
    let busiest = c.columns.iter().max_by_key(|col| col.total);
    match busiest {
        None => format!("No job was created in the {span}."),
        Some(b) => format!(
            "{} jobs created in the {span}: {}. Busiest hour: {}, {} jobs.",
            c.total(),
            parts.join(", "),
            b.title,
            b.total
        ),
    }
}

fn describe_rows(rows: &[Row], what: &str) -> String {
    let parts: Vec<String> = rows
        .iter()
        .take(MAX_ROWS)
        .map(|r| format!("{}: {}", r.name, r.note))
        .collect();
    format!("{what}. {}", parts.join("; "))
}

/// The charts as they appear on the dashboard.
pub fn render(t: &Trends) -> Markup {
    let day = chart::columns(
        hour_frame(),
        status_series(),
        hour_columns(&t.per_hour, t.now, 24, 3),
    );
    let week = chart::columns(
        hour_frame(),
        status_series(),
        hour_columns(&t.per_hour, t.now, WEEK_HOURS, 24),
    );
    let dc_rows = datacenter_rows(&t.per_datacenter, &t.routing_key);
    let rate_ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
        .iter()
        .map(|v| (*v, format!("{} %", (v * 100.0) as u32)))
        .collect();
    let dc_desc = describe_rows(
        &dc_rows,
        "Share of finished jobs that succeeded, per datacenter, over 7 days",
    );
    let rates = chart::rows(
        vec![Series {
            name: "success rate".into(),
            class: "rate".into(),
        }],
        dc_rows,
        rate_ticks,
        MAX_ROWS,
        22.0,
        720.0,
    );
    let (dur_rows, longest) = duration_rows(&t.durations);
    let dur_desc = describe_rows(
        &dur_rows,
        "Median and 95th percentile duration per playbook over 7 days",
    );
    let dur_ticks = chart::duration_ticks(longest, 4)
        .into_iter()
        .map(|s| (s as f64, chart::format_secs(s as f64)))
        .collect();
    let durations = chart::rows(
        vec![
            Series {
                name: "p95".into(),
                class: "p95".into(),
            },
            Series {
                name: "p50".into(),
                class: "p50".into(),
            },
        ],
        dur_rows,
        dur_ticks,
        MAX_ROWS,
        22.0,
        720.0,
    );
    html! {
        section.card.charts #trends {
            h2 { "Jobs per hour by status " span.muted { "(UTC)" } }
            div.grid {
                (svg::columns("chart-jobs-24h", "Last 24 hours", &describe_columns(&day, "last 24 hours"), &day, "No job in the last 24 hours."))
                (svg::columns("chart-jobs-7d", "Last 7 days", &describe_columns(&week, "last 7 days"), &week, "No job in the last 7 days."))
            }
        }
        div.grid {
            section.card.charts {
                h2 { "Success rate per datacenter" }
                (svg::rows("chart-dc-rate", "Finished jobs, last 7 days", &dc_desc, &rates, "No job has finished in the last 7 days."))
            }
            section.card.charts {
                h2 { "Duration per playbook" }
                (svg::rows("chart-durations", "p50 and p95, last 7 days", &dur_desc, &durations, "No job has finished in the last 7 days."))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PlaybookId;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn hc(hour: i64, status: JobStatus, count: i64) -> HourCount {
        HourCount {
            hour,
            status,
            count,
        }
    }

    #[test]
    fn hours_are_filled_in_and_labelled() {
        let now = at("2026-12-03T14:20:00Z");
        let h = now.timestamp() / 3600;
        let counts = [
            hc(h, JobStatus::Success, 3),
            hc(h, JobStatus::Failed, 1),
            hc(h - 5, JobStatus::Pending, 2),
            // Outside the window: left out.
            hc(h - 24, JobStatus::Success, 9),
            hc(h + 1, JobStatus::Success, 9),
        ];
        let cols = hour_columns(&counts, now, 24, 3);
        assert_eq!(cols.len(), 24);
        let last = cols.last().unwrap();
        assert_eq!(last.key, "2026-12-03T14:00:00Z");
        assert_eq!(last.title, "Dec 3, 14:00 UTC");
        assert_eq!(last.values, vec![3, 1, 0, 0, 0]);
        assert_eq!(cols[18].values, vec![0, 0, 0, 0, 2]);
        assert_eq!(cols[0].key, "2026-12-02T15:00:00Z");
        let labels: Vec<&str> = cols.iter().filter_map(|c| c.label.as_deref()).collect();
        assert_eq!(
            labels,
            ["15:00", "18:00", "21:00", "00:00", "03:00", "06:00", "09:00", "12:00"]
        );
        let week = hour_columns(&counts, now, WEEK_HOURS, 24);
        assert_eq!(week.len(), 168);
        let days: Vec<&str> = week.iter().filter_map(|c| c.label.as_deref()).collect();
        assert_eq!(
            days,
            ["Fri 27", "Sat 28", "Sun 29", "Mon 30", "Tue 1", "Wed 2", "Thu 3"]
        );
        assert_eq!(week[167 - 24].values, vec![9, 0, 0, 0, 0]);
    }

    #[test]
    fn percentages_never_round_a_failure_away() {
        assert_eq!(percent(0, 0), "—");
        assert_eq!(percent(997, 1000), "99 %");
        assert_eq!(percent(5, 5), "100 %");
        assert_eq!(percent(1, 3), "33 %");
        assert_eq!(percent(0, 3), "0 %");
    }

    #[test]
    fn datacenters_get_their_rate_and_a_grade() {
        let dc = |d: Option<&str>, status, count| DatacenterCount {
            datacenter: d.map(str::to_owned),
            status,
            unreachable: false,
            count,
        };
        let rows = datacenter_rows(
            &[
                dc(Some("fra1"), JobStatus::Success, 19),
                dc(Some("fra1"), JobStatus::Failed, 1),
                dc(None, JobStatus::Failed, 2),
                dc(Some("ams2"), JobStatus::Success, 3),
                dc(Some("ams2"), JobStatus::Failed, 1),
                dc(Some("lon"), JobStatus::Success, 1),
                DatacenterCount {
                    unreachable: true,
                    ..dc(Some("lon"), JobStatus::Failed, 2)
                },
                DatacenterCount {
                    unreachable: true,
                    ..dc(Some("par"), JobStatus::Failed, 1)
                },
            ],
            "dc",
        );
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ams2", "fra1", "lon", "par", "(no dc)"]);
        assert_eq!(rows[0].values, vec![0.75]);
        assert_eq!(rows[0].note, "75 % (3 of 4)");
        assert_eq!(rows[0].class.as_deref(), Some("poor"));
        assert_eq!(rows[1].class.as_deref(), Some("good"));
        assert_eq!(rows[1].note, "95 % (19 of 20)");
        // Unreachable servers are not failures of the playbook: counted apart.
        assert_eq!(rows[2].note, "100 % (1 of 1) · 2 unreachable");
        assert_eq!(rows[2].class.as_deref(), Some("good"));
        assert_eq!(rows[3].note, "— (0 of 0) · 1 unreachable");
        assert_eq!(rows[3].class.as_deref(), Some("none"));
        assert_eq!(rows[4].values, vec![0.0]);
    }

    #[test]
    fn durations_give_p50_and_p95_per_playbook_most_run_first() {
        let d = |id, name: &str, s| JobDuration {
            playbook: PlaybookId(id),
            playbook_name: name.into(),
            seconds: s,
        };
        let mut sample: Vec<JobDuration> = (1..=20).map(|i| d(1, "deploy", f64::from(i))).collect();
        sample.push(d(2, "patch", 90.0));
        let (rows, longest) = duration_rows(&sample);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "deploy");
        assert_eq!(rows[0].values, vec![19.0, 10.0]);
        assert_eq!(rows[0].note, "p50 10 s · p95 19 s · 20 runs");
        assert_eq!(rows[1].note, "p50 1 min 30 s · p95 1 min 30 s · 1 run");
        assert_eq!(longest, 90.0);
        assert_eq!(duration_rows(&[]).0.len(), 0);
    }

    #[test]
    fn the_charts_render_with_their_ids_and_empty_states() {
        let now = at("2026-12-03T14:20:00Z");
        let empty = Trends {
            now,
            routing_key: "dc".into(),
            per_hour: vec![],
            per_datacenter: vec![],
            durations: vec![],
        };
        let s = render(&empty).into_string();
        for id in [
            "chart-jobs-24h",
            "chart-jobs-7d",
            "chart-dc-rate",
            "chart-durations",
        ] {
            assert!(s.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(s.contains("No job in the last 24 hours."));
        assert!(s.contains("No job has finished in the last 7 days."));
        let h = now.timestamp() / 3600;
        let full = Trends {
            per_hour: vec![
                hc(h, JobStatus::Success, 2),
                hc(h - 30, JobStatus::Failed, 1),
            ],
            ..empty
        };
        let s = render(&full).into_string();
        assert!(
            s.contains("3 jobs created in the last 7 days: 2 success, 1 failed."),
            "{s}"
        );
        assert!(
            s.contains("2 jobs created in the last 24 hours: 2 success."),
            "{s}"
        );
    }
}
