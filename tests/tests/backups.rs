//! Backups and the audit trail's immutability, against real processes and databases: a backup
//! taken while the controller runs, the database dropped, the restore into a new data
//! directory finding every job, line, agent and PKI file; a damaged backup refused before
//! anything is written; and UPDATE and DELETE of audit records refused by the database itself.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use outpost_controller::model::{JobStatus, Paging, Role};
use outpost_controller::store::audit::Actor;
use outpost_controller::store::users::NewUser;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{AgentOpts, ControllerOpts};
use outpost_tests::world::World;
use outpost_tests::{mysql_server_url, output_text, Backend, TestDb};
use serde_json::json;
use sqlx::Connection;

const MINUTE: Duration = Duration::from_secs(60);

const QUICK: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"job on {{ inventory_hostname }}\"\n";

/// `outpost-controller <args>` with the database URL in the environment (never in argv).
fn controller(data: &Path, url: &str, args: &[&str]) -> Output {
    outpost_tests::procs::controller_command(data, url, args)
        .output()
        .expect("run outpost-controller")
}

fn said(o: &Output) -> String {
    output_text(o)
}

fn mode(p: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777
}

/// Drops the test's MariaDB database, or deletes its SQLite file: what a restore starts from.
async fn drop_database(db: &TestDb) {
    match db.backend {
        Backend::MariaDb => {
            let mut c = sqlx::MySqlConnection::connect(&mysql_server_url())
                .await
                .unwrap();
            let name = db.mysql_name().unwrap();
            sqlx::query(&format!("DROP DATABASE {name}"))
                .execute(&mut c)
                .await
                .unwrap();
        }
        Backend::Sqlite => {
            let path = db.sqlite_path().unwrap();
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

async fn backup_and_restore(backend: Backend) {
    let mut c = Cluster::start(backend, ControllerOpts::default()).await;
    let _agent = c.agent("bastion-fra1", &["dc=fra1"], &AgentOpts::default());
    let w = &c.world;
    let web = w.local_server("web1", json!({}), "dev").await;
    let pb = w.playbook("quick", QUICK).await;
    let job = w.launch(&pb, &web).await;
    w.wait_status(&job, JobStatus::Success, 2 * MINUTE).await;
    let lines = w.lines(&job).await;
    assert!(lines.len() > 5, "{lines:?}");
    let agents: Vec<String> = w
        .store
        .list_agents(Paging::new(100, 0))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(agents, ["bastion-fra1"]);
    let census = w.store.census().await.unwrap();

    // Taken while the controller runs.
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("b1");
    let out = controller(
        c.data.path(),
        &c.db.url,
        &["backup", "--to", to.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("sha256"), "{}", said(&out));
    assert_eq!(mode(&to), 0o700);
    let pki_key = to.join("pki/credentials.key");
    assert!(pki_key.exists(), "the credentials key is in the backup");
    for entry in std::fs::read_dir(&to)
        .unwrap()
        .chain(std::fs::read_dir(to.join("pki")).unwrap())
    {
        let p = entry.unwrap().path();
        if p.is_file() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    // The database URL (with any password) was not written into the backup's manifest.
    let manifest = std::fs::read_to_string(to.join("manifest.json")).unwrap();
    assert!(!manifest.contains(&c.db.url), "{manifest}");
    // A second backup into the same directory is refused.
    let again = controller(
        c.data.path(),
        &c.db.url,
        &["backup", "--to", to.to_str().unwrap()],
    );
    assert!(!again.status.success());
    assert!(said(&again).contains("not empty"), "{}", said(&again));

    // A damaged copy is refused before anything is written.
    let damaged = backups.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    for entry in walk(&to) {
        let rel = entry.strip_prefix(&to).unwrap();
        let dest = damaged.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dest).unwrap();
    }
    let db_file = if backend == Backend::MariaDb {
        "database.sql"
    } else {
        "database.sqlite"
    };
    let mut bytes = std::fs::read(damaged.join(db_file)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(damaged.join(db_file), bytes).unwrap();

    c.ctl.stop();
    drop_database(&c.db).await;
    let fresh = tempfile::tempdir().unwrap();
    let out = controller(
        fresh.path(),
        &c.db.url,
        &["restore", "--from", damaged.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        said(&out).contains("does not match its manifest"),
        "{}",
        said(&out)
    );
    assert!(!fresh.path().join("pki").exists(), "nothing was written");

    // The real one: into the dropped database (the restore makes it again) and a new data
    // directory.
    let out = controller(
        fresh.path(),
        &c.db.url,
        &["restore", "--from", to.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", said(&out));
    let w2 = World::open(&c.db.url).await;
    assert_eq!(w2.store.census().await.unwrap(), census);
    assert_eq!(w2.lines(&job).await, lines);
    let restored: Vec<String> = w2
        .store
        .list_agents(Paging::new(100, 0))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(restored, agents);
    for name in std::fs::read_dir(to.join("pki")).unwrap() {
        let name = name.unwrap().file_name();
        let original = c.data.path().join("pki").join(&name);
        let back = fresh.path().join("pki").join(&name);
        assert_eq!(
            std::fs::read(&original).unwrap(),
            std::fs::read(&back).unwrap()
        );
        assert_eq!(mode(&back), 0o600);
    }
    // The controller serves from what was restored: its CA and its key open the credentials.
    let check = controller(fresh.path(), &c.db.url, &["credentials", "check"]);
    assert!(check.status.success(), "{}", said(&check));

    // A restore over a database that holds tables is refused.
    let twice = controller(
        fresh.path(),
        &c.db.url,
        &["restore", "--from", to.to_str().unwrap()],
    );
    assert!(!twice.status.success());
    assert!(
        said(&twice).contains("already holds tables"),
        "{}",
        said(&twice)
    );
    w2.store.close().await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_every_job_line_agent_and_key_mariadb() {
    backup_and_restore(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_every_job_line_agent_and_key_sqlite() {
    backup_and_restore(Backend::Sqlite).await;
}

async fn execute(db: &TestDb, sql: &str) -> Result<u64, String> {
    match db.backend {
        Backend::MariaDb => {
            let mut c = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| e.to_string())
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| e.to_string())
        }
    }
}

/// The attack: someone with the controller's database account edits or deletes audit records
/// to hide what they did. The database refuses; deleting a user still detaches its records,
/// as the seed's foreign key says.
async fn audit_records_are_append_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let w = World::new(&db.url).await;
    let temp = w
        .store
        .create_user(
            &NewUser {
                username: "temp".into(),
                email: "temp@example.com".into(),
                password: "correct horse battery".into(),
                role: Role::Viewer,
                must_change_password: false,
            },
            &Actor::user(w.admin.id),
        )
        .await
        .unwrap();
    // A record made by the user who will be deleted.
    execute(
        &db,
        &format!(
            "INSERT INTO audit_logs (user_id, action, resource_type) VALUES ({}, 'LOGIN', 'user')",
            temp.id.0
        ),
    )
    .await
    .unwrap();
    let count = "SELECT COUNT(*) FROM audit_logs";
    let before = scalar(&db, count).await;
    assert!(before >= 2);

    for attack in [
        "UPDATE audit_logs SET action = 'NOTHING'",
        "UPDATE audit_logs SET details = NULL",
        "UPDATE audit_logs SET user_id = NULL",
        "DELETE FROM audit_logs",
        "DELETE FROM audit_logs WHERE action = 'LOGIN'",
    ] {
        let err = execute(&db, attack).await.expect_err(attack);
        assert!(err.contains("audit_logs is append-only"), "{attack}: {err}");
    }
    assert_eq!(scalar(&db, count).await, before);
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM audit_logs WHERE action = 'NOTHING'"
        )
        .await,
        0
    );

    // The seed's ON DELETE SET NULL still works, and only that.
    w.store
        .delete_user(temp.id, &Actor::user(w.admin.id))
        .await
        .unwrap();
    let detached = scalar(
        &db,
        "SELECT COUNT(*) FROM audit_logs WHERE action = 'LOGIN' AND user_id IS NULL",
    )
    .await;
    assert_eq!(detached, 1);
    assert_eq!(
        scalar(&db, count).await,
        before + 1,
        "the deletion is audited too"
    );
    w.store.close().await;
}

async fn scalar(db: &TestDb, sql: &str) -> i64 {
    match db.backend {
        Backend::MariaDb => {
            let mut c = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_cannot_be_changed_or_deleted_mariadb() {
    audit_records_are_append_only(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_cannot_be_changed_or_deleted_sqlite() {
    audit_records_are_append_only(Backend::Sqlite).await;
}
