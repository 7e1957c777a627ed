//! Test scaffolding shared by every crate's integration tests and the whole-system tests:
//!
//! - [`api`]: signing in to the HTTPS API, test users, Server-Sent Events;
//! - [`bench`]: what the benchmarks share: knobs, percentiles, waits, memory readings;
//! - [`browser`]: headless Chromium over WebDriver, for the web UI, with screenshots;
//! - [`cluster`]: a controller on a fresh database, ready for agents;
//! - [`fleet`]: datacenters in network namespaces, each with an sshd and an uplink;
//! - [`db`]: a fresh database per test (MariaDB or SQLite), dropped afterwards;
//! - [`mariadb`]: a private MariaDB server a test may restart;
//! - [`procs`]: real `outpost-controller` and `outpost-agent` processes on loopback;
//! - [`proxy`]: a UDP relay between agent and controller that can cut the network;
//! - [`repo`]: a team's Ansible repository in git, served by `git daemon`;
//! - [`world`]: users, servers, playbooks and jobs put straight into the store, and waits.

pub mod api;
pub mod bench;
pub mod browser;
pub mod cluster;
pub mod db;
pub mod fleet;
pub mod mariadb;
pub mod procs;
pub mod proxy;
pub mod repo;
pub mod world;

use std::path::PathBuf;
use std::time::Duration;

pub use db::{mysql_server_url, Backend, TestDb};

/// The workspace root (where Cargo.toml and migrations/ are found).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A string no other test uses: put it on a job's command line, then look for exactly that
/// (tests run side by side, and another test's processes are none of this one's business).
pub fn unique_mark() -> String {
    format!("outpost-mark-{}", uuid::Uuid::new_v4().simple())
}

/// Whether some process's command line contains `pattern` (`pgrep -f`; it never matches
/// itself). Panics if pgrep cannot run, rather than answer "none" for want of a tool.
fn process_running(pattern: &str) -> bool {
    let out = std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap_or_else(|e| panic!("cannot run pgrep (apt-get install procps): {e}"));
    // 0: found; 1: none; anything else is pgrep failing, which must not read as "none".
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("pgrep -f {pattern} failed: {}", output_text(&out)),
    }
}

/// Waits until a process whose command line contains `pattern` runs (a job's task started).
/// Call it before [`wait_no_process`]: a process that is gone must first have been there, or
/// "it is gone" would also hold when it never started.
pub async fn wait_process(pattern: &str, timeout: Duration) {
    wait_for(
        &format!("a process running '{pattern}'"),
        timeout,
        || async { process_running(pattern).then_some(()) },
    )
    .await
}

/// Waits until no process's command line contains `pattern` (a job's processes are gone).
/// See [`wait_process`] for what to wait for first.
pub async fn wait_no_process(pattern: &str, timeout: Duration) {
    wait_for(
        &format!("no process running '{pattern}'"),
        timeout,
        || async { (!process_running(pattern)).then_some(()) },
    )
    .await
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_for`] for code that is not async: polls `check` every 100 ms.
pub fn wait_blocking(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A finished command's stdout then stderr, as one text (for assertions and failure messages).
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for `child` to exit; after `timeout` kills it and panics, naming it `what` (a
/// process that hangs fails its test instead of holding up the whole run).
pub fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(e) => panic!("cannot wait for {what}: {e}"),
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`std::process::Command::output`] with a deadline: stdin empty, stdout and stderr captured;
/// panics (after killing it) if the command runs longer than `timeout`.
pub fn output_within(
    cmd: &mut std::process::Command,
    timeout: Duration,
    what: &str,
) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = wait_child(&mut child, timeout, what);
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs `cmd` and panics, with what it printed, unless it succeeds; `what` names it.
pub fn run_ok(cmd: &mut std::process::Command, what: &str) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", output_text(&out));
    out
}
