//! The service's own account of its session, kept in `<state>/status` so that
//! `outpost-agent status` (and the install bundle's playbook, which waits on it) can tell
//! whether the controller has this agent online without asking the controller for credentials.
//!
//! "Online" is written only after the controller's Welcome, which the controller sends after it
//! has recorded the agent as connected: it is the controller's word, not the agent's hope.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The status file is a few lines; anything larger is not ours.
const MAX_STATUS_FILE: u64 = 16 * 1024;

/// Where the session stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Connection {
    /// The controller at this address welcomed the agent.
    Online { controller: String },
    /// Not connected; the last attempt failed for this reason, and another will follow.
    Connecting { reason: String },
    /// The service has ended (stopped, or refused for good).
    Stopped { reason: String },
}

/// One snapshot, as written by the running service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    /// Unix seconds when this state began.
    pub since: u64,
    #[serde(flatten)]
    pub connection: Connection,
}

/// What `outpost-agent status` concludes from the file and the process table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Online(Status),
    /// Running, not (yet) welcomed by a controller.
    Connecting(Status),
    /// The file names a service that has ended, or that is gone without saying so.
    NotRunning(String),
}

impl Verdict {
    pub fn is_online(&self) -> bool {
        matches!(self, Verdict::Online(_))
    }

    /// One line for a person, with how long the state has lasted as of `now`.
    pub fn describe(&self, now: u64) -> String {
        let age = |s: &Status| humanize(Duration::from_secs(now.saturating_sub(s.since)));
        match self {
            Verdict::NotRunning(why) => format!("not running: {why}"),
            Verdict::Online(s) | Verdict::Connecting(s) => match &s.connection {
                Connection::Online { controller } => format!(
                    "online: the controller at {controller} has had this agent for {} (pid {})",
                    age(s),
                    s.pid
                ),
                Connection::Connecting { reason } => {
                    format!("connecting for {} (pid {}): {reason}", age(s), s.pid)
                }
                Connection::Stopped { reason } => format!("not running: stopped: {reason}"),
            },
        }
    }
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// Decides from a status snapshot and whether its process is alive.
pub fn judge(status: Option<Status>, alive: impl Fn(u32) -> bool) -> Verdict {
    let Some(s) = status else {
        return Verdict::NotRunning("the service has not started here yet".into());
    };
    match &s.connection {
        Connection::Stopped { reason } => Verdict::NotRunning(format!("stopped: {reason}")),
        _ if !alive(s.pid) => Verdict::NotRunning(format!(
            "the service (pid {}) ended without a word: see its log",
            s.pid
        )),
        Connection::Online { .. } => Verdict::Online(s),
        Connection::Connecting { .. } => Verdict::Connecting(s),
    }
}

/// Whether a process with this pid exists (signal 0 checks without sending anything).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks permissions and existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The writer, owned by the session task.
pub struct StatusFile {
    path: PathBuf,
    last: Option<Connection>,
}

impl StatusFile {
    pub fn new(path: impl Into<PathBuf>) -> StatusFile {
        StatusFile {
            path: path.into(),
            last: None,
        }
    }

    /// Records a new state; an unchanged one keeps its `since`. A failed write is logged, not
    /// fatal: the status is for people, the jobs matter more.
    pub fn set(&mut self, connection: Connection) {
        if self.last.as_ref() == Some(&connection) {
            return;
        }
        let status = Status {
            pid: std::process::id(),
            since: now_unix(),
            connection: connection.clone(),
        };
        match write_atomically(&self.path, &status) {
            Ok(()) => self.last = Some(connection),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the status file")
            }
        }
    }
}

/// The status is public (0644): `outpost-agent status` may be run by another account. Written
/// with [`outpost_protocol::files`], so a link planted at the path is replaced, not followed.
fn write_atomically(path: &Path, status: &Status) -> std::io::Result<()> {
    let text = toml::to_string(status).map_err(std::io::Error::other)?;
    outpost_protocol::files::write_replacing(path, text.as_bytes(), 0o644)
}

/// A status file that cannot be believed. None quotes the file's contents: a link planted at
/// the path must not turn `status`, run by root, into a reader of the link's target.
#[derive(Debug, Error)]
pub enum StatusError {
    #[error("{} is a symbolic link, not a status file", .0.display())]
    Link(PathBuf),
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{} is too large to be a status file", .0.display())]
    TooLarge(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is damaged: {source}", path.display())]
    Damaged {
        path: PathBuf,
        source: toml::de::Error,
    },
}

/// Reads the status file; a missing one is `None`, a damaged one an error.
///
/// A link is refused, not followed: root runs `status` (the install bundle waits on it) in a
/// directory the agent's user writes, and a damaged file's error quotes its text.
pub fn read(path: &Path) -> Result<Option<Status>, StatusError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |source| StatusError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(StatusError::Link(path.to_owned()))
        }
        Err(e) => return Err(cannot(e)),
    };
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(StatusError::NotAFile(path.to_owned()));
    }
    if meta.len() > MAX_STATUS_FILE {
        return Err(StatusError::TooLarge(path.to_owned()));
    }
    let mut text = String::new();
    file.take(MAX_STATUS_FILE)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    toml::from_str(&text)
        .map(Some)
        .map_err(|source| StatusError::Damaged {
            path: path.to_owned(),
            source,
        })
}

/// Reads and judges, now and until `wait` has passed or the agent is online.
pub async fn watch(path: &Path, wait: Duration) -> Result<Verdict, StatusError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let verdict = judge(read(path)?, process_alive);
        if verdict.is_online() || tokio::time::Instant::now() >= deadline {
            return Ok(verdict);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(connection: Connection) -> Status {
        Status {
            pid: 42,
            since: 1000,
            connection,
        }
    }

    #[test]
    fn online_needs_a_live_process() {
        let s = status(Connection::Online {
            controller: "10.0.0.1:7443".into(),
        });
        assert!(judge(Some(s.clone()), |_| true).is_online());
        let dead = judge(Some(s), |_| false);
        assert!(matches!(&dead, Verdict::NotRunning(w) if w.contains("pid 42")));
    }

    #[test]
    fn stopped_and_missing_are_not_running() {
        let s = status(Connection::Stopped {
            reason: "revoked".into(),
        });
        assert_eq!(
            judge(Some(s), |_| true),
            Verdict::NotRunning("stopped: revoked".into())
        );
        assert!(matches!(judge(None, |_| true), Verdict::NotRunning(_)));
    }

    #[test]
    fn describes_with_the_age() {
        let v = judge(
            Some(status(Connection::Connecting {
                reason: "no answer within 5s".into(),
            })),
            |_| true,
        );
        assert_eq!(
            v.describe(1300),
            "connecting for 5 min (pid 42): no answer within 5s"
        );
    }

    #[test]
    fn round_trips_and_keeps_since_for_an_unchanged_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status");
        let mut f = StatusFile::new(&path);
        f.set(Connection::Online {
            controller: "c:7443".into(),
        });
        let first = read(&path).unwrap().unwrap();
        assert_eq!(first.pid, std::process::id());
        std::fs::write(
            &path,
            "pid = 1\nsince = 1\nstate = \"online\"\ncontroller = \"x\"\n",
        )
        .unwrap();
        // The same state again writes nothing: the file keeps what is there.
        f.set(Connection::Online {
            controller: "c:7443".into(),
        });
        assert_eq!(read(&path).unwrap().unwrap().pid, 1);
        f.set(Connection::Connecting {
            reason: "lost".into(),
        });
        assert!(matches!(
            read(&path).unwrap().unwrap().connection,
            Connection::Connecting { .. }
        ));
        std::fs::write(&path, "garbage").unwrap();
        let damaged = read(&path).unwrap_err();
        assert!(matches!(damaged, StatusError::Damaged { .. }), "{damaged}");
        assert!(damaged.to_string().contains("damaged"), "{damaged}");
    }

    #[test]
    fn a_link_planted_as_the_status_file_is_neither_written_through_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("shadow");
        std::fs::write(&other, "root:secret-hash:19000:0:99999:7:::\n").unwrap();
        let path = dir.path().join("status");
        std::os::unix::fs::symlink(&other, &path).unwrap();

        // Read by root, it must not quote the target in its error.
        let refused = read(&path).unwrap_err();
        assert!(matches!(refused, StatusError::Link(_)), "{refused}");
        let refused = refused.to_string();
        assert!(refused.contains("symbolic link"), "{refused}");
        assert!(!refused.contains("secret-hash"), "{refused}");

        StatusFile::new(&path).set(Connection::Connecting {
            reason: "starting".into(),
        });
        assert_eq!(
            std::fs::read_to_string(&other).unwrap(),
            "root:secret-hash:19000:0:99999:7:::\n",
            "the link's target is untouched"
        );
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "the path is now a regular file");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert!(matches!(
            read(&path).unwrap().unwrap().connection,
            Connection::Connecting { .. }
        ));
    }
}
