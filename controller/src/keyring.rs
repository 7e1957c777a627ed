//! The keys that seal credentials at rest: AEAD (ChaCha20-Poly1305, from ring) under 256-bit
//! keys kept as files in the PKI directory, never in the database.
//!
//! `credentials.key` is the current key: new secrets are sealed with it. A rotation keeps the
//! previous key beside it as `credentials-<id>.key`, so a database backup taken before the
//! rotation stays readable. Every sealed value names its key by id (a hash of the key, not the
//! key), so a wrong or missing key file is told apart from a damaged row, at start-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

/// The current key's file name in the PKI directory.
pub const CURRENT_FILE: &str = "credentials.key";
const HEADER: &str = "outpost credentials key v1";
/// The first byte of a sealed value: its format.
const FORMAT_V1: u8 = 1;

#[derive(Debug, Error)]
pub enum KeyringError {
    #[error("credentials key file {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an Outpost credentials key file ({why})")]
    BadKeyFile { path: String, why: String },
    #[error("{path} is readable by others (mode {mode:o}): credentials keys must be 0600")]
    Exposed { path: String, mode: u32 },
    #[error(
        "no credentials key in {dir}: the stored credentials were sealed with key {needed}; \
         restore its key file ({CURRENT_FILE} or credentials-{needed}.key) from the controller \
         or backup it came from"
    )]
    Missing { dir: String, needed: String },
    #[error(
        "credentials sealed with key {needed} cannot be opened: the keys in {dir} are {have}; \
         restore the key file these rows were sealed with (credentials-{needed}.key)"
    )]
    UnknownKey {
        dir: String,
        needed: String,
        have: String,
    },
    #[error("a sealed credential does not open with key {key}: the row was altered or belongs to another credential")]
    Tampered { key: String },
    #[error("a sealed credential is malformed ({0})")]
    Malformed(&'static str),
    #[error("the system random generator failed")]
    Random,
}

/// One key and its id.
struct Key {
    id: String,
    aead: LessSafeKey,
}

impl Key {
    fn from_bytes(bytes: &[u8; 32]) -> Key {
        let id = hex::encode(
            &Sha256::digest([b"outpost credentials key id:".as_slice(), bytes].concat())[..8],
        );
        // 32 bytes is ChaCha20-Poly1305's key length: this cannot fail.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte key");
        Key {
            id,
            aead: LessSafeKey::new(unbound),
        }
    }
}

/// A sealed value and the id of the key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

/// The keys of one PKI directory: the current one and any kept from earlier rotations.
pub struct Keyring {
    dir: PathBuf,
    current: Key,
    retired: BTreeMap<String, Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("dir", &self.dir)
            .field("current", &self.current.id)
            .field("retired", &self.retired.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Loads the keys in `dir`; `Ok(None)` when there is no current key file.
    pub fn load(dir: &Path) -> Result<Option<Keyring>, KeyringError> {
        let current_path = dir.join(CURRENT_FILE);
        if !current_path.exists() {
            return Ok(None);
        }
        let current = read_key(&current_path)?;
        let mut retired = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(io(dir))?;
        for entry in entries {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("credentials-"))
                .and_then(|n| n.strip_suffix(".key"))
            else {
                continue;
            };
            let key = read_key(&entry.path())?;
            if key.id != id {
                return Err(KeyringError::BadKeyFile {
                    path: entry.path().display().to_string(),
                    why: format!("its key's id is {}, not the {id} its name says", key.id),
                });
            }
            if key.id != current.id {
                retired.insert(key.id.clone(), key);
            }
        }
        Ok(Some(Keyring {
            dir: dir.to_owned(),
            current,
            retired,
            rng: SystemRandom::new(),
        }))
    }

    /// Loads the keys in `dir`, first writing a new current key when there is none.
    pub fn load_or_create(dir: &Path) -> Result<Keyring, KeyringError> {
        if let Some(k) = Keyring::load(dir)? {
            return Ok(k);
        }
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
        }
        write_new_key(&dir.join(CURRENT_FILE))?;
        Keyring::load(dir)?.ok_or(KeyringError::Missing {
            dir: dir.display().to_string(),
            needed: "(new)".into(),
        })
    }

    /// The id of the key new secrets are sealed with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a value sealed with `key_id` can be opened here.
    pub fn has(&self, key_id: &str) -> bool {
        self.current.id == key_id || self.retired.contains_key(key_id)
    }

    /// Seals `plain` with the current key. `context` binds the value to its place (the
    /// credential's uuid and kind), so a sealed value copied into another row does not open.
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Result<Sealed, KeyringError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| KeyringError::Random)?;
        let mut buf = plain.to_vec();
        self.current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut buf,
            )
            .map_err(|_| KeyringError::Malformed("too long to seal"))?;
        let mut bytes = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        bytes.push(FORMAT_V1);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&buf);
        Ok(Sealed {
            key_id: self.current.id.clone(),
            bytes,
        })
    }

    /// Opens a sealed value with the key that sealed it.
    pub fn open(
        &self,
        sealed: &Sealed,
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let key = if sealed.key_id == self.current.id {
            &self.current
        } else {
            self.retired
                .get(&sealed.key_id)
                .ok_or_else(|| KeyringError::UnknownKey {
                    dir: self.dir.display().to_string(),
                    needed: sealed.key_id.clone(),
                    have: self.ids().join(", "),
                })?
        };
        let (format, rest) = sealed
            .bytes
            .split_first()
            .ok_or(KeyringError::Malformed("empty"))?;
        if *format != FORMAT_V1 {
            return Err(KeyringError::Malformed("unknown format"));
        }
        if rest.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(KeyringError::Malformed("too short"));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| KeyringError::Malformed("bad nonce"))?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = key
            .aead
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| KeyringError::Tampered {
                key: key.id.clone(),
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Every key id known here, the current one first.
    pub fn ids(&self) -> Vec<String> {
        std::iter::once(self.current.id.clone())
            .chain(self.retired.keys().cloned())
            .collect()
    }

    /// Writes a new key beside the others (as a retired-named file, so that a crash at any
    /// point leaves every key on disk) and returns the keyring with it as current. Nothing on
    /// disk names it current until [`Keyring::promote`].
    pub fn with_new_key(&self) -> Result<Keyring, KeyringError> {
        let tmp = self.dir.join(".credentials-new.key");
        let _ = std::fs::remove_file(&tmp);
        write_new_key(&tmp)?;
        let key = read_key(&tmp)?;
        let named = self.dir.join(format!("credentials-{}.key", key.id));
        std::fs::rename(&tmp, &named).map_err(io(&named))?;
        let mut retired = BTreeMap::new();
        for id in self.ids() {
            if let Some(k) = self.load_by_id(&id)? {
                retired.insert(id, k);
            }
        }
        Ok(Keyring {
            dir: self.dir.clone(),
            current: key,
            retired,
            rng: SystemRandom::new(),
        })
    }

    /// Makes this keyring's current key the directory's `credentials.key`; the key that was
    /// current stays as `credentials-<id>.key` for backups sealed with it.
    pub fn promote(&self) -> Result<(), KeyringError> {
        let current_path = self.dir.join(CURRENT_FILE);
        let old = read_key(&current_path)?;
        if old.id == self.current.id {
            return Ok(());
        }
        let old_named = self.dir.join(format!("credentials-{}.key", old.id));
        if !old_named.exists() {
            std::fs::copy(&current_path, &old_named).map_err(io(&old_named))?;
            set_private(&old_named)?;
        }
        let new_named = self
            .dir
            .join(format!("credentials-{}.key", self.current.id));
        // rename(2) replaces atomically: there is always a current key file.
        std::fs::rename(&new_named, &current_path).map_err(io(&current_path))
    }

    fn load_by_id(&self, id: &str) -> Result<Option<Key>, KeyringError> {
        let current_path = self.dir.join(CURRENT_FILE);
        let named = self.dir.join(format!("credentials-{id}.key"));
        for path in [named, current_path] {
            if path.exists() {
                let k = read_key(&path)?;
                if k.id == id {
                    return Ok(Some(k));
                }
            }
        }
        Ok(None)
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeyringError + '_ {
    move |source| KeyringError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn set_private(path: &Path) -> Result<(), KeyringError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))
}

fn read_key(path: &Path) -> Result<Key, KeyringError> {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyringError::Exposed {
            path: path.display().to_string(),
            mode,
        });
    }
    if meta.len() > 4096 {
        return Err(KeyringError::BadKeyFile {
            path: path.display().to_string(),
            why: "too large".into(),
        });
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io(path))?);
    let bad = |why: &str| KeyringError::BadKeyFile {
        path: path.display().to_string(),
        why: why.into(),
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(bad("its first line is not the header"));
    }
    let encoded = lines.next().ok_or_else(|| bad("no key line"))?;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad("the key line is not base64"))?,
    );
    let bytes: &[u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| bad("the key is not 32 bytes"))?;
    Ok(Key::from_bytes(bytes))
}

fn write_new_key(path: &Path) -> Result<(), KeyringError> {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| KeyringError::Random)?;
    let text = Zeroizing::new(format!(
        "{HEADER}\n{}\n",
        base64::engine::general_purpose::STANDARD.encode(bytes.as_ref())
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path()).unwrap();
        let sealed = ring.seal(b"hunter2", b"cred-1").unwrap();
        assert_eq!(sealed.key_id, ring.current_id());
        assert!(!sealed.bytes.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(&ring.open(&sealed, b"cred-1").unwrap()[..], b"hunter2");
        // Another row's context, a flipped bit: refused, never garbage.
        assert!(matches!(
            ring.open(&sealed, b"cred-2"),
            Err(KeyringError::Tampered { .. })
        ));
        let mut flipped = sealed.clone();
        let last = flipped.bytes.len() - 1;
        flipped.bytes[last] ^= 1;
        assert!(matches!(
            ring.open(&flipped, b"cred-1"),
            Err(KeyringError::Tampered { .. })
        ));
        // Two seals of one value differ (fresh nonces).
        assert_ne!(
            ring.seal(b"hunter2", b"cred-1").unwrap().bytes,
            sealed.bytes
        );
        // Another directory's key is told apart by id.
        let other = tempfile::tempdir().unwrap();
        let other = Keyring::load_or_create(other.path()).unwrap();
        assert!(matches!(
            other.open(&sealed, b"cred-1"),
            Err(KeyringError::UnknownKey { .. })
        ));
    }

    #[test]
    fn a_rotation_keeps_the_old_key_for_old_values_and_seals_with_the_new() {
        let dir = tempfile::tempdir().unwrap();
        let old = Keyring::load_or_create(dir.path()).unwrap();
        let before = old.seal(b"secret", b"c").unwrap();
        let new = old.with_new_key().unwrap();
        assert_ne!(new.current_id(), old.current_id());
        assert!(new.has(old.current_id()));
        new.promote().unwrap();
        let reloaded = Keyring::load(dir.path()).unwrap().unwrap();
        assert_eq!(reloaded.current_id(), new.current_id());
        assert_eq!(&reloaded.open(&before, b"c").unwrap()[..], b"secret");
        let after = reloaded.seal(b"secret", b"c").unwrap();
        assert_eq!(after.key_id, new.current_id());
        // The old key file alone (a backup's) still opens what it sealed.
        let old_file = dir
            .path()
            .join(format!("credentials-{}.key", old.current_id()));
        let backup = tempfile::tempdir().unwrap();
        let dst = backup.path().join(CURRENT_FILE);
        std::fs::copy(&old_file, &dst).unwrap();
        set_private(&dst).unwrap();
        let from_backup = Keyring::load(backup.path()).unwrap().unwrap();
        assert_eq!(&from_backup.open(&before, b"c").unwrap()[..], b"secret");
        assert!(from_backup.open(&after, b"c").is_err());
    }

    #[test]
    fn key_files_must_be_private_and_well_formed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(Keyring::load(dir.path()).unwrap().is_none());
        Keyring::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(CURRENT_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Keyring::load(dir.path()),
            Err(KeyringError::Exposed { .. })
        ));
        std::fs::write(&path, "garbage\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Keyring::load(dir.path()),
            Err(KeyringError::BadKeyFile { .. })
        ));
    }
}
