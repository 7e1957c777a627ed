//! A job's credentials on disk: the SSH key, become password, vault passwords and secret survey
//! answers an assignment
//! carries are written into a private directory of the job under the secrets root (tmpfs when
//! the bastion has one), handed to ansible-playbook as paths, and removed when the run ends —
//! or, after a crash, at the agent's next start.
//!
//! ```text
//! <root>/                        0700: $RUNTIME_DIRECTORY/secrets, else
//!                                /dev/shm/outpost-agent-<uid>/<agent uuid>, else <state>/secrets
//! <root>/<job>/                  0700, while the job runs
//! <root>/<job>/ssh_key           0600, already opened with its passphrase
//! <root>/<job>/become_password   0600
//! <root>/<job>/vault-<id>        0600, one per vault id
//! <root>/<job>/secret_vars.yml   0600, a template's secret answers (`!unsafe` YAML vars)
//! ```
//!
//! No secret is ever put in an error message, a log line, argv or the environment: only paths.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use outpost_protocol::message::{valid_vault_id, JobSecrets, SshKeySecret};
use thiserror::Error;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Why a job's secrets could not be put in place, or the secrets root cannot be used. The
/// texts name paths and what is wrong, never a secret's content.
#[derive(Debug, Error)]
pub enum SecretsError {
    #[error("secrets directory {path}: {reason}")]
    Root { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("vault id {0:?} is refused: 1 to 64 letters, digits, '_', '-' or '.'")]
    VaultId(String),
    #[error("vault id {0:?} is given twice")]
    DuplicateVaultId(String),
    #[error("the SSH key {0}")]
    SshKey(KeyProblem),
}

/// What is wrong with a job's SSH key (never the key or its passphrase).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    #[error("is neither an OpenSSH nor a PEM private key")]
    NotAKey,
    #[error("is not a readable OpenSSH private key")]
    Malformed,
    #[error("is encrypted and its credential has no passphrase")]
    NeedsPassphrase,
    #[error("cannot be opened with its passphrase (wrong passphrase?)")]
    WrongPassphrase,
    #[error("is an encrypted PEM key, which the agent cannot open: store it in OpenSSH form (`ssh-keygen -p -f KEY` rewrites it so)")]
    EncryptedPem,
    #[error("could not be opened: the agent stopped while decrypting it")]
    Interrupted,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretsError + '_ {
    move |source| SecretsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn refuse(path: &Path, reason: impl Into<String>) -> SecretsError {
    SecretsError::Root {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// `statfs(2)`'s filesystem type of a tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Where the jobs' secrets go: a directory private to the agent's user, chosen once at start-up.
#[derive(Debug, Clone)]
pub struct SecretsRoot {
    path: PathBuf,
    /// On a disk rather than in memory: secrets may outlive the agent in the disk's blocks.
    on_disk: bool,
}

impl SecretsRoot {
    /// The root for this agent: `explicit` (`--secrets-dir`) when given; else in memory when
    /// the bastion offers it — systemd's `RuntimeDirectory=` (`$RUNTIME_DIRECTORY`), or
    /// /dev/shm when it is a writable tmpfs (one directory per agent, so two agents of one user
    /// never sweep each other's); else `<state>/secrets`, on disk, with a warning.
    pub fn choose(
        explicit: Option<&Path>,
        state_root: &Path,
        agent: Uuid,
    ) -> Result<SecretsRoot, SecretsError> {
        let shm = Path::new("/dev/shm");
        let root = choose_among(
            explicit,
            std::env::var_os("RUNTIME_DIRECTORY").as_deref(),
            is_writable_tmpfs(shm).then_some(shm),
            state_root,
            agent,
        )?;
        if root.on_disk {
            tracing::warn!(dir = %root.path.display(), "no tmpfs for job secrets (no $RUNTIME_DIRECTORY, /dev/shm unusable): SSH keys and passwords are written to disk while jobs run; pass --secrets-dir to put them on a tmpfs");
        } else {
            tracing::info!(dir = %root.path.display(), "job secrets go to memory-backed storage");
        }
        Ok(root)
    }

    /// Uses `path` as the root, creating it 0700 if need be. Refused when it is a symbolic
    /// link, not a directory, not the agent's user's, or open to its group or others.
    pub fn open(path: &Path) -> Result<SecretsRoot, SecretsError> {
        private_dir(path)?;
        Ok(SecretsRoot {
            path: path.to_owned(),
            on_disk: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the root is on a disk (the fallback) rather than in memory.
    pub fn on_disk(&self) -> bool {
        self.on_disk
    }

    /// The directory a job's secrets go to.
    pub fn job_dir(&self, job: Uuid) -> PathBuf {
        self.path.join(job.to_string())
    }

    /// Removes every job directory left under the root: called at start-up, before any job
    /// runs, so the secrets of jobs a killed agent was running do not outlive it. Entries not
    /// named as a job are left alone (the root may be an operator's directory). Returns how
    /// many were removed.
    pub fn sweep(&self) -> Result<usize, SecretsError> {
        let mut n = 0;
        for entry in std::fs::read_dir(&self.path).map_err(io(&self.path))? {
            let entry = entry.map_err(io(&self.path))?;
            let name = entry.file_name();
            if name
                .to_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .is_none()
            {
                continue;
            }
            wipe(&entry.path())?;
            n += 1;
        }
        Ok(n)
    }

    /// Writes a job's secrets into its directory and returns the guard that holds them for the
    /// run. With no secrets nothing is written. The SSH key is decrypted first, off the async
    /// threads (bcrypt-pbkdf is slow on purpose), so a key that does not open fails the job
    /// before anything is on disk.
    pub async fn materialise(
        &self,
        job: Uuid,
        secrets: &JobSecrets,
    ) -> Result<JobSecretFiles, SecretsError> {
        if secrets.is_empty() {
            return Ok(JobSecretFiles::none());
        }
        for (i, v) in secrets.vault.iter().enumerate() {
            if !valid_vault_id(&v.id) {
                let shown: String = v.id.chars().take(80).collect();
                return Err(SecretsError::VaultId(shown));
            }
            if secrets.vault[..i].iter().any(|w| w.id == v.id) {
                return Err(SecretsError::DuplicateVaultId(v.id.clone()));
            }
        }
        let key = match &secrets.ssh_key {
            Some(k) => Some(open_key(k).await.map_err(SecretsError::SshKey)?),
            None => None,
        };
        let dir = self.job_dir(job);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            // An earlier attempt of the same job: its leftovers go, the directory is remade.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                wipe(&dir)?;
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .map_err(io(&dir))?;
            }
            Err(e) => return Err(io(&dir)(e)),
        }
        // From here on the guard owns the directory: any error below removes it.
        let mut files = JobSecretFiles {
            dir: Some(dir),
            args: Vec::new(),
        };
        if let Some(key) = key {
            let path = files.write("ssh_key", key.as_bytes())?;
            files.args.push("--private-key".into());
            files.args.push(path.into_os_string());
        }
        if let Some(pw) = &secrets.become_password {
            let path = files.write("become_password", pw.as_bytes())?;
            files.args.push("--become-password-file".into());
            files.args.push(path.into_os_string());
        }
        if !secrets.vars.is_empty() {
            // Data, like every launch value: each string `!unsafe`, so ansible never evaluates
            // a template an answer holds. Last on the command line: they win over the others.
            let mut map = serde_json::Map::new();
            for v in &secrets.vars {
                map.insert(v.name.clone(), serde_json::Value::String(v.value.clone()));
            }
            let text = Zeroizing::new(crate::vars::unsafe_yaml(&map));
            for (_, v) in map.iter_mut() {
                if let serde_json::Value::String(s) = v {
                    zeroize::Zeroize::zeroize(s);
                }
            }
            let path = files.write("secret_vars.yml", text.as_bytes())?;
            let mut arg = OsString::from("@");
            arg.push(path.as_os_str());
            files.args.push("--extra-vars".into());
            files.args.push(arg);
        }
        for v in &secrets.vault {
            let path = files.write(&format!("vault-{}", v.id), v.password.as_bytes())?;
            // ansible splits ID@FILE at the first '@', which a valid id never holds.
            let mut arg = OsString::from(format!("{}@", v.id));
            arg.push(path.as_os_str());
            files.args.push("--vault-id".into());
            files.args.push(arg);
        }
        Ok(files)
    }
}

/// The choice of [`SecretsRoot::choose`], with what it looks at given.
fn choose_among(
    explicit: Option<&Path>,
    runtime_dir: Option<&std::ffi::OsStr>,
    shm: Option<&Path>,
    state_root: &Path,
    agent: Uuid,
) -> Result<SecretsRoot, SecretsError> {
    if let Some(p) = explicit {
        return SecretsRoot::open(p);
    }
    // systemd lists one path per `RuntimeDirectory=` entry, separated by ':'. A directory
    // inside it, made by the agent, is 0700 whatever `RuntimeDirectoryMode=` says.
    let runtime = runtime_dir
        .and_then(|v| v.to_str())
        .and_then(|v| v.split(':').next())
        .filter(|v| !v.is_empty());
    if let Some(rt) = runtime {
        return SecretsRoot::open(&Path::new(rt).join("secrets"));
    }
    if let Some(shm) = shm {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        let base = shm.join(format!("outpost-agent-{uid}"));
        private_dir(&base)?;
        return SecretsRoot::open(&base.join(agent.to_string()));
    }
    let mut root = SecretsRoot::open(&state_root.join("secrets"))?;
    root.on_disk = true;
    Ok(root)
}

/// Whether `dir` is a tmpfs the agent may create entries in.
fn is_writable_tmpfs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) fills the zeroed struct it is given; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    // The field's integer type differs between targets.
    #[allow(clippy::unnecessary_cast)]
    let tmpfs = st.f_type as i64 == TMPFS_MAGIC;
    // SAFETY: access(2) only reads the path.
    tmpfs && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0
}

/// Creates `path` 0700 if missing, then checks it is a real directory, the agent's user's and
/// closed to everyone else. A directory that exists but is open is refused rather than
/// tightened: someone else may already have looked inside, or hold a way in.
fn private_dir(path: &Path) -> Result<(), SecretsError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => {}
        // A link or a file in the way: said below, more clearly than the OS would.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(path, format!("cannot create it: {e}"))),
    }
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if meta.file_type().is_symlink() {
        return Err(refuse(path, "is a symbolic link; give the real directory"));
    }
    if !meta.is_dir() {
        return Err(refuse(path, "is not a directory"));
    }
    // SAFETY: as in `choose_among`.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(refuse(
            path,
            format!(
                "belongs to uid {}, not to the agent's user (uid {uid})",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(
            path,
            format!(
                "is open to its group or others (mode {:o}); `chmod 700` it or choose another",
                meta.mode() & 0o777
            ),
        ));
    }
    Ok(())
}

/// Opens the key with its passphrase, on a blocking thread.
async fn open_key(secret: &SshKeySecret) -> Result<Zeroizing<String>, KeyProblem> {
    let text = Zeroizing::new(secret.key.clone());
    let passphrase = secret.passphrase.clone().map(Zeroizing::new);
    tokio::task::spawn_blocking(move || {
        open_key_now(&text, passphrase.as_ref().map(|p| p.as_str()))
    })
    .await
    .map_err(|_| KeyProblem::Interrupted)?
}

/// The key as ssh reads it without asking anything: an OpenSSH key decrypted with its
/// passphrase (when it has one), or an unencrypted PEM key as it is.
fn open_key_now(text: &str, passphrase: Option<&str>) -> Result<Zeroizing<String>, KeyProblem> {
    let text = text.trim();
    if text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        let key = ssh_key::PrivateKey::from_openssh(text).map_err(|_| KeyProblem::Malformed)?;
        let key = if key.is_encrypted() {
            let pass = passphrase.ok_or(KeyProblem::NeedsPassphrase)?;
            key.decrypt(pass).map_err(|_| KeyProblem::WrongPassphrase)?
        } else {
            key
        };
        return key
            .to_openssh(ssh_key::LineEnding::LF)
            .map_err(|_| KeyProblem::Malformed);
    }
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    if !(first.starts_with("-----BEGIN ") && first.ends_with(" PRIVATE KEY-----")) {
        return Err(KeyProblem::NotAKey);
    }
    // PKCS#8 says so in its first line, the traditional forms in a header.
    if first.contains("ENCRYPTED")
        || text
            .lines()
            .any(|l| l.trim().starts_with("Proc-Type:") && l.contains("ENCRYPTED"))
    {
        return Err(KeyProblem::EncryptedPem);
    }
    // Line by line, so CRLF becomes LF; ssh wants the final newline.
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 1));
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// A job's secrets on disk, for as long as its run: the arguments that point ansible-playbook
/// at them, and the directory, removed by [`JobSecretFiles::remove`] or, failing that, on drop
/// (whatever way the run ends).
#[derive(Debug)]
pub struct JobSecretFiles {
    dir: Option<PathBuf>,
    args: Vec<OsString>,
}

impl JobSecretFiles {
    /// A job without secrets.
    pub fn none() -> JobSecretFiles {
        JobSecretFiles {
            dir: None,
            args: Vec::new(),
        }
    }

    /// `--private-key P`, `--become-password-file P`, `--vault-id ID@P`…: paths only.
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// The job's directory, while it exists.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Removes the files and their directory now.
    pub fn remove(mut self) -> Result<(), SecretsError> {
        match self.dir.take() {
            Some(dir) => wipe(&dir),
            None => Ok(()),
        }
    }

    /// Writes one secret 0600, never through a link and never into an existing file; not
    /// executable, which matters: ansible *runs* a password file that is.
    fn write(&self, name: &str, contents: &[u8]) -> Result<PathBuf, SecretsError> {
        let Some(dir) = &self.dir else {
            return Err(refuse(Path::new(name), "no job directory"));
        };
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(contents).map_err(io(&path))?;
        Ok(path)
    }
}

impl Drop for JobSecretFiles {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if let Err(e) = wipe(&dir) {
                tracing::error!(error = %e, "cannot remove a job's secrets");
            }
        }
    }
}

/// A job's own directory for ssh's ControlMaster sockets. ansible keeps an SSH connection open
/// (ControlPersist) and reuses it for any later run to the same host, port and user; with one
/// shared directory a job without a key could ride a connection another job's key credential
/// opened. Per job, nothing is shared. Short on purpose: a socket path must fit in 108 bytes
/// (`/tmp/opcp-<32 hex>/<40 hex>` plus ssh's 17-byte temporary suffix is 106).
#[derive(Debug)]
pub struct ControlDir {
    path: PathBuf,
}

impl ControlDir {
    pub fn create(job: Uuid) -> Result<ControlDir, SecretsError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = PathBuf::from(format!("/tmp/opcp-{}", job.simple()));
        // Not recursive: an existing entry (another user's, or a link) is refused, not used.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io(&path))?;
        Ok(ControlDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Overwrites the files of a job's directory with zeros (on a disk, their blocks are then
/// reused without the secret), then removes the directory. Gone already is fine.
fn wipe(dir: &Path) -> Result<(), SecretsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        // Best effort: the removal below is what counts.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            let zeros = vec![0u8; meta.len().min(1 << 20) as usize];
            let _ = f.write_all(&zeros);
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::message::VaultSecret;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A private key made by ssh-keygen, encrypted with `pass` when given.
    fn keygen(dir: &Path, kind: &str, pass: &str, extra: &[&str]) -> String {
        let file = dir.join(format!("key-{kind}-{}", extra.len()));
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", pass, "-C", "test", "-f"])
            .arg(&file)
            .args(extra)
            .output()
            .unwrap_or_else(|e| {
                panic!("ssh-keygen cannot run ({e}): install OpenSSH's client tools (apt-get install openssh-client)")
            });
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&file).unwrap()
    }

    fn root() -> (tempfile::TempDir, SecretsRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = SecretsRoot::open(&dir.path().join("secrets")).unwrap();
        (dir, root)
    }

    fn all_secrets(key: String, passphrase: Option<&str>) -> JobSecrets {
        JobSecrets {
            vars: Vec::new(),
            ssh_key: Some(SshKeySecret {
                key,
                passphrase: passphrase.map(String::from),
            }),
            become_password: Some("S3cret-become".into()),
            vault: vec![
                VaultSecret {
                    id: "default".into(),
                    password: "vault-pass-1".into(),
                },
                VaultSecret {
                    id: "prod.db".into(),
                    password: "vault-pass-2".into(),
                },
            ],
        }
    }

    #[tokio::test]
    async fn files_are_private_hold_the_secrets_and_go_on_drop() {
        let (tmp, root) = root();
        assert_eq!(mode(root.path()), 0o700);
        let key = keygen(tmp.path(), "ed25519", "", &[]);
        let job = Uuid::new_v4();
        let files = root
            .materialise(job, &all_secrets(key.clone(), None))
            .await
            .unwrap();
        let dir = root.job_dir(job);
        assert_eq!(files.dir(), Some(dir.as_path()));
        assert_eq!(mode(&dir), 0o700);
        for name in [
            "ssh_key",
            "become_password",
            "vault-default",
            "vault-prod.db",
        ] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.join("become_password")).unwrap(),
            "S3cret-become"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("vault-prod.db")).unwrap(),
            "vault-pass-2"
        );
        assert_eq!(std::fs::read_to_string(dir.join("ssh_key")).unwrap(), key);
        let p = |n: &str| dir.join(n).into_os_string();
        let at = |id: &str, n: &str| {
            let mut a = OsString::from(format!("{id}@"));
            a.push(dir.join(n));
            a
        };
        assert_eq!(
            files.args(),
            &[
                "--private-key".into(),
                p("ssh_key"),
                "--become-password-file".into(),
                p("become_password"),
                "--vault-id".into(),
                at("default", "vault-default"),
                "--vault-id".into(),
                at("prod.db", "vault-prod.db"),
            ]
        );
        let joined = files
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        for secret in ["S3cret-become", "vault-pass-1", "vault-pass-2"] {
            assert!(!joined.contains(secret), "{joined}");
        }
        drop(files);
        assert!(!dir.exists(), "removed on drop");

        // And by an explicit remove, which leaves nothing for the drop.
        let files = root
            .materialise(job, &all_secrets(key, None))
            .await
            .unwrap();
        assert!(dir.exists());
        files.remove().unwrap();
        assert!(!dir.exists(), "removed by remove()");
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn no_secrets_no_directory_no_arguments() {
        let (_tmp, root) = root();
        let files = root
            .materialise(Uuid::new_v4(), &JobSecrets::default())
            .await
            .unwrap();
        assert!(files.args().is_empty() && files.dir().is_none());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn an_encrypted_openssh_key_is_opened_with_its_passphrase() {
        let (tmp, root) = root();
        let encrypted = keygen(tmp.path(), "ed25519", "pass", &[]);
        assert!(ssh_key::PrivateKey::from_openssh(&encrypted)
            .unwrap()
            .is_encrypted());
        let job = Uuid::new_v4();
        let secrets = JobSecrets {
            vars: Vec::new(),
            ssh_key: Some(SshKeySecret {
                key: encrypted.clone(),
                passphrase: Some("pass".into()),
            }),
            become_password: None,
            vault: Vec::new(),
        };
        let files = root.materialise(job, &secrets).await.unwrap();
        let written = std::fs::read_to_string(root.job_dir(job).join("ssh_key")).unwrap();
        assert_ne!(written, encrypted);
        let opened = ssh_key::PrivateKey::from_openssh(&written).unwrap();
        assert!(!opened.is_encrypted());
        // The same key (the comment is inside the encrypted part, so only the public data).
        assert_eq!(
            opened.public_key().key_data(),
            ssh_key::PrivateKey::from_openssh(&encrypted)
                .unwrap()
                .public_key()
                .key_data()
        );
        assert_eq!(opened.comment(), "test");
        // ssh itself takes it without asking anything.
        let out = std::process::Command::new("ssh-keygen")
            .args(["-y", "-P", "", "-f"])
            .arg(root.job_dir(job).join("ssh_key"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(files);

        // An unencrypted PEM key is written as it is (with the newline ssh wants).
        let pem = keygen(tmp.path(), "rsa", "", &["-b", "2048", "-m", "PEM"]);
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let secrets = JobSecrets {
            vars: Vec::new(),
            ssh_key: Some(SshKeySecret {
                key: pem.trim_end().to_owned(),
                passphrase: None,
            }),
            become_password: None,
            vault: Vec::new(),
        };
        let _files = root.materialise(job, &secrets).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(root.job_dir(job).join("ssh_key")).unwrap(),
            pem
        );
    }

    #[tokio::test]
    async fn a_key_that_does_not_open_fails_without_saying_the_secret() {
        let (tmp, root) = root();
        let encrypted = keygen(tmp.path(), "ed25519", "right-passphrase", &[]);
        let pem = keygen(
            tmp.path(),
            "rsa",
            "pem-passphrase",
            &["-b", "2048", "-m", "PEM"],
        );
        assert!(pem.contains("ENCRYPTED"));
        let cases = [
            (
                encrypted.clone(),
                Some("Wrong-Passphrase-42"),
                KeyProblem::WrongPassphrase,
            ),
            (encrypted.clone(), None, KeyProblem::NeedsPassphrase),
            (
                pem.clone(),
                Some("pem-passphrase"),
                KeyProblem::EncryptedPem,
            ),
            ("not a key at all".into(), None, KeyProblem::NotAKey),
        ];
        for (key, passphrase, problem) in cases {
            let job = Uuid::new_v4();
            let secrets = JobSecrets {
                vars: Vec::new(),
                ssh_key: Some(SshKeySecret {
                    key: key.clone(),
                    passphrase: passphrase.map(String::from),
                }),
                become_password: Some("become-pw".into()),
                vault: Vec::new(),
            };
            let err = root.materialise(job, &secrets).await.unwrap_err();
            assert!(
                matches!(err, SecretsError::SshKey(p) if p == problem),
                "{err:?}"
            );
            let text = format!("{err} {err:?}");
            for secret in [
                "Wrong-Passphrase-42",
                "pem-passphrase",
                "right-passphrase",
                "become-pw",
                key.lines().nth(1).unwrap_or("not a key at all"),
            ] {
                assert!(!text.contains(secret), "{text}");
            }
            assert!(!root.job_dir(job).exists(), "nothing left on disk");
        }
    }

    #[tokio::test]
    async fn bad_vault_ids_are_refused_before_anything_is_written() {
        let (_tmp, root) = root();
        for (ids, dup) in [
            (vec!["../escape"], false),
            (vec!["a@b"], false),
            (vec![""], false),
            (vec!["ok", "ok"], true),
        ] {
            let job = Uuid::new_v4();
            let secrets = JobSecrets {
                vars: Vec::new(),
                become_password: Some("pw".into()),
                vault: ids
                    .iter()
                    .map(|id| VaultSecret {
                        id: (*id).into(),
                        password: "vault-password".into(),
                    })
                    .collect(),
                ssh_key: None,
            };
            let err = root.materialise(job, &secrets).await.unwrap_err();
            if dup {
                assert!(matches!(err, SecretsError::DuplicateVaultId(_)), "{err:?}");
            } else {
                assert!(matches!(err, SecretsError::VaultId(_)), "{err:?}");
            }
            assert!(!err.to_string().contains("vault-password"));
            assert!(!root.job_dir(job).exists());
        }
    }

    #[tokio::test]
    async fn secret_vars_are_a_private_unsafe_vars_file_named_by_path() {
        use outpost_protocol::message::SecretVar;
        let (_tmp, root) = root();
        let job = Uuid::new_v4();
        let secrets = JobSecrets {
            vars: vec![SecretVar {
                name: "token".into(),
                value: "{{ lookup('pipe', 'id') }}".into(),
            }],
            become_password: None,
            ssh_key: None,
            vault: Vec::new(),
        };
        let files = root.materialise(job, &secrets).await.unwrap();
        let path = root.job_dir(job).join("secret_vars.yml");
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#"!unsafe "token": !unsafe "{{ lookup('pipe', 'id') }}""#),
            "{text}"
        );
        let args: Vec<String> = files
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            ["--extra-vars".to_owned(), format!("@{}", path.display())]
        );
        drop(files);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn sweep_removes_the_job_directories_a_killed_agent_left() {
        let (_tmp, root) = root();
        let secrets = JobSecrets {
            vars: Vec::new(),
            become_password: Some("pw".into()),
            ssh_key: None,
            vault: Vec::new(),
        };
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        // Forgotten guards: what a kill -9 leaves.
        std::mem::forget(root.materialise(a, &secrets).await.unwrap());
        std::mem::forget(root.materialise(b, &secrets).await.unwrap());
        std::fs::write(root.path().join("operator-notes"), "kept").unwrap();
        assert!(root.job_dir(a).join("become_password").exists());
        assert_eq!(root.sweep().unwrap(), 2);
        assert!(!root.job_dir(a).exists() && !root.job_dir(b).exists());
        assert!(root.path().join("operator-notes").exists(), "not a job's");
        assert_eq!(root.sweep().unwrap(), 0);
    }

    #[test]
    fn roots_that_are_links_foreign_or_open_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = SecretsRoot::open(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");

        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o750)).unwrap();
        let err = SecretsRoot::open(&open).unwrap_err();
        assert!(err.to_string().contains("mode 750"), "{err}");

        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(SecretsRoot::open(&file)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));

        // Owned by someone else: only root can make one here.
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let foreign = tmp.path().join("foreign");
            std::fs::create_dir(&foreign).unwrap();
            std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            let err = SecretsRoot::open(&foreign).unwrap_err();
            assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
        }

        // Made by the agent: 0700, parents included.
        let made = tmp.path().join("a/b/secrets");
        SecretsRoot::open(&made).unwrap();
        assert_eq!(mode(&made), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
    }

    #[test]
    fn the_root_is_chosen_in_memory_first_and_per_agent_in_shm() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let agent = Uuid::new_v4();
        let explicit = tmp.path().join("explicit");
        let rt = tmp.path().join("run");
        let shm = tmp.path().join("shm");
        std::fs::create_dir_all(&rt).unwrap();
        std::fs::create_dir_all(&shm).unwrap();
        let rt_list = OsString::from(format!("{}:/run/other", rt.display()));

        let r = choose_among(Some(&explicit), Some(&rt_list), Some(&shm), &state, agent).unwrap();
        assert_eq!(r.path(), explicit);
        let r = choose_among(None, Some(&rt_list), Some(&shm), &state, agent).unwrap();
        assert_eq!(
            (r.path(), r.on_disk()),
            (rt.join("secrets").as_path(), false)
        );
        let r = choose_among(None, None, Some(&shm), &state, agent).unwrap();
        // SAFETY: geteuid(2) cannot fail.
        let uid = unsafe { libc::geteuid() };
        let base = shm.join(format!("outpost-agent-{uid}"));
        assert_eq!(r.path(), base.join(agent.to_string()));
        assert_eq!(mode(&base), 0o700);
        let r = choose_among(None, None, None, &state, agent).unwrap();
        assert_eq!(
            (r.path(), r.on_disk()),
            (state.join("secrets").as_path(), true)
        );
        assert_eq!(mode(r.path()), 0o700);
    }

    #[test]
    fn dev_shm_is_recognised_as_a_tmpfs_and_a_disk_is_not() {
        assert!(!is_writable_tmpfs(Path::new("/proc")), "procfs");
        assert!(!is_writable_tmpfs(Path::new("/no/such/dir")));
        // Where the machine has a /dev/shm tmpfs (Linux normally does), it is taken.
        let shm_is_tmpfs = std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.split(' ').nth(1) == Some("/dev/shm") && l.split(' ').nth(2) == Some("tmpfs")
            });
        assert_eq!(is_writable_tmpfs(Path::new("/dev/shm")), shm_is_tmpfs);
    }
}
