//! store::census — how many rows the tables that matter hold, and a consistent copy of an
//! SQLite database: what a backup records beside its dump and checks again after a restore.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{on_pool, Backend, Result, Store, StoreError};

/// Row counts of the tables an operator would miss first after a restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    pub users: i64,
    pub agents: i64,
    pub servers: i64,
    pub jobs: i64,
    pub job_logs: i64,
    pub audit_logs: i64,
}

impl Store {
    /// Exact row counts (a scan of each table: fine for a backup, not for a page).
    pub async fn census(&self) -> Result<Census> {
        // Table names are literals of this function, never input.
        async fn count(store: &Store, table: &'static str) -> Result<i64> {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            Ok(on_pool!(store, p => sqlx::query_scalar::<_, i64>(&sql).fetch_one(p).await?))
        }
        Ok(Census {
            users: count(self, "users").await?,
            agents: count(self, "agents").await?,
            servers: count(self, "servers").await?,
            jobs: count(self, "jobs").await?,
            job_logs: count(self, "job_logs").await?,
            audit_logs: count(self, "audit_logs").await?,
        })
    }

    /// Writes a consistent copy of an SQLite database to `to` (which must not exist) with
    /// `VACUUM INTO`, taken while the controller may keep writing.
    pub async fn snapshot_sqlite(&self, to: &Path) -> Result<()> {
        let Backend::Sqlite(p) = &self.backend else {
            return Err(StoreError::Invalid {
                field: "backend",
                reason: "VACUUM INTO is SQLite's; MySQL is dumped with mariadb-dump".into(),
            });
        };
        let path = to.to_str().ok_or_else(|| StoreError::Invalid {
            field: "backup path",
            reason: format!("{} is not UTF-8", to.display()),
        })?;
        sqlx::query("VACUUM INTO ?").bind(path).execute(p).await?;
        Ok(())
    }
}
