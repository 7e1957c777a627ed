//! The store: all of Outpost's state, in MySQL/MariaDB (production) or an embedded SQLite file
//! (evaluation, development, small sites).
//!
//! One API serves both. SQL is written once where the dialects agree, which is almost
//! everywhere: `?` placeholders, timestamps bound from Rust rather than `NOW()`, JSON bound as
//! text. Each method runs its body once per backend through [`on_pool!`], so a query is typed
//! against the concrete driver and no `Any` driver is involved.

pub mod agents;
pub mod archives;
pub mod audit;
pub mod blackouts;
pub mod bulk;
pub mod census;
pub mod credentials;
pub mod dashboard;
pub mod jobs;
pub mod launch;
pub mod listing;
pub mod logs;
pub mod migrate;
pub mod notifications;
pub mod outbox;
pub mod partitions;
pub mod playbooks;
pub mod projects;
pub mod replica;
pub mod results;
mod retire;
pub mod runs;
pub mod schedules;
pub mod servers;
pub mod templates;
pub mod tickets;
pub mod tokens;
pub mod users;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection};
use thiserror::Error;

/// Runs `$body` with `$pool` bound to the concrete pool of the store's backend.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Mysql($pool) => $body,
            $crate::store::Backend::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Opens the transaction of a change. On SQLite it is `BEGIN IMMEDIATE`: a deferred
/// transaction that reads before it writes cannot wait for the write lock when another
/// connection holds it (SQLite returns "database is locked" at once rather than risk a
/// deadlock, whatever the busy timeout), so every change takes the lock up front and waits
/// its turn. MySQL's transactions begin as they always have.
pub(crate) trait WritePool {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send;
}

impl WritePool for MySqlPool {
    type Db = sqlx::MySql;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, sqlx::MySql>>> + Send
    {
        self.begin()
    }
}

impl WritePool for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>>> + Send
    {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

/// Appends to a query builder `column = ?` for each filter `(column, value)` whose value is
/// `Some`, and `column op ?` for each such range `(column, op, value)`, joined by `WHERE` and
/// `AND`; yields whether none was added (the next condition starts with `WHERE`).
macro_rules! conditions {
    ($qb:ident, [$(($col:literal, $val:expr)),* $(,)?], [$(($rcol:literal, $rop:literal, $rval:expr)),* $(,)?]) => {{
        #[allow(unused_mut)]
        let mut first = true;
        $(
            if let Some(v) = $val {
                $qb.push(if first { " WHERE " } else { " AND " });
                $qb.push(concat!($col, " = "));
                $qb.push_bind(v);
                first = false;
            }
        )*
        $(
            if let Some(v) = $rval {
                $qb.push(if first { " WHERE " } else { " AND " });
                $qb.push(concat!($rcol, " ", $rop, " "));
                $qb.push_bind(v);
                first = false;
            }
        )*
        first
    }};
}
pub(crate) use conditions;

/// Runs a filtered listing and its count on either backend and yields a [`Page`].
///
/// Each filter `(column, value)` whose value is `Some` adds `column = ?` (the value bound);
/// each range `(column, op, value)` adds `column op ?`. A filter left out adds nothing, so the
/// database sees exactly the conditions asked for and can use its indexes (a catch-all
/// `? IS NULL OR column = ?` would hide them). Column, table, operator and order names are
/// literals of the caller, never input.
macro_rules! page {
    ($store:expr, $ty:ty, select: $cols:expr, from: $from:expr, order: $order:expr, paging: $paging:expr,
     filters: [$(($col:literal, $val:expr)),* $(,)?]
     $(, ranges: [$(($rcol:literal, $rop:literal, $rval:expr)),* $(,)?])?) => {{
        let paging: $crate::model::Paging = $paging;
        let (items, total) = $crate::store::on_pool!($store, p => {
            #[allow(unused_mut, unused_assignments)]
            let mut build = |head: String| {
                let mut qb = sqlx::QueryBuilder::new(head);
                $crate::store::conditions!(qb, [$(($col, $val)),*], [$($(($rcol, $rop, $rval)),*)?]);
                qb
            };
            let mut select = build(format!("SELECT {} FROM {}", $cols, $from));
            select.push(format!(" ORDER BY {} LIMIT ", $order));
            select.push_bind(paging.limit);
            select.push(" OFFSET ");
            select.push_bind(paging.offset);
            let items = select.build_query_as::<$ty>().fetch_all(p).await?;
            let mut count = build(format!("SELECT COUNT(*) FROM {}", $from));
            let total: i64 = count.build_query_scalar().fetch_one(p).await?;
            (items, total)
        });
        $crate::model::Page { items, total, total_exact: true, limit: paging.limit, offset: paging.offset, next: None }
    }};
}
pub(crate) use page;

/// What went wrong in the store, phrased for the person who has to act on it.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    #[error("cannot reach the database at {target}: {detail}. Is it running, and are host and port right?")]
    Unreachable { target: String, detail: String },
    #[error("the database at {target} refused the login: check the user and password in the URL (and if the server accepts only TLS, add ?ssl-mode=VERIFY_CA&ssl-ca=<its CA file>)")]
    AccessDenied { target: String },
    #[error("the database at {target} accepts only TLS: add ?ssl-mode=VERIFY_CA&ssl-ca=<its CA file> to the URL")]
    TlsRequired { target: String },
    #[error("the database at {target} presented a TLS certificate that was refused: {problem}")]
    CertificateRefused {
        target: String,
        problem: CertificateProblem,
    },
    #[error("the database at {target} answers, but no pooled connection came free within {waited:?}: every connection is busy (raise --db-pool-size) or the database is too slow to answer")]
    Busy { target: String, waited: Duration },
    #[error("the database at {target} has no database '{name}': create it (CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci) or fix the URL")]
    UnknownDatabase { target: String, name: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{what} is held by another controller (waited {waited:?}): {hint}")]
    Held {
        what: &'static str,
        waited: Duration,
        hint: &'static str,
    },
    #[error("{what} has {count} {dependents}; {hint}")]
    InUse {
        what: String,
        count: i64,
        dependents: &'static str,
        hint: &'static str,
    },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("job {job} is {status}: cannot {action}")]
    WrongState {
        job: String,
        status: String,
        action: &'static str,
    },
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An error of the bulk-load connection ([`bulk`]): its own driver, the same database.
    #[error("database error (bulk load): {0}")]
    BulkLoad(#[from] mysql_async::Error),
    #[error(transparent)]
    Bulk(#[from] bulk::BulkError),
    /// A write made on the caller's behalf with others (the outcome recorder's shared commit)
    /// did not commit: nothing of it was recorded. Says why.
    #[error("not recorded: {0}")]
    Interrupted(String),
}

/// Why the database server's certificate failed verification, with what to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateProblem {
    /// No trusted CA issued it: `ca` is the URL's `ssl-ca` file, if it names one.
    UnknownIssuer { ca: Option<String> },
    /// It does not carry the host name the URL connects to; `detail` lists the names it has.
    WrongName { host: String, detail: String },
    /// Anything else (expired, not yet valid, revoked, unfit for a server).
    Other { detail: String, ca: Option<String> },
}

/// The CA file named in words: the URL's `ssl-ca`, or the system's store when there is none.
struct CaFile<'a>(&'a Option<String>);

impl std::fmt::Display for CaFile<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(path) => write!(f, "the CA file {path} (ssl-ca in the URL)"),
            None => f.write_str("the system's trusted CAs (the URL names no ssl-ca)"),
        }
    }
}

impl std::fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertificateProblem::UnknownIssuer { ca } => write!(
                f,
                "it was not issued by {}: set ssl-ca to the file of the CA that signed the \
                 database server's certificate",
                CaFile(ca)
            ),
            CertificateProblem::WrongName { host, detail } => write!(
                f,
                "it is not for '{host}', the host in the URL ({detail}): put in the URL a name \
                 the certificate carries, or reissue the certificate with '{host}' among its names"
            ),
            CertificateProblem::Other { detail, ca } => write!(
                f,
                "{detail}: check the certificate's validity dates and usage, that {} signed it, \
                 and that the host in the URL is a name it carries",
                CaFile(ca)
            ),
        }
    }
}

impl CertificateProblem {
    /// The certificate refusal inside a connection error, if that is what it is.
    fn of(err: &sqlx::Error, target: &str) -> Option<CertificateProblem> {
        let inner: &(dyn std::error::Error + 'static) = match err {
            sqlx::Error::Io(io) => io.get_ref()?,
            sqlx::Error::Tls(tls) => tls.as_ref(),
            _ => return None,
        };
        let rustls::Error::InvalidCertificate(cert) = inner.downcast_ref::<rustls::Error>()? else {
            return None;
        };
        let url = url::Url::parse(target).ok();
        let ca = url.as_ref().and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "ssl-ca" || k == "sslca")
                .map(|(_, v)| v.into_owned())
        });
        let host = url
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        Some(match cert {
            rustls::CertificateError::UnknownIssuer => CertificateProblem::UnknownIssuer { ca },
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. } => {
                CertificateProblem::WrongName {
                    host,
                    detail: cert.to_string(),
                }
            }
            other => CertificateProblem::Other {
                detail: other.to_string(),
                ca,
            },
        })
    }
}

impl StoreError {
    /// The database refused the statement itself (a value it will not take, a constraint):
    /// sent again unchanged it would be refused again. Gives the database's own words.
    /// A server's answer that the connection or the server is going away, or a lock conflict,
    /// is not a refusal: the same statement may well pass later (see [`ServerError`]).
    pub fn refusal(&self) -> Option<&str> {
        match self {
            StoreError::Database(sqlx::Error::Database(db))
                if ServerError::of(db.as_ref()) == ServerError::Refusal =>
            {
                Some(db.message())
            }
            StoreError::BulkLoad(mysql_async::Error::Server(e))
                if ServerError::classify(e.code, &e.state) == ServerError::Refusal =>
            {
                Some(&e.message)
            }
            _ => None,
        }
    }

    /// The database could not be reached or would not let us in: the same request may well
    /// succeed later.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::AccessDenied { .. }
                | StoreError::CertificateRefused { .. }
                | StoreError::Busy { .. }
                | StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))
                | StoreError::BulkLoad(mysql_async::Error::Io(_))
        ) || match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                ServerError::of(db.as_ref()) == ServerError::GoingAway
            }
            StoreError::BulkLoad(mysql_async::Error::Server(e)) => {
                ServerError::classify(e.code, &e.state) == ServerError::GoingAway
            }
            _ => false,
        }
    }

    /// A lock wait timed out or a deadlock was broken: the same statements may pass if run
    /// again (on their own, or later).
    pub fn is_conflict(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                ServerError::of(db.as_ref()) == ServerError::Conflict
            }
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// Maps a write's error: a unique violation becomes [`StoreError::Conflict`] naming `what`.
    pub(crate) fn on_write(err: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what()),
            _ => StoreError::Database(err),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What an error the database server sent means for the statement that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerError {
    /// The statement itself was refused (a value, a constraint): it would be refused again.
    Refusal,
    /// The connection or the server is going away (shutting down, the connection killed or
    /// timed out, a network error on its side): a MySQL server says so in an error packet to
    /// a connection, which the next statement on it reads.
    GoingAway,
    /// A lock wait timed out or a deadlock was broken: the same statement may pass next time.
    Conflict,
}

impl ServerError {
    fn of(db: &dyn sqlx::error::DatabaseError) -> ServerError {
        if let Some(m) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
            return ServerError::classify(m.number(), m.code().unwrap_or_default());
        }
        // SQLite: SQLITE_BUSY and SQLITE_LOCKED, with their extended codes.
        match db
            .code()
            .and_then(|c| c.parse::<u32>().ok())
            .map(|c| c & 0xff)
        {
            Some(5 | 6) => ServerError::Conflict,
            _ => ServerError::Refusal,
        }
    }

    /// By MySQL/MariaDB error number and SQLSTATE.
    fn classify(number: u16, sqlstate: &str) -> ServerError {
        match number {
            // Shutdown in progress, aborted connection, network errors, connection killed,
            // idle too long (MySQL 8.0.24+).
            1053 | 1152 | 1158..=1161 | 1927 | 4031 => ServerError::GoingAway,
            1205 | 1213 => ServerError::Conflict,
            _ if sqlstate.starts_with("08") => ServerError::GoingAway,
            _ => ServerError::Refusal,
        }
    }
}

/// Pool sizing. The defaults are the seed's: 20 connections plus 10 overflow, 30 s to acquire
/// one, each recycled after an hour.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub size: u32,
    pub overflow: u32,
    pub acquire_timeout: Duration,
    pub recycle: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 20,
            overflow: 10,
            acquire_timeout: Duration::from_secs(30),
            recycle: Duration::from_secs(3600),
        }
    }
}

/// A pooled MySQL connection idle this long is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// The options of a MySQL pool (the primary's and a replica's).
pub(crate) fn mysql_pool_options(pool: &PoolConfig) -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(pool.size + pool.overflow)
        .acquire_timeout(pool.acquire_timeout)
        .max_lifetime(Some(pool.recycle))
        // sqlx pings a connection on every acquire by default: a round trip before each
        // statement run on the pool, a third of a launch's. It also pings on release (in the
        // background), so a connection idle for less than this was alive a moment ago; one
        // idle longer, which a restarted or timed-out server may have dropped, is still
        // tested before use.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Mysql(MySqlPool),
    Sqlite(SqlitePool),
}

/// Which SQL dialect a store speaks, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Mysql,
    Sqlite,
}

/// A handle on the database; cheap to clone (it is a pool).
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) backend: Backend,
    /// bcrypt cost for new password hashes; never below 12.
    pub(crate) bcrypt_cost: u32,
    /// The most bytes of values one statement may carry: half the server's
    /// `max_allowed_packet`, read at connect.
    pub(crate) statement_bytes: usize,
    /// The URL with its password redacted, to name the database in errors.
    pub(crate) target: String,
    /// Whether job_logs is in monthly partitions ([`partitions`]): lines are then written
    /// and read through `job_log_marks`. Shared by every clone.
    pub(crate) partitioned: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The read replica that [`Store::reads`] may send pages to; `None` on the replica's own
    /// store, so that it never sends reads further.
    pub(crate) replica: Option<std::sync::Arc<replica::Replica>>,
    /// The LOAD DATA LOCAL INFILE pool log lines are written through on MySQL/MariaDB
    /// ([`bulk`]); `None` on SQLite and on the replica's store.
    pub(crate) bulk: Option<std::sync::Arc<bulk::Bulk>>,
}

/// ` IN (…)` of `items`, bound; an empty list matches nothing (`IN (NULL)` is never true).
pub(crate) fn push_in<'a, DB: sqlx::Database, T>(qb: &mut sqlx::QueryBuilder<'a, DB>, items: &[T])
where
    T: sqlx::Encode<'a, DB> + sqlx::Type<DB> + Copy + 'a,
{
    qb.push(" IN (");
    if items.is_empty() {
        qb.push("NULL");
    }
    let mut sep = qb.separated(", ");
    for i in items {
        sep.push_bind(*i);
    }
    qb.push(")");
}

/// A database URL with its password replaced, safe to print.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

impl Store {
    /// Opens a pool for `url`: `mysql://user:pass@host:port/db` (or `mariadb://`), or
    /// `sqlite://path/to/file.db` (created if missing). Fails fast with a clear error when the
    /// database cannot be reached.
    pub async fn connect(url: &str, pool: &PoolConfig) -> Result<Store> {
        let target = redact_url(url);
        // SQLite has no packet limit; statements are bounded by rows there.
        let mut statement_bytes = 64 * 1024 * 1024;
        let mut bulk = None;
        let backend = if let Some(rest) = url
            .strip_prefix("mysql:")
            .or_else(|| url.strip_prefix("mariadb:"))
        {
            let opts = MySqlConnectOptions::from_str(&format!("mysql:{rest}"))
                .map_err(|e| StoreError::BadUrl(format!("{target}: {e}")))?
                .timezone(Some("+00:00".to_owned()))
                .charset("utf8mb4");
            let db_name = opts.get_database().unwrap_or_default().to_owned();
            if db_name.is_empty() {
                return Err(StoreError::BadUrl(format!(
                    "{target}: name the database, e.g. mysql://user:pass@host:3306/outpost"
                )));
            }
            // One direct connection first: the pool would retry a refused connection until
            // its acquire timeout, and an operator wants the reason at once.
            let mut probe = sqlx::MySqlConnection::connect_with(&opts)
                .await
                .map_err(|e| classify_connect_error(e, &target, &db_name))?;
            let packet: Option<u64> = sqlx::query_scalar("SELECT @@max_allowed_packet")
                .fetch_one(&mut probe)
                .await
                .ok();
            // Whether the server gave this connection TLS unasked (ssl-mode PREFERRED, the
            // default): the bulk connections then insist on it too, never send lines in clear
            // where the store's own connections would not.
            let cipher: Option<(String, String)> =
                sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                    .fetch_optional(&mut probe)
                    .await
                    .ok()
                    .flatten();
            let probe_tls = match cipher {
                Some((_, c)) if !c.is_empty() => bulk::ProbeTls::Used,
                _ => bulk::ProbeTls::NotUsed,
            };
            bulk = Some(std::sync::Arc::new(bulk::Bulk::open(
                &format!("mysql:{rest}"),
                probe_tls,
                pool.recycle,
            )?));
            let _ = probe.close().await;
            statement_bytes = packet
                .map(|p| (p / 2) as usize)
                .unwrap_or(2 * 1024 * 1024)
                .max(256 * 1024);
            let p = mysql_pool_options(pool)
                .connect_with(opts)
                .await
                .map_err(|e| classify_connect_error(e, &target, &db_name))?;
            Backend::Mysql(p)
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            if path.is_empty() {
                return Err(StoreError::BadUrl(format!(
                    "{target}: name the file, e.g. sqlite:///var/lib/outpost/outpost.db"
                )));
            }
            // The store holds password hashes and the audit trail: made mode 0600, before SQLite
            // creates it with the process's umask (its -wal and -shm take the file's mode).
            // Only a file that does not exist yet is opened: closing any descriptor of the file
            // drops every POSIX lock this process holds on it (fcntl locks belong to the
            // process), including those of a store already open on it here. Another process's
            // last connection could then take the exclusive lock, checkpoint past our readers
            // and delete the WAL and -shm under our writers. SQLite's own descriptors are safe:
            // it counts its locks per file within a process and defers closing those that hold
            // one; only a plain open beside it is not.
            {
                use std::os::unix::fs::OpenOptionsExt;
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path);
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .foreign_keys(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30));
            // SQLite has one writer at a time; a small pool avoids lock convoys.
            let p = SqlitePoolOptions::new()
                .max_connections(pool.size.clamp(1, 8))
                .acquire_timeout(pool.acquire_timeout)
                .connect_with(opts)
                .await
                .map_err(|e| StoreError::Unreachable {
                    target: target.clone(),
                    detail: e.to_string(),
                })?;
            Backend::Sqlite(p)
        } else {
            return Err(StoreError::BadUrl(format!(
                "{target}: the scheme must be mysql://, mariadb:// or sqlite://"
            )));
        };
        let store = Store {
            backend,
            bcrypt_cost: 12,
            statement_bytes,
            target,
            partitioned: Default::default(),
            replica: None,
            bulk,
        };
        // A database not migrated yet has no job_logs: it is not partitioned either.
        let _ = store.refresh_layout().await;
        Ok(store)
    }

    /// Sets the bcrypt cost for new passwords (clamped to at least 12).
    pub fn with_bcrypt_cost(mut self, cost: u32) -> Store {
        self.bcrypt_cost = cost.max(12);
        self
    }

    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Mysql(_) => Dialect::Mysql,
            Backend::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, p => { sqlx::query("SELECT 1").execute(p).await?; });
        Ok(())
    }

    /// A round trip that answers within about `deadline` (twice it at worst), with the cause
    /// when the database does not answer.
    ///
    /// The pool retries a refused connection until its acquire timeout (30 s by default) and
    /// then says only that it timed out: too late for a probe, and no help to whoever must act.
    /// So the pooled round trip gets `deadline`, and if it fails, one direct connection (also
    /// bounded by `deadline`) finds out why.
    pub async fn ping_within(&self, deadline: Duration) -> Result<()> {
        let pooled = on_pool!(self, p => {
            tokio::time::timeout(deadline, sqlx::query("SELECT 1").execute(p))
                .await
                .map(|r| r.map(|_| ()))
        });
        let pooled = match pooled {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => None,
            Ok(Err(e)) => Some(e),
        };
        let (direct, db_name) = on_pool!(self, p => {
            let opts = p.connect_options();
            let direct = match tokio::time::timeout(deadline, opts.connect()).await {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    Ok(())
                }
                Ok(Err(e)) => Err(Some(e)),
                Err(_) => Err(None),
            };
            (direct, opts.database_name())
        });
        Err(match (direct, pooled) {
            // The database answers a new connection: the pool's own error is the story.
            (Ok(()), Some(e)) => StoreError::Database(e),
            (Ok(()), None) => StoreError::Busy {
                target: self.target.clone(),
                waited: deadline,
            },
            (Err(Some(e)), _) => classify_connect_error(e, &self.target, &db_name),
            (Err(None), _) => StoreError::Unreachable {
                target: self.target.clone(),
                detail: format!("no answer within {deadline:?}"),
            },
        })
    }

    pub async fn close(&self) {
        if let Some(bulk) = &self.bulk {
            bulk.close().await;
        }
        on_pool!(self, p => p.close().await)
    }
}

/// The database a pool's options name (MySQL); a SQLite file has none to name.
trait DatabaseName {
    fn database_name(&self) -> String;
}

impl DatabaseName for MySqlConnectOptions {
    fn database_name(&self) -> String {
        self.get_database().unwrap_or_default().to_owned()
    }
}

impl DatabaseName for SqliteConnectOptions {
    fn database_name(&self) -> String {
        String::new()
    }
}

fn classify_connect_error(err: sqlx::Error, target: &str, db_name: &str) -> StoreError {
    if let Some(problem) = CertificateProblem::of(&err, target) {
        return StoreError::CertificateRefused {
            target: target.to_owned(),
            problem,
        };
    }
    if let sqlx::Error::Database(db) = &err {
        if db.message().contains("insecure transport") || db.message().contains("secure_transport")
        {
            return StoreError::TlsRequired {
                target: target.to_owned(),
            };
        }
        match db.code().as_deref() {
            // ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR
            Some("28000") | Some("42000") if db.message().contains("Access denied") => {
                return StoreError::AccessDenied {
                    target: target.to_owned(),
                }
            }
            _ if db.message().contains("Unknown database") => {
                return StoreError::UnknownDatabase {
                    target: target.to_owned(),
                    name: db_name.to_owned(),
                }
            }
            _ => {}
        }
    }
    StoreError::Unreachable {
        target: target.to_owned(),
        detail: err.to_string(),
    }
}

/// Now, in UTC, to the second (DATETIME's precision), as bound into every timestamp column.
pub(crate) fn now() -> NaiveDateTime {
    stamp(Utc::now())
}

/// A moment as the store keeps it (UTC, whole seconds).
pub(crate) fn stamp(at: DateTime<Utc>) -> NaiveDateTime {
    at.naive_utc().trunc_subsecs(0)
}

/// Checks that an optional JSON document is an object and renders it for binding.
pub(crate) fn json_object_text(
    field: &'static str,
    value: Option<&serde_json::Value>,
) -> Result<Option<String>> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(obj @ serde_json::Value::Object(_)) => Ok(Some(obj.to_string())),
        Some(other) => Err(StoreError::invalid(
            field,
            format!("must be a JSON object, got {}", json_kind(other)),
        )),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Returns the id of the row an INSERT just made, for either backend's result type.
pub(crate) trait InsertedId {
    fn inserted_id(&self) -> i64;
}

impl InsertedId for sqlx::mysql::MySqlQueryResult {
    fn inserted_id(&self) -> i64 {
        self.last_insert_id() as i64
    }
}

impl InsertedId for sqlx::sqlite::SqliteQueryResult {
    fn inserted_id(&self) -> i64 {
        self.last_insert_rowid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_going_away_or_a_lock_conflict_is_no_refusal() {
        use ServerError::*;
        for (number, state, meant) in [
            (1053, "08S01", GoingAway), // shutdown in progress
            (1927, "70100", GoingAway), // MariaDB: connection killed
            (4031, "HY000", GoingAway), // MySQL: idle past wait_timeout
            (1040, "08004", GoingAway), // too many connections
            (1159, "08S01", GoingAway), // network read interrupted
            (1213, "40001", Conflict),
            (1205, "HY000", Conflict),
            (1062, "23000", Refusal), // duplicate key
            (1406, "22001", Refusal), // data too long
            (1452, "23000", Refusal), // foreign key
        ] {
            assert_eq!(
                ServerError::classify(number, state),
                meant,
                "{number} {state}"
            );
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("mysql://root:hunter2@db:3306/outpost"),
            "mysql://root:***@db:3306/outpost"
        );
        assert!(!redact_url("nonsense").contains("nonsense"));
    }

    #[test]
    fn only_objects_pass_as_json_objects() {
        let obj = serde_json::json!({"dc": "fra1"});
        assert_eq!(
            json_object_text("tags", Some(&obj)).unwrap().as_deref(),
            Some(r#"{"dc":"fra1"}"#)
        );
        let err = json_object_text("tags", Some(&serde_json::json!([1]))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid tags: must be a JSON object, got an array"
        );
    }
}
