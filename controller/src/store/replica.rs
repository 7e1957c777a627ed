//! The read replica: a second pool, on a MySQL/MariaDB replica of the primary, that pages which
//! only show state (dashboard figures, job and audit lists, log pages and searches) read from,
//! so that they do not load the primary that claims, transitions and ingest need.
//!
//! A replica is used only while it is known to be good: a monitor ([`monitor`]) asks it for its
//! replication status every second, and it is bypassed (the primary answers) when it does not
//! answer, when its replication threads are stopped, or when it lags more than the bound. A read
//! the replica fails between two looks is tried again on the primary ([`Store::read`]), so a page
//! never fails because the replica just died.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlRow};
use sqlx::{Connection, Executor, Row};
use tokio_util::sync::CancellationToken;

use super::{classify_connect_error, redact_url, Backend, PoolConfig, Result, Store, StoreError};
use crate::metrics;

/// How often the monitor looks at the replica.
const POLL: Duration = Duration::from_secs(1);
/// How long one look may take: a replica that cannot answer within this is as good as down.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// How long a read waits for a replica connection before the primary is asked instead: the
/// pool retries a refused connection until then, and the primary is right there.
const ACQUIRE_WITHIN: Duration = Duration::from_secs(1);

/// The replica's pool and what the monitor last found.
#[derive(Debug)]
pub struct Replica {
    pool: MySqlPool,
    /// For the monitor's own connection, outside the pool: a look is not queued behind pages,
    /// and a refused connection says so at once instead of being retried until a timeout.
    opts: MySqlConnectOptions,
    /// The replica's URL with its password redacted.
    target: String,
    max_lag: Duration,
    /// Whether reads go to the replica now.
    in_use: AtomicBool,
    /// Seconds behind the primary at the last look; -1 when unknown (down, threads stopped).
    lag: AtomicI64,
    /// What the last look found, in words (for `/readyz`).
    said: std::sync::Mutex<String>,
}

/// What one look at the replica found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Replicating, this many seconds behind the primary.
    Behind(i64),
    /// The server answers but does not replicate: why, in the operator's words.
    NotReplicating(String),
    /// The server did not answer: why.
    Down(String),
}

/// Why a read failed on the replica, when the primary may still answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The row is not there yet: replication a little late, not a fault of the replica.
    Row,
    /// The replica could not answer (unreachable, or it refused a statement: a schema it has
    /// not caught up with): it is bypassed until the monitor finds it good again.
    Replica,
}

/// A read's error as [`Store::read`] sorts it: `None` when the primary would fail it too.
pub trait ReadError {
    fn miss(&self) -> Option<Miss>;
}

impl ReadError for StoreError {
    fn miss(&self) -> Option<Miss> {
        match self {
            StoreError::NotFound(_) => Some(Miss::Row),
            e if e.is_unavailable() => Some(Miss::Replica),
            StoreError::Database(_) => Some(Miss::Replica),
            _ => None,
        }
    }
}

impl Replica {
    /// Opens the replica's pool without connecting: a replica that is down when the controller
    /// starts is bypassed until it answers, rather than keeping the controller down.
    pub fn open(url: &str, pool: &PoolConfig, max_lag: Duration) -> Result<Replica> {
        let target = redact_url(url);
        let Some(rest) = url
            .strip_prefix("mysql:")
            .or_else(|| url.strip_prefix("mariadb:"))
        else {
            return Err(StoreError::BadUrl(format!(
                "read_database_url {target}: a read replica must be MySQL/MariaDB (mysql:// or mariadb://)"
            )));
        };
        let opts = MySqlConnectOptions::from_str(&format!("mysql:{rest}"))
            .map_err(|e| StoreError::BadUrl(format!("read_database_url {target}: {e}")))?
            .timezone(Some("+00:00".to_owned()))
            .charset("utf8mb4");
        if opts.get_database().unwrap_or_default().is_empty() {
            return Err(StoreError::BadUrl(format!(
                "read_database_url {target}: name the database, e.g. mysql://user:pass@replica:3306/outpost"
            )));
        }
        let pool = super::mysql_pool_options(pool)
            .acquire_timeout(pool.acquire_timeout.min(ACQUIRE_WITHIN))
            .connect_lazy_with(opts.clone());
        metrics::global().replica_configured();
        Ok(Replica {
            pool,
            opts,
            target,
            max_lag,
            in_use: AtomicBool::new(false),
            lag: AtomicI64::new(-1),
            said: std::sync::Mutex::new("not looked at yet".into()),
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether reads go to the replica now.
    pub fn in_use(&self) -> bool {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The replica's state in words: in use and how far behind, or bypassed and why.
    pub fn describe(&self) -> String {
        let why = self.said.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if self.in_use() {
            format!("in use: {why}")
        } else {
            format!("bypassed, reads go to the primary: {why}")
        }
    }

    /// Seconds behind the primary at the last look, if known.
    pub fn lag(&self) -> Option<i64> {
        Some(self.lag.load(Ordering::Relaxed)).filter(|l| *l >= 0)
    }

    /// Looks at the replica once, on the monitor's connection `conn` (opened if there is none,
    /// dropped if it fails): its replication status, within [`ANSWER_WITHIN`].
    pub async fn check(&self, conn: &mut Option<MySqlConnection>) -> Health {
        match tokio::time::timeout(ANSWER_WITHIN, self.status_on(conn)).await {
            Ok(Ok(h)) => h,
            failed => {
                if let Some(c) = conn.take() {
                    let _ = c.close_hard().await;
                }
                Health::Down(match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {ANSWER_WITHIN:?}"),
                })
            }
        }
    }

    async fn status_on(&self, conn: &mut Option<MySqlConnection>) -> Result<Health> {
        let c = match conn {
            Some(c) => c,
            None => {
                let db = self.opts.get_database().unwrap_or_default().to_owned();
                let c = MySqlConnection::connect_with(&self.opts)
                    .await
                    .map_err(|e| classify_connect_error(e, &self.target, &db))?;
                conn.insert(c)
            }
        };
        replication_status(c).await
    }

    /// Records what a look found: the replica is used only if it replicates within the bound.
    fn record(&self, health: &Health) {
        let (lag, good) = match health {
            Health::Behind(s) => (*s, *s as u64 <= self.max_lag.as_secs()),
            _ => (-1, false),
        };
        self.lag.store(lag, Ordering::Relaxed);
        self.in_use.store(good, Ordering::Relaxed);
        let m = metrics::global();
        m.replica_lag_seconds.set(lag);
        m.replica_in_use.set(u64::from(good));
    }

    /// A read failed on the replica in a way the primary may not share: stop using it until
    /// the next look finds it good again.
    fn failed(&self) {
        self.in_use.store(false, Ordering::Relaxed);
        metrics::global().replica_in_use.set(0);
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// The replica's `SHOW REPLICA STATUS` (MariaDB 10.5+, MySQL 8.0.22+; else `SHOW SLAVE STATUS`).
async fn replication_status(conn: &mut MySqlConnection) -> Result<Health> {
    // A plain string is sent as text, not prepared: SHOW statements are not all preparable.
    let row: Option<MySqlRow> = match conn.fetch_optional("SHOW REPLICA STATUS").await {
        Ok(row) => row,
        Err(sqlx::Error::Database(_)) => conn.fetch_optional("SHOW SLAVE STATUS").await?,
        Err(e) => return Err(e.into()),
    };
    let Some(row) = row else {
        return Ok(Health::NotReplicating(
            "the server is not a replica (SHOW REPLICA STATUS is empty)".into(),
        ));
    };
    let column = ["Seconds_Behind_Master", "Seconds_Behind_Source"]
        .into_iter()
        .find(|c| row.try_column(*c).is_ok());
    let Some(column) = column else {
        return Ok(Health::NotReplicating(
            "SHOW REPLICA STATUS has no Seconds_Behind_Master".into(),
        ));
    };
    // The text protocol's value: a number, or NULL while a replication thread is stopped.
    let seconds: Option<i64> = match row.try_get::<Option<i64>, _>(column) {
        Ok(v) => v,
        Err(_) => row
            .try_get_unchecked::<Option<String>, _>(column)
            .ok()
            .flatten()
            .and_then(|s| s.trim().parse().ok()),
    };
    Ok(match seconds {
        Some(s) => Health::Behind(s.max(0)),
        None => Health::NotReplicating(
            "replication is stopped (Seconds_Behind_Master is NULL: see SHOW REPLICA STATUS)"
                .into(),
        ),
    })
}

/// Looks at the replica every second until `stop`, and says when it starts or stops being used.
pub async fn monitor(replica: Arc<Replica>, stop: CancellationToken) {
    let mut was: Option<bool> = None;
    let mut why = String::new();
    let mut conn = None;
    loop {
        let health = replica.check(&mut conn).await;
        replica.record(&health);
        let good = replica.in_use();
        let reason = match &health {
            Health::Behind(s) if good => format!("{s} s behind the primary"),
            Health::Behind(s) => format!(
                "{s} s behind the primary, more than read_replica_max_lag_secs ({} s)",
                replica.max_lag.as_secs()
            ),
            Health::NotReplicating(r) | Health::Down(r) => r.clone(),
        };
        if was != Some(good) || (!good && reason != why) {
            if good {
                tracing::info!(replica = %replica.target, %reason, "read replica in use");
            } else {
                tracing::warn!(replica = %replica.target, %reason, "read replica bypassed: reads go to the primary");
            }
        }
        was = Some(good);
        *replica.said.lock().unwrap_or_else(|p| p.into_inner()) = reason.clone();
        why = reason;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
    replica.close().await;
}

impl Store {
    /// Adds a read replica: pages that only show state read from it while it is good.
    /// A SQLite primary has no replicas.
    pub fn with_replica(mut self, replica: Replica) -> Result<Store> {
        if !matches!(self.backend, Backend::Mysql(_)) {
            return Err(StoreError::BadUrl(format!(
                "read_database_url is set, but the primary ({}) is SQLite: read replicas need a MySQL/MariaDB primary",
                self.target
            )));
        }
        self.replica = Some(Arc::new(replica));
        Ok(self)
    }

    /// The read replica, if one is configured.
    pub fn replica(&self) -> Option<&Arc<Replica>> {
        self.replica.as_ref()
    }

    /// The replica as a store, while it is good.
    fn replica_store(&self) -> Option<Store> {
        let r = self.replica.as_deref().filter(|r| r.in_use())?;
        Some(Store {
            backend: Backend::Mysql(r.pool.clone()),
            bcrypt_cost: self.bcrypt_cost,
            statement_bytes: self.statement_bytes,
            target: r.target.clone(),
            // The replica replays the primary's DDL: its tables are laid out alike.
            partitioned: self.partitioned.clone(),
            replica: None,
            // Only reads go to the replica.
            bulk: None,
        })
    }

    /// The store to read from: the replica while it is good, else this store (the primary).
    /// Only for reads that show state; what decides reads the primary.
    pub fn reads(&self) -> Store {
        self.replica_store().unwrap_or_else(|| {
            if self.replica.is_some() {
                metrics::global().replica_fallback_reads.inc();
            }
            self.clone()
        })
    }

    /// Runs a read — one or several statements that make one page — on the replica while it is
    /// good, else on the primary; if the replica fails it (down, behind on the schema, the row
    /// not there yet), the whole read runs again on the primary, so that one page never mixes
    /// what the two hold.
    pub async fn read<T, E, F, Fut>(&self, read: F) -> std::result::Result<T, E>
    where
        F: Fn(Store) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: ReadError + std::fmt::Display,
    {
        let (Some(replica), Some(from)) = (self.replica.as_deref(), self.replica_store()) else {
            return read(self.reads()).await;
        };
        match read(from).await {
            Err(e) => match e.miss() {
                Some(miss) => {
                    tracing::debug!(replica = %replica.target, error = %e, "read failed on the replica; reading from the primary");
                    if miss == Miss::Replica {
                        replica.failed();
                    }
                    metrics::global().replica_fallback_reads.inc();
                    read(self.clone()).await
                }
                None => {
                    metrics::global().replica_reads.inc();
                    Err(e)
                }
            },
            Ok(v) => {
                metrics::global().replica_reads.inc();
                Ok(v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_must_be_mysql_with_a_database() {
        let pool = PoolConfig::default();
        let secs = Duration::from_secs(5);
        let e = Replica::open("sqlite:///tmp/r.db", &pool, secs).unwrap_err();
        assert!(e.to_string().contains("must be MySQL/MariaDB"), "{e}");
        let e = Replica::open("mysql://u:hunter2@replica:3306", &pool, secs).unwrap_err();
        assert!(e.to_string().contains("name the database"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn an_unknown_replica_is_not_used_and_a_sqlite_primary_takes_none() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let primary = Store::connect(&url, &PoolConfig::default())
            .await
            .expect("primary");
        let replica = Replica::open(
            "mysql://root:hunter2@127.0.0.1:1/outpost",
            &PoolConfig::default(),
            Duration::from_secs(5),
        )
        .expect("a lazy pool");
        assert!(!replica.in_use() && replica.lag().is_none());
        let e = primary.with_replica(replica).unwrap_err();
        assert!(e.to_string().contains("primary"), "{e}");
    }

    #[tokio::test]
    async fn a_replica_is_used_only_within_the_lag_bound_and_while_replicating() {
        let r = Replica::open(
            "mysql://root@127.0.0.1:1/outpost",
            &PoolConfig::default(),
            Duration::from_secs(5),
        )
        .expect("a lazy pool");
        r.record(&Health::Behind(5));
        assert!(r.in_use() && r.lag() == Some(5));
        r.record(&Health::Behind(6));
        assert!(!r.in_use() && r.lag() == Some(6));
        r.record(&Health::Behind(0));
        assert!(r.in_use());
        r.failed();
        assert!(!r.in_use(), "a failed read bypasses it until the next look");
        r.record(&Health::NotReplicating("stopped".into()));
        assert!(!r.in_use() && r.lag().is_none());
        r.record(&Health::Behind(1));
        r.record(&Health::Down("refused".into()));
        assert!(!r.in_use() && r.lag().is_none());
        // Nothing listens on port 1: a look says so at once, with the cause.
        let t = std::time::Instant::now();
        let mut conn = None;
        match r.check(&mut conn).await {
            Health::Down(why) => assert!(why.contains("refused"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed() < ANSWER_WITHIN, "{:?}", t.elapsed());
        assert!(conn.is_none());
    }
}
