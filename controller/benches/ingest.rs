//! Log ingest throughput, measured side by side in one run on the same database:
//!
//! 1. `raw`: plain multi-row INSERTs through sqlx (1,000 rows a statement, 5,000 a
//!    transaction), what the database takes when nothing else is done: the lines of one job,
//!    and (`raw/8`, measured just before the ingest task) the rows the ingest task is given,
//!    in the order it gets them: 8 jobs' 500-line batches, a batch of each in turn;
//! 2. `insert`: `Store::insert_log_lines` on its INSERT path (`INSERT IGNORE`), same flush
//!    size;
//! 3. `bulk` (MariaDB only): `Store::insert_log_lines` on its bulk path (`LOAD DATA LOCAL
//!    INFILE … IGNORE` fed from memory), same flush size;
//! 4. `ingest`: the ingest task fed 8 jobs' 500-line batches, a batch of each job in turn,
//!    each job with a window of 16 batches awaiting their commits, as sessions do (everything
//!    but QUIC) — on the store's own path first (the bulk path on MariaDB), then on the
//!    INSERT path (MariaDB).
//!
//! Run: `cargo bench -p outpost-controller --bench ingest` (MariaDB on 127.0.0.1:3306 as root;
//! `OUTPOST_BENCH_LINES` sets the lines per run, default 200000).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use chrono::Utc;
use outpost_controller::model::{JobId, Role};
use outpost_controller::store::audit::Actor;
use outpost_controller::store::jobs::NewJob;
use outpost_controller::store::logs::NewLogLine;
use outpost_controller::store::playbooks::NewPlaybook;
use outpost_controller::store::servers::NewServer;
use outpost_controller::store::users::NewUser;
use outpost_controller::{ingest, PoolConfig, Store};
use sqlx::{Connection, QueryBuilder};
use tokio_util::sync::CancellationToken;

const STREAMS: usize = 8;
const BATCH: usize = 500;

fn lines(job: JobId, n: usize) -> Vec<NewLogLine> {
    (1..=n)
        .map(|i| NewLogLine {
            job,
            line_number: i as i32,
            content: format!("ok: [web{:03}] => (item={i}) changed=false msg=\"line {i} of the benchmark output\"", i % 100),
            level: Some("INFO".into()),
            timestamp: Utc::now(),
        })
        .collect()
}

/// A job's `n` lines in batches of [`BATCH`], as a session hands them to the ingest task.
fn batches(job: JobId, n: usize) -> Vec<Vec<NewLogLine>> {
    let mut all = lines(job, n).into_iter();
    std::iter::from_fn(|| Some(all.by_ref().take(BATCH).collect::<Vec<_>>()))
        .take_while(|b| !b.is_empty())
        .collect()
}

/// `total` lines of [`STREAMS`] jobs as the ingest task gets them: a batch of each job in
/// turn.
fn as_ingest_gets_them(jobs: &[JobId], total: usize) -> Vec<Vec<NewLogLine>> {
    let mut per_job: Vec<_> = jobs
        .iter()
        .map(|&j| batches(j, total / jobs.len()).into_iter())
        .collect();
    let mut out = Vec::new();
    loop {
        let round: Vec<_> = per_job.iter_mut().filter_map(|b| b.next()).collect();
        if round.is_empty() {
            return out;
        }
        out.extend(round);
    }
}

async fn jobs(store: &Store, n: usize) -> Vec<JobId> {
    let admin = store
        .create_user(
            &NewUser {
                username: "bench".into(),
                email: "bench@example.com".into(),
                password: "benchmark-pw".into(),
                role: Role::Admin,
                must_change_password: false,
            },
            &Actor::system(),
        )
        .await
        .expect("user");
    let server = store
        .create_server(
            &NewServer::new("web1", "10.0.0.1", "debian"),
            &Actor::system(),
        )
        .await
        .expect("server");
    let pb = store
        .create_playbook(
            &NewPlaybook {
                name: "bench".into(),
                description: None,
                file_path: "/bench.yml".into(),
                file_hash: "a".repeat(64),
                tags: None,
                variables: None,
            },
            &Actor::system(),
        )
        .await
        .expect("playbook");
    let new: Vec<NewJob> = (0..n)
        .map(|_| NewJob {
            playbook_id: pb.id,
            server_id: server.id,
            user_id: admin.id,
            extra_vars: None,
            extra_vars_templated: false,
            run_options: None,
            revision_id: None,
            credential_ids: Vec::new(),
            job_uuid: outpost_controller::model::JobUuid::new_v4(),
            template_id: None,
            time_limit_secs: None,
            secret_vars: None,
            schedule_id: None,
            wave: 0,
        })
        .collect();
    store
        .create_jobs(&new, &Actor::system())
        .await
        .expect("jobs")
        .into_iter()
        .map(|j| j.id)
        .collect()
}

async fn run(label: &str, url: &str, total: usize) {
    let store = Store::connect(url, &PoolConfig::default())
        .await
        .expect("connect");
    store.migrate_up().await.expect("migrate");
    // Each phase its own jobs, in ascending ids in the order the phases run, so that each
    // one's rows go at the end of the job indexes, as the first raw run's do.
    let ids = jobs(&store, 3 + 3 * STREAMS).await;
    let inserts_only = store.clone().without_bulk_load();
    let bulk_too = store.writes_logs_in_bulk();

    // 1. raw multi-row INSERTs, straight through sqlx.
    let rows = lines(ids[0], total);
    // The same statements on either driver.
    macro_rules! raw_inserts {
        ($conn:expr, $rows:expr) => {{
            let mut conn = $conn;
            // Connected before the clock starts, as the store's pool is.
            let started = Instant::now();
            for tx_rows in $rows.chunks(5000) {
                let mut tx = conn.begin().await.expect("begin");
                for chunk in tx_rows.chunks(1000) {
                    let mut qb = QueryBuilder::new("INSERT INTO job_logs (job_id, line_number, content, log_level, timestamp) ");
                    qb.push_values(chunk, |mut b, l| {
                        b.push_bind(l.job).push_bind(l.line_number).push_bind(&l.content).push_bind(&l.level).push_bind(l.timestamp.naive_utc());
                    });
                    qb.build().persistent(false).execute(&mut *tx).await.expect("raw insert");
                }
                tx.commit().await.expect("commit");
            }
            started.elapsed()
        }};
    }
    // The rate of raw INSERTs of `$rows` on a connection of their own.
    macro_rules! raw_run {
        ($rows:expr) => {{
            let rows: Vec<NewLogLine> = $rows;
            let n = rows.len();
            let took = if url.starts_with("mysql") {
                raw_inserts!(
                    sqlx::MySqlConnection::connect(url).await.expect("raw conn"),
                    rows
                )
            } else {
                raw_inserts!(
                    sqlx::SqliteConnection::connect(url)
                        .await
                        .expect("raw conn"),
                    rows
                )
            };
            n as f64 / took.as_secs_f64()
        }};
    }
    let raw = raw_run!(rows);

    // 2. the store's idempotent multi-row INSERTs, same flush size.
    let rows = lines(ids[1], total);
    let t = Instant::now();
    for chunk in rows.chunks(5000) {
        inserts_only
            .insert_log_lines(chunk)
            .await
            .expect("store insert");
    }
    let via_insert = total as f64 / t.elapsed().as_secs_f64();

    // 3. the store's bulk path, same flush size.
    let via_bulk = if bulk_too {
        let rows = lines(ids[2], total);
        let t = Instant::now();
        for chunk in rows.chunks(5000) {
            store.insert_log_lines(chunk).await.expect("bulk load");
        }
        assert!(store.writes_logs_in_bulk(), "the server took LOCAL INFILE");
        Some(total as f64 / t.elapsed().as_secs_f64())
    } else {
        None
    };

    // 4. the ingest task, right after the raw INSERTs of the rows it is given, in its order:
    // several jobs' lines at once cost the database more than one job's (SQLite's index pages
    // split in the middle rather than grow at the end), and the table has grown since the
    // first raw run (MariaDB slows as it grows), so raw/8 is the yardstick on equal terms.
    // The store's own path goes first (the bulk path, on MariaDB): the INSERT path after it
    // meets a table 400,000 rows larger than raw/8 started on.
    let raw8 = raw_run!(as_ingest_gets_them(&ids[3..3 + STREAMS], total)
        .into_iter()
        .flatten()
        .collect());
    let first = ingest_run(store.clone(), &ids[3 + STREAMS..3 + 2 * STREAMS], total).await;
    let (ingest_insert, ingest_bulk) = if bulk_too {
        let insert = ingest_run(inserts_only, &ids[3 + 2 * STREAMS..], total).await;
        (insert, Some(first))
    } else {
        (first, None)
    };
    for id in &ids {
        let (max, count) = store.log_extent(*id).await.expect("extent");
        assert_eq!(max as i64, count, "no gap or duplicate");
    }
    store.close().await;
    let ratio = |v: Option<f64>| match v {
        Some(v) => format!("{v:>10.0} lines/s ({:>5.2}x raw)", v / raw),
        None => format!("{:>10} lines/s ({:>5}x raw)", "-", "-"),
    };
    println!(
        "{label:<8} raw {raw:>10.0} lines/s | insert {} | bulk {} | ingest/insert {} | ingest/bulk {}",
        ratio(Some(via_insert)),
        ratio(via_bulk),
        ratio(Some(ingest_insert)),
        ratio(ingest_bulk),
    );
    let ratio8 = |v: Option<f64>| match v {
        Some(v) => format!("{:>5.2}x raw/8", v / raw8),
        None => format!("{:>5}x raw/8", "-"),
    };
    println!(
        "{label:<8} raw/8 {raw8:>10.0} lines/s ({:>5.2}x raw) | ingest/insert {} | ingest/bulk {}",
        raw8 / raw,
        ratio8(Some(ingest_insert)),
        ratio8(ingest_bulk),
    );
    if let (Some(b), Some(ib)) = (via_bulk, ingest_bulk) {
        println!(
            "{label:<8} bulk / insert {:.2}x | ingest bulk / ingest insert {:.2}x",
            b / via_insert,
            ib / ingest_insert
        );
    }
}

/// The ingest task, fed the lines of [`STREAMS`] jobs in the order raw/8 inserts them (a batch
/// of each job in turn), each job with a window of batches awaiting their commits, as a job
/// stream has; returns lines/s.
async fn ingest_run(store: Store, ids: &[JobId], total: usize) -> f64 {
    let stop = CancellationToken::new();
    let (handle, task) = ingest::spawn(store.clone(), stop.clone());
    // Made before the clock starts, as the raw INSERTs' rows are, and handed over as a session
    // hands over what it decoded (moved, not copied): the figure is the ingest task's, not the
    // benchmark's making of the lines on the same two cores.
    let made = as_ingest_gets_them(ids, total);
    let n: usize = made.iter().map(Vec::len).sum();
    let flushes = outpost_controller::metrics::global().ingest_flushes.get();
    let mut windows: HashMap<JobId, VecDeque<ingest::Committed>> = HashMap::new();
    let t = Instant::now();
    for batch in made {
        let Some(job) = batch.first().map(|l| l.job) else {
            continue;
        };
        let window = windows.entry(job).or_default();
        window.push_back(handle.submit(batch).await.expect("submit"));
        if window.len() > 16 {
            let oldest = window.pop_front().expect("window");
            oldest.await.expect("committed");
        }
    }
    for window in windows.into_values() {
        for p in window {
            p.await.expect("committed");
        }
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    // Its flushes should be raw/8's transactions: full ones of 5,000 lines, the same ten
    // batches each.
    let flushes = outpost_controller::metrics::global().ingest_flushes.get() - flushes;
    println!(
        "  ingest: {n} lines in {flushes} flushes ({} lines each on average)",
        n as u64 / flushes.max(1)
    );
    drop(handle);
    stop.cancel();
    let _ = task.await;
    rate
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; nothing else is read from the command line.
    let total: usize = std::env::var("OUTPOST_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    println!(
        "log ingest, {total} lines per run, {STREAMS} streams of {BATCH}-line batches for ingest"
    );
    let server = std::env::var("OUTPOST_TEST_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let name = format!("outpost_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::MySqlConnection::connect(&server)
        .await
        .expect("MariaDB on 127.0.0.1:3306 (bash scripts/test starts it)");
    sqlx::query(&format!(
        "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    ))
    .execute(&mut admin)
    .await
    .expect("create db");
    run("mariadb", &format!("{server}/{name}"), total).await;
    sqlx::query(&format!("DROP DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("drop db");
    let dir = tempfile::tempdir().expect("dir");
    run(
        "sqlite",
        &format!("sqlite://{}", dir.path().join("bench.db").display()),
        total,
    )
    .await;
}
