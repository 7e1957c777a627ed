//! A channel's secrets — its URL (a chat webhook's URL is its credential) and its signing
//! secret or SMTP password — sealed with the credentials keyring, bound to the channel's row
//! by its uuid and kind, wiped from memory when dropped.

use serde::{Deserialize, Serialize};

use super::ChannelKind;
use crate::keyring::{Keyring, KeyringError, Sealed};

#[derive(Serialize, Deserialize, Default, Clone)]
pub struct ChannelSecret {
    pub url: Option<String>,
    pub secret: Option<String>,
}

impl Drop for ChannelSecret {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.url.zeroize();
        self.secret.zeroize();
    }
}

impl std::fmt::Debug for ChannelSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelSecret(<redacted>)")
    }
}

/// What binds a sealed secret to its channel.
pub fn context(uuid: &str, kind: ChannelKind) -> Vec<u8> {
    format!("outpost notification channel v1/{uuid}/{}", kind.as_str()).into_bytes()
}

pub fn seal(
    keyring: &Keyring,
    uuid: &str,
    kind: ChannelKind,
    s: &ChannelSecret,
) -> Result<Sealed, KeyringError> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(s).map_err(|_| KeyringError::Malformed("unencodable"))?,
    );
    keyring.seal(&plain, &context(uuid, kind))
}

pub fn open(
    keyring: &Keyring,
    uuid: &str,
    kind: ChannelKind,
    sealed: &Sealed,
) -> Result<ChannelSecret, KeyringError> {
    let plain = keyring.open(sealed, &context(uuid, kind))?;
    serde_json::from_slice(&plain).map_err(|_| KeyringError::Malformed("not a channel secret"))
}

/// A URL as it may be shown: its scheme, host and port, the path hidden.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<unreadable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_channel() {
        let dir = tempfile::tempdir().unwrap();
        let k = Keyring::load_or_create(dir.path()).unwrap();
        let s = ChannelSecret {
            url: Some("https://h/x".into()),
            secret: Some("k".into()),
        };
        let sealed = seal(&k, "u1", ChannelKind::Webhook, &s).unwrap();
        let back = open(&k, "u1", ChannelKind::Webhook, &sealed).unwrap();
        assert_eq!(back.secret.as_deref(), Some("k"));
        assert!(open(&k, "u2", ChannelKind::Webhook, &sealed).is_err());
        assert!(open(&k, "u1", ChannelKind::Chat, &sealed).is_err());
        assert_eq!(format!("{back:?}"), "ChannelSecret(<redacted>)");
    }

    #[test]
    fn urls_show_only_their_origin() {
        assert_eq!(
            shown_url("https://hooks.example:8443/services/T0/SECRET"),
            "https://hooks.example:8443/…"
        );
        assert!(!shown_url("http://h/SECRET?token=x").contains("SECRET"));
    }
}
