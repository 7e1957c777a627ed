//! Backups of one controller's state, and their restore: a consistent copy of the database
//! (`mariadb-dump --single-transaction` on MySQL, `VACUUM INTO` on SQLite), the PKI directory
//! (the CA, the controller's certificate, the credentials keys) and a manifest with each file's
//! checksum, the applied migrations and the row counts, in one 0700 directory of 0600 files.
//! A restore checks every checksum, and that it overwrites nothing, before it writes anything.

mod client;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::pki::PkiPaths;
use crate::store::census::Census;
use crate::{PoolConfig, Store, StoreError};

/// The manifest's format; a restore refuses others.
const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const MYSQL_DUMP: &str = "database.sql";
const SQLITE_COPY: &str = "database.sqlite";
const PKI: &str = "pki";
/// A manifest is a few KiB; anything larger is not one of ours.
const MANIFEST_LIMIT: u64 = 1024 * 1024;
/// The PKI directory holds a handful of files.
const PKI_FILES_LIMIT: usize = 256;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{0} exists and is not empty: back up into a new directory")]
    NotEmptyDir(PathBuf),
    #[error("cannot use {what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("invalid database URL {0}")]
    BadUrl(String),
    #[error("{0} is not installed or not on PATH: install the MariaDB client (apt-get install mariadb-client)")]
    ToolMissing(String),
    #[error("{program} failed: {detail}")]
    Client { program: String, detail: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{dir} is not a usable backup: {why}")]
    NotABackup { dir: PathBuf, why: String },
    #[error("{file} in the backup does not match its manifest ({why}): the backup is damaged; nothing was restored")]
    Damaged { file: String, why: String },
    #[error("this backup is of a {backup} database and the URL names a {target} one")]
    WrongBackend {
        backup: &'static str,
        target: &'static str,
    },
    #[error("the database {0} already holds tables: restore into an empty one (drop it first, or name another in the URL); nothing was restored")]
    DatabaseNotEmpty(String),
    #[error("{0} exists with other contents than the backup's: move it away to restore the backup's PKI; nothing was restored")]
    PkiDiffers(PathBuf),
}

impl BackupError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> BackupError {
        BackupError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, BackupError>;

/// What a backup holds, written last so that its presence means the backup is whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: DateTime<Utc>,
    /// `mysql` or `sqlite`.
    pub backend: String,
    pub migrations: Vec<i64>,
    /// Counted just before the copy began (equal to the copy's when nothing was writing).
    pub census: Census,
    /// Path inside the backup → size and SHA-256.
    pub files: BTreeMap<String, FileSum>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub bytes: u64,
    pub sha256: String,
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    /// Counted in the restored database.
    pub census: Census,
    /// PKI files written (those already present with the same contents are kept).
    pub pki_written: usize,
}

fn backend_name(url: &str) -> &'static str {
    if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "mysql"
    }
}

fn sqlite_path(url: &str) -> Option<PathBuf> {
    url.strip_prefix("sqlite:")
        .map(|p| PathBuf::from(p.trim_start_matches("//")))
}

/// Backs up the database of `store` (at `database_url`) and the PKI under `data_dir` into
/// `to`, a new or empty directory made 0700.
pub async fn backup(
    store: &Store,
    database_url: &str,
    data_dir: &Path,
    to: &Path,
) -> Result<Manifest> {
    make_private_dir(to)?;
    if fs::read_dir(to)
        .map_err(|e| BackupError::io(to.display().to_string(), e))?
        .next()
        .is_some()
    {
        return Err(BackupError::NotEmptyDir(to.to_owned()));
    }
    let migrations = store.applied_migrations().await?;
    let census = store.census().await?;
    let backend = backend_name(database_url);
    let mut files = BTreeMap::new();
    if backend == "mysql" {
        let conn = client::Connection::from_url(database_url)?;
        let out = create_private(&to.join(MYSQL_DUMP))?;
        let conn_dump = tokio::task::spawn_blocking(move || conn.dump(out));
        conn_dump
            .await
            .map_err(|e| BackupError::io("the dump task", io::Error::other(e)))??;
        files.insert(MYSQL_DUMP.to_owned(), sum(&to.join(MYSQL_DUMP))?);
    } else {
        let path = to.join(SQLITE_COPY);
        store.snapshot_sqlite(&path).await?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| BackupError::io(path.display().to_string(), e))?;
        files.insert(SQLITE_COPY.to_owned(), sum(&path)?);
    }
    let pki = PkiPaths::new(data_dir).dir;
    if pki.is_dir() {
        make_private_dir(&to.join(PKI))?;
        for name in pki_files(&pki)? {
            let inside = format!("{PKI}/{name}");
            copy_private(&pki.join(&name), &to.join(&inside))?;
            files.insert(inside.clone(), sum(&to.join(&inside))?);
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        created_at: Utc::now(),
        backend: backend.to_owned(),
        migrations,
        census,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::io("the manifest", io::Error::other(e)))?;
    let tmp = to.join(".manifest.json.tmp");
    write_private(&tmp, &text)?;
    fs::rename(&tmp, to.join(MANIFEST))
        .map_err(|e| BackupError::io(to.join(MANIFEST).display().to_string(), e))?;
    Ok(manifest)
}

/// Restores the backup in `from` into the (empty) database at `database_url` and the PKI
/// directory under `data_dir`. Every file's checksum, the database's emptiness and the PKI
/// files already present are checked before anything is written.
pub async fn restore(
    database_url: &str,
    pool: &PoolConfig,
    data_dir: &Path,
    from: &Path,
) -> Result<Restored> {
    let manifest = read_manifest(from)?;
    let target = backend_name(database_url);
    if manifest.backend != target {
        return Err(BackupError::WrongBackend {
            backup: if manifest.backend == "sqlite" {
                "sqlite"
            } else {
                "mysql"
            },
            target,
        });
    }
    for (name, expected) in &manifest.files {
        let got = sum(&from.join(name)).map_err(|e| BackupError::Damaged {
            file: name.clone(),
            why: e.to_string(),
        })?;
        if &got != expected {
            return Err(BackupError::Damaged {
                file: name.clone(),
                why: format!(
                    "{} bytes, sha256 {}; the manifest says {} bytes, sha256 {}",
                    got.bytes, got.sha256, expected.bytes, expected.sha256
                ),
            });
        }
    }
    // The PKI: refuse before writing anything if a file there differs.
    let pki = PkiPaths::new(data_dir).dir;
    let mut to_write = Vec::new();
    for name in manifest.files.keys() {
        let Some(file) = name.strip_prefix("pki/") else {
            continue;
        };
        let dest = pki.join(file);
        match fs::read(&dest) {
            Ok(existing) => {
                let backed = fs::read(from.join(name))
                    .map_err(|e| BackupError::io(from.join(name).display().to_string(), e))?;
                if existing != backed {
                    return Err(BackupError::PkiDiffers(dest));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => to_write.push((name.clone(), dest)),
            Err(e) => return Err(BackupError::io(dest.display().to_string(), e)),
        }
    }
    if target == "mysql" {
        let conn = client::Connection::from_url(database_url)?;
        // The name is a checked identifier (letters, digits, '_', '$'): safe between quotes.
        let conn = tokio::task::spawn_blocking(move || -> Result<client::Connection> {
            let tables = conn.query(&format!(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{}'",
                conn.database
            ))?;
            if tables != "0" {
                return Err(BackupError::DatabaseNotEmpty(conn.database.clone()));
            }
            Ok(conn)
        })
        .await
        .map_err(|e| BackupError::io("the restore task", io::Error::other(e)))??;
        write_pki(from, &pki, &to_write)?;
        let dump = File::open(from.join(MYSQL_DUMP))
            .map_err(|e| BackupError::io(from.join(MYSQL_DUMP).display().to_string(), e))?;
        tokio::task::spawn_blocking(move || -> Result<()> {
            conn.query(&format!(
                "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
                conn.database
            ))?;
            conn.load(dump)
        })
        .await
        .map_err(|e| BackupError::io("the restore task", io::Error::other(e)))??;
    } else {
        let path = sqlite_path(database_url)
            .ok_or_else(|| BackupError::BadUrl(crate::store::redact_url(database_url)))?;
        if fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false) {
            return Err(BackupError::DatabaseNotEmpty(path.display().to_string()));
        }
        write_pki(from, &pki, &to_write)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            make_private_dir(parent)?;
        }
        copy_private(&from.join(SQLITE_COPY), &path)?;
    }
    let store = Store::connect(database_url, pool).await?;
    let census = store.census().await;
    store.close().await;
    Ok(Restored {
        manifest,
        census: census?,
        pki_written: to_write.len(),
    })
}

fn write_pki(from: &Path, pki: &Path, files: &[(String, PathBuf)]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    make_private_dir(pki)?;
    for (name, dest) in files {
        copy_private(&from.join(name), dest)?;
    }
    Ok(())
}

/// Reads and checks the manifest: its size before parsing, its format, and that every file it
/// names stays inside the backup.
fn read_manifest(from: &Path) -> Result<Manifest> {
    let not = |why: String| BackupError::NotABackup {
        dir: from.to_owned(),
        why,
    };
    let path = from.join(MANIFEST);
    let f = File::open(&path).map_err(|e| not(format!("cannot open {MANIFEST}: {e}")))?;
    let mut text = Vec::new();
    f.take(MANIFEST_LIMIT + 1)
        .read_to_end(&mut text)
        .map_err(|e| not(format!("cannot read {MANIFEST}: {e}")))?;
    if text.len() as u64 > MANIFEST_LIMIT {
        return Err(not(format!(
            "{MANIFEST} is larger than {MANIFEST_LIMIT} bytes"
        )));
    }
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| not(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(not(format!(
            "format {} (this build reads format {FORMAT})",
            manifest.format
        )));
    }
    let database = if manifest.backend == "sqlite" {
        SQLITE_COPY
    } else {
        MYSQL_DUMP
    };
    if !manifest.files.contains_key(database) {
        return Err(not(format!("the manifest names no {database}")));
    }
    for name in manifest.files.keys() {
        if !allowed_name(name) {
            return Err(not(format!(
                "the manifest names {name:?}, outside the backup's files"
            )));
        }
    }
    Ok(manifest)
}

/// A file a backup may hold: the database copy, or one plain file name under `pki/`.
fn allowed_name(name: &str) -> bool {
    if name == MYSQL_DUMP || name == SQLITE_COPY {
        return true;
    }
    name.strip_prefix("pki/").is_some_and(|f| {
        !f.is_empty() && f != "." && f != ".." && !f.contains('/') && !f.contains('\0')
    })
}

/// The plain files of the PKI directory (its subdirectories are not the controller's).
fn pki_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| BackupError::io(dir.display().to_string(), e))? {
        let entry = entry.map_err(|e| BackupError::io(dir.display().to_string(), e))?;
        let kind = entry
            .file_type()
            .map_err(|e| BackupError::io(entry.path().display().to_string(), e))?;
        if !kind.is_file() {
            continue;
        }
        if let Some(name) = entry
            .file_name()
            .to_str()
            .filter(|n| allowed_name(&format!("pki/{n}")))
        {
            names.push(name.to_owned());
        }
        if names.len() > PKI_FILES_LIMIT {
            return Err(BackupError::io(
                dir.display().to_string(),
                io::Error::other(format!("more than {PKI_FILES_LIMIT} files")),
            ));
        }
    }
    names.sort();
    Ok(names)
}

fn make_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| BackupError::io(dir.display().to_string(), e))
}

fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BackupError::io(path.display().to_string(), e))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = create_private(path)?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| BackupError::io(path.display().to_string(), e))
}

/// Copies `from` to a new file `to`, made 0600 before any byte is written.
fn copy_private(from: &Path, to: &Path) -> Result<()> {
    let mut src = File::open(from).map_err(|e| BackupError::io(from.display().to_string(), e))?;
    let _ = fs::remove_file(to).or_else(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    });
    let mut dst = create_private(to)?;
    io::copy(&mut src, &mut dst)
        .and_then(|_| dst.sync_all())
        .map_err(|e| BackupError::io(to.display().to_string(), e))?;
    Ok(())
}

fn sum(path: &Path) -> Result<FileSum> {
    let mut f = File::open(path).map_err(|e| BackupError::io(path.display().to_string(), e))?;
    let mut hasher = Sha256::new();
    let bytes = io::copy(&mut f, &mut hasher)
        .map_err(|e| BackupError::io(path.display().to_string(), e))?;
    Ok(FileSum {
        bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_names_only_files_inside_the_backup() {
        assert!(allowed_name("database.sql"));
        assert!(allowed_name("pki/ca.key"));
        for bad in [
            "../x",
            "pki/../../etc/passwd",
            "pki/",
            "pki/..",
            "/etc/passwd",
            "pki/a/b",
        ] {
            assert!(!allowed_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_damaged_or_foreign_manifest_is_refused_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_manifest(dir.path()).unwrap_err();
        assert!(matches!(err, BackupError::NotABackup { .. }), "{err}");
        let m = serde_json::json!({"format": 1, "created_at": Utc::now(), "backend": "mysql",
            "migrations": [1], "census": Census::default(),
            "files": {"database.sql": {"bytes": 1, "sha256": "x"}, "pki/../../x": {"bytes": 1, "sha256": "x"}}});
        fs::write(dir.path().join(MANIFEST), m.to_string()).unwrap();
        let err = read_manifest(dir.path()).unwrap_err().to_string();
        assert!(err.contains("outside the backup"), "{err}");
        fs::write(
            dir.path().join(MANIFEST),
            vec![b' '; (MANIFEST_LIMIT + 10) as usize],
        )
        .unwrap();
        let err = read_manifest(dir.path()).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }
}
