//! store::audit — the audit trail: who changed what, written in the same transaction as the
//! change itself. Secrets never reach `details`.

use serde_json::Value;

use super::listing::keyset_page;
use super::{on_pool, Result, Store};
use crate::model::{AuditEntry, Cursor, Page, Paging, UserId};

/// Who is acting: a person (with where they came from) or the system (`user_id` NULL).
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user_id: Option<UserId>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

impl Actor {
    pub fn system() -> Actor {
        Actor::default()
    }

    pub fn user(id: UserId) -> Actor {
        Actor {
            user_id: Some(id),
            ..Actor::default()
        }
    }
}

/// One audit record to write.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    pub actor: &'a Actor,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: Option<i32>,
    pub details: Option<Value>,
}

/// Inserts a [`NewAudit`] through any executor of either backend (usually the transaction of
/// the change it records).
macro_rules! insert_audit {
    ($exec:expr, $entry:expr) => {{
        let e: &$crate::store::audit::NewAudit<'_> = $entry;
        sqlx::query(
            "INSERT INTO audit_logs \
             (user_id, action, resource_type, resource_id, details, ip_address, user_agent, timestamp) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.actor.user_id)
        .bind(e.action)
        .bind(e.resource_type)
        .bind(e.resource_id)
        .bind(e.details.as_ref().map(|d| $crate::text::fit_json(d, $crate::text::AUDIT_STRING_CHARS).to_string()))
        .bind(e.actor.ip_address.as_deref())
        .bind(e.actor.user_agent.as_deref())
        .bind($crate::store::now())
        .execute($exec)
        .await
    }};
}
pub(crate) use insert_audit;

/// Audit rows per INSERT in [`insert_audits!`]: 8 binds each, far below the placeholder limit.
pub(crate) const AUDIT_ROWS_PER_INSERT: usize = 500;

/// Inserts [`NewAudit`]s through any executor of either backend, several rows a statement: a
/// transaction that records several changes pays one round trip for their records.
macro_rules! insert_audits {
    ($exec:expr, $entries:expr) => {
        $crate::store::audit::insert_audits!($exec, $entries, $crate::store::now())
    };
    ($exec:expr, $entries:expr, $ts:expr) => {{
        let entries: &[$crate::store::audit::NewAudit<'_>] = $entries;
        let ts: chrono::NaiveDateTime = $ts;
        async {
            for chunk in entries.chunks($crate::store::audit::AUDIT_ROWS_PER_INSERT) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_logs \
                     (user_id, action, resource_type, resource_id, details, ip_address, user_agent, timestamp) ",
                );
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(e.actor.user_id)
                        .push_bind(e.action)
                        .push_bind(e.resource_type)
                        .push_bind(e.resource_id)
                        .push_bind(e.details.as_ref().map(|d| {
                            $crate::text::fit_json(d, $crate::text::AUDIT_STRING_CHARS).to_string()
                        }))
                        .push_bind(e.actor.ip_address.as_deref())
                        .push_bind(e.actor.user_agent.as_deref())
                        .push_bind(ts);
                });
                qb.build().execute(&mut *$exec).await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await
    }};
}
pub(crate) use insert_audits;

/// Filters for [`Store::list_audit`]; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<UserId>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<i32>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl Store {
    /// Records an action that changes nothing else in the database (a login, a refusal).
    pub async fn record_audit(&self, entry: &NewAudit<'_>) -> Result<()> {
        on_pool!(self, p => { insert_audit!(p, entry)?; });
        Ok(())
    }

    /// The newest entries first, paged by offset or by cursor, with a bounded count (see
    /// [`super::listing`]).
    pub async fn list_audit(&self, f: &AuditFilter, paging: Paging) -> Result<Page<AuditEntry>> {
        const COLUMNS: &str = "id, user_id, action, resource_type, resource_id, details, ip_address, user_agent, timestamp";
        let (action, resource_type) = (f.action.as_deref(), f.resource_type.as_deref());
        Ok(
            keyset_page!(self, AuditEntry, select: COLUMNS, from: "audit_logs", count_from: "audit_logs",
            key: ("timestamp", "id"),
            key_of: |e: &AuditEntry| Cursor::new(e.timestamp.naive_utc(), e.id.0),
            paging: paging,
            filters: [("user_id", f.user_id), ("action", action), ("resource_type", resource_type),
                      ("resource_id", f.resource_id)],
            ranges: [("timestamp", ">=", f.since.map(|t| t.naive_utc())), ("timestamp", "<", f.until.map(|t| t.naive_utc()))]),
        )
    }
}
