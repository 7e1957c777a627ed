//! Trusting a controller the first time: by the SHA-256 fingerprint of its CA (as `kubeadm join`
//! pins a cluster), or a CA file. With a fingerprint, the connection is accepted only if the
//! chain the controller presents holds a CA with that fingerprint and the leaf verifies against
//! it (the protocol crate's verifier, the one enrolling agents use); that CA is then kept for
//! every later connection.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use outpost_protocol::tls::PinnedCaVerifier;

/// Normalises a fingerprint as printed (`AB:CD…`, `sha256:abcd…`) to lower-case hex.
pub fn normalize_fingerprint(fp: &str) -> anyhow::Result<String> {
    let hex: String = fp
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("'{fp}' is not a SHA-256 fingerprint (64 hex digits)");
    }
    Ok(hex)
}

/// Connects to `url` trusting only a CA with `fingerprint`; returns that CA as PEM.
pub async fn fetch_pinned_ca(url: &str, fingerprint: &str) -> anyhow::Result<String> {
    let pinned = PinnedCaVerifier::new(&normalize_fingerprint(fingerprint)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(pinned.clone())
        .with_no_client_auth();
    let client =
        outpost_api::client::Client::with_tls(url, cfg)?.with_user_agent(crate::USER_AGENT);
    client
        .health()
        .await
        .with_context(|| format!("cannot reach {url} with the CA fingerprint {fingerprint}"))?;
    let der = pinned
        .found_ca()
        .context("the handshake did not show the CA")?;
    Ok(pem(&der))
}

/// A certificate in PEM.
pub fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalised() {
        let hex = "ab".repeat(32);
        let colons = hex
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(normalize_fingerprint(&colons).unwrap(), hex);
        assert_eq!(
            normalize_fingerprint(&format!("sha256:{hex}")).unwrap(),
            hex
        );
        assert!(normalize_fingerprint("abc").is_err());
    }
}
