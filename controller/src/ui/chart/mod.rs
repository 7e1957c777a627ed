//! Charts drawn on the server as SVG, so no chart library reaches the browser. This module is
//! the pure part: scales, ticks, where each bar goes, legends and empty states, computed from
//! plain numbers and unit-tested; [`svg`] turns the result into markup (maud escapes every
//! name, which may come from users).

pub mod progress;
pub mod scale;
pub mod svg;

pub use progress::{progress, Group, ProgressChart};
pub use scale::{count_ticks, duration_ticks, format_secs, percentile};

/// A rectangle in the chart's own coordinates (its `viewBox`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// A mark on an axis: where it is along the axis and what it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub at: f64,
    pub label: String,
}

/// The size of a chart and the room around its plot for the axes' labels.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Frame {
    /// The area the bars are drawn in.
    pub fn plot(&self) -> Rect {
        Rect {
            x: self.left,
            y: self.top,
            w: (self.width - self.left - self.right).max(1.0),
            h: (self.height - self.top - self.bottom).max(1.0),
        }
    }
}

/// One kind of value a chart stacks or compares (a job status, p50…): its name in the legend
/// and the CSS class that colours it (classes, not inline styles: the pages' CSP allows no
/// inline style, and the stylesheet follows the light or dark theme).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub class: String,
}

/// One column of a column chart: a time bucket and its value per series.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Identifies the column in the markup (`data-at`), e.g. an RFC 3339 hour.
    pub key: String,
    /// What the column's tooltip and table row say it is, e.g. "Dec 3, 14:00 UTC".
    pub title: String,
    /// The x-axis label under this column, if it gets one.
    pub label: Option<String>,
    /// One value per series, in the series' order.
    pub values: Vec<u64>,
}

/// A piece of a stacked column.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub series: usize,
    pub value: u64,
    pub rect: Rect,
}

/// A column as drawn: its segments bottom up (series with no value have none).
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedColumn {
    pub key: String,
    pub title: String,
    pub total: u64,
    pub segments: Vec<Segment>,
}

/// A stacked column chart, laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnChart {
    pub width: f64,
    pub height: f64,
    pub plot: Rect,
    pub series: Vec<Series>,
    /// The sum of each series over every column (the legend's figures).
    pub totals: Vec<u64>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    /// Only the columns with something in them; an empty bucket draws nothing.
    pub columns: Vec<PlacedColumn>,
    /// Every column in order with its values, for the table that stands in for the picture.
    pub rows: Vec<Column>,
}

impl ColumnChart {
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    pub fn total(&self) -> u64 {
        self.totals.iter().sum()
    }
}

/// Lays out stacked columns, one slot per entry of `columns` (in order, left to right), with a
/// y scale of round numbers from zero to at least the tallest column.
pub fn columns(frame: Frame, series: Vec<Series>, columns: Vec<Column>) -> ColumnChart {
    let plot = frame.plot();
    let tallest = columns
        .iter()
        .map(|c| c.values.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let y = count_ticks(tallest, 4);
    let top = y.last().copied().unwrap_or(1).max(1) as f64;
    let slot = plot.w / columns.len().max(1) as f64;
    // A gap between columns while they are wide enough to show one.
    let gap = if slot >= 6.0 { slot * 0.2 } else { 0.0 };
    let mut totals = vec![0u64; series.len()];
    let mut placed = Vec::new();
    let mut x_ticks = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        let x = plot.x + slot * i as f64;
        if let Some(l) = &c.label {
            x_ticks.push(Tick {
                at: x + slot / 2.0,
                label: l.clone(),
            });
        }
        let mut base = 0u64;
        let mut segments = Vec::new();
        for (s, &v) in c.values.iter().enumerate().take(series.len()) {
            totals[s] += v;
            if v == 0 {
                continue;
            }
            let y0 = plot.y + plot.h - plot.h * (base as f64) / top;
            let y1 = plot.y + plot.h - plot.h * ((base + v) as f64) / top;
            segments.push(Segment {
                series: s,
                value: v,
                rect: Rect {
                    x: x + gap / 2.0,
                    y: y1,
                    w: slot - gap,
                    h: y0 - y1,
                },
            });
            base += v;
        }
        if base > 0 {
            placed.push(PlacedColumn {
                key: c.key.clone(),
                title: c.title.clone(),
                total: base,
                segments,
            });
        }
    }
    let y_ticks = y
        .iter()
        .map(|&v| Tick {
            at: plot.y + plot.h - plot.h * v as f64 / top,
            label: v.to_string(),
        })
        .collect();
    ColumnChart {
        width: frame.width,
        height: frame.height,
        plot,
        series,
        totals,
        y_ticks,
        x_ticks,
        columns: placed,
        rows: columns,
    }
}

/// One row of a bar chart (a datacenter, a playbook): its name and its values, each drawn as
/// a bar from zero, the widest first so the narrower ones stay visible on top of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's name as the data has it (shown shortened when long, whole in its tooltip).
    pub name: String,
    /// One value per series, on the chart's scale.
    pub values: Vec<f64>,
    /// The figure written at the end of the row, e.g. "97 % (123 of 127)".
    pub note: String,
    /// Extra class for the row (e.g. how good a success rate is).
    pub class: Option<String>,
}

/// A row as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedRow {
    pub name: String,
    /// The name as it fits beside the plot.
    pub label: String,
    pub note: String,
    pub class: Option<String>,
    /// Where the row's text sits (the middle of its band).
    pub mid: f64,
    /// (series, value, bar), widest first.
    pub bars: Vec<(usize, f64, Rect)>,
}

/// A horizontal bar chart, laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChart {
    pub width: f64,
    pub height: f64,
    pub plot: Rect,
    pub series: Vec<Series>,
    pub x_ticks: Vec<Tick>,
    pub rows: Vec<PlacedRow>,
    /// Rows of the data left out to keep the chart readable.
    pub hidden: usize,
}

impl RowChart {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Characters of a row's name that fit beside the plot.
const LABEL_CHARS: usize = 18;

/// A name shortened to `max` characters with an ellipsis (by characters, never inside one).
pub fn shorten(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        return name.to_owned();
    }
    let mut s: String = name.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// Lays out at most `max_rows` rows as horizontal bars over a scale whose ticks are `ticks`
/// (values on the scale with their labels; the last is the scale's end). The chart's height
/// follows the number of rows, `band` units each.
pub fn rows(
    series: Vec<Series>,
    rows: Vec<Row>,
    ticks: Vec<(f64, String)>,
    max_rows: usize,
    band: f64,
    width: f64,
) -> RowChart {
    let hidden = rows.len().saturating_sub(max_rows);
    let shown: Vec<Row> = rows.into_iter().take(max_rows).collect();
    let frame = Frame {
        width,
        height: 24.0 + band * shown.len().max(1) as f64,
        left: 130.0,
        right: 210.0,
        top: 4.0,
        bottom: 20.0,
    };
    let plot = frame.plot();
    let end = ticks
        .last()
        .map(|(v, _)| *v)
        .filter(|v| *v > 0.0)
        .unwrap_or(1.0);
    let at = |v: f64| plot.x + plot.w * (v / end).clamp(0.0, 1.0);
    let placed = shown
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let y = plot.y + band * i as f64;
            let mut bars: Vec<(usize, f64, Rect)> = r
                .values
                .iter()
                .enumerate()
                .take(series.len())
                .map(|(s, &v)| {
                    let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
                    (
                        s,
                        v,
                        Rect {
                            x: plot.x,
                            y: y + band * 0.2,
                            w: at(v) - plot.x,
                            h: band * 0.6,
                        },
                    )
                })
                .collect();
            bars.sort_by(|a, b| b.2.w.total_cmp(&a.2.w).then(a.0.cmp(&b.0)));
            PlacedRow {
                label: shorten(&r.name, LABEL_CHARS),
                name: r.name,
                note: r.note,
                class: r.class,
                mid: y + band / 2.0,
                bars,
            }
        })
        .collect();
    RowChart {
        width,
        height: frame.height,
        plot,
        series,
        x_ticks: ticks
            .into_iter()
            .map(|(v, label)| Tick { at: at(v), label })
            .collect(),
        rows: placed,
        hidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame {
        Frame {
            width: 440.0,
            height: 140.0,
            left: 40.0,
            right: 0.0,
            top: 10.0,
            bottom: 30.0,
        }
    }

    fn series(names: &[&str]) -> Vec<Series> {
        names
            .iter()
            .map(|n| Series {
                name: (*n).into(),
                class: format!("st-{n}"),
            })
            .collect()
    }

    fn col(key: &str, values: &[u64]) -> Column {
        Column {
            key: key.into(),
            title: key.into(),
            label: None,
            values: values.to_vec(),
        }
    }

    #[test]
    fn columns_stack_bottom_up_on_a_round_scale() {
        let c = columns(
            frame(),
            series(&["success", "failed"]),
            vec![col("a", &[3, 1]), col("b", &[0, 0]), col("c", &[0, 7])],
        );
        // Plot 400 × 100 at (40, 10); tallest 7 → scale 0..8 in steps of 2.
        assert_eq!(
            c.plot,
            Rect {
                x: 40.0,
                y: 10.0,
                w: 400.0,
                h: 100.0
            }
        );
        let labels: Vec<&str> = c.y_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0", "2", "4", "6", "8"]);
        assert_eq!(c.y_ticks[0].at, 110.0);
        assert_eq!(c.y_ticks[4].at, 10.0);
        // The empty bucket draws nothing; the others keep their slot.
        assert_eq!(c.columns.len(), 2);
        assert_eq!(c.columns[1].key, "c");
        let a = &c.columns[0];
        assert_eq!(a.total, 4);
        assert_eq!(a.segments.len(), 2);
        let (ok, bad) = (&a.segments[0], &a.segments[1]);
        assert_eq!((ok.series, bad.series), (0, 1));
        // Slot 400/3 wide with a 20 % gap; 3 of 8 from the bottom, then 1 more on top.
        let slot = 400.0 / 3.0;
        assert!((ok.rect.x - (40.0 + slot * 0.1)).abs() < 1e-9);
        assert!((ok.rect.w - slot * 0.8).abs() < 1e-9);
        assert!((ok.rect.y - (110.0 - 37.5)).abs() < 1e-9);
        assert!((ok.rect.h - 37.5).abs() < 1e-9);
        assert!(
            (bad.rect.y + bad.rect.h - ok.rect.y).abs() < 1e-9,
            "stacked"
        );
        assert!((bad.rect.h - 12.5).abs() < 1e-9);
        // Column c: only its non-zero series, one segment.
        assert_eq!(c.columns[1].segments.len(), 1);
        assert_eq!(c.columns[1].segments[0].series, 1);
        assert_eq!(c.totals, vec![3, 8]);
        assert_eq!(c.total(), 11);
        assert_eq!(c.rows.len(), 3, "the table keeps every bucket");
    }

    #[test]
    fn an_empty_chart_has_a_scale_and_no_column() {
        let c = columns(
            frame(),
            series(&["success"]),
            vec![col("a", &[0]), col("b", &[0])],
        );
        assert!(c.is_empty());
        assert_eq!(c.total(), 0);
        assert_eq!(c.y_ticks.len(), 2, "0 and 1");
        let none = columns(frame(), series(&["success"]), vec![]);
        assert!(none.is_empty());
    }

    #[test]
    fn narrow_columns_touch_and_labels_sit_under_their_column() {
        let mut cols: Vec<Column> = (0..168).map(|i| col(&i.to_string(), &[1])).collect();
        cols[24].label = Some("Tue".into());
        let c = columns(frame(), series(&["success"]), cols);
        assert_eq!(c.columns.len(), 168);
        let slot = 400.0 / 168.0;
        assert!(
            (c.columns[0].segments[0].rect.w - slot).abs() < 1e-9,
            "no gap"
        );
        assert_eq!(c.x_ticks.len(), 1);
        assert!((c.x_ticks[0].at - (40.0 + slot * 24.5)).abs() < 1e-9);
    }

    #[test]
    fn rows_scale_to_the_last_tick_and_draw_the_widest_bar_first() {
        let r = rows(
            series(&["p50", "p95"]),
            vec![
                Row {
                    name: "deploy".into(),
                    values: vec![30.0, 60.0],
                    note: "p50 30 s".into(),
                    class: None,
                },
                Row {
                    name: "a-very-long-playbook-name-indeed".into(),
                    values: vec![200.0, f64::NAN],
                    note: String::new(),
                    class: Some("bad".into()),
                },
            ],
            vec![
                (0.0, "0".into()),
                (60.0, "1 min".into()),
                (120.0, "2 min".into()),
            ],
            10,
            20.0,
            720.0,
        );
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.hidden, 0);
        let plot = r.plot;
        assert_eq!(plot.x, 130.0);
        assert_eq!(plot.w, 720.0 - 130.0 - 210.0);
        let first = &r.rows[0];
        assert_eq!(first.bars[0].0, 1, "p95 (wider) first");
        assert!((first.bars[0].2.w - plot.w / 2.0).abs() < 1e-9);
        assert!((first.bars[1].2.w - plot.w / 4.0).abs() < 1e-9);
        // Beyond the scale is clamped; a value that is not a number draws nothing.
        let second = &r.rows[1];
        assert!((second.bars[0].2.w - plot.w).abs() < 1e-9);
        assert_eq!(second.bars[1].2.w, 0.0);
        assert_eq!(second.label, "a-very-long-playb…");
        assert_eq!(second.name, "a-very-long-playbook-name-indeed");
        assert_eq!(r.x_ticks[2].at, plot.x + plot.w);
        assert_eq!(r.height, 24.0 + 40.0);
    }

    #[test]
    fn rows_beyond_the_limit_are_counted_not_drawn() {
        let many: Vec<Row> = (0..15)
            .map(|i| Row {
                name: format!("dc{i}"),
                values: vec![1.0],
                note: String::new(),
                class: None,
            })
            .collect();
        let r = rows(
            series(&["ok"]),
            many,
            vec![(1.0, "100 %".into())],
            12,
            20.0,
            720.0,
        );
        assert_eq!(r.rows.len(), 12);
        assert_eq!(r.hidden, 3);
        let empty = rows(series(&["ok"]), vec![], vec![], 12, 20.0, 720.0);
        assert!(empty.is_empty());
    }

    #[test]
    fn names_are_shortened_by_characters() {
        assert_eq!(shorten("fra1", 18), "fra1");
        assert_eq!(shorten("ééééé", 3), "éé…");
    }
}
