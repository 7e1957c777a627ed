//! A fresh database per test (MariaDB or SQLite), dropped afterwards.
//!
//! MariaDB is expected on 127.0.0.1:3306 as root without a password (the README's test
//! command starts it); override with `OUTPOST_TEST_MYSQL` (a server URL without a database).
//! A test that cannot reach it fails with the hint, it never passes silently.

use std::path::PathBuf;

use sqlx::Connection;

/// The MariaDB server tests create their databases on.
pub fn mysql_server_url() -> String {
    std::env::var("OUTPOST_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// Which backend a test database lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    MariaDb,
    Sqlite,
}

/// A database that exists for one test: its own MariaDB schema or SQLite file, removed on drop.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    mysql_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::MariaDb => TestDb::mariadb().await,
            Backend::Sqlite => TestDb::sqlite(),
        }
    }

    /// A fresh, empty MariaDB database named `outpost_test_<random>`.
    pub async fn mariadb() -> TestDb {
        let server = mysql_server_url();
        let name = format!("outpost_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::MySqlConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach MariaDB at {server}: {e}\n\
                 Run the tests through `bash .ci/run` (it installs and starts MariaDB), or start it with\n\
                 `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`"
            )
        });
        sqlx::query(&format!(
            "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .execute(&mut conn)
        .await
        .expect("create test database");
        let _ = conn.close().await;
        TestDb {
            backend: Backend::MariaDb,
            url: format!("{server}/{name}"),
            mysql_name: Some(name),
            _dir: None,
        }
    }

    /// A fresh SQLite file in its own temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("outpost.db");
        TestDb {
            backend: Backend::Sqlite,
            url: format!("sqlite://{}", path.display()),
            mysql_name: None,
            _dir: Some(dir),
        }
    }

    /// The SQLite file, for tests that look at it directly.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().join("outpost.db"))
    }

    /// Runs one statement of the test's own making (e.g. to back-date rows), on a connection
    /// of its own.
    pub async fn exec(&self, sql: &str) {
        match self.backend {
            Backend::MariaDb => {
                let mut c = sqlx::MySqlConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::query(sql).execute(&mut c).await.expect(sql);
                let _ = c.close().await;
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::query(sql).execute(&mut c).await.expect(sql);
                let _ = c.close().await;
            }
        }
    }

    /// The MariaDB schema name, for tests that read information_schema.
    pub fn mysql_name(&self) -> Option<&str> {
        self.mysql_name.as_deref()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.mysql_name.take() else {
            return;
        };
        let server = mysql_server_url();
        // Drop may run inside a runtime that is shutting down: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::MySqlConnection::connect(&server).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// The workspace root (where Cargo.toml and migrations/ are found).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}
