//! The messages of the four kinds of stream. Every type is plain serde data that postcard can
//! carry: no `serde_json::Value` (JSON travels as a string), no flattening, no skipped fields.
//!
//! - The **session stream**, one per connection, opened by the agent: [`Up`] agent → controller,
//!   [`Down`] controller → agent.
//! - A **job stream** per job: the controller opens it with [`JobDown::Assign`]; after a
//!   reconnect the agent opens it with [`StreamUp::Resume`]. Logs, acks and the outcome flow on
//!   it, so a chatty job never blocks another.
//! - A **fetch stream** per revision transfer: the agent opens it with [`StreamUp::Fetch`]; the
//!   controller answers with [`FetchDown`] (a manifest, then chunks). Its rules are
//!   [`crate::fetch`].
//! - The **enrolment stream**, on the enrolment endpoint: [`EnrollRequest`] / [`EnrollResponse`].

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::results::{PlayRecap, ResultBatch};

/// A label such as `dc=fra1`.
pub type Label = (String, String);

/// Text that is not a label.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("'{0}' is not a label; write key=value, e.g. dc=fra1")]
pub struct LabelError(pub String);

/// Reads a label written `key=value` (as on command lines).
pub fn parse_label(s: &str) -> Result<Label, LabelError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(LabelError(s.to_owned())),
    }
}

/// Agent → controller on the session stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Up {
    Hello(Hello),
    Heartbeat {
        seq: u64,
    },
    Status(AgentStatus),
    /// A certificate request for a fresh certificate (same key or a new one).
    Renew {
        csr_der: Vec<u8>,
    },
}

/// Controller → agent on the session stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Down {
    Welcome(Welcome),
    /// The session is refused (incompatible version, revoked…); the connection closes next.
    Refused {
        reason: String,
    },
    HeartbeatAck {
        seq: u64,
    },
    /// Stop the job: SIGTERM, then SIGKILL after the grace period.
    Cancel {
        job: Uuid,
        reason: String,
    },
    Renewed {
        cert_chain_der: Vec<Vec<u8>>,
    },
    RenewRefused {
        reason: String,
    },
}

/// The first message of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub agent_version: String,
    pub hostname: String,
    pub labels: Vec<Label>,
    /// How many jobs the agent runs at once.
    pub capacity: u32,
    /// The first line of `ansible-playbook --version`, or why it could not be run.
    pub ansible_version: String,
    /// Jobs the agent is still running (or still holds unacknowledged lines of).
    pub running: Vec<RunningJob>,
    /// Optional features the agent supports.
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningJob {
    pub job: Uuid,
    pub dispatch_id: String,
    /// The last line the controller acknowledged as stored (0: none).
    pub acked_through: u32,
    /// Whether the job has finished on the agent (only its lines and outcome are left).
    pub finished: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u16,
    pub controller_version: String,
    /// The agent's uuid as the controller knows it (from the certificate).
    pub agent: Uuid,
    pub heartbeat_interval_ms: u32,
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub running: u32,
    pub capacity: u32,
    /// The agent is draining (SIGTERM): it takes no new work.
    pub draining: bool,
}

/// Controller → agent on a job stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobDown {
    /// Boxed: an assignment can carry a whole (small) revision, the other variants a few bytes.
    Assign(Box<Assignment>),
    /// Every line up to and including `through_line` is committed to the database.
    LogAck { job: Uuid, through_line: u32 },
    /// The outcome is recorded; the agent may forget the job.
    FinishAck { job: Uuid },
    /// Every task result up to and including `through_seq` is stored.
    ResultAck { job: Uuid, through_seq: u32 },
}

/// Agent → controller on a job stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobUp {
    Accept {
        job: Uuid,
    },
    Reject {
        job: Uuid,
        reason: String,
    },
    Started {
        job: Uuid,
        at_ms: i64,
    },
    Logs(LogBatch),
    /// Per-task results from the agent's callback (see [`crate::results`]).
    Results(ResultBatch),
    Finished(Finished),
}

/// Agent → controller: the first frame of every stream the agent opens, saying what the stream
/// is for. (Streams the controller opens start with [`JobDown::Assign`].)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamUp {
    /// Reopens a job's stream after a reconnect; the job stream's rules follow ([`JobUp`] up,
    /// [`JobDown`] down), lines from `acked_through + 1`.
    Resume {
        job: Uuid,
        dispatch_id: String,
        acked_through: u32,
        /// The last task result the controller acknowledged (0: none).
        results_acked: u32,
    },
    /// Asks for a revision's bytes from `offset` (a multiple of [`crate::fetch::CHUNK_SIZE`]):
    /// [`FetchDown`] frames answer, and the controller finishes the stream after the last chunk.
    Fetch { digest: String, offset: u64 },
}

/// Controller → agent on a fetch stream: a [`Manifest`] (or a refusal), then the chunks from
/// the offset asked for, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FetchDown {
    Manifest(Manifest),
    /// Bytes `index * chunk_size ..` of the revision: a whole chunk, shorter only at the end.
    Chunk {
        index: u32,
        data: Vec<u8>,
    },
    /// The controller cannot serve this revision (unknown digest, unreadable file); asking
    /// again will not help.
    Refused {
        reason: String,
    },
}

/// What a revision is made of, so each chunk can be checked on arrival (and a bad one asked
/// for again) before the whole digest can be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The revision's size in bytes.
    pub size: u64,
    /// The size of every chunk but the last ([`crate::fetch::CHUNK_SIZE`]).
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order.
    pub chunks: Vec<[u8; 32]>,
}

/// A job handed to an agent: everything it needs to run it without asking again (but the
/// revision's bytes, which it fetches when it does not have them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub job: Uuid,
    /// Names this attempt; a stale attempt's messages are ignored.
    pub dispatch_id: String,
    pub playbook_name: String,
    /// The playbook's path inside the revision, relative ("site.yml", "playbooks/db.yml").
    pub playbook_path: String,
    pub revision: RevisionRef,
    pub target: Target,
    /// A JSON object of curated variables: the playbook's defaults, stored by an admin. ansible
    /// may evaluate templates in them.
    pub vars_json: String,
    /// A JSON object of the values given at launch, which override `vars_json`. They are data:
    /// the agent hands every string in them, keys included, to ansible marked `!unsafe`, so a
    /// caller's `{{ lookup('pipe', …) }}` is printed, never run. (Only where an admin launched
    /// with templates allowed does the controller put launch values into `vars_json` instead.)
    pub launch_vars_json: String,
    pub time_limit_secs: u32,
    pub options: RunOptions,
    /// The credentials the job uses, decrypted by the controller for this attempt only: the
    /// agent writes them 0600 into the job's private directory, hands ansible their paths and
    /// removes them when the job ends.
    pub secrets: JobSecrets,
}

/// The secrets of one job. Their `Debug` shows which are present, never their values, and
/// they are wiped from memory when dropped.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSecrets {
    /// The private key ansible's ssh uses (`--private-key`).
    pub ssh_key: Option<SshKeySecret>,
    /// Given to `become` (`--become-password-file`).
    pub become_password: Option<String>,
    /// One per vault id (`--vault-id ID@FILE`).
    pub vault: Vec<VaultSecret>,
    /// Secret answers of a template's survey: the agent writes them, as data (`!unsafe`), to a
    /// vars file of the job's secrets directory and hands ansible its path (`-e @FILE`).
    pub vars: Vec<SecretVar>,
}

/// One secret variable (a survey's secret answer).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretVar {
    pub name: String,
    pub value: String,
}

/// A private key in OpenSSH (or unencrypted PEM) form, with the passphrase that opens it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SshKeySecret {
    pub key: String,
    pub passphrase: Option<String>,
}

/// A vault password and the vault id it opens (`default` for files encrypted without one).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultSecret {
    pub id: String,
    pub password: String,
}

impl JobSecrets {
    pub fn is_empty(&self) -> bool {
        self.ssh_key.is_none()
            && self.become_password.is_none()
            && self.vault.is_empty()
            && self.vars.is_empty()
    }
}

/// Whether a vault id is one ansible reads back as such in `--vault-id ID@FILE`: 1–64 of
/// letters, digits, `_ - .` (no `@`, which would split it).
pub fn valid_vault_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl std::fmt::Debug for JobSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSecrets")
            .field("ssh_key", &self.ssh_key.as_ref().map(|_| "<redacted>"))
            .field(
                "become_password",
                &self.become_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "vault",
                &self.vault.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
            )
            .field(
                "vars",
                &self
                    .vars
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl std::fmt::Debug for SshKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SshKeySecret(<redacted>)")
    }
}

impl std::fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultSecret({}, <redacted>)", self.id)
    }
}

impl Drop for SshKeySecret {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key.zeroize();
        self.passphrase.zeroize();
    }
}

impl std::fmt::Debug for SecretVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretVar({}, <redacted>)", self.name)
    }
}

impl Drop for SecretVar {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.value.zeroize();
    }
}

impl Drop for VaultSecret {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.password.zeroize();
    }
}

impl Drop for JobSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.become_password.zeroize();
    }
}

/// The largest revision an assignment carries inline (see [`RevisionRef::inline`]).
pub const INLINE_REVISION_BYTES: usize = 64 * 1024;

/// The project revision a job runs: a canonical tar of the project's tree, named by digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionRef {
    /// Lower-case hex SHA-256 of the canonical tar.
    pub digest: String,
    pub size: u64,
    /// The git commit, for the record.
    pub commit: Option<String>,
    /// Directory (relative, "" = root) whose group_vars/ and host_vars/ apply to the job's
    /// inventory, as they would next to the inventory file in a checkout.
    pub inventory_dir: String,
    /// The whole tar when it is at most [`INLINE_REVISION_BYTES`] (64 KiB), so one-file
    /// projects need no second round trip; verified against `digest` like a fetched one.
    pub inline: Option<Vec<u8>>,
}

/// ansible-playbook's run options, as typed fields: the agent turns each into its own argument,
/// never into command-line text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// `--tags` (checked names: letters, digits, `_ - . :`).
    pub tags: Vec<String>,
    /// `--skip-tags`
    pub skip_tags: Vec<String>,
    /// `--check`
    pub check: bool,
    /// `--diff`
    pub diff: bool,
    /// Number of `-v`, at most 4.
    pub verbosity: u8,
}

impl RunOptions {
    /// The most `-v` ansible-playbook understands.
    pub const MAX_VERBOSITY: u8 = 4;

    /// Whether a tag name is safe and sensible: 1–64 of letters, digits, `_ - . :`, not
    /// starting with `-` (so it can never read as an option).
    pub fn valid_tag(tag: &str) -> bool {
        !tag.is_empty()
            && tag.len() <= 64
            && !tag.starts_with('-')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    }

    /// The checked arguments for ansible-playbook; an error names what is wrong.
    pub fn args(&self) -> Result<Vec<String>, OptionsError> {
        let mut args = Vec::new();
        for (flag, tags) in [("--tags", &self.tags), ("--skip-tags", &self.skip_tags)] {
            if tags.is_empty() {
                continue;
            }
            if let Some(bad) = tags.iter().find(|t| !RunOptions::valid_tag(t)) {
                return Err(OptionsError::Tag {
                    tag: bad.clone(),
                    flag,
                });
            }
            args.push(flag.to_owned());
            args.push(tags.join(","));
        }
        if self.check {
            args.push("--check".into());
        }
        if self.diff {
            args.push("--diff".into());
        }
        if self.verbosity > RunOptions::MAX_VERBOSITY {
            return Err(OptionsError::Verbosity(self.verbosity));
        }
        if self.verbosity > 0 {
            args.push(format!("-{}", "v".repeat(self.verbosity as usize)));
        }
        Ok(args)
    }
}

/// Run options ansible-playbook must not be given.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OptionsError {
    #[error("invalid tag '{tag}' for {flag}")]
    Tag { tag: String, flag: &'static str },
    #[error("verbosity {0} is above {max}", max = RunOptions::MAX_VERBOSITY)]
    Verbosity(u8),
}

/// The server a job runs against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub hostname: String,
    pub ip_address: String,
    pub ssh_port: u16,
    pub ssh_user: String,
    pub ssh_key_path: Option<String>,
    /// A JSON object of Ansible host variables, e.g. `{"ansible_connection":"local"}`.
    pub host_vars_json: String,
    /// The server's group chains as ansible reads them: each from the top group down to the
    /// group that lists the host, `all` and `ungrouped` left out, e.g.
    /// `[["prod","web"],["dc_fra1"]]`. Empty: no groups.
    pub groups: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }

    /// The level of one line of ansible-playbook output.
    pub fn classify(line: &str) -> Level {
        let t = line.trim_start();
        if t.starts_with("fatal:")
            || t.starts_with("failed:")
            || t.starts_with("ERROR!")
            || t.starts_with("[ERROR]")
        {
            Level::Error
        } else if t.starts_with("[WARNING]") || t.starts_with("[DEPRECATION WARNING]") {
            Level::Warning
        } else {
            Level::Info
        }
    }
}

/// Consecutive lines of one job: `lines[i]` is line `first_line + i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    pub job: Uuid,
    pub first_line: u32,
    pub lines: Vec<LogLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch, UTC.
    pub at_ms: i64,
    pub level: Level,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinalStatus {
    Success,
    Failed,
    Cancelled,
}

/// How a job ended on the agent. Sent after its last line; `last_line` lets the controller
/// record the outcome only once every line is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub job: Uuid,
    pub status: FinalStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub last_line: u32,
    /// The number of the last task result; the outcome waits for every one, as for lines.
    pub last_result: u32,
    /// ansible's recap, when the run got that far.
    pub recap: Option<PlayRecap>,
}

/// Agent → controller on the enrolment endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub protocol_version: u16,
    /// The token's secret part (the controller keeps only its hash).
    pub secret: String,
    pub csr_der: Vec<u8>,
    pub hostname: String,
    /// Labels asked for in addition to the token's (the token's win on conflict).
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EnrollResponse {
    Enrolled {
        agent: Uuid,
        name: String,
        /// The agent's certificate first, then the CA's.
        cert_chain_der: Vec<Vec<u8>>,
        labels: Vec<Label>,
    },
    Refused {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_debug_names_what_is_there_never_its_value() {
        let s = JobSecrets {
            vars: vec![SecretVar {
                name: "token".into(),
                value: "SECRETVAR".into(),
            }],
            ssh_key: Some(SshKeySecret {
                key: "KEYMATERIAL".into(),
                passphrase: Some("PASSPHRASE".into()),
            }),
            become_password: Some("SUDOPASS".into()),
            vault: vec![VaultSecret {
                id: "prod".into(),
                password: "VAULTPASS".into(),
            }],
        };
        let shown = format!("{s:?} {:?}", s.vault[0]);
        for secret in [
            "KEYMATERIAL",
            "PASSPHRASE",
            "SUDOPASS",
            "VAULTPASS",
            "SECRETVAR",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("prod") && shown.contains("redacted"),
            "{shown}"
        );
        assert!(!s.is_empty() && JobSecrets::default().is_empty());
    }

    #[test]
    fn vault_ids_are_single_argv_words_ansible_reads_back() {
        for ok in ["default", "prod", "dev-2", "a.b_c"] {
            assert!(valid_vault_id(ok), "{ok}");
        }
        for bad in ["", "a@b", "a b", "../x", "x\n", &"a".repeat(65)] {
            assert!(!valid_vault_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn labels_parse_from_key_value() {
        assert_eq!(parse_label("dc=fra1"), Ok(("dc".into(), "fra1".into())));
        assert_eq!(parse_label("note=a=b"), Ok(("note".into(), "a=b".into())));
        assert!(parse_label("dc")
            .unwrap_err()
            .to_string()
            .contains("key=value"));
        assert!(parse_label("=x").is_err());
    }

    #[test]
    fn ansible_lines_get_levels() {
        assert_eq!(
            Level::classify("fatal: [web1]: FAILED! => {}"),
            Level::Error
        );
        assert_eq!(Level::classify("failed: [web1] (item=x)"), Level::Error);
        assert_eq!(
            Level::classify("ERROR! the playbook could not be found"),
            Level::Error
        );
        assert_eq!(
            Level::classify("[WARNING]: No inventory was parsed"),
            Level::Warning
        );
        assert_eq!(Level::classify("ok: [web1]"), Level::Info);
        assert_eq!(Level::classify("TASK [debug] ****"), Level::Info);
    }
}

#[cfg(test)]
mod run_options_tests {
    use super::*;

    #[test]
    fn run_options_become_separate_checked_arguments() {
        let o = RunOptions {
            tags: vec!["web".into(), "db:setup".into()],
            skip_tags: vec!["slow".into()],
            check: true,
            diff: true,
            verbosity: 3,
        };
        assert_eq!(
            o.args().unwrap(),
            [
                "--tags",
                "web,db:setup",
                "--skip-tags",
                "slow",
                "--check",
                "--diff",
                "-vvv"
            ]
        );
        assert!(RunOptions::default().args().unwrap().is_empty());
        for bad in ["--become", "a b", "x;rm", "", "t,u"] {
            let o = RunOptions {
                tags: vec![bad.into()],
                ..RunOptions::default()
            };
            assert!(
                matches!(o.args(), Err(OptionsError::Tag { ref tag, flag: "--tags" }) if tag == bad),
                "{bad:?} accepted"
            );
        }
        let loud = RunOptions {
            verbosity: 5,
            ..RunOptions::default()
        };
        assert_eq!(loud.args(), Err(OptionsError::Verbosity(5)));
    }
}
