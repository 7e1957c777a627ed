//! Text from elsewhere, made safe to print on the admin's terminal.
//!
//! Log lines come from managed hosts, and names, titles, descriptions and error messages from
//! the controller and its other users: any of them may carry control sequences that a terminal
//! obeys (clear the screen, move the cursor to overwrite what was printed, set the window
//! title, OSC 52 to write the clipboard, hyperlinks that lie) or bidi overrides that show text
//! in another order than it is. Every such character is shown as an escape instead (`\x1b`,
//! `\u{9b}`, `\u{202e}`); tabs (and, in multi-line text, newlines) are kept. `--raw` on the
//! log commands prints log lines as they are.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: C0 controls but tab, DEL, C1 controls, and
/// the bidi embeddings, overrides, isolates and marks.
fn unsafe_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One line of text from elsewhere, every unsafe character (a newline too) shown escaped.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// Text of several lines (a ticket's description, a playbook): as [`escape`], newlines kept.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && unsafe_char(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\n' {
            out.push(c);
        } else {
            push_escaped(&mut out, c);
        }
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write;
    if !unsafe_char(c) {
        out.push(c);
    } else if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

/// JSON for a terminal: serde_json escapes C0 controls in strings, but prints DEL, C1 controls
/// and bidi characters as they are. They can only stand inside strings (JSON's own syntax is
/// ASCII), where `\uXXXX` is the same value: the document means exactly what it meant.
pub fn json(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) && !matches!(c, '\n' | '\r' | '\t') {
            use std::fmt::Write;
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        assert_eq!(
            escape("\u{1b}]0;pwned\u{7}\u{1b}[2J"),
            "\\x1b]0;pwned\\x07\\x1b[2J"
        );
        assert_eq!(escape("a\rb\nc\u{8}\u{7f}"), "a\\x0db\\x0ac\\x08\\x7f");
        // C1: CSI on its own, as an 8-bit terminal reads it; OSC.
        assert_eq!(escape("\u{9b}31m\u{9d}8;;x"), "\\u{9b}31m\\u{9d}8;;x");
        assert_eq!(escape("\u{85}"), "\\u{85}", "NEL, the last C1 line break");
    }

    #[test]
    fn bidi_overrides_are_shown() {
        assert_eq!(escape("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
        assert_eq!(escape("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        assert_eq!(escape("\u{200f}\u{61c}"), "\\u{200f}\\u{61c}");
    }

    #[test]
    fn ordinary_text_is_untouched_and_not_copied() {
        let line = "TASK [ping] ****\tok: [web1] => {\"ping\": \"pong\"} — é 日本 C:\\path";
        assert!(matches!(escape(line), Cow::Borrowed(_)));
        assert_eq!(escape(line), line);
        assert!(matches!(escape_text("a\nb\n"), Cow::Borrowed(_)));
        assert!(matches!(json("{\"a\": \"é\"}"), Cow::Borrowed(_)));
    }

    #[test]
    fn multi_line_text_keeps_its_lines_only() {
        assert_eq!(
            escape_text("title\n\u{1b}[2Jbody\r\n"),
            "title\n\\x1b[2Jbody\\x0d\n"
        );
    }

    #[test]
    fn json_stays_the_same_json() {
        let value = serde_json::json!({"content": "\u{1b}[2J \u{9b}2J \u{202e}x\u{7f}"});
        let text = serde_json::to_string_pretty(&value).unwrap();
        let safe = json(&text);
        assert!(!safe.chars().any(|c| unsafe_char(c) && c != '\n'), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
    }
}
