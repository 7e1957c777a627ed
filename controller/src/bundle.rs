//! Install bundles: what a bastion needs to become an agent, in one tar.gz an operator hands to
//! `ansible-playbook`. Its `install.yml` installs the binary and the unit, enrols with the
//! bundle's one-time token (copied to the bastion as a 0600 file, never put on a command line),
//! starts the service and waits until the controller has the agent online.
//!
//! [`prepare`] checks a request and issues the token; [`Bundle::write`] writes the archive, a
//! blocking job for a thread of its own (it compresses the agent binary).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use thiserror::Error;

use crate::store::audit::Actor;
use crate::store::{Store, StoreError};

/// The playbook and the unit the bundle installs, as the repository has them.
const INSTALL_PLAYBOOK: &str = include_str!("../../deploy/bundle/install.yml");
const AGENT_UNIT: &str = include_str!("../../deploy/systemd/outpost-agent.service");

/// Where the controller's Debian package puts the agent binary it bundles.
pub const PACKAGED_AGENT_BINARY: &str = "/usr/lib/outpost/outpost-agent";

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("the agent binary {path} cannot be read: {source}")]
    AgentBinary { path: PathBuf, source: io::Error },
    #[error("no outpost-agent binary to bundle (looked for {searched}): set agent_binary (or --agent-binary) to the agent built for the bastions")]
    NoAgentBinary { searched: String },
    #[error("'{0}' cannot name an agent's bundle: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")]
    Name(String),
    #[error(
        "no address to give the agent: name the host (or IP) the bastions reach this controller at"
    )]
    NoAddress,
    #[error("'{host}' is not among the names of the controller's certificate ({names}): agents would refuse it. Give one of those (the names were set by `outpost-controller init --name`)")]
    NotInCertificate { host: String, names: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot write the bundle: {0}")]
    Write(#[from] io::Error),
}

/// Where bundles made by this controller send agents, and what they install.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The DNS names and addresses of the controller's certificate: an agent checks the
    /// controller against them, so only these can be given.
    pub names: Vec<String>,
    pub agent_port: u16,
    pub enroll_port: u16,
    pub ca_fingerprint: String,
    /// The agent binary configured (unset: see [`locate_agent_binary`]).
    pub agent_binary: Option<PathBuf>,
}

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct BundleRequest {
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// Hosts the agent is to reach the controller at; empty: the certificate's names, loopback
    /// ones left out (see [`default_hosts`]).
    pub hosts: Vec<String>,
    pub ttl: chrono::Duration,
}

/// One bundle, its token issued. Not `Debug`: it holds the secret.
pub struct Bundle {
    pub name: String,
    /// The record of the token, to withdraw it if the bundle cannot be written.
    pub token_id: i32,
    pub labels: Vec<(String, String)>,
    /// The one-time enrolment token: a secret until it is used.
    token: String,
    pub ca_fingerprint: String,
    pub expires_at: DateTime<Utc>,
    pub enroll_address: String,
    pub connect: Vec<String>,
    pub agent_binary: PathBuf,
}

/// Checks a request and issues its one-time token. Nothing is issued when the request cannot
/// make a bundle.
pub async fn prepare(
    store: &Store,
    origin: &Origin,
    req: BundleRequest,
    actor: &Actor,
) -> Result<Bundle, BundleError> {
    check_name(&req.name)?;
    let agent_binary = locate_agent_binary(origin.agent_binary.as_deref())?;
    let hosts = choose_hosts(&req.hosts, &origin.names)?;
    let issued = crate::enroll::issue_token(
        store,
        &origin.ca_fingerprint,
        &req.name,
        &req.labels,
        req.ttl,
        actor,
    )
    .await?;
    Ok(Bundle {
        name: req.name,
        token_id: issued.record.id,
        labels: req.labels,
        token: issued.token.encode(),
        ca_fingerprint: origin.ca_fingerprint.clone(),
        expires_at: issued.record.expires_at,
        enroll_address: endpoint(&hosts[0], origin.enroll_port),
        connect: hosts
            .iter()
            .map(|h| endpoint(h, origin.agent_port))
            .collect(),
        agent_binary,
    })
}

/// Names become a directory and a file name on the operator's machine: kept to a safe set.
pub fn check_name(name: &str) -> Result<(), BundleError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(BundleError::Name(name.to_owned()))
    }
}

fn is_loopback(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The certificate's names a remote bastion can use: loopback ones only when there is nothing
/// else (a controller and agent on one machine).
pub fn default_hosts(names: &[String]) -> Vec<String> {
    let remote: Vec<String> = names.iter().filter(|n| !is_loopback(n)).cloned().collect();
    if remote.is_empty() {
        names.to_vec()
    } else {
        remote
    }
}

fn choose_hosts(asked: &[String], names: &[String]) -> Result<Vec<String>, BundleError> {
    if asked.is_empty() {
        let hosts = default_hosts(names);
        return if hosts.is_empty() {
            Err(BundleError::NoAddress)
        } else {
            Ok(hosts)
        };
    }
    for host in asked {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
            return Err(BundleError::NotInCertificate {
                host: host.clone(),
                names: names.join(", "),
            });
        }
    }
    Ok(asked.to_vec())
}

/// HOST:PORT, with an IPv6 address in brackets.
pub fn endpoint(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// The agent binary to bundle: the one configured, else `outpost-agent` beside this
/// executable (a build tree, or a tarball install), else the package's.
pub fn locate_agent_binary(configured: Option<&Path>) -> Result<PathBuf, BundleError> {
    if let Some(p) = configured {
        return match std::fs::metadata(p) {
            Ok(m) if m.is_file() => Ok(p.to_path_buf()),
            Ok(_) => Err(BundleError::AgentBinary {
                path: p.to_path_buf(),
                source: io::Error::other("not a file"),
            }),
            Err(source) => Err(BundleError::AgentBinary {
                path: p.to_path_buf(),
                source,
            }),
        };
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("outpost-agent"));
    }
    candidates.push(PathBuf::from(PACKAGED_AGENT_BINARY));
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| BundleError::NoAgentBinary {
            searched: candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A YAML scalar: JSON's quoting is valid YAML and leaves nothing to interpretation.
fn yaml<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

impl Bundle {
    /// The directory the archive unpacks into.
    pub fn dir_name(&self) -> String {
        format!("outpost-agent-{}", self.name)
    }

    pub fn file_name(&self) -> String {
        format!("{}.tar.gz", self.dir_name())
    }

    fn labels_text(&self) -> String {
        let l: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if l.is_empty() {
            "no labels".into()
        } else {
            l.join(",")
        }
    }

    /// `bundle.yml`: what install.yml installs and where the agent goes.
    pub fn vars(&self) -> String {
        let labels: BTreeMap<&str, &str> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        format!(
            "# Written by `outpost-controller bundle` for agent {name}: read by install.yml.\n\
             outpost_agent_name: {name_q}\n\
             outpost_labels: {labels}\n\
             outpost_enroll_address: {enroll}\n\
             outpost_connect: {connect}\n\
             outpost_ca_fingerprint: {fp}\n\
             outpost_token_expires_at: {expires}\n\
             outpost_bundle_version: {version}\n",
            name = self.name,
            name_q = yaml(&self.name),
            labels = yaml(&labels),
            enroll = yaml(&self.enroll_address),
            connect = yaml(&self.connect),
            fp = yaml(&self.ca_fingerprint),
            expires = yaml(&self.expires_at.to_rfc3339()),
            version = yaml(env!("CARGO_PKG_VERSION")),
        )
    }

    fn readme(&self) -> String {
        format!(
            "Outpost agent bundle for {name} ({labels}).\n\
             \n\
             Install it on the bastion over SSH, as a user that may become root:\n\
             \n\
             \x20 ansible-playbook -i BASTION, install.yml\n\
             \n\
             It installs /usr/local/bin/outpost-agent and its systemd unit, creates the\n\
             outpost-agent user, enrols with enroll-token, starts the service and waits until\n\
             the controller ({enroll}) has the agent online. A second run changes nothing.\n\
             Settings (-e name=value) are listed at the top of install.yml.\n\
             \n\
             enroll-token is a secret until it is used: it enrols one bastion, once, until\n\
             {expires}. Keep this directory private, and make a new bundle for each bastion.\n\
             The controller's CA fingerprint (sha256), pinned by the token: {fp}\n",
            name = self.name,
            labels = self.labels_text(),
            enroll = self.enroll_address,
            expires = self.expires_at.format("%Y-%m-%d %H:%M UTC"),
            fp = self.ca_fingerprint,
        )
    }

    /// One line for the operator, without the secret.
    pub fn summary(&self) -> String {
        format!(
            "bundle for agent '{}' ({}), enrolling at {}; its token works once, until {}",
            self.name,
            self.labels_text(),
            self.enroll_address,
            self.expires_at.format("%Y-%m-%d %H:%M UTC")
        )
    }

    /// Writes the tar.gz to `out` and hands `out` back. The token's file is 0600 in the
    /// archive, the binary 0755, the rest 0644, under a 0700 directory.
    pub fn write<W: Write>(&self, out: W) -> Result<W, BundleError> {
        let binary =
            std::fs::File::open(&self.agent_binary).map_err(|source| BundleError::AgentBinary {
                path: self.agent_binary.clone(),
                source,
            })?;
        let binary_len = binary
            .metadata()
            .map_err(|source| BundleError::AgentBinary {
                path: self.agent_binary.clone(),
                source,
            })?
            .len();
        let mtime = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let dir = self.dir_name();
        let mut tar = tar::Builder::new(GzEncoder::new(out, Compression::default()));

        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o700);
        header.set_size(0);
        header.set_mtime(mtime);
        tar.append_data(&mut header, format!("{dir}/"), io::empty())?;

        let texts: [(&str, u32, String); 5] = [
            ("install.yml", 0o644, INSTALL_PLAYBOOK.to_owned()),
            ("bundle.yml", 0o644, self.vars()),
            ("README", 0o644, self.readme()),
            ("outpost-agent.service", 0o644, AGENT_UNIT.to_owned()),
            ("enroll-token", 0o600, format!("{}\n", self.token)),
        ];
        for (name, mode, text) in &texts {
            let mut header = file_header(*mode, text.len() as u64, mtime);
            tar.append_data(&mut header, format!("{dir}/{name}"), text.as_bytes())?;
        }
        let mut header = file_header(0o755, binary_len, mtime);
        tar.append_data(&mut header, format!("{dir}/outpost-agent"), binary)?;

        let gz = tar.into_inner()?;
        Ok(gz.finish()?)
    }
}

fn file_header(mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn bundle(binary: &Path) -> Bundle {
        Bundle {
            name: "bastion-fra1".into(),
            token_id: 1,
            labels: vec![
                ("dc".into(), "fra1".into()),
                ("tier".into(), "a \"b\"".into()),
            ],
            token: "opt1.secret.fp.check".into(),
            ca_fingerprint: "ab".repeat(32),
            expires_at: "2026-12-03T10:00:00Z".parse().unwrap(),
            enroll_address: "ctl.example.com:7444".into(),
            connect: vec!["ctl.example.com:7443".into(), "[fd00::1]:7443".into()],
            agent_binary: binary.to_path_buf(),
        }
    }

    #[test]
    fn the_archive_holds_each_file_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("outpost-agent");
        std::fs::write(&binary, vec![7u8; 300_000]).unwrap();
        let b = bundle(&binary);
        let gz = b.write(Vec::new()).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut seen = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut e = entry.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mode = e.header().mode().unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            seen.insert(path, (mode, body));
        }
        let names: Vec<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "outpost-agent-bastion-fra1/",
                "outpost-agent-bastion-fra1/README",
                "outpost-agent-bastion-fra1/bundle.yml",
                "outpost-agent-bastion-fra1/enroll-token",
                "outpost-agent-bastion-fra1/install.yml",
                "outpost-agent-bastion-fra1/outpost-agent",
                "outpost-agent-bastion-fra1/outpost-agent.service",
            ]
        );
        let at = |n: &str| &seen[&format!("outpost-agent-bastion-fra1/{n}")];
        assert_eq!(seen["outpost-agent-bastion-fra1/"].0, 0o700);
        assert_eq!(
            at("enroll-token"),
            &(0o600, b"opt1.secret.fp.check\n".to_vec())
        );
        assert_eq!(at("outpost-agent"), &(0o755, vec![7u8; 300_000]));
        assert_eq!(at("install.yml").0, 0o644);
        // Nothing but the token's own file holds the secret.
        for (path, (_, body)) in &seen {
            if !path.ends_with("enroll-token") {
                assert!(
                    !String::from_utf8_lossy(body).contains("opt1.secret"),
                    "{path} holds the token"
                );
            }
        }
    }

    #[test]
    fn the_vars_are_yaml_an_ansible_run_reads_back() {
        let b = bundle(Path::new("/nonexistent"));
        let docs = yaml_rust2::YamlLoader::load_from_str(&b.vars()).unwrap();
        let v = &docs[0];
        assert_eq!(v["outpost_agent_name"].as_str(), Some("bastion-fra1"));
        assert_eq!(v["outpost_labels"]["dc"].as_str(), Some("fra1"));
        assert_eq!(v["outpost_labels"]["tier"].as_str(), Some("a \"b\""));
        assert_eq!(
            v["outpost_enroll_address"].as_str(),
            Some("ctl.example.com:7444")
        );
        assert_eq!(v["outpost_connect"][1].as_str(), Some("[fd00::1]:7443"));
        assert_eq!(v["outpost_ca_fingerprint"].as_str().map(str::len), Some(64));
    }

    #[test]
    fn names_are_kept_to_a_safe_set() {
        for good in ["bastion-fra1", "b", "dc1.bastion_2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../etc",
            "-rf",
            "a b",
            "a/b",
            ".hidden",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_come_from_the_certificate() {
        let names: Vec<String> = ["localhost", "127.0.0.1", "ctl.example.com", "10.0.0.5"]
            .map(String::from)
            .to_vec();
        assert_eq!(default_hosts(&names), ["ctl.example.com", "10.0.0.5"]);
        let local: Vec<String> = vec!["localhost".into(), "::1".into()];
        assert_eq!(default_hosts(&local), local);
        assert_eq!(
            choose_hosts(&["10.0.0.5".into()], &names).unwrap(),
            ["10.0.0.5"]
        );
        let e = choose_hosts(&["ctl.other.net".into()], &names).unwrap_err();
        assert!(e.to_string().contains("ctl.example.com"), "{e}");
        assert!(matches!(
            choose_hosts(&[], &[]),
            Err(BundleError::NoAddress)
        ));
        assert_eq!(endpoint("fd00::1", 7443), "[fd00::1]:7443");
        assert_eq!(endpoint("10.0.0.5", 7444), "10.0.0.5:7444");
    }

    #[test]
    fn a_configured_binary_must_exist() {
        let e = locate_agent_binary(Some(Path::new("/nonexistent/outpost-agent"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/outpost-agent"), "{e}");
    }
}
