//! Schedules at scale: 1,000 schedules due at the same instant on one controller, on MariaDB
//! (127.0.0.1:3306, a fresh database, dropped after) and on SQLite. Measured: from the slot to
//! the last of the 1,000 jobs created (each slot claimed, its run recorded, the template
//! planned and committed), and jobs per second.
//!
//! Each backend runs twice, side by side: one launch at a time, then the default of 8
//! (`schedule_fire_concurrency`).
//!
//! Run: `cargo bench -p outpost-tests --bench schedules` (`OUTPOST_BENCH_SCHEDULES` sets the
//! count, 1000).

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use outpost_controller::model::Paging;
use outpost_controller::store::audit::Actor;
use outpost_controller::store::jobs::JobFilter;
use outpost_controller::store::schedules::NewSchedule;
use outpost_controller::store::templates::NewTemplate;
use outpost_tests::bench::env_num;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::ControllerOpts;
use outpost_tests::Backend;

const PLAY: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: due\n";

/// One round: `n` schedules due at one instant, fired `concurrency` at a time. Returns seconds.
async fn round(backend: Backend, n: usize, concurrency: u32) -> f64 {
    let opts = ControllerOpts {
        extra: vec![
            "--schedule-fire-concurrency".into(),
            concurrency.to_string(),
        ],
        ..ControllerOpts::default()
    };
    let c = Cluster::start(backend, opts).await;
    let w = &c.world;
    let server = w
        .local_server("due-1", serde_json::json!({}), "staging")
        .await;
    let pb = w.playbook("due", PLAY).await;
    let admin = Actor::user(w.admin.id);
    let t = w
        .store
        .create_template(&NewTemplate::of_playbook("due", pb.id, &["due-1"]), &admin)
        .await
        .expect("template");
    // Created with their first slot a little ahead, so all are in place before it.
    let slot = Utc::now().trunc_subsecs(0) + chrono::Duration::seconds(30);
    for i in 0..n {
        w.store
            .create_schedule(
                &NewSchedule::hourly(&format!("due-{i:04}"), t.id, slot),
                &admin,
            )
            .await
            .expect("schedule");
    }
    let wait = (slot - Utc::now()).to_std().unwrap_or_default();
    assert!(
        !wait.is_zero(),
        "creating {n} schedules took past their slot"
    );
    tokio::time::sleep(wait).await;
    let start = Instant::now();
    let f = JobFilter {
        server_id: Some(server.id),
        ..JobFilter::default()
    };
    loop {
        let made = w
            .store
            .list_jobs(&f, Paging::new(1, 0))
            .await
            .expect("jobs")
            .total;
        if made as usize >= n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {made} of {n} jobs after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{backend:?}, {concurrency} at a time: {n} schedules due at one instant: all fired in {secs:.2} s, {:.0} jobs/s",
        n as f64 / secs
    );
    secs
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_num("OUTPOST_BENCH_SCHEDULES", 1000);
    // Side by side in one run: one launch at a time against the default of 8.
    for backend in [Backend::MariaDb, Backend::Sqlite] {
        let one = round(backend, n, 1).await;
        let eight = round(backend, n, 8).await;
        println!(
            "{backend:?}: 8 at a time fires {:.1}x as fast as one at a time",
            one / eight
        );
    }
}
