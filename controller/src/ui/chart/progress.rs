//! Progress bars: one full-width bar per group (a datacenter, a wave) split by how its jobs
//! stand, so that groups of different sizes read alike ("how far along is fra1?").

use super::{shorten, Frame, Rect, Segment, Series};

/// A group and its number of jobs per series.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub values: Vec<u64>,
    /// Written after the bar, e.g. "7 of 10 done".
    pub note: String,
}

/// A group as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedGroup {
    pub name: String,
    pub label: String,
    pub note: String,
    pub total: u64,
    pub mid: f64,
    /// Left to right in the series' order; series with no job have none.
    pub segments: Vec<Segment>,
}

/// Progress bars, laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressChart {
    pub width: f64,
    pub height: f64,
    pub plot: Rect,
    /// The height each group gets.
    pub band: f64,
    pub series: Vec<Series>,
    pub groups: Vec<PlacedGroup>,
}

/// Characters of a group's name that fit beside its bar.
const LABEL_CHARS: usize = 16;

/// Lays out one bar per group, `band` units apart, each as wide as the plot.
pub fn progress(series: Vec<Series>, groups: Vec<Group>, band: f64, width: f64) -> ProgressChart {
    let frame = Frame {
        width,
        height: 4.0 + band * groups.len().max(1) as f64,
        left: 130.0,
        right: 130.0,
        top: 2.0,
        bottom: 2.0,
    };
    let plot = frame.plot();
    let placed = groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let y = plot.y + band * i as f64;
            let total: u64 = g.values.iter().take(series.len()).sum();
            let mut x = plot.x;
            let mut segments = Vec::new();
            for (s, &v) in g.values.iter().enumerate().take(series.len()) {
                if v == 0 || total == 0 {
                    continue;
                }
                let w = plot.w * v as f64 / total as f64;
                segments.push(Segment {
                    series: s,
                    value: v,
                    rect: Rect {
                        x,
                        y: y + band * 0.15,
                        w,
                        h: band * 0.7,
                    },
                });
                x += w;
            }
            PlacedGroup {
                label: shorten(&g.name, LABEL_CHARS),
                name: g.name,
                note: g.note,
                total,
                mid: y + band / 2.0,
                segments,
            }
        })
        .collect();
    ProgressChart {
        width,
        height: frame.height,
        plot,
        band,
        series,
        groups: placed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> Vec<Series> {
        ["success", "failed", "running", "pending"]
            .iter()
            .map(|n| Series {
                name: (*n).into(),
                class: format!("st-{n}"),
            })
            .collect()
    }

    #[test]
    fn each_group_fills_the_width_in_the_series_order() {
        let c = progress(
            series(),
            vec![
                Group {
                    name: "fra1".into(),
                    values: vec![5, 1, 0, 4],
                    note: "6 of 10".into(),
                },
                Group {
                    name: "ams2".into(),
                    values: vec![1, 0, 1, 0],
                    note: "1 of 2".into(),
                },
                Group {
                    name: "empty".into(),
                    values: vec![0, 0, 0, 0],
                    note: String::new(),
                },
            ],
            20.0,
            660.0,
        );
        assert_eq!(c.plot.x, 130.0);
        assert_eq!(c.plot.w, 400.0);
        assert_eq!(c.height, 64.0);
        let fra = &c.groups[0];
        assert_eq!(fra.total, 10);
        let series_of: Vec<usize> = fra.segments.iter().map(|s| s.series).collect();
        assert_eq!(series_of, [0, 1, 3]);
        let widths: Vec<f64> = fra.segments.iter().map(|s| s.rect.w).collect();
        assert_eq!(widths, [200.0, 40.0, 160.0]);
        assert_eq!(fra.segments[1].rect.x, 330.0, "after the successes");
        assert_eq!(fra.segments[2].rect.x + fra.segments[2].rect.w, 530.0);
        let ams = &c.groups[1];
        assert_eq!(
            ams.segments[0].rect.w, 200.0,
            "half of a smaller group is half the bar"
        );
        assert_eq!(ams.segments[0].rect.y, 2.0 + 20.0 + 3.0);
        assert!(c.groups[2].segments.is_empty());
        assert_eq!(c.groups[2].mid, 2.0 + 40.0 + 10.0);
    }
}
