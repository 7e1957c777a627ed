//! `outpost-agent doctor`: what a bastion needs, checked one line each — ansible-playbook, the
//! state directory's owner and modes, the certificate's expiry, each controller reachable over
//! UDP with the mutual-TLS handshake accepted, the SSH keys readable.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::{close, pki, tls};

use crate::state::StateDir;

/// A certificate closer than this to its expiry is reported (the agent renews at two thirds of
/// its lifetime; one this close has not managed to).
const EXPIRY_WARNING: Duration = Duration::from_secs(2 * 86_400);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub check: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark} {:<12} {}", self.check, self.detail)
    }
}

fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        ok: true,
        check,
        detail: detail.into(),
    }
}

fn fail(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding {
        ok: false,
        check,
        detail: detail.into(),
    }
}

/// What to check.
pub struct DoctorOptions {
    pub ansible_playbook: PathBuf,
    /// Controllers to try [default: those stored at enrolment].
    pub controllers: Vec<String>,
    /// Private keys ansible logs in with.
    pub ssh_keys: Vec<PathBuf>,
}

/// Runs every check; the agent is healthy when every finding is ok.
pub async fn examine(state: &StateDir, opts: &DoctorOptions) -> Vec<Finding> {
    let mut out = vec![ansible(&opts.ansible_playbook).await];
    out.extend(state_dir(state));
    out.push(certificate(state));
    let controllers = if opts.controllers.is_empty() {
        state
            .load_identity()
            .map(|i| i.controllers)
            .unwrap_or_default()
    } else {
        opts.controllers.clone()
    };
    if controllers.is_empty() {
        out.push(fail(
            "controller",
            "no controller address: enrol first, or pass --controller HOST:PORT",
        ));
    }
    for c in &controllers {
        out.push(controller(state, c).await);
    }
    for k in &opts.ssh_keys {
        out.push(ssh_key(k));
    }
    out
}

async fn ansible(bin: &Path) -> Finding {
    match crate::service::probe_ansible(bin).await {
        Err(why) => fail(
            "ansible",
            format!("{why} (install ansible-core: python3 -m pip install ansible-core, or pass --ansible-playbook)"),
        ),
        Ok(version) => ok("ansible", format!("{version} ({})", bin.display())),
    }
}

/// The directory and its secrets: owned by the agent's user, nobody else can read them.
fn state_dir(state: &StateDir) -> Vec<Finding> {
    let uid = nix_uid();
    let mut out = Vec::new();
    for (path, what) in [
        (state.root.clone(), "the state directory"),
        (state.key_file(), "the private key"),
    ] {
        let path = path.as_path();
        match std::fs::metadata(path) {
            Err(e) => out.push(fail(
                "state",
                format!("{what} {}: {e} (run `outpost-agent enroll` first)", path.display()),
            )),
            Ok(m) if m.uid() != uid => out.push(fail(
                "state",
                format!(
                    "{what} {} belongs to uid {}, not to this user (uid {uid}): chown it to the agent's user",
                    path.display(),
                    m.uid()
                ),
            )),
            Ok(m) if m.mode() & 0o077 != 0 => out.push(fail(
                "state",
                format!(
                    "{what} {} has mode {:04o}: others may read it; chmod {} it",
                    path.display(),
                    m.mode() & 0o7777,
                    if m.is_dir() { "0700" } else { "0600" }
                ),
            )),
            Ok(m) => out.push(ok(
                "state",
                format!("{what} {} (mode {:04o})", path.display(), m.mode() & 0o7777),
            )),
        }
    }
    out
}

fn nix_uid() -> u32 {
    // SAFETY: getuid(2) cannot fail.
    unsafe { libc::getuid() }
}

fn certificate(state: &StateDir) -> Finding {
    let path = state.cert_file();
    let info = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|pem| pki::certs_from_pem(&pem).map_err(|e| e.to_string()))
        .and_then(|certs| {
            certs
                .first()
                .ok_or_else(|| "no certificate in the file".to_owned())
                .and_then(|c| pki::inspect(c).map_err(|e| e.to_string()))
        });
    match info {
        Err(e) => fail("certificate", format!("{}: {e}", path.display())),
        Ok(info) => {
            let now = time::OffsetDateTime::now_utc();
            let left = info.not_after - now;
            if left.is_negative() {
                fail(
                    "certificate",
                    format!(
                        "expired on {}: enrol again with a new token (--force)",
                        info.not_after.date()
                    ),
                )
            } else if left < EXPIRY_WARNING {
                fail(
                    "certificate",
                    format!(
                        "expires on {} and was not renewed: is the agent connecting?",
                        info.not_after
                    ),
                )
            } else {
                ok(
                    "certificate",
                    format!(
                        "valid until {} ({} days left)",
                        info.not_after.date(),
                        left.whole_days()
                    ),
                )
            }
        }
    }
}

/// Resolves the address, opens a QUIC connection with the agent's own certificate and closes
/// it once the handshake is accepted (no Hello: a running agent's session is left alone).
async fn controller(state: &StateDir, addr: &str) -> Finding {
    let (sock, host) = match crate::session::resolve(addr).await {
        Ok(r) => r,
        Err(e) => return fail("controller", format!("{addr}: {e}")),
    };
    let config =
        match state
            .credentials()
            .map_err(|e| e.to_string())
            .and_then(|(chain, key, ca)| {
                tls::agent_client_config(&ca, chain, key, tls::Timers::default())
                    .map_err(|e| e.to_string())
            }) {
            Ok(c) => c,
            Err(e) => return fail("controller", format!("{addr}: no credentials: {e}")),
        };
    let endpoint = match crate::session::client_endpoint() {
        Ok(e) => e,
        Err(e) => return fail("controller", format!("cannot open a UDP socket: {e}")),
    };
    let result = match endpoint.connect_with(config, sock, &host) {
        Err(e) => Err(e.to_string()),
        Ok(connecting) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Err(_) => Err(format!(
                "no answer over UDP in {} s: is the controller up, and UDP port {} open on the way?",
                HANDSHAKE_TIMEOUT.as_secs(),
                sock.port()
            )),
            Ok(Err(e)) => Err(format!("handshake refused: {e}")),
            Ok(Ok(conn)) => {
                conn.close(quinn::VarInt::from_u32(close::NORMAL), b"doctor");
                Ok(())
            }
        },
    };
    endpoint.wait_idle().await;
    match result {
        Ok(()) => ok(
            "controller",
            format!("{addr}: reachable, mutual-TLS handshake accepted"),
        ),
        Err(e) => fail("controller", format!("{addr}: {e}")),
    }
}

fn ssh_key(path: &Path) -> Finding {
    match std::fs::read(path) {
        Err(e) => fail("ssh key", format!("{}: {e}", path.display())),
        Ok(bytes) if !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY") => {
            fail("ssh key", format!("{}: not a private key", path.display()))
        }
        Ok(_) => ok("ssh key", format!("{} readable", path.display())),
    }
}
