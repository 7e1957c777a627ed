//! Projects: trees of files that playbooks run in, and their syncs. A sync takes a tree (a git
//! commit exported by [`git`], an uploaded archive, one uploaded playbook), resolves its
//! `requirements.yml` files with [`galaxy`] on the controller (bastions need no internet),
//! packs it into a canonical revision under `<data_dir>/revisions/<digest>.tar`, finds its
//! playbooks and records it all in one transaction. A failed sync keeps the previous revision
//! and records why.

pub mod command;
pub mod galaxy;
pub mod git;
pub mod inventory;
pub mod playbook;

pub use playbook::is_playbook;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::tree::{self, Limits, TreeError};
use sha2::{Digest, Sha256};

use crate::model::{Project, ProjectKind, Revision};
use crate::store::audit::Actor;
use crate::store::projects::{NewRevision, PlaybookFile};
use crate::store::{Store, StoreError};

/// The file of a one-file project (an uploaded playbook).
pub const SINGLE_PLAYBOOK: &str = "playbook.yml";

/// Directories whose YAML files are never playbooks: what ansible reads from them is roles,
/// collections, variables, files and templates.
const NOT_PLAYBOOK_DIRS: &[&str] = &[
    "roles",
    "collections",
    "group_vars",
    "host_vars",
    "files",
    "templates",
];

/// The most playbook rows one revision makes.
const MAX_PLAYBOOKS: usize = 10_000;

/// Where the controller keeps the revision of `digest` (a checked digest: 64 lower-case hex).
pub fn revision_path(data_dir: &Path, digest: &str) -> PathBuf {
    debug_assert!(tree::is_digest(digest));
    data_dir.join("revisions").join(format!("{digest}.tar"))
}

/// A project's git cache (a bare repository), fetched into by every sync of it.
fn git_cache(data_dir: &Path, project: &Project) -> PathBuf {
    data_dir
        .join("projects")
        .join(project.id.to_string())
        .join("git")
}

/// Why a sync failed, in words for the admin who reads `sync_error`.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{0}")]
    Refused(String),
    #[error("git {step} failed: {output}")]
    Git { step: &'static str, output: String },
    #[error("ansible-galaxy {kind} install -r {file} failed: {output}")]
    Galaxy {
        kind: &'static str,
        file: &'static str,
        output: String,
    },
    #[error("{program} could not be run on the controller: {source}")]
    Missing {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the tree was refused: {0}")]
    Tree(#[from] TreeError),
    #[error("the sync took longer than {0:?} and was stopped")]
    TimedOut(Duration),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ProjectError {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> ProjectError {
        let what = what.into();
        move |source| ProjectError::Io { what, source }
    }
}

/// Where a sync's tree comes from.
pub enum Source {
    /// The project's git repository, at its ref.
    Git,
    /// A tree already unpacked and writable (an upload, one playbook), consumed by the sync.
    Tree(tempfile::TempDir),
}

/// What a sync needs of the controller's settings.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub data_dir: PathBuf,
    pub time_limit: Duration,
    /// The project's git credential, opened (see [`crate::credential::opened_ssh_key`]): written
    /// 0600 into a private directory for the fetch only.
    pub git_key: Option<std::sync::Arc<zeroize::Zeroizing<String>>>,
}

/// A fresh working directory under the data directory (the same filesystem as the revisions,
/// so a packed revision is renamed into place, not copied).
pub fn work_dir(data_dir: &Path) -> Result<tempfile::TempDir, ProjectError> {
    let tmp = data_dir.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(ProjectError::io(format!("{}", tmp.display())))?;
    tempfile::Builder::new()
        .prefix("sync-")
        .tempdir_in(&tmp)
        .map_err(ProjectError::io(format!(
            "a directory in {}",
            tmp.display()
        )))
}

/// Removes what [`work_dir`] made and a crash left behind: the directories older than
/// `older_than` (a sync's time limit), which no running sync of any controller sharing this
/// data directory can still be using.
pub fn sweep_work_dirs(data_dir: &Path, older_than: Duration) -> std::io::Result<usize> {
    let tmp = data_dir.join("tmp");
    let entries = match std::fs::read_dir(&tmp) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for e in entries.flatten() {
        let stale = |m: std::fs::Metadata| {
            m.is_dir()
                && m.modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > older_than)
        };
        let sync_dir = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("sync-"))
            && std::fs::symlink_metadata(e.path()).is_ok_and(stale);
        if sync_dir {
            std::fs::remove_dir_all(e.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// What a sync made: the revision, and the servers of the project's inventory source (none
/// when the project names no inventory file) for the caller to record.
#[derive(Debug)]
pub struct Synced {
    pub revision: Revision,
    pub servers: Vec<outpost_api::NewServerRequest>,
}

/// Runs a sync the caller has claimed ([`Store::claim_sync`]) to its end: the new revision, or
/// the failure recorded on the project (the previous revision stays current). An inventory
/// file that ansible cannot read fails the sync like any other part of it.
pub async fn sync(
    store: &Store,
    settings: &SyncSettings,
    project: &Project,
    source: Source,
    actor: &Actor,
) -> Result<Synced, ProjectError> {
    let outcome = match tokio::time::timeout(
        settings.time_limit,
        build(store, settings, project, source, actor),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ProjectError::TimedOut(settings.time_limit)),
    };
    match outcome {
        Ok(synced) => {
            tracing::info!(project = %project.name, digest = %synced.revision.digest, servers = synced.servers.len(), "project synced");
            Ok(synced)
        }
        Err(e) => {
            tracing::warn!(project = %project.name, error = %e, "project sync failed");
            if let Err(se) = store.fail_sync(project.id, &e.to_string(), actor).await {
                tracing::error!(project = %project.name, error = %se, "cannot record a failed sync");
            }
            Err(e)
        }
    }
}

async fn build(
    store: &Store,
    settings: &SyncSettings,
    project: &Project,
    source: Source,
    actor: &Actor,
) -> Result<Synced, ProjectError> {
    let (work, commit) = match source {
        Source::Tree(dir) => (dir, None),
        Source::Git => {
            let url = project
                .git_url
                .as_deref()
                .ok_or_else(|| ProjectError::Refused("the project has no git URL".into()))?;
            let work = work_dir(&settings.data_dir)?;
            // The credential's key lives in its own 0700 directory for the fetch, and goes
            // with it (dropped on every path out of this block).
            let key_dir = match &settings.git_key {
                Some(key) => Some(git_key_file(&settings.data_dir, key)?),
                None => None,
            };
            let key_path = key_dir.as_ref().map(|d| d.path().join("id"));
            let remote = git::Remote::new(
                url,
                project.git_ref.as_deref(),
                key_path
                    .as_deref()
                    .or(project.git_key_path.as_deref().map(Path::new)),
                &settings.data_dir.join("projects").join("known_hosts"),
            )?;
            let cache = git_cache(&settings.data_dir, project);
            let commit = remote.fetch(&cache).await;
            drop(key_dir);
            let commit = commit?;
            let dest = work.path().to_owned();
            let cache2 = cache.clone();
            let commit2 = commit.clone();
            tokio::task::spawn_blocking(move || git::export(&cache2, &commit2, &dest))
                .await
                .map_err(|e| ProjectError::Refused(format!("the export stopped: {e}")))??;
            (work, Some(commit))
        }
    };
    galaxy::install(work.path()).await?;
    let servers = match &project.inventory_path {
        Some(inv) => {
            check_inventory(work.path(), inv)?;
            inventory::read(work.path(), inv).await?
        }
        None => Vec::new(),
    };

    let data_dir = settings.data_dir.clone();
    let kind = project.kind;
    let name = project.name.clone();
    let (packed, playbooks) = tokio::task::spawn_blocking(move || {
        let playbooks = find_playbooks(work.path(), kind, &name)?;
        let packed = pack_revision(work.path(), &data_dir)?;
        drop(work);
        Ok::<_, ProjectError>((packed, playbooks))
    })
    .await
    .map_err(|e| ProjectError::Refused(format!("packing stopped: {e}")))??;

    let revision = store
        .finish_sync(
            project.id,
            &NewRevision {
                digest: packed.digest,
                git_commit: commit,
                size_bytes: packed.size,
                entries: packed.entries,
            },
            &playbooks,
            actor,
        )
        .await?;
    Ok(Synced { revision, servers })
}

/// Writes a git credential's key, 0600, as `id` in a new 0700 directory (removed when the
/// returned handle drops): in memory (`/dev/shm`) where the machine has it, so the opened key
/// never reaches a disk; else under the data directory, swept at start-up after a crash.
fn git_key_file(data_dir: &Path, key: &str) -> Result<tempfile::TempDir, ProjectError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match tempfile::Builder::new()
        .prefix("outpost-gitkey-")
        .tempdir_in("/dev/shm")
    {
        Ok(d) => d,
        Err(_) => work_dir(data_dir)?,
    };
    let path = dir.path().join("id");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(ProjectError::io("the git credential's key file".to_owned()))?;
    f.write_all(key.as_bytes())
        .map_err(ProjectError::io("the git credential's key file".to_owned()))?;
    Ok(dir)
}

/// The project's inventory file must be a file of the tree.
fn check_inventory(tree: &Path, inventory: &str) -> Result<(), ProjectError> {
    let rel = relative_path(inventory).ok_or_else(|| {
        ProjectError::Refused(format!(
            "inventory_path {inventory:?} must be a relative path inside the project"
        ))
    })?;
    match std::fs::metadata(tree.join(rel)) {
        Ok(m) if m.is_file() => Ok(()),
        _ => Err(ProjectError::Refused(format!(
            "the inventory file {inventory} is not in the tree"
        ))),
    }
}

/// `p` as a path inside a tree: relative, no `..`, not empty.
pub fn relative_path(p: &str) -> Option<&Path> {
    use std::path::Component;
    let path = Path::new(p);
    let ok = !p.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    ok.then_some(path)
}

/// Packs `tree` into the revisions directory (once per digest: a revision file is never
/// rewritten) and returns what it made.
pub fn pack_revision(tree: &Path, data_dir: &Path) -> Result<tree::Packed, ProjectError> {
    let dir = data_dir.join("revisions");
    std::fs::create_dir_all(&dir).map_err(ProjectError::io(format!("{}", dir.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix(".pack-")
        .tempfile_in(&dir)
        .map_err(ProjectError::io(format!("a file in {}", dir.display())))?;
    let mut out = io::BufWriter::new(tmp);
    let packed = tree::pack_dir(tree, &mut out, &Limits::REVISION)?;
    let tmp = out.into_inner().map_err(|e| ProjectError::Io {
        what: "writing the revision".into(),
        source: e.into_error(),
    })?;
    tmp.as_file()
        .sync_all()
        .map_err(ProjectError::io("writing the revision"))?;
    let path = revision_path(data_dir, &packed.digest);
    if !path.exists() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o640));
        match tmp.persist_noclobber(&path) {
            Ok(_) => {}
            // Another sync made the same revision meanwhile: the same bytes.
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(ProjectError::Io {
                    what: format!("{}", path.display()),
                    source: e.error,
                })
            }
        }
    }
    Ok(packed)
}

/// The playbooks of a tree: `.yml`/`.yaml` files outside roles/, collections/, group_vars/,
/// host_vars/, files/, templates/ and hidden directories, whose YAML is a list of plays (each
/// a mapping, one naming `hosts` or importing a playbook). Links are left out (their target is
/// found where it is).
pub fn find_playbooks(
    tree: &Path,
    kind: ProjectKind,
    project: &str,
) -> Result<Vec<PlaybookFile>, ProjectError> {
    let mut found = Vec::new();
    if kind == ProjectKind::File {
        // One uploaded file, checked as a playbook when it was uploaded.
        let bytes =
            std::fs::read(tree.join(SINGLE_PLAYBOOK)).map_err(ProjectError::io(SINGLE_PLAYBOOK))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ProjectError::Refused("the playbook is not UTF-8 text".into()))?;
        playbook::check_playbook(text)
            .map_err(|e| ProjectError::Refused(format!("{SINGLE_PLAYBOOK}: {e}")))?;
        found.push((
            SINGLE_PLAYBOOK.to_owned(),
            hex::encode(Sha256::digest(&bytes)),
        ));
    } else {
        walk_playbooks(tree, "", &mut found)?;
    }
    found.sort();
    found.truncate(MAX_PLAYBOOKS);
    Ok(found
        .into_iter()
        .filter_map(|(file_path, file_hash)| {
            let name = if kind == ProjectKind::File {
                project.to_owned()
            } else {
                format!("{project}/{file_path}")
            };
            if name.chars().count() > 255 || file_path.chars().count() > 500 {
                tracing::warn!(
                    project,
                    file_path,
                    "a playbook whose name is too long is left out"
                );
                return None;
            }
            Some(PlaybookFile {
                name,
                file_path,
                file_hash,
            })
        })
        .collect())
}

fn walk_playbooks(
    dir: &Path,
    rel: &str,
    found: &mut Vec<(String, String)>,
) -> Result<(), ProjectError> {
    let entries = std::fs::read_dir(dir).map_err(ProjectError::io(rel_or_root(rel)))?;
    for entry in entries {
        let entry = entry.map_err(ProjectError::io(rel_or_root(rel)))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry.file_type().map_err(ProjectError::io(child.clone()))?;
        if ft.is_dir() {
            if name.starts_with('.') || NOT_PLAYBOOK_DIRS.contains(&name.as_str()) {
                continue;
            }
            walk_playbooks(&entry.path(), &child, found)?;
        } else if ft.is_file() && (name.ends_with(".yml") || name.ends_with(".yaml")) {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if len > outpost_api::yaml::Limits::FILE.max_bytes as u64 {
                continue;
            }
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if is_playbook(text) {
                found.push((child, hex::encode(Sha256::digest(&bytes))));
            }
        }
    }
    Ok(())
}

fn rel_or_root(rel: &str) -> String {
    if rel.is_empty() {
        "the project's root".into()
    } else {
        rel.to_owned()
    }
}

/// A one-file tree (`playbook.yml`) for an uploaded playbook, in a fresh working directory.
pub fn single_file_tree(
    data_dir: &Path,
    content: &[u8],
) -> Result<tempfile::TempDir, ProjectError> {
    let work = work_dir(data_dir)?;
    std::fs::write(work.path().join(SINGLE_PLAYBOOK), content)
        .map_err(ProjectError::io(SINGLE_PLAYBOOK))?;
    Ok(work)
}

/// One entry of a revision, as listed by [`list_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// "file", "dir" or "link".
    pub kind: &'static str,
}

/// The entries of a revision file, in its (canonical) order.
pub fn list_files(path: &Path) -> Result<Vec<FileEntry>, ProjectError> {
    let file = std::fs::File::open(path).map_err(ProjectError::io(format!(
        "revision file {}",
        path.display()
    )))?;
    let mut archive = tar::Archive::new(io::BufReader::new(file));
    let mut out = Vec::new();
    let bad = |e: io::Error| ProjectError::Io {
        what: format!("revision file {}", path.display()),
        source: e,
    };
    for entry in archive.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        if out.len() >= Limits::REVISION.max_entries as usize {
            break;
        }
        let kind = entry.header().entry_type();
        out.push(FileEntry {
            path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            size: entry.size(),
            kind: if kind.is_dir() {
                "dir"
            } else if kind.is_symlink() {
                "link"
            } else {
                "file"
            },
        });
    }
    Ok(out)
}

/// One file of a revision, if it is there and at most `max` bytes.
pub fn read_file(
    revision: &Path,
    file_path: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, ProjectError> {
    let file = std::fs::File::open(revision).map_err(ProjectError::io(format!(
        "revision file {}",
        revision.display()
    )))?;
    let bad = |e: io::Error| ProjectError::Io {
        what: format!("revision file {}", revision.display()),
        source: e,
    };
    let mut archive = tar::Archive::new(io::BufReader::new(file));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.header().entry_type().is_file() && *entry.path_bytes() == *file_path.as_bytes() {
            if entry.size() > max {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(entry.size() as usize);
            io::Read::read_to_end(&mut entry, &mut out).map_err(bad)?;
            return Ok(Some(out));
        }
    }
    Ok(None)
}

/// Adopts playbook rows made before projects into one-file projects (kind `file`), each with
/// a revision of its file. Idempotent: adopted rows are skipped, and a row adopted by another
/// controller at the same moment is left to it. A row whose file is missing or changed is
/// logged and left alone. Returns how many were adopted.
pub async fn adopt_unadopted(store: &Store, data_dir: &Path) -> Result<usize, ProjectError> {
    let mut adopted = 0;
    for pb in store.unadopted_playbooks().await? {
        let content = match tokio::fs::read(&pb.file_path).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(playbook = %pb.name, file = %pb.file_path, error = %e,
                    "a playbook's file is missing: it stays as it was, outside any project");
                continue;
            }
        };
        let hash = hex::encode(Sha256::digest(&content));
        if hash != pb.file_hash {
            tracing::warn!(playbook = %pb.name, file = %pb.file_path,
                "a playbook's file changed on disk since it was stored: it stays as it was");
            continue;
        }
        let dir = data_dir.to_owned();
        let packed = tokio::task::spawn_blocking(move || {
            let work = single_file_tree(&dir, &content)?;
            pack_revision(work.path(), &dir)
        })
        .await
        .map_err(|e| ProjectError::Refused(format!("packing stopped: {e}")))??;
        let rev = NewRevision {
            digest: packed.digest,
            git_commit: None,
            size_bytes: packed.size,
            entries: packed.entries,
        };
        match store
            .adopt_playbook(pb.id, &rev, SINGLE_PLAYBOOK, &Actor::system())
            .await?
        {
            Some(project) => {
                tracing::info!(playbook = %pb.name, %project, "playbook adopted into a one-file project");
                adopted += 1;
            }
            None => tracing::info!(playbook = %pb.name,
                "playbook not adopted: adopted meanwhile, or a project already has its name"),
        }
    }
    Ok(adopted)
}

#[cfg(test)]
mod tests;
