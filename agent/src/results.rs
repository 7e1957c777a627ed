//! A job's task results kept on disk beside its lines (`spool/<job>/results`, acknowledged
//! through `spool/<job>/results_acked`) until the controller has stored them. Records are framed
//! like the spool's lines (a u32 length, a CRC-32 of the body, a postcard body); a damaged or
//! torn record ends what is read back, so everything before it is sound.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use outpost_protocol::results::TaskResult;

use crate::watermark::Watermark;

/// The most results a job keeps (a 200-task play on one host has 200); past it they are
/// dropped and counted, so a runaway loop cannot fill the disk.
pub const MAX_RESULTS_PER_JOB: u32 = 100_000;
/// A record is one result, whose fields are capped by the protocol.
const MAX_RECORD: usize = 16 * 1024;

struct Inner {
    writer: File,
    /// offsets[i]: where result i + 1 starts; the last entry is the end of the file.
    offsets: Vec<u64>,
    acked: u32,
    /// `acked`, kept in `results_acked`.
    acked_mark: Watermark,
    dropped: u64,
}

pub struct ResultLog {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

impl ResultLog {
    /// Opens the log in a spool's directory, creating it empty if it is not there (a spool
    /// written before results existed). A torn or damaged tail is cut off.
    pub fn open(dir: &Path) -> std::io::Result<ResultLog> {
        let path = dir.join("results");
        let mut offsets = vec![0u64];
        if let Ok(f) = File::open(&path) {
            let mut reader = BufReader::new(f);
            while let Ok(Some((_, len))) = read_record(&mut reader) {
                let end = offsets.last().copied().unwrap_or(0) + len;
                offsets.push(end);
            }
        }
        let end = offsets.last().copied().unwrap_or(0);
        let mut writer = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)?;
        writer.set_len(end)?;
        writer.seek(SeekFrom::Start(end))?;
        let (acked_mark, acked) = Watermark::open(&dir.join("results_acked"));
        Ok(ResultLog {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                writer,
                offsets,
                acked,
                acked_mark,
                dropped: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number of the last result kept.
    pub fn last(&self) -> u32 {
        (self.lock().offsets.len() - 1) as u32
    }

    pub fn acked(&self) -> u32 {
        self.lock().acked
    }

    /// Results dropped because the job had too many.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Appends results numbered from `last() + 1`; returns the new last. The bytes reach the
    /// kernel before this returns.
    pub fn append(&self, results: &[TaskResult]) -> std::io::Result<u32> {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        let mut end = inner.offsets.last().copied().unwrap_or(0);
        let room = MAX_RESULTS_PER_JOB.saturating_sub((inner.offsets.len() - 1) as u32) as usize;
        let keep = results.len().min(room);
        inner.dropped += (results.len() - keep) as u64;
        for r in &results[..keep] {
            let frame = encode_record(r)?;
            end += frame.len() as u64;
            ends.push(end);
            buf.extend_from_slice(&frame);
        }
        if let Err(e) = inner.writer.write_all(&buf) {
            let size = inner.offsets.last().copied().unwrap_or(0);
            let _ = inner.writer.set_len(size);
            let _ = inner.writer.seek(SeekFrom::Start(size));
            return Err(e);
        }
        inner.offsets.extend(ends);
        Ok((inner.offsets.len() - 1) as u32)
    }

    /// Reads up to `max` results from result `first` on.
    pub fn read(&self, first: u32, max: usize) -> std::io::Result<Vec<TaskResult>> {
        let (start, count) = {
            let inner = self.lock();
            let kept = inner.offsets.len() - 1;
            let from = (first.max(1) - 1) as usize;
            if from >= kept {
                return Ok(Vec::new());
            }
            (inner.offsets[from], max.min(kept - from))
        };
        let mut reader = BufReader::new(File::open(self.dir.join("results"))?);
        reader.seek(SeekFrom::Start(start))?;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            match read_record(&mut reader)? {
                Some((r, _)) => out.push(r),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "results log cut short",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The controller stored every result through `seq`.
    pub fn ack(&self, seq: u32) -> std::io::Result<()> {
        let mut inner = self.lock();
        if seq <= inner.acked {
            return Ok(());
        }
        inner.acked = seq.min((inner.offsets.len() - 1) as u32);
        inner.acked_mark.set(inner.acked)
    }
}

fn encode_record(r: &TaskResult) -> std::io::Result<Vec<u8>> {
    crate::record::encode_checked(r, MAX_RECORD)
}

/// One record; `None` at the end or at the first record that is torn or damaged.
fn read_record(r: &mut impl Read) -> std::io::Result<Option<(TaskResult, u64)>> {
    crate::record::read_checked(r, MAX_RECORD, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::results::TaskStatus;

    fn result(i: u32) -> TaskResult {
        TaskResult {
            host: "web1".into(),
            play: "p".into(),
            task: format!("task {i}"),
            action: "command".into(),
            status: TaskStatus::Ok,
            started_ms: i as i64,
            duration_ms: i,
            message: None,
        }
    }

    #[test]
    fn results_append_read_ack_and_survive_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = ResultLog::open(dir.path()).unwrap();
        assert_eq!(log.last(), 0);
        assert_eq!(log.append(&[result(1), result(2)]).unwrap(), 2);
        assert_eq!(log.append(&[result(3)]).unwrap(), 3);
        let read = log.read(2, 10).unwrap();
        assert_eq!(
            read.iter().map(|r| r.task.as_str()).collect::<Vec<_>>(),
            ["task 2", "task 3"]
        );
        log.ack(2).unwrap();
        drop(log);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("results"))
            .unwrap();
        f.write_all(&[0, 0, 0, 40, 9, 9]).unwrap();
        drop(f);
        let log = ResultLog::open(dir.path()).unwrap();
        assert_eq!((log.last(), log.acked()), (3, 2));
        assert_eq!(log.append(&[result(4)]).unwrap(), 4);
        assert_eq!(log.read(4, 1).unwrap()[0].task, "task 4");
        assert!(log.read(5, 1).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_record_ends_what_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = ResultLog::open(dir.path()).unwrap();
        log.append(&[result(1), result(2), result(3)]).unwrap();
        drop(log);
        let path = dir.path().join("results");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(6).position(|w| w == b"task 2").unwrap();
        bytes[at] = b'T';
        std::fs::write(&path, bytes).unwrap();
        let log = ResultLog::open(dir.path()).unwrap();
        assert_eq!(log.last(), 1);
    }
}
