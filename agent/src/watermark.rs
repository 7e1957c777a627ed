//! An acknowledged-through counter kept in a file (`acked`, `results_acked` of a spool): the
//! last line or result the controller has stored, rewritten in place at each acknowledgement.
//!
//! It is written without a temporary file, a rename or an fsync, because nothing is lost when
//! it lags: a process crash keeps what was written (the page cache survives it), and after a
//! machine crash an older, torn or unreadable value only makes the agent send again what the
//! controller already stored, which the controller skips (its intake takes a job's lines and
//! results from where it stands, and stores each once). The file is opened once with
//! `O_NOFOLLOW`, so a link planted at its path is refused rather than written through.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Every value is written at this width (a `u32` has at most 10 digits), zero-padded, then a
/// newline, so each write covers the one before it whole.
const WIDTH: usize = 10;

pub struct Watermark {
    file: File,
}

impl Watermark {
    /// Opens (or creates, 0600) the counter at `path` and reads its value: 0 when the file is
    /// new, empty or unreadable (see the module's note on why that is safe).
    pub fn open(path: &Path) -> std::io::Result<(Watermark, u32)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let mut buf = [0u8; WIDTH + 1];
        let n = file.read_at(&mut buf, 0)?;
        let value = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok((Watermark { file }, value))
    }

    /// Records `value` in place.
    pub fn set(&self, value: u32) -> std::io::Result<()> {
        let text = format!("{value:0WIDTH$}\n");
        self.file.write_all_at(text.as_bytes(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_survives_reopening_and_older_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acked");
        let (mark, first) = Watermark::open(&path).unwrap();
        assert_eq!(first, 0, "a new counter starts at 0");
        mark.set(7).unwrap();
        mark.set(4_294_967_295).unwrap();
        mark.set(1234).unwrap();
        drop(mark);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0000001234\n");
        assert_eq!(Watermark::open(&path).unwrap().1, 1234);
        // As written before this module: the number alone, by a rename.
        std::fs::write(&path, "2000").unwrap();
        let (mark, was) = Watermark::open(&path).unwrap();
        assert_eq!(was, 2000);
        mark.set(2001).unwrap();
        assert_eq!(Watermark::open(&path).unwrap().1, 2001);
        // Damaged: read as 0, so the controller is sent everything again, never less.
        std::fs::write(&path, "12\u{0}x").unwrap();
        assert_eq!(Watermark::open(&path).unwrap().1, 0);
    }

    #[test]
    fn a_planted_link_is_refused_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("someone-elses");
        std::fs::write(&theirs, "theirs").unwrap();
        let path = dir.path().join("acked");
        std::os::unix::fs::symlink(&theirs, &path).unwrap();
        assert!(Watermark::open(&path).is_err());
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "theirs");
    }
}
