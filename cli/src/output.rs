//! How results are shown: aligned tables for people (colour only on a terminal, and never with
//! NO_COLOR), JSON for scripts.

use std::io::IsTerminal;

use serde::Serialize;

use crate::terminal;

/// What `--json` and `-o` asked for.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub wide: bool,
    colour: bool,
}

impl Output {
    pub fn new(json: bool, wide: bool) -> Output {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Output { json, wide, colour }
    }

    /// Prints a value as JSON, if JSON was asked for. Returns whether it did. C1 controls and
    /// bidi characters in its strings are `\u` escapes, as serde_json already writes C0 ones.
    pub fn json<T: Serialize>(&self, value: &T) -> bool {
        if self.json {
            let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
            println!("{}", terminal::json(&text));
        }
        self.json
    }

    /// After a table of a list paged by cursor: the total (or its lower bound) and the command
    /// that prints the next page, on stderr so that stdout stays the table. `command` is the
    /// listing's command line as typed, filters included.
    pub fn next_page<T>(&self, page: &outpost_api::Page<T>, command: &str) {
        let total = if page.total_exact {
            page.total.to_string()
        } else {
            format!("more than {}", page.total)
        };
        eprintln!("{} shown of {total}", page.items.len());
        if let Some(next) = &page.next {
            eprintln!("next page: {command} --after {next}");
        }
    }

    /// A status word in the colour of what it means, on a terminal.
    fn colour(&self, s: &str) -> String {
        if !self.colour {
            return s.to_owned();
        }
        let code = match s {
            "success" | "resolved" | "closed" | "online" => "32",
            "failed" | "critical" | "revoked" | "offline" => "31",
            "running" | "in_progress" | "high" => "33",
            "pending" | "open" | "medium" => "36",
            _ => return s.to_owned(),
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    }

    /// Prints rows under a header, each column as wide as its widest cell. Cells are text from
    /// the controller: they are escaped for the terminal first, and only then are the words of
    /// the status columns (`status`, `priority`, `state`) coloured, so no cell can bring its
    /// own escape sequences.
    pub fn table(&self, header: &[&str], rows: Vec<Vec<String>>) {
        for line in self.render(header, rows) {
            println!("{line}");
        }
    }

    fn render(&self, header: &[&str], rows: Vec<Vec<String>>) -> Vec<String> {
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|c| terminal::escape(&c).into_owned())
                    .collect()
            })
            .collect();
        let coloured: Vec<bool> = header.iter().map(|h| STATUS_COLUMNS.contains(h)).collect();
        let visible = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(visible(c));
                }
            }
        }
        let line = |cells: Vec<String>, colour: bool| {
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate() {
                if colour && coloured.get(i).copied().unwrap_or(false) {
                    out.push_str(&self.colour(c));
                } else {
                    out.push_str(c);
                }
                if i + 1 < cells.len() {
                    let width = widths.get(i).copied().unwrap_or(0);
                    out.push_str(&" ".repeat(width.saturating_sub(visible(c)) + 2));
                }
            }
            out.trim_end().to_owned()
        };
        let mut lines = vec![line(
            header.iter().map(|h| h.to_uppercase()).collect(),
            false,
        )];
        lines.extend(rows.into_iter().map(|r| line(r, true)));
        lines
    }
}

/// The columns whose words are coloured by [`Output::table`].
const STATUS_COLUMNS: [&str; 3] = ["status", "priority", "state"];

/// An optional value as a cell.
pub fn cell<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_else(|| "-".into())
}

/// A timestamp as a cell, to the second.
pub fn time(t: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A JSON object of labels as `k=v,k2=v2`.
pub fn labels(o: &Option<outpost_api::JsonObject>) -> String {
    match o {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_value_pairs() {
        let mut m = outpost_api::JsonObject::new();
        m.insert("dc".into(), serde_json::json!("fra1"));
        assert_eq!(labels(&Some(m)), "dc=fra1");
        assert_eq!(labels(&None), "-");
    }

    #[test]
    fn cells_cannot_bring_their_own_escapes_but_statuses_are_coloured() {
        let out = Output {
            json: false,
            wide: false,
            colour: true,
        };
        let lines = out.render(
            &["name", "status"],
            vec![
                vec!["web1\x1b]0;pwned\x07".into(), "success".into()],
                vec!["success".into(), "\x1b[2Jfailed".into()],
            ],
        );
        assert_eq!(
            lines,
            [
                "NAME                  STATUS",
                "web1\\x1b]0;pwned\\x07  \x1b[32msuccess\x1b[0m",
                "success               \\x1b[2Jfailed",
            ]
        );
    }
}
