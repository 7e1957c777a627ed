//! The runner: one `ansible-playbook` run for one assignment, in a private work directory and
//! its own process group, its output numbered line by line into the job's spool.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::jobstream::{fit_line, mark_cut};
use outpost_protocol::message::{Assignment, FinalStatus, Level, LogLine};
use outpost_protocol::MAX_LOG_LINE_BYTES;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::spool::{Outcome, Spool};

/// Lines are written to the spool at least this often, or every `FLUSH_LINES` lines.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
const FLUSH_LINES: usize = 500;

/// Stops a run from outside (a cancel request, the drain timeout) and says why.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    reason: Arc<std::sync::Mutex<Option<String>>>,
}

impl Stop {
    /// Asks the run to stop; the first reason given is the one reported.
    pub fn request(&self, reason: impl Into<String>) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        r.get_or_insert_with(|| reason.into());
        drop(r);
        self.token.cancel();
    }

    async fn requested(&self) {
        self.token.cancelled().await
    }

    fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "cancelled".into())
    }
}

/// How the agent runs ansible-playbook.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub ansible_playbook: PathBuf,
    pub work_root: PathBuf,
    pub host_key_checking: bool,
    /// Between SIGTERM and SIGKILL when a job is cancelled or times out.
    pub kill_grace: Duration,
}

/// Runs one job to its end. Progress (the last line spooled) is published on `progress`.
pub async fn run(
    cfg: &RunnerConfig,
    job: &Assignment,
    spool: Arc<Spool>,
    stop: Stop,
    progress: watch::Sender<u32>,
) -> Outcome {
    let work = cfg.work_root.join(job.job.to_string());
    let result = run_in(cfg, job, &work, spool.clone(), &stop, &progress).await;
    let _ = outpost_protocol::tree::remove_tree(&work);
    let last_line = spool.last_line();
    let (status, exit_code, error) = result;
    Outcome {
        status,
        exit_code,
        error,
        last_line,
    }
}

type Ended = (FinalStatus, Option<i32>, Option<String>);

/// The variables of the agent's environment that ansible-playbook inherits: where programs and
/// home are, locale and time zone, the ssh agent, proxies, the Python environment, and
/// ansible's own configuration paths.
fn inherited(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "SSH_AUTH_SOCK",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "VIRTUAL_ENV",
        "PYENV_ROOT",
        "PYENV_VERSION",
        "ANSIBLE_CONFIG",
        "ANSIBLE_COLLECTIONS_PATH",
        "ANSIBLE_ROLES_PATH",
    ];
    NAMES.contains(&name) || name.starts_with("LC_")
}

fn failed(msg: impl Into<String>) -> Ended {
    (FinalStatus::Failed, None, Some(msg.into()))
}

async fn run_in(
    cfg: &RunnerConfig,
    job: &Assignment,
    work: &Path,
    spool: Arc<Spool>,
    stop: &Stop,
    progress: &watch::Sender<u32>,
) -> Ended {
    // Until revisions are fetched over the session, only those carried inline can run.
    let Some(inline) = &job.revision.inline else {
        return failed(format!(
            "revision {} is not carried in the assignment and this agent cannot fetch revisions",
            job.revision.digest
        ));
    };
    let digest = hex::encode(Sha256::digest(inline));
    if digest != job.revision.digest {
        return failed(format!(
            "the revision of playbook '{}' does not match its SHA-256 (got {digest}, expected {}): refusing to run it",
            job.playbook_name, job.revision.digest
        ));
    }
    let Some(playbook) = outpost_path(&job.playbook_path) else {
        return failed(format!(
            "playbook path {:?} is not a relative path inside the revision",
            job.playbook_path
        ));
    };
    if let Err(e) = prepare(job, work) {
        return failed(format!(
            "cannot prepare the work directory {}: {e}",
            work.display()
        ));
    }
    let options = match job.options.args() {
        Ok(a) => a,
        Err(e) => return failed(format!("refusing the run options: {e}")),
    };
    let mut cmd = tokio::process::Command::new(&cfg.ansible_playbook);
    // ansible gets a fixed allow-list of the agent's environment, never all of it (the agent's
    // own settings and secrets stay with the agent).
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(inherited) {
            cmd.env(k, v);
        }
    }
    cmd.arg("-i")
        .arg(work.join("inventory.yml"))
        // Curated defaults first, then the launch values, which override them and which
        // ansible must never template (see `vars`).
        .arg("-e")
        .arg(format!("@{}", work.join("vars.json").display()))
        .arg("-e")
        .arg(format!("@{}", work.join("launch_vars.yml").display()))
        .args(&options)
        .arg(work.join("tree").join(playbook))
        .current_dir(work)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("PYTHONUNBUFFERED", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env(
            "ANSIBLE_HOST_KEY_CHECKING",
            if cfg.host_key_checking {
                "True"
            } else {
                "False"
            },
        )
        .env("ANSIBLE_LOCAL_TEMP", work.join("tmp"))
        // Ansible's workers call setsid(), leaving the process group: this mark lets the
        // agent find every process of the job (see `kill_job`).
        .env(JOB_MARK, job.job.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return failed(format!(
                "cannot run {}: {e}. Install ansible-core (`python3 -m pip install ansible-core`) or pass --ansible-playbook",
                cfg.ansible_playbook.display()
            ))
        }
    };
    let pgid = child.id().map(|p| p as i32);
    let _ = spool.set_pgid(pgid);

    // Both pipes feed one channel so lines are numbered in arrival order. The channel is
    // bounded: if the spool falls behind, the pipes fill and ansible waits.
    let (tx, rx) = mpsc::channel::<String>(1024);
    let readers = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(pump(o, tx.clone()))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(pump(e, tx.clone()))),
    ];
    drop(tx);
    let (spool_failed_tx, spool_failed) = tokio::sync::oneshot::channel::<String>();
    let collector = tokio::spawn(collect(
        rx,
        spool.clone(),
        progress.clone(),
        spool_failed_tx,
    ));

    let limit = Duration::from_secs(job.time_limit_secs.max(1).into());
    let mut why: Option<&str> = None;
    let mut spool_error = None;
    let status = tokio::select! {
        s = child.wait() => s,
        _ = stop.requested() => { why = Some("cancelled"); terminate(&mut child, job.job, pgid, cfg.kill_grace).await }
        _ = tokio::time::sleep(limit) => { why = Some("timeout"); terminate(&mut child, job.job, pgid, cfg.kill_grace).await }
        Ok(e) = spool_failed => {
            why = Some("spool");
            spool_error = Some(e);
            terminate(&mut child, job.job, pgid, cfg.kill_grace).await
        }
    };
    // A daemonised child can keep the pipes open after ansible exits: wait a while, not forever.
    for r in readers.into_iter().flatten() {
        let abort = r.abort_handle();
        if tokio::time::timeout(PIPE_GRACE, r).await.is_err() {
            tracing::warn!(job = %job.job, "a process the job started still holds its output open; not waiting for it");
            abort.abort();
        }
    }
    let errors = collector.await.unwrap_or_default();
    let _ = spool.set_pgid(None);
    let tail = if errors.is_empty() {
        String::new()
    } else {
        format!("; last errors:\n{}", errors.join("\n"))
    };
    match (why, status) {
        (Some("cancelled"), _) => (FinalStatus::Cancelled, None, Some(stop.reason())),
        (Some("spool"), _) => failed(format!(
            "stopped: {}; the {} lines written before are kept and delivered",
            spool_error.unwrap_or_default(),
            spool.last_line()
        )),
        (Some(_), _) => failed(format!("timed out after {} s", limit.as_secs())),
        (None, Err(e)) => failed(format!("lost track of ansible-playbook: {e}")),
        (None, Ok(s)) => match s.code() {
            Some(0) => (FinalStatus::Success, Some(0), None),
            Some(code) => (
                FinalStatus::Failed,
                Some(code),
                Some(format!("ansible-playbook exited with code {code}{tail}")),
            ),
            None => {
                use std::os::unix::process::ExitStatusExt;
                failed(format!(
                    "ansible-playbook was killed by signal {}{tail}",
                    s.signal().unwrap_or(0)
                ))
            }
        },
    }
}

/// The environment variable that marks every process of a job.
pub const JOB_MARK: &str = "OUTPOST_JOB_ID";

/// SIGTERM to the whole process group (ansible stops its workers itself), then SIGKILL to
/// everything of the job after the grace period.
async fn terminate(
    child: &mut tokio::process::Child,
    job: uuid::Uuid,
    pgid: Option<i32>,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pg) = pgid.filter(|p| *p > 1) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe { libc::kill(-pg, libc::SIGTERM) };
    }
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            kill_job(job, pgid);
            child.wait().await
        }
    };
    kill_job(job, pgid);
    status
}

/// SIGKILL to every process of a job: its process group, and any process that left the group
/// but carries the job's mark in its environment (ansible's workers call setsid()).
pub fn kill_job(job: uuid::Uuid, pgid: Option<i32>) {
    if let Some(pg) = pgid.filter(|p| *p > 1) {
        // SAFETY: as above.
        unsafe { libc::kill(-pg, libc::SIGKILL) };
    }
    let mark = format!("{JOB_MARK}={job}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|var| var == mark.as_bytes()) {
            // SAFETY: kill(2) on a pid just read; a process carrying this job's mark is ours.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// A playbook path inside the revision: relative, without `..`.
fn outpost_path(p: &str) -> Option<&Path> {
    use std::path::Component;
    let path = Path::new(p);
    (!p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))).then_some(path)
}

fn prepare(job: &Assignment, work: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let _ = outpost_protocol::tree::remove_tree(work);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(work)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(work.join("tmp"))?;
    if let Some(inline) = &job.revision.inline {
        outpost_protocol::tree::unpack(
            inline.as_slice(),
            &work.join("tree"),
            &outpost_protocol::tree::Limits::REVISION,
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    }
    let bad = |what: &str, e: serde_json::Error| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let host_vars: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&job.target.host_vars_json).map_err(|e| bad("host vars", e))?;
    let vars: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&job.vars_json).map_err(|e| bad("variables", e))?;
    let launch: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&job.launch_vars_json).map_err(|e| bad("launch variables", e))?;
    std::fs::write(
        work.join("inventory.yml"),
        inventory(job, host_vars).to_string(),
    )?;
    std::fs::write(
        work.join("vars.json"),
        serde_json::Value::Object(vars).to_string(),
    )?;
    std::fs::write(
        work.join("launch_vars.yml"),
        crate::vars::unsafe_yaml(&launch),
    )?;
    Ok(())
}

/// A one-host inventory (JSON is YAML, so the YAML inventory plugin reads it), the host nested
/// in each of its group chains (`all: children: prod: children: web: hosts: h`), so that
/// `hosts: web` and the `group_vars/web.yml` beside the inventory apply as in a checkout. The
/// controller checked the group names when it stored them.
fn inventory(
    job: &Assignment,
    host_vars: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let t = &job.target;
    let mut vars = serde_json::Map::new();
    vars.insert("ansible_host".into(), t.ip_address.clone().into());
    vars.insert("ansible_port".into(), t.ssh_port.into());
    vars.insert("ansible_user".into(), t.ssh_user.clone().into());
    if let Some(k) = &t.ssh_key_path {
        vars.insert("ansible_ssh_private_key_file".into(), k.clone().into());
    }
    vars.extend(host_vars);
    let mut all = GroupNode::default();
    for chain in t.groups.iter().filter(|c| !c.is_empty()) {
        let mut node = &mut all;
        for g in chain {
            node = node.children.entry(g.as_str()).or_default();
        }
        node.lists_host = true;
    }
    if all.children.is_empty() {
        all.lists_host = true;
    }
    let mut vars = Some(vars);
    serde_json::json!({ "all": all.to_json(&t.hostname, &mut vars) })
}

/// A group of the job's inventory: its child groups, and whether it lists the host.
#[derive(Default)]
struct GroupNode<'a> {
    children: std::collections::BTreeMap<&'a str, GroupNode<'a>>,
    lists_host: bool,
}

impl GroupNode<'_> {
    /// The group as the YAML inventory plugin reads it. The host's vars go with its first
    /// listing (they are the host's, whichever group lists it); other listings name it only.
    fn to_json(
        &self,
        host: &str,
        vars: &mut Option<serde_json::Map<String, serde_json::Value>>,
    ) -> serde_json::Value {
        let mut group = serde_json::Map::new();
        if self.lists_host {
            let v = vars.take().map_or(serde_json::Value::Null, Into::into);
            group.insert("hosts".into(), serde_json::json!({ host: v }));
        }
        if !self.children.is_empty() {
            let children: serde_json::Map<String, serde_json::Value> = self
                .children
                .iter()
                .map(|(name, child)| ((*name).to_owned(), child.to_json(host, vars)))
                .collect();
            group.insert("children".into(), children.into());
        }
        group.into()
    }
}

/// Reads lines from a pipe, each cut to the protocol's [`MAX_LOG_LINE_BYTES`], without ever
/// buffering more (a runaway `debug: var=` can print megabytes on one line).
async fn pump(pipe: impl AsyncRead + Unpin, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            break;
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let content = if done { &buf[..take - 1] } else { &buf[..take] };
        let room = MAX_LOG_LINE_BYTES.saturating_sub(line.len());
        if content.len() > room {
            cut = true;
        }
        line.extend_from_slice(&content[..content.len().min(room)]);
        reader.consume(take);
        if done && tx.send(finish_line(&mut line, &mut cut)).await.is_err() {
            return;
        }
    }
    if !line.is_empty() {
        let _ = tx.send(finish_line(&mut line, &mut cut)).await;
    }
}

/// The text of one line of raw output. It is cut after decoding: invalid bytes become U+FFFD,
/// three bytes each, so a line within the cap as bytes read may exceed it as text.
fn finish_line(line: &mut Vec<u8>, cut: &mut bool) -> String {
    if !*cut && line.last() == Some(&b'\r') {
        line.pop();
    }
    let s = String::from_utf8_lossy(line).into_owned();
    let s = if *cut { mark_cut(s) } else { fit_line(s) };
    line.clear();
    *cut = false;
    s
}

/// How long to wait for a job's output pipes to close after ansible exited.
const PIPE_GRACE: Duration = Duration::from_secs(10);

/// Numbers lines into the spool in small batches; returns the last few error lines. A write
/// the spool refuses (a full disk) is reported once on `failed` and ends the collection: the
/// job is stopped rather than run on with its output lost.
async fn collect(
    mut rx: mpsc::Receiver<String>,
    spool: Arc<Spool>,
    progress: watch::Sender<u32>,
    failed: tokio::sync::oneshot::Sender<String>,
) -> Vec<String> {
    let mut failed = Some(failed);
    let mut report = |e: std::io::Error| {
        if let Some(tx) = failed.take() {
            let _ = tx.send(format!("spool disk full at {}: {e}", spool.dir().display()));
        }
    };
    let mut errors: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut batch: Vec<LogLine> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(v) => v.map(Some),
                Err(_) => Some(None), // timer: flush
            },
            None => rx.recv().await.map(Some),
        };
        match next {
            Some(Some(text)) => {
                let level = Level::classify(&text);
                if level == Level::Error {
                    errors.push_back(text.clone());
                    if errors.len() > 5 {
                        errors.pop_front();
                    }
                }
                let at_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                batch.push(LogLine { at_ms, level, text });
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + FLUSH_EVERY);
                if batch.len() >= FLUSH_LINES {
                    if let Err(e) = flush(&spool, &mut batch, &progress) {
                        report(e);
                        return errors.into();
                    }
                    deadline = None;
                }
            }
            Some(None) => {
                if let Err(e) = flush(&spool, &mut batch, &progress) {
                    report(e);
                    return errors.into();
                }
                deadline = None;
            }
            None => {
                if let Err(e) = flush(&spool, &mut batch, &progress) {
                    report(e);
                }
                return errors.into();
            }
        }
    }
}

fn flush(
    spool: &Spool,
    batch: &mut Vec<LogLine>,
    progress: &watch::Sender<u32>,
) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let result = spool.append(batch).map(|last| {
        let _ = progress.send(last);
    });
    if let Err(e) = &result {
        tracing::error!(error = %e, "cannot write to the spool; stopping the job");
    }
    batch.clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_cut_and_crlf_trimmed() {
        let long = "y".repeat(MAX_LOG_LINE_BYTES * 3);
        let input = format!("first\r\n{long}\nlast-without-newline");
        let (tx, mut rx) = mpsc::channel(10);
        pump(input.as_bytes(), tx).await;
        assert_eq!(rx.recv().await.unwrap(), "first");
        let cut = rx.recv().await.unwrap();
        assert!(
            cut.ends_with("…[truncated]")
                && cut.len() <= MAX_LOG_LINE_BYTES
                && cut.len() > MAX_LOG_LINE_BYTES - 32,
            "{}",
            cut.len()
        );
        assert_eq!(rx.recv().await.unwrap(), "last-without-newline");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn lines_fit_the_protocol_cap_as_text_whatever_the_bytes() {
        // Invalid bytes become U+FFFD (three bytes each); multi-byte characters straddle the
        // cut; a line exactly at the cap is left whole.
        let exact = "z".repeat(MAX_LOG_LINE_BYTES);
        let mut input = vec![0xffu8; MAX_LOG_LINE_BYTES - 10];
        input.push(b'\n');
        input.extend_from_slice("é".repeat(MAX_LOG_LINE_BYTES).as_bytes());
        input.push(b'\n');
        input.extend_from_slice(exact.as_bytes());
        input.push(b'\n');
        let (tx, mut rx) = mpsc::channel(10);
        pump(&input[..], tx).await;
        let invalid = rx.recv().await.unwrap();
        assert!(invalid.len() <= MAX_LOG_LINE_BYTES, "{}", invalid.len());
        assert!(invalid.starts_with('\u{fffd}') && invalid.ends_with("…[truncated]"));
        let accents = rx.recv().await.unwrap();
        assert!(accents.len() <= MAX_LOG_LINE_BYTES, "{}", accents.len());
        assert!(accents
            .trim_end_matches(" …[truncated]")
            .chars()
            .all(|c| c == 'é'));
        assert_eq!(rx.recv().await.unwrap(), exact);
    }

    fn assignment(groups: Vec<Vec<String>>) -> Assignment {
        Assignment {
            job: uuid::Uuid::new_v4(),
            dispatch_id: "d".into(),
            playbook_name: "p".into(),
            playbook_path: "playbook.yml".into(),
            revision: outpost_protocol::message::RevisionRef {
                digest: String::new(),
                size: 0,
                commit: None,
                inventory_dir: String::new(),
                inline: None,
            },
            target: outpost_protocol::message::Target {
                hostname: "web1".into(),
                ip_address: "10.1.2.3".into(),
                ssh_port: 2222,
                ssh_user: "deploy".into(),
                ssh_key_path: Some("/home/deploy/.ssh/id".into()),
                host_vars_json: "{}".into(),
                groups,
            },
            vars_json: "{}".into(),
            launch_vars_json: "{}".into(),
            time_limit_secs: 1,
            options: Default::default(),
        }
    }

    #[test]
    fn inventory_carries_the_target_and_host_vars() {
        let job = assignment(Vec::new());
        let mut hv = serde_json::Map::new();
        hv.insert("ansible_connection".into(), "local".into());
        let inv = inventory(&job, hv);
        let host = &inv["all"]["hosts"]["web1"];
        assert_eq!(host["ansible_host"], "10.1.2.3");
        assert_eq!(host["ansible_port"], 2222);
        assert_eq!(host["ansible_user"], "deploy");
        assert_eq!(host["ansible_ssh_private_key_file"], "/home/deploy/.ssh/id");
        assert_eq!(host["ansible_connection"], "local");
    }

    fn chains(c: &[&[&str]]) -> Vec<Vec<String>> {
        c.iter()
            .map(|c| c.iter().map(|g| (*g).to_owned()).collect())
            .collect()
    }

    /// Runs an ansible program in `dir`, returning its stdout; fails the test with its output
    /// when it fails.
    fn ansible(program: &str, dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new(program)
            .args(args)
            .current_dir(dir)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True")
            .env("ANSIBLE_LOCAL_TEMP", dir.join("tmp"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{program} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    #[test]
    fn the_host_sits_in_its_groups_and_their_group_vars_apply() {
        let job = assignment(chains(&[&["prod", "web"], &["prod", "db"], &["dc_fra1"]]));
        let python = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap();
        let mut hv = serde_json::Map::new();
        hv.insert("ansible_connection".into(), "local".into());
        hv.insert(
            "ansible_python_interpreter".into(),
            String::from_utf8_lossy(&python.stdout).trim().into(),
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("group_vars")).unwrap();
        std::fs::write(d.join("group_vars/web.yml"), "web_port: 8080\n").unwrap();
        std::fs::write(
            d.join("group_vars/prod.yml"),
            "tier: production\nweb_port: 1\n",
        )
        .unwrap();
        std::fs::write(d.join("inventory.yml"), inventory(&job, hv).to_string()).unwrap();

        // ansible reads the host into every group of its chains, and only those.
        let listed: serde_json::Value = serde_json::from_str(&ansible(
            "ansible-inventory",
            d,
            &["-i", "inventory.yml", "--list"],
        ))
        .unwrap();
        for g in ["web", "db", "dc_fra1"] {
            assert_eq!(
                listed[g]["hosts"],
                serde_json::json!(["web1"]),
                "{g}: {listed}"
            );
        }
        assert_eq!(
            listed["prod"]["children"],
            serde_json::json!(["db", "web"]),
            "{listed}"
        );
        assert_eq!(
            listed["all"]["children"],
            serde_json::json!(["ungrouped", "dc_fra1", "prod"]),
            "{listed}"
        );
        assert!(listed.get("ungrouped").is_none(), "{listed}");
        let vars = &listed["_meta"]["hostvars"]["web1"];
        assert_eq!(
            vars["ansible_host"], "10.1.2.3",
            "the host's vars, once: {listed}"
        );

        // A play for `hosts: web` runs on it, with group_vars/web.yml over group_vars/prod.yml.
        std::fs::write(
            d.join("site.yml"),
            "- hosts: web\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"port={{ web_port }} tier={{ tier }} groups={{ group_names | join(',') }}\"\n",
        )
        .unwrap();
        let run = ansible("ansible-playbook", d, &["-i", "inventory.yml", "site.yml"]);
        assert!(
            run.contains("\"msg\": \"port=8080 tier=production groups=db,dc_fra1,prod,web\""),
            "{run}"
        );
        assert!(run.contains("ok=1"), "{run}");
    }
}
