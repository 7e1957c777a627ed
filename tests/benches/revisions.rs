//! Project revisions on their way to agents, measured on real processes (MariaDB on
//! 127.0.0.1:3306, a fresh database per section, dropped after):
//!
//! 1. `delivery`: a git project of ~50 MB (incompressible files and one playbook) synced by the
//!    controller, then one job on 1 agent, then one job on each of 20 agents at once (each with
//!    an empty cache), then the same 20 again (cached): launch → every outcome recorded, and the
//!    controller's resident memory above its level before each round (sampled every 20 ms).
//! 2. `roles`: a role-based play (a role with a template and a file, `group_vars/`, a
//!    collection's filter) through Outpost from a synced project, next to `ansible-playbook` by
//!    hand in a checkout of the same commit, local connection, interleaved; p50/p99.
//!
//! Run: `cargo bench -p outpost-tests --bench revisions` (`OUTPOST_BENCH=delivery,roles` picks
//! sections, `OUTPOST_BENCH_MB` the size of the revision (50), `OUTPOST_BENCH_RUNS` the runs of
//! `roles` (30)).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_api::client::Client;
use outpost_controller::model::JobStatus;
use outpost_tests::api::{login, PASSWORD};
use outpost_tests::bench::{env_num, pct, rss_kib, wait_final, wanted};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{Agent, AgentOpts, ControllerOpts};
use outpost_tests::repo::{random_repository, GitDaemon, TeamRepo};
use outpost_tests::world::python;
use outpost_tests::{wait_for, Backend};
use serde_json::{json, Value};

/// Creates the project `name` on `url` and waits for its first sync; the seconds it took.
async fn project(api: &Client, name: &str, url: &str) -> f64 {
    let t = Instant::now();
    let created: Value = api
        .post(
            "/api/v1/projects",
            &json!({"name": name, "git_url": url, "git_ref": "main", "kind": "git"}),
        )
        .await
        .expect("create the project");
    let id = created["id"].as_i64().expect("project id");
    wait_for("the sync", Duration::from_secs(600), || async {
        let p: Value = api.get(&format!("/api/v1/projects/{id}")).await.ok()?;
        match p["sync_state"].as_str() {
            Some("failed") => panic!("sync failed: {}", p["sync_error"]),
            Some("ok") => Some(()),
            _ => None,
        }
    })
    .await;
    t.elapsed().as_secs_f64()
}

async fn launch(api: &Client, project: &str, playbook: &str, server: &str) -> String {
    let r: Value = api
        .post(
            "/api/v1/jobs",
            &json!({"project": project, "playbook_path": playbook, "servers": [server]}),
        )
        .await
        .expect("launch");
    r["jobs"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job in {r}"))
        .to_owned()
}

/// Samples a process's resident memory until dropped; `peak()` is the highest seen.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssPeak {
    fn watch(pid: u32) -> RssPeak {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssPeak { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One round: a job per server at once; (seconds to the last outcome, controller RSS growth MiB).
async fn round(c: &Cluster, api: &Client, servers: &[String]) -> (f64, f64) {
    let base = rss_kib(c.ctl.pid());
    let watch = RssPeak::watch(c.ctl.pid());
    let t = Instant::now();
    let mut ids = Vec::new();
    for s in servers {
        ids.push(launch(api, "big", "site.yml", s).await);
    }
    for id in &ids {
        let j = wait_final(&c.world, id, Duration::from_millis(10)).await;
        assert_eq!(j.status, JobStatus::Success, "{:?}", j.error_message);
    }
    let secs = t.elapsed().as_secs_f64();
    let grown = watch.peak().saturating_sub(base) as f64 / 1024.0;
    (secs, grown)
}

async fn delivery() {
    let mb = env_num("OUTPOST_BENCH_MB", 50);
    let agents_n = 20;
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let api = login(&c.ctl, "ops", PASSWORD).await;

    let (_repo, daemon) = random_repository(mb);
    let sync_secs = project(&api, "big", &daemon.url("big.git")).await;

    // Agent i is alone in "datacenter" bNN, with its own server there.
    let mut agents: Vec<Agent> = Vec::new();
    let mut servers = Vec::new();
    for i in 0..agents_n {
        let dc = format!("b{i:02}");
        agents.push(c.agent(
            &format!("agent-{dc}"),
            &[&format!("dc={dc}")],
            &AgentOpts::default(),
        ));
        servers.push(
            c.world
                .local_server(&format!("host-{dc}"), json!({ "dc": dc }), "dev")
                .await
                .hostname,
        );
    }
    wait_for("the agents connected", Duration::from_secs(120), || async {
        (c.ctl.log().matches("agent connected").count() >= agents_n).then_some(())
    })
    .await;

    let (one, one_mem) = round(&c, &api, &servers[..1]).await;
    let (cold, cold_mem) = round(&c, &api, &servers[1..]).await;
    let (warm, warm_mem) = round(&c, &api, &servers[1..]).await;
    println!("\n## delivery: a {mb} MiB revision (git, synced in {sync_secs:.1} s)");
    println!("| round | jobs | launch → last outcome | controller RSS growth (peak) |");
    println!("|---|---:|---:|---:|");
    println!("| 1 agent, not cached | 1 | {one:.2} s | {one_mem:.1} MiB |");
    println!(
        "| {} agents at once, not cached | {} | {cold:.2} s | {cold_mem:.1} MiB |",
        agents_n - 1,
        agents_n - 1
    );
    println!(
        "| the same {} agents, cached | {} | {warm:.2} s | {warm_mem:.1} MiB |",
        agents_n - 1,
        agents_n - 1
    );
    drop(agents);
    drop(daemon);
}

async fn roles() {
    let runs = env_num("OUTPOST_BENCH_RUNS", 30);
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let api = login(&c.ctl, "ops", PASSWORD).await;
    let out = tempfile::tempdir().expect("out dir");
    let repo = TeamRepo::create(&out.path().display().to_string());
    let daemon = GitDaemon::serve(repo.base());
    project(&api, "team", &daemon.url("team.git")).await;
    let server = c.world.local_server("web-local", json!({}), "dev").await;
    let _: Value = api
        .patch(
            &format!("/api/v1/servers/{}", server.id.0),
            &json!({"inventory_groups": [["web"]]}),
        )
        .await
        .expect("put the server in group web");
    let checkout = repo.checkout(&repo.head());
    let files = tempfile::tempdir().expect("inventory dir");
    let inv = files.path().join("inventory.yml");
    std::fs::write(
        &inv,
        json!({"all": {"children": {"web": {"hosts": {"web-local": {
            "ansible_connection": "local", "ansible_python_interpreter": python()}}}}}})
        .to_string(),
    )
    .expect("inventory");
    let by_hand = |cwd: &Path| {
        let out = std::process::Command::new("ansible-playbook")
            .current_dir(cwd)
            .arg("-i")
            .arg(&inv)
            .arg("site.yml")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .output()
            .expect("ansible-playbook");
        assert!(
            out.status.success(),
            "ansible-playbook failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    // One of each first: the agent's cache and Python's bytecode caches warm.
    by_hand(checkout.path());
    let id = launch(&api, "team", "site.yml", "web-local").await;
    let j = wait_final(&c.world, &id, Duration::from_millis(5)).await;
    assert_eq!(j.status, JobStatus::Success, "{:?}", j.error_message);
    let (mut via, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let id = launch(&api, "team", "site.yml", "web-local").await;
        let j = wait_final(&c.world, &id, Duration::from_millis(5)).await;
        assert_eq!(j.status, JobStatus::Success, "{:?}", j.error_message);
        via.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        by_hand(checkout.path());
        direct.push(t.elapsed().as_secs_f64());
    }
    let (d50, d99) = (pct(&direct, 50.0), pct(&direct, 99.0));
    let (v50, v99) = (pct(&via, 50.0), pct(&via, 99.0));
    println!("\n## roles: a role-based play from a synced project, {runs} runs each, interleaved");
    println!("| path | p50 | p99 | p50 / by hand |");
    println!("|---|---:|---:|---:|");
    println!(
        "| ansible-playbook by hand in a checkout | {:.0} ms | {:.0} ms | 1.00 |",
        d50 * 1e3,
        d99 * 1e3
    );
    println!(
        "| Outpost (API launch → outcome recorded) | {:.0} ms | {:.0} ms | {:.3} |",
        v50 * 1e3,
        v99 * 1e3,
        v50 / d50
    );
    drop(daemon);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("# revision benchmarks: {cores} cores, MariaDB on 127.0.0.1:3306, release binaries of the workspace (target/release)");
    if wanted("delivery") {
        delivery().await;
    }
    if wanted("roles") {
        roles().await;
    }
}
