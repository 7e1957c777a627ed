//! store::retire — how inventory rows that jobs refer to (servers, playbooks) are retired:
//! soft delete through `is_active`, and a real delete only while nothing refers to the row
//! (the seed's RESTRICT rule, turned into an error that says what to do instead).

use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::{now, on_pool, Result, Store, StoreError, WritePool};

/// A table of retirable rows. Every name here is a constant of this module, never input.
pub(crate) struct Retirable {
    pub table: &'static str,
    /// The audit's resource type and the word in error messages.
    pub resource: &'static str,
    /// The `jobs` column that refers to the table.
    pub job_column: &'static str,
    /// The key naming the row in audit details.
    pub label_key: &'static str,
}

pub(crate) const SERVERS: Retirable = Retirable {
    table: "servers",
    resource: "server",
    job_column: "server_id",
    label_key: "hostname",
};
pub(crate) const PLAYBOOKS: Retirable = Retirable {
    table: "playbooks",
    resource: "playbook",
    job_column: "playbook_id",
    label_key: "name",
};

impl Store {
    /// Soft delete (or undo it): jobs keep referring to the row.
    pub(crate) async fn set_row_active(
        &self,
        r: &Retirable,
        id: i32,
        label: &str,
        active: bool,
        actor: &Actor,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET is_active = ?, updated_at = ? WHERE id = ?",
            r.table
        );
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(&sql).bind(active).bind(now()).bind(id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: if active { "ACTIVATE" } else { "DEACTIVATE" }, resource_type: r.resource,
                resource_id: Some(id), details: Some(json!({ r.label_key: label })),
            })?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes a row no job refers to; otherwise says how many do and to deactivate instead.
    pub(crate) async fn delete_unreferenced(
        &self,
        r: &Retirable,
        id: i32,
        label: &str,
        actor: &Actor,
    ) -> Result<()> {
        let count_sql = format!("SELECT COUNT(*) FROM jobs WHERE {} = ?", r.job_column);
        let jobs: i64 =
            on_pool!(self, p => sqlx::query_scalar(&count_sql).bind(id).fetch_one(p).await?);
        let in_use = || StoreError::InUse {
            what: format!("{} {label}", r.resource),
            count: jobs,
            dependents: "jobs",
            hint: "deactivate it instead",
        };
        if jobs > 0 {
            return Err(in_use());
        }
        let delete_sql = format!("DELETE FROM {} WHERE id = ?", r.table);
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // A job may have arrived since the count: the RESTRICT rule still holds the line.
            sqlx::query(&delete_sql).bind(id).execute(&mut *tx).await.map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => in_use(),
                _ => StoreError::Database(e),
            })?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "DELETE", resource_type: r.resource, resource_id: Some(id),
                details: Some(json!({ r.label_key: label })),
            })?;
            tx.commit().await?;
        });
        Ok(())
    }
}
