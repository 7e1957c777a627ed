//! Text that must fit a column. MariaDB in strict mode refuses an over-long value outright
//! (error 1406), which would turn a long error message into an outcome that can never be
//! recorded; SQLite would store it, and the two stores must agree. So every text the controller
//! writes is cut here, on a UTF-8 boundary, with a visible marker. The full text always remains
//! in the job's log, which is where the long parts came from. [`excerpt`] cuts and escapes
//! free text read back from a row for a log line or an error.

use std::borrow::Cow;

/// A TEXT column: 65,535 bytes.
pub const TEXT_BYTES: usize = 65_535;

// Log lines are not cut here: the protocol caps them (the agent cuts, the controller refuses
// longer ones), and the cap must fit `job_logs.content`, a TEXT column.
const _: () = assert!(outpost_protocol::MAX_LOG_LINE_BYTES <= TEXT_BYTES);
/// A VARCHAR(255) column (utf8mb4 counts characters).
pub const VARCHAR_255: usize = 255;
/// The longest string kept inside an audit record's details.
pub const AUDIT_STRING_CHARS: usize = 1_024;

/// Cuts `s` to at most `max` bytes (marker included), on a character boundary.
pub fn fit_bytes(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let marker = marker(s.len());
    let mut cut = max.saturating_sub(marker.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}{marker}", &s[..cut]))
}

/// Text read from a row or a peer as a log line or an error may show it: its first `max`
/// characters, control characters escaped (a terminal escape stays text), `…` when cut.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Cuts `s` to at most `max` characters (marker included).
pub fn fit_chars(s: &str, max: usize) -> Cow<'_, str> {
    let count = s.chars().count();
    if count <= max {
        return Cow::Borrowed(s);
    }
    let marker = marker(s.len());
    let keep = max.saturating_sub(marker.chars().count());
    let end = s
        .char_indices()
        .nth(keep)
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    Cow::Owned(format!("{}{marker}", &s[..end]))
}

/// Cuts every string inside a JSON value to `max` characters (keys included), so that an
/// audit record stays small whatever a peer sent.
pub fn fit_json(value: &serde_json::Value, max: usize) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(fit_chars(s, max).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(|v| fit_json(v, max)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (fit_chars(k, max).into_owned(), fit_json(v, max)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn marker(original_bytes: usize) -> String {
    format!(" …[cut; {original_bytes} bytes in all]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_untouched() {
        assert!(matches!(fit_bytes("abc", 10), Cow::Borrowed("abc")));
        assert!(matches!(fit_chars("äöü", 3), Cow::Borrowed(_)));
    }

    #[test]
    fn long_text_fits_in_bytes_and_says_it_was_cut() {
        let s = "é".repeat(40_000); // 80,000 bytes, two per character
        let cut = fit_bytes(&s, TEXT_BYTES);
        assert!(cut.len() <= TEXT_BYTES, "{}", cut.len());
        assert!(
            cut.ends_with("…[cut; 80000 bytes in all]"),
            "{}",
            &cut[cut.len() - 40..]
        );
        assert!(cut.len() > TEXT_BYTES - 64, "keeps as much as fits");
    }

    #[test]
    fn long_text_fits_in_characters() {
        let s = "日本".repeat(300);
        let cut = fit_chars(&s, VARCHAR_255);
        assert_eq!(cut.chars().count(), VARCHAR_255);
        assert!(cut.starts_with("日本日本"));
        assert!(cut.contains("…[cut;"));
    }

    #[test]
    fn every_string_in_json_is_cut() {
        let v =
            serde_json::json!({"hostname": "h".repeat(5000), "n": 3, "list": ["x".repeat(2000)]});
        let fitted = fit_json(&v, 100);
        assert_eq!(fitted["n"], 3);
        assert_eq!(fitted["hostname"].as_str().unwrap().chars().count(), 100);
        assert_eq!(fitted["list"][0].as_str().unwrap().chars().count(), 100);
    }
}
