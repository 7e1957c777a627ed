//! The cursor of a keyset-paged list (jobs, audit): the sort key of the last item a page
//! showed, `(timestamp, id)`, handed to clients as an opaque string and taken back as `after`.
//!
//! Keyset paging reads the next page straight from the index wherever it starts, where an
//! `OFFSET` reads and throws away every row before it; and rows inserted meanwhile at the head
//! of the list do not shift later pages, so paging on shows each row once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime};

/// Marks the cursor's layout, so a later change of it refuses old cursors instead of
/// misreading them.
const VERSION: &str = "k1";

/// Where the next page starts: strictly after `(at, id)` in `(at, id)` descending order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The sort time of the last item shown (`jobs.created_at`, `audit_logs.timestamp`), to
    /// the second as the columns store it.
    pub at: NaiveDateTime,
    /// The last item's id, which orders items of the same second.
    pub id: i64,
}

/// Why a string is not a cursor of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor this server made (pass back a page's `next` unchanged)")]
pub struct BadCursor;

impl Cursor {
    pub fn new(at: NaiveDateTime, id: i64) -> Cursor {
        Cursor { at, id }
    }

    /// The opaque form given to clients.
    pub fn encode(&self) -> String {
        let plain = format!("{VERSION}.{}.{}", self.at.and_utc().timestamp(), self.id);
        URL_SAFE_NO_PAD.encode(plain)
    }

    /// Reads back what [`Cursor::encode`] made; anything else is refused.
    pub fn decode(s: &str) -> Result<Cursor, BadCursor> {
        // Real cursors are about 30 characters: a long one is not worth decoding.
        if s.is_empty() || s.len() > 64 {
            return Err(BadCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| BadCursor)?;
        let plain = std::str::from_utf8(&bytes).map_err(|_| BadCursor)?;
        let mut parts = plain.split('.');
        let (Some(VERSION), Some(secs), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadCursor);
        };
        let secs: i64 = secs.parse().map_err(|_| BadCursor)?;
        let id: i64 = id.parse().map_err(|_| BadCursor)?;
        if id < 0 {
            return Err(BadCursor);
        }
        let at = DateTime::from_timestamp(secs, 0)
            .ok_or(BadCursor)?
            .naive_utc();
        Ok(Cursor { at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn a_cursor_reads_back_as_itself() {
        for c in [
            Cursor::new(at("2026-12-04 05:06:07"), 1),
            Cursor::new(at("1970-01-01 00:00:00"), 0),
            Cursor::new(at("2099-01-01 23:59:59"), i64::from(i32::MAX)),
        ] {
            let s = c.encode();
            assert!(
                s.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
                "{s}"
            );
            assert_eq!(Cursor::decode(&s), Ok(c));
        }
    }

    #[test]
    fn anything_else_is_refused() {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            String::new(),
            "not a cursor".into(),
            "%%%".into(),
            "a".repeat(65),
            b64("k1.123"),
            b64("k1.123.4.5"),
            b64("k2.123.4"),
            b64("k1.abc.4"),
            b64("k1.123.-4"),
            b64("k1.123.x"),
            b64(&format!("k1.{}.4", i64::MAX)),
        ] {
            assert_eq!(Cursor::decode(&bad), Err(BadCursor), "{bad}");
        }
    }
}
