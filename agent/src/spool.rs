//! The spool: a job's output kept on disk until the controller has acknowledged it, and the
//! job's outcome until the controller has recorded it. It survives reconnects, controller
//! restarts and the agent's own crash; after an acknowledgement its lines are no longer needed,
//! and once the outcome is acknowledged the whole spool is removed.
//!
//! Layout of `spool/<job>/`: `job.json` (dispatch, process group, outcome), `lines` (records of a
//! u32 length, a CRC-32 of the body and a postcard-encoded line, appended in line order),
//! `acked` (the last line the controller acknowledged), `results` and `results_acked` (the
//! job's task results, see [`crate::results`]), `format` (2; a spool without it was
//! written before records carried a checksum, and is read without one). A record whose
//! checksum, length or number is wrong ends what is read: everything before it is sound. Memory stays bounded however much a job prints: lines are read
//! back from disk a batch at a time, and only a sparse index of offsets is kept.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use outpost_protocol::codec;
use outpost_protocol::message::{FinalStatus, Level, LogLine};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::watermark::Watermark;

/// One index entry per this many lines.
const INDEX_EVERY: u32 = 1024;
/// A record is a line of at most the runner's cap plus a few bytes.
const MAX_RECORD: usize = 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Record {
    line: u32,
    at_ms: i64,
    level: Level,
    text: String,
}

/// How a job ended, kept until the controller acknowledges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: FinalStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub last_line: u32,
    /// The last task result of the run (0: none, or a spool from before results).
    #[serde(default)]
    pub last_result: u32,
    /// ansible's recap, when the run got that far.
    #[serde(default)]
    pub recap: Option<outpost_protocol::results::PlayRecap>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub job: Uuid,
    pub dispatch_id: String,
    pub playbook_name: String,
    /// The ansible-playbook process group while it runs (to clean up after a crash).
    pub pgid: Option<i32>,
    pub outcome: Option<Outcome>,
}

struct Inner {
    writer: File,
    /// Bytes of complete records.
    size: u64,
    last_line: u32,
    acked: u32,
    /// `acked`, kept in the spool's `acked` file.
    acked_mark: Watermark,
    /// (first line of a stretch, byte offset of that line's record), every INDEX_EVERY lines.
    index: Vec<(u32, u64)>,
    meta: Meta,
}

pub struct Spool {
    dir: PathBuf,
    /// The job's task results, kept beside its lines.
    results: crate::results::ResultLog,
    /// The record format: 1 without a checksum, 2 with.
    format: u8,
    inner: Mutex<Inner>,
}

/// A job's record and its acknowledgements may hold what the job was given: 0600, and written
/// as every kept file of the agent is (see [`outpost_protocol::files`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    outpost_protocol::files::write_replacing(path, bytes, 0o600)
}

/// A batch read back from the spool: `lines[i]` is line `first_line + i`.
#[derive(Debug, Default)]
pub struct Chunk {
    pub first_line: u32,
    pub lines: Vec<LogLine>,
    /// Offset just past the chunk, for the next read.
    pub next_offset: u64,
}

impl Spool {
    /// A new, empty spool for a job just accepted.
    pub fn create(root: &Path, meta: Meta) -> std::io::Result<Spool> {
        let dir = root.join(meta.job.to_string());
        std::fs::create_dir_all(&dir)?;
        let writer = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(dir.join("lines"))?;
        let acked_mark = Watermark::at(&dir.join("acked"));
        acked_mark.set(0)?;
        write_atomic(&dir.join("format"), FORMAT.to_string().as_bytes())?;
        let spool = Spool {
            results: crate::results::ResultLog::open(&dir)?,
            dir,
            format: FORMAT,
            inner: Mutex::new(Inner {
                writer,
                size: 0,
                last_line: 0,
                acked: 0,
                acked_mark,
                index: vec![(1, 0)],
                meta,
            }),
        };
        spool.save_meta()?;
        Ok(spool)
    }

    /// Reopens a spool after a restart. A record cut short by a crash is dropped.
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join("job.json"))?)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let (acked_mark, acked) = Watermark::open(&dir.join("acked"));
        let format: u8 = std::fs::read_to_string(dir.join("format"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        let path = dir.join("lines");
        let mut reader = BufReader::new(File::open(&path)?);
        let mut size = 0u64;
        let mut last_line = 0u32;
        let mut index = vec![(1, 0)];
        while let Ok(Some((rec, len))) = read_record(&mut reader, format) {
            if rec.line != last_line + 1 {
                break; // never happens unless the file was damaged: keep what is sound
            }
            last_line = rec.line;
            if last_line > 1 && (last_line - 1).is_multiple_of(INDEX_EVERY) {
                index.push((last_line, size));
            }
            size += len;
        }
        let writer = OpenOptions::new().write(true).open(&path)?;
        writer.set_len(size)?;
        let mut writer = writer;
        writer.seek(SeekFrom::Start(size))?;
        Ok(Spool {
            results: crate::results::ResultLog::open(dir)?,
            dir: dir.to_path_buf(),
            format,
            inner: Mutex::new(Inner {
                writer,
                size,
                last_line,
                acked,
                acked_mark,
                index,
                meta,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic while appending; the data on disk is still sound.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save_meta(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.lock().meta).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join("job.json"), &bytes)
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The job's task results.
    pub fn results(&self) -> &crate::results::ResultLog {
        &self.results
    }

    pub fn meta(&self) -> Meta {
        self.lock().meta.clone()
    }

    pub fn last_line(&self) -> u32 {
        self.lock().last_line
    }

    pub fn acked(&self) -> u32 {
        self.lock().acked
    }

    pub fn set_pgid(&self, pgid: Option<i32>) -> std::io::Result<()> {
        self.lock().meta.pgid = pgid;
        self.save_meta()
    }

    pub fn set_outcome(&self, outcome: Outcome) -> std::io::Result<()> {
        {
            let mut inner = self.lock();
            inner.meta.outcome = Some(outcome);
            inner.meta.pgid = None;
        }
        self.save_meta()
    }

    /// Appends lines numbered from `last_line() + 1`; returns the new last line. The bytes reach
    /// the kernel before this returns, so they survive the agent being killed.
    pub fn append(&self, lines: &[LogLine]) -> std::io::Result<u32> {
        let mut inner = self.lock();
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.text.len() + 16).sum());
        let mut line = inner.last_line;
        let mut offset = inner.size;
        let mut new_index = Vec::new();
        for l in lines {
            line += 1;
            let rec = Record {
                line,
                at_ms: l.at_ms,
                level: l.level,
                text: l.text.clone(),
            };
            let frame = encode_record(&rec, self.format)?;
            if line > 1 && (line - 1).is_multiple_of(INDEX_EVERY) {
                new_index.push((line, offset));
            }
            offset += frame.len() as u64;
            buf.extend_from_slice(&frame);
        }
        if let Err(e) = inner.writer.write_all(&buf) {
            // Part of the batch may be on disk: cut the file back to the last whole record, so
            // every line written before stays readable and deliverable.
            let size = inner.size;
            let _ = inner.writer.set_len(size);
            let _ = inner.writer.seek(SeekFrom::Start(size));
            return Err(e);
        }
        inner.size = offset;
        inner.last_line = line;
        inner.index.extend(new_index);
        Ok(line)
    }

    /// Where line `line` starts (it must be ≤ last_line + 1).
    pub fn offset_of(&self, line: u32) -> std::io::Result<u64> {
        let (start_line, start_offset, size) = {
            let inner = self.lock();
            let pos = inner
                .index
                .partition_point(|(l, _)| *l <= line)
                .saturating_sub(1);
            let (l, o) = inner.index[pos];
            (l, o, inner.size)
        };
        let mut reader = BufReader::new(File::open(self.dir.join("lines"))?);
        reader.seek(SeekFrom::Start(start_offset))?;
        let mut offset = start_offset;
        let mut current = start_line;
        while current < line && offset < size {
            match read_record(&mut reader, self.format)? {
                Some((_, len)) => {
                    offset += len;
                    current += 1;
                }
                None => break,
            }
        }
        Ok(offset)
    }

    /// Reads up to `max_lines` / about `max_bytes` of lines starting at line `first` found at
    /// `offset`. Only complete records are read.
    pub fn read(
        &self,
        first: u32,
        offset: u64,
        max_lines: usize,
        max_bytes: usize,
    ) -> std::io::Result<Chunk> {
        let size = self.lock().size;
        let mut chunk = Chunk {
            first_line: first,
            lines: Vec::new(),
            next_offset: offset,
        };
        if offset >= size {
            return Ok(chunk);
        }
        let mut reader = BufReader::new(File::open(self.dir.join("lines"))?);
        reader.seek(SeekFrom::Start(offset))?;
        let mut bytes = 0;
        while chunk.lines.len() < max_lines && bytes < max_bytes && chunk.next_offset < size {
            let Some((rec, len)) = read_record(&mut reader, self.format)? else {
                break;
            };
            if rec.line != first + chunk.lines.len() as u32 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "spool out of sequence",
                ));
            }
            bytes += rec.text.len();
            chunk.next_offset += len;
            chunk.lines.push(LogLine {
                at_ms: rec.at_ms,
                level: rec.level,
                text: rec.text,
            });
        }
        Ok(chunk)
    }

    /// The controller stored everything through `line`.
    pub fn ack(&self, line: u32) -> std::io::Result<()> {
        let mut inner = self.lock();
        if line <= inner.acked {
            return Ok(());
        }
        inner.acked = line.min(inner.last_line);
        inner.acked_mark.set(inner.acked)
    }

    /// The controller recorded the outcome: nothing is left to keep.
    pub fn remove(&self) -> std::io::Result<()> {
        std::fs::remove_dir_all(&self.dir)
    }
}

/// The record format new spools are written in.
const FORMAT: u8 = 2;

/// A record as written: `[u32 length][u32 CRC-32 of the body, format 2][postcard body]`.
fn encode_record(rec: &Record, format: u8) -> std::io::Result<Vec<u8>> {
    if format < 2 {
        return codec::encode(rec, MAX_RECORD).map_err(std::io::Error::other);
    }
    crate::record::encode_checked(rec, MAX_RECORD)
}

/// Reads one record of a spool written in `format`.
fn read_record(r: &mut impl Read, format: u8) -> std::io::Result<Option<(Record, u64)>> {
    crate::record::read_checked(r, MAX_RECORD, format >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Whatever a damaged disk left in a spool's file, reopening it never panics and keeps
        /// a run of whole lines numbered from 1.
        #[test]
        fn any_bytes_in_a_spool_reopen_safely(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let root = tempfile::tempdir().unwrap();
            let job = Uuid::new_v4();
            let meta = Meta { job, dispatch_id: "d".into(), playbook_name: "p".into(), pgid: None, outcome: None };
            let spool = Spool::create(root.path(), meta).unwrap();
            spool.append(&[LogLine { at_ms: 1, level: Level::Info, text: "sound".into() }]).unwrap();
            drop(spool);
            let path = root.path().join(job.to_string()).join("lines");
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(&bytes).unwrap();
            drop(f);
            let reopened = Spool::open(&root.path().join(job.to_string())).unwrap();
            let last = reopened.last_line();
            proptest::prop_assert!(last >= 1);
            let chunk = reopened.read(1, 0, 10_000, 1 << 24).unwrap();
            proptest::prop_assert_eq!(chunk.lines.len() as u32, last);
            proptest::prop_assert_eq!(chunk.lines[0].text.as_str(), "sound");
        }
    }

    /// A new spool in a temporary root, and its job.
    fn fresh_spool() -> (tempfile::TempDir, Uuid, Spool) {
        let root = tempfile::tempdir().unwrap();
        let job = Uuid::new_v4();
        let meta = Meta {
            job,
            dispatch_id: "d".into(),
            playbook_name: "p".into(),
            pgid: None,
            outcome: None,
        };
        let spool = Spool::create(root.path(), meta).unwrap();
        (root, job, spool)
    }

    fn line(text: &str) -> LogLine {
        LogLine {
            at_ms: 1,
            level: Level::Info,
            text: text.into(),
        }
    }

    /// A byte flipped inside a record's text still decodes, but fails its checksum: the spool
    /// keeps the lines before it, never a wrong line.
    #[test]
    fn a_damaged_record_is_caught_by_its_checksum() {
        let (root, job, spool) = fresh_spool();
        spool
            .append(&[line("first line"), line("second line"), line("third line")])
            .unwrap();
        drop(spool);
        let path = root.path().join(job.to_string()).join("lines");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(6).position(|w| w == b"second").unwrap();
        bytes[at] = b'S';
        std::fs::write(&path, bytes).unwrap();
        let reopened = Spool::open(&root.path().join(job.to_string())).unwrap();
        assert_eq!(reopened.last_line(), 1);
        let chunk = reopened.read(1, 0, 10, 1 << 20).unwrap();
        assert_eq!(chunk.lines.len(), 1);
        assert_eq!(chunk.lines[0].text, "first line");
    }

    /// A full disk (writes to /dev/full fail with ENOSPC): the append fails, and the spool
    /// still holds, and reads back, every line written before.
    #[test]
    fn a_failed_write_keeps_what_was_written() {
        let (root, job, spool) = fresh_spool();
        assert_eq!(spool.append(&[line("one"), line("two")]).unwrap(), 2);
        // The disk fills up: the file now points at a device that refuses every write.
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        spool.lock().writer = full;
        assert!(spool.append(&[line("three")]).is_err());
        assert_eq!(spool.last_line(), 2);
        let chunk = spool.read(1, 0, 10, 1 << 20).unwrap();
        let texts: Vec<&str> = chunk.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["one", "two"]);
        // And after a restart.
        let reopened = Spool::open(&root.path().join(job.to_string())).unwrap();
        assert_eq!(reopened.last_line(), 2);
    }

    fn meta() -> Meta {
        Meta {
            job: Uuid::new_v4(),
            dispatch_id: "d".into(),
            playbook_name: "p".into(),
            pgid: None,
            outcome: None,
        }
    }

    fn lines(n: usize, tag: &str) -> Vec<LogLine> {
        (0..n)
            .map(|i| LogLine {
                at_ms: i as i64,
                level: Level::Info,
                text: format!("{tag} {i}"),
            })
            .collect()
    }

    #[test]
    fn append_read_ack_and_reopen() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::create(root.path(), meta()).unwrap();
        assert_eq!(spool.append(&lines(3000, "a")).unwrap(), 3000);
        assert_eq!(spool.append(&lines(10, "b")).unwrap(), 3010);
        let off = spool.offset_of(2500).unwrap();
        let chunk = spool.read(2500, off, 5, usize::MAX).unwrap();
        assert_eq!(chunk.lines.len(), 5);
        assert_eq!(chunk.lines[0].text, "a 2499");
        let next = spool.read(2505, chunk.next_offset, 1, usize::MAX).unwrap();
        assert_eq!(next.lines[0].text, "a 2504");
        spool.ack(2000).unwrap();
        let dir = root.path().join(spool.meta().job.to_string());
        drop(spool);

        // A crash mid-record leaves a torn tail: reopening drops it.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("lines"))
            .unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        drop(f);
        let spool = Spool::open(&dir).unwrap();
        assert_eq!(spool.last_line(), 3010);
        assert_eq!(spool.acked(), 2000);
        let off = spool.offset_of(3001).unwrap();
        let chunk = spool.read(3001, off, 100, usize::MAX).unwrap();
        assert_eq!(
            chunk
                .lines
                .iter()
                .map(|l| l.text.as_str())
                .collect::<Vec<_>>()[..2],
            ["b 0", "b 1"]
        );
        assert_eq!(spool.append(&lines(1, "c")).unwrap(), 3011);
        spool
            .set_outcome(Outcome {
                status: FinalStatus::Success,
                exit_code: Some(0),
                error: None,
                last_line: 3011,
                last_result: 0,
                recap: None,
            })
            .unwrap();
        drop(spool);
        let spool = Spool::open(&dir).unwrap();
        assert_eq!(spool.meta().outcome.unwrap().last_line, 3011);
        spool.remove().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn byte_limit_bounds_a_read() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::create(root.path(), meta()).unwrap();
        let big: Vec<LogLine> = (0..100)
            .map(|_| LogLine {
                at_ms: 0,
                level: Level::Info,
                text: "x".repeat(1000),
            })
            .collect();
        spool.append(&big).unwrap();
        let chunk = spool.read(1, 0, 500, 10_000).unwrap();
        assert_eq!(chunk.lines.len(), 10);
    }
}
