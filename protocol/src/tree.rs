//! Project trees as revisions: a directory packed into a canonical tar whose SHA-256 names it,
//! and tars (revisions, or archives uploaded by an admin) unpacked without letting an entry
//! write, or point, anywhere outside the directory it is unpacked into.
//!
//! Canonical means that the same tree gives the same bytes whoever packs it, whenever: entries
//! sorted by path (byte order, so a directory comes before its contents), mtime 0, owner 0:0
//! with empty names, files 0644 (0755 if any execute bit was set), directories 0755, links 0777.
//! A revision therefore has one digest, and the controller and every agent agree on it.
//!
//! A tree holds regular files, directories and symbolic links whose target stays inside it.
//! A link's target must be relative and may climb (`..`) only at its start, and no higher than
//! the tree's root: a `..` after a named component could climb out through another link
//! (`a/s/../..` where `a/s` leads elsewhere), which a check of the text alone cannot see.
//! Anything else (devices, fifos, sockets, hard links, links leaving the tree) is refused with
//! its path named. `.git` is never packed.
//!
//! Every limit of [`Limits`] is checked against what a header declares, before anything is
//! read into memory or written to disk.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// How big a tree may be. The same limits bound packing (on the controller) and unpacking (on
/// the controller for uploads, on agents for revisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The sum of the sizes of the files (and of whatever else an archive's headers declare).
    pub max_bytes: u64,
    /// Files, directories and links, together.
    pub max_entries: u32,
    /// Components of a path (`a/b/c` is 3 deep).
    pub max_depth: u32,
    /// Bytes of a path relative to the tree's root.
    pub max_path_bytes: usize,
}

impl Limits {
    /// The limits of a revision: far above a real Ansible repository with its collections
    /// (a few hundred MB and tens of thousands of files at most), far below what would exhaust
    /// a bastion's disk.
    pub const REVISION: Limits = Limits {
        max_bytes: 1 << 30,
        max_entries: 200_000,
        max_depth: 64,
        max_path_bytes: 1024,
    };
}

/// What [`pack_dir`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// Lower-case hex SHA-256 of the tar's bytes.
    pub digest: String,
    /// Bytes of the tar.
    pub size: u64,
    /// Files, directories and links in it.
    pub entries: u32,
}

/// What [`unpack`] or [`unpack_upload`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Files, directories and links written.
    pub entries: u32,
    /// Bytes of the files written.
    pub file_bytes: u64,
}

/// Why a tree could not be packed or unpacked. Every variant names the path concerned (as it
/// appears in the tree or archive, control characters escaped).
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: an absolute path; a tree's paths are relative to its root")]
    AbsolutePath { path: String },
    #[error("{path}: a path that climbs with `..`")]
    ParentDir { path: String },
    #[error("{path}: an empty path")]
    EmptyPath { path: String },
    #[error(
        "{path}: a symbolic link to `{target}`, which leaves the tree (a link must be relative, \
         climb with `..` only at its start and stay inside the tree)"
    )]
    LinkLeavesTree { path: String, target: String },
    #[error("{path}: a {kind}; a tree holds only files, directories and links inside it")]
    Unsupported { path: String, kind: String },
    #[error("{path}: appears twice")]
    Duplicate { path: String },
    #[error("{path}: lies beneath `{parent}`, which is not a directory")]
    NotBeneathDirectory { path: String, parent: String },
    #[error("{path}: more than {limit} entries")]
    TooManyEntries { path: String, limit: u32 },
    #[error("{path}: the files add up to more than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("{path}: more than {limit} levels deep")]
    TooDeep { path: String, limit: u32 },
    #[error("{path}: a path longer than {limit} bytes")]
    PathTooLong { path: String, limit: usize },
    #[error("{path}: a {kind} entry that carries {size} bytes of data")]
    UnexpectedData {
        path: String,
        kind: &'static str,
        size: u64,
    },
    #[error("{path}: an extended header of {size} bytes (at most {limit})")]
    HeaderTooLarge { path: String, size: u64, limit: u64 },
    #[error("{path}: not an empty directory to unpack into")]
    DestinationNotEmpty { path: String },
    #[error("{path}: changed while it was being packed")]
    Changed { path: String },
    #[error("not a tar archive (or a gzip-compressed one): it looks like {format}")]
    UnsupportedFormat { format: &'static str },
    #[error("{path}: not a readable tar archive: {source}")]
    Archive {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The lower-case hex SHA-256 of a revision's bytes, 64 characters: the only form of a digest
/// that may name a file (`<dir>/<digest>.tar`).
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Packs `dir` canonically into `out`, returning its digest, size and number of entries.
///
/// `dir` itself is not an entry; `.git` (file or directory, at any depth) is left out. Nothing
/// is written to `out` until the whole tree has been walked and checked, so a refused tree
/// leaves `out` empty.
pub fn pack_dir(dir: &Path, out: &mut impl Write, limits: &Limits) -> Result<Packed, TreeError> {
    let mut walk = Walk {
        limits,
        items: Vec::new(),
        file_bytes: 0,
    };
    walk.dir(dir, &[], 0)?;
    // Byte order of the whole path: a directory's path is a prefix of its contents' paths, so
    // it sorts before them.
    walk.items.sort_by(|a, b| a.rel.cmp(&b.rel));

    let mut counter = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        written: 0,
    };
    let entries = walk.items.len() as u32;
    {
        let mut builder = tar::Builder::new(&mut counter);
        for item in &walk.items {
            let rel = Path::new(OsStr::from_bytes(&item.rel));
            let shown = show(&item.rel);
            let io_err = |source| TreeError::Io {
                path: shown.clone(),
                source,
            };
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match &item.kind {
                Kind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, rel, io::empty())
                        .map_err(io_err)?;
                }
                Kind::Link(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, rel, Path::new(OsStr::from_bytes(target)))
                        .map_err(io_err)?;
                }
                Kind::File {
                    len,
                    exec,
                    dev,
                    ino,
                } => {
                    let path = dir.join(rel);
                    let file = File::open(&path).map_err(io_err)?;
                    let meta = file.metadata().map_err(io_err)?;
                    // The same inode as the one walked (a link swapped in since is not
                    // followed), and no longer than the size the limits were checked with.
                    if meta.dev() != *dev || meta.ino() != *ino || meta.len() != *len {
                        return Err(TreeError::Changed { path: shown });
                    }
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(if *exec { 0o755 } else { 0o644 });
                    header.set_size(*len);
                    let mut data = ExactReader {
                        inner: file.take(*len),
                        remaining: *len,
                    };
                    builder
                        .append_data(&mut header, rel, &mut data)
                        .map_err(|source| {
                            if source.kind() == io::ErrorKind::UnexpectedEof {
                                TreeError::Changed {
                                    path: shown.clone(),
                                }
                            } else {
                                TreeError::Io {
                                    path: shown.clone(),
                                    source,
                                }
                            }
                        })?;
                }
            }
        }
        builder.into_inner().map_err(|source| TreeError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(Packed {
        digest: hex::encode(counter.hasher.finalize()),
        size: counter.written,
        entries,
    })
}

/// Unpacks a tar read from `r` into `dest` (created if missing; if present it must be an
/// empty directory), refusing absolute paths, `..`, links leaving the tree, entries beneath a
/// link, devices and the like, and anything over `limits` — each checked before it is
/// written. Files are written 0444 (0555 if executable); directories, `dest` included, are
/// made 0555 at the end, so the tree is read-only ([`remove_tree`] removes it).
///
/// On an error, what was written so far stays; the caller removes `dest`.
pub fn unpack(r: impl Read, dest: &Path, limits: &Limits) -> Result<Unpacked, TreeError> {
    unpack_into(r, dest, limits, Modes::ReadOnly)
}

/// Reads an uploaded archive, a tar or a gzip-compressed tar (told apart by its first bytes),
/// into `dest` with the same checks as [`unpack`], but writable (files 0644 or 0755,
/// directories 0755): the controller goes on to install collections into it and packs it.
pub fn unpack_upload(r: impl Read, dest: &Path, limits: &Limits) -> Result<Unpacked, TreeError> {
    let mut r = BufReader::new(r);
    let head = r.fill_buf().map_err(|source| TreeError::Archive {
        path: String::new(),
        source,
    })?;
    let format = sniff(head);
    match format {
        Format::Gzip => unpack_into(
            flate2::read::MultiGzDecoder::new(r),
            dest,
            limits,
            Modes::Writable,
        ),
        Format::Plain => unpack_into(r, dest, limits, Modes::Writable),
        Format::Other(format) => Err(TreeError::UnsupportedFormat { format }),
    }
}

/// Removes a tree [`unpack`] made read-only: its directories are made writable (without
/// following links) before they are emptied.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    fn writable(dir: &Path) -> io::Result<()> {
        fs::set_permissions(dir, Permissions::from_mode(0o755))?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                writable(&entry.path())?;
            }
        }
        Ok(())
    }
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(dir),
        Ok(_) => {}
    }
    writable(dir)?;
    fs::remove_dir_all(dir)
}

// ---- packing ----

struct Item {
    rel: Vec<u8>,
    kind: Kind,
}

enum Kind {
    Dir,
    File {
        len: u64,
        exec: bool,
        dev: u64,
        ino: u64,
    },
    Link(Vec<u8>),
}

struct Walk<'a> {
    limits: &'a Limits,
    items: Vec<Item>,
    file_bytes: u64,
}

impl Walk<'_> {
    fn dir(&mut self, abs: &Path, rel: &[u8], depth: u32) -> Result<(), TreeError> {
        let io_err = |source| TreeError::Io {
            path: if rel.is_empty() {
                abs.display().to_string()
            } else {
                show(rel)
            },
            source,
        };
        for entry in fs::read_dir(abs).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name();
            if name.as_bytes() == b".git" {
                continue;
            }
            let mut child = Vec::with_capacity(rel.len() + 1 + name.len());
            if !rel.is_empty() {
                child.extend_from_slice(rel);
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            let shown = || show(&child);
            if child.len() > self.limits.max_path_bytes {
                return Err(TreeError::PathTooLong {
                    path: shown(),
                    limit: self.limits.max_path_bytes,
                });
            }
            if depth + 1 > self.limits.max_depth {
                return Err(TreeError::TooDeep {
                    path: shown(),
                    limit: self.limits.max_depth,
                });
            }
            if self.items.len() >= self.limits.max_entries as usize {
                return Err(TreeError::TooManyEntries {
                    path: shown(),
                    limit: self.limits.max_entries,
                });
            }
            let child_abs = entry.path();
            let meta = fs::symlink_metadata(&child_abs).map_err(|source| TreeError::Io {
                path: shown(),
                source,
            })?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.items.push(Item {
                    rel: child.clone(),
                    kind: Kind::Dir,
                });
                self.dir(&child_abs, &child, depth + 1)?;
            } else if ft.is_file() {
                let len = meta.len();
                if self.file_bytes.saturating_add(len) > self.limits.max_bytes {
                    return Err(TreeError::TooLarge {
                        path: shown(),
                        limit: self.limits.max_bytes,
                    });
                }
                self.file_bytes += len;
                self.items.push(Item {
                    rel: child,
                    kind: Kind::File {
                        len,
                        exec: meta.mode() & 0o111 != 0,
                        dev: meta.dev(),
                        ino: meta.ino(),
                    },
                });
            } else if ft.is_symlink() {
                let target = fs::read_link(&child_abs).map_err(|source| TreeError::Io {
                    path: shown(),
                    source,
                })?;
                let target = target.into_os_string().into_vec();
                check_link(&child, &target)?;
                self.items.push(Item {
                    rel: child,
                    kind: Kind::Link(target),
                });
            } else {
                return Err(TreeError::Unsupported {
                    path: shown(),
                    kind: kind_of(&ft).to_owned(),
                });
            }
        }
        Ok(())
    }
}

fn kind_of(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Counts and hashes what passes through to the output.
struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A file's contents, which must be exactly as long as its header says: one that shrank while
/// it was packed would otherwise leave a tar whose header lies.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than it was",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

// ---- checks shared by both directions ----

/// Shows a path of a tree or archive in a message: lossy UTF-8, control characters escaped.
fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// The components of an archive entry's path, `.` and empty ones dropped; refused when
/// absolute, climbing, too long or too deep. An empty result is the root itself (`./`).
fn components<'p>(raw: &'p [u8], limits: &Limits) -> Result<Vec<&'p [u8]>, TreeError> {
    if raw.first() == Some(&b'/') {
        return Err(TreeError::AbsolutePath { path: show(raw) });
    }
    let mut parts = Vec::new();
    let mut len = 0usize;
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return Err(TreeError::ParentDir { path: show(raw) }),
            _ => {}
        }
        len += part.len() + usize::from(!parts.is_empty());
        if len > limits.max_path_bytes {
            return Err(TreeError::PathTooLong {
                path: show(raw),
                limit: limits.max_path_bytes,
            });
        }
        if parts.len() as u32 >= limits.max_depth {
            return Err(TreeError::TooDeep {
                path: show(raw),
                limit: limits.max_depth,
            });
        }
        parts.push(part);
    }
    Ok(parts)
}

/// Refuses a link at `link` (a relative path, `/`-separated) whose `target` could lead out of
/// the tree: absolute, empty, climbing higher than the root, or climbing after a named
/// component (see the module's comment for why).
fn check_link(link: &[u8], target: &[u8]) -> Result<(), TreeError> {
    let refuse = || TreeError::LinkLeavesTree {
        path: show(link),
        target: show(target),
    };
    if target.is_empty() || target.first() == Some(&b'/') {
        return Err(refuse());
    }
    // Directories above the link: `a/b/l` sits in `a/b`, 2 deep.
    let depth = link
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .count()
        .saturating_sub(1);
    let mut ups = 0usize;
    let mut named = false;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if named => return Err(refuse()),
            b".." => {
                ups += 1;
                if ups > depth {
                    return Err(refuse());
                }
            }
            _ => named = true,
        }
    }
    Ok(())
}

// ---- unpacking ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Modes {
    /// A revision in an agent's cache: nothing in it may change.
    ReadOnly,
    /// An upload the controller still works in.
    Writable,
}

enum Format {
    Gzip,
    Plain,
    Other(&'static str),
}

fn sniff(head: &[u8]) -> Format {
    if head.starts_with(&[0x1f, 0x8b]) {
        Format::Gzip
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Format::Other("an xz-compressed file")
    } else if head.starts_with(b"BZh") {
        Format::Other("a bzip2-compressed file")
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Format::Other("a zstd-compressed file")
    } else if head.starts_with(b"PK\x03\x04") {
        Format::Other("a zip file")
    } else {
        Format::Plain
    }
}

/// What a path of the tree being unpacked already is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Link,
}

/// The largest pax extended header read (path, link path and a few attributes fit many times
/// over; more is an attempt to make us buffer).
const MAX_PAX_HEADER: u64 = 64 * 1024;

/// Extension headers (long names, pax) pending for the next entry.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

fn unpack_into(
    r: impl Read,
    dest: &Path,
    limits: &Limits,
    modes: Modes,
) -> Result<Unpacked, TreeError> {
    let dest_err = |source| TreeError::Io {
        path: dest.display().to_string(),
        source,
    };
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            if fs::read_dir(dest).map_err(dest_err)?.next().is_some() {
                return Err(TreeError::DestinationNotEmpty {
                    path: dest.display().to_string(),
                });
            }
        }
        Ok(_) => {
            return Err(TreeError::DestinationNotEmpty {
                path: dest.display().to_string(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dest)
                .map_err(dest_err)?;
        }
        Err(e) => return Err(dest_err(e)),
    }

    let mut archive = tar::Archive::new(r);
    let mut nodes: HashMap<Vec<u8>, Node> = HashMap::new();
    let mut dirs: Vec<Vec<u8>> = Vec::new();
    let mut pending = Pending::default();
    let mut headers: u64 = 0;
    // Headers of any kind: every entry may bring a long name, a long link and a pax header.
    let max_headers = u64::from(limits.max_entries) * 4 + 16;
    let mut declared: u64 = 0;
    let mut done = Unpacked {
        entries: 0,
        file_bytes: 0,
    };
    let mut last_path = String::new();
    let archive_err = |path: &str, source| TreeError::Archive {
        path: path.to_owned(),
        source,
    };

    let entries = archive.entries().map_err(|e| archive_err("", e))?.raw(true);
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(&last_path, e))?;
        headers += 1;
        let header_path = entry.header().path_bytes().into_owned();
        if headers > max_headers {
            return Err(TreeError::TooManyEntries {
                path: show(&header_path),
                limit: limits.max_entries,
            });
        }
        let kind = entry.header().entry_type();
        let size = entry.size();
        // Whatever a header declares is read (or skipped, which reads it too): all of it
        // counts, so a directory "carrying" gigabytes of zeros is no way around the limit.
        declared = declared.saturating_add(size);
        if declared > limits.max_bytes.saturating_add(MAX_PAX_HEADER) {
            return Err(TreeError::TooLarge {
                path: show(&header_path),
                limit: limits.max_bytes,
            });
        }

        if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            // GNU writes the name and a NUL.
            if size > limits.max_path_bytes as u64 + 1 {
                return Err(TreeError::PathTooLong {
                    path: show(&header_path),
                    limit: limits.max_path_bytes,
                });
            }
            let mut name = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut name)
                .map_err(|e| archive_err(&show(&header_path), e))?;
            while name.last() == Some(&0) {
                name.pop();
            }
            if kind.is_gnu_longname() {
                pending.long_name = Some(name);
            } else {
                pending.long_link = Some(name);
            }
            continue;
        }
        if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            if size > MAX_PAX_HEADER {
                return Err(TreeError::HeaderTooLarge {
                    path: show(&header_path),
                    size,
                    limit: MAX_PAX_HEADER,
                });
            }
            let mut data = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| archive_err(&show(&header_path), e))?;
            // Global headers hold defaults for the archive (a comment, mtimes): nothing a tree
            // keeps.
            if kind.is_pax_local_extensions() {
                for ext in tar::PaxExtensions::new(&data) {
                    let ext = ext.map_err(|e| archive_err(&show(&header_path), e))?;
                    match ext.key_bytes() {
                        b"path" => pending.pax_path = Some(ext.value_bytes().to_vec()),
                        b"linkpath" => pending.pax_link = Some(ext.value_bytes().to_vec()),
                        b"size" => {
                            let size = ext
                                .value()
                                .ok()
                                .and_then(|v| v.parse::<u64>().ok())
                                .ok_or_else(|| {
                                    archive_err(
                                        &show(&header_path),
                                        io::Error::new(
                                            io::ErrorKind::InvalidData,
                                            "a pax size that is not a number",
                                        ),
                                    )
                                })?;
                            pending.pax_size = Some(size);
                        }
                        _ => {}
                    }
                }
            }
            continue;
        }

        // A real entry: the extension headers before it apply to it.
        let p = std::mem::take(&mut pending);
        let raw_path = p.pax_path.or(p.long_name).unwrap_or(header_path);
        let path_shown = show(&raw_path);
        last_path.clone_from(&path_shown);
        if let Some(pax_size) = p.pax_size {
            // Entries are read in raw mode, where the header's size frames the data: an
            // archive whose pax size says otherwise would be read differently by another tool.
            if pax_size != size {
                return Err(archive_err(
                    &path_shown,
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the pax size disagrees with the header's",
                    ),
                ));
            }
        }
        if raw_path.is_empty() {
            return Err(TreeError::EmptyPath { path: path_shown });
        }
        let parts = components(&raw_path, limits)?;
        if parts.is_empty() {
            // `./`: the root itself, which is `dest`.
            if kind.is_dir() {
                continue;
            }
            return Err(TreeError::EmptyPath { path: path_shown });
        }
        let rel = parts.join(&b'/');
        let rel_shown = show(&rel);

        let node = if kind.is_file() {
            Node::File
        } else if kind.is_dir() {
            Node::Dir
        } else if kind.is_symlink() {
            Node::Link
        } else {
            let what = if kind.is_hard_link() {
                "hard link".to_owned()
            } else if kind.is_character_special() {
                "character device".to_owned()
            } else if kind.is_block_special() {
                "block device".to_owned()
            } else if kind.is_fifo() {
                "fifo".to_owned()
            } else if kind.is_gnu_sparse() {
                "sparse file".to_owned()
            } else {
                format!("entry of type {:?}", char::from(kind.as_byte()))
            };
            return Err(TreeError::Unsupported {
                path: rel_shown,
                kind: what,
            });
        };
        if node != Node::File && size != 0 {
            return Err(TreeError::UnexpectedData {
                path: rel_shown,
                kind: if node == Node::Dir {
                    "directory"
                } else {
                    "link"
                },
                size,
            });
        }

        // Existing entries, checked before anything is written.
        if let Some(existing) = nodes.get(&rel) {
            if !(*existing == Node::Dir && node == Node::Dir) {
                return Err(TreeError::Duplicate { path: rel_shown });
            }
            continue;
        }
        if done.entries >= limits.max_entries {
            return Err(TreeError::TooManyEntries {
                path: rel_shown,
                limit: limits.max_entries,
            });
        }
        if node == Node::File && done.file_bytes.saturating_add(size) > limits.max_bytes {
            return Err(TreeError::TooLarge {
                path: rel_shown,
                limit: limits.max_bytes,
            });
        }
        let target = if node == Node::Link {
            let target = p
                .pax_link
                .or(p.long_link)
                .or_else(|| entry.header().link_name_bytes().map(|t| t.into_owned()))
                .unwrap_or_default();
            check_link(&rel, &target)?;
            Some(target)
        } else {
            None
        };

        // Parents: directories of this tree, made when an archive lists a file before (or
        // without) its directory.
        for i in 1..parts.len() {
            let parent = parts[..i].join(&b'/');
            match nodes.get(&parent) {
                Some(Node::Dir) => {}
                Some(_) => {
                    return Err(TreeError::NotBeneathDirectory {
                        path: rel_shown,
                        parent: show(&parent),
                    })
                }
                None => {
                    if done.entries >= limits.max_entries {
                        return Err(TreeError::TooManyEntries {
                            path: rel_shown,
                            limit: limits.max_entries,
                        });
                    }
                    make_dir(dest, &parent)?;
                    nodes.insert(parent.clone(), Node::Dir);
                    dirs.push(parent);
                    done.entries += 1;
                }
            }
        }

        let abs = dest.join(OsStr::from_bytes(&rel));
        let io_err = |source| TreeError::Io {
            path: rel_shown.clone(),
            source,
        };
        match node {
            Node::Dir => {
                make_dir(dest, &rel)?;
                dirs.push(rel.clone());
            }
            Node::Link => {
                let target = target.unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &abs).map_err(io_err)?;
            }
            Node::File => {
                let exec = entry
                    .header()
                    .mode()
                    .map(|m| m & 0o111 != 0)
                    .unwrap_or(false);
                let mode = match (modes, exec) {
                    (Modes::ReadOnly, false) => 0o444,
                    (Modes::ReadOnly, true) => 0o555,
                    (Modes::Writable, false) => 0o644,
                    (Modes::Writable, true) => 0o755,
                };
                // create_new: O_EXCL, which never follows a link nor reuses a file.
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&abs)
                    .map_err(io_err)?;
                let copied =
                    io::copy(&mut entry, &mut file).map_err(|e| archive_err(&rel_shown, e))?;
                if copied != size {
                    return Err(archive_err(
                        &rel_shown,
                        io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends early"),
                    ));
                }
                // The mode given to open(2) is narrowed by the umask; this one is not.
                file.set_permissions(Permissions::from_mode(mode))
                    .map_err(io_err)?;
                done.file_bytes += size;
            }
        }
        nodes.insert(rel, node);
        done.entries += 1;
    }
    if pending.long_name.is_some() || pending.pax_path.is_some() {
        return Err(archive_err(
            &last_path,
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "an extended header with no entry after it",
            ),
        ));
    }

    if modes == Modes::ReadOnly {
        // Deepest first: a directory made read-only can no longer have its children changed.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.iter().filter(|b| **b == b'/').count()));
        for d in &dirs {
            fs::set_permissions(
                dest.join(OsStr::from_bytes(d)),
                Permissions::from_mode(0o555),
            )
            .map_err(|source| TreeError::Io {
                path: show(d),
                source,
            })?;
        }
        fs::set_permissions(dest, Permissions::from_mode(0o555)).map_err(dest_err)?;
    }
    Ok(done)
}

fn make_dir(dest: &Path, rel: &[u8]) -> Result<(), TreeError> {
    let abs: PathBuf = dest.join(OsStr::from_bytes(rel));
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&abs)
        .and_then(|()| fs::set_permissions(&abs, Permissions::from_mode(0o755)))
        .map_err(|source| TreeError::Io {
            path: show(rel),
            source,
        })
}

#[cfg(test)]
mod tests;
