//! Per-task results, measured.
//!
//! 1. `callback`: what the agent's shipped callback costs ansible. A 200-task play (local
//!    connection, no facts) runs by hand without the callback and with it (loaded as the agent
//!    loads it, writing to a pipe a thread drains), alternately, `OUTPOST_BENCH_RUNS` times
//!    each (default 7); the medians and their ratio are printed. The bound is 1.05×.
//! 2. `store`: task results stored per second, on MariaDB (127.0.0.1:3306, a fresh database)
//!    and on SQLite: 100 batches of 200 results (one job's worth each, as a job stream writes
//!    them), one transaction per batch.
//!
//! Run: `cargo bench -p outpost-tests --bench results` (`OUTPOST_BENCH=callback` or `=store`
//! for one part).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::Utc;
use outpost_controller::model::TaskStatus;
use outpost_controller::store::results::NewTaskResult;
use outpost_tests::bench::{env_num, pct, wanted};
use outpost_tests::db::TestDb;
use outpost_tests::world::World;
use outpost_tests::Backend;

const TASKS: usize = 200;

fn play(tasks: usize) -> String {
    let mut y = String::from("- hosts: all\n  gather_facts: false\n  tasks:\n");
    for i in 0..tasks {
        y.push_str(&format!(
            "    - name: task {i}\n      ansible.builtin.debug:\n        msg: step {i}\n"
        ));
    }
    y
}

/// One run of the play; with `plugins`, the callback is loaded from there and writes to a
/// pipe drained by a thread. Returns wall seconds and the result lines the callback wrote.
fn run(dir: &std::path::Path, plugins: Option<&std::ffi::OsStr>) -> (f64, usize) {
    let mut cmd = Command::new("ansible-playbook");
    cmd.args(["-i", "inventory.yml", "play.yml"])
        .current_dir(dir)
        .env("ANSIBLE_NOCOLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut drain = None;
    let mut writer = None;
    if let Some(p) = plugins {
        let (mut r, w) = std::io::pipe().expect("pipe");
        let fd = w.as_raw_fd();
        cmd.env("ANSIBLE_CALLBACK_PLUGINS", p)
            .env(outpost_agent::callback::FD_VAR, fd.to_string());
        // SAFETY: only fcntl(2) between fork and exec, to let the pipe's end pass to ansible.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        writer = Some(w);
        drain = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s.lines().count()
        }));
    }
    let t = Instant::now();
    let mut child = cmd.spawn().expect("ansible-playbook");
    drop(writer);
    let status = child.wait().expect("wait");
    let secs = t.elapsed().as_secs_f64();
    assert!(status.success(), "the play failed");
    let lines = drain.map(|d| d.join().unwrap_or(0)).unwrap_or(0);
    (secs, lines)
}

fn callback() {
    let runs = env_num("OUTPOST_BENCH_RUNS", 7);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("play.yml"), play(TASKS)).unwrap();
    std::fs::write(
        dir.path().join("inventory.yml"),
        serde_json::json!({"all": {"hosts": {"bench1": {"ansible_connection": "local", "ansible_python_interpreter": outpost_tests::world::python()}}}}).to_string(),
    )
    .unwrap();
    let plugins = outpost_agent::callback::install(dir.path()).unwrap();
    // A warm-up of each, not counted (Python's caches, the page cache).
    run(dir.path(), None);
    run(dir.path(), Some(&plugins));
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        without.push(run(dir.path(), None).0);
        let (secs, lines) = run(dir.path(), Some(&plugins));
        assert_eq!(lines, TASKS + 1, "one line per task, and the recap");
        with.push(secs);
    }
    let (a, b) = (pct(&without, 50.0), pct(&with, 50.0));
    println!(
        "callback: {TASKS}-task play, {runs} runs each, alternating: without {a:.2} s, with {b:.2} s (median), ratio {:.3}x",
        b / a
    );
}

async fn store_rate(backend: Backend) {
    let db = TestDb::new(backend).await;
    let w = World::new(&db.url).await;
    let server = w.local_server("rate1", serde_json::json!({}), "dev").await;
    let pb = w.playbook("rate", &play(1)).await;
    let (batches, per) = (100usize, 200usize);
    let mut jobs = Vec::new();
    for _ in 0..batches {
        jobs.push(w.launch(&pb, &server).await);
    }
    let rows: Vec<NewTaskResult> = (0..per)
        .map(|i| NewTaskResult {
            seq: i as i32 + 1,
            host: "rate1".into(),
            play: "rate".into(),
            task: format!("task {i}"),
            action: "ansible.builtin.debug".into(),
            status: if i % 10 == 0 {
                TaskStatus::Changed
            } else {
                TaskStatus::Ok
            },
            started_at: Utc::now(),
            duration_ms: 12,
            message: None,
        })
        .collect();
    let t = Instant::now();
    for j in &jobs {
        let n = w.store.insert_task_results(j.id, &rows).await.unwrap();
        assert_eq!(n as usize, per);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "store ({backend:?}): {} results in {batches} batches of {per}: {secs:.2} s, {:.0} results/s",
        batches * per,
        (batches * per) as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    if wanted("callback") {
        callback();
    }
    if wanted("store") {
        store_rate(Backend::MariaDb).await;
        store_rate(Backend::Sqlite).await;
    }
}
