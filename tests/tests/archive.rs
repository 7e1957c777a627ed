//! Archival of job output (issue 25), against real processes: `outpost-controller archive run`
//! writes a finished job's old output to a directory or to a real S3-compatible server
//! (`moto_server`), verifies it and only then removes its rows; the log still pages line for
//! line through the API and the CLI, downloads and shows in the web UI, marked archived. A
//! failed archive removes nothing and raises exactly one ticket however often it is tried, and
//! a corrupted archive object is caught by `archive verify` and by readers. Audit records are
//! exported by id range in the same format.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use outpost_controller::archive::jobs::failure_title;
use outpost_controller::model::{Job, LogLine};
use outpost_controller::store::logs::NewLogLine;
use outpost_tests::api::{login, read_events, PASSWORD};
use outpost_tests::procs::{bin, Controller, ControllerOpts};
use outpost_tests::world::World;
use outpost_tests::{output_within, Backend, TestDb};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);
const QUICK: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n";
const LINES: i32 = 2_600;

/// A real S3-compatible server on a loopback port it picked, with one bucket.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start(dir: &Path, bucket: &str) -> Moto {
        let log = dir.join("moto.log");
        let out = std::fs::File::create(&log).expect("moto log");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run moto_server ({e}): python3 -m pip install 'moto[server]'")
            });
        let start = Instant::now();
        let endpoint = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .find_map(|l| l.split("Running on ").nth(1))
                .map(|u| u.trim().to_owned())
            {
                break url;
            }
            assert!(
                start.elapsed() < MINUTE,
                "moto_server did not start in a minute:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let m = Moto { child, endpoint };
        let made = m.curl(&["-X", "PUT", &format!("{}/{bucket}", m.endpoint)]);
        assert!(made.status.success(), "create bucket: {made:?}");
        m
    }

    /// curl, signing as the archive's test account does (moto refuses unsigned reads).
    fn curl(&self, args: &[&str]) -> Output {
        Command::new("curl")
            .args(["-sS", "--fail", "--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", "testing:testing-secret"])
            .args(args)
            .output()
            .expect("curl (apt-get install curl)")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lines `1..=n` of a job, dated `age` ago: varied levels, quotes, tabs, non-ASCII text, and a
/// searchable word on every 100th line.
fn aged_lines(job: &Job, n: i32, age: chrono::Duration) -> Vec<NewLogLine> {
    let at = Utc::now() - age;
    (1..=n)
        .map(|i| NewLogLine {
            job: job.id,
            line_number: i,
            content: if i % 100 == 0 {
                format!("line {i}: Needle \"found\"\t→ ok")
            } else {
                format!("line {i}: ok: [web1] => {{\"msg\": \"héllo {i}\\\\n\"}}")
            },
            level: match i % 3 {
                0 => Some("ERROR".into()),
                1 => Some("INFO".into()),
                _ => None,
            },
            timestamp: at,
        })
        .collect()
}

/// A job marked finished straight in the database, with `lines` lines dated `age` ago.
async fn finished_job(
    db: &TestDb,
    w: &World,
    pb: &outpost_controller::model::Playbook,
    server: &outpost_controller::model::Server,
    lines: i32,
    age: chrono::Duration,
    status: &str,
) -> Job {
    let job = w.launch(pb, server).await;
    w.store
        .insert_log_lines(&aged_lines(&job, lines, age))
        .await
        .unwrap();
    if status != "pending" {
        db.exec(&format!(
            "UPDATE jobs SET status = '{status}', completed_at = started_at WHERE id = {}",
            job.id.0
        ))
        .await;
    }
    w.job(&job).await
}

/// `outpost-controller archive ARGS` against this database and data directory.
fn archive_cmd(data: &Path, db: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd =
        outpost_tests::procs::controller_command(data, db, &[&["archive"], args].concat());
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_within(&mut cmd, 2 * MINUTE, &format!("archive {}", args.join(" ")))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Where the test archives: the default directory, or a moto bucket.
enum Target<'a> {
    Directory,
    Bucket(&'a Moto, &'a Path),
}

impl Target<'_> {
    /// Settings as flags (the secret key as a file: never a flag).
    fn flags(&self) -> Vec<String> {
        match self {
            Target::Directory => Vec::new(),
            Target::Bucket(m, secret) => vec![
                "--archive-url".into(),
                "s3://outpost-archive/prod/logs".into(),
                "--archive-s3-endpoint".into(),
                m.endpoint.clone(),
                "--archive-s3-access-key-id".into(),
                "testing".into(),
                "--archive-s3-secret-access-key-file".into(),
                secret.display().to_string(),
            ],
        }
    }

    /// The archived object's size, read from the backend itself.
    fn object_len(&self, data: &Path, key: &str) -> u64 {
        match self {
            Target::Directory => std::fs::metadata(data.join("archive").join(key))
                .expect("archive file")
                .len(),
            Target::Bucket(m, _) => {
                let out = m.curl(&[&format!("{}/outpost-archive/prod/logs/{key}", m.endpoint)]);
                assert!(out.status.success(), "{}", text(&out));
                out.stdout.len() as u64
            }
        }
    }
}

/// Every line of a job through the API's pages of `limit`, with each page's `archived` mark.
async fn api_lines(
    api: &outpost_api::client::Client,
    job: &str,
    query: &str,
) -> (Vec<outpost_api::LogLineView>, Vec<bool>) {
    let (mut lines, mut marks, mut after) = (Vec::new(), Vec::new(), 0);
    loop {
        let page: outpost_api::LogPage = api
            .get(&format!("/api/v1/jobs/{job}/logs?after={after}{query}"))
            .await
            .expect("log page");
        marks.push(page.archived);
        lines.extend(page.lines);
        if page.complete {
            return (lines, marks);
        }
        assert!(page.next_after > after, "the pages do not move on");
        after = page.next_after;
    }
}

fn same(api: &[outpost_api::LogLineView], db: &[LogLine]) {
    assert_eq!(api.len(), db.len());
    for (a, d) in api.iter().zip(db) {
        assert_eq!(
            (a.line_number, &a.content, &a.level, a.timestamp),
            (d.line_number, &d.content, &d.log_level, d.timestamp)
        );
    }
}

/// A session's GET of a web page or download (the UI's session cookie is the login token).
fn ui_get(ctl: &Controller, token: &str, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(ctl.data_dir.join("pki").join("ca.pem"))
        .args(["-H", &format!("Cookie: outpost_session={token}")])
        .arg(format!("{}{path}", ctl.api_url()))
        .output()
        .expect("curl (apt-get install curl)");
    assert!(out.status.success(), "GET {path}: {}", text(&out));
    String::from_utf8(out.stdout).expect("UTF-8")
}

async fn archived_log_reads_back(backend: Backend, s3: bool) {
    let db = TestDb::new(backend).await;
    let w = World::new(&db.url).await;
    let server = w.local_server("web1", json!({}), "dev").await;
    let pb = w.playbook("quick", QUICK).await;
    let days = chrono::Duration::days;
    let done = finished_job(&db, &w, &pb, &server, LINES, days(100), "success").await;
    let recent = finished_job(&db, &w, &pb, &server, 10, days(1), "failed").await;
    let unfinished = finished_job(&db, &w, &pb, &server, 10, days(100), "pending").await;
    let before = w.lines(&done).await;
    assert_eq!(before.len(), LINES as usize);

    let scratch = tempfile::tempdir().unwrap();
    let secret = scratch.path().join("s3-secret");
    std::fs::write(&secret, "testing-secret\n").unwrap();
    let moto = s3.then(|| Moto::start(scratch.path(), "outpost-archive"));
    let target = match &moto {
        Some(m) => Target::Bucket(m, &secret),
        None => Target::Directory,
    };
    let flags = target.flags();
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let data = tempfile::tempdir().unwrap();
    Controller::init(data.path(), &db.url);

    let run = [&["run"][..], &flag_refs].concat();
    let out = archive_cmd(data.path(), &db.url, &run, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("archived 1 job(s)") && text(&out).contains("removed 2600"),
        "{}",
        text(&out)
    );
    // The rows went; the recent job and the unfinished one keep theirs.
    assert!(w.lines(&done).await.is_empty());
    assert_eq!(w.lines(&recent).await.len(), 10);
    assert_eq!(w.lines(&unfinished).await.len(), 10);
    let a = w
        .store
        .log_archive(done.id)
        .await
        .unwrap()
        .expect("a record");
    assert_eq!((a.line_count, a.last_line), (LINES.into(), LINES));
    assert_eq!(a.location, format!("jobs/{}.olog", done.job_id));
    assert_eq!(target.object_len(data.path(), &a.location), a.bytes as u64);
    assert!(w.store.log_archive(recent.id).await.unwrap().is_none());
    // A second pass finds nothing to do, and the archive verifies.
    let again = archive_cmd(data.path(), &db.url, &run, &[]);
    assert!(
        text(&again).contains("archived 0 job(s)"),
        "{}",
        text(&again)
    );
    let verify = [&["verify"][..], &flag_refs].concat();
    let checked = archive_cmd(data.path(), &db.url, &verify, &[]);
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(text(&checked).contains("1 archive(s) verified, 0 bad"));

    // The daemon reads it back: pages, a search, the CLI, the download and the page.
    let opts = ControllerOpts {
        extra: flags.clone(),
        ..ControllerOpts::default()
    };
    let ctl = Controller::start(data.path(), &db.url, "ctl", opts);
    let api = login(&ctl, "ops", PASSWORD).await;
    let id = done.job_id.to_string();
    let (lines, marks) = api_lines(&api, &id, "&limit=1000").await;
    same(&lines, &before);
    assert!(marks.iter().all(|m| *m), "every page marked archived");
    let (lines, _) = api_lines(&api, &id, "&limit=7").await;
    same(&lines, &before);
    let mid: outpost_api::LogPage = api
        .get(&format!("/api/v1/jobs/{id}/logs?after=1499&limit=3"))
        .await
        .unwrap();
    same(&mid.lines, &before[1499..1502]);
    assert_eq!(
        (mid.next_after, mid.last_line, mid.complete),
        (1502, LINES, false)
    );
    let (found, _) = api_lines(&api, &id, "&q=NEEDLE&level=ERROR").await;
    let expect: Vec<LogLine> = before
        .iter()
        .filter(|l| l.content.contains("Needle") && l.log_level.as_deref() == Some("ERROR"))
        .cloned()
        .collect();
    assert!(!expect.is_empty());
    same(&found, &expect);
    // The live stream replays the archive from a line on, then ends.
    let resp = api
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{id}/logs/stream?after=2000"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = read_events(resp, |e| e.event == "end").await;
    let streamed: Vec<outpost_api::LogLineView> = events
        .iter()
        .filter(|e| e.event == "line")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    same(&streamed, &before[2000..]);
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("end"));
    // A job not archived still reads from the database, unmarked.
    let (rows, marks) = api_lines(&api, &recent.job_id.to_string(), "").await;
    assert_eq!((rows.len(), marks), (10, vec![false]));

    let whole: String = before.iter().map(|l| format!("{}\n", l.content)).collect();
    let resp: outpost_api::LoginResponse = ctl
        .api()
        .post(
            "/api/v1/auth/login",
            &json!({"username": "ops", "password": PASSWORD}),
        )
        .await
        .unwrap();
    assert_eq!(
        ui_get(&ctl, &resp.token, &format!("/jobs/{id}/log.txt")),
        whole
    );
    let page = ui_get(&ctl, &resp.token, &format!("/jobs/{id}"));
    assert!(
        page.contains("log-archived") && page.contains("2600 lines"),
        "{page}"
    );

    let cfg = tempfile::tempdir().unwrap();
    let outpost = |args: &[&str]| {
        output_within(
            Command::new(bin("outpost"))
                .args(args)
                .env("OUTPOST_CONFIG_DIR", cfg.path())
                .env("OUTPOST_PASSWORD", PASSWORD)
                .env_remove("OUTPOST_CONTEXT"),
            2 * MINUTE,
            &format!("outpost {}", args.join(" ")),
        )
    };
    let fp = ctl.ca_fingerprint();
    let logged = outpost(&[
        "login",
        &ctl.api_url(),
        "-u",
        "ops",
        "--ca-fingerprint",
        &fp,
    ]);
    assert!(logged.status.success(), "{}", text(&logged));
    let raw = outpost(&["job", "logs", &id, "--raw"]);
    assert!(raw.status.success(), "{}", text(&raw));
    assert_eq!(String::from_utf8_lossy(&raw.stdout), whole);
    assert!(
        String::from_utf8_lossy(&raw.stderr).contains("read from its archive"),
        "the CLI says the log came from the archive: {}",
        text(&raw)
    );
    drop(ctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_log_reads_back_from_a_directory_mariadb() {
    archived_log_reads_back(Backend::MariaDb, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_log_reads_back_from_a_directory_sqlite() {
    archived_log_reads_back(Backend::Sqlite, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_log_reads_back_from_s3_mariadb() {
    archived_log_reads_back(Backend::MariaDb, true).await;
}

/// The tickets of a job's failed archive.
async fn archive_tickets(w: &World, job: &Job) -> Vec<outpost_controller::model::Ticket> {
    let title = failure_title(&job.job_id.to_string());
    w.tickets(job)
        .await
        .into_iter()
        .filter(|t| t.title == title)
        .collect()
}

/// A failed archive (a directory that cannot be made; an S3 server that is gone) removes
/// nothing and raises one ticket, however many passes fail; a working archive then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_archive_removes_nothing_and_raises_one_ticket() {
    let db = TestDb::new(Backend::MariaDb).await;
    let w = World::new(&db.url).await;
    let server = w.local_server("web1", json!({}), "dev").await;
    let pb = w.playbook("quick", QUICK).await;
    let done = finished_job(
        &db,
        &w,
        &pb,
        &server,
        1_500,
        chrono::Duration::days(100),
        "success",
    )
    .await;
    let data = tempfile::tempdir().unwrap();
    // A regular file where the archive directory's parent should be: even root cannot.
    let blocker = data.path().join("blocker");
    std::fs::write(&blocker, "not a directory").unwrap();
    let bad_url = format!("file://{}/archive", blocker.display());

    for _ in 0..2 {
        let out = archive_cmd(
            data.path(),
            &db.url,
            &["run", "--archive-url", &bad_url],
            &[],
        );
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("1 failed"), "{}", text(&out));
        assert_eq!(w.lines(&done).await.len(), 1_500, "nothing removed");
        assert!(w.store.log_archive(done.id).await.unwrap().is_none());
    }
    let raised = archive_tickets(&w, &done).await;
    assert_eq!(raised.len(), 1, "one ticket for two failed passes");
    let why = raised[0].description.clone().unwrap_or_default();
    assert!(why.contains("cannot create the archive directory"), "{why}");

    // An S3 server that has stopped: the same, and still the one ticket.
    let scratch = tempfile::tempdir().unwrap();
    let mut moto = Moto::start(scratch.path(), "outpost-archive");
    let endpoint = moto.endpoint.clone();
    moto.stop();
    let s3 = [
        "run",
        "--archive-url",
        "s3://outpost-archive/x",
        "--archive-s3-endpoint",
        &endpoint,
        "--archive-s3-access-key-id",
        "testing",
    ];
    let secret = [("OUTPOST_ARCHIVE_S3_SECRET_ACCESS_KEY", "testing-secret")];
    let out = archive_cmd(data.path(), &db.url, &s3, &secret);
    assert!(
        !out.status.success() && text(&out).contains("1 failed"),
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains("testing-secret"),
        "the secret leaked: {}",
        text(&out)
    );
    assert_eq!(w.lines(&done).await.len(), 1_500);
    assert_eq!(archive_tickets(&w, &done).await.len(), 1);

    // A working archive: archived, verified, removed.
    let out = archive_cmd(data.path(), &db.url, &["run"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(w.lines(&done).await.is_empty());
}

/// An archive object damaged after it was written is caught by `archive verify` and refused by
/// readers (an error, never wrong lines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_archive_is_detected() {
    let db = TestDb::new(Backend::Sqlite).await;
    let w = World::new(&db.url).await;
    let server = w.local_server("web1", json!({}), "dev").await;
    let pb = w.playbook("quick", QUICK).await;
    let done = finished_job(
        &db,
        &w,
        &pb,
        &server,
        3_000,
        chrono::Duration::days(100),
        "success",
    )
    .await;
    let data = tempfile::tempdir().unwrap();
    Controller::init(data.path(), &db.url);
    let out = archive_cmd(data.path(), &db.url, &["run"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let a = w
        .store
        .log_archive(done.id)
        .await
        .unwrap()
        .expect("archived");
    let file: PathBuf = data.path().join("archive").join(&a.location);
    let mut bytes = std::fs::read(&file).unwrap();
    // A byte inside the second frame's compressed data.
    let i = bytes.len() / 2;
    bytes[i] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let out = archive_cmd(data.path(), &db.url, &["verify"], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("0 archive(s) verified, 1 bad"),
        "{}",
        text(&out)
    );

    let ctl = Controller::start(data.path(), &db.url, "ctl", ControllerOpts::default());
    let api = login(&ctl, "ops", PASSWORD).await;
    let mut refused = false;
    for after in [0, 1000, 2000] {
        let page: Result<outpost_api::LogPage, _> = api
            .get(&format!("/api/v1/jobs/{}/logs?after={after}", done.job_id))
            .await;
        if let Err(e) = page {
            assert!(e.to_string().contains("archive"), "{e}");
            refused = true;
        }
    }
    assert!(refused, "a page over the damaged frame was served");
    drop(ctl);
}

/// `archive audit` exports a range of audit records, verified and recorded; the records stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_are_exported_by_id_range() {
    let db = TestDb::new(Backend::MariaDb).await;
    let w = World::new(&db.url).await;
    w.local_server("web1", json!({}), "dev").await;
    w.playbook("quick", QUICK).await;
    let all = w
        .store
        .audit_range(0, i64::MAX, 10_000)
        .await
        .expect("audit records");
    assert!(all.len() >= 3, "{all:?}");
    let (first, last) = (all[0].id.0, all[all.len() - 1].id.0);
    let data = tempfile::tempdir().unwrap();
    let out = archive_cmd(
        data.path(),
        &db.url,
        &[
            "audit",
            "--first",
            &first.to_string(),
            "--last",
            &last.to_string(),
            "--label",
            "test",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let exports = w.store.audit_archives().await.unwrap();
    assert_eq!(exports.len(), 1);
    let e = &exports[0];
    assert_eq!(
        (e.first_id, e.last_id, e.row_count),
        (first, last, all.len() as i64)
    );
    let object = std::fs::read(data.path().join("archive").join(&e.location)).unwrap();
    assert_eq!(object.len() as i64, e.bytes);
    let index = outpost_controller::archive::format::parse(&object).unwrap();
    assert_eq!(index.records, all.len() as u64);
    assert_eq!(index.sha256_hex(), e.sha256);
    assert!(
        outpost_controller::archive::audit::covered(&w.store, first, last)
            .await
            .unwrap()
    );
    assert!(
        !outpost_controller::archive::audit::covered(&w.store, first, last + 1)
            .await
            .unwrap()
    );
    // Exported, not removed.
    assert_eq!(
        w.store
            .audit_range(0, i64::MAX, 10_000)
            .await
            .unwrap()
            .len(),
        all.len()
    );

    // Past `audit_retention_days`, what no export covers yet goes in one more export, once.
    let at = (Utc::now() - chrono::Duration::days(400)).format("%Y-%m-%d %H:%M:%S");
    for _ in 0..3 {
        db.exec(&format!(
            "INSERT INTO audit_logs (action, resource_type, timestamp) VALUES ('LOGIN', 'user', '{at}')"
        ))
        .await;
    }
    let archive = outpost_controller::archive::Archive::new(
        &outpost_controller::archive::ArchiveSettings::directory(&data.path().join("archive")),
    )
    .unwrap();
    let year = Duration::from_secs(365 * 86400);
    let old = outpost_controller::archive::audit::export_expired_audit(&w.store, &archive, year)
        .await
        .unwrap()
        .expect("an export of the old records");
    assert_eq!((old.first_id, old.row_count), (last + 1, 3));
    assert!(old.label.starts_with("before "), "{}", old.label);
    assert!(
        outpost_controller::archive::audit::export_expired_audit(&w.store, &archive, year)
            .await
            .unwrap()
            .is_none(),
        "covered records are not exported twice"
    );
}
