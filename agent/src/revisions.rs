//! The agent's cache of project revisions: each unpacked read-only once, under
//! `<state-dir>/revisions/<digest>/`, and shared by every job that runs it. A revision is
//! fetched at most once at a time (other jobs wait for that fetch), into `<digest>.part`, which
//! keeps only verified chunks so a cut resumes from its length. The cache is bounded in bytes:
//! least recently used trees go first, never one a job holds a [`Lease`] on.
//!
//! ```text
//! <state-dir>/revisions/<digest>/            a revision, read-only (0555/0444)
//! <state-dir>/revisions/<digest>.part        verified chunks of a revision being fetched
//! <state-dir>/revisions/<digest>.unpacking/  a tree being unpacked (renamed when whole)
//! <state-dir>/revisions/<digest>.evicted-N/  a tree being removed
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use outpost_protocol::fetch::{self, Fetch, FetchError, CHUNK_SIZE};
use outpost_protocol::message::RevisionRef;
use outpost_protocol::tree::{self, Limits, TreeError};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The default bound of the cache: a few large repositories with their collections.
pub const DEFAULT_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// A part file older than this is not resumed: the revision it was for is likely gone.
const STALE_PART: Duration = Duration::from_secs(24 * 3600);

/// Why a revision could not be had; the job that needed it fails with this text.
#[derive(Debug, Error)]
pub enum CacheError {
    #[error("'{0}' is not a revision digest (64 lower-case hex digits)")]
    BadDigest(String),
    #[error("revision {digest} is {size} bytes; this agent's revision cache holds at most {capacity} bytes (raise --revision-cache-bytes)")]
    TooLarge {
        digest: String,
        size: u64,
        capacity: u64,
    },
    #[error("the revision carried in the assignment is not revision {digest}: {why}")]
    Inline { digest: String, why: String },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("cannot fetch revision {digest}: {why}")]
    Transfer { digest: String, why: String },
    #[error("cannot unpack revision {digest}: {source}")]
    Unpack { digest: String, source: TreeError },
    #[error("the revision cache, {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A revision present in the cache.
#[derive(Debug)]
struct Tree {
    /// Bytes of its files, as counted against the cache's bound.
    bytes: u64,
    /// When it was last leased, on the cache's own clock (higher is more recent).
    last_used: u64,
    /// Jobs using it now: never evicted while above zero.
    leases: u32,
}

#[derive(Default)]
struct Inner {
    trees: HashMap<String, Tree>,
    clock: u64,
    /// One lock per digest being fetched: the first job fetches, the others wait for it.
    flights: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Inner {
    fn used(&self) -> u64 {
        self.trees.values().map(|t| t.bytes).sum()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

/// The revisions of this agent, on disk.
pub struct RevisionCache {
    root: PathBuf,
    capacity: u64,
    inner: Mutex<Inner>,
    /// Names evicted trees uniquely while they are removed.
    evictions: AtomicU64,
}

/// A job's hold on a revision's tree: the tree stays while the lease lives.
pub struct Lease {
    cache: Arc<RevisionCache>,
    digest: String,
    path: PathBuf,
}

impl Lease {
    /// The root of the revision's tree (read-only).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("digest", &self.digest)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let doomed = {
            let mut inner = self.cache.lock();
            let now = inner.tick();
            if let Some(t) = inner.trees.get_mut(&self.digest) {
                t.leases = t.leases.saturating_sub(1);
                t.last_used = now;
            }
            // A tree kept over the bound because jobs held it may go now.
            self.cache.evict_for(&mut inner, 0)
        };
        self.cache.remove_later(doomed);
    }
}

impl RevisionCache {
    /// Opens the cache at `root` (created 0700 if missing), bounded to `capacity` bytes. What a
    /// previous run left half done is cleared: trees half unpacked or half removed, and part
    /// files too old to resume. Trees already there are kept, least recently modified first
    /// out.
    pub fn open(root: &Path, capacity: u64) -> Result<Arc<RevisionCache>, CacheError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err(root))?;
        let mut found: Vec<(SystemTime, String, u64)> = Vec::new();
        for entry in std::fs::read_dir(root).map_err(io_err(root))? {
            let entry = entry.map_err(io_err(root))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if meta.is_dir() && fetch::valid_digest(&name) {
                found.push((modified, name, tree_bytes(&path)));
                continue;
            }
            if let Some(digest) = name.strip_suffix(".part") {
                let fresh = SystemTime::now()
                    .duration_since(modified)
                    .is_ok_and(|age| age < STALE_PART);
                if meta.is_file() && fetch::valid_digest(digest) && fresh {
                    continue; // resumed by the next job that needs it
                }
            }
            tracing::info!(path = %path.display(), "removing what an earlier run left in the revision cache");
            if let Err(e) = tree::remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale cache entry");
            }
        }
        found.sort();
        let cache = Arc::new(RevisionCache {
            root: root.to_owned(),
            capacity,
            inner: Mutex::new(Inner::default()),
            evictions: AtomicU64::new(0),
        });
        let doomed = {
            let mut inner = cache.lock();
            for (_, digest, bytes) in found {
                let last_used = inner.tick();
                inner.trees.insert(
                    digest,
                    Tree {
                        bytes,
                        last_used,
                        leases: 0,
                    },
                );
            }
            cache.evict_for(&mut inner, 0)
        };
        for path in doomed {
            remove_logged(&path);
        }
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bound, in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of the trees held now.
    pub fn used(&self) -> u64 {
        self.lock().used()
    }

    /// Whether `digest` is in the cache now.
    pub fn contains(&self, digest: &str) -> bool {
        self.lock().trees.contains_key(digest)
    }

    fn tree_path(&self, digest: &str) -> PathBuf {
        self.root.join(digest)
    }

    /// Where a revision being fetched is kept.
    pub fn part_path(&self, digest: &str) -> PathBuf {
        self.root.join(format!("{digest}.part"))
    }

    /// A lease on `digest` if it is here.
    fn lease(self: &Arc<Self>, digest: &str) -> Option<Lease> {
        let mut inner = self.lock();
        let now = inner.tick();
        let t = inner.trees.get_mut(digest)?;
        t.leases += 1;
        t.last_used = now;
        Some(Lease {
            cache: self.clone(),
            digest: digest.to_owned(),
            path: self.tree_path(digest),
        })
    }

    /// The tree of `rev`, from the cache, from the assignment (inline), or fetched with
    /// `fetcher`, which is handed the fetch's state (resumed from the part file) and the part
    /// file, and returns once the part holds the whole revision, verified. Jobs asking for a
    /// revision being fetched wait for that fetch.
    pub async fn acquire<F, Fut>(
        self: &Arc<Self>,
        rev: &RevisionRef,
        fetcher: F,
    ) -> Result<Lease, CacheError>
    where
        F: FnOnce(Fetch, std::fs::File) -> Fut,
        Fut: Future<Output = Result<(), CacheError>>,
    {
        if !fetch::valid_digest(&rev.digest) {
            return Err(CacheError::BadDigest(rev.digest.clone()));
        }
        if let Some(lease) = self.lease(&rev.digest) {
            return Ok(lease);
        }
        let flight = self
            .lock()
            .flights
            .entry(rev.digest.clone())
            .or_default()
            .clone();
        let result = {
            let _only_one = flight.lock().await;
            match self.lease(&rev.digest) {
                Some(lease) => Ok(lease), // fetched by the job this one waited for
                None => self.obtain(rev, fetcher).await,
            }
        };
        let mut inner = self.lock();
        // The map's and this task's: no other job waits on this flight.
        if Arc::strong_count(&flight) <= 2 {
            inner.flights.remove(&rev.digest);
        }
        result
    }

    /// Fetches (or takes inline), verifies and unpacks `rev`, and leases it.
    async fn obtain<F, Fut>(
        self: &Arc<Self>,
        rev: &RevisionRef,
        fetcher: F,
    ) -> Result<Lease, CacheError>
    where
        F: FnOnce(Fetch, std::fs::File) -> Fut,
        Fut: Future<Output = Result<(), CacheError>>,
    {
        let digest = rev.digest.clone();
        if rev.size > self.capacity {
            return Err(CacheError::TooLarge {
                digest,
                size: rev.size,
                capacity: self.capacity,
            });
        }
        // Room first, so the download itself fits.
        let doomed = self.evict_for(&mut self.lock(), rev.size);
        self.remove_later(doomed);

        let source = match &rev.inline {
            Some(bytes) => {
                check_inline(rev, bytes)?;
                Source::Bytes(bytes.clone())
            }
            None => {
                let part_path = self.part_path(&digest);
                let mut machine = Fetch::new(&digest, rev.size)?;
                let path = part_path.clone();
                // Reading back what a cut left is disk work: off the async threads.
                let (part, machine) = blocking(move || {
                    let file = open_part(&path, &mut machine)?;
                    Ok((file, machine))
                })
                .await?;
                if machine.offset() > 0 {
                    tracing::info!(%digest, have = machine.offset(), size = rev.size, "resuming a revision fetch from its part file");
                }
                fetcher(machine, part).await?;
                Source::Part(part_path)
            }
        };
        let (dest, tmp) = (
            self.tree_path(&digest),
            self.root.join(format!("{digest}.unpacking")),
        );
        let unpacked = {
            let (dest, tmp, digest) = (dest.clone(), tmp.clone(), digest.clone());
            blocking(move || unpack(source, &tmp, &dest, &digest)).await?
        };
        tracing::info!(%digest, files_bytes = unpacked.file_bytes, entries = unpacked.entries, "revision cached");
        let (lease, doomed) = {
            let mut inner = self.lock();
            let now = inner.tick();
            inner.trees.insert(
                digest.clone(),
                Tree {
                    bytes: unpacked.file_bytes,
                    last_used: now,
                    leases: 1,
                },
            );
            let doomed = self.evict_for(&mut inner, 0);
            (
                Lease {
                    cache: self.clone(),
                    digest: digest.clone(),
                    path: dest,
                },
                doomed,
            )
        };
        self.remove_later(doomed);
        Ok(lease)
    }

    /// Takes least recently used trees no job holds out of the cache until `incoming` more
    /// bytes fit; returns where they were moved to, for removal outside the lock. Trees held
    /// by jobs may keep the cache above its bound until they are let go.
    fn evict_for(&self, inner: &mut Inner, incoming: u64) -> Vec<PathBuf> {
        let mut doomed = Vec::new();
        while inner.used().saturating_add(incoming) > self.capacity {
            let Some(victim) = inner
                .trees
                .iter()
                .filter(|(_, t)| t.leases == 0)
                .min_by_key(|(_, t)| t.last_used)
                .map(|(d, _)| d.clone())
            else {
                tracing::warn!(
                    used = inner.used(),
                    capacity = self.capacity,
                    "the revision cache is over its bound: every tree in it is in use"
                );
                break;
            };
            inner.trees.remove(&victim);
            // Moved aside under the lock, so a fetch of the same revision starting now
            // unpacks into a free name; removed later, outside it.
            let n = self.evictions.fetch_add(1, Ordering::Relaxed);
            let from = self.tree_path(&victim);
            let to = self.root.join(format!("{victim}.evicted-{n}"));
            match std::fs::rename(&from, &to) {
                Ok(()) => {
                    tracing::info!(digest = %victim, "revision evicted from the cache");
                    doomed.push(to);
                }
                Err(e) => {
                    tracing::warn!(path = %from.display(), error = %e, "cannot evict a revision");
                }
            }
        }
        doomed
    }

    /// Removes evicted trees, off the async threads when there are any.
    fn remove_later(&self, doomed: Vec<PathBuf>) {
        if doomed.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || doomed.iter().for_each(|p| remove_logged(p)));
            }
            Err(_) => doomed.iter().for_each(|p| remove_logged(p)),
        }
    }
}

fn remove_logged(path: &Path) {
    if let Err(e) = tree::remove_tree(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove an evicted revision");
    }
}

/// Runs disk work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CacheError> + Send + 'static,
) -> Result<T, CacheError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(CacheError::Io {
            path: "revision cache".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// Where a verified revision's bytes are.
enum Source {
    Bytes(Vec<u8>),
    Part(PathBuf),
}

fn check_inline(rev: &RevisionRef, bytes: &[u8]) -> Result<(), CacheError> {
    let bad = |why: String| CacheError::Inline {
        digest: rev.digest.clone(),
        why,
    };
    if bytes.len() as u64 != rev.size {
        return Err(bad(format!(
            "{} bytes where {} were announced",
            bytes.len(),
            rev.size
        )));
    }
    let got = hex::encode(Sha256::digest(bytes));
    if got != rev.digest {
        return Err(bad(format!("its SHA-256 is {got}")));
    }
    Ok(())
}

/// Opens (or creates) the part file of `fetch`'s revision, keeps what can be resumed from
/// (whole chunks; everything when it is whole), and hands that to `fetch` to be checked
/// against the manifest. The file is left positioned at its end.
pub fn open_part(path: &Path, fetch: &mut Fetch) -> Result<std::fs::File, CacheError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let keep = fetch.resumable(len);
    file.set_len(keep).map_err(io_err(path))?;
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    let mut left = keep;
    while left > 0 {
        let want = left.min(u64::from(CHUNK_SIZE)) as usize;
        file.read_exact(&mut buf[..want]).map_err(io_err(path))?;
        fetch.prefix(&buf[..want])?;
        left -= want as u64;
    }
    file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
    Ok(file)
}

/// Unpacks a verified revision beside its final place, then renames it there: a tree under a
/// digest's name is always whole.
fn unpack(
    source: Source,
    tmp: &Path,
    dest: &Path,
    digest: &str,
) -> Result<tree::Unpacked, CacheError> {
    if let Err(e) = tree::remove_tree(tmp) {
        return Err(io_err(tmp)(e));
    }
    let unpack_err = |source| CacheError::Unpack {
        digest: digest.to_owned(),
        source,
    };
    let result = match &source {
        Source::Bytes(b) => tree::unpack(&b[..], tmp, &Limits::REVISION),
        Source::Part(p) => {
            let f = std::fs::File::open(p).map_err(io_err(p))?;
            tree::unpack(std::io::BufReader::new(f), tmp, &Limits::REVISION)
        }
    };
    let unpacked = match result {
        Ok(u) => u,
        Err(e) => {
            let _ = tree::remove_tree(tmp);
            // A verified revision that does not unpack will not unpack next time either.
            if let Source::Part(p) = &source {
                let _ = std::fs::remove_file(p);
            }
            return Err(unpack_err(e));
        }
    };
    // A tree left at the final name by a run that crashed after the rename but before it was
    // recorded is replaced.
    tree::remove_tree(dest).map_err(io_err(dest))?;
    std::fs::rename(tmp, dest).map_err(io_err(dest))?;
    if let Source::Part(p) = &source {
        let _ = std::fs::remove_file(p);
    }
    Ok(unpacked)
}

/// Bytes of the files under `dir` (links not followed), as [`tree::Unpacked::file_bytes`]
/// counts them.
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A canonical tar of one file of `len` bytes named `name`, and its reference.
    fn revision(name: &str, len: usize, inline: bool) -> (Vec<u8>, RevisionRef) {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join(name), body).unwrap();
        let mut tar = Vec::new();
        let packed = tree::pack_dir(dir.path(), &mut tar, &Limits::REVISION).unwrap();
        let rev = RevisionRef {
            digest: packed.digest,
            size: packed.size,
            commit: None,
            inventory_dir: String::new(),
            inline: inline.then(|| tar.clone()),
        };
        (tar, rev)
    }

    /// A fetcher that "downloads" `tar` from where the part left off, counting its calls.
    fn serving(
        tar: Vec<u8>,
        calls: Arc<AtomicU32>,
    ) -> impl FnOnce(
        Fetch,
        std::fs::File,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), CacheError>> + Send>> {
        move |fetch, mut part| {
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                use std::io::Write;
                part.write_all(&tar[fetch.offset() as usize..]).unwrap();
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn an_inline_revision_is_verified_unpacked_read_only_and_shared() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RevisionCache::open(&dir.path().join("rev"), 1 << 30).unwrap();
        let (_, rev) = revision("site.yml", 100, true);
        let never = |_: Fetch, _: std::fs::File| async { panic!("inline needs no fetch") };
        let a = cache.acquire(&rev, never).await.unwrap();
        assert_eq!(std::fs::read(a.path().join("site.yml")).unwrap().len(), 100);
        assert!(std::fs::write(a.path().join("new"), "x").is_err() || nix_root());
        let b = cache.acquire(&rev, never).await.unwrap();
        assert_eq!(a.path(), b.path(), "one copy for every job");
        let mut tampered = revision("site.yml", 101, true).1;
        tampered.inline.as_mut().unwrap()[600] ^= 1;
        let err = cache.acquire(&tampered, never).await.unwrap_err();
        assert!(matches!(err, CacheError::Inline { .. }), "{err}");
        assert!(!cache.contains(&tampered.digest));
    }

    /// Root writes through read-only modes; the check above holds for everyone else.
    fn nix_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[tokio::test]
    async fn jobs_asking_for_one_revision_at_once_share_one_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RevisionCache::open(&dir.path().join("rev"), 1 << 30).unwrap();
        let (tar, rev) = revision("big.bin", 3 << 20, false);
        let calls = Arc::new(AtomicU32::new(0));
        let jobs: Vec<_> = (0..4)
            .map(|_| {
                let (cache, rev, f) = (
                    cache.clone(),
                    rev.clone(),
                    serving(tar.clone(), calls.clone()),
                );
                tokio::spawn(
                    async move { cache.acquire(&rev, f).await.map(|l| l.path().to_owned()) },
                )
            })
            .collect();
        for j in jobs {
            let path = j.await.unwrap().unwrap();
            assert_eq!(
                std::fs::metadata(path.join("big.bin")).unwrap().len(),
                3 << 20
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch for four jobs");
        assert!(
            !cache.part_path(&rev.digest).exists(),
            "the part is gone once unpacked"
        );
        assert!(cache.lock().flights.is_empty());
    }

    #[tokio::test]
    async fn the_least_recently_used_tree_no_job_holds_is_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rev");
        // Room for two of these revisions, not three.
        let revs: Vec<_> = (0..3)
            .map(|i| revision(&format!("f{i}"), 400_000, true).1)
            .collect();
        let cache = RevisionCache::open(&root, 900_000).unwrap();
        let no = |_: Fetch, _: std::fs::File| async { Ok(()) };
        drop(cache.acquire(&revs[0], no).await.unwrap());
        let held = cache.acquire(&revs[1], no).await.unwrap();
        let _c = cache.acquire(&revs[2], no).await.unwrap();
        assert!(
            !cache.contains(&revs[0].digest),
            "least recently used, not held: out"
        );
        assert!(cache.contains(&revs[1].digest) && cache.contains(&revs[2].digest));
        assert!(held.path().join("f1").exists());
        // Every tree held: the bound is exceeded rather than a running job's tree removed.
        let _a = cache.acquire(&revs[0], no).await.unwrap();
        assert!(cache.contains(&revs[1].digest) && cache.contains(&revs[2].digest));
        assert!(cache.used() > cache.capacity());
        // Once let go, the cache comes back within its bound.
        drop(held);
        assert!(!cache.contains(&revs[1].digest));
        assert!(cache.used() <= cache.capacity());
        // A revision larger than the whole cache is refused up front.
        let big = revision("huge", 1_000_000, false).1;
        let err = cache.acquire(&big, no).await.unwrap_err();
        assert!(err.to_string().contains("--revision-cache-bytes"), "{err}");
        // Removal happens off the async threads; give it a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[tokio::test]
    async fn a_part_file_is_resumed_from_its_whole_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RevisionCache::open(&dir.path().join("rev"), 1 << 30).unwrap();
        let (tar, rev) = revision("big.bin", 3 << 20, false);
        let cut = (CHUNK_SIZE as usize) * 2 + 1000;
        std::fs::write(cache.part_path(&rev.digest), &tar[..cut]).unwrap();
        let seen = Arc::new(AtomicU64::new(u64::MAX));
        let s = seen.clone();
        let tail = tar.clone();
        let lease = cache
            .acquire(
                &rev,
                move |fetch: Fetch, mut part: std::fs::File| async move {
                    s.store(fetch.offset(), Ordering::SeqCst);
                    use std::io::Write;
                    part.write_all(&tail[fetch.offset() as usize..]).unwrap();
                    Ok(())
                },
            )
            .await
            .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 2 * u64::from(CHUNK_SIZE));
        assert_eq!(
            std::fs::metadata(lease.path().join("big.bin"))
                .unwrap()
                .len(),
            3 << 20
        );
    }

    #[tokio::test]
    async fn what_a_crash_left_is_cleared_at_start_and_trees_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rev");
        let (_, rev) = revision("site.yml", 10, true);
        {
            let cache = RevisionCache::open(&root, 1 << 30).unwrap();
            let no = |_: Fetch, _: std::fs::File| async { Ok(()) };
            drop(cache.acquire(&rev, no).await.unwrap());
        }
        let other = "e".repeat(64);
        std::fs::create_dir_all(root.join(format!("{other}.unpacking/x"))).unwrap();
        std::fs::write(root.join(format!("{other}.part")), b"partial").unwrap();
        std::fs::write(root.join("junk"), b"?").unwrap();
        let cache = RevisionCache::open(&root, 1 << 30).unwrap();
        assert!(cache.contains(&rev.digest));
        assert_eq!(cache.used(), 10);
        assert!(
            root.join(format!("{other}.part")).exists(),
            "kept to resume"
        );
        assert!(!root.join(format!("{other}.unpacking")).exists());
        assert!(!root.join("junk").exists());
    }
}
