//! The runner: one `ansible-playbook` run for one assignment, from inside the revision's tree
//! (so `roles/`, templates, `ansible.cfg` and relative paths behave as in a checkout), with
//! the inventory and variables in a private work directory, in its own process group, its
//! output numbered line by line into the job's spool.
//!
//! ```text
//! <work>/inventory.yml     the target, in its nested groups
//! <work>/vars.json         curated variables
//! <work>/launch_vars.yml   launch values, `!unsafe`
//! <work>/group_vars -> <tree>/<inventory_dir>/group_vars   (when the tree has one)
//! <work>/host_vars  -> <tree>/<inventory_dir>/host_vars
//! <work>/tmp/              ansible's local temp
//! ```
//!
//! The job's credentials are not in the work directory (which is on disk) but under the
//! secrets root (see [`crate::secrets`]), for the length of the ansible-playbook process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::jobstream::{fit_line, mark_cut};
use outpost_protocol::message::{Assignment, FinalStatus, Level, LogLine};
use outpost_protocol::results::PlayRecap;
use outpost_protocol::MAX_LOG_LINE_BYTES;
use std::os::fd::AsRawFd;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::fetch::Revisions;
use crate::secrets::SecretsRoot;
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
    /// Where the jobs' credentials are written while they run.
    pub secrets: SecretsRoot,
}

/// Runs one job to its end: gets its revision's tree (from the cache, or fetched), then runs
/// ansible-playbook in it. Progress (the last line spooled) is published on `progress`. The
/// time limit covers both.
pub async fn run(
    cfg: &RunnerConfig,
    revisions: &Revisions,
    job: &Assignment,
    spool: Arc<Spool>,
    stop: Stop,
    progress: watch::Sender<u32>,
) -> Outcome {
    let work = cfg.work_root.join(job.job.to_string());
    let limit = Duration::from_secs(job.time_limit_secs.max(1).into());
    let deadline = tokio::time::Instant::now() + limit;
    let rev = &job.revision;
    let tree = tokio::select! {
        t = revisions.tree(rev) => t.map_err(|e| failed(format!("cannot get revision {} of '{}': {e}", rev.digest, job.playbook_name))),
        _ = stop.requested() => Err((FinalStatus::Cancelled, None, Some(stop.reason()))),
        _ = tokio::time::sleep_until(deadline) => Err(failed(format!(
            "timed out after {} s while fetching revision {}", limit.as_secs(), rev.digest
        ))),
    };
    let mut recap = None;
    let result = match tree {
        // The lease keeps the tree in the cache until the run is over.
        Ok(lease) => {
            let timing = Timing { limit, deadline };
            run_in(
                cfg,
                job,
                &work,
                lease.path(),
                timing,
                spool.clone(),
                &stop,
                &progress,
                &mut recap,
            )
            .await
        }
        Err(ended) => ended,
    };
    let _ = std::fs::remove_dir_all(&work);
    let last_line = spool.last_line();
    let (status, exit_code, error) = result;
    Outcome {
        status,
        exit_code,
        error,
        last_line,
        last_result: spool.results().last(),
        recap,
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

/// The job's time limit, and when it runs out (counted from before the revision was fetched).
#[derive(Clone, Copy)]
struct Timing {
    limit: Duration,
    deadline: tokio::time::Instant,
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    cfg: &RunnerConfig,
    job: &Assignment,
    work: &Path,
    tree: &Path,
    timing: Timing,
    spool: Arc<Spool>,
    stop: &Stop,
    progress: &watch::Sender<u32>,
    recap: &mut Option<PlayRecap>,
) -> Ended {
    let playbook = match inside_tree(tree, &job.playbook_path, Kind::File) {
        Ok(Some(_)) => PathBuf::from(&job.playbook_path),
        Ok(None) => {
            return failed(format!(
                "playbook '{}' is not in revision {}",
                job.playbook_path, job.revision.digest
            ))
        }
        Err(e) => {
            return failed(format!(
                "refusing playbook path '{}': {e}",
                job.playbook_path
            ))
        }
    };
    if let Err(e) = prepare(job, work, tree) {
        return failed(format!(
            "cannot prepare the work directory {}: {e}",
            work.display()
        ));
    }
    let options = match job.options.args() {
        Ok(a) => a,
        Err(e) => return failed(format!("refusing the run options: {e}")),
    };
    // The guard removes the files on every way out of this function; once the process has
    // ended they are removed explicitly, before the wait for stray output.
    let secrets = tokio::select! {
        s = cfg.secrets.materialise(job.job, &job.secrets) => match s {
            Ok(files) => files,
            Err(e) => return failed(format!("cannot put the job's credentials in place: {e}")),
        },
        _ = stop.requested() => return (FinalStatus::Cancelled, None, Some(stop.reason())),
        _ = tokio::time::sleep_until(timing.deadline) => {
            return failed(format!("timed out after {} s", timing.limit.as_secs()))
        }
    };
    let control = match crate::secrets::ControlDir::create(job.job) {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot make the job's ssh control directory: {e}")),
    };
    // ansible writes the vault-decrypted copies of the files it sends to its local temp: with
    // vault secrets, that goes on the tmpfs with them and is removed with them.
    let local_temp = match secrets.dir() {
        Some(dir) if !job.secrets.vault.is_empty() => {
            use std::os::unix::fs::DirBuilderExt;
            let t = dir.join("tmp");
            if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&t) {
                return failed(format!("cannot make the job's temporary directory: {e}"));
            }
            t
        }
        _ => work.join("tmp"),
    };
    // The shipped callback reports each task's result over a pipe of its own; ansible's
    // stdout callback, and so the log, stay as they are.
    let plugins = match crate::callback::install(work) {
        Ok(p) => p,
        Err(e) => return failed(format!("cannot install the results callback: {e}")),
    };
    let (results_tx, results_rx) = match tokio::net::unix::pipe::pipe() {
        Ok(p) => p,
        Err(e) => return failed(format!("cannot make the results pipe: {e}")),
    };
    let results_fd = match results_tx.into_blocking_fd() {
        Ok(fd) => fd,
        Err(e) => return failed(format!("cannot make the results pipe: {e}")),
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
        // Paths to the credentials, never the credentials.
        .args(secrets.args())
        .args(&options)
        // Relative to the tree's root, as it would be typed in a checkout.
        .arg(&playbook)
        .current_dir(tree)
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
        .env("ANSIBLE_LOCAL_TEMP", &local_temp)
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", control.path())
        // Ansible's workers call setsid(), leaving the process group: this mark lets the
        // agent find every process of the job (see `kill_job`).
        .env(JOB_MARK, job.job.to_string())
        .env("ANSIBLE_CALLBACK_PLUGINS", &plugins)
        .env(crate::callback::FD_VAR, results_fd.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let raw = results_fd.as_raw_fd();
    // SAFETY: between fork and exec only fcntl(2) runs, which is async-signal-safe: it lets
    // the pipe's write end (made close-on-exec, like every descriptor of the agent) pass
    // into ansible-playbook, and into nothing else.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // The child has its copy: the reader sees the end when ansible's is closed.
    drop(results_fd);
    let mut child = match spawned {
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
    let gatherer = tokio::spawn(crate::callback::gather(
        results_rx,
        spool.clone(),
        progress.clone(),
    ));
    let (spool_failed_tx, spool_failed) = tokio::sync::oneshot::channel::<String>();
    let collector = tokio::spawn(collect(
        rx,
        spool.clone(),
        progress.clone(),
        spool_failed_tx,
    ));

    let limit = timing.limit;
    let mut why: Option<&str> = None;
    let mut spool_error = None;
    let status = tokio::select! {
        s = child.wait() => s,
        _ = stop.requested() => { why = Some("cancelled"); terminate(&mut child, job.job, pgid, cfg.kill_grace).await }
        _ = tokio::time::sleep_until(timing.deadline) => { why = Some("timeout"); terminate(&mut child, job.job, pgid, cfg.kill_grace).await }
        Ok(e) = spool_failed => {
            why = Some("spool");
            spool_error = Some(e);
            terminate(&mut child, job.job, pgid, cfg.kill_grace).await
        }
    };
    if let Err(e) = secrets.remove() {
        tracing::error!(job = %job.job, error = %e, "cannot remove the job's credentials");
    }
    drop(control);
    // A daemonised child can keep the pipes open after ansible exits: wait a while, not forever.
    for r in readers.into_iter().flatten() {
        let abort = r.abort_handle();
        if tokio::time::timeout(PIPE_GRACE, r).await.is_err() {
            tracing::warn!(job = %job.job, "a process the job started still holds its output open; not waiting for it");
            abort.abort();
        }
    }
    let abort = gatherer.abort_handle();
    match tokio::time::timeout(PIPE_GRACE, gatherer).await {
        Ok(Ok(g)) => {
            *recap = g.recap;
            if g.dropped > 0 {
                tracing::warn!(job = %job.job, dropped = g.dropped, "some task results could not be read or kept");
            }
        }
        _ => abort.abort(),
    }
    let scan = collector.await.unwrap_or_default();
    let errors = scan.errors;
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
            // ansible exits 0 when no play matched the host: that did nothing, it is no success.
            Some(0) if scan.recap.no_hosts_matched() => (
                FinalStatus::Failed,
                Some(0),
                Some(no_hosts_message(&job.target)),
            ),
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

/// Whether process group `pg` is still the job's: some process in it carries the job's mark.
/// A group id read back from a spool may be stale (the machine rebooted, or the group ended
/// and its number was given to another), and must not be killed then.
pub fn group_is_jobs(pg: i32, job: uuid::Uuid) -> bool {
    let mark = format!("{JOB_MARK}={job}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|entry| {
        let dir = entry.path();
        // `pid (comm) state ppid pgrp …`; the command may hold spaces and parentheses.
        let in_group = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .is_some_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok())
                    == Some(pg)
            });
        in_group
            && std::fs::read(dir.join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == mark.as_bytes()))
    })
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

/// Removes the work directories left under `root` by jobs a killed agent was running (a run
/// removes its own when it ends): called at start-up, before any job runs. Returns how many.
pub fn sweep_work(root: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .is_none()
        {
            continue;
        }
        // remove_dir_all does not follow links, so the tree links inside are only unlinked.
        std::fs::remove_dir_all(entry.path())?;
        n += 1;
    }
    Ok(n)
}

fn prepare(job: &Assignment, work: &Path, tree: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::remove_dir_all(work);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(work)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(work.join("tmp"))?;
    let bad = |what: &str, e: serde_json::Error| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let host_vars: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&job.target.host_vars_json).map_err(|e| bad("host vars", e))?;
    let vars: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&job.vars_json).map_err(|e| bad("variables", e))?;
    let launch: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&job.launch_vars_json).map_err(|e| bad("launch variables", e))?;
    let inventory = inventory(&job.target, host_vars, job.secrets.ssh_key.is_some())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    std::fs::write(work.join("inventory.yml"), inventory.to_string())?;
    std::fs::write(
        work.join("vars.json"),
        serde_json::Value::Object(vars).to_string(),
    )?;
    std::fs::write(
        work.join("launch_vars.yml"),
        crate::vars::unsafe_yaml(&launch),
    )?;
    // ansible reads group_vars/ and host_vars/ beside the inventory file: these links put the
    // project's own there, as they sit beside its inventory in a checkout.
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let inventory_dir = match inside_tree(tree, &job.revision.inventory_dir, Kind::Dir) {
        Ok(d) => d,
        Err(e) => {
            return Err(invalid(format!(
                "inventory directory '{}': {e}",
                job.revision.inventory_dir
            )))
        }
    };
    if inventory_dir.is_some() {
        for name in ["group_vars", "host_vars"] {
            let rel = Path::new(&job.revision.inventory_dir).join(name);
            let rel = rel.to_str().unwrap_or_default();
            if let Ok(Some(target)) = inside_tree(tree, rel, Kind::Dir) {
                std::os::unix::fs::symlink(target, work.join(name))?;
            }
        }
    }
    Ok(())
}

/// What a path inside the tree must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

/// Resolves `rel` (relative, `""` = the root) inside `tree`: `Ok(None)` when it is not there
/// or not of that kind; an error when the text is no path inside a tree (absolute, `..`) or
/// when it resolves outside the tree (through a link). The tree is the revision's, whose links
/// were checked at unpacking; this holds the controller's paths to the same rule.
fn inside_tree(tree: &Path, rel: &str, kind: Kind) -> Result<Option<PathBuf>, String> {
    use std::path::Component;
    let path = Path::new(rel);
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err("not a relative path inside the project (no leading /, no ..)".into());
    }
    let root = tree
        .canonicalize()
        .map_err(|e| format!("the revision's tree {}: {e}", tree.display()))?;
    let Ok(full) = root.join(path).canonicalize() else {
        return Ok(None);
    };
    if !full.starts_with(&root) {
        return Err("it leads out of the project through a link".into());
    }
    let fits = match kind {
        Kind::File => full.is_file(),
        Kind::Dir => full.is_dir(),
    };
    Ok(fits.then_some(full))
}

/// The most group chains, and groups in one chain, a target may carry.
const MAX_GROUP_CHAINS: usize = 64;
const MAX_GROUP_DEPTH: usize = 16;

/// Whether `name` is a group name ansible takes as is.
fn valid_group(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 100
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The job's inventory: the one target, with its connection settings and host vars, inside
/// its groups nested as the chains say (JSON is YAML, so the YAML inventory plugin reads it).
/// With a key credential (`--private-key`) the target's key path is left out: an inventory
/// variable would override the command line, and the credential is what the job was given.
fn inventory(
    t: &outpost_protocol::message::Target,
    host_vars: serde_json::Map<String, serde_json::Value>,
    key_credential: bool,
) -> Result<serde_json::Value, String> {
    use serde_json::{json, Map, Value};
    let mut vars = Map::new();
    vars.insert("ansible_host".into(), t.ip_address.clone().into());
    vars.insert("ansible_port".into(), t.ssh_port.into());
    vars.insert("ansible_user".into(), t.ssh_user.clone().into());
    if let Some(k) = t.ssh_key_path.as_ref().filter(|_| !key_credential) {
        vars.insert("ansible_ssh_private_key_file".into(), k.clone().into());
    }
    vars.extend(host_vars);
    if t.groups.len() > MAX_GROUP_CHAINS {
        return Err(format!(
            "the target is in {} group chains; at most {MAX_GROUP_CHAINS}",
            t.groups.len()
        ));
    }
    let mut children = Map::new();
    for chain in &t.groups {
        // `all` and `ungrouped` are ansible's own: every host is in them already.
        let chain: Vec<&String> = chain
            .iter()
            .filter(|g| !matches!(g.as_str(), "all" | "ungrouped"))
            .collect();
        if chain.len() > MAX_GROUP_DEPTH {
            return Err(format!(
                "a group chain of the target is {} deep; at most {MAX_GROUP_DEPTH}",
                chain.len()
            ));
        }
        if let Some(bad) = chain.iter().find(|g| !valid_group(g)) {
            return Err(format!("'{bad}' is not a group name"));
        }
        let mut level = &mut children;
        for (i, group) in chain.iter().enumerate() {
            let node = level
                .entry(group.as_str())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or("a group that is not a mapping")?;
            if i + 1 == chain.len() {
                let hosts = node
                    .entry("hosts")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .ok_or("a group's hosts that are not a mapping")?;
                hosts.insert(t.hostname.clone(), json!({}));
            }
            level = node
                .entry("children")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or("a group's children that are not a mapping")?;
        }
    }
    // Empty `children` maps left by the walk are dropped: ansible reads `children: {}` fine,
    // but a reader of the file should see the groups only.
    fn prune(v: &mut Value) {
        if let Some(o) = v.as_object_mut() {
            if o.get("children")
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
            {
                o.remove("children");
            }
            o.values_mut().for_each(prune);
        }
    }
    let mut all = json!({ "hosts": { t.hostname.clone(): vars } });
    if !children.is_empty() {
        let mut children = Value::Object(children);
        prune(&mut children);
        all["children"] = children;
    }
    Ok(json!({ "all": all }))
}

/// Why a run that exited 0 failed: no play targeted the host.
fn no_hosts_message(t: &outpost_protocol::message::Target) -> String {
    let mut groups: Vec<&str> = Vec::new();
    for g in t.groups.iter().flatten() {
        if !groups.contains(&g.as_str()) {
            groups.push(g);
        }
    }
    let groups = if groups.is_empty() {
        "none".to_owned()
    } else {
        groups.join(", ")
    };
    format!(
        "no hosts matched: none of the playbook's plays targets {} (its groups: {groups})",
        t.hostname
    )
}

/// What ansible's output says about the run beyond its exit code.
#[derive(Debug, Default)]
struct Recap {
    /// A play was skipped with "skipping: no hosts matched".
    skipped_play: bool,
    /// Past the "PLAY RECAP" line.
    in_recap: bool,
    /// Hosts the recap lists.
    hosts: u32,
}

impl Recap {
    fn line(&mut self, text: &str) {
        if text == "skipping: no hosts matched" {
            self.skipped_play = true;
        } else if text.starts_with("PLAY RECAP") {
            self.in_recap = true;
        } else if self.in_recap && is_recap_host(text) {
            self.hosts += 1;
        }
    }

    /// Every play was skipped for want of a host: the run did nothing. (Output whose format
    /// says neither, from another stdout callback, is taken at its exit code.)
    fn no_hosts_matched(&self) -> bool {
        self.skipped_play && self.hosts == 0
    }
}

/// A line of the recap: `web1   : ok=2    changed=0 …`.
fn is_recap_host(text: &str) -> bool {
    text.split_once(" : ")
        .is_some_and(|(host, rest)| !host.trim().is_empty() && rest.trim_start().starts_with("ok="))
}

/// What the collector saw: the last few error lines, and the recap.
#[derive(Debug, Default)]
struct Scan {
    errors: Vec<String>,
    recap: Recap,
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

/// Numbers lines into the spool in small batches; returns the last few error lines and what
/// the recap said. A write
/// the spool refuses (a full disk) is reported once on `failed` and ends the collection: the
/// job is stopped rather than run on with its output lost.
async fn collect(
    mut rx: mpsc::Receiver<String>,
    spool: Arc<Spool>,
    progress: watch::Sender<u32>,
    failed: tokio::sync::oneshot::Sender<String>,
) -> Scan {
    let mut failed = Some(failed);
    let mut report = |e: std::io::Error| {
        if let Some(tx) = failed.take() {
            let _ = tx.send(format!("spool disk full at {}: {e}", spool.dir().display()));
        }
    };
    let mut errors: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut recap = Recap::default();
    let done = |errors: std::collections::VecDeque<String>, recap| Scan {
        errors: errors.into(),
        recap,
    };
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
                recap.line(&text);
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
                        return done(errors, recap);
                    }
                    deadline = None;
                }
            }
            Some(None) => {
                if let Err(e) = flush(&spool, &mut batch, &progress) {
                    report(e);
                    return done(errors, recap);
                }
                deadline = None;
            }
            None => {
                if let Err(e) = flush(&spool, &mut batch, &progress) {
                    report(e);
                }
                return done(errors, recap);
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

    #[test]
    fn a_process_group_is_the_jobs_only_while_a_process_of_it_carries_the_mark() {
        use std::os::unix::process::CommandExt;
        let job = uuid::Uuid::new_v4();
        let spawn = |marked: bool| {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("30").process_group(0);
            if marked {
                cmd.env(JOB_MARK, job.to_string());
            }
            cmd.spawn().expect("sleep")
        };
        let (mut theirs, mut ours) = (spawn(false), spawn(true));
        let (their_group, our_group) = (theirs.id() as i32, ours.id() as i32);
        // `spawn` returns once the child has begun its exec, which may not have set up the new
        // environment yet (its environ reads empty for a moment): wait until both show one,
        // as a job's processes long have by the time recovery looks at them.
        for pid in [theirs.id(), ours.id()] {
            let environ = format!("/proc/{pid}/environ");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::fs::read(&environ).map_or(true, |e| e.is_empty()) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{environ} stays empty"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        assert!(group_is_jobs(our_group, job));
        assert!(!group_is_jobs(their_group, job), "a group without the mark");
        assert!(
            !group_is_jobs(our_group, uuid::Uuid::new_v4()),
            "another job's mark"
        );
        // What recovery does with a group id read back from a spool.
        kill_job(job, Some(their_group).filter(|g| group_is_jobs(*g, job)));
        assert!(
            theirs.try_wait().unwrap().is_none(),
            "a stranger's group survives"
        );
        kill_job(job, Some(our_group).filter(|g| group_is_jobs(*g, job)));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            ours.wait().unwrap().signal(),
            Some(libc::SIGKILL),
            "the job's group is killed"
        );
        let _ = theirs.kill();
        let _ = theirs.wait();
    }

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

    fn target(groups: Vec<Vec<&str>>) -> outpost_protocol::message::Target {
        outpost_protocol::message::Target {
            hostname: "web1".into(),
            ip_address: "10.1.2.3".into(),
            ssh_port: 2222,
            ssh_user: "deploy".into(),
            ssh_key_path: Some("/home/deploy/.ssh/id".into()),
            host_vars_json: "{}".into(),
            groups: groups
                .into_iter()
                .map(|c| c.into_iter().map(String::from).collect())
                .collect(),
        }
    }

    #[test]
    fn inventory_carries_the_target_and_host_vars() {
        let mut hv = serde_json::Map::new();
        hv.insert("ansible_connection".into(), "local".into());
        let inv = inventory(&target(vec![]), hv.clone(), false).unwrap();
        let host = &inv["all"]["hosts"]["web1"];
        assert_eq!(host["ansible_host"], "10.1.2.3");
        assert_eq!(host["ansible_port"], 2222);
        assert_eq!(host["ansible_user"], "deploy");
        assert_eq!(host["ansible_ssh_private_key_file"], "/home/deploy/.ssh/id");
        assert_eq!(host["ansible_connection"], "local");
        assert!(inv["all"].get("children").is_none());

        // A key credential wins over the target's key path; the host vars still apply.
        let inv = inventory(&target(vec![]), hv, true).unwrap();
        let host = &inv["all"]["hosts"]["web1"];
        assert!(host.get("ansible_ssh_private_key_file").is_none(), "{host}");
        assert_eq!(host["ansible_connection"], "local");
        assert_eq!(host["ansible_user"], "deploy");
    }

    #[test]
    fn inventory_nests_the_target_in_its_group_chains() {
        let t = target(vec![
            vec!["prod", "web"],
            vec!["prod", "db"],
            vec!["dc_fra1"],
            vec!["all", "ungrouped"],
        ]);
        let inv = inventory(&t, serde_json::Map::new(), false).unwrap();
        assert_eq!(
            inv["all"]["children"],
            serde_json::json!({
                "prod": {"children": {
                    "web": {"hosts": {"web1": {}}},
                    "db": {"hosts": {"web1": {}}},
                }},
                "dc_fra1": {"hosts": {"web1": {}}},
            })
        );
        assert_eq!(inv["all"]["hosts"]["web1"]["ansible_user"], "deploy");
        for bad in [
            vec![vec!["web-1"]],
            vec![vec!["1web"]],
            vec![vec!["{{ lookup('pipe','id') }}"]],
            vec![vec!["a"; MAX_GROUP_DEPTH + 1]],
            vec![vec!["a"]; MAX_GROUP_CHAINS + 1],
        ] {
            assert!(
                inventory(&target(bad.clone()), serde_json::Map::new(), false).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_run_that_matched_no_host_is_told_from_one_that_did() {
        let mut none = Recap::default();
        for l in [
            "PLAY [web] *****",
            "skipping: no hosts matched",
            "PLAY RECAP *****",
            "",
        ] {
            none.line(l);
        }
        assert!(none.no_hosts_matched());
        let mut some = Recap::default();
        for l in [
            "PLAY [db] *****",
            "skipping: no hosts matched",
            "PLAY [all] *****",
            "ok: [web1]",
            "PLAY RECAP *****",
            "web1                       : ok=1    changed=0    unreachable=0    failed=0",
        ] {
            some.line(l);
        }
        assert!(!some.no_hosts_matched());
        assert!(
            !Recap::default().no_hosts_matched(),
            "output of another callback"
        );
        let msg = no_hosts_message(&target(vec![vec!["prod", "web"], vec!["prod", "db"]]));
        assert_eq!(
            msg,
            "no hosts matched: none of the playbook's plays targets web1 (its groups: prod, web, db)"
        );
        assert!(no_hosts_message(&target(vec![])).ends_with("(its groups: none)"));
    }

    #[test]
    fn work_directories_left_by_a_killed_agent_are_swept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("group_vars")).unwrap();
        std::fs::write(tree.join("group_vars/all.yml"), "x: 1\n").unwrap();
        let job = work.join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(job.join("tmp")).unwrap();
        std::fs::write(job.join("inventory.yml"), "{}").unwrap();
        std::os::unix::fs::symlink(tree.join("group_vars"), job.join("group_vars")).unwrap();
        std::fs::create_dir(work.join("not-a-job")).unwrap();
        assert_eq!(sweep_work(&work).unwrap(), 1);
        assert!(!job.exists());
        assert!(work.join("not-a-job").exists());
        assert!(
            tree.join("group_vars/all.yml").exists(),
            "links are removed, not followed"
        );
    }

    #[test]
    fn paths_from_the_controller_stay_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("playbooks")).unwrap();
        std::fs::write(tree.join("playbooks/site.yml"), "- hosts: all\n").unwrap();
        std::fs::write(dir.path().join("outside.yml"), "").unwrap();
        std::os::unix::fs::symlink("../outside.yml", tree.join("escape.yml")).unwrap();
        std::os::unix::fs::symlink("playbooks/site.yml", tree.join("site.yml")).unwrap();
        let ok = inside_tree(&tree, "playbooks/site.yml", Kind::File).unwrap();
        assert!(ok.is_some());
        assert!(inside_tree(&tree, "site.yml", Kind::File)
            .unwrap()
            .is_some());
        assert!(inside_tree(&tree, "", Kind::Dir).unwrap().is_some());
        assert_eq!(inside_tree(&tree, "missing.yml", Kind::File), Ok(None));
        assert_eq!(inside_tree(&tree, "playbooks", Kind::File), Ok(None));
        for bad in [
            "../outside.yml",
            "/etc/passwd",
            "playbooks/../../outside.yml",
        ] {
            assert!(inside_tree(&tree, bad, Kind::File).is_err(), "{bad}");
        }
        assert!(inside_tree(&tree, "escape.yml", Kind::File).is_err());
    }
}
