//! store::bulk — job_logs written with `LOAD DATA LOCAL INFILE … IGNORE` on MySQL/MariaDB, the
//! database's own bulk path: 1.1–1.3× the rate of multi-row INSERTs on this
//! machine (issue 26; BENCHMARKS.md). sqlx
//! cannot send it (its issue 1766), so this module keeps a small pool of its own on
//! `mysql_async`, opened from the same URL as the store's.
//!
//! The "file" is never a file. Each flush's rows are encoded into a buffer in memory, and the
//! statement names a fixed token instead of a path. The pool's only LOCAL INFILE handler
//! serves the buffer registered for the statement being run (a task-local value that lives as
//! long as that statement's future), and only when the server asks for exactly the token; any
//! other request — a hostile server asking for `/etc/passwd`, a request during some other
//! statement, a second request for the same statement — gets an error and no bytes. Nothing
//! here ever opens a path, so there is no temporary file for anyone to swap either.
//!
//! Rows are tab-separated, one per line, escaped with a backslash ([`encode`]); a replayed
//! batch lands once because of `IGNORE` on the unique `(job_id, line_number)` key, as with
//! `INSERT IGNORE`.
//!
//! A server that refuses LOCAL INFILE (MySQL 8's default `local_infile=OFF`, MariaDB started
//! with `--local-infile=0`) is detected at the first flush; the store then writes with INSERTs
//! for the rest of the process's life, says so once in the log and in `/metrics`.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use mysql_async::prelude::{GlobalHandler, Queryable};
use mysql_async::{InfileData, LocalInfileError, OptsBuilder, PoolConstraints, PoolOpts, SslOpts};
use thiserror::Error;

use crate::model::NewLogLine;

mod encode;
pub use encode::{encode, escape_into};

/// The name the statement gives its "file"; the handler serves nothing under any other name.
pub(crate) const INFILE_TOKEN: &str = "outpost:job_logs";

/// The statement. The separators are spelled as hex literals — a tab, a backslash, a newline,
/// i.e. `FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'` — so that they mean
/// the same whatever the server's `sql_mode` (with NO_BACKSLASH_ESCAPES, `'\\'` would be two
/// characters and the statement refused).
const LOAD_SQL: &str = "LOAD DATA LOCAL INFILE 'outpost:job_logs' IGNORE INTO TABLE job_logs \
     CHARACTER SET utf8mb4 FIELDS TERMINATED BY X'09' ESCAPED BY X'5C' LINES TERMINATED BY X'0A' \
     (job_id, line_number, content, log_level, timestamp)";

/// Connections of the bulk pool: the ingest task writes two flushes at once, and its
/// one-by-one path may take a third.
const MAX_CONNECTIONS: usize = 4;

/// The buffer is handed to the driver in pieces of this size: each becomes one protocol packet,
/// far below any server's `max_allowed_packet`.
const CHUNK: usize = 64 * 1024;

/// Server errors that mean "LOCAL INFILE is not allowed here": ER_NOT_ALLOWED_COMMAND (1148),
/// MySQL 8's ER_CLIENT_LOCAL_FILES_DISABLED (3948), MariaDB's
/// ER_LOAD_INFILE_CAPABILITY_DISABLED (4166).
const REFUSED_CODES: [u16; 3] = [1148, 3948, 4166];

/// What went wrong opening the bulk pool's options from the store's URL.
#[derive(Debug, Error)]
pub enum BulkError {
    #[error("the database URL cannot be used for bulk loads: {0}")]
    BadUrl(String),
}

tokio::task_local! {
    /// The rows of the statement being run on this task, taken by the first matching request.
    static INFILE: RefCell<Option<Bytes>>;
}

/// The pool's LOCAL INFILE handler: serves the registered buffer for the token, once.
struct RegisteredBufferOnly;

impl GlobalHandler for RegisteredBufferOnly {
    fn handle(&self, file_name: &[u8]) -> BoxFuture<'static, Result<InfileData, LocalInfileError>> {
        // The driver calls this while polling the statement's future, so the task-local value
        // is the one registered for that statement (or none).
        let data = if file_name == INFILE_TOKEN.as_bytes() {
            INFILE.try_with(|d| d.borrow_mut().take()).ok().flatten()
        } else {
            None
        };
        let requested = String::from_utf8_lossy(file_name).into_owned();
        Box::pin(async move {
            let data = data.ok_or_else(|| {
                LocalInfileError::OtherError(
                    format!("the server asked for {requested:?}: this client sends no files")
                        .into(),
                )
            })?;
            let chunks: Vec<std::io::Result<Bytes>> = (0..data.len())
                .step_by(CHUNK)
                .map(|at| Ok(data.slice(at..(at + CHUNK).min(data.len()))))
                .collect();
            Ok(futures_util::stream::iter(chunks).boxed())
        })
    }
}

/// The bulk pool and whether the server lets it be used.
pub(crate) struct Bulk {
    pool: mysql_async::Pool,
    /// Set once the server refused LOCAL INFILE: writes go through INSERTs from then on.
    refused: AtomicBool,
}

impl std::fmt::Debug for Bulk {
    // The pool's options hold the password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulk")
            .field("refused", &self.refused.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// How the store's own connection found TLS, for `ssl-mode=PREFERRED` (the default): the bulk
/// connections do as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeTls {
    Used,
    NotUsed,
}

impl Bulk {
    /// The bulk pool for a `mysql://` / `mariadb://` URL, with the same TLS demands as sqlx
    /// makes of it (`ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key`, `socket`). Connects lazily.
    pub(crate) fn open(
        url: &str,
        probe_tls: ProbeTls,
        recycle: Duration,
    ) -> Result<Bulk, BulkError> {
        let opts = opts_from_url(url, probe_tls, recycle)?;
        Ok(Bulk {
            pool: mysql_async::Pool::new(opts),
            refused: AtomicBool::new(false),
        })
    }

    /// Whether flushes should try the bulk path.
    pub(crate) fn usable(&self) -> bool {
        !self.refused.load(Ordering::Relaxed)
    }

    /// Remembers that the server refuses LOCAL INFILE; logs it the first time.
    pub(crate) fn refuse(&self, err: &mysql_async::Error) {
        if !self.refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, "the database refuses LOAD DATA LOCAL INFILE; log lines are written with INSERTs instead (slower). Set local_infile=ON on the server to use the bulk path");
        }
        crate::metrics::global().ingest_bulk_load.set(0);
    }

    /// A pooled connection.
    pub(crate) async fn conn(&self) -> Result<mysql_async::Conn, mysql_async::Error> {
        self.pool.get_conn().await
    }

    pub(crate) async fn close(&self) {
        let _ = self.pool.clone().disconnect().await;
    }
}

/// Runs the bulk statement for `rows` in `tx`; returns how many rows were new.
pub(crate) async fn load(
    tx: &mut mysql_async::Transaction<'_>,
    rows: &[NewLogLine],
) -> Result<u64, mysql_async::Error> {
    INFILE
        .scope(
            RefCell::new(Some(Bytes::from(encode(rows)))),
            tx.query_drop(LOAD_SQL),
        )
        .await?;
    Ok(tx.affected_rows())
}

/// Whether `err` is the server refusing LOCAL INFILE itself (not the rows).
pub(crate) fn is_local_infile_refused(err: &mysql_async::Error) -> bool {
    matches!(err, mysql_async::Error::Server(e) if REFUSED_CODES.contains(&e.code))
}

/// Runs `sql` on a bulk connection while `buffer` is registered, as [`load`] does: shows what
/// the handler gives a server that asks for another name than the token.
#[cfg(test)]
async fn run_with_registered_buffer(
    conn: &mut mysql_async::Conn,
    sql: &str,
    buffer: Vec<u8>,
) -> Result<u64, mysql_async::Error> {
    INFILE
        .scope(
            RefCell::new(Some(Bytes::from(buffer))),
            conn.query_drop(sql),
        )
        .await?;
    Ok(conn.affected_rows())
}

/// Options for the bulk pool from the store's URL.
fn opts_from_url(
    url: &str,
    probe_tls: ProbeTls,
    recycle: Duration,
) -> Result<mysql_async::Opts, BulkError> {
    let parsed = url::Url::parse(url).map_err(|e| BulkError::BadUrl(e.to_string()))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| BulkError::BadUrl("user or password is not UTF-8".into()))
    };
    let user = match parsed.username() {
        "" => None,
        u => Some(decode(u)?),
    };
    let pass = parsed.password().map(decode).transpose()?;
    let db = parsed.path().trim_start_matches('/');
    let mut mode = String::from("PREFERRED");
    let (mut ca, mut cert, mut key, mut socket) = (None, None, None, None);
    for (k, v) in parsed.query_pairs() {
        match &*k {
            "ssl-mode" | "sslmode" => mode = v.to_ascii_uppercase(),
            "ssl-ca" | "sslca" => ca = Some(PathBuf::from(&*v)),
            "ssl-cert" | "sslcert" => cert = Some(PathBuf::from(&*v)),
            "ssl-key" | "sslkey" => key = Some(PathBuf::from(&*v)),
            "socket" => socket = Some(v.into_owned()),
            _ => {}
        }
    }
    // The same promises as sqlx's ssl-mode: REQUIRED encrypts without checking the
    // certificate, VERIFY_CA checks its issuer, VERIFY_IDENTITY also the host name;
    // PREFERRED encrypts when the server offered it to the store's own connection.
    let tls = match mode.as_str() {
        "DISABLED" => false,
        "PREFERRED" => probe_tls == ProbeTls::Used,
        "REQUIRED" | "VERIFY_CA" | "VERIFY_IDENTITY" => true,
        other => return Err(BulkError::BadUrl(format!("unknown ssl-mode {other}"))),
    };
    let ssl = tls.then(|| {
        let mut ssl = SslOpts::default();
        match mode.as_str() {
            "VERIFY_IDENTITY" => {}
            "VERIFY_CA" => ssl = ssl.with_danger_skip_domain_validation(true),
            _ => ssl = ssl.with_danger_accept_invalid_certs(true),
        }
        if let Some(ca) = &ca {
            ssl = ssl
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        if let (Some(cert), Some(key)) = (&cert, &key) {
            ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        ssl
    });
    let constraints = PoolConstraints::new(0, MAX_CONNECTIONS).unwrap_or_default();
    // No COM_RESET_CONNECTION each time a connection goes back: it would cost a round trip
    // per flush, and the pool rolls back a transaction left open anyway.
    let pool = PoolOpts::default()
        .with_constraints(constraints)
        .with_reset_connection(false)
        .with_abs_conn_ttl(Some(recycle));
    let builder = OptsBuilder::default()
        .ip_or_hostname(parsed.host_str().unwrap_or("localhost"))
        .tcp_port(parsed.port().unwrap_or(3306))
        .user(user)
        .pass(pass)
        .db_name((!db.is_empty()).then(|| db.to_owned()))
        .socket(socket)
        .prefer_socket(false)
        .ssl_opts(ssl)
        .pool_opts(pool)
        // DATETIME holds no zone; set as the store's connections are, for any default.
        .setup(vec!["SET time_zone = '+00:00'"])
        .local_infile_handler(Some(RegisteredBufferOnly));
    Ok(builder.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server may answer any statement with a LOCAL INFILE request naming any path; the
    /// real server asks for the name in the statement, so statements naming other files play
    /// the hostile server here.
    #[tokio::test]
    async fn a_server_asking_for_another_file_gets_an_error_and_no_bytes() {
        let db = outpost_tests::TestDb::mariadb().await;
        db.exec("CREATE TABLE t (a TEXT NOT NULL)").await;
        let bulk = Bulk::open(&db.url, ProbeTls::NotUsed, Duration::from_secs(3600)).expect("bulk");
        let contents = |bulk: &Bulk| {
            let pool = bulk.pool.clone();
            async move {
                let mut conn = pool.get_conn().await.expect("conn");
                let rows: Vec<String> = conn.query("SELECT a FROM t").await.expect("select");
                rows
            }
        };
        for hostile in ["/etc/passwd", "outpost:job_logs.", "../outpost:job_logs"] {
            let mut conn = bulk.conn().await.expect("conn");
            let sql = format!("LOAD DATA LOCAL INFILE '{hostile}' INTO TABLE t");
            let err = run_with_registered_buffer(&mut conn, &sql, b"ours\n".to_vec())
                .await
                .expect_err("a file other than the token is refused");
            assert!(err.to_string().contains("sends no files"), "{err}");
            let _ = conn.disconnect().await;
        }
        // The token, but no buffer registered for this statement: nothing either.
        let mut conn = bulk.conn().await.expect("conn");
        let err = conn
            .query_drop(format!(
                "LOAD DATA LOCAL INFILE '{INFILE_TOKEN}' INTO TABLE t"
            ))
            .await
            .expect_err("no buffer, no data");
        assert!(err.to_string().contains("sends no files"), "{err}");
        let _ = conn.disconnect().await;
        assert_eq!(contents(&bulk).await, Vec::<String>::new());
        // The token with its buffer: served, once.
        let mut conn = bulk.conn().await.expect("conn");
        let sql = format!("LOAD DATA LOCAL INFILE '{INFILE_TOKEN}' INTO TABLE t");
        assert_eq!(
            run_with_registered_buffer(&mut conn, &sql, b"ours\n".to_vec())
                .await
                .expect("served"),
            1
        );
        drop(conn);
        assert_eq!(contents(&bulk).await, vec!["ours".to_owned()]);
        bulk.close().await;
    }

    #[test]
    fn only_refusals_of_local_infile_fall_back() {
        let server = |code| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: "no".into(),
                state: "42000".into(),
            })
        };
        assert!(is_local_infile_refused(&server(1148)));
        assert!(is_local_infile_refused(&server(3948)));
        assert!(is_local_infile_refused(&server(4166)));
        assert!(!is_local_infile_refused(&server(1062)));
    }

    #[test]
    fn urls_map_to_the_same_tls_demands() {
        let day = Duration::from_secs(3600);
        let o = opts_from_url("mysql://u:p%40ss@db:3307/outpost", ProbeTls::NotUsed, day)
            .expect("opts");
        assert_eq!(
            (
                o.ip_or_hostname(),
                o.tcp_port(),
                o.user(),
                o.pass(),
                o.db_name()
            ),
            ("db", 3307, Some("u"), Some("p@ss"), Some("outpost"))
        );
        assert!(
            o.ssl_opts().is_none(),
            "PREFERRED, and the server offered no TLS"
        );
        let o = opts_from_url("mysql://u@db/outpost", ProbeTls::Used, day).expect("opts");
        assert!(o.ssl_opts().is_some_and(|s| s.accept_invalid_certs()));
        let o = opts_from_url(
            "mysql://u@db/outpost?ssl-mode=VERIFY_CA&ssl-ca=/ca.pem",
            ProbeTls::NotUsed,
            day,
        )
        .expect("opts");
        let ssl = o.ssl_opts().expect("tls");
        assert!(!ssl.accept_invalid_certs() && ssl.skip_domain_validation());
        assert_eq!(ssl.root_certs().len(), 1);
        let o = opts_from_url(
            "mysql://u@db/outpost?ssl-mode=VERIFY_IDENTITY",
            ProbeTls::NotUsed,
            day,
        )
        .expect("opts");
        let ssl = o.ssl_opts().expect("tls");
        assert!(!ssl.accept_invalid_certs() && !ssl.skip_domain_validation());
        let o = opts_from_url(
            "mysql://u@db/outpost?ssl-mode=disabled",
            ProbeTls::Used,
            day,
        )
        .expect("opts");
        assert!(o.ssl_opts().is_none());
        assert!(opts_from_url(
            "mysql://u@db/outpost?ssl-mode=SOMETIMES",
            ProbeTls::Used,
            day
        )
        .is_err());
    }
}
