//! An acknowledged-through counter kept in a file (`acked`, `results_acked` of a spool): the
//! last line or result the controller has stored, rewritten in place at each acknowledgement.
//!
//! It is written without a temporary file, a rename or an fsync, because nothing is lost when
//! it lags: a process crash keeps what was written (the page cache survives it), and after a
//! machine crash an older, torn or unreadable value only makes the agent send again what the
//! controller already stored, which the controller skips (its intake takes a job's lines and
//! results from where it stands, and stores each once). For the same reason a counter that
//! cannot be read counts as 0 rather than failing the spool. The file is opened with
//! `O_NOFOLLOW` and must be a regular file with one link: anything else planted at its path
//! (a symbolic or a hard link) is replaced, never written through.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Every value is written at this width (a `u32` has at most 10 digits), zero-padded, then a
/// newline, so each write covers the one before it whole.
const WIDTH: usize = 10;

pub struct Watermark {
    path: PathBuf,
}

impl Watermark {
    /// The counter at `path`, not read (a new spool's, which is set before it is used).
    pub fn at(path: &Path) -> Watermark {
        Watermark {
            path: path.to_path_buf(),
        }
    }

    /// The counter at `path` and its value: 0 when the file is missing, empty, damaged or not
    /// a plain file of its own (see the module's note on why that is safe).
    pub fn open(path: &Path) -> (Watermark, u32) {
        let value = own_file(path, false)
            .ok()
            .and_then(|f| {
                let mut buf = [0u8; WIDTH + 1];
                let n = f.read_at(&mut buf, 0).ok()?;
                std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
            })
            .unwrap_or(0);
        (Watermark::at(path), value)
    }

    /// Records `value` in place (creating the file, 0600, if it is not there).
    pub fn set(&self, value: u32) -> io::Result<()> {
        let file = match own_file(&self.path, true) {
            Ok(f) => f,
            Err(_) => {
                // Something else holds the name: put a file of our own in its place.
                match std::fs::remove_file(&self.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&self.path)?
            }
        };
        file.write_all_at(format!("{value:0WIDTH$}\n").as_bytes(), 0)
    }
}

/// The file at `path` if it is a regular file with one link, opened without following a link;
/// `write` opens it for writing, creating it if missing.
fn own_file(path: &Path, write: bool) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(!write)
        .write(write)
        .create(write)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(io::Error::other("not a file of its own"));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_survives_reopening_and_older_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acked");
        let (mark, first) = Watermark::open(&path);
        assert_eq!(first, 0, "a new counter starts at 0");
        mark.set(7).unwrap();
        mark.set(4_294_967_295).unwrap();
        mark.set(1234).unwrap();
        drop(mark);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0000001234\n");
        assert_eq!(Watermark::open(&path).1, 1234);
        // As written before this module: the number alone, by a rename.
        std::fs::write(&path, "2000").unwrap();
        let (mark, was) = Watermark::open(&path);
        assert_eq!(was, 2000);
        mark.set(2001).unwrap();
        assert_eq!(Watermark::open(&path).1, 2001);
        // Damaged: read as 0, so the controller is sent everything again, never less.
        std::fs::write(&path, "12\u{0}x").unwrap();
        assert_eq!(Watermark::open(&path).1, 0);
    }

    #[test]
    fn a_planted_link_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("someone-elses");
        std::fs::write(&theirs, "theirs").unwrap();
        let path = dir.path().join("acked");
        for plant in [
            |t: &Path, p: &Path| std::os::unix::fs::symlink(t, p),
            |t: &Path, p: &Path| std::fs::hard_link(t, p),
        ] {
            plant(&theirs, &path).unwrap();
            let (mark, was) = Watermark::open(&path);
            assert_eq!(was, 0, "a planted file is not believed");
            mark.set(42).unwrap();
            assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "theirs");
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_file() && meta.nlink() == 1);
            assert_eq!(Watermark::open(&path).1, 42);
            std::fs::remove_file(&path).unwrap();
        }
    }
}
