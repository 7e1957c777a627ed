//! The figures people choose an orchestrator by, measured side by side in one run on real
//! processes (MariaDB on 127.0.0.1:3306, a fresh database per section, dropped after):
//!
//! 1. `overhead`: one small playbook against one SSH target in a test-fleet datacenter, run
//!    through Outpost (API launch → outcome recorded), by `ansible-playbook` directly and by
//!    `ansible-runner run` (AWX's execution engine), interleaved; wall time p50/p99.
//! 2. `dispatch`: launch (`POST /api/v1/jobs`) → the job's process started on the agent, over
//!    1,000 jobs across 10 agents; the agents run a stand-in for ansible-playbook that notes the
//!    time it started and exits, so only Outpost's path is timed.
//! 3. `ingest`: 1, 8 and 64 agents each running a job that prints at full speed (a stand-in
//!    printing numbered lines), launch → every job's outcome recorded (which implies every line
//!    committed and acknowledged), next to raw multi-row INSERTs of as many rows into the same
//!    database in the same run.
//! 4. `far`: a job printing 50,000 lines through ansible in a datacenter whose agent reaches the
//!    controller through a relay adding 50 ms each way and 1 % loss, next to the same job in a
//!    datacenter on a clean link.
//!
//! Run: `cargo bench -p outpost-tests --bench fleet` (as root: the fleet makes network
//! namespaces; `OUTPOST_BENCH=overhead,dispatch,ingest,far` picks sections,
//! `OUTPOST_BENCH_RUNS` the runs of `overhead` (50), `OUTPOST_BENCH_JOBS` the jobs of
//! `dispatch` (1000), `OUTPOST_BENCH_LINES` the lines of each `ingest` round (400000)).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use outpost_api::types::LaunchResponse;
use outpost_controller::model::{JobId, JobStatus};
use outpost_tests::bench::{env_num, now_ns, pct, wait_final, wanted, which};
use outpost_tests::cluster::Cluster;
use outpost_tests::fleet::Fleet;
use outpost_tests::procs::{Agent, AgentOpts, ControllerOpts};
use outpost_tests::proxy::{Impairment, UdpProxy};
use outpost_tests::world::numbered_lines_task;
use outpost_tests::{wait_for, Backend};
use serde_json::json;
use sqlx::{Connection, QueryBuilder};

const SMALL: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: reach the target\n      ansible.builtin.ping:\n    - name: say so\n      ansible.builtin.debug:\n        msg: \"hello from {{ inventory_hostname }}\"\n";

async fn launch(api: &outpost_api::client::Client, playbook: &str, server: &str) -> String {
    let r: LaunchResponse = api
        .post(
            "/api/v1/jobs",
            &json!({"playbook": playbook, "servers": [server]}),
        )
        .await
        .expect("launch");
    r.jobs[0].id.clone()
}

/// A stand-in for ansible-playbook: answers `--version` as the agent expects, otherwise runs
/// `body` (a shell fragment).
fn stand_in(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo 'ansible-playbook [core 2.19.0]'; exit 0; fi\n{body}\n"
        ),
    )
    .expect("stand-in");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

async fn overhead() {
    let runs = env_num("OUTPOST_BENCH_RUNS", 50);
    let runner = which("ansible-runner").unwrap_or_else(|| {
        panic!("ansible-runner is missing: python3 -m pip install ansible-runner")
    });
    let mut fleet = Fleet::start();
    fleet.add_datacenter("fra1");
    let c = Cluster::for_fleet(Backend::MariaDb, &fleet, ControllerOpts::default()).await;
    let _agent = c.fleet_agent(&fleet, "fra1", c.ctl.agents, &AgentOpts::default());
    let w = &c.world;
    let server = fleet.register(w, "fra1", "web-fra1").await;
    let pb = w.playbook("small", SMALL).await;
    let api = outpost_tests::api::login(&c.ctl, "ops", outpost_tests::api::PASSWORD).await;
    let dc = fleet.dc("fra1");
    let inventory = fleet.inventory(&server);
    let playbook = PathBuf::from(&pb.file_path);

    // ansible-runner's private data directory: the same playbook, inventory and environment.
    let rdir = fleet.dir.path().join("runner");
    std::fs::create_dir_all(rdir.join("project")).expect("runner dir");
    std::fs::create_dir_all(rdir.join("inventory")).expect("runner dir");
    std::fs::create_dir_all(rdir.join("env")).expect("runner dir");
    std::fs::write(rdir.join("project/small.yml"), SMALL).expect("runner playbook");
    std::fs::write(rdir.join("inventory/hosts.json"), inventory.to_string()).expect("inv");
    std::fs::write(
        rdir.join("env/envvars"),
        json!({"ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_RETRY_FILES_ENABLED": "0"}).to_string(),
    )
    .expect("envvars");
    let run_runner = || {
        let out = dc
            .command(&runner)
            .args(["run", "-p", "small.yml", "-q", "--rotate-artifacts", "5"])
            .arg(&rdir)
            .output()
            .expect("ansible-runner");
        assert!(
            out.status.success(),
            "ansible-runner failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let run_direct = || {
        let out = dc.ansible_playbook(&inventory, &playbook, &json!({}));
        assert!(
            out.status.success(),
            "ansible-playbook failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };

    // One of each first: ssh's ControlPersist master (shared by all three) and caches warm.
    run_direct();
    run_runner();
    let j = launch(&api, "small", "web-fra1").await;
    assert_eq!(
        wait_final(w, &j, Duration::from_millis(5)).await.status,
        JobStatus::Success
    );

    let (mut via, mut direct, mut by_runner) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let j = launch(&api, "small", "web-fra1").await;
        let job = wait_final(w, &j, Duration::from_millis(5)).await;
        assert_eq!(job.status, JobStatus::Success, "{:?}", job.error_message);
        via.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        run_direct();
        direct.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        run_runner();
        by_runner.push(t.elapsed().as_secs_f64());
    }
    let (d50, d99) = (pct(&direct, 50.0), pct(&direct, 99.0));
    println!("\n## overhead: a 2-task playbook over SSH, {runs} runs each, interleaved");
    println!("| path | p50 | p99 | p50 / direct |");
    println!("|---|---:|---:|---:|");
    println!(
        "| ansible-playbook directly | {:.0} ms | {:.0} ms | 1.00 |",
        d50 * 1e3,
        d99 * 1e3
    );
    for (name, v) in [
        ("Outpost (API launch → outcome recorded)", &via),
        ("ansible-runner run", &by_runner),
    ] {
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.2} |",
            pct(v, 50.0) * 1e3,
            pct(v, 99.0) * 1e3,
            pct(v, 50.0) / d50
        );
    }
}

async fn dispatch() {
    let jobs = env_num("OUTPOST_BENCH_JOBS", 1000);
    let (agents_n, servers_n) = (10, 100);
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let started = dir.path().join("started");
    let fake = stand_in(
        dir.path(),
        "ansible-playbook",
        &format!(
            "echo \"$OUTPOST_JOB_ID $(date +%s%N)\" >> '{}'\necho started",
            started.display()
        ),
    );
    let opts = AgentOpts {
        capacity: 10,
        ansible_playbook: Some(fake),
        ..AgentOpts::default()
    };
    let _agents: Vec<Agent> = (0..agents_n)
        .map(|i| c.agent(&format!("agent-{i:02}"), &[], &opts))
        .collect();
    let w = &c.world;
    wait_for("10 agents connected", Duration::from_secs(60), || async {
        (c.ctl.log().matches("agent connected").count() >= agents_n).then_some(())
    })
    .await;
    let mut servers = Vec::new();
    for i in 0..servers_n {
        servers.push(
            w.local_server(&format!("web{i:03}"), json!({}), "dev")
                .await
                .hostname,
        );
    }
    w.playbook("noop", SMALL).await;
    let api = outpost_tests::api::login(&c.ctl, "ops", outpost_tests::api::PASSWORD).await;

    let mut launched: HashMap<String, u128> = HashMap::new();
    let t = Instant::now();
    for i in 0..jobs {
        let at = now_ns();
        let id = launch(&api, "noop", &servers[i % servers_n]).await;
        launched.insert(id, at);
    }
    let launch_secs = t.elapsed().as_secs_f64();
    let ids: Vec<String> = launched.keys().cloned().collect();
    for id in &ids {
        let j = wait_final(w, id, Duration::from_millis(20)).await;
        assert_eq!(j.status, JobStatus::Success, "{:?}", j.error_message);
    }
    let text = std::fs::read_to_string(&started).expect("start times");
    let mut lat = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(id), Some(ns)) = (it.next(), it.next().and_then(|v| v.parse::<u128>().ok())) {
            if let Some(at) = launched.get(id) {
                lat.push((ns.saturating_sub(*at)) as f64 / 1e6);
            }
        }
    }
    assert_eq!(lat.len(), jobs, "every job's process started once");
    println!("\n## dispatch: launch → process started on the agent, {jobs} jobs, {agents_n} agents, {servers_n} servers");
    println!(
        "launched at {:.0} jobs/s (one POST each); p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        jobs as f64 / launch_secs,
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        pct(&lat, 100.0)
    );
}

/// Raw multi-row INSERTs of `total` rows shaped like the agents' lines into `job_logs` of the
/// database at `url` (1,000 rows a statement, 5,000 a transaction); rows per second.
async fn raw_inserts(url: &str, job: JobId, from: usize, total: usize) -> f64 {
    let mut conn = sqlx::MySqlConnection::connect(url).await.expect("raw conn");
    let ts = chrono::Utc::now().naive_utc();
    let t = Instant::now();
    let rows: Vec<usize> = (from..from + total).collect();
    for tx_rows in rows.chunks(5000) {
        let mut tx = conn.begin().await.expect("begin");
        for chunk in tx_rows.chunks(1000) {
            let mut qb = QueryBuilder::new(
                "INSERT INTO job_logs (job_id, line_number, content, log_level, timestamp) ",
            );
            qb.push_values(chunk, |mut b, i| {
                b.push_bind(job)
                    .push_bind(*i as i32)
                    .push_bind(format!("ok: [web] => line {i} of the benchmark output"))
                    .push_bind("INFO")
                    .push_bind(ts);
            });
            qb.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .expect("raw insert");
        }
        tx.commit().await.expect("commit");
    }
    total as f64 / t.elapsed().as_secs_f64()
}

async fn ingest() {
    let total = env_num("OUTPOST_BENCH_LINES", 400_000);
    println!("\n## ingest through QUIC: agents printing at full speed, {total} lines a round");
    println!("| agents | Outpost lines/s | raw INSERT rows/s | Outpost / raw |");
    println!("|---:|---:|---:|---:|");
    for n in [1usize, 8, 64] {
        let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
        let dir = tempfile::tempdir().expect("dir");
        let per = total / n;
        let fake = stand_in(
            dir.path(),
            "ansible-playbook",
            &format!("seq -f 'ok: [web] => line %g of the benchmark output' 1 {per}"),
        );
        let opts = AgentOpts {
            capacity: 1,
            ansible_playbook: Some(fake),
            ..AgentOpts::default()
        };
        let _agents: Vec<Agent> = (0..n)
            .map(|i| c.agent(&format!("agent-{i:02}"), &[], &opts))
            .collect();
        let w = &c.world;
        wait_for("agents connected", Duration::from_secs(120), || async {
            (c.ctl.log().matches("agent connected").count() >= n).then_some(())
        })
        .await;
        let pb = w.playbook("print", SMALL).await;
        let mut servers = Vec::new();
        for i in 0..n {
            servers.push(
                w.local_server(&format!("web{i:03}"), json!({}), "dev")
                    .await,
            );
        }
        let t = Instant::now();
        let mut jobs = Vec::new();
        for s in &servers {
            jobs.push(w.launch(&pb, s).await);
        }
        for j in &jobs {
            let done = wait_final(w, &j.job_id.to_string(), Duration::from_millis(20)).await;
            assert_eq!(done.status, JobStatus::Success, "{:?}", done.error_message);
        }
        let through = (per * n) as f64 / t.elapsed().as_secs_f64();
        for j in &jobs {
            let (max, count) = w.store.log_extent(j.id).await.expect("extent");
            assert_eq!(
                (max as usize, count as usize),
                (per, per),
                "every line stored once"
            );
        }
        // The raw figure: as many rows into the same table of the same database, numbered
        // after the first job's lines.
        let raw = raw_inserts(&c.db.url, jobs[0].id, per + 1, per * n).await;
        println!("| {n} | {through:.0} | {raw:.0} | {:.2} |", through / raw);
    }
}

async fn far() {
    let mut fleet = Fleet::start();
    fleet.add_datacenter("fra1");
    fleet.add_datacenter("syd1");
    let c = Cluster::for_fleet(Backend::MariaDb, &fleet, ControllerOpts::default()).await;
    let relay = UdpProxy::start_on(fleet.host_ip(), c.ctl.agents, Impairment::FAR).await;
    let _near = c.fleet_agent(&fleet, "fra1", c.ctl.agents, &AgentOpts::default());
    let _far = c.fleet_agent(&fleet, "syd1", relay.addr, &AgentOpts::default());
    let w = &c.world;
    let lines = 50_000;
    let yaml = format!(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n{}",
        numbered_lines_task("lines", "line-%05d", lines)
    );
    let pb = w.playbook("lines", &yaml).await;
    println!("\n## far datacenter: a job printing {lines} lines through ansible over SSH");
    println!("| link | launch → outcome | lines/s |");
    println!("|---|---:|---:|");
    for (dc, what) in [
        ("fra1", "clean (veth)"),
        ("syd1", "relay: 50 ms each way, 1 % loss"),
    ] {
        let server = fleet.register(w, dc, &format!("web-{dc}")).await;
        let t = Instant::now();
        let job = w.launch(&pb, &server).await;
        let done = wait_final(w, &job.job_id.to_string(), Duration::from_millis(20)).await;
        assert_eq!(done.status, JobStatus::Success, "{:?}", done.error_message);
        let secs = t.elapsed().as_secs_f64();
        let n = w.assert_contiguous(&job).await;
        println!("| {what} | {secs:.1} s | {:.0} |", n as f64 / secs);
    }
    println!(
        "(relay: {} datagrams passed, {} lost)",
        relay.relayed(),
        relay.lost()
    );
}

#[tokio::main]
async fn main() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("# fleet benchmarks: {cores} cores, MariaDB on 127.0.0.1:3306, release binaries of the workspace (target/release)");
    if wanted("overhead") {
        overhead().await;
    }
    if wanted("dispatch") {
        dispatch().await;
    }
    if wanted("ingest") {
        ingest().await;
    }
    if wanted("far") {
        far().await;
    }
}
