//! `outpost-controller migrate` as an operator meets it: each bad input gives one clear line
//! and a non-zero exit, and leaves the data as it was.

use std::process::{Command, Output};

use outpost_tests::TestDb;
use sqlx::Connection;

fn migrate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost-controller"))
        .arg("migrate")
        .args(args)
        .env_remove("OUTPOST_DATABASE_URL")
        .output()
        .expect("run outpost-controller")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "must fail: {}", stdout(o));
    let err = stderr(o);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

#[test]
fn bad_urls_and_unreachable_databases_say_what_to_do() {
    assert_one_line_error(
        &migrate(&["--database-url", "postgres://db/x"]),
        "scheme must be mysql://",
    );
    assert_one_line_error(
        &migrate(&["--database-url", "mysql://root@127.0.0.1:3306"]),
        "name the database",
    );
    assert_one_line_error(
        &migrate(&["--database-url", "mysql://root@127.0.0.1:1/outpost"]),
        "cannot reach the database",
    );
    let denied = migrate(&[
        "--database-url",
        "mysql://nobody:s3cret-pw@127.0.0.1:3306/outpost",
    ]);
    assert_one_line_error(&denied, "refused the login");
    assert!(
        !stderr(&denied).contains("s3cret-pw"),
        "the password is never printed"
    );
}

#[tokio::test]
async fn applies_once_rolls_back_and_reports_dirty() {
    let db = TestDb::mariadb().await;
    let first = migrate(&["--database-url", &db.url]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("applied 0001 seed schema"),
        "{}",
        stdout(&first)
    );
    assert!(stdout(&first).contains("22 migration(s) applied"));
    // A new, empty database has nothing to back up.
    assert!(!stdout(&first).contains("backed up"), "{}", stdout(&first));
    let second = migrate(&["--database-url", &db.url]);
    assert!(second.status.success());
    assert!(
        stdout(&second).contains("schema is up to date"),
        "{}",
        stdout(&second)
    );

    let down = migrate(&["--database-url", &db.url, "--down", "1"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(
        stdout(&down).contains("rolled back 0022 archives"),
        "{}",
        stdout(&down)
    );
    assert_one_line_error(
        &migrate(&["--database-url", &db.url, "--down", "99"]),
        "only 21 are applied",
    );

    // A database with a schema and data is backed up before a migration (MySQL cannot roll
    // back DDL), into the data directory unless told where.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let up = migrate(&["--database-url", &db.url, "--data-dir", data_dir]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(stdout(&up).contains("backed up to"), "{}", stdout(&up));
    let backups: Vec<_> = std::fs::read_dir(data.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1);
    assert!(backups[0].join("manifest.json").exists());
    assert!(backups[0].join("database.sql").exists());
    assert!(migrate(&["--database-url", &db.url, "--down", "1"])
        .status
        .success());
    let skipped = migrate(&[
        "--database-url",
        &db.url,
        "--data-dir",
        data_dir,
        "--no-backup",
    ]);
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert!(!stdout(&skipped).contains("backed up"));
    assert!(migrate(&["--database-url", &db.url, "--down", "1"])
        .status
        .success());

    // A migration that died halfway leaves a dirty mark: refuse, and say how to recover.
    let mut conn = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (22, 'x', 0, x'00', 0)")
        .execute(&mut conn).await.unwrap();
    let dirty = migrate(&["--database-url", &db.url]);
    assert_one_line_error(&dirty, "migration 22 failed partway");
    assert!(stderr(&dirty).contains("DELETE FROM _sqlx_migrations WHERE version = 22"));
    // Nothing was touched: migration 22's tables are still absent.
    let column: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME IN ('job_log_archives', 'audit_archives')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(column, 0);
    let _ = conn.close().await;
}

#[test]
fn sqlite_is_the_default_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_outpost-controller"))
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .env_remove("OUTPOST_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("outpost.db").exists());
    assert!(stdout(&out).contains("22 migration(s) applied"));
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(
        mode(&dir.path().join("outpost.db")),
        0o600,
        "the store holds password hashes"
    );
    let init = Command::new(env!("CARGO_BIN_EXE_outpost-controller"))
        .args(["init", "--data-dir"])
        .arg(dir.path())
        .env_remove("OUTPOST_DATABASE_URL")
        .env_remove("OUTPOST_ADMIN_PASSWORD")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    assert_eq!(
        mode(&dir.path().join("pki")),
        0o700,
        "the CA key's directory"
    );
    assert_eq!(mode(&dir.path().join("pki/ca.key")), 0o600);
}

#[test]
fn a_configuration_file_is_read_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = dir.path().join("from-file.db");
    let config = dir.path().join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://{}\"\nretention_days = 30\n",
            from_file.display()
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_outpost-controller"))
            .args(["migrate", "--config"])
            .arg(&config)
            .args(extra)
            .env_remove("OUTPOST_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(from_file.exists(), "the file's database_url was used");
    let from_flag = dir.path().join("from-flag.db");
    let out = run(&[
        "--database-url",
        &format!("sqlite://{}", from_flag.display()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(from_flag.exists(), "the flag overrides the file");
    std::fs::write(&config, "retention_dayz = 30\n").unwrap();
    assert_one_line_error(&run(&[]), "unknown field `retention_dayz`");
}

#[test]
fn help_explains_the_database_choice() {
    let out = Command::new(env!("CARGO_BIN_EXE_outpost-controller"))
        .arg("--help")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("mysql://") && text.contains("sqlite://") && text.contains("migrate"),
        "{text}"
    );
}
