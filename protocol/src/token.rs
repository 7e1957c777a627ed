//! The enrolment token: one line an operator copies from `outpost agent token` to
//! `outpost-agent enroll`. It carries a one-time secret and the SHA-256 fingerprint of the CA,
//! so the agent can pin the controller before it sends anything (as `kubeadm join` does), and
//! a checksum so a damaged copy is noticed on the agent instead of failing obscurely later.
//!
//! Format: `opt1.<secret: 43 base64url chars>.<CA fingerprint: 64 hex>.<check: 8 hex>`.

use base64::Engine;
use sha2::{Digest, Sha256};
use thiserror::Error;

const PREFIX: &str = "opt1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollToken {
    pub secret: String,
    pub ca_fingerprint: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not an Outpost enrolment token: expected opt1.<secret>.<ca-fingerprint>.<check>; copy the whole line printed by `outpost agent token`")]
    Format,
    #[error(
        "the token's secret is malformed: copy the whole line printed by `outpost agent token`"
    )]
    Secret,
    #[error("the token's CA fingerprint is malformed (expected 64 hex digits)")]
    Fingerprint,
    #[error("the token is damaged (its checksum does not match): copy it again")]
    Checksum,
}

fn checksum(secret: &str, fingerprint: &str) -> String {
    let digest = Sha256::digest(format!("{PREFIX}.{secret}.{fingerprint}"));
    hex::encode(&digest[..4])
}

impl EnrollToken {
    /// A fresh token with 256 bits of secret, for the CA with this fingerprint.
    pub fn generate(ca_fingerprint: &str) -> EnrollToken {
        let bytes: [u8; 32] = rand::random();
        EnrollToken {
            secret: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
            ca_fingerprint: ca_fingerprint.to_ascii_lowercase(),
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}.{}.{}.{}",
            self.secret,
            self.ca_fingerprint,
            checksum(&self.secret, &self.ca_fingerprint)
        )
    }

    pub fn parse(text: &str) -> Result<EnrollToken, TokenError> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        let [prefix, secret, fingerprint, check] = parts[..] else {
            return Err(TokenError::Format);
        };
        if prefix != PREFIX {
            return Err(TokenError::Format);
        }
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| TokenError::Secret)?;
        if decoded.len() != 32 {
            return Err(TokenError::Secret);
        }
        if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Fingerprint);
        }
        let fingerprint = fingerprint.to_ascii_lowercase();
        if check.to_ascii_lowercase() != checksum(secret, &fingerprint) {
            return Err(TokenError::Checksum);
        }
        Ok(EnrollToken {
            secret: secret.to_owned(),
            ca_fingerprint: fingerprint,
        })
    }

    /// What the controller stores: the SHA-256 of the secret. The secret is 256 random bits,
    /// so a fast hash is enough; the plain secret is never stored or logged.
    pub fn secret_hash(secret: &str) -> String {
        hex::encode(Sha256::digest(secret.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = EnrollToken::generate(&"AB".repeat(32));
        let text = t.encode();
        assert!(text.starts_with("opt1."));
        let back = EnrollToken::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.ca_fingerprint, "ab".repeat(32));
        assert_ne!(
            EnrollToken::generate("x").secret,
            EnrollToken::generate("x").secret
        );
    }

    #[test]
    fn damaged_tokens_are_refused() {
        let text = EnrollToken::generate(&"ab".repeat(32)).encode();
        assert_eq!(EnrollToken::parse("hello"), Err(TokenError::Format));
        assert_eq!(
            EnrollToken::parse(&text.replacen("opt1", "opt2", 1)),
            Err(TokenError::Format)
        );
        // Flip one character of the fingerprint (position 50 is inside it).
        let mut chars: Vec<char> = text.chars().collect();
        let i = text.find('.').unwrap() + 1 + 43 + 1 + 10;
        chars[i] = if chars[i] == '0' { '1' } else { '0' };
        let tampered: String = chars.into_iter().collect();
        assert_eq!(EnrollToken::parse(&tampered), Err(TokenError::Checksum));
        let short = text.replacen(&text[5..10], "", 1);
        assert_eq!(EnrollToken::parse(&short), Err(TokenError::Secret));
    }

    #[test]
    fn the_hash_is_not_the_secret() {
        let t = EnrollToken::generate("f");
        let h = EnrollToken::secret_hash(&t.secret);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&t.secret));
    }
}
