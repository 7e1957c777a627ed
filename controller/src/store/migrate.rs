//! store::migrate — the embedded, reversible migrations (`migrations/mysql`,
//! `migrations/sqlite`) and the errors that tell an operator how to recover from a bad one.

use sqlx::migrate::{Migrate, Migrator};
use thiserror::Error;

use super::{on_pool, Backend, Result, Store};

static MYSQL: Migrator = sqlx::migrate!("../migrations/mysql");
static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");

/// A migration failure, with what to do about it.
#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("migration {0} failed partway and is marked dirty. MySQL cannot roll back DDL, so the schema may be half-changed: compare it with migrations/mysql/{0:04}_*.up.sql, finish or undo that file by hand, then run `DELETE FROM _sqlx_migrations WHERE version = {0}` and migrate again")]
    Dirty(i64),
    #[error("the database has migration {0}, which this build does not know: it was migrated by a newer Outpost. Run that version, or roll back with it first (`outpost-controller migrate --down N`)")]
    UnknownApplied(i64),
    #[error("migration {0} differs from the one applied to this database (its checksum changed): migrations must never be edited after release")]
    Changed(i64),
    #[error("migration {version} failed: {detail}. Nothing of it was kept where the database allows (SQLite); on MySQL check the schema before retrying")]
    Failed { version: i64, detail: String },
    #[error("cannot roll back {asked} migration(s): only {applied} are applied")]
    TooFar { asked: usize, applied: usize },
    #[error("migration error: {0}")]
    Other(String),
}

/// One migration that ran (or was rolled back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRun {
    pub version: i64,
    pub description: String,
}

fn classify(err: sqlx::migrate::MigrateError, pending: &[MigrationRun]) -> MigrateError {
    use sqlx::migrate::MigrateError as E;
    match err {
        E::Dirty(v) => MigrateError::Dirty(v),
        E::VersionMissing(v) => MigrateError::UnknownApplied(v),
        E::VersionMismatch(v) => MigrateError::Changed(v),
        E::Execute(e) | E::ExecuteMigration(e, _) => MigrateError::Failed {
            version: pending.first().map(|m| m.version).unwrap_or(0),
            detail: e.to_string(),
        },
        other => MigrateError::Other(other.to_string()),
    }
}

impl Store {
    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Mysql(_) => &MYSQL,
            Backend::Sqlite(_) => &SQLITE,
        }
    }

    /// Versions applied to this database, oldest first.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let versions = on_pool!(self, p => {
            let mut conn = p.acquire().await?;
            conn.ensure_migrations_table().await.map_err(|e| MigrateError::Other(e.to_string()))?;
            if let Some(v) = conn.dirty_version().await.map_err(|e| MigrateError::Other(e.to_string()))? {
                return Err(MigrateError::Dirty(v).into());
            }
            conn.list_applied_migrations().await.map_err(|e| MigrateError::Other(e.to_string()))?
                .into_iter().map(|m| m.version).collect::<Vec<_>>()
        });
        Ok(versions)
    }

    /// The migrations this build would apply, in order, given the versions already `applied`.
    fn pending_after(&self, applied: &[i64]) -> Vec<MigrationRun> {
        self.migrator()
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .map(|m| MigrationRun {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect()
    }

    /// The migrations `migrate_up` would apply now (refuses a dirty database, as it would).
    pub async fn pending_migrations(&self) -> Result<Vec<MigrationRun>> {
        let applied = self.applied_migrations().await?;
        Ok(self.pending_after(&applied))
    }

    /// Applies every pending migration in order; returns those that ran (none when the
    /// database is already current, so running it twice is harmless).
    pub async fn migrate_up(&self) -> Result<Vec<MigrationRun>> {
        let applied = self.applied_migrations().await?;
        let pending = self.pending_after(&applied);
        on_pool!(self, p => self.migrator().run(p).await.map_err(|e| classify(e, &pending))?);
        Ok(pending)
    }

    /// Rolls back the newest `n` applied migrations, newest first.
    pub async fn migrate_down(&self, n: usize) -> Result<Vec<MigrationRun>> {
        let applied = self.applied_migrations().await?;
        if n > applied.len() {
            return Err(MigrateError::TooFar {
                asked: n,
                applied: applied.len(),
            }
            .into());
        }
        let target = if n == applied.len() {
            0
        } else {
            applied[applied.len() - n - 1]
        };
        let undone: Vec<MigrationRun> = self
            .migrator()
            .iter()
            .filter(|m| {
                m.migration_type.is_down_migration()
                    && m.version > target
                    && applied.contains(&m.version)
            })
            .rev()
            .map(|m| MigrationRun {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect();
        on_pool!(self, p => self.migrator().undo(p, target).await.map_err(|e| classify(e, &undone))?);
        Ok(undone)
    }

    /// The number of migrations this build carries.
    pub fn known_migrations(&self) -> usize {
        self.migrator()
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .count()
    }
}
