//! The agent's state directory: its identity (key 0600, certificate, the CA it trusts), its
//! settings from enrolment, the spools of its jobs, their work directories and the project
//! revisions they run.
//!
//! ```text
//! <state-dir>/agent.toml   uuid, name, labels, controller addresses
//! <state-dir>/agent.key    private key (never leaves the host)
//! <state-dir>/agent.pem    certificate chain from the controller
//! <state-dir>/ca.pem       the Outpost CA
//! <state-dir>/spool/<job>/ unacknowledged output and outcome of each job
//! <state-dir>/work/<job>/  inventory and vars while a job runs (0700)
//! <state-dir>/revisions/   project revisions, unpacked read-only (see `revisions`)
//! <state-dir>/secrets/     jobs' credentials, only when no tmpfs is at hand (see `secrets`)
//! ```
//!
//! Identity, key, certificates, status and spool records are written with
//! [`outpost_protocol::files`]: whole, with their mode, and replacing (never writing through) a
//! link planted at their path.

use std::path::{Path, PathBuf};

use outpost_protocol::pki::{self, PkiError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("this agent is not enrolled ({0} is missing): run `outpost-agent enroll` first")]
    NotEnrolled(String),
    #[error("invalid {path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// What enrolment left behind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub uuid: uuid::Uuid,
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// Agent endpoints of the controller(s), tried in turn.
    pub controllers: Vec<String>,
    pub ca_fingerprint: String,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }
    pub fn identity_file(&self) -> PathBuf {
        self.root.join("agent.toml")
    }
    pub fn key_file(&self) -> PathBuf {
        self.root.join("agent.key")
    }
    pub fn cert_file(&self) -> PathBuf {
        self.root.join("agent.pem")
    }
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join("spool")
    }
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }
    pub fn revisions_dir(&self) -> PathBuf {
        self.root.join("revisions")
    }
    /// Written by the running service: see [`crate::status`].
    pub fn status_file(&self) -> PathBuf {
        self.root.join("status")
    }

    pub fn is_enrolled(&self) -> bool {
        self.identity_file().exists() && self.key_file().exists() && self.cert_file().exists()
    }

    /// Creates the directory tree, private to the agent's user.
    pub fn create(&self) -> Result<(), StateError> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [self.root.clone(), self.spool_dir(), self.work_dir()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io(&dir))?;
        }
        Ok(())
    }

    pub fn load_identity(&self) -> Result<Identity, StateError> {
        let path = self.identity_file();
        if !path.exists() {
            return Err(StateError::NotEnrolled(path.display().to_string()));
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        toml::from_str(&text).map_err(|e| StateError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn save_identity(&self, id: &Identity) -> Result<(), StateError> {
        let text = toml::to_string(id).map_err(|e| StateError::Invalid {
            path: "agent.toml".into(),
            message: e.to_string(),
        })?;
        Ok(pki::write_public(&self.identity_file(), &text)?)
    }

    /// The certificate chain, the private key and the CA, for a session.
    pub fn credentials(
        &self,
    ) -> Result<
        (
            Vec<CertificateDer<'static>>,
            PrivateKeyDer<'static>,
            CertificateDer<'static>,
        ),
        StateError,
    > {
        let read = |p: PathBuf| -> Result<String, StateError> {
            if !p.exists() {
                return Err(StateError::NotEnrolled(p.display().to_string()));
            }
            std::fs::read_to_string(&p).map_err(io(&p))
        };
        let chain = pki::certs_from_pem(&read(self.cert_file())?)?;
        let key = pki::private_key_from_pem(&read(self.key_file())?)?;
        let ca = pki::certs_from_pem(&read(self.ca_file())?)?.remove(0);
        Ok((chain, key, ca))
    }

    /// Stores a certificate chain (leaf first) from enrolment or renewal.
    pub fn save_chain(&self, chain: &[Vec<u8>]) -> Result<(), StateError> {
        let leaf = chain.first().ok_or_else(|| StateError::Invalid {
            path: "certificate".into(),
            message: "empty chain".into(),
        })?;
        pki::write_public(&self.cert_file(), &pki::to_pem("CERTIFICATE", leaf))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_planted_where_the_certificate_goes_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        state.create().unwrap();
        let other = dir.path().join("root-owned");
        std::fs::write(&other, "not the agent's").unwrap();
        std::os::unix::fs::symlink(&other, state.cert_file()).unwrap();

        state.save_chain(&[b"leaf".to_vec()]).unwrap();

        assert_eq!(std::fs::read_to_string(&other).unwrap(), "not the agent's");
        let meta = std::fs::symlink_metadata(state.cert_file()).unwrap();
        assert!(meta.file_type().is_file());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert!(std::fs::read_to_string(state.cert_file())
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
    }
}
