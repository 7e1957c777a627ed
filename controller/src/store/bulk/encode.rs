//! The bulk statement's "file": rows as tab-separated lines, text escaped with a backslash, so
//! that no byte a managed host printed can end a field or a row early.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::model::NewLogLine;

/// Encodes rows for the bulk statement: `job_id \t line_number \t content \t level \t
/// timestamp \n`, text fields escaped by [`escape_into`], a missing level as `\N` (NULL).
pub fn encode(rows: &[NewLogLine]) -> Vec<u8> {
    let size: usize = rows.iter().map(|l| l.content.len() + 48).sum();
    let mut out = Vec::with_capacity(size + size / 32);
    // Lines of one flush mostly share their second: its text is made once.
    let mut stamp: Option<(i64, [u8; 19])> = None;
    for l in rows {
        push_int(&mut out, l.job.0 as i64);
        out.push(b'\t');
        push_int(&mut out, l.line_number as i64);
        out.push(b'\t');
        escape_into(&mut out, &l.content);
        out.push(b'\t');
        match &l.level {
            Some(level) => escape_into(&mut out, level),
            None => out.extend_from_slice(b"\\N"),
        }
        out.push(b'\t');
        let secs = l.timestamp.timestamp();
        match stamp {
            Some((s, text)) if s == secs => out.extend_from_slice(&text),
            _ => {
                let text = datetime_text(l.timestamp);
                out.extend_from_slice(&text);
                stamp = Some((secs, text));
            }
        }
        out.push(b'\n');
    }
    out
}

/// Appends `s` escaped for `ESCAPED BY '\\'`: a backslash, tab, newline, carriage return and
/// NUL become `\\`, `\t`, `\n`, `\r` and `\0`, so no byte of content can end a field or a line
/// or be read as an escape (a line holding the text `\N` stays text, not NULL).
pub fn escape_into(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"\\0",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(escaped);
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

fn push_int(out: &mut Vec<u8>, n: i64) {
    use std::io::Write;
    let _ = write!(out, "{n}");
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, to the second (DATETIME's precision, as the INSERT path
/// stores it).
fn datetime_text(t: DateTime<Utc>) -> [u8; 19] {
    let t = t.naive_utc();
    let mut buf = [0u8; 19];
    let year = t.year().clamp(0, 9999) as u32;
    let fields = [
        (0, 4, year),
        (5, 2, t.month()),
        (8, 2, t.day()),
        (11, 2, t.hour()),
        (14, 2, t.minute()),
        (17, 2, t.second().min(59)),
    ];
    for (at, width, mut v) in fields {
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    buf[4] = b'-';
    buf[7] = b'-';
    buf[10] = b' ';
    buf[13] = b':';
    buf[16] = b':';
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobId;

    fn esc(s: &str) -> String {
        let mut out = Vec::new();
        escape_into(&mut out, s);
        String::from_utf8(out).expect("escaping keeps UTF-8")
    }

    /// What the server makes of one escaped field (the inverse, for the round-trip test).
    fn unescape(field: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut it = field.iter();
        while let Some(&b) = it.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            match it.next() {
                Some(b't') => out.push(b'\t'),
                Some(b'n') => out.push(b'\n'),
                Some(b'r') => out.push(b'\r'),
                Some(b'0') => out.push(0),
                Some(&o) => out.push(o),
                None => panic!("a field ends in a lone backslash"),
            }
        }
        out
    }

    #[test]
    fn escapes_what_ends_a_field_or_a_line() {
        assert_eq!(esc("plain text"), "plain text");
        assert_eq!(esc("a\tb"), "a\\tb");
        assert_eq!(esc("a\nb\r\n"), "a\\nb\\r\\n");
        assert_eq!(esc("C:\\path"), "C:\\\\path");
        assert_eq!(esc("\\N"), "\\\\N", "the text \\N is not NULL");
        assert_eq!(esc("\\0 and \0"), "\\\\0 and \\0");
        assert_eq!(esc("emoji 🦀 ü"), "emoji 🦀 ü");
        assert_eq!(esc(""), "");
    }

    #[test]
    fn encoded_rows_split_back_into_the_same_fields() {
        let hostile = [
            "tab\there",
            "new\nline",
            "back\\slash",
            "\\N",
            "\\0",
            "nul\0byte",
            "cr\r",
            "🦀🦀",
            "",
            "\t\n\\",
        ];
        let when = DateTime::parse_from_rfc3339("2026-12-04T09:05:07.9Z")
            .expect("time")
            .with_timezone(&Utc);
        let rows: Vec<NewLogLine> = hostile
            .iter()
            .enumerate()
            .map(|(i, c)| NewLogLine {
                job: JobId(7),
                line_number: i as i32 + 1,
                content: (*c).to_owned(),
                level: (i % 2 == 0).then(|| "IN\tFO".to_owned()),
                timestamp: when,
            })
            .collect();
        let data = encode(&rows);
        let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
        assert_eq!(
            lines.len(),
            rows.len() + 1,
            "one line per row, then nothing"
        );
        assert!(lines[rows.len()].is_empty());
        for (row, line) in rows.iter().zip(&lines) {
            let fields: Vec<&[u8]> = line.split(|b| *b == b'\t').collect();
            assert_eq!(fields.len(), 5, "{line:?}");
            assert_eq!(fields[0], b"7");
            assert_eq!(fields[1], row.line_number.to_string().as_bytes());
            assert_eq!(unescape(fields[2]), row.content.as_bytes());
            match &row.level {
                Some(level) => assert_eq!(unescape(fields[3]), level.as_bytes()),
                None => assert_eq!(fields[3], b"\\N"),
            }
            assert_eq!(fields[4], b"2026-12-04 09:05:07");
        }
    }

    #[test]
    fn datetimes_are_utc_seconds() {
        let t = DateTime::parse_from_rfc3339("0999-01-02T03:04:05.999+00:00")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(&datetime_text(t), b"0999-01-02 03:04:05");
    }
}
