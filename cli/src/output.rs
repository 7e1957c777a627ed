//! How results are shown: aligned tables for people (colour only on a terminal, and never with
//! NO_COLOR), JSON for scripts.

use std::io::IsTerminal;

use serde::Serialize;

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

    /// Prints a value as JSON, if JSON was asked for. Returns whether it did.
    pub fn json<T: Serialize>(&self, value: &T) -> bool {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into())
            );
        }
        self.json
    }

    /// A status word, coloured on a terminal.
    pub fn status(&self, s: &str) -> String {
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

    /// Prints rows under a header, each column as wide as its widest cell.
    pub fn table(&self, header: &[&str], rows: Vec<Vec<String>>) {
        let visible = |s: &str| strip_ansi(s).chars().count();
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(visible(c));
                }
            }
        }
        let line = |cells: Vec<String>| {
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    out.push_str(&" ".repeat(widths[i] - visible(c) + 2));
                }
            }
            println!("{}", out.trim_end());
        };
        line(header.iter().map(|h| h.to_uppercase()).collect());
        for r in rows {
            line(r);
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

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
    fn escapes_do_not_count_as_width() {
        assert_eq!(strip_ansi("\x1b[32msuccess\x1b[0m"), "success");
        let mut m = outpost_api::JsonObject::new();
        m.insert("dc".into(), serde_json::json!("fra1"));
        assert_eq!(labels(&Some(m)), "dc=fra1");
        assert_eq!(labels(&None), "-");
    }
}
