//! The rules of a fetch stream, without any I/O. The agent's [`Fetch`] says which offset to ask
//! for (after a cut, the length of what it already holds), checks the controller's manifest
//! against the assignment before anything is written, verifies each chunk against the
//! manifest before it is kept (a bad one is asked for again, a few times), and calls the
//! revision complete only when the whole digest matches. The controller's side is a manifest
//! of the revision file ([`manifest_of`]) and its chunks; the async code on both sides only
//! moves bytes between these and the network.

use std::io::Read;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::message::{FetchDown, Manifest, StreamUp};

/// The size of every chunk but the last: a chunk is checked, written and resumed from as one.
pub const CHUNK_SIZE: u32 = 1024 * 1024;
/// The largest revision (a tar) either side handles. Above the tree's 1 GiB of content: a tar
/// adds a 512-byte header and padding per entry.
pub const MAX_REVISION_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// The largest frame on a fetch stream: a whole chunk with its framing.
pub const MAX_FETCH_FRAME: usize = CHUNK_SIZE as usize + 64 * 1024;
/// A chunk that fails its hash this many times in a row fails the fetch: the path to the
/// controller corrupts data, and asking on would only loop.
pub const MAX_REFUSALS: u32 = 4;

const CHUNK: u64 = CHUNK_SIZE as u64;

// A chunk frame fits the codec's hard limit, and the manifest of the largest revision (32 bytes
// a chunk) fits a fetch frame.
const _: () = assert!(MAX_FETCH_FRAME <= crate::codec::MAX_FRAME);
const _: () = assert!(MAX_REVISION_BYTES.div_ceil(CHUNK) * 32 + 64 < MAX_FETCH_FRAME as u64);

/// Whether `s` names a revision: 64 lower-case hex digits (so it is also a safe file name).
pub fn valid_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// How many chunks a revision of `size` bytes has.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK)
}

/// The SHA-256 of one chunk, as the manifest lists it.
pub fn chunk_hash(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Why a manifest could not be made of a revision file.
#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("the revision is larger than {MAX_REVISION_BYTES} bytes")]
    TooLarge,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The manifest of a revision read from `r`, one chunk in memory at a time, and the digest of
/// the whole (which the caller compares with the name it opened the file by).
pub fn manifest_of(mut r: impl Read) -> Result<(Manifest, String), ManifestError> {
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    loop {
        let n = read_full(&mut r, &mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > MAX_REVISION_BYTES {
            return Err(ManifestError::TooLarge);
        }
        whole.update(&buf[..n]);
        chunks.push(chunk_hash(&buf[..n]));
        if n < buf.len() {
            break;
        }
    }
    let manifest = Manifest {
        size,
        chunk_size: CHUNK_SIZE,
        chunks,
    };
    Ok((manifest, hex::encode(whole.finalize())))
}

/// Fills `buf` from `r` unless the end comes first; the number of bytes read.
pub fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The controller's check of a fetch request against the revision it has: the index of the
/// first chunk to send (the chunk count when nothing is left), or why the request is refused.
pub fn first_chunk(manifest: &Manifest, offset: u64) -> Result<u64, String> {
    // The end is a valid place to ask from: a part file that is whole needs only the manifest.
    if offset > manifest.size || (!offset.is_multiple_of(CHUNK) && offset != manifest.size) {
        return Err(format!(
            "offset {offset} is not a chunk boundary within the revision's {} bytes",
            manifest.size
        ));
    }
    Ok(offset.div_ceil(CHUNK))
}

/// The fetch cannot go on; the job that needed the revision fails with this.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FetchError {
    #[error("'{0}' is not a revision digest (64 lower-case hex digits)")]
    BadDigest(String),
    #[error("revision {digest} is {size} bytes, above the limit of {MAX_REVISION_BYTES}")]
    TooLarge { digest: String, size: u64 },
    #[error("the controller's manifest of revision {digest} says {got} bytes, the assignment {expected}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        got: u64,
    },
    #[error("the controller's manifest of revision {digest} does not describe {size} bytes in chunks of {CHUNK_SIZE}")]
    BadManifest { digest: String, size: u64 },
    #[error("the controller's manifest of revision {0} changed between two streams")]
    ManifestChanged(String),
    #[error("the controller broke the fetch stream's rules: {0}")]
    Violation(&'static str),
    #[error("chunk {index} of revision {digest} arrived where chunk {expected} was due")]
    OutOfOrder {
        digest: String,
        index: u32,
        expected: u64,
    },
    #[error("chunk {index} of revision {digest} failed its SHA-256 {times} times in a row; giving up (something between this agent and the controller corrupts data)")]
    Corrupted {
        digest: String,
        index: u64,
        times: u32,
    },
    #[error("the bytes received for revision {digest} hash to {got} {times} times in a row; refusing them")]
    DigestMismatch {
        digest: String,
        got: String,
        times: u32,
    },
    #[error("the controller cannot send revision {digest}: {reason}")]
    Refused { digest: String, reason: String },
    #[error("a chunk of the part file of revision {0} was handed over out of order")]
    Prefix(String),
}

/// What to do after a message of the fetch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep reading the stream; a chunk just checked is to be appended to the part file first.
    Continue,
    /// The part file holds the whole revision, its digest checked (a chunk just checked is to
    /// be appended first).
    Done,
    /// The chunk failed its hash and was not taken: end this stream and ask again from
    /// [`Fetch::offset`].
    Retry,
    /// What the part file holds is not this revision: empty it, end this stream and ask again
    /// from the start.
    StartOver,
}

/// The agent's side of fetching one revision, across as many streams as it takes.
#[derive(Debug, Clone)]
pub struct Fetch {
    digest: String,
    size: u64,
    /// Bytes checked (and handed to the part file) so far.
    offset: u64,
    /// The digest of bytes `0..offset`.
    whole: Sha256,
    /// Hashes of chunks that were in the part file before any manifest arrived: checked
    /// against the first one.
    prefix: Vec<[u8; 32]>,
    manifest: Option<Manifest>,
    /// A request went out; its answer starts with a manifest.
    awaiting_manifest: bool,
    /// Chunks that failed their hash in a row.
    refusals: u32,
    /// Times everything held was thrown away (it was not the revision).
    restarts: u32,
}

impl Fetch {
    /// A fetch of the revision `digest` of `size` bytes, as the assignment names it.
    pub fn new(digest: &str, size: u64) -> Result<Fetch, FetchError> {
        if !valid_digest(digest) {
            return Err(FetchError::BadDigest(digest.to_owned()));
        }
        if size > MAX_REVISION_BYTES {
            return Err(FetchError::TooLarge {
                digest: digest.to_owned(),
                size,
            });
        }
        Ok(Fetch {
            digest: digest.to_owned(),
            size,
            offset: 0,
            whole: Sha256::new(),
            prefix: Vec::new(),
            manifest: None,
            awaiting_manifest: false,
            refusals: 0,
            restarts: 0,
        })
    }

    /// How much of a part file `part_len` bytes long can be kept: whole chunks only (a cut
    /// can leave half a chunk written), or all of it when it is the revision's full size.
    pub fn resumable(&self, part_len: u64) -> u64 {
        if part_len == self.size {
            part_len
        } else {
            part_len.min(self.size) / CHUNK * CHUNK
        }
    }

    /// Hands over the next chunk already in the part file (within [`Fetch::resumable`]), before
    /// the first request: it is checked against the manifest when that arrives.
    pub fn prefix(&mut self, data: &[u8]) -> Result<(), FetchError> {
        let left = self.size - self.offset;
        if self.manifest.is_some() || self.awaiting_manifest || data.len() as u64 != CHUNK.min(left)
        {
            return Err(FetchError::Prefix(self.digest.clone()));
        }
        self.whole.update(data);
        self.prefix.push(chunk_hash(data));
        self.offset += data.len() as u64;
        Ok(())
    }

    /// The revision being fetched.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The number of bytes checked so far (where the next request starts).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Chunks that failed their hash in a row so far.
    pub fn refusals(&self) -> u32 {
        self.refusals
    }

    /// Times the bytes held were thrown away because they did not make the revision.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The first frame of a new fetch stream.
    pub fn request(&mut self) -> StreamUp {
        self.awaiting_manifest = true;
        StreamUp::Fetch {
            digest: self.digest.clone(),
            offset: self.offset,
        }
    }

    /// Applies one message of the stream opened with [`Fetch::request`].
    pub fn receive(&mut self, msg: &FetchDown) -> Result<Verdict, FetchError> {
        match msg {
            FetchDown::Manifest(m) => self.on_manifest(m),
            FetchDown::Chunk { index, data } => self.on_chunk(*index, data),
            FetchDown::Refused { reason } => Err(FetchError::Refused {
                digest: self.digest.clone(),
                reason: reason.clone(),
            }),
        }
    }

    fn on_manifest(&mut self, m: &Manifest) -> Result<Verdict, FetchError> {
        if !self.awaiting_manifest {
            return Err(FetchError::Violation("a second manifest on one stream"));
        }
        if m.size != self.size {
            return Err(FetchError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                got: m.size,
            });
        }
        if m.chunk_size != CHUNK_SIZE || m.chunks.len() as u64 != chunk_count(self.size) {
            return Err(FetchError::BadManifest {
                digest: self.digest.clone(),
                size: self.size,
            });
        }
        if self.manifest.as_ref().is_some_and(|old| old != m) {
            return Err(FetchError::ManifestChanged(self.digest.clone()));
        }
        self.awaiting_manifest = false;
        let prefix = std::mem::take(&mut self.prefix);
        if prefix
            .iter()
            .zip(&m.chunks)
            .any(|(have, want)| have != want)
        {
            // Left by an earlier attempt that was not this revision after all: none of it is
            // trusted (the running digest cannot be wound back to the bad chunk).
            self.manifest = Some(m.clone());
            return self.start_over();
        }
        self.manifest = Some(m.clone());
        if self.offset == self.size {
            return self.finish();
        }
        Ok(Verdict::Continue)
    }

    fn on_chunk(&mut self, index: u32, data: &[u8]) -> Result<Verdict, FetchError> {
        if self.awaiting_manifest {
            return Err(FetchError::Violation("a chunk before the manifest"));
        }
        let Some(manifest) = &self.manifest else {
            return Err(FetchError::Violation("a chunk on a stream never asked for"));
        };
        if self.offset >= self.size {
            return Err(FetchError::Violation("a chunk past the revision's end"));
        }
        let expected = self.offset / CHUNK;
        if u64::from(index) != expected {
            return Err(FetchError::OutOfOrder {
                digest: self.digest.clone(),
                index,
                expected,
            });
        }
        let want_len = CHUNK.min(self.size - self.offset);
        let good = data.len() as u64 == want_len
            && manifest
                .chunks
                .get(expected as usize)
                .is_some_and(|h| *h == chunk_hash(data));
        if !good {
            self.refusals += 1;
            if self.refusals >= MAX_REFUSALS {
                return Err(FetchError::Corrupted {
                    digest: self.digest.clone(),
                    index: expected,
                    times: self.refusals,
                });
            }
            return Ok(Verdict::Retry);
        }
        self.whole.update(data);
        self.offset += want_len;
        self.refusals = 0;
        if self.offset == self.size {
            return self.finish();
        }
        Ok(Verdict::Continue)
    }

    /// Every byte is in: the whole must hash to the digest the revision is named by.
    fn finish(&mut self) -> Result<Verdict, FetchError> {
        let got = hex::encode(self.whole.clone().finalize());
        if got == self.digest {
            return Ok(Verdict::Done);
        }
        // Every chunk matched a manifest that does not make the revision: the controller's
        // file is not what it is named (or the part was). Ask once more from the start.
        let v = self.start_over();
        match v {
            Err(FetchError::DigestMismatch { times, .. }) => Err(FetchError::DigestMismatch {
                digest: self.digest.clone(),
                got,
                times,
            }),
            other => other,
        }
    }

    fn start_over(&mut self) -> Result<Verdict, FetchError> {
        self.offset = 0;
        self.whole = Sha256::new();
        self.prefix.clear();
        // Not reset by good chunks: every chunk of a wrong file checks out against its
        // manifest.
        self.restarts += 1;
        if self.restarts >= MAX_REFUSALS {
            return Err(FetchError::DigestMismatch {
                digest: self.digest.clone(),
                got: String::new(),
                times: self.restarts,
            });
        }
        Ok(Verdict::StartOver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ from chunk to chunk (so a chunk in the wrong place is caught).
    fn revision(len: usize) -> (Vec<u8>, String) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 1000) as u8).collect();
        let digest = hex::encode(Sha256::digest(&data));
        (data, digest)
    }

    fn manifest(data: &[u8]) -> Manifest {
        manifest_of(data).unwrap().0
    }

    fn chunk(data: &[u8], index: usize) -> FetchDown {
        let start = index * CHUNK_SIZE as usize;
        let end = (start + CHUNK_SIZE as usize).min(data.len());
        FetchDown::Chunk {
            index: index as u32,
            data: data[start..end].to_vec(),
        }
    }

    /// Plays the controller for one stream from the fetch's request on, applying `corrupt` to
    /// each chunk; the part file the agent would have written, and the last verdict.
    fn stream(
        fetch: &mut Fetch,
        data: &[u8],
        part: &mut Vec<u8>,
        corrupt: impl Fn(usize, &mut Vec<u8>),
    ) -> Result<Verdict, FetchError> {
        let StreamUp::Fetch { offset, .. } = fetch.request() else {
            panic!("a fetch request")
        };
        let m = manifest(data);
        let first = first_chunk(&m, offset).unwrap() as usize;
        let v = fetch.receive(&FetchDown::Manifest(m.clone()))?;
        if v != Verdict::Continue {
            return Ok(v);
        }
        for i in first..m.chunks.len() {
            let FetchDown::Chunk { index, mut data } = chunk(data, i) else {
                unreachable!()
            };
            corrupt(i, &mut data);
            let msg = FetchDown::Chunk {
                index,
                data: data.clone(),
            };
            match fetch.receive(&msg)? {
                Verdict::Continue => part.extend_from_slice(&data),
                Verdict::Done => {
                    part.extend_from_slice(&data);
                    return Ok(Verdict::Done);
                }
                other => return Ok(other),
            }
        }
        Ok(Verdict::Continue)
    }

    #[test]
    fn digests_are_64_lower_hex_digits() {
        assert!(valid_digest(&"ab".repeat(32)));
        for bad in [
            "AB".repeat(32),
            "ab".repeat(31),
            "../".repeat(21) + "a",
            "g".repeat(64),
            String::new(),
        ] {
            assert!(!valid_digest(&bad), "{bad}");
            assert!(matches!(Fetch::new(&bad, 1), Err(FetchError::BadDigest(_))));
        }
    }

    #[test]
    fn a_manifest_lists_each_chunk_and_names_the_whole() {
        let (data, digest) = revision(2 * CHUNK_SIZE as usize + 5);
        let (m, whole) = manifest_of(&data[..]).unwrap();
        assert_eq!(whole, digest);
        assert_eq!((m.size, m.chunks.len()), (data.len() as u64, 3));
        assert_eq!(m.chunks[2], chunk_hash(&data[2 * CHUNK_SIZE as usize..]));
        let (empty, d) = manifest_of(&b""[..]).unwrap();
        assert_eq!((empty.size, empty.chunks.len()), (0, 0));
        assert_eq!(d, hex::encode(Sha256::digest(b"")));
        let exact = manifest(&vec![1u8; CHUNK_SIZE as usize]);
        assert_eq!(exact.chunks.len(), 1, "no empty chunk after a whole one");
        // A frame holding the largest manifest and one holding a whole chunk both fit.
        let biggest = FetchDown::Manifest(Manifest {
            size: MAX_REVISION_BYTES,
            chunk_size: CHUNK_SIZE,
            chunks: vec![[0xff; 32]; chunk_count(MAX_REVISION_BYTES) as usize],
        });
        crate::codec::encode(&biggest, MAX_FETCH_FRAME).unwrap();
        let full = chunk(&vec![0xff; CHUNK_SIZE as usize], 0);
        crate::codec::encode(&full, MAX_FETCH_FRAME).unwrap();
    }

    #[test]
    fn the_controller_refuses_offsets_off_a_chunk_boundary_or_past_the_end() {
        let (data, _) = revision(CHUNK_SIZE as usize + 1);
        let m = manifest(&data);
        assert_eq!(first_chunk(&m, 0), Ok(0));
        assert_eq!(first_chunk(&m, CHUNK), Ok(1));
        assert!(first_chunk(&m, 5).is_err());
        assert_eq!(
            first_chunk(&m, m.size),
            Ok(2),
            "a whole part asks from its end"
        );
        assert!(first_chunk(&m, 2 * CHUNK).is_err());
    }

    #[test]
    fn a_whole_fetch_checks_every_chunk_and_the_digest() {
        let (data, digest) = revision(2 * CHUNK_SIZE as usize + 1234);
        let mut f = Fetch::new(&digest, data.len() as u64).unwrap();
        let mut part = Vec::new();
        assert_eq!(
            stream(&mut f, &data, &mut part, |_, _| {}),
            Ok(Verdict::Done)
        );
        assert_eq!(part, data);
        assert_eq!(f.offset(), data.len() as u64);
    }

    #[test]
    fn an_empty_revision_is_done_on_its_manifest() {
        let (data, digest) = revision(0);
        let mut f = Fetch::new(&digest, 0).unwrap();
        assert_eq!(
            stream(&mut f, &data, &mut Vec::new(), |_, _| {}),
            Ok(Verdict::Done)
        );
    }

    #[test]
    fn a_corrupted_chunk_is_refused_and_asked_again_from_where_it_stopped() {
        let (data, digest) = revision(3 * CHUNK_SIZE as usize);
        let mut f = Fetch::new(&digest, data.len() as u64).unwrap();
        let mut part = Vec::new();
        let flip = |i: usize, d: &mut Vec<u8>| {
            if i == 1 {
                d[100] ^= 1;
            }
        };
        assert_eq!(stream(&mut f, &data, &mut part, flip), Ok(Verdict::Retry));
        assert_eq!(
            part.len(),
            CHUNK_SIZE as usize,
            "only the good chunk is kept"
        );
        assert_eq!((f.offset(), f.refusals()), (CHUNK, 1));
        let StreamUp::Fetch { offset, .. } = f.clone().request() else {
            unreachable!()
        };
        assert_eq!(offset, CHUNK, "the next stream asks from the refused chunk");
        // A short chunk is as bad as a flipped bit.
        let short = |i: usize, d: &mut Vec<u8>| {
            if i == 1 {
                d.pop();
            }
        };
        assert_eq!(stream(&mut f, &data, &mut part, short), Ok(Verdict::Retry));
        assert_eq!(f.refusals(), 2);
        assert_eq!(
            stream(&mut f, &data, &mut part, |_, _| {}),
            Ok(Verdict::Done)
        );
        assert_eq!(part, data);
        assert_eq!(f.refusals(), 0, "a good chunk ends the run of refusals");
    }

    #[test]
    fn a_chunk_that_stays_corrupted_fails_the_fetch() {
        let (data, digest) = revision(2 * CHUNK_SIZE as usize);
        let mut f = Fetch::new(&digest, data.len() as u64).unwrap();
        let mut part = Vec::new();
        let always = |i: usize, d: &mut Vec<u8>| {
            if i == 1 {
                d[0] ^= 0xff;
            }
        };
        for n in 1..MAX_REFUSALS {
            assert_eq!(stream(&mut f, &data, &mut part, always), Ok(Verdict::Retry));
            assert_eq!(f.refusals(), n);
        }
        let err = stream(&mut f, &data, &mut part, always).unwrap_err();
        assert_eq!(
            err,
            FetchError::Corrupted {
                digest: digest.clone(),
                index: 1,
                times: MAX_REFUSALS
            }
        );
        assert!(
            err.to_string().contains("failed its SHA-256 4 times"),
            "{err}"
        );
    }

    #[test]
    fn a_fetch_resumes_from_the_whole_chunks_of_a_part_file() {
        let (data, digest) = revision(3 * CHUNK_SIZE as usize + 10);
        let mut f = Fetch::new(&digest, data.len() as u64).unwrap();
        // A cut left two chunks and a half written.
        let cut = 2 * CHUNK_SIZE as usize + CHUNK_SIZE as usize / 2;
        let keep = f.resumable(cut as u64) as usize;
        assert_eq!(keep, 2 * CHUNK_SIZE as usize);
        let mut part = data[..keep].to_vec();
        for c in part.chunks(CHUNK_SIZE as usize) {
            f.prefix(c).unwrap();
        }
        assert_eq!(f.offset(), keep as u64);
        assert_eq!(
            stream(&mut f, &data, &mut part, |_, _| {}),
            Ok(Verdict::Done)
        );
        assert_eq!(part, data);
        // A part file that is already whole needs only the manifest.
        let mut f = Fetch::new(&digest, data.len() as u64).unwrap();
        assert_eq!(f.resumable(data.len() as u64), data.len() as u64);
        for c in data.chunks(CHUNK_SIZE as usize) {
            f.prefix(c).unwrap();
        }
        assert_eq!(
            stream(&mut f, &data, &mut Vec::new(), |_, _| {}),
            Ok(Verdict::Done)
        );
        // A part longer than the revision is cut to whole chunks, and prefixes are whole.
        let mut f = Fetch::new(&digest, data.len() as u64).unwrap();
        assert_eq!(f.resumable(data.len() as u64 + 3), 3 * CHUNK);
        assert!(f.prefix(&data[..10]).is_err());
    }

    #[test]
    fn a_part_file_of_something_else_is_thrown_away() {
        let (data, digest) = revision(2 * CHUNK_SIZE as usize + 1);
        let mut f = Fetch::new(&digest, data.len() as u64).unwrap();
        f.prefix(&vec![0u8; CHUNK_SIZE as usize]).unwrap();
        let mut part = vec![0u8; CHUNK_SIZE as usize];
        assert_eq!(
            stream(&mut f, &data, &mut part, |_, _| {}),
            Ok(Verdict::StartOver)
        );
        assert_eq!(f.offset(), 0);
        part.clear();
        assert_eq!(
            stream(&mut f, &data, &mut part, |_, _| {}),
            Ok(Verdict::Done)
        );
        assert_eq!(part, data);
    }

    #[test]
    fn chunks_that_match_a_manifest_but_not_the_digest_are_not_the_revision() {
        let (data, _) = revision(CHUNK_SIZE as usize + 1);
        let other = "0".repeat(64);
        let mut f = Fetch::new(&other, data.len() as u64).unwrap();
        let mut outcome = Ok(Verdict::StartOver);
        let mut rounds = 0;
        while outcome == Ok(Verdict::StartOver) {
            rounds += 1;
            outcome = stream(&mut f, &data, &mut Vec::new(), |_, _| {});
        }
        assert_eq!(rounds, MAX_REFUSALS);
        match outcome {
            Err(FetchError::DigestMismatch { got, times, .. }) => {
                assert_eq!(got, hex::encode(Sha256::digest(&data)));
                assert_eq!(times, MAX_REFUSALS);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn manifests_that_do_not_fit_the_assignment_are_refused() {
        let (data, digest) = revision(CHUNK_SIZE as usize + 1);
        let m = manifest(&data);
        let mut f = Fetch::new(&digest, data.len() as u64 + 1).unwrap();
        f.request();
        assert!(matches!(
            f.receive(&FetchDown::Manifest(m.clone())),
            Err(FetchError::SizeMismatch { .. })
        ));
        let mut f = Fetch::new(&digest, data.len() as u64).unwrap();
        f.request();
        let mut short = m.clone();
        short.chunks.pop();
        assert!(matches!(
            f.receive(&FetchDown::Manifest(short)),
            Err(FetchError::BadManifest { .. })
        ));
        let mut odd = m.clone();
        odd.chunk_size = 4096;
        assert!(matches!(
            f.receive(&FetchDown::Manifest(odd)),
            Err(FetchError::BadManifest { .. })
        ));
        assert!(matches!(
            Fetch::new(&digest, MAX_REVISION_BYTES + 1),
            Err(FetchError::TooLarge { .. })
        ));
        // A manifest that changes between two streams of one fetch is not trusted.
        assert_eq!(
            f.receive(&FetchDown::Manifest(m.clone())),
            Ok(Verdict::Continue)
        );
        f.request();
        let mut changed = m;
        changed.chunks[0][0] ^= 1;
        assert_eq!(
            f.receive(&FetchDown::Manifest(changed)),
            Err(FetchError::ManifestChanged(digest))
        );
    }

    #[test]
    fn chunks_out_of_order_or_unasked_break_the_rules() {
        let (data, digest) = revision(2 * CHUNK_SIZE as usize);
        let mut f = Fetch::new(&digest, data.len() as u64).unwrap();
        assert!(matches!(
            f.receive(&chunk(&data, 0)),
            Err(FetchError::Violation(_))
        ));
        f.request();
        assert!(matches!(
            f.receive(&chunk(&data, 0)),
            Err(FetchError::Violation(_))
        ));
        f.receive(&FetchDown::Manifest(manifest(&data))).unwrap();
        assert!(matches!(
            f.receive(&chunk(&data, 1)),
            Err(FetchError::OutOfOrder { index: 1, .. })
        ));
        assert!(matches!(
            f.receive(&FetchDown::Manifest(manifest(&data))),
            Err(FetchError::Violation(_))
        ));
        let refused = f.receive(&FetchDown::Refused {
            reason: "no such revision".into(),
        });
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("no such revision"));
    }
}
