//! The Outpost PKI: a private CA, the controller's server certificate, and agents' client
//! certificates signed from their CSRs.
//!
//! The signer trusts nothing a CSR asks for but its public key: subject, names, CA status, key
//! usages and lifetime are all set here. rcgen's CSR parsing copies the requested extensions
//! into the parameters, so they are replaced wholesale before signing.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use sha2::{Digest, Sha256};
use thiserror::Error;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid certificate: {0}")]
    BadCertificate(String),
    #[error("certificate request rejected: {0}")]
    BadCsr(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Lower-case hex SHA-256 of a DER certificate: how the CA is pinned.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that disagree by a minute or two.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after =
        now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(3650));
}

/// The Outpost certificate authority.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

/// A certificate with its private key, both PEM, ready to be written.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl Ca {
    /// A new CA with a fresh ECDSA P-256 key, valid for `lifetime`.
    pub fn generate(name: &str, lifetime: Duration) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "Outpost");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params, lifetime);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// Loads a CA from its PEM certificate and PEM (PKCS#8) key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = cert_from_pem(cert_pem)?;
        Ok(Ca { cert_der, key })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> String {
        to_pem("CERTIFICATE", &self.cert_der)
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }

    /// The controller's server certificate for its DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String], lifetime: Duration) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names
                .first()
                .map(String::as_str)
                .unwrap_or("outpost-controller"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial());
        validity(&mut params, lifetime);
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        })
    }

    /// Signs an agent's CSR into a client certificate whose subject CN and only SAN are the
    /// agent's uuid. Everything else the CSR asks for is discarded.
    pub fn sign_agent_csr(
        &self,
        csr_der: &[u8],
        agent: Uuid,
        lifetime: Duration,
    ) -> Result<CertificateDer<'static>, PkiError> {
        let now = OffsetDateTime::now_utc();
        let life = time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(3650));
        // A little slack for clocks that disagree by a minute or two (less for short lives, so
        // that "a third of the life left" keeps its meaning).
        let slack = std::cmp::min(life / 10_i32, time::Duration::minutes(5));
        self.sign_agent_csr_between(csr_der, agent, now - slack, now + life)
    }

    /// [`Ca::sign_agent_csr`] with an explicit validity window (tests of expiry, clock tools).
    pub fn sign_agent_csr_between(
        &self,
        csr_der: &[u8],
        agent: Uuid,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<CertificateDer<'static>, PkiError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent.to_string());
        dn.push(DnType::OrganizationName, "Outpost agents");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(format!("urn:uuid:{agent}").try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        Ok(signed.signed_by(&self.issuer()?)?.der().clone())
    }
}

/// An agent's own key pair; the private half never leaves the agent.
pub struct AgentKey {
    key: KeyPair,
}

impl AgentKey {
    pub fn generate() -> Result<AgentKey, PkiError> {
        Ok(AgentKey {
            key: KeyPair::generate()?,
        })
    }

    pub fn from_pem(pem: &str) -> Result<AgentKey, PkiError> {
        Ok(AgentKey {
            key: KeyPair::from_pem(pem)?,
        })
    }

    pub fn pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// A CSR for this key. The subject is informative only: the controller sets its own.
    pub fn csr(&self, hostname: &str) -> Result<Vec<u8>, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, hostname);
        params.distinguished_name = dn;
        Ok(params.serialize_request(&self.key)?.der().to_vec())
    }
}

/// What Outpost reads from a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub common_name: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    pub client_auth: bool,
    pub server_auth: bool,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub uris: Vec<String>,
}

pub fn inspect(der: &[u8]) -> Result<CertInfo, PkiError> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    let (client_auth, server_auth) = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .map(|e| (e.value.client_auth, e.value.server_auth))
        .unwrap_or((false, false));
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        ip_addresses.push(std::net::IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        ip_addresses.push(std::net::IpAddr::from(v6));
                    }
                }
                GeneralName::URI(u) => uris.push(u.to_string()),
                _ => {}
            }
        }
    }
    let ts = |t: ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    Ok(CertInfo {
        common_name,
        not_before: ts(cert.validity().not_before),
        not_after: ts(cert.validity().not_after),
        is_ca,
        client_auth,
        server_auth,
        dns_names,
        ip_addresses,
        uris,
    })
}

/// The agent uuid an agent certificate names (its subject CN).
pub fn agent_uuid(der: &[u8]) -> Result<Uuid, PkiError> {
    let info = inspect(der)?;
    Uuid::parse_str(&info.common_name).map_err(|_| {
        PkiError::BadCertificate(format!(
            "subject '{}' is not an agent uuid",
            info.common_name
        ))
    })
}

pub fn to_pem(tag: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

/// Every certificate in a PEM bundle, in order.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(PkiError::BadCertificate("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn cert_from_pem(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::BadCertificate("empty".into()))
}

pub fn private_key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::BadCertificate(format!("private key: {e}")))
}

/// Writes a secret file readable by its owner only (0600), replacing any previous one (and a
/// link planted in its place: see [`crate::files`]).
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_file(path, contents, 0o600)
}

/// Writes a public file (certificates, 0644), atomically, replacing any previous one (and a
/// link planted in its place: see [`crate::files`]).
pub fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_file(path, contents, 0o644)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    crate::files::write_replacing(path, contents.as_bytes(), mode).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn a_greedy_csr_gets_a_plain_client_leaf() {
        let ca = Ca::generate("Outpost test CA", DAY).unwrap();
        // A CSR asking to be a CA, for the controller's name, for server auth, for 100 years.
        let key = KeyPair::generate().unwrap();
        let mut greedy = CertificateParams::new(vec!["controller.example.com".to_owned()]).unwrap();
        greedy.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        greedy.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        greedy.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        greedy.not_after = rcgen::date_time_ymd(2125, 1, 1);
        let csr = greedy.serialize_request(&key).unwrap();
        let agent = Uuid::new_v4();
        let cert = ca.sign_agent_csr(csr.der(), agent, 7 * DAY).unwrap();
        let info = inspect(&cert).unwrap();
        assert!(!info.is_ca, "never a CA");
        assert!(info.client_auth && !info.server_auth, "client auth only");
        assert!(
            info.dns_names.is_empty(),
            "no DNS names: {:?}",
            info.dns_names
        );
        assert_eq!(info.uris, vec![format!("urn:uuid:{agent}")]);
        assert_eq!(info.common_name, agent.to_string());
        assert_eq!(agent_uuid(&cert).unwrap(), agent);
        let life = info.not_after - OffsetDateTime::now_utc();
        assert!(
            life <= time::Duration::days(7) && life > time::Duration::days(6),
            "{life}"
        );
        let backdated = OffsetDateTime::now_utc() - info.not_before;
        assert!(
            backdated <= time::Duration::minutes(5) + time::Duration::seconds(5),
            "{backdated}"
        );
        // A short life gets proportionally short slack, so renewal at a third left is sane.
        let short = ca
            .sign_agent_csr(csr.der(), agent, Duration::from_secs(30))
            .unwrap();
        let info = inspect(&short).unwrap();
        assert!(info.not_after - info.not_before <= time::Duration::seconds(34));
    }

    #[test]
    fn csr_garbage_is_refused() {
        let ca = Ca::generate("CA", DAY).unwrap();
        assert!(matches!(
            ca.sign_agent_csr(b"not a csr", Uuid::new_v4(), DAY),
            Err(PkiError::BadCsr(_))
        ));
    }

    #[test]
    fn ca_round_trips_through_pem_and_is_pinned_by_fingerprint() {
        let ca = Ca::generate("CA", DAY).unwrap();
        let again = Ca::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint());
        assert_eq!(ca.fingerprint().len(), 64);
        assert!(inspect(ca.cert_der()).unwrap().is_ca);
        let server = ca
            .issue_server(
                &["localhost".into(), "127.0.0.1".into(), "fd00::7".into()],
                DAY,
            )
            .unwrap();
        let info = inspect(&server.cert_der).unwrap();
        assert!(info.server_auth && !info.is_ca);
        assert_eq!(info.dns_names, vec!["localhost".to_owned()]);
        let ips: Vec<String> = info.ip_addresses.iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["127.0.0.1", "fd00::7"]);
    }

    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        write_private(&path, "secret").unwrap();
        write_private(&path, "secret2").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret2");
    }
}
