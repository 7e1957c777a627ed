//! Log lines through `LOAD DATA LOCAL INFILE` on a real MariaDB: hostile text comes back
//! byte-identical, a replayed batch lands once, and a server that refuses LOCAL INFILE gets the
//! same lines through INSERTs (a private server, so the shared one's globals stay as they are);
//! connections the server kills are the database being away, and ingest loses no line to them.

use chrono::{SubsecRound, Utc};
use outpost_controller::model::{JobId, Role};
use outpost_controller::store::audit::Actor;
use outpost_controller::store::jobs::NewJob;
use outpost_controller::store::logs::NewLogLine;
use outpost_controller::store::playbooks::NewPlaybook;
use outpost_controller::store::servers::NewServer;
use outpost_controller::store::users::NewUser;
use outpost_controller::{ingest, PoolConfig, Store};
use outpost_tests::mariadb::PrivateMariaDb;
use outpost_tests::TestDb;
use tokio_util::sync::CancellationToken;

async fn store(url: &str) -> Store {
    let store = Store::connect(url, &PoolConfig::default())
        .await
        .expect("connect");
    store.migrate_up().await.expect("migrate");
    store
}

async fn jobs(store: &Store, n: usize) -> Vec<JobId> {
    let admin = store
        .create_user(
            &NewUser {
                username: "admin".into(),
                email: "admin@example.com".into(),
                password: "correct horse battery".into(),
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
                name: "ping".into(),
                description: None,
                file_path: "/ping.yml".into(),
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

/// Lines that would break a naive tab-separated file, and a long one.
fn hostile(job: JobId) -> Vec<NewLogLine> {
    let mut long = String::new();
    while long.len() < 60 * 1024 {
        long.push_str("tab\there, newline\nthere, back\\slash, \\N, \\0, nul\0, crab 🦀 ");
    }
    let texts = [
        "plain".to_owned(),
        "tab\tin\tthe\tmiddle".to_owned(),
        "a\nnewline and a\r\nCRLF".to_owned(),
        "C:\\Windows\\System32\\".to_owned(),
        "\\N".to_owned(),
        "\\0".to_owned(),
        "\\".to_owned(),
        "NUL\0byte".to_owned(),
        "\0".to_owned(),
        "emoji 🦀😀 and ü".to_owned(),
        String::new(),
        "\t".to_owned(),
        "\\t is not a tab".to_owned(),
        "ends in a backslash \\".to_owned(),
        long,
    ];
    let now = Utc::now();
    texts
        .into_iter()
        .enumerate()
        .map(|(i, content)| NewLogLine {
            job,
            line_number: i as i32 + 1,
            content,
            level: match i % 3 {
                0 => None,
                1 => Some("INFO".into()),
                _ => Some("WE\tIRD\\N".into()),
            },
            timestamp: now,
        })
        .collect()
}

#[tokio::test]
async fn hostile_lines_come_back_byte_identical_and_a_replay_lands_once() {
    let db = TestDb::mariadb().await;
    let store = store(&db.url).await;
    assert!(
        store.writes_logs_in_bulk(),
        "MariaDB here allows LOCAL INFILE"
    );
    let ids = jobs(&store, 2).await;
    let lines = hostile(ids[0]);
    // Another job's lines in the same flush, as ingest sends them.
    let mut batch = lines.clone();
    batch.extend(hostile(ids[1]));
    assert_eq!(
        store.insert_log_lines(&batch).await.expect("bulk load"),
        batch.len() as u64
    );
    assert!(store.writes_logs_in_bulk(), "still the bulk path");
    let back = store
        .read_log_lines(ids[0], 0, 100)
        .await
        .expect("read back");
    assert_eq!(back.len(), lines.len());
    for (want, got) in lines.iter().zip(&back) {
        assert_eq!(got.line_number, want.line_number);
        assert_eq!(
            got.content.as_bytes(),
            want.content.as_bytes(),
            "line {}",
            want.line_number
        );
        assert_eq!(got.log_level, want.level, "line {}", want.line_number);
        assert_eq!(
            got.timestamp,
            want.timestamp.trunc_subsecs(0),
            "line {}",
            want.line_number
        );
    }
    // Exactly once: the same batch again stores nothing, an overlapping one only what is new.
    assert_eq!(store.insert_log_lines(&batch).await.expect("replay"), 0);
    let mut overlap = hostile(ids[0]);
    overlap.push(NewLogLine {
        line_number: 16,
        ..overlap[0].clone()
    });
    assert_eq!(store.insert_log_lines(&overlap).await.expect("overlap"), 1);
    assert_eq!(store.log_extent(ids[0]).await.expect("extent"), (16, 16));
    assert_eq!(store.log_extent(ids[1]).await.expect("extent"), (15, 15));
    store.close().await;
}

#[tokio::test]
async fn the_ingest_task_acknowledges_bulk_loads_in_order() {
    let db = TestDb::mariadb().await;
    let store = store(&db.url).await;
    let ids = jobs(&store, 4).await;
    let stop = CancellationToken::new();
    let (handle, task) = ingest::spawn(store.clone(), stop.clone());
    let mut acks = Vec::new();
    for round in 0..20 {
        for job in &ids {
            let batch: Vec<NewLogLine> = (1..=250)
                .map(|n| NewLogLine {
                    job: *job,
                    line_number: round * 250 + n,
                    content: format!("round {round} line {n}\twith a tab"),
                    level: Some("INFO".into()),
                    timestamp: Utc::now(),
                })
                .collect();
            acks.push(handle.submit(batch).await.expect("submit"));
        }
    }
    for ack in acks {
        ack.await.expect("committed");
    }
    drop(handle);
    stop.cancel();
    task.await.expect("ingest task");
    for job in &ids {
        assert_eq!(store.log_extent(*job).await.expect("extent"), (5000, 5000));
    }
    assert!(store.writes_logs_in_bulk());
    store.close().await;
}

#[tokio::test]
async fn a_server_that_refuses_local_infile_gets_inserts() {
    let mdb = PrivateMariaDb::start_with_options(&["--local-infile=0"]);
    assert_eq!(mdb.query("SELECT @@local_infile").trim(), "0");
    let store = store(&mdb.url()).await;
    let ids = jobs(&store, 1).await;
    assert!(
        store.writes_logs_in_bulk(),
        "not known before the first flush"
    );
    let lines = hostile(ids[0]);
    // Through the ingest task, as agents' lines go: acknowledged after the INSERTs committed.
    let stop = CancellationToken::new();
    let (handle, task) = ingest::spawn(store.clone(), stop.clone());
    handle
        .submit(lines[..7].to_vec())
        .await
        .expect("submit")
        .await
        .expect("committed through INSERTs");
    handle
        .submit(lines[7..].to_vec())
        .await
        .expect("submit")
        .await
        .expect("committed through INSERTs");
    drop(handle);
    stop.cancel();
    task.await.expect("ingest task");
    assert!(!store.writes_logs_in_bulk(), "fell back for good");
    let back = store.read_log_lines(ids[0], 0, 100).await.expect("read");
    assert_eq!(
        back.iter().map(|l| l.content.as_str()).collect::<Vec<_>>(),
        lines.iter().map(|l| l.content.as_str()).collect::<Vec<_>>()
    );
    // Replays stay exactly-once on the INSERT path too.
    assert_eq!(store.insert_log_lines(&lines).await.expect("replay"), 0);
    store.close().await;
}

/// Kills every connection this test's store holds to its database, from another connection.
async fn kill_connections(db: &TestDb) -> usize {
    use sqlx::Connection;
    let mut admin = sqlx::MySqlConnection::connect(&db.url)
        .await
        .expect("admin");
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()",
    )
    .fetch_all(&mut admin)
    .await
    .expect("processlist");
    for id in &ids {
        // One may have ended meanwhile.
        let _ = sqlx::query(&format!("KILL CONNECTION {id}"))
            .execute(&mut admin)
            .await;
    }
    ids.len()
}

/// Runs a store call until it succeeds, each failure on the way being the database away (a
/// killed connection taken from the pool), never a refusal; a few at most.
async fn until_ok<T, F: std::future::Future<Output = Result<T, outpost_controller::StoreError>>>(
    mut call: impl FnMut() -> F,
) -> T {
    for _ in 0..40 {
        match call().await {
            Ok(v) => return v,
            Err(e) => assert!(
                e.is_unavailable() && e.refusal().is_none(),
                "a killed connection read as a refusal: {e}"
            ),
        }
    }
    panic!("the pool did not recover from killed connections");
}

/// Connections the server killed a moment after they were last used (the pool pings only
/// connections idle for a second): the next statements fail as the database being away,
/// never as a refusal of the rows, so ingest retries them and no line becomes a marker or is
/// lost; the store's next statements get new connections.
#[tokio::test]
async fn connections_the_server_killed_are_away_not_refusals() {
    let db = TestDb::mariadb().await;
    let store = store(&db.url).await;
    let ids = jobs(&store, 1).await;

    // The store's own statements: errors, if any, say "away", and it recovers at once.
    store.enabled_blackouts().await.expect("warm");
    assert!(kill_connections(&db).await > 0);
    until_ok(|| store.enabled_blackouts()).await;

    // Ingest, through the bulk path, with its connections killed between two batches.
    let stop = CancellationToken::new();
    let (handle, task) = ingest::spawn(store.clone(), stop.clone());
    let batch = |from: i32| -> Vec<NewLogLine> {
        (from..from + 500)
            .map(|n| NewLogLine {
                job: ids[0],
                line_number: n,
                content: format!("line {n}"),
                level: None,
                timestamp: Utc::now(),
            })
            .collect()
    };
    handle
        .submit(batch(1))
        .await
        .expect("queued")
        .await
        .expect("committed");
    assert!(kill_connections(&db).await > 0);
    let second = handle.submit(batch(501)).await.expect("queued");
    tokio::time::timeout(std::time::Duration::from_secs(30), second)
        .await
        .expect("the second batch committed within 30 s")
        .expect("committed");
    // Ingest wrote through its own connections; the pool's were killed too.
    let lines = until_ok(|| store.read_log_lines(ids[0], 0, 2000)).await;
    let numbers: Vec<i32> = lines.iter().map(|l| l.line_number).collect();
    assert_eq!(numbers, (1..=1000).collect::<Vec<_>>());
    assert!(
        lines
            .iter()
            .all(|l| l.content == format!("line {}", l.line_number)),
        "a line was replaced by a marker: {:?}",
        lines.iter().find(|l| l.content.starts_with("[outpost"))
    );
    stop.cancel();
    drop(handle);
    let _ = task.await;
}
