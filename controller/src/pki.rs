//! The controller's PKI material on disk: the CA and the controller's server certificate under
//! `<data-dir>/pki/`, created by `init` (or `dev`), keys 0600, and the key of the agents'
//! endpoint's QUIC stateless resets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::pki::{self, Ca, PkiError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the controller keeps its PKI files.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub dir: PathBuf,
}

impl PkiPaths {
    pub fn new(data_dir: &Path) -> PkiPaths {
        PkiPaths {
            dir: data_dir.join("pki"),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn reset_key(&self) -> PathBuf {
        self.dir.join("quic-reset.key")
    }
    pub fn exists(&self) -> bool {
        self.ca_cert().exists() && self.ca_key().exists()
    }
}

/// Everything the endpoints need, loaded once at start-up.
pub struct ControllerPki {
    pub ca: Ca,
    /// The server certificate, then the CA (agents enrolling find the CA in the chain).
    pub chain: Vec<CertificateDer<'static>>,
    key_pem: String,
    /// The secret behind the QUIC stateless resets of the agents' endpoint. Kept across
    /// restarts: a restarted controller answers packets of its previous run's connections with
    /// a reset the agent can verify, so agents reconnect at once instead of waiting out their
    /// idle timeout.
    pub reset_key: [u8; 32],
}

impl ControllerPki {
    /// The DNS names and addresses of the server certificate: where agents may be sent.
    pub fn server_names(&self) -> Vec<String> {
        match self.chain.first().map(|c| pki::inspect(c)) {
            Some(Ok(info)) => info
                .dns_names
                .into_iter()
                .chain(info.ip_addresses.iter().map(|ip| ip.to_string()))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn server_key(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        pki::private_key_from_pem(&self.key_pem)
    }

    /// The QUIC endpoint configuration that lets a restarted controller reset its previous
    /// run's connections: the reset key, and connection IDs hashed with a key derived from it
    /// (quinn only resets packets whose connection ID it validates as one of its own).
    pub fn quic_endpoint_config(&self) -> quinn::EndpointConfig {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.reset_key);
        let tag = ring::hmac::sign(&key, b"outpost connection ids");
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&tag.as_ref()[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        let mut config = quinn::EndpointConfig::new(std::sync::Arc::new(key));
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        config
    }
}

/// Reads the reset key, or makes one (data directories made before it existed get one on their
/// next start).
fn reset_key(paths: &PkiPaths) -> Result<[u8; 32], PkiError> {
    let path = paths.reset_key();
    if path.exists() {
        let text = read(&path)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|e| {
            PkiError::BadCertificate(format!("{}: not a 32-byte hex key: {e}", path.display()))
        })?;
        return Ok(key);
    }
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| PkiError::BadCertificate("no randomness for the QUIC reset key".into()))?;
    pki::write_private(&path, &hex::encode(key))?;
    Ok(key)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Creates the CA and a server certificate for `names` (DNS names and IPs). Refuses to replace
/// an existing CA unless `force`: every enrolled agent trusts it.
pub fn init(
    paths: &PkiPaths,
    names: &[String],
    ca_lifetime: Duration,
    server_lifetime: Duration,
    force: bool,
) -> Result<ControllerPki, PkiError> {
    if paths.exists() && !force {
        return Err(PkiError::BadCertificate(format!(
            "a CA already exists in {}: every enrolled agent trusts it; pass --force to replace it",
            paths.dir.display()
        )));
    }
    std::fs::create_dir_all(&paths.dir).map_err(|source| PkiError::Io {
        path: paths.dir.display().to_string(),
        source,
    })?;
    // The CA key lives here: nobody else lists or enters the directory.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| PkiError::Io {
                path: paths.dir.display().to_string(),
                source,
            },
        )?;
    }
    let ca = Ca::generate("Outpost CA", ca_lifetime)?;
    pki::write_private(&paths.ca_key(), &ca.key_pem())?;
    pki::write_public(&paths.ca_cert(), &ca.cert_pem())?;
    issue_server(paths, &ca, names, server_lifetime)?;
    load(paths)
}

/// (Re)issues the controller's server certificate from the CA on disk.
pub fn issue_server(
    paths: &PkiPaths,
    ca: &Ca,
    names: &[String],
    lifetime: Duration,
) -> Result<(), PkiError> {
    let server = ca.issue_server(names, lifetime)?;
    pki::write_private(&paths.server_key(), &server.key_pem)?;
    pki::write_public(
        &paths.server_cert(),
        &format!("{}{}", server.cert_pem, ca.cert_pem()),
    )
}

pub fn load(paths: &PkiPaths) -> Result<ControllerPki, PkiError> {
    if !paths.exists() {
        return Err(PkiError::BadCertificate(format!(
            "no CA in {}: run `outpost-controller init` first",
            paths.dir.display()
        )));
    }
    let ca = Ca::from_pem(&read(&paths.ca_cert())?, &read(&paths.ca_key())?)?;
    let chain = pki::certs_from_pem(&read(&paths.server_cert())?)?;
    let key_pem = read(&paths.server_key())?;
    let reset_key = reset_key(paths)?;
    Ok(ControllerPki {
        ca,
        chain,
        key_pem,
        reset_key,
    })
}

/// What the store keeps of an agent's certificate `der` (its fingerprint and expiry), or
/// `None` when it cannot be read.
pub fn held_certificate(der: &[u8]) -> Option<crate::store::agents::HeldCertificate> {
    let info = pki::inspect(der).ok()?;
    Some(crate::store::agents::HeldCertificate {
        fingerprint: pki::fingerprint(der),
        expires: chrono::DateTime::from_timestamp(info.not_after.unix_timestamp(), 0)?,
    })
}
