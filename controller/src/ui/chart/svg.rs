//! Laid-out charts as SVG inside a `<figure>`: a title and a description for screen readers
//! (`role="img"`, `aria-labelledby`), a tooltip (`<title>`) on every bar, a legend with the
//! figures, and the same numbers as a table behind a `<details>` for whoever would rather read.
//! Colours come from CSS classes (the page's CSP allows no inline style); every text is
//! escaped by maud.

use maud::{html, Markup};

use super::{ColumnChart, ProgressChart, RowChart};

/// A coordinate, short.
fn n(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

fn svg_open_ids(id: &str) -> (String, String) {
    (format!("{id}-title"), format!("{id}-desc"))
}

/// A stacked column chart; `empty` is what it says when there is nothing to draw.
pub fn columns(id: &str, title: &str, desc: &str, c: &ColumnChart, empty: &str) -> Markup {
    let (tid, did) = svg_open_ids(id);
    let p = c.plot;
    html! {
        figure.chart id=(id) data-total=(c.total()) {
            figcaption {
                h3 { (title) }
                ul.legend {
                    @for (s, total) in c.series.iter().zip(&c.totals) {
                        li class=(s.class) { span.swatch aria-hidden="true" {} (s.name) " " strong { (total) } }
                    }
                }
            }
            svg.plot viewBox=(format!("0 0 {} {}", n(c.width), n(c.height))) role="img"
                aria-labelledby=(format!("{tid} {did}")) preserveAspectRatio="xMidYMid meet" {
                title id=(tid) { (title) }
                desc id=(did) { (desc) }
                g.axis.y {
                    @for t in &c.y_ticks {
                        line.grid x1=(n(p.x)) x2=(n(p.x + p.w)) y1=(n(t.at)) y2=(n(t.at)) {}
                        text x=(n(p.x - 4.0)) y=(n(t.at + 3.5)) text-anchor="end" { (t.label) }
                    }
                }
                g.axis.x {
                    @for t in &c.x_ticks {
                        line.tick x1=(n(t.at)) x2=(n(t.at)) y1=(n(p.y + p.h)) y2=(n(p.y + p.h + 3.0)) {}
                        text x=(n(t.at)) y=(n(c.height - 4.0)) text-anchor="middle" { (t.label) }
                    }
                }
                g.bars {
                    @for col in &c.columns {
                        g.col data-at=(col.key) data-total=(col.total) {
                            title {
                                (col.title) ": "
                                @for (i, s) in col.segments.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (s.value) " " (c.series[s.series].name)
                                }
                            }
                            @for s in &col.segments {
                                rect class=(format!("seg {}", c.series[s.series].class))
                                    data-series=(c.series[s.series].name) data-value=(s.value)
                                    x=(n(s.rect.x)) y=(n(s.rect.y)) width=(n(s.rect.w)) height=(n(s.rect.h)) {}
                            }
                        }
                    }
                }
                @if c.is_empty() {
                    text.empty x=(n(p.x + p.w / 2.0)) y=(n(p.y + p.h / 2.0)) text-anchor="middle" { (empty) }
                }
            }
            @if !c.is_empty() {
                details {
                    summary { "As a table" }
                    table {
                        thead { tr {
                            th scope="col" { "when" }
                            @for s in &c.series { th scope="col" { (s.name) } }
                        } }
                        tbody {
                            @for r in c.rows.iter().filter(|r| r.values.iter().any(|v| *v > 0)) {
                                tr {
                                    th scope="row" { (r.title) }
                                    @for i in 0..c.series.len() { td { (r.values.get(i).copied().unwrap_or(0)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A horizontal bar chart; `empty` is what it says when there is nothing to draw.
pub fn rows(id: &str, title: &str, desc: &str, c: &RowChart, empty: &str) -> Markup {
    let (tid, did) = svg_open_ids(id);
    let p = c.plot;
    html! {
        figure.chart id=(id) data-rows=(c.rows.len()) {
            figcaption {
                h3 { (title) }
                @if c.series.len() > 1 {
                    ul.legend {
                        @for s in &c.series {
                            li class=(s.class) { span.swatch aria-hidden="true" {} (s.name) }
                        }
                    }
                }
            }
            @if c.is_empty() {
                p.muted.empty { (empty) }
            } @else {
                svg.plot viewBox=(format!("0 0 {} {}", n(c.width), n(c.height))) role="img"
                    aria-labelledby=(format!("{tid} {did}")) preserveAspectRatio="xMidYMid meet" {
                    title id=(tid) { (title) }
                    desc id=(did) { (desc) }
                    g.axis.x {
                        @for t in &c.x_ticks {
                            line.grid x1=(n(t.at)) x2=(n(t.at)) y1=(n(p.y)) y2=(n(p.y + p.h)) {}
                            text x=(n(t.at)) y=(n(c.height - 4.0)) text-anchor="middle" { (t.label) }
                        }
                    }
                    @for r in &c.rows {
                        g class=(match &r.class { Some(k) => format!("row {k}"), None => "row".to_owned() }) data-name=(r.name) {
                            title { (r.name) ": " (r.note) }
                            text.name x=(n(p.x - 6.0)) y=(n(r.mid + 4.0)) text-anchor="end" { (r.label) }
                            @for (s, v, b) in &r.bars {
                                rect class=(format!("bar {}", c.series[*s].class)) data-series=(c.series[*s].name)
                                    data-value=(n(*v)) x=(n(b.x)) y=(n(b.y)) width=(n(b.w)) height=(n(b.h)) {}
                            }
                            text.note x=(n(p.x + p.w + 6.0)) y=(n(r.mid + 4.0)) { (r.note) }
                        }
                    }
                }
                @if c.hidden > 0 {
                    p.muted { (c.hidden) " more not shown." }
                }
                details {
                    summary { "As a table" }
                    table {
                        tbody {
                            @for r in &c.rows {
                                tr { th scope="row" { (r.name) } td { (r.note) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Progress bars, one per group, with a legend of the series that occur.
pub fn progress(id: &str, title: &str, desc: &str, c: &ProgressChart) -> Markup {
    let (tid, did) = svg_open_ids(id);
    let p = c.plot;
    html! {
        figure.chart.progress id=(id) data-groups=(c.groups.len()) {
            figcaption {
                h3 { (title) }
                ul.legend {
                    @for (i, s) in c.series.iter().enumerate() {
                        @let n: u64 = c.groups.iter().flat_map(|g| &g.segments).filter(|x| x.series == i).map(|x| x.value).sum();
                        @if n > 0 {
                            li class=(s.class) { span.swatch aria-hidden="true" {} (s.name) " " strong { (n) } }
                        }
                    }
                }
            }
            svg.plot viewBox=(format!("0 0 {} {}", n(c.width), n(c.height))) role="img"
                aria-labelledby=(format!("{tid} {did}")) preserveAspectRatio="xMidYMid meet" {
                title id=(tid) { (title) }
                desc id=(did) { (desc) }
                @for g in &c.groups {
                    g.row data-name=(g.name) data-total=(g.total) {
                        title {
                            (g.name) ": "
                            @for (i, s) in g.segments.iter().enumerate() {
                                @if i > 0 { ", " }
                                (s.value) " " (c.series[s.series].name)
                            }
                        }
                        text.name x=(n(p.x - 6.0)) y=(n(g.mid + 4.0)) text-anchor="end" { (g.label) }
                        rect.track x=(n(p.x)) y=(n(g.mid - 0.35 * c.band)) width=(n(p.w)) height=(n(0.7 * c.band)) {}
                        @for s in &g.segments {
                            rect class=(format!("seg {}", c.series[s.series].class))
                                data-series=(c.series[s.series].name) data-value=(s.value)
                                x=(n(s.rect.x)) y=(n(s.rect.y)) width=(n(s.rect.w)) height=(n(s.rect.h)) {}
                        }
                        text.note x=(n(p.x + p.w + 6.0)) y=(n(g.mid + 4.0)) { (g.note) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{columns as lay_columns, rows as lay_rows, Column, Frame, Row, Series};
    use super::*;

    const EVIL: &str = "<script>alert(1)</script>\"'&";

    fn series(names: &[&str]) -> Vec<Series> {
        names
            .iter()
            .map(|n| Series {
                name: (*n).into(),
                class: format!("st-{n}"),
            })
            .collect()
    }

    fn frame() -> Frame {
        Frame {
            width: 720.0,
            height: 180.0,
            left: 36.0,
            right: 8.0,
            top: 8.0,
            bottom: 22.0,
        }
    }

    #[test]
    fn a_column_chart_has_its_bars_tooltips_legend_and_table() {
        let c = lay_columns(
            frame(),
            series(&["success", "failed"]),
            vec![
                Column {
                    key: "h0".into(),
                    title: "14:00".into(),
                    label: Some("14:00".into()),
                    values: vec![3, 1],
                },
                Column {
                    key: "h1".into(),
                    title: "15:00".into(),
                    label: None,
                    values: vec![0, 0],
                },
            ],
        );
        let s = columns("jobs", "Jobs per hour", "4 jobs", &c, "No job").into_string();
        assert_eq!(s.matches("<g class=\"col\"").count(), 1);
        assert_eq!(s.matches("<rect class=\"seg ").count(), 2);
        assert!(
            s.contains("<title>14:00: 3 success, 1 failed</title>"),
            "{s}"
        );
        assert!(s.contains("role=\"img\" aria-labelledby=\"jobs-title jobs-desc\""));
        assert!(s.contains("<desc id=\"jobs-desc\">4 jobs</desc>"));
        assert!(s.contains("<details>"), "a table stands in for the picture");
        assert!(!s.contains("No job"));
        assert!(!s.contains("style="), "no inline style: the CSP refuses it");
    }

    #[test]
    fn an_empty_column_chart_says_so_in_the_picture() {
        let c = lay_columns(frame(), series(&["success"]), vec![]);
        let s = columns("jobs", "Jobs", "none", &c, "No job in the last 24 hours").into_string();
        assert!(s.contains("No job in the last 24 hours"));
        assert_eq!(s.matches("<rect").count(), 0);
        assert!(!s.contains("<details>"));
    }

    #[test]
    fn names_from_users_are_text_everywhere() {
        let r = lay_rows(
            series(&["rate"]),
            vec![Row {
                name: EVIL.into(),
                values: vec![0.5],
                note: EVIL.into(),
                class: None,
            }],
            vec![(1.0, "100 %".into())],
            10,
            20.0,
            720.0,
        );
        let s = rows(EVIL, EVIL, EVIL, &r, EVIL).into_string();
        assert!(!s.contains("<script>"), "{s}");
        assert!(!s.contains("\"'&\""), "{s}");
        assert!(
            s.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"),
            "{s}"
        );
        let c = lay_columns(
            frame(),
            vec![Series {
                name: EVIL.into(),
                class: "st-x".into(),
            }],
            vec![Column {
                key: EVIL.into(),
                title: EVIL.into(),
                label: Some(EVIL.into()),
                values: vec![1],
            }],
        );
        let s = columns(EVIL, EVIL, EVIL, &c, EVIL).into_string();
        assert!(!s.contains("<script>"), "{s}");
    }

    #[test]
    fn a_row_chart_draws_one_group_per_row_or_says_it_is_empty() {
        let r = lay_rows(
            series(&["p95", "p50"]),
            vec![
                Row {
                    name: "deploy".into(),
                    values: vec![60.0, 30.0],
                    note: "p50 30 s · p95 1 min".into(),
                    class: None,
                },
                Row {
                    name: "patch".into(),
                    values: vec![10.0, 5.0],
                    note: "p50 5 s · p95 10 s".into(),
                    class: Some("bad".into()),
                },
            ],
            vec![(0.0, "0 s".into()), (60.0, "1 min".into())],
            10,
            20.0,
            720.0,
        );
        let s = rows("dur", "Duration", "2 playbooks", &r, "nothing").into_string();
        assert_eq!(s.matches("<g class=\"row").count(), 2);
        assert!(s.contains("<g class=\"row bad\" data-name=\"patch\">"));
        assert_eq!(s.matches("<rect class=\"bar ").count(), 4);
        assert!(s.contains("<title>deploy: p50 30 s · p95 1 min</title>"));
        let empty = lay_rows(series(&["rate"]), vec![], vec![], 10, 20.0, 720.0);
        let s = rows("dc", "Rate", "none", &empty, "No finished job yet.").into_string();
        assert!(s.contains("No finished job yet."));
        assert!(!s.contains("<svg"));
    }

    #[test]
    fn progress_bars_have_a_track_segments_and_a_legend_of_what_occurs() {
        let c = super::super::progress(
            series(&["success", "failed", "pending"]),
            vec![super::super::Group {
                name: "fra1".into(),
                values: vec![2, 0, 1],
                note: "2 of 3".into(),
            }],
            20.0,
            660.0,
        );
        let s = progress("dcs", "Per datacenter", "fra1 2 of 3", &c).into_string();
        assert_eq!(s.matches("<rect class=\"seg ").count(), 2);
        assert_eq!(s.matches("<rect class=\"track\"").count(), 1);
        assert!(
            s.contains("<title>fra1: 2 success, 1 pending</title>"),
            "{s}"
        );
        assert!(s.contains("success <strong>2</strong>"));
        assert!(
            !s.contains("failed"),
            "no legend entry for what does not occur"
        );
    }

    #[test]
    fn coordinates_are_short() {
        assert_eq!(n(12.0), "12");
        assert_eq!(n(12.34), "12.3");
        assert_eq!(n(-0.04), "0");
    }
}
