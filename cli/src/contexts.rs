//! Named controllers the CLI knows (like kubectl's contexts): address, the CA it trusts, and the
//! token of the last login. Kept in `<config dir>/outpost/contexts.json`, mode 0600.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Contexts {
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Context {
    pub url: String,
    /// The CA the API's certificate must chain to (PEM).
    pub ca_pem: String,
    pub username: Option<String>,
    pub token: Option<String>,
    pub token_expires_at: Option<DateTime<Utc>>,
}

/// `$OUTPOST_CONFIG_DIR`, else `$XDG_CONFIG_HOME/outpost`, else `~/.config/outpost`.
pub fn dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("OUTPOST_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(d).join("outpost"));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("outpost")),
        None => bail!("set HOME or OUTPOST_CONFIG_DIR: there is nowhere to keep the login"),
    }
}

impl Contexts {
    pub fn path() -> anyhow::Result<PathBuf> {
        Ok(dir()?.join("contexts.json"))
    }

    pub fn load() -> anyhow::Result<Contexts> {
        let path = Contexts::path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is unreadable; remove it and log in again",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contexts::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the file with mode 0600 (it holds tokens) in a directory of mode 0700.
    pub fn save(&self) -> anyhow::Result<()> {
        let path = Contexts::path()?;
        let dir = path.parent().map(PathBuf::from).unwrap_or_default();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        let tmp = dir.join(".contexts.json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// The context named `name`, else the current one.
    pub fn pick(&self, name: Option<&str>) -> anyhow::Result<(String, Context)> {
        let name = match name.or(self.current.as_deref()) {
            Some(n) => n.to_owned(),
            None => bail!("not logged in: run `outpost login https://controller:8443 --ca-fingerprint <sha256>`"),
        };
        match self.contexts.get(&name) {
            Some(c) => Ok((name, c.clone())),
            None => bail!("no context named '{name}': `outpost context list` shows them"),
        }
    }
}
