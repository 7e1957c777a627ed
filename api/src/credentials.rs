//! Credentials' bodies: what an admin writes (a secret, once) and what anyone may read back
//! (names, kinds, where they are attached — never the secret).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::enums::CredentialKind;
use crate::types::NameRef;

/// The largest SSH private key accepted (an RSA 16384-bit key in OpenSSH form is ~12 KiB).
pub const MAX_SSH_KEY_BYTES: usize = 16 * 1024;
/// The largest password or passphrase accepted.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A credential as the API shows it: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CredentialView {
    pub id: i32,
    pub name: String,
    pub kind: CredentialKind,
    pub description: Option<String>,
    /// The vault id a vault password opens (`default` for files encrypted without one).
    pub vault_id: Option<String>,
    /// What may be shown of the secret: an SSH key's type and public fingerprint, e.g.
    /// `ssh-ed25519 SHA256:…`.
    pub public_info: Option<String>,
    /// The user who stored it.
    pub created_by: Option<i32>,
    pub created_at: DateTime<Utc>,
    /// When the secret or the credential last changed.
    pub updated_at: DateTime<Utc>,
    /// Where it is attached (single reads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CredentialUsage>,
}

/// Where a credential is attached. A credential in use cannot be deleted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CredentialUsage {
    /// Servers reached over SSH with it.
    pub ssh_servers: Vec<NameRef>,
    /// Servers whose `become` password it is.
    pub become_servers: Vec<NameRef>,
    /// Projects fetched from git with it.
    pub git_projects: Vec<NameRef>,
    /// Projects whose vault-encrypted files it opens.
    pub vault_projects: Vec<NameRef>,
    /// Pending or running jobs that named it at launch.
    pub active_jobs: i64,
}

impl CredentialUsage {
    pub fn is_unused(&self) -> bool {
        self.ssh_servers.is_empty()
            && self.become_servers.is_empty()
            && self.git_projects.is_empty()
            && self.vault_projects.is_empty()
            && self.active_jobs == 0
    }
}

/// A new credential. The secret is written once and never shown again.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredentialRequest {
    pub name: String,
    pub kind: CredentialKind,
    #[serde(default)]
    pub description: Option<String>,
    /// For `vault_password`: the vault id it opens (1–64 of letters, digits, `_ - .`); default
    /// `default`.
    #[serde(default)]
    pub vault_id: Option<String>,
    /// The private key (OpenSSH or unencrypted PEM form) or the password.
    pub secret: String,
    /// For `ssh_key`: the passphrase of an encrypted key.
    #[serde(default)]
    pub passphrase: Option<String>,
}

/// Changes to a credential; a new `secret` replaces the old one (and its passphrase).
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialPatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub vault_id: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub passphrase: Option<String>,
}

// Requests carry secrets: their Debug never shows them.
impl std::fmt::Debug for NewCredentialRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredentialRequest")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("vault_id", &self.vault_id)
            .field("secret", &"<redacted>")
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl std::fmt::Debug for CredentialPatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialPatchRequest")
            .field("name", &self.name)
            .field("vault_id", &self.vault_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Drop for NewCredentialRequest {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
        self.passphrase.zeroize();
    }
}

impl Drop for CredentialPatchRequest {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
        self.passphrase.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_never_show_their_secret() {
        let r = NewCredentialRequest {
            name: "prod".into(),
            kind: CredentialKind::SshKey,
            description: None,
            vault_id: None,
            secret: "KEYMATERIAL".into(),
            passphrase: Some("PASSPHRASE".into()),
        };
        let mut p = CredentialPatchRequest::default();
        p.secret = Some("NEWSECRET".into());
        let shown = format!("{r:?} {p:?}");
        for s in ["KEYMATERIAL", "PASSPHRASE", "NEWSECRET"] {
            assert!(!shown.contains(s), "{shown}");
        }
        assert!(shown.contains("prod"));
    }
}
