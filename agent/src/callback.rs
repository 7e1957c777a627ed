//! The callback plugin the agent ships (embedded in the binary) and the reading of what it
//! reports: one JSON line per task and host, and the recap, over a pipe. The plugin is
//! written into the job's work directory and loaded from there through
//! `ANSIBLE_CALLBACK_PLUGINS`; it is not a stdout callback, so ansible's output, and the log,
//! are what a hand run prints. What comes over the pipe is from the managed host's world
//! (task names, module messages): it is read with a cap per line, parsed as data and cut to
//! the protocol's caps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_protocol::results::{PlayRecap, TaskResult, TaskStatus};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use crate::spool::Spool;

/// The plugin's source.
pub const PLUGIN: &str = include_str!("callback/outpost_results.py");
/// The environment variable that tells the plugin which file descriptor to write to.
pub const FD_VAR: &str = "OUTPOST_RESULTS_FD";
/// The longest event line read; a longer one is dropped (the plugin's are far shorter).
const MAX_EVENT_BYTES: usize = 16 * 1024;
/// Results are spooled in groups of at most this many.
const SPOOL_BATCH: usize = 64;

/// Writes the plugin into `work/callback_plugins/` and returns the value for
/// `ANSIBLE_CALLBACK_PLUGINS`: that directory, then ansible's default plugin directories (the
/// variable replaces the default, and a user's plugins there must still load).
pub fn install(work: &Path) -> std::io::Result<std::ffi::OsString> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = work.join("callback_plugins");
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    std::fs::write(dir.join("outpost_results.py"), PLUGIN)?;
    let mut paths: Vec<PathBuf> = vec![dir];
    if let Some(home) = std::env::var_os("HOME") {
        paths.push(PathBuf::from(home).join(".ansible/plugins/callback"));
    }
    paths.push(PathBuf::from("/usr/share/ansible/plugins/callback"));
    std::env::join_paths(paths).map_err(std::io::Error::other)
}

/// One line of the plugin.
#[derive(Debug, Deserialize)]
#[serde(tag = "e", rename_all = "lowercase")]
enum Event {
    Task {
        host: String,
        play: String,
        task: String,
        action: String,
        status: String,
        start: i64,
        ms: u64,
        msg: Option<String>,
    },
    Recap {
        ok: u32,
        changed: u32,
        unreachable: u32,
        failed: u32,
        skipped: u32,
        rescued: u32,
        ignored: u32,
    },
}

/// What one line says.
#[derive(Debug, PartialEq)]
pub enum Reported {
    Task(TaskResult),
    Recap(PlayRecap),
}

/// Reads one line of the plugin; `None` for anything else (it is dropped).
pub fn parse(line: &[u8]) -> Option<Reported> {
    if line.len() > MAX_EVENT_BYTES {
        return None;
    }
    match serde_json::from_slice::<Event>(line).ok()? {
        Event::Task {
            host,
            play,
            task,
            action,
            status,
            start,
            ms,
            msg,
        } => Some(Reported::Task(
            TaskResult {
                host,
                play,
                task,
                action,
                status: TaskStatus::parse(&status)?,
                started_ms: start,
                duration_ms: u32::try_from(ms).unwrap_or(u32::MAX),
                message: msg.filter(|m| !m.is_empty()),
            }
            .fitted(),
        )),
        Event::Recap {
            ok,
            changed,
            unreachable,
            failed,
            skipped,
            rescued,
            ignored,
        } => Some(Reported::Recap(PlayRecap {
            ok,
            changed,
            unreachable,
            failed,
            skipped,
            rescued,
            ignored,
        })),
    }
}

/// What the reader took from the pipe.
#[derive(Debug, Default)]
pub struct Gathered {
    pub recap: Option<PlayRecap>,
    /// Lines that were not events, too long, or refused by the spool.
    pub dropped: u64,
}

/// Reads the plugin's pipe to its end, spooling each result and waking the job's delivery
/// (through `progress`) whenever some were spooled.
pub async fn gather(
    pipe: impl AsyncRead + Unpin,
    spool: Arc<Spool>,
    progress: watch::Sender<u32>,
) -> Gathered {
    let mut reader = BufReader::with_capacity(16 * 1024, pipe);
    let mut out = Gathered::default();
    let mut pending: Vec<TaskResult> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut too_long = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(b) if !b.is_empty() => b,
            _ => break,
        };
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let content = if done { &buf[..take - 1] } else { &buf[..take] };
        if line.len() + content.len() > MAX_EVENT_BYTES {
            too_long = true;
        } else {
            line.extend_from_slice(content);
        }
        reader.consume(take);
        if !done {
            continue;
        }
        match (too_long, parse(&line)) {
            (false, Some(Reported::Task(r))) => pending.push(r),
            (false, Some(Reported::Recap(r))) => out.recap = Some(r),
            _ => out.dropped += 1,
        }
        line.clear();
        too_long = false;
        // Spool what arrived as soon as the pipe has nothing more right now.
        if pending.len() >= SPOOL_BATCH || reader.buffer().is_empty() {
            spool_results(&spool, &mut pending, &mut out, &progress);
        }
    }
    spool_results(&spool, &mut pending, &mut out, &progress);
    out
}

fn spool_results(
    spool: &Spool,
    pending: &mut Vec<TaskResult>,
    out: &mut Gathered,
    progress: &watch::Sender<u32>,
) {
    if pending.is_empty() {
        return;
    }
    match spool.results().append(pending) {
        Ok(_) => progress.send_modify(|_| {}),
        Err(e) => {
            tracing::warn!(dir = %spool.dir().display(), error = %e, "cannot spool task results; they are dropped");
            out.dropped += pending.len() as u64;
        }
    }
    pending.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_lines_and_the_recap_parse_and_anything_else_is_dropped() {
        let t = br#"{"e":"task","host":"web1","play":"site","task":"install","action":"apt","status":"failed","start":5,"ms":12,"msg":"no such package"}"#;
        let Some(Reported::Task(r)) = parse(t) else {
            panic!("not a task")
        };
        assert_eq!(r.status, TaskStatus::Failed);
        assert_eq!(r.message.as_deref(), Some("no such package"));
        assert_eq!((r.started_ms, r.duration_ms), (5, 12));
        let recap = br#"{"e":"recap","ok":3,"changed":1,"unreachable":0,"failed":1,"skipped":2,"rescued":0,"ignored":0}"#;
        assert!(matches!(
            parse(recap),
            Some(Reported::Recap(PlayRecap {
                ok: 3,
                failed: 1,
                ..
            }))
        ));
        for bad in [
            &b"not json"[..],
            br#"{"e":"task","host":"h"}"#,
            br#"{"e":"task","host":"h","play":"p","task":"t","action":"a","status":"exploded","start":1,"ms":1}"#,
            br#"{"e":"other"}"#,
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn long_text_from_the_host_is_cut_to_the_protocol_caps() {
        let name = "x".repeat(5000);
        let line = format!(
            r#"{{"e":"task","host":"h","play":"p","task":"{name}","action":"a","status":"ok","start":1,"ms":1,"msg":"{name}"}}"#
        );
        let Some(Reported::Task(r)) = parse(line.as_bytes()) else {
            panic!("not a task")
        };
        assert!(r.fits());
        let huge = format!(r#"{{"e":"task","task":"{}"}}"#, "y".repeat(MAX_EVENT_BYTES));
        assert_eq!(parse(huge.as_bytes()), None);
    }

    #[tokio::test]
    async fn results_from_the_pipe_are_spooled_in_order() {
        let root = tempfile::tempdir().unwrap();
        let meta = crate::spool::Meta {
            job: uuid::Uuid::new_v4(),
            dispatch_id: "d".into(),
            playbook_name: "p".into(),
            pgid: None,
            outcome: None,
        };
        let spool = Arc::new(Spool::create(root.path(), meta).unwrap());
        let mut input = Vec::new();
        for i in 0..100 {
            input.extend_from_slice(format!(r#"{{"e":"task","host":"h","play":"p","task":"t{i}","action":"a","status":"ok","start":1,"ms":1}}"#).as_bytes());
            input.push(b'\n');
        }
        input.extend_from_slice(b"garbage\n");
        input.extend_from_slice(br#"{"e":"recap","ok":100,"changed":0,"unreachable":0,"failed":0,"skipped":0,"rescued":0,"ignored":0}"#);
        input.push(b'\n');
        let (tx, _rx) = watch::channel(0);
        let got = gather(&input[..], spool.clone(), tx).await;
        assert_eq!(got.dropped, 1);
        assert_eq!(got.recap.unwrap().ok, 100);
        assert_eq!(spool.results().last(), 100);
        assert_eq!(spool.results().read(100, 1).unwrap()[0].task, "t99");
    }
}
