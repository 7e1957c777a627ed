//! The archive object's layout, pure (no I/O): records as JSON lines, compressed in zstd frames
//! of at most [`FRAME_RECORDS`] records, followed by an index of the frames and a summary (record
//! count and SHA-256 of the uncompressed stream), so that a page is read by fetching one or two
//! frames instead of the whole object.
//!
//! ```text
//! "OPLOG001"                                   8 bytes, the header
//! frame 1 … frame N                            each one zstd frame of whole lines ("…\n")
//! footer: "OPXI" version:u8 records:u64 raw_bytes:u64 sha256:[32] frames:u32
//!         N × (first_key:i64 last_key:i64 records:u32 offset:u64 len:u32 raw_len:u32)
//! footer_len:u32 "OPLOGEND"                     12 bytes, the trailer
//! ```
//! Integers are little-endian. A record's key is its line number (job logs) or its id (audit
//! records); keys rise strictly through the object. Every size read from an object is checked
//! against the object's own length and the limits below before anything is allocated, so a
//! truncated or corrupted object is refused with an error rather than a panic or a huge buffer.

use sha2::{Digest, Sha256};
use thiserror::Error;

pub const HEADER: &[u8; 8] = b"OPLOG001";
const FOOTER_MAGIC: &[u8; 4] = b"OPXI";
const TRAILER_MAGIC: &[u8; 8] = b"OPLOGEND";
const VERSION: u8 = 1;
/// `footer_len:u32` and the trailer magic.
pub const TRAILER_LEN: usize = 12;
/// Magic, version, records, raw bytes, SHA-256, frame count.
const FOOTER_FIXED: usize = 4 + 1 + 8 + 8 + 32 + 4;
const ENTRY_LEN: usize = 8 + 8 + 4 + 8 + 4 + 4;
/// Records per frame at most: a page of 1,000 lines decompresses one frame, two at a boundary.
pub const FRAME_RECORDS: usize = 1_000;
/// A frame is closed early past this many uncompressed bytes, so long lines keep frames small.
pub const FRAME_RAW_TARGET: usize = 4 << 20;
/// The largest uncompressed frame a reader accepts (one record alone may pass the target).
pub const MAX_FRAME_RAW: usize = 32 << 20;
/// The largest index a reader accepts: some 460,000 frames, far beyond any job's log.
pub const MAX_FOOTER: usize = 16 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not an Outpost archive: {0}")]
    NotArchive(&'static str),
    #[error("archive is truncated or corrupted: {0}")]
    Corrupt(String),
    #[error("archive frame {frame} does not decompress: {message}")]
    Frame { frame: usize, message: String },
    #[error("record key {key} does not follow {previous}: keys must rise")]
    KeyOrder { key: i64, previous: i64 },
    #[error("a record must be one line: record {key} holds a newline")]
    Newline { key: i64 },
    #[error("record {key} is {len} bytes, more than the {max}-byte frame limit")]
    TooLarge { key: i64, len: usize, max: usize },
    #[error("archive holds {found} records with SHA-256 {found_sha}, expected {expected} with {expected_sha}")]
    Mismatch {
        found: u64,
        found_sha: String,
        expected: u64,
        expected_sha: String,
    },
}

/// One frame in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    pub first_key: i64,
    pub last_key: i64,
    pub records: u32,
    /// Byte offset of the frame in the object.
    pub offset: u64,
    pub len: u32,
    pub raw_len: u32,
}

/// What the footer says of the whole object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub records: u64,
    pub raw_bytes: u64,
    pub sha256: [u8; 32],
    pub frames: Vec<FrameEntry>,
}

impl Index {
    /// The frames that may hold records with a key above `after`, in order.
    pub fn frames_after(&self, after: i64) -> impl Iterator<Item = (usize, &FrameEntry)> {
        let start = self.frames.partition_point(|f| f.last_key <= after);
        self.frames.iter().enumerate().skip(start)
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Builds an archive object from records given in key order.
pub struct Writer {
    out: Vec<u8>,
    frames: Vec<FrameEntry>,
    pending: Vec<u8>,
    pending_first: Option<i64>,
    pending_last: i64,
    pending_records: u32,
    last_key: Option<i64>,
    records: u64,
    raw_bytes: u64,
    hash: Sha256,
    level: i32,
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            out: HEADER.to_vec(),
            frames: Vec::new(),
            pending: Vec::new(),
            pending_first: None,
            pending_last: 0,
            pending_records: 0,
            last_key: None,
            records: 0,
            raw_bytes: 0,
            hash: Sha256::new(),
            // Level 3 is zstd's default: fast, and log text compresses some tenfold.
            level: 3,
        }
    }

    /// Adds one record: `line` is its text without the newline.
    pub fn push(&mut self, key: i64, line: &[u8]) -> Result<(), FormatError> {
        if let Some(previous) = self.last_key.filter(|p| key <= *p) {
            return Err(FormatError::KeyOrder { key, previous });
        }
        if line.contains(&b'\n') {
            return Err(FormatError::Newline { key });
        }
        if line.len() + 1 > MAX_FRAME_RAW {
            return Err(FormatError::TooLarge {
                key,
                len: line.len(),
                max: MAX_FRAME_RAW,
            });
        }
        if self.pending_records as usize >= FRAME_RECORDS
            || (self.pending_records > 0 && self.pending.len() + line.len() + 1 > FRAME_RAW_TARGET)
        {
            self.flush()?;
        }
        self.pending.extend_from_slice(line);
        self.pending.push(b'\n');
        self.hash.update(line);
        self.hash.update(b"\n");
        self.pending_first.get_or_insert(key);
        self.pending_last = key;
        self.pending_records += 1;
        self.last_key = Some(key);
        self.records += 1;
        self.raw_bytes += line.len() as u64 + 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), FormatError> {
        let Some(first_key) = self.pending_first.take() else {
            return Ok(());
        };
        let compressed =
            zstd::bulk::compress(&self.pending, self.level).map_err(|e| FormatError::Frame {
                frame: self.frames.len(),
                message: e.to_string(),
            })?;
        self.frames.push(FrameEntry {
            first_key,
            last_key: self.pending_last,
            records: self.pending_records,
            offset: self.out.len() as u64,
            len: compressed.len() as u32,
            raw_len: self.pending.len() as u32,
        });
        self.out.extend_from_slice(&compressed);
        self.pending.clear();
        self.pending_records = 0;
        Ok(())
    }

    /// The object's bytes and its index.
    pub fn finish(mut self) -> Result<(Vec<u8>, Index), FormatError> {
        self.flush()?;
        let index = Index {
            records: self.records,
            raw_bytes: self.raw_bytes,
            sha256: self.hash.finalize().into(),
            frames: self.frames,
        };
        let mut footer = Vec::with_capacity(FOOTER_FIXED + index.frames.len() * ENTRY_LEN);
        footer.extend_from_slice(FOOTER_MAGIC);
        footer.push(VERSION);
        footer.extend_from_slice(&index.records.to_le_bytes());
        footer.extend_from_slice(&index.raw_bytes.to_le_bytes());
        footer.extend_from_slice(&index.sha256);
        footer.extend_from_slice(&(index.frames.len() as u32).to_le_bytes());
        for f in &index.frames {
            footer.extend_from_slice(&f.first_key.to_le_bytes());
            footer.extend_from_slice(&f.last_key.to_le_bytes());
            footer.extend_from_slice(&f.records.to_le_bytes());
            footer.extend_from_slice(&f.offset.to_le_bytes());
            footer.extend_from_slice(&f.len.to_le_bytes());
            footer.extend_from_slice(&f.raw_len.to_le_bytes());
        }
        let mut out = self.out;
        out.extend_from_slice(&footer);
        out.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        out.extend_from_slice(TRAILER_MAGIC);
        Ok((out, index))
    }
}

/// The footer's length, from the object's last [`TRAILER_LEN`] bytes and its total size.
pub fn footer_len(trailer: &[u8], object_len: u64) -> Result<usize, FormatError> {
    if trailer.len() != TRAILER_LEN || object_len < (HEADER.len() + TRAILER_LEN) as u64 {
        return Err(FormatError::NotArchive("too short"));
    }
    if &trailer[4..] != TRAILER_MAGIC {
        return Err(FormatError::NotArchive("no end marker (truncated?)"));
    }
    let len = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize;
    let room = object_len - (HEADER.len() + TRAILER_LEN) as u64;
    if !(FOOTER_FIXED..=MAX_FOOTER).contains(&len) || len as u64 > room {
        return Err(FormatError::Corrupt(format!(
            "index of {len} bytes in an object of {object_len}"
        )));
    }
    Ok(len)
}

/// Little-endian reads from a slice already checked to be long enough.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().unwrap_or([0; N])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
}

/// Parses the footer (the `footer_len` bytes before the trailer) of an object of `object_len`
/// bytes, checking that the frames tile the object from the header to the footer.
pub fn parse_footer(footer: &[u8], object_len: u64) -> Result<Index, FormatError> {
    let corrupt = |m: String| FormatError::Corrupt(m);
    if footer.len() < FOOTER_FIXED || &footer[..4] != FOOTER_MAGIC {
        return Err(FormatError::NotArchive("no index marker"));
    }
    if footer[4] != VERSION {
        return Err(corrupt(format!("unknown version {}", footer[4])));
    }
    let mut c = Cursor(&footer[5..]);
    let records = c.u64();
    let raw_bytes = c.u64();
    let sha256: [u8; 32] = c.take();
    let count = c.u32() as usize;
    if footer.len() != FOOTER_FIXED + count.saturating_mul(ENTRY_LEN) {
        return Err(corrupt(format!(
            "index of {} bytes cannot list {count} frames",
            footer.len()
        )));
    }
    let frames_end = object_len
        .checked_sub((TRAILER_LEN + footer.len()) as u64)
        .ok_or_else(|| corrupt("index longer than the object".into()))?;
    let mut frames = Vec::with_capacity(count);
    let (mut expect_offset, mut sum_records, mut sum_raw) = (HEADER.len() as u64, 0u64, 0u64);
    let mut previous: Option<i64> = None;
    for i in 0..count {
        let f = FrameEntry {
            first_key: c.i64(),
            last_key: c.i64(),
            records: c.u32(),
            offset: c.u64(),
            len: c.u32(),
            raw_len: c.u32(),
        };
        if f.offset != expect_offset
            || f.records == 0
            || f.first_key > f.last_key
            || previous.is_some_and(|p| f.first_key <= p)
            || f.raw_len as usize > MAX_FRAME_RAW
        {
            return Err(corrupt(format!("frame {i} of the index is inconsistent")));
        }
        expect_offset += u64::from(f.len);
        sum_records += u64::from(f.records);
        sum_raw += u64::from(f.raw_len);
        previous = Some(f.last_key);
        frames.push(f);
    }
    if expect_offset != frames_end || sum_records != records || sum_raw != raw_bytes {
        return Err(corrupt(
            "the frames do not add up to the index's totals".into(),
        ));
    }
    Ok(Index {
        records,
        raw_bytes,
        sha256,
        frames,
    })
}

/// Parses the index of a whole object held in memory.
pub fn parse(object: &[u8]) -> Result<Index, FormatError> {
    let n = object.len();
    if n < HEADER.len() + TRAILER_LEN || &object[..HEADER.len()] != HEADER {
        return Err(FormatError::NotArchive("no header"));
    }
    let len = footer_len(&object[n - TRAILER_LEN..], n as u64)?;
    parse_footer(&object[n - TRAILER_LEN - len..n - TRAILER_LEN], n as u64)
}

/// Decompresses frame number `i` (its compressed bytes) into its lines, without newlines.
pub fn decode_frame(
    i: usize,
    entry: &FrameEntry,
    bytes: &[u8],
) -> Result<Vec<String>, FormatError> {
    let err = |message: String| FormatError::Frame { frame: i, message };
    if bytes.len() != entry.len as usize {
        return Err(err(format!(
            "{} bytes instead of {}",
            bytes.len(),
            entry.len
        )));
    }
    // The index's raw length bounds the output (checked against MAX_FRAME_RAW when parsed):
    // a frame that would inflate past it is refused, not allocated.
    let raw =
        zstd::bulk::decompress(bytes, entry.raw_len as usize).map_err(|e| err(e.to_string()))?;
    if raw.len() != entry.raw_len as usize || raw.last() != Some(&b'\n') {
        return Err(err("uncompressed length differs from the index".into()));
    }
    let text = String::from_utf8(raw).map_err(|_| err("not UTF-8".into()))?;
    let lines: Vec<String> = text[..text.len() - 1]
        .split('\n')
        .map(str::to_owned)
        .collect();
    if lines.len() != entry.records as usize {
        return Err(err(format!(
            "{} records instead of {}",
            lines.len(),
            entry.records
        )));
    }
    Ok(lines)
}

/// Reads every frame of `object` and checks the count and SHA-256 of its records against the
/// index and against what the writer expected; returns the index.
pub fn verify(
    object: &[u8],
    expected_records: u64,
    expected_sha: &[u8; 32],
) -> Result<Index, FormatError> {
    let index = parse(object)?;
    let mut hash = Sha256::new();
    let mut records = 0u64;
    for (i, f) in index.frames.iter().enumerate() {
        let start = f.offset as usize;
        let bytes = &object[start..start + f.len as usize];
        for line in decode_frame(i, f, bytes)? {
            hash.update(line.as_bytes());
            hash.update(b"\n");
            records += 1;
        }
    }
    let sha: [u8; 32] = hash.finalize().into();
    if records != expected_records
        || sha != *expected_sha
        || sha != index.sha256
        || records != index.records
    {
        return Err(FormatError::Mismatch {
            found: records,
            found_sha: hex::encode(sha),
            expected: expected_records,
            expected_sha: hex::encode(expected_sha),
        });
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(n: i64) -> (Vec<u8>, Index) {
        let mut w = Writer::new();
        for k in 1..=n {
            w.push(k, format!("{{\"n\":{k},\"c\":\"line {k}\"}}").as_bytes())
                .unwrap();
        }
        w.finish().unwrap()
    }

    fn all_lines(obj: &[u8], index: &Index) -> Vec<String> {
        let mut out = Vec::new();
        for (i, f) in index.frames.iter().enumerate() {
            let b = &obj[f.offset as usize..(f.offset + u64::from(f.len)) as usize];
            out.extend(decode_frame(i, f, b).unwrap());
        }
        out
    }

    #[test]
    fn records_round_trip_in_frames_of_a_thousand() {
        let (obj, index) = object(2_500);
        assert_eq!(parse(&obj).unwrap(), index);
        assert_eq!(index.records, 2_500);
        let sizes: Vec<u32> = index.frames.iter().map(|f| f.records).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let lines = all_lines(&obj, &index);
        assert_eq!(lines.len(), 2_500);
        assert_eq!(lines[1234], "{\"n\":1235,\"c\":\"line 1235\"}");
        verify(&obj, 2_500, &index.sha256).unwrap();
    }

    #[test]
    fn a_page_starts_at_the_frame_that_holds_the_next_key() {
        let (_, index) = object(2_500);
        let firsts: Vec<i64> = index.frames_after(0).map(|(_, f)| f.first_key).collect();
        assert_eq!(firsts, [1, 1001, 2001]);
        assert_eq!(index.frames_after(1000).next().unwrap().0, 1);
        assert_eq!(index.frames_after(1001).next().unwrap().0, 1);
        assert!(index.frames_after(2500).next().is_none());
    }

    #[test]
    fn an_empty_log_is_an_archive_of_nothing() {
        let (obj, index) = Writer::new().finish().unwrap();
        assert_eq!(index.records, 0);
        assert!(index.frames.is_empty());
        verify(&obj, 0, &index.sha256).unwrap();
    }

    #[test]
    fn long_records_close_frames_early_and_oversized_ones_are_refused() {
        let mut w = Writer::new();
        let big = "x".repeat(FRAME_RAW_TARGET / 2);
        for k in 1..=5 {
            w.push(k, big.as_bytes()).unwrap();
        }
        let (obj, index) = w.finish().unwrap();
        assert!(index.frames.len() >= 3, "{:?}", index.frames);
        assert_eq!(all_lines(&obj, &index).len(), 5);
        let mut w = Writer::new();
        let huge = vec![b'y'; MAX_FRAME_RAW];
        assert!(matches!(
            w.push(1, &huge),
            Err(FormatError::TooLarge { .. })
        ));
    }

    #[test]
    fn keys_must_rise_and_records_are_single_lines() {
        let mut w = Writer::new();
        w.push(5, b"a").unwrap();
        assert_eq!(
            w.push(5, b"b"),
            Err(FormatError::KeyOrder {
                key: 5,
                previous: 5
            })
        );
        assert_eq!(w.push(6, b"a\nb"), Err(FormatError::Newline { key: 6 }));
    }

    #[test]
    fn truncated_objects_are_refused() {
        let (obj, _) = object(1_500);
        for cut in [0, 5, 12, obj.len() / 2, obj.len() - 1] {
            let e = parse(&obj[..cut]).unwrap_err();
            assert!(
                matches!(e, FormatError::NotArchive(_) | FormatError::Corrupt(_)),
                "cut {cut}: {e}"
            );
        }
        assert!(matches!(
            parse(b"hello world, not an archive"),
            Err(FormatError::NotArchive(_))
        ));
    }

    #[test]
    fn a_flipped_byte_is_caught_by_verify() {
        let (obj, index) = object(1_500);
        // In the first frame's compressed data.
        let mut bad = obj.clone();
        bad[HEADER.len() + 20] ^= 0x55;
        assert!(verify(&bad, 1_500, &index.sha256).is_err());
        // A lying index: the raw length of frame 0 made enormous is refused before allocating.
        let mut bad = obj.clone();
        let n = bad.len();
        let footer_start = n - TRAILER_LEN - footer_len(&obj[n - TRAILER_LEN..], n as u64).unwrap();
        let raw_len_at = footer_start + FOOTER_FIXED + 8 + 8 + 4 + 8 + 4;
        bad[raw_len_at..raw_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&bad), Err(FormatError::Corrupt(_))));
        // The right object but not the expected records.
        let e = verify(&obj, 1_499, &index.sha256).unwrap_err();
        assert!(
            matches!(e, FormatError::Mismatch { found: 1_500, .. }),
            "{e}"
        );
        let e = verify(&obj, 1_500, &[0; 32]).unwrap_err();
        assert!(e.to_string().contains("expected 1500"), "{e}");
    }

    #[test]
    fn a_frame_that_inflates_past_its_index_is_refused() {
        let (obj, index) = object(1_000);
        let mut f = index.frames[0];
        f.raw_len /= 2;
        let b = &obj[f.offset as usize..(f.offset + u64::from(f.len)) as usize];
        assert!(matches!(
            decode_frame(0, &f, b),
            Err(FormatError::Frame { .. })
        ));
    }
}
