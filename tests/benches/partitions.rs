//! Retention on partitions, measured: a month of job output removed by dropping its partition,
//! side by side in one run with the batch deletes retention does without partitions (1,000
//! lines a statement, oldest first), on the same MariaDB (127.0.0.1:3306, fresh databases).
//!
//! Run: `cargo test -p outpost-tests --bench partitions` (the database does the work, so a
//! debug build measures the same; `OUTPOST_BENCH_LINES`, default
//! 1,000,000 lines in the month).

use std::time::Instant;

use chrono::{TimeZone, Utc};
use outpost_controller::store::partitions::calendar::Month;
use outpost_controller::store::partitions::LoggedTable;
use outpost_tests::bench::{env_num, wanted};
use outpost_tests::db::TestDb;
use outpost_tests::world::World;
use serde_json::json;

const QUICK: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n";

/// `n` lines of about 80 bytes for `job`, stamped in January 2026, written by MariaDB itself
/// from its sequence engine (the fill is not what is measured).
async fn fill(db: &TestDb, job: i32, n: usize) -> f64 {
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let chunk = (n - done).min(500_000);
        db.exec(&format!(
            "INSERT INTO job_logs (job_id, line_number, content, log_level, timestamp) \
             SELECT {job}, seq + {done}, CONCAT('ok: [web1] => line ', seq + {done}, ' ', REPEAT('x', 50)), NULL, \
             '2026-01-15 12:00:00' FROM seq_1_to_{chunk}"
        ))
        .await;
        done += chunk;
    }
    started.elapsed().as_secs_f64()
}

async fn world_with_job(db: &TestDb) -> (World, i32) {
    let w = World::new(&db.url).await;
    let server = w.local_server("web1", json!({}), "dev").await;
    let pb = w.playbook("quick", QUICK).await;
    let job = w.launch(&pb, &server).await;
    (w, job.id.0)
}

#[tokio::main]
async fn main() {
    let lines = env_num("OUTPOST_BENCH_LINES", 1_000_000);
    println!("a month of {lines} lines of job output on MariaDB");
    // `OUTPOST_BENCH=drop` (or `=batches`) for one side only: at 10 M lines the batch deletes
    // take hours here.
    let batches = if wanted("batches") {
        Some(batch_deletes(lines).await)
    } else {
        None
    };
    if !wanted("drop") {
        return;
    }
    // Partitioned: the month is its own partition, dropped whole.
    let db = TestDb::mariadb().await;
    let (w, job) = world_with_job(&db).await;
    let january = Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap();
    w.store
        .enable_partitions(january, 2, |_| {})
        .await
        .expect("partition");
    let filled = fill(&db, job, lines).await;
    let month = Month::of(january).partition_name();
    let contents = w
        .store
        .partition_contents(LoggedTable::JobLogs, &month)
        .await
        .expect("contents");
    assert_eq!(
        contents.rows as usize, lines,
        "the month's lines are in {month}"
    );
    let started = Instant::now();
    w.store
        .drop_partition(LoggedTable::JobLogs, &month)
        .await
        .expect("drop");
    let dropped = started.elapsed().as_secs_f64();
    let pool = sqlx_pool(&db).await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_logs")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 0);
    pool.close().await;
    w.store.close().await;
    println!("  drop partition {month}: filled in {filled:.1} s; removed in {dropped:.3} s with one ALTER TABLE … DROP PARTITION");
    if let Some(batches) = batches {
        println!(
            "  batch deletes / drop partition: {:.0}× (without retention's sleeps)",
            batches / dropped.max(1e-6)
        );
    }
}

/// Retention without partitions, as it was: `DELETE … ORDER BY id LIMIT 1000` until none is
/// left.
async fn batch_deletes(lines: usize) -> f64 {
    let db = TestDb::mariadb().await;
    let (w, job) = world_with_job(&db).await;
    let filled = fill(&db, job, lines).await;
    let cutoff = Utc
        .with_ymd_and_hms(2026, 2, 1, 0, 0, 0)
        .unwrap()
        .naive_utc();
    let pool = sqlx_pool(&db).await;
    let started = Instant::now();
    let mut statements = 0;
    loop {
        let gone = sqlx::query("DELETE FROM job_logs WHERE timestamp < ? ORDER BY id LIMIT 1000")
            .bind(cutoff)
            .execute(&pool)
            .await
            .expect("delete")
            .rows_affected();
        statements += 1;
        if gone < 1000 {
            break;
        }
    }
    let batches = started.elapsed().as_secs_f64();
    pool.close().await;
    w.store.close().await;
    println!("  batch deletes: filled in {filled:.1} s; removed in {batches:.2} s with {statements} DELETE statements (retention also sleeps 50 ms between them: {:.0} s more)", statements as f64 * 0.05);
    batches
}

async fn sqlx_pool(db: &TestDb) -> sqlx::MySqlPool {
    sqlx::MySqlPool::connect(&db.url).await.expect("pool")
}
