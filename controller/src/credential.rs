//! Credentials as the domain sees them: what each kind may hold and how it is checked before it
//! is stored, how a secret is sealed into and opened from its row (bound to the row by its
//! uuid and kind), and which secrets a job gets from its server, project and launch.

use outpost_api::credentials::{MAX_PASSWORD_BYTES, MAX_SSH_KEY_BYTES};
use outpost_protocol::message::{JobSecrets, SshKeySecret, VaultSecret};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::keyring::{Keyring, KeyringError, Sealed};
use crate::model::{Credential, CredentialKind};

/// The most bcrypt-pbkdf rounds an encrypted SSH key may ask for.
pub const MAX_KDF_ROUNDS: u32 = 1000;

/// The vault id of files encrypted without one.
pub const DEFAULT_VAULT_ID: &str = "default";

#[derive(Debug, Error)]
pub enum CredentialError {
    /// The secret is not what its kind needs; the message never quotes it.
    #[error("{0}")]
    Invalid(String),
    #[error("credential {name}: {source}")]
    Sealing {
        name: String,
        #[source]
        source: KeyringError,
    },
}

fn invalid(msg: impl Into<String>) -> CredentialError {
    CredentialError::Invalid(msg.into())
}

/// A secret and, for an encrypted SSH key, its passphrase: what a row seals. Wiped on drop.
#[derive(Serialize, Deserialize)]
pub struct Material {
    pub secret: String,
    pub passphrase: Option<String>,
}

impl Drop for Material {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
        self.passphrase.zeroize();
    }
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material(<redacted>)")
    }
}

/// What checking a secret found that may be shown and stored in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub public_info: Option<String>,
    pub vault_id: Option<String>,
}

/// Checks a secret for its kind. An SSH key is parsed (and, when encrypted, opened with its
/// passphrase: a wrong passphrase is refused now, not at the first job); this is CPU work
/// (bcrypt-pbkdf) for a blocking thread.
pub fn check(
    kind: CredentialKind,
    vault_id: Option<&str>,
    material: &Material,
) -> Result<Checked, CredentialError> {
    match kind {
        CredentialKind::SshKey => {
            if vault_id.is_some() {
                return Err(invalid(
                    "vault_id: only vault_password credentials have one",
                ));
            }
            Ok(Checked {
                public_info: Some(ssh_key_info(
                    &material.secret,
                    material.passphrase.as_deref(),
                )?),
                vault_id: None,
            })
        }
        CredentialKind::BecomePassword | CredentialKind::VaultPassword => {
            if material.passphrase.is_some() {
                return Err(invalid("passphrase: only ssh_key credentials have one"));
            }
            check_password(&material.secret)?;
            let vault_id = match kind {
                CredentialKind::VaultPassword => {
                    let id = vault_id.unwrap_or(DEFAULT_VAULT_ID);
                    if !outpost_protocol::message::valid_vault_id(id) {
                        return Err(invalid(
                            "vault_id: must be 1 to 64 of letters, digits, _ - . (as in --vault-id ID@…)",
                        ));
                    }
                    Some(id.to_owned())
                }
                _ if vault_id.is_some() => {
                    return Err(invalid(
                        "vault_id: only vault_password credentials have one",
                    ))
                }
                _ => None,
            };
            Ok(Checked {
                public_info: None,
                vault_id,
            })
        }
    }
}

/// ansible reads a password file and strips the whitespace around it: a password that begins
/// or ends with some, or holds a line break, would not be the password it gets.
fn check_password(p: &str) -> Result<(), CredentialError> {
    if p.is_empty() {
        return Err(invalid("secret: the password is empty"));
    }
    if p.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(format!(
            "secret: a password is at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if p.trim() != p || p.contains(['\n', '\r', '\0']) {
        return Err(invalid(
            "secret: a password may not begin or end with whitespace, nor hold a line break or NUL (ansible strips them from password files)",
        ));
    }
    Ok(())
}

/// The key's type and public fingerprint, after checking that it opens.
fn ssh_key_info(key: &str, passphrase: Option<&str>) -> Result<String, CredentialError> {
    if key.len() > MAX_SSH_KEY_BYTES {
        return Err(invalid(format!(
            "secret: an SSH key is at most {MAX_SSH_KEY_BYTES} bytes"
        )));
    }
    if let Some(p) = passphrase {
        if p.is_empty() || p.len() > MAX_PASSWORD_BYTES {
            return Err(invalid(format!(
                "passphrase: must be 1 to {MAX_PASSWORD_BYTES} bytes"
            )));
        }
    }
    let trimmed = key.trim();
    if trimmed.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        let parsed = ssh_key::PrivateKey::from_openssh(trimmed)
            .map_err(|_| invalid("secret: not a readable OpenSSH private key"))?;
        // ssh-keygen's default is 16 rounds (`-a`); each round is costly and every job opens
        // the key again on its bastion, so a key asking for very many is refused.
        if let ssh_key::Kdf::Bcrypt { rounds, .. } = parsed.kdf() {
            if *rounds > MAX_KDF_ROUNDS {
                return Err(invalid(format!(
                    "secret: the key's passphrase uses {rounds} bcrypt rounds; at most {MAX_KDF_ROUNDS} (re-encrypt it with `ssh-keygen -p -a 100 -f KEYFILE`)"
                )));
            }
        }
        let opened = if parsed.is_encrypted() {
            let Some(p) = passphrase else {
                return Err(invalid(
                    "passphrase: the key is encrypted; give its passphrase",
                ));
            };
            parsed
                .decrypt(p)
                .map_err(|_| invalid("passphrase: it does not open the key"))?
        } else {
            if passphrase.is_some() {
                return Err(invalid(
                    "passphrase: the key is not encrypted; leave the passphrase out",
                ));
            }
            parsed
        };
        let public = opened.public_key();
        return Ok(format!(
            "{} {}",
            public.algorithm().as_str(),
            public.fingerprint(ssh_key::HashAlg::Sha256)
        ));
    }
    let pem = ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"]
        .iter()
        .find(|label| trimmed.starts_with(&format!("-----BEGIN {label}-----")));
    match pem {
        Some(_) if trimmed.contains("ENCRYPTED") => Err(invalid(
            "secret: an encrypted PEM key cannot be opened here; convert it to OpenSSH form with `ssh-keygen -p -f KEYFILE` and store that, with its passphrase",
        )),
        Some(label) if passphrase.is_some() => Err(invalid(format!(
            "passphrase: this {label} is not encrypted; leave the passphrase out"
        ))),
        Some(label) => Ok(format!("PEM {label}")),
        None => Err(invalid(
            "secret: not an SSH private key (expected -----BEGIN OPENSSH PRIVATE KEY----- or an unencrypted PEM key)",
        )),
    }
}

/// An SSH key as ssh reads it from a file without asking for anything: opened with its
/// passphrase when it has one (bcrypt-pbkdf: call it on a blocking thread), ending in a line
/// break (ssh refuses a key file without one).
pub fn opened_ssh_key(m: &Material) -> Result<Zeroizing<String>, CredentialError> {
    let trimmed = m.secret.trim();
    if trimmed.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        let parsed = ssh_key::PrivateKey::from_openssh(trimmed)
            .map_err(|_| invalid("the stored SSH key is not readable"))?;
        if parsed.is_encrypted() {
            let p = m
                .passphrase
                .as_deref()
                .ok_or_else(|| invalid("the stored SSH key is encrypted and has no passphrase"))?;
            let opened = parsed
                .decrypt(p)
                .map_err(|_| invalid("the stored passphrase does not open the stored SSH key"))?;
            return opened
                .to_openssh(ssh_key::LineEnding::LF)
                .map(|s| Zeroizing::new(s.to_string()))
                .map_err(|_| invalid("the opened SSH key cannot be written out"));
        }
    }
    Ok(Zeroizing::new(format!("{trimmed}\n")))
}

/// What binds a sealed secret to its row: a secret copied into another credential's row, or
/// into a row of another kind, does not open.
pub fn context(uuid: &str, kind: CredentialKind) -> Vec<u8> {
    format!("outpost credential v1/{uuid}/{}", kind.as_str()).into_bytes()
}

/// Seals a checked secret for the row named by `uuid`.
pub fn seal(
    keyring: &Keyring,
    uuid: &str,
    kind: CredentialKind,
    material: &Material,
) -> Result<Sealed, KeyringError> {
    let plain = Zeroizing::new(
        serde_json::to_vec(material).map_err(|_| KeyringError::Malformed("unencodable"))?,
    );
    keyring.seal(&plain, &context(uuid, kind))
}

/// Opens a row's secret.
pub fn open(keyring: &Keyring, c: &Credential) -> Result<Material, CredentialError> {
    let sealing = |source| CredentialError::Sealing {
        name: c.name.clone(),
        source,
    };
    let plain = keyring
        .open(
            &Sealed {
                key_id: c.key_id.clone(),
                bytes: c.secret.clone(),
            },
            &context(&c.uuid, c.kind),
        )
        .map_err(sealing)?;
    serde_json::from_slice(&plain).map_err(|_| sealing(KeyringError::Malformed("not a secret")))
}

/// Why the credentials stored cannot be used with the keys on disk.
#[derive(Debug, Error)]
pub enum KeyCheckError {
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The keyring of the PKI directory `dir`, checked against the credentials stored: a new key is
/// made only when none is stored; a missing or wrong key file, or a row that does not open, is
/// an error now (at start-up), never garbage at a job.
pub async fn checked_keyring(
    store: &crate::store::Store,
    dir: &std::path::Path,
) -> Result<Keyring, KeyCheckError> {
    let rows = store.all_credentials().await?;
    let channels = store.list_channels().await?;
    // Every key a stored secret needs: credentials' and notification channels'.
    let needed: Vec<String> = rows
        .iter()
        .map(|c| c.key_id.clone())
        .chain(channels.iter().filter_map(|c| c.key_id.clone()))
        .collect();
    let keyring = match Keyring::load(dir)? {
        Some(k) => k,
        None if needed.is_empty() => Keyring::load_or_create(dir)?,
        None => {
            return Err(KeyringError::Missing {
                dir: dir.display().to_string(),
                needed: needed[0].clone(),
            }
            .into())
        }
    };
    for c in &channels {
        let (Some(key_id), Some(bytes)) = (&c.key_id, &c.secret) else {
            continue;
        };
        if !keyring.has(key_id) {
            return Err(KeyringError::UnknownKey {
                dir: dir.display().to_string(),
                needed: key_id.clone(),
                have: keyring.ids().join(", "),
            }
            .into());
        }
        let sealed = Sealed {
            key_id: key_id.clone(),
            bytes: bytes.clone(),
        };
        crate::notification::secret::open(&keyring, &c.uuid, c.kind, &sealed)?;
    }
    for c in &rows {
        if !keyring.has(&c.key_id) {
            return Err(KeyringError::UnknownKey {
                dir: dir.display().to_string(),
                needed: c.key_id.clone(),
                have: keyring.ids().join(", "),
            }
            .into());
        }
        open(&keyring, c).map_err(|e| match e {
            CredentialError::Sealing { source, .. } => KeyCheckError::Keyring(source),
            CredentialError::Invalid(m) => KeyCheckError::Keyring(KeyringError::BadKeyFile {
                path: dir.display().to_string(),
                why: m,
            }),
        })?;
    }
    Ok(keyring)
}

/// Re-seals every credential and notification channel secret with a new key (kept beside the old ones), then makes it the
/// current key. The old key files stay, so backups sealed with them stay readable. Returns the
/// new key's id and how many credentials were re-sealed.
pub async fn rotate_key(
    store: &crate::store::Store,
    dir: &std::path::Path,
    actor: &crate::store::audit::Actor,
) -> Result<(String, u64), KeyCheckError> {
    let old = checked_keyring(store, dir).await?;
    let new = old.with_new_key()?;
    let rows = store.all_credentials().await?;
    let mut resealed = Vec::with_capacity(rows.len());
    for c in &rows {
        let m = open(&old, c).map_err(|e| match e {
            CredentialError::Sealing { source, .. } => KeyCheckError::Keyring(source),
            CredentialError::Invalid(_) => {
                KeyCheckError::Keyring(KeyringError::Malformed("not a secret"))
            }
        })?;
        let sealed = seal(&new, &c.uuid, c.kind, &m)?;
        resealed.push(crate::store::credentials::Reseal {
            id: c.id,
            old_key: c.key_id.clone(),
            old_secret: c.secret.clone(),
            new_key: sealed.key_id,
            new_secret: sealed.bytes,
        });
    }
    let changed = store
        .reseal_credentials(&resealed, actor, &old.ids(), new.current_id())
        .await?;
    // Notification channels' secrets (webhook secrets, chat URLs, SMTP passwords) too.
    let mut channels = Vec::new();
    for c in store.list_channels().await? {
        let (Some(key_id), Some(bytes)) = (&c.key_id, &c.secret) else {
            continue;
        };
        let sealed = Sealed {
            key_id: key_id.clone(),
            bytes: bytes.clone(),
        };
        let opened = crate::notification::secret::open(&old, &c.uuid, c.kind, &sealed)?;
        let again = crate::notification::secret::seal(&new, &c.uuid, c.kind, &opened)?;
        channels.push((c.id, bytes.clone(), again.key_id, again.bytes));
    }
    let changed = changed + store.reseal_channels(&channels).await?;
    new.promote()?;
    Ok((new.current_id().to_owned(), changed))
}

/// The credentials of one job, each with its opened secret.
#[derive(Default)]
pub struct JobCredentials<'a> {
    pub server_ssh: Option<(&'a Credential, Material)>,
    pub server_become: Option<(&'a Credential, Material)>,
    pub project_vault: Vec<(&'a Credential, Material)>,
    /// Named at launch: they win over the server's and project's of the same use.
    pub launch: Vec<(&'a Credential, Material)>,
}

/// The secrets an assignment carries: the launch's credential of a use wins, then the
/// server's (SSH key, become password) and the project's (vault passwords, one per vault id).
pub fn job_secrets(c: JobCredentials<'_>) -> JobSecrets {
    let mut secrets = JobSecrets::default();
    let ssh = |m: &Material| SshKeySecret {
        key: m.secret.clone(),
        passphrase: m.passphrase.clone(),
    };
    if let Some((_, m)) = &c.server_ssh {
        secrets.ssh_key = Some(ssh(m));
    }
    if let Some((_, m)) = &c.server_become {
        secrets.become_password = Some(m.secret.clone());
    }
    let mut vault: Vec<VaultSecret> = Vec::new();
    let mut put_vault = |cred: &Credential, m: &Material| {
        let id = cred
            .vault_id
            .clone()
            .unwrap_or_else(|| DEFAULT_VAULT_ID.into());
        vault.retain(|v| v.id != id);
        vault.push(VaultSecret {
            id,
            password: m.secret.clone(),
        });
    };
    for (cred, m) in &c.project_vault {
        put_vault(cred, m);
    }
    for (cred, m) in &c.launch {
        match cred.kind {
            CredentialKind::SshKey => secrets.ssh_key = Some(ssh(m)),
            CredentialKind::BecomePassword => secrets.become_password = Some(m.secret.clone()),
            CredentialKind::VaultPassword => put_vault(cred, m),
        }
    }
    vault.sort_by(|a, b| a.id.cmp(&b.id));
    secrets.vault = vault;
    secrets
}

/// Credentials named at one launch: at most one of each use (one SSH key, one become password,
/// one vault password per vault id).
pub fn check_launch_set(creds: &[Credential]) -> Result<(), CredentialError> {
    let mut seen = std::collections::HashSet::new();
    for c in creds {
        let slot = match c.kind {
            CredentialKind::VaultPassword => format!(
                "a vault password for vault id {}",
                c.vault_id.as_deref().unwrap_or(DEFAULT_VAULT_ID)
            ),
            CredentialKind::SshKey => "an SSH key".to_owned(),
            CredentialKind::BecomePassword => "a become password".to_owned(),
        };
        if !seen.insert(slot.clone()) {
            return Err(invalid(format!(
                "credentials: {slot} is named twice; name one"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
