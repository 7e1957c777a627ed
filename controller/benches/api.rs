//! The API's figures, measured side by side in one run against one `outpost-controller serve`
//! process on MariaDB (127.0.0.1:3306, a fresh database dropped afterwards):
//!
//! 1. launch → assignment: `POST /api/v1/jobs` for one server, timed until an agent (a real
//!    mTLS QUIC session built from `outpost-protocol`, answering at once) receives the
//!    assignment; p50/p99 over `OUTPOST_BENCH_LAUNCHES` (1,000) jobs on as many servers.
//!    1b. a run's waves through the scheduler's round: runs of 100 servers in waves of 10
//!    (`OUTPOST_BENCH_WAVE_RUNS`, 10, per controller), each wave timed from the launch or
//!    from the previous wave's last outcome to its assignments, beside a controller that
//!    claims one job and records one outcome a commit (`--claims-per-commit 1
//!    --outcomes-per-commit 1`; `OUTPOST_BENCH_B_ARGS` names other flags for it).
//! 2. reads at scale: with `OUTPOST_BENCH_JOBS` (100,000) jobs and `OUTPOST_BENCH_LOG_LINES`
//!    (10,000,000) log lines in the tables, `GET /api/v1/jobs` unfiltered, by status and by
//!    time, and the dashboard's counts (jobs by status over 24 h, open tickets by priority),
//!    p50/p99 over 200 requests each, with MariaDB's EXPLAIN of each query.
//! 3. pages at size, each beside the raw SQL it sends, timed in the same run on one direct
//!    connection: the job list's first page and a page by cursor 50,000 jobs deep, the audit
//!    list (`OUTPOST_BENCH_AUDIT`, 100,000 records) first and deep, a job's log page (1,000
//!    lines), and the dashboard (`GET /` with a session cookie; its charts are cached for
//!    15 s, so their uncached cost is shown on its own line).
//!
//! Run: `cargo bench -p outpost-controller --bench api`. `OUTPOST_BENCH_SKIP_LAUNCHES=1`
//! leaves out part 1 (only one launch is made, to have jobs of the API's own making);
//! `OUTPOST_BENCH_ONLY_LAUNCHES=1` stops after it; `OUTPOST_BENCH_LOG_DIR` keeps each
//! controller's log there, at info.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_api::client::Client;
use outpost_controller::model::Role;
use outpost_controller::store::agents::NewEnrollmentToken;
use outpost_controller::store::audit::Actor;
use outpost_controller::store::playbooks::NewPlaybook;
use outpost_controller::store::servers::NewServer;
use outpost_controller::store::users::NewUser;
use outpost_controller::{PoolConfig, Store};
use outpost_protocol::codec::{self, FramedStream};
use outpost_protocol::message::{Down, FinalStatus, Finished, Hello, JobDown, JobUp, Up};
use outpost_protocol::pki::{AgentKey, Ca};
use outpost_protocol::tls::{self, Timers};
use outpost_protocol::token::EnrollToken;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use tokio::sync::{mpsc, Mutex};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.99), v[v.len() - 1])
}

/// Part 1b: servers per run, and per wave.
const WAVE_SERVERS: usize = 100;
/// Part 1c's schedules by default (`OUTPOST_BENCH_SCHEDULES`), each of one of the first
/// controller's wave servers.
const SCHEDULES: usize = 10;
const WAVE_SIZE: usize = 10;

/// What the bench's agents note: when each assignment arrived, and when each job's outcome
/// was sent.
#[derive(Clone)]
struct Times {
    arrivals: Arc<Mutex<HashMap<uuid::Uuid, Instant>>>,
    finished: Arc<Mutex<HashMap<uuid::Uuid, Instant>>>,
    arrived: mpsc::UnboundedSender<uuid::Uuid>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let launches = env_num("OUTPOST_BENCH_LAUNCHES", 1000);
    let jobs_total = env_num("OUTPOST_BENCH_JOBS", 100_000);
    let log_lines = env_num("OUTPOST_BENCH_LOG_LINES", 10_000_000);
    let audit_rows = env_num("OUTPOST_BENCH_AUDIT", 100_000);
    let launches = if std::env::var_os("OUTPOST_BENCH_SKIP_LAUNCHES").is_some() {
        1
    } else {
        launches
    };

    let server_url = "mysql://root@127.0.0.1:3306";
    let db_name = format!("outpost_bench_api_{}", std::process::id());
    let mut admin_conn = sqlx::MySqlConnection::connect(&format!("{server_url}/mysql"))
        .await
        .expect("MariaDB on 127.0.0.1:3306 (bash scripts/test starts it)");
    sqlx::query(&format!(
        "CREATE DATABASE {db_name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .execute(&mut admin_conn)
    .await
    .expect("create database");
    let url = format!("{server_url}/{db_name}");
    let dir = tempfile::tempdir().expect("dir");
    let bin = env!("CARGO_BIN_EXE_outpost-controller");
    let init = Command::new(bin)
        .args(["init", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", &url])
        .output()
        .expect("init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let ca_pem = std::fs::read_to_string(dir.path().join("pki/ca.pem")).unwrap();
    let ca = Ca::from_pem(
        &ca_pem,
        &std::fs::read_to_string(dir.path().join("pki/ca.key")).unwrap(),
    )
    .expect("CA");

    let store = Store::connect(&url, &PoolConfig::default())
        .await
        .expect("store");
    store.migrate_up().await.expect("migrate");
    let admin = store
        .create_user(
            &NewUser {
                username: "bench".into(),
                email: "bench@example.com".into(),
                password: "bench-password".into(),
                role: Role::Admin,
                must_change_password: false,
            },
            &Actor::system(),
        )
        .await
        .unwrap();
    let yaml = "- hosts: all\n  gather_facts: false\n  tasks: []\n";
    let pb_path = dir.path().join("bench.yml");
    std::fs::write(&pb_path, yaml).unwrap();
    let bench_playbook = store
        .create_playbook(
            &NewPlaybook {
                name: "bench".into(),
                description: None,
                file_path: pb_path.display().to_string(),
                file_hash: hex::encode(Sha256::digest(yaml.as_bytes())),
                tags: None,
                variables: None,
            },
            &Actor::user(admin.id),
        )
        .await
        .unwrap();
    for i in 0..launches {
        store
            .create_server(
                &NewServer::new(&format!("node{i:05}"), "127.0.0.1", "linux"),
                &Actor::system(),
            )
            .await
            .unwrap();
    }
    // Part 1b's servers: each controller's own, by their `dc` routing tag, so that a run's
    // jobs are placed on its controller's agent only.
    let wave_servers = if launches > 1 { WAVE_SERVERS } else { 0 };
    for dc in ["a", "b"] {
        for i in 0..wave_servers {
            let mut new = NewServer::new(&format!("wave-{dc}-{i:03}"), "127.0.0.1", "linux");
            new.tags = Some(serde_json::json!({ "dc": dc }));
            store.create_server(&new, &Actor::system()).await.unwrap();
        }
    }
    // Two controllers on the one database, side by side: one as configured by default (a
    // one-server launch claims its job in its own transaction), one with
    // `--no-claim-at-launch` (the job waits for the scheduler's round). Each has its own agent.
    let (mut ctl, api, agent_port, api_port, token) =
        spawn_controller(bin, dir.path(), &url, &[]).await;
    // The second controller's way of committing, unless the environment names another (to
    // set one batching apart from the other).
    let b_args = std::env::var("OUTPOST_BENCH_B_ARGS")
        .unwrap_or_else(|_| "--claims-per-commit 1 --outcomes-per-commit 1".into());
    let b_args: Vec<&str> = std::iter::once("--no-claim-at-launch")
        .chain(b_args.split_whitespace())
        .collect();
    let (mut ctl_b, api_b, agent_port_b, _, _) =
        spawn_controller(bin, dir.path(), &url, &b_args).await;

    // The agents: take every assignment at once, note when it arrived, and finish it.
    let arrivals: Arc<Mutex<HashMap<uuid::Uuid, Instant>>> = Default::default();
    let finished: Arc<Mutex<HashMap<uuid::Uuid, Instant>>> = Default::default();
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<uuid::Uuid>();
    let times = Times {
        arrivals: arrivals.clone(),
        finished: finished.clone(),
        arrived: arrived_tx.clone(),
    };
    let _agent = agent(&store, &ca, "bench-a", "a", agent_port, &times).await;
    let _agent_b = agent(&store, &ca, "bench-b", "b", agent_port_b, &times).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. launch → assignment, the two controllers taking turns.
    let mut post = [Vec::with_capacity(launches), Vec::with_capacity(launches)];
    let mut dispatch = [Vec::with_capacity(launches), Vec::with_capacity(launches)];
    for i in 0..launches {
        let which = i % 2;
        let client = if which == 0 { &api } else { &api_b };
        let t0 = Instant::now();
        let r: outpost_api::LaunchResponse = client
            .post(
                "/api/v1/jobs",
                &serde_json::json!({"playbook": "bench", "servers": [format!("node{i:05}")]}),
            )
            .await
            .expect("launch");
        post[which].push(ms(t0.elapsed()));
        let job = uuid::Uuid::parse_str(&r.jobs[0].id).unwrap();
        loop {
            if let Some(at) = arrivals.lock().await.get(&job) {
                dispatch[which].push(ms(at.duration_since(t0)));
                break;
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv()).await;
        }
    }
    let [post, post_b] = post;
    let [dispatch, dispatch_b] = dispatch;
    let n = post.len();
    let (p50, p99, max) = percentiles(post);
    println!("POST /api/v1/jobs (201 returned):      p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms  ({n} launches)");
    let (p50, p99, max) = percentiles(dispatch);
    println!("launch -> assignment at the agent:     p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms");
    if !post_b.is_empty() {
        let n = post_b.len();
        let (p50, p99, max) = percentiles(post_b);
        println!("  --no-claim-at-launch, POST answered:  p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms  ({n} launches)");
        let (p50, p99, max) = percentiles(dispatch_b);
        println!("  --no-claim-at-launch, at the agent:   p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms");
    }
    // 1b. A run's waves through the scheduler's round: each controller launches runs of
    // WAVE_SERVERS servers in waves of WAVE_SIZE, taking turns. Wave 1 is timed from the
    // launch, each later wave from the moment the agent sent the previous wave's last
    // outcome; a wave's jobs are told apart by arrival order (the next wave cannot start
    // before the previous one is over).
    if wave_servers > 0 {
        let runs = env_num("OUTPOST_BENCH_WAVE_RUNS", 10);
        let mut first = [Vec::new(), Vec::new()];
        let mut next = [Vec::new(), Vec::new()];
        let mut whole = [Vec::new(), Vec::new()];
        for r in 0..2 * runs {
            let which = r % 2;
            let (client, dc) = if which == 0 {
                (&api, "a")
            } else {
                (&api_b, "b")
            };
            let servers: Vec<String> = (0..wave_servers)
                .map(|i| format!("wave-{dc}-{i:03}"))
                .collect();
            let t0 = Instant::now();
            let launched: outpost_api::LaunchResponse = client
                .post(
                    "/api/v1/jobs",
                    &serde_json::json!({
                        "playbook": "bench",
                        "servers": servers,
                        "rollout": { "batch": WAVE_SIZE.to_string() },
                    }),
                )
                .await
                .expect("launch a run");
            let jobs: Vec<uuid::Uuid> = launched
                .jobs
                .iter()
                .map(|j| uuid::Uuid::parse_str(&j.id).unwrap())
                .collect();
            let mut at: Vec<(Instant, uuid::Uuid)>;
            loop {
                {
                    let arrived = arrivals.lock().await;
                    at = jobs
                        .iter()
                        .filter_map(|j| arrived.get(j).map(|t| (*t, *j)))
                        .collect();
                }
                if at.len() == jobs.len() {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(120),
                    "a run's assignments did not all arrive within 2 minutes"
                );
                let _ = tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv()).await;
            }
            at.sort();
            let done = finished.lock().await;
            for (w, wave) in at.chunks(WAVE_SIZE).enumerate() {
                let from = if w == 0 {
                    t0
                } else {
                    // The previous wave's last outcome, as its agent sent it.
                    at[(w - 1) * WAVE_SIZE..w * WAVE_SIZE]
                        .iter()
                        .filter_map(|(_, j)| done.get(j).copied())
                        .max()
                        .expect("the previous wave's outcomes")
                };
                let times: Vec<f64> = wave
                    .iter()
                    .map(|(t, _)| ms(t.saturating_duration_since(from)))
                    .collect();
                whole[which].push(times.iter().copied().fold(0.0, f64::max));
                let into = if w == 0 { &mut first } else { &mut next };
                into[which].extend(times);
            }
        }
        println!(
            "a run's waves ({runs} runs per controller of {wave_servers} servers in waves of {WAVE_SIZE}):"
        );
        // The second controller also leaves one-server launches to the round, which changes
        // nothing here: a run of several servers always goes through the round.
        let b_name = match b_args[1..].join(" ") {
            n if n.is_empty() => "the same defaults".to_string(),
            n => n,
        };
        for (which, name) in [
            (0, "claims and outcomes in shared commits (default)"),
            (1, b_name.as_str()),
        ] {
            let (p50, p99, max) = percentiles(std::mem::take(&mut first[which]));
            println!("  {name}");
            println!("    launch -> wave 1's assignments:               p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms");
            let (p50, p99, max) = percentiles(std::mem::take(&mut next[which]));
            println!("    last outcome sent -> next wave's assignments: p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms");
            let (p50, p99, max) = percentiles(std::mem::take(&mut whole[which]));
            println!("    a wave's last assignment:                     p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms");
        }
    }

    let _ = ctl_b.kill();
    let _ = ctl_b.wait();

    // 1c. A schedule's slot → its job's assignment at the agent, on the first controller
    // alone (the second would fire half the slots, and leave their jobs to the round).
    let schedules = env_num("OUTPOST_BENCH_SCHEDULES", SCHEDULES).min(wave_servers);
    if schedules > 0 {
        let secs = env_num("OUTPOST_BENCH_SCHEDULE_SECS", 20);
        let latencies = schedules_to_agent(
            &store,
            &url,
            &api,
            &arrivals,
            &mut arrived_rx,
            bench_playbook.id,
            Actor::user(admin.id),
            schedules,
            secs,
        )
        .await;
        let n = latencies.len();
        let (p50, p99, max) = percentiles(latencies);
        println!(
            "schedule slot -> assignment at the agent: p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms  ({n} slots of {schedules} schedules firing every second for {secs} s)"
        );
    }

    if std::env::var_os("OUTPOST_BENCH_ONLY_LAUNCHES").is_some() {
        let _ = ctl.kill();
        let _ = ctl.wait();
        store.close().await;
        sqlx::query(&format!("DROP DATABASE {db_name}"))
            .execute(&mut admin_conn)
            .await
            .expect("drop database");
        return;
    }

    // 2. Reads with the tables at scale.
    let t = Instant::now();
    fill(&url, admin.id.0, jobs_total, log_lines, audit_rows).await;
    println!(
        "filled {jobs_total} jobs, {log_lines} log lines and {audit_rows} audit records in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let since = (chrono::Utc::now() - chrono::Duration::hours(24))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let reads = [
        ("GET /api/v1/jobs", "/api/v1/jobs".to_owned()),
        (
            "GET /api/v1/jobs?status=failed",
            "/api/v1/jobs?status=failed".to_owned(),
        ),
        (
            "GET /api/v1/jobs?since=24h ago",
            format!("/api/v1/jobs?since={since}"),
        ),
        (
            "GET /api/v1/jobs?offset=5000",
            "/api/v1/jobs?offset=5000".to_owned(),
        ),
    ];
    for (name, path) in &reads {
        let mut v = Vec::new();
        for _ in 0..200 {
            let t0 = Instant::now();
            let _: serde_json::Value = api.get(path).await.expect("read");
            v.push(ms(t0.elapsed()));
        }
        let (p50, p99, max) = percentiles(v);
        println!("{name:38} p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms");
    }
    let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
    let cutoff = (chrono::Utc::now() - chrono::Duration::hours(24)).naive_utc();
    let dashboards = [
        (
            "dashboard: jobs by status, 24 h",
            "SELECT status, COUNT(*) FROM jobs WHERE created_at >= ? GROUP BY status",
        ),
        (
            "dashboard: open tickets by priority",
            "SELECT priority, COUNT(*) FROM tickets WHERE status = 'open' GROUP BY priority",
        ),
    ];
    for (name, sql) in dashboards {
        let mut v = Vec::new();
        for _ in 0..200 {
            let t0 = Instant::now();
            let q = sqlx::query(sql);
            let q = if sql.contains('?') { q.bind(cutoff) } else { q };
            q.fetch_all(&mut conn).await.unwrap();
            v.push(ms(t0.elapsed()));
        }
        let (p50, p99, max) = percentiles(v);
        println!("{name:38} p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms");
    }
    let ui = reqwest::Client::builder()
        .use_preconfigured_tls(outpost_api::client::tls_config(&ca_pem).unwrap())
        .build()
        .unwrap();
    side_by_side(
        &api,
        &ui,
        &format!("https://127.0.0.1:{api_port}"),
        &token,
        &store,
        &mut conn,
    )
    .await;
    println!("EXPLAIN (the queries behind the reads above):");
    let explains = [
        "SELECT id FROM jobs ORDER BY created_at DESC, id DESC LIMIT 50",
        "SELECT id FROM jobs WHERE status = 'failed' ORDER BY created_at DESC, id DESC LIMIT 50",
        "SELECT COUNT(*) FROM jobs WHERE status = 'failed'",
        "SELECT status, COUNT(*) FROM jobs WHERE created_at >= NOW() - INTERVAL 1 DAY GROUP BY status",
        "SELECT line_number FROM job_logs WHERE job_id = 1 AND line_number > 0 ORDER BY line_number LIMIT 1000",
        "SELECT COUNT(*) FROM (SELECT 1 FROM jobs j LIMIT 10001) counted",
        "SELECT j.id FROM jobs j WHERE j.created_at <= NOW() - INTERVAL 15 DAY AND (j.created_at < NOW() - INTERVAL 15 DAY OR j.id < 50000) ORDER BY j.created_at DESC, j.id DESC LIMIT 50",
        "SELECT id FROM audit_logs WHERE timestamp <= NOW() - INTERVAL 1 DAY AND (timestamp < NOW() - INTERVAL 1 DAY OR id < 50000) ORDER BY timestamp DESC, id DESC LIMIT 50",
        "SELECT priority, COUNT(*) FROM tickets WHERE status = 'open' GROUP BY priority",
    ];
    for sql in explains {
        let rows = sqlx::query(&format!("EXPLAIN {sql}"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for r in rows {
            use sqlx::Row;
            let key: Option<String> = r.try_get("key").ok().flatten();
            let rows_est: Option<u64> =
                r.try_get::<Option<u64>, _>("rows")
                    .ok()
                    .flatten()
                    .or_else(|| {
                        r.try_get::<Option<i64>, _>("rows")
                            .ok()
                            .flatten()
                            .map(|v| v.max(0) as u64)
                    });
            let extra: Option<String> = r.try_get("Extra").ok().flatten();
            println!(
                "  key={:<28} rows≈{:<8} {:<40} {sql}",
                key.unwrap_or_else(|| "(none)".into()),
                rows_est.unwrap_or(0),
                extra.unwrap_or_default()
            );
        }
    }

    let _ = ctl.kill();
    let _ = ctl.wait();
    store.close().await;
    let _ = conn.close().await;
    sqlx::query(&format!("DROP DATABASE {db_name}"))
        .execute(&mut admin_conn)
        .await
        .unwrap();
}

/// Part 1c: `schedules` schedules firing every second, each a template of one of the first
/// controller's servers, for `secs` seconds; then disabled. Returns, for every fired slot, the
/// time from the slot to its job's assignment at the agent (ms). A schedule's jobs are paired
/// with its fired slots in order: one job per slot, every slot of a schedule after the other.
#[allow(clippy::too_many_arguments)]
async fn schedules_to_agent(
    store: &Store,
    url: &str,
    api: &Client,
    arrivals: &Mutex<HashMap<uuid::Uuid, Instant>>,
    arrived_rx: &mut mpsc::UnboundedReceiver<uuid::Uuid>,
    playbook: outpost_controller::model::PlaybookId,
    actor: Actor,
    schedules: usize,
    secs: usize,
) -> Vec<f64> {
    use outpost_controller::store::templates::NewTemplate;
    // Arrivals are instants; slots are wall-clock times.
    let (clock, wall) = (Instant::now(), chrono::Utc::now());
    for i in 0..schedules {
        let name = format!("sched-{i}");
        store
            .create_template(
                &NewTemplate::of_playbook(&name, playbook, &[&format!("wave-a-{i:03}")]),
                &actor,
            )
            .await
            .expect("template");
        let _: serde_json::Value = api
            .post(
                "/api/v1/schedules",
                &serde_json::json!({"name": name, "template": name, "cron": "* * * * * *", "overlap": "queue"}),
            )
            .await
            .expect("schedule");
    }
    tokio::time::sleep(Duration::from_secs(secs as u64)).await;
    for i in 0..schedules {
        let _: serde_json::Value = api
            .patch(
                &format!("/api/v1/schedules/sched-{i}"),
                &serde_json::json!({"enabled": false}),
            )
            .await
            .expect("disable");
    }
    let mut latencies = Vec::new();
    let pool = sqlx::MySqlPool::connect(url).await.expect("pool");
    // A fired run is written in its job's commit: every job has its slot.
    for i in 0..schedules {
        let name = format!("sched-{i}");
        let slots: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT r.slot_at FROM schedule_runs r JOIN schedules s ON s.id = r.schedule_id \
             WHERE s.name = ? AND r.status = 'fired' ORDER BY r.slot_at",
        )
        .bind(&name)
        .fetch_all(&pool)
        .await
        .expect("slots");
        let jobs: Vec<String> = sqlx::query_scalar(
            "SELECT j.job_id FROM jobs j JOIN schedules s ON s.id = j.schedule_id \
             WHERE s.name = ? ORDER BY j.id",
        )
        .bind(&name)
        .fetch_all(&pool)
        .await
        .expect("jobs");
        assert_eq!(slots.len(), jobs.len(), "one job per fired slot of {name}");
        for (slot, job) in slots.iter().zip(&jobs) {
            let job = uuid::Uuid::parse_str(job).expect("a job's uuid");
            let at = loop {
                if let Some(at) = arrivals.lock().await.get(&job) {
                    break *at;
                }
                assert!(
                    clock.elapsed() < Duration::from_secs(secs as u64 + 120),
                    "a scheduled job's assignment never arrived"
                );
                if let Ok(None) =
                    tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv()).await
                {
                    panic!("the agents stopped reporting arrivals");
                }
            };
            let arrived = wall
                + chrono::Duration::from_std(at.saturating_duration_since(clock))
                    .unwrap_or_default();
            latencies
                .push((arrived - *slot).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
        }
    }
    pool.close().await;
    latencies
}

/// Jobs spread over 30 days and all states, a ticket for each failure, and log lines for the
/// first jobs, written with raw multi-row INSERTs.
async fn fill(url: &str, user: i32, jobs: usize, lines: usize, audit: usize) {
    let mut conn = sqlx::MySqlConnection::connect(url).await.unwrap();
    let (pb,): (i32,) = sqlx::query_as("SELECT id FROM playbooks LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (server,): (i32,) = sqlx::query_as("SELECT id FROM servers LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let now = chrono::Utc::now().naive_utc();
    let statuses = [
        "success",
        "success",
        "success",
        "failed",
        "cancelled",
        "running",
        "pending",
    ];
    let mut done = 0;
    while done < jobs {
        let n = (jobs - done).min(2000);
        let mut qb = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO jobs (job_id, playbook_id, server_id, user_id, status, created_at) ",
        );
        qb.push_values(0..n, |mut b, i| {
            let k = done + i;
            let age = chrono::Duration::seconds(((k * 7919) % (30 * 86400)) as i64);
            b.push_bind(uuid::Uuid::new_v4().to_string())
                .push_bind(pb)
                .push_bind(server)
                .push_bind(user)
                .push_bind(statuses[k % statuses.len()])
                .push_bind(now - age);
        });
        qb.build()
            .persistent(false)
            .execute(&mut conn)
            .await
            .unwrap();
        done += n;
    }
    sqlx::query(
        "INSERT INTO tickets (ticket_id, job_id, created_by, title, status, priority, created_at, updated_at) \
         SELECT UUID(), id, user_id, 'Job failed', IF(id % 3 = 0, 'resolved', 'open'), \
         ELT(1 + id % 4, 'low', 'medium', 'high', 'critical'), created_at, created_at FROM jobs WHERE status = 'failed'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // Audit records a second apart going back from now, as launches would leave them.
    if audit > 0 {
        sqlx::query(&format!(
            "INSERT INTO audit_logs (user_id, action, resource_type, resource_id, details, timestamp) \
             SELECT ?, 'LAUNCH', 'job', seq, '{{}}', ? - INTERVAL seq SECOND FROM seq_1_to_{audit}"
        ))
        .bind(user)
        .bind(now)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let per_job = 1000usize;
    let (first,): (i32,) = sqlx::query_as("SELECT MIN(id) FROM jobs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let mut written = 0;
    let text =
        "ok: [web1] => {\"msg\": \"a line of about eighty bytes of ordinary ansible output\"}";
    while written < lines {
        let mut tx = conn.begin().await.unwrap();
        for _ in 0..5 {
            let n = (lines - written).min(1000);
            if n == 0 {
                break;
            }
            let mut qb = sqlx::QueryBuilder::<sqlx::MySql>::new(
                "INSERT INTO job_logs (job_id, line_number, content, log_level, timestamp) ",
            );
            qb.push_values(0..n, |mut b, i| {
                let k = written + i;
                b.push_bind(first + (k / per_job) as i32)
                    .push_bind((k % per_job) as i32 + 1)
                    .push_bind(text)
                    .push_bind("INFO")
                    .push_bind(now);
            });
            qb.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .unwrap();
            written += n;
        }
        tx.commit().await.unwrap();
    }
}

/// p50/p99/max of `n` runs of `f`, in ms.
async fn timed<F, Fut>(n: usize, mut f: F) -> (f64, f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        f().await;
        v.push(ms(t0.elapsed()));
    }
    percentiles(v)
}

/// p50/p99/max of `n` runs of `statements` one after another on `conn`, as the request
/// sends them, in ms.
async fn timed_sql(
    n: usize,
    conn: &mut sqlx::MySqlConnection,
    statements: &[String],
) -> (f64, f64, f64) {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        for sql in statements {
            sqlx::query(sql).fetch_all(&mut *conn).await.expect(sql);
        }
        v.push(ms(t0.elapsed()));
    }
    percentiles(v)
}

/// Section 3: each page through the API, then the statements the controller sends for it on
/// a direct connection, both timed here in the same run.
async fn side_by_side(
    api: &Client,
    ui: &reqwest::Client,
    base: &str,
    token: &str,
    store: &Store,
    conn: &mut sqlx::MySqlConnection,
) {
    use outpost_controller::model::Cursor;
    const N: usize = 200;
    let at = |t: chrono::NaiveDateTime| t.format("'%Y-%m-%d %H:%M:%S'").to_string();
    let (deep_at, deep_id): (chrono::NaiveDateTime, i32) = sqlx::query_as(
        "SELECT created_at, id FROM jobs ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET 50000",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("a job 50,000 deep (OUTPOST_BENCH_JOBS too small?)");
    let job_cursor = Cursor::new(deep_at, deep_id.into()).encode();
    let audit_deep: Option<(chrono::NaiveDateTime, i64)> = sqlx::query_as(
        "SELECT timestamp, id FROM audit_logs ORDER BY timestamp DESC, id DESC LIMIT 1 OFFSET 50000",
    )
    .fetch_optional(&mut *conn)
    .await
    .unwrap();
    let (audit_at, audit_id) = audit_deep.unwrap_or((deep_at, 1));
    let audit_cursor = Cursor::new(audit_at, audit_id).encode();
    let (log_job, log_uuid): (i32, String) = sqlx::query_as(
        "SELECT j.id, j.job_id FROM jobs j WHERE j.id = (SELECT job_id FROM job_logs ORDER BY id DESC LIMIT 1)",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("a job with log lines");

    const JOB_COLS: &str = "j.id, j.job_id, j.playbook_id, j.server_id, j.user_id, j.status, j.celery_task_id, \
        j.extra_vars, j.error_message, j.started_at, j.completed_at, j.created_at, j.agent_id, j.assigned_at, \
        j.cancel_requested_at, j.exit_code, j.pending_reason, j.run_options, j.extra_vars_templated, \
        j.revision_id, j.template_id, j.time_limit_secs, j.run_id, j.wave, j.unreachable, \
        p.name, s.hostname, a.name, t.name, r.project_id, pr.name, r.digest, r.git_commit, r.size_bytes, \
        r.entries, r.created_at";
    const JOB_FROM: &str = "jobs j LEFT JOIN playbooks p ON p.id = j.playbook_id \
        LEFT JOIN servers s ON s.id = j.server_id LEFT JOIN agents a ON a.id = j.agent_id \
        LEFT JOIN job_templates t ON t.id = j.template_id \
        LEFT JOIN project_revisions r ON r.id = j.revision_id LEFT JOIN projects pr ON pr.id = r.project_id";
    const AUDIT_COLS: &str =
        "id, user_id, action, resource_type, resource_id, details, ip_address, user_agent, timestamp";
    let job_count = "SELECT COUNT(*) FROM (SELECT 1 FROM jobs j LIMIT 10001) counted".to_owned();
    let audit_count =
        "SELECT COUNT(*) FROM (SELECT 1 FROM audit_logs LIMIT 10001) counted".to_owned();
    let now = chrono::Utc::now().naive_utc();
    let day_ago = at(now - chrono::Duration::hours(24));
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "GET /api/v1/jobs (first page of 50)",
            "/api/v1/jobs?limit=50".into(),
            vec![
                format!("SELECT {JOB_COLS} FROM {JOB_FROM} ORDER BY j.created_at DESC, j.id DESC LIMIT 50 OFFSET 0"),
                job_count.clone(),
            ],
        ),
        (
            "GET /api/v1/jobs?after=<50,000 deep>",
            format!("/api/v1/jobs?limit=50&after={job_cursor}"),
            vec![
                format!(
                    "SELECT {JOB_COLS} FROM {JOB_FROM} WHERE j.created_at <= {t} AND (j.created_at < {t} OR j.id < {deep_id}) \
                     ORDER BY j.created_at DESC, j.id DESC LIMIT 50",
                    t = at(deep_at)
                ),
                job_count.clone(),
            ],
        ),
        (
            "GET /api/v1/jobs?status=failed",
            "/api/v1/jobs?status=failed&limit=50".into(),
            vec![
                format!("SELECT {JOB_COLS} FROM {JOB_FROM} WHERE j.status = 'failed' ORDER BY j.created_at DESC, j.id DESC LIMIT 50 OFFSET 0"),
                "SELECT COUNT(*) FROM (SELECT 1 FROM jobs j WHERE j.status = 'failed' LIMIT 10001) counted".into(),
            ],
        ),
        (
            "GET /api/v1/audit (first page of 50)",
            "/api/v1/audit?limit=50".into(),
            vec![
                format!("SELECT {AUDIT_COLS} FROM audit_logs ORDER BY timestamp DESC, id DESC LIMIT 50 OFFSET 0"),
                audit_count.clone(),
            ],
        ),
        (
            "GET /api/v1/audit?after=<50,000 deep>",
            format!("/api/v1/audit?limit=50&after={audit_cursor}"),
            vec![
                format!(
                    "SELECT {AUDIT_COLS} FROM audit_logs WHERE timestamp <= {t} AND (timestamp < {t} OR id < {audit_id}) \
                     ORDER BY timestamp DESC, id DESC LIMIT 50",
                    t = at(audit_at)
                ),
                audit_count.clone(),
            ],
        ),
        (
            "GET /api/v1/jobs/{id}/logs (1,000 lines)",
            format!("/api/v1/jobs/{log_uuid}/logs?after=0&limit=1000"),
            vec![
                format!("SELECT *, EXISTS (SELECT 1 FROM job_log_archives a WHERE a.job_id = jobs.id) FROM jobs WHERE job_id = '{log_uuid}'"),
                // One row past the page tells whether lines follow it.
                format!("SELECT line_number, content, log_level, timestamp FROM job_logs WHERE job_id = {log_job} AND line_number > 0 ORDER BY line_number LIMIT 1001"),
            ],
        ),
    ];
    println!(
        "pages at size, each beside the SQL it sends, request and statements taking turns \
         (p50 / p99 / max over {N}); `server` is the controller's own histogram of the same \
         requests (auth, handler, serialising), in its buckets:"
    );
    let metrics =
        |route: &'static str| async move { server_histogram(ui, base, token, "GET", route).await };
    for (name, path, statements) in &cases {
        let route = route_of(path);
        let before = metrics(route).await;
        let (mut api_ms, mut sql_ms) = (Vec::with_capacity(N), Vec::with_capacity(N));
        for _ in 0..N {
            let t0 = Instant::now();
            let _: serde_json::Value = api.get(path).await.expect("read");
            api_ms.push(ms(t0.elapsed()));
            let t0 = Instant::now();
            for sql in statements {
                sqlx::query(sql).fetch_all(&mut *conn).await.expect(sql);
            }
            sql_ms.push(ms(t0.elapsed()));
        }
        let server = histogram_delta(&before, &metrics(route).await);
        let (p50, p99, max) = percentiles(api_ms);
        println!("  API  {name:44} p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms");
        println!("       server: {server}");
        let (p50, p99, max) = percentiles(sql_ms);
        println!(
            "  SQL  {:44} p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms",
            format!("({} statements)", statements.len())
        );
        for sql in statements {
            println!("         {}", &sql[..sql.len().min(160)]);
        }
    }

    // The dashboard: the page as a browser gets it, then its statements.
    let cookie = format!("outpost_session={token}");
    let before = metrics("/").await;
    let (p50, p99, max) = timed(N, || async {
        let r = ui
            .get(format!("{base}/"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("dashboard");
        assert!(r.status().is_success(), "dashboard: {}", r.status());
        let _ = r.bytes().await;
    })
    .await;
    println!(
        "  API  {:44} p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms",
        "GET / (dashboard, charts cached 15 s)"
    );
    println!(
        "       server: {}",
        histogram_delta(&before, &metrics("/").await)
    );
    let dashboard = vec![
        format!("SELECT status, COUNT(*) FROM jobs WHERE created_at >= {day_ago} GROUP BY status"),
        "SELECT status, COUNT(*) FROM jobs WHERE status IN ('pending', 'running') GROUP BY status".into(),
        "SELECT priority, COUNT(*) FROM tickets WHERE status IN ('open', 'in_progress') GROUP BY priority".into(),
        "SELECT * FROM agents ORDER BY name LIMIT 1000 OFFSET 0".into(),
        "SELECT COUNT(*) FROM agents".into(),
        format!("SELECT {JOB_COLS} FROM {JOB_FROM} WHERE j.status = 'failed' ORDER BY j.created_at DESC, j.id DESC LIMIT 5 OFFSET 0"),
        "SELECT COUNT(*) FROM (SELECT 1 FROM jobs j WHERE j.status = 'failed' LIMIT 10001) counted".into(),
    ];
    let (p50, p99, max) = timed_sql(N, conn, &dashboard).await;
    println!(
        "  SQL  {:44} p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms",
        format!("({} statements)", dashboard.len())
    );
    for sql in &dashboard {
        println!("         {}", &sql[..sql.len().min(160)]);
    }
    // The charts' reads, as the page makes them when its cache is stale: through the store.
    let since = chrono::Utc::now() - chrono::Duration::hours(168);
    let (p50, p99, max) = timed(20, || async {
        store.jobs_per_hour(since).await.unwrap();
        store
            .outcomes_per_datacenter(since, "dc", 1_000)
            .await
            .unwrap();
        store.recent_durations(since, 5_000).await.unwrap();
    })
    .await;
    println!(
        "  SQL  {:44} p50 {p50:7.2} ms  p99 {p99:7.2} ms  max {max:7.2} ms",
        "dashboard charts uncached (3 store reads, 7 d)"
    );
}

/// The route label the controller's metrics give a request path.
fn route_of(path: &str) -> &'static str {
    if path.starts_with("/api/v1/audit") {
        "/api/v1/audit"
    } else if path.contains("/logs") {
        "/api/v1/jobs/{job_id}/logs"
    } else {
        "/api/v1/jobs"
    }
}

/// The controller's request-duration histogram of one route (cumulative counts by bucket).
async fn server_histogram(
    ui: &reqwest::Client,
    base: &str,
    token: &str,
    method: &str,
    route: &str,
) -> Vec<(String, u64)> {
    let text = ui
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics text");
    let want = format!(
        "outpost_http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",status=\"200\",le=\""
    );
    text.lines()
        .filter_map(|l| l.strip_prefix(want.as_str()))
        .filter_map(|rest| {
            let (le, n) = rest.split_once("\"} ")?;
            Some((le.to_owned(), n.trim().parse().ok()?))
        })
        .collect()
}

/// How many requests landed in each bucket between two scrapes, as `≤ 10 ms: 180, …`.
fn histogram_delta(before: &[(String, u64)], after: &[(String, u64)]) -> String {
    let count = |h: &[(String, u64)], le: &str| {
        h.iter()
            .find(|(l, _)| l == le)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    let mut below = 0;
    let mut parts = Vec::new();
    for (le, _) in after {
        let n = count(after, le) - count(before, le);
        if n > below {
            let label = match le.parse::<f64>() {
                Ok(s) => format!("≤ {} ms", s * 1000.0),
                Err(_) => "longer".to_owned(),
            };
            parts.push(format!("{label}: {}", n - below));
            below = n;
        }
    }
    parts.join(", ")
}

/// Starts `outpost-controller serve` on `data_dir` with its ports on loopback, waits until it
/// is ready and signs in; gives the process, an API client with the session's token, the
/// agent port, the API port and the token.
async fn spawn_controller(
    bin: &str,
    data_dir: &std::path::Path,
    url: &str,
    extra: &[&str],
) -> (std::process::Child, Client, u16, u16, String) {
    let free = || {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (agent_port, enroll_port) = (free(), free());
    // `OUTPOST_BENCH_LOG_DIR`: each controller's log at info, to see where a figure's time
    // went (it costs some of it).
    let log = std::env::var_os("OUTPOST_BENCH_LOG_DIR").map(|d| {
        std::fs::File::create(std::path::Path::new(&d).join(format!("controller-{agent_port}.log")))
            .expect("a log file")
    });
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ctl = Command::new(bin)
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--database-url", url])
        .args(["--listen", &format!("127.0.0.1:{agent_port}")])
        .args(["--enroll-listen", &format!("127.0.0.1:{enroll_port}")])
        .args(["--api-listen", &format!("127.0.0.1:{api_port}")])
        .args(extra)
        .env("OUTPOST_LOG", if log.is_some() { "info" } else { "warn" })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.map_or_else(Stdio::null, Stdio::from))
        .spawn()
        .expect("serve");
    let ca_pem = std::fs::read_to_string(data_dir.join("pki/ca.pem")).unwrap();
    let api = Client::new(&format!("https://127.0.0.1:{api_port}"), &ca_pem).unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if api.get::<serde_json::Value>("/readyz").await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "controller not ready");
    let login: serde_json::Value = api
        .post(
            "/api/v1/auth/login",
            &serde_json::json!({"username": "bench", "password": "bench-password"}),
        )
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    (ctl, api.with_token(&token), agent_port, api_port, token)
}

/// An agent enrolled through the store, with a certificate from the CA, in a real mTLS QUIC
/// session to `port`: it takes every assignment at once, notes when it arrived, and finishes
/// it. Gives the connection (the session lives while it is held).
async fn agent(
    store: &Store,
    ca: &Ca,
    name: &str,
    dc: &str,
    port: u16,
    times: &Times,
) -> quinn::Connection {
    let token = EnrollToken::generate(&ca.fingerprint());
    store
        .create_enrollment_token(
            &NewEnrollmentToken {
                secret_hash: EnrollToken::secret_hash(&token.secret),
                name: name.into(),
                labels: serde_json::json!({ "dc": dc }),
                expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
            },
            &Actor::system(),
        )
        .await
        .unwrap();
    let uuid = uuid::Uuid::new_v4();
    store
        .enroll_agent(
            &EnrollToken::secret_hash(&token.secret),
            &uuid.to_string(),
            &Default::default(),
            name,
        )
        .await
        .unwrap();
    let key = AgentKey::generate().unwrap();
    let cert = ca
        .sign_agent_csr(&key.csr(name).unwrap(), uuid, Duration::from_secs(86400))
        .unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let cfg = tls::agent_client_config(
        ca.cert_der(),
        vec![cert],
        key.private_key_der(),
        Timers::default(),
    )
    .unwrap();
    let conn = endpoint
        .connect_with(
            cfg,
            format!("127.0.0.1:{port}").parse().unwrap(),
            "localhost",
        )
        .unwrap()
        .await
        .expect("handshake");
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut session = FramedStream::new(recv, send);
    session
        .send(&Up::Hello(Hello {
            protocol_version: outpost_protocol::PROTOCOL_VERSION,
            agent_version: "bench".into(),
            hostname: name.into(),
            labels: vec![],
            capacity: 100,
            ansible_version: "none".into(),
            running: vec![],
            capabilities: vec![],
        }))
        .await
        .unwrap();
    let Some(Down::Welcome(_)) = session.recv::<Down>().await.unwrap() else {
        panic!("no Welcome")
    };
    tokio::spawn(async move {
        let mut seq = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            seq += 1;
            if session.send(&Up::Heartbeat { seq }).await.is_err() {
                return;
            }
            let _ = session.recv::<Down>().await;
        }
    });
    let (c, times) = (conn.clone(), times.clone());
    tokio::spawn(async move {
        while let Ok((mut send, recv)) = c.accept_bi().await {
            let times = times.clone();
            tokio::spawn(async move {
                let mut reader = codec::spawn_reader::<_, JobDown>(recv, codec::MAX_FRAME);
                let Some(Ok(JobDown::Assign(a))) = reader.recv().await else {
                    return;
                };
                times.arrivals.lock().await.insert(a.job, Instant::now());
                let _ = times.arrived.send(a.job);
                let at_ms = chrono::Utc::now().timestamp_millis();
                for m in [
                    JobUp::Accept { job: a.job },
                    JobUp::Started { job: a.job, at_ms },
                    JobUp::Finished(Finished {
                        job: a.job,
                        status: FinalStatus::Success,
                        exit_code: Some(0),
                        error: None,
                        last_line: 0,
                        last_result: 0,
                        recap: None,
                    }),
                ] {
                    if codec::write_frame(&mut send, &m, codec::MAX_FRAME)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                times.finished.lock().await.insert(a.job, Instant::now());
                let _ = reader.recv().await; // FinishAck
            });
        }
    });
    conn
}
