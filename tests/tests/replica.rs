//! The read replica (`read_database_url`): two real MariaDB servers started here, replication
//! configured here. Pages read from the replica (a marker row written on the replica alone shows
//! in them), writes go to the primary and reach the pages through replication, and a replica
//! that lags past the bound, whose replication stops or whose server dies is bypassed: pages
//! still answer, from the primary, and `/metrics` says so.

use std::time::Duration;

use outpost_api::client::Client;
use outpost_controller::model::Role;
use outpost_tests::api::{login, user, PASSWORD};
use outpost_tests::mariadb::PrivateMariaDb;
use outpost_tests::procs::{Controller, ControllerOpts};
use outpost_tests::wait_for;
use outpost_tests::world::World;
use reqwest::Method;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
/// The marker job's id on the replica: far above any id the primary will give, so replication
/// never collides with it.
const MARKER_ID: i64 = 1_000_000;
const MARKER_LINE: &str = "this line exists on the replica only";

const QUICK: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n";

/// `/metrics` as name → value, for the replica's rows.
async fn metrics(api: &Client) -> std::collections::HashMap<String, f64> {
    let text = api
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics text");
    text.lines()
        .filter(|l| l.starts_with("outpost_replica_"))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

async fn metric(api: &Client, name: &str) -> f64 {
    *metrics(api)
        .await
        .get(name)
        .unwrap_or_else(|| panic!("/metrics has no {name}"))
}

/// The uuids of the first page of `GET /api/v1/jobs`.
async fn listed_jobs(api: &Client) -> Vec<String> {
    let page: Value = api
        .get("/api/v1/jobs?limit=100")
        .await
        .expect("GET /api/v1/jobs");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|j| j["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A web UI page's text, signed in with a session cookie as a browser would be.
async fn ui_page(ctl: &Controller, username: &str, path: &str) -> String {
    let tls = outpost_api::client::tls_config(&ctl.ca_pem()).expect("TLS config");
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .expect("client");
    let base = ctl.api_url();
    let resp = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "username={username}&password={}",
            PASSWORD.replace(' ', "%20")
        ))
        .send()
        .await
        .expect("sign in");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie from signing in: {}", resp.status()))
        .to_owned();
    let resp = http
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(resp.status(), 200, "{path}");
    resp.text().await.expect("page text")
}

/// The dashboard's HTML.
async fn dashboard(ctl: &Controller, username: &str) -> String {
    ui_page(ctl, username, "/").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_read_from_the_replica_and_from_the_primary_when_it_stops_or_dies() {
    let started = std::time::Instant::now();
    // The primary writes a row-based binary log; the replica is read-only (root may still
    // write, which is how the marker gets there).
    let primary = PrivateMariaDb::start_with_options(&[
        "--log-bin=primary-bin",
        "--server-id=1",
        "--binlog-format=ROW",
    ]);
    let mut replica = PrivateMariaDb::start_with_options(&["--server-id=2", "--read-only"]);
    // The primary's log starts with its CREATE DATABASE: the replica replays it from there.
    replica.exec("DROP DATABASE outpost");
    replica.exec(&format!(
        "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER='root', \
         MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos; START SLAVE",
        primary.host, primary.port
    ));

    let w = World::new(&primary.url()).await;
    user(&w, "vera", Role::Viewer).await;
    let server = w.local_server("web1", json!({"dc": "fra1"}), "prod").await;
    let playbook = w.playbook("hello", QUICK).await;
    let job = w.launch(&playbook, &server).await;
    // The whole schema and the first job reach the replica.
    wait_for("the job replicated", WAIT, || async {
        let n = replica.query(&format!(
            "SELECT COUNT(*) FROM outpost.jobs WHERE job_id = '{}'",
            job.job_id
        ));
        (n.trim() == "1").then_some(())
    })
    .await;

    // The marker: a failed job, one line of output and an audit row, written on the replica
    // alone (not logged, so nothing could carry it anywhere).
    let marker = uuid::Uuid::new_v4().to_string();
    replica.exec(&format!(
        "SET SESSION sql_log_bin = 0; USE outpost; \
         CREATE TEMPORARY TABLE m AS SELECT * FROM jobs WHERE id = {id}; \
         UPDATE m SET id = {MARKER_ID}, job_id = '{marker}', status = 'failed', \
           error_message = 'written on the replica only', completed_at = UTC_TIMESTAMP(); \
         INSERT INTO jobs SELECT * FROM m; \
         INSERT INTO job_logs (id, job_id, line_number, content, log_level, timestamp) \
           VALUES ({MARKER_ID}, {MARKER_ID}, 1, '{MARKER_LINE}', 'INFO', UTC_TIMESTAMP()); \
         INSERT INTO audit_logs (id, action, resource_type, resource_id, timestamp) \
           VALUES ({MARKER_ID}, 'replica.marker', 'job', {MARKER_ID}, UTC_TIMESTAMP())",
        id = job.id.0
    ));

    let data = tempfile::tempdir().unwrap();
    Controller::init(data.path(), &primary.url());
    let opts = ControllerOpts {
        extra: vec![
            "--read-database-url".into(),
            replica.url(),
            "--read-replica-max-lag-secs".into(),
            "5".into(),
        ],
        ..ControllerOpts::default()
    };
    let ctl = Controller::start(data.path(), &primary.url(), "ctl", opts);
    let anon = ctl.api();
    wait_for("the replica in use", WAIT, || async {
        (metric(&anon, "outpost_replica_in_use").await == 1.0).then_some(())
    })
    .await;
    let m = metrics(&anon).await;
    let lag = m["outpost_replica_lag_seconds"];
    assert!((0.0..=5.0).contains(&lag), "lag {lag}: {m:?}");

    let ready: Value = anon.get("/readyz").await.expect("/readyz");
    let said = ready["checks"]["replica"].as_str().unwrap_or_default();
    assert!(said.starts_with("in use: "), "{ready}");
    let admin = login(&ctl, "ops", PASSWORD).await;
    let viewer = login(&ctl, "vera", PASSWORD).await;

    // Pages come from the replica: the marker is in the job list, its page, its log page, a
    // search of its log, the audit trail and the dashboard.
    let listed = listed_jobs(&viewer).await;
    assert!(
        listed.contains(&marker) && listed.contains(&job.job_id.to_string()),
        "{listed:?}"
    );
    let one: Value = viewer
        .get(&format!("/api/v1/jobs/{marker}"))
        .await
        .expect("the marker job");
    assert_eq!(one["status"], "failed");
    let log: Value = viewer
        .get(&format!("/api/v1/jobs/{marker}/logs"))
        .await
        .expect("the marker's log");
    assert_eq!(log["lines"][0]["content"], MARKER_LINE, "{log}");
    let found: Value = viewer
        .get(&format!("/api/v1/jobs/{marker}/logs?q=replica%20only"))
        .await
        .expect("a search of the marker's log");
    assert_eq!(found["lines"].as_array().map(Vec::len), Some(1), "{found}");
    let audit: Value = admin
        .get("/api/v1/audit?action=replica.marker")
        .await
        .expect("the audit trail");
    assert_eq!(audit["total"], 1, "{audit}");
    // The dashboard shows its last figures while it renders the next in the background.
    wait_for(
        "the dashboard's latest failures from the replica",
        WAIT,
        || async {
            dashboard(&ctl, "vera")
                .await
                .contains(&format!("/jobs/{marker}"))
                .then_some(())
        },
    )
    .await;
    assert!(
        ui_page(&ctl, "vera", "/jobs").await.contains(&marker),
        "the UI's job list"
    );
    assert!(
        ui_page(&ctl, "vera", &format!("/jobs/{marker}"))
            .await
            .contains("written on the replica only"),
        "the UI's job page"
    );
    assert_eq!(
        ui_page(&ctl, "vera", &format!("/jobs/{marker}/log.txt")).await,
        format!("{MARKER_LINE}\n"),
        "the UI's log download"
    );
    let m = metrics(&anon).await;
    assert!(m["outpost_replica_reads_total"] >= 6.0, "{m:?}");

    // A launch through the API is written to the primary and reaches the pages by replication.
    let launched: Value = admin
        .post(
            "/api/v1/jobs",
            &json!({"playbook": "hello", "servers": ["web1"]}),
        )
        .await
        .expect("launch");
    let new_job = launched["jobs"][0]["id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let on_primary = primary.query(&format!(
        "SELECT COUNT(*) FROM outpost.jobs WHERE job_id = '{new_job}'"
    ));
    assert_eq!(on_primary.trim(), "1", "the launch is on the primary");
    // A job the replica may not have yet is still found (read again from the primary).
    let got: Value = viewer
        .get(&format!("/api/v1/jobs/{new_job}"))
        .await
        .expect("the new job, at once");
    assert_eq!(got["id"], new_job.as_str());
    wait_for("the launch listed, by replication", WAIT, || async {
        let l = listed_jobs(&viewer).await;
        (l.contains(&new_job) && l.contains(&marker)).then_some(())
    })
    .await;

    // The replica falls behind (delayed replication holds a new write back for 30 s): past the
    // bound of 5 s it is bypassed, and pages come from the primary, which has the new job.
    replica.exec("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 30; START SLAVE");
    let late = w.launch(&playbook, &server).await;
    let late_id = late.job_id.to_string();
    // (A look may catch the threads stopped for the change: that bypasses it too, with the lag
    // unknown; what counts is a known lag past the bound.)
    wait_for("the lagging replica bypassed", WAIT, || async {
        let m = metrics(&anon).await;
        (m["outpost_replica_lag_seconds"] > 5.0 && m["outpost_replica_in_use"] == 0.0).then_some(())
    })
    .await;
    let listed = listed_jobs(&viewer).await;
    assert!(
        listed.contains(&late_id) && !listed.contains(&marker),
        "the primary's list while the replica lags: {listed:?}"
    );
    replica.exec("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE");
    wait_for("the replica caught up and in use", WAIT, || async {
        let l = listed_jobs(&viewer).await;
        (metric(&anon, "outpost_replica_in_use").await == 1.0
            && l.contains(&late_id)
            && l.contains(&marker))
        .then_some(())
    })
    .await;

    // Replication stops: the replica is bypassed, pages come from the primary (no marker).
    replica.exec("STOP SLAVE SQL_THREAD");
    wait_for(
        "the stopped replica bypassed, its lag unknown",
        WAIT,
        || async {
            let m = metrics(&anon).await;
            (m["outpost_replica_in_use"] == 0.0 && m["outpost_replica_lag_seconds"] == -1.0)
                .then_some(())
        },
    )
    .await;
    let fallbacks = metric(&anon, "outpost_replica_fallback_reads_total").await;
    let listed = listed_jobs(&viewer).await;
    assert!(
        !listed.contains(&marker) && listed.contains(&new_job),
        "the primary's list: {listed:?}"
    );
    let gone = viewer
        .get::<Value>(&format!("/api/v1/jobs/{marker}/logs"))
        .await
        .expect_err("the marker is not on the primary");
    assert!(gone.to_string().contains("not found"), "{gone}");
    wait_for("the dashboard from the primary", WAIT, || async {
        (!dashboard(&ctl, "vera")
            .await
            .contains(&format!("/jobs/{marker}")))
        .then_some(())
    })
    .await;
    assert!(metric(&anon, "outpost_replica_fallback_reads_total").await > fallbacks);

    // Replication again: the replica is back in use.
    replica.exec("START SLAVE SQL_THREAD");
    wait_for("the replica in use again", WAIT, || async {
        (metric(&anon, "outpost_replica_in_use").await == 1.0).then_some(())
    })
    .await;
    assert!(listed_jobs(&viewer).await.contains(&marker));

    // The replica's server dies: pages answer at once (a read that fails on it is read again
    // from the primary), and the monitor bypasses it.
    replica.stop();
    let t = std::time::Instant::now();
    let listed = listed_jobs(&viewer).await;
    let first_page = t.elapsed();
    assert!(
        !listed.contains(&marker) && listed.contains(&new_job),
        "{listed:?}"
    );
    // The replica's pool waits at most 2 s for a connection before the primary is asked.
    assert!(
        first_page < Duration::from_secs(5),
        "the first page after the replica died took {first_page:?}"
    );
    let page: Value = viewer
        .get(&format!("/api/v1/jobs/{}/logs", job.job_id))
        .await
        .expect("a log page with the replica down");
    assert_eq!(page["job_status"], "pending", "{page}");
    let audit: Value = admin
        .get("/api/v1/audit?limit=5")
        .await
        .expect("the audit trail with the replica down");
    assert!(audit["total"].as_i64().unwrap_or(0) > 0, "{audit}");
    dashboard(&ctl, "vera").await;
    wait_for("the dead replica bypassed", WAIT, || async {
        let m = metrics(&anon).await;
        (m["outpost_replica_in_use"] == 0.0 && m["outpost_replica_lag_seconds"] == -1.0)
            .then_some(())
    })
    .await;
    // Ready all the same: the primary serves every page.
    let ready = wait_for(
        "/readyz saying why the replica is bypassed",
        WAIT,
        || async {
            let ready: Value = anon
                .get("/readyz")
                .await
                .expect("/readyz with the replica down");
            let said = ready["checks"]["replica"].as_str().unwrap_or_default();
            (said.starts_with("bypassed, reads go to the primary: ") && said.contains("refused"))
                .then_some(ready)
        },
    )
    .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let log = ctl.log();
    assert!(
        log.contains("read replica bypassed"),
        "the controller says why it bypasses the replica"
    );
    for l in log.lines().filter(|l| l.contains("read replica")) {
        eprintln!("{l}");
    }
    eprintln!(
        "first job list after the replica died: {first_page:?}; test took {:?}",
        started.elapsed()
    );
}
