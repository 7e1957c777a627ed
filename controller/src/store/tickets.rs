//! store::tickets — operational tickets, most opened automatically when a job fails.

use chrono::NaiveDateTime;
use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::outbox::{enqueue_event, insert_sql};
use super::{now, on_pool, page, Result, Store, StoreError, WritePool};
use crate::model::{JobId, Page, Paging, Ticket, TicketId, TicketPriority, TicketStatus, UserId};
use crate::notification::facts::{ticket_event, JobFacts, JOB_FACTS_SQL};
use crate::notification::TicketRef;

const COLUMNS: &str = "id, ticket_id, job_id, created_by, title, description, status, priority, \
     created_at, updated_at, resolved_at";

#[derive(Debug, Clone)]
pub struct NewTicket {
    pub job_id: JobId,
    pub created_by: UserId,
    pub title: String,
    pub description: Option<String>,
    pub priority: TicketPriority,
}

impl NewTicket {
    pub(crate) fn check(&self) -> Result<()> {
        if self.title.trim().is_empty() {
            return Err(StoreError::invalid("title", "must not be empty"));
        }
        Ok(())
    }
}

/// Inserts a checked [`NewTicket`] and its audit record through an executor of either backend
/// (the transaction of the change that opens it); evaluates to the new row id.
macro_rules! insert_ticket {
    ($exec:expr, $new:expr, $actor:expr) => {{
        let new: &$crate::store::tickets::NewTicket = $new;
        // The title column holds 255 characters: shorten rather than fail an automatic ticket.
        let title: String = new.title.chars().take(255).collect();
        let uuid = uuid::Uuid::new_v4().to_string();
        let ts = $crate::store::now();
        async {
            let res = sqlx::query(
                "INSERT INTO tickets (ticket_id, job_id, created_by, title, description, status, priority, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?)",
            )
            .bind(&uuid).bind(new.job_id).bind(new.created_by).bind(&title).bind(&new.description)
            .bind(new.priority.as_str()).bind(ts).bind(ts)
            .execute(&mut *$exec).await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() =>
                    $crate::store::StoreError::NotFound(format!("job {} or user {}", new.job_id, new.created_by)),
                _ => $crate::store::StoreError::Database(e),
            })?;
            let id = $crate::store::InsertedId::inserted_id(&res) as i32;
            $crate::store::audit::insert_audit!(&mut *$exec, &$crate::store::audit::NewAudit {
                actor: $actor, action: "CREATE", resource_type: "ticket", resource_id: Some(id),
                details: Some(serde_json::json!({"ticket_id": uuid, "job_id": new.job_id, "priority": new.priority})),
            })?;
            Ok::<i32, $crate::store::StoreError>(id)
        }.await
    }};
}
pub(crate) use insert_ticket;

/// Filters for [`Store::list_tickets`].
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub status: Option<TicketStatus>,
    pub priority: Option<TicketPriority>,
    pub job_id: Option<JobId>,
}

/// A change to a ticket; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TicketPatch {
    pub status: Option<TicketStatus>,
    pub priority: Option<TicketPriority>,
    pub title: Option<String>,
    pub description: Option<String>,
}

impl Store {
    pub async fn get_ticket_by_uuid(&self, uuid: &str) -> Result<Ticket> {
        let sql = format!("SELECT {COLUMNS} FROM tickets WHERE ticket_id = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Ticket>(&sql).bind(uuid).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("ticket {uuid}")))
    }

    /// Changes a ticket; resolving or closing stamps `resolved_at`, reopening clears it. The
    /// audit holds each changed field's old and new value.
    pub async fn update_ticket(
        &self,
        id: TicketId,
        patch: &TicketPatch,
        actor: &Actor,
    ) -> Result<Ticket> {
        let old = self.get_ticket(id).await?;
        let status = patch.status.unwrap_or(old.status);
        let priority = patch.priority.unwrap_or(old.priority);
        let title = patch.title.clone().unwrap_or_else(|| old.title.clone());
        if title.trim().is_empty() || title.chars().count() > 255 {
            return Err(StoreError::invalid("title", "must be 1 to 255 characters"));
        }
        let description = patch
            .description
            .clone()
            .or_else(|| old.description.clone());
        if description
            .as_ref()
            .is_some_and(|d| d.len() > crate::text::TEXT_BYTES)
        {
            return Err(StoreError::invalid(
                "description",
                "must be at most 65,535 bytes",
            ));
        }
        let ts = now();
        let resolved_at: Option<NaiveDateTime> = match status {
            TicketStatus::Resolved | TicketStatus::Closed => {
                Some(old.resolved_at.map(|t| t.naive_utc()).unwrap_or(ts))
            }
            TicketStatus::Open | TicketStatus::InProgress => None,
        };
        let mut changed = serde_json::Map::new();
        if status != old.status {
            changed.insert("status".into(), json!({"old": old.status, "new": status}));
        }
        if priority != old.priority {
            changed.insert(
                "priority".into(),
                json!({"old": old.priority, "new": priority}),
            );
        }
        if title != old.title {
            changed.insert("title".into(), json!({"old": old.title, "new": title}));
        }
        if description != old.description {
            changed.insert("description".into(), json!("changed"));
        }
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("UPDATE tickets SET status = ?, priority = ?, title = ?, description = ?, resolved_at = ?, updated_at = ? WHERE id = ?")
                .bind(status.as_str()).bind(priority.as_str()).bind(&title).bind(&description)
                .bind(resolved_at).bind(ts).bind(id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "UPDATE", resource_type: "ticket", resource_id: Some(id.0),
                details: Some(serde_json::Value::Object(changed)),
            })?;
            tx.commit().await?;
        });
        self.get_ticket(id).await
    }

    pub async fn create_ticket(&self, new: &NewTicket, actor: &Actor) -> Result<Ticket> {
        new.check()?;
        let outbox_sql = insert_sql(self.dialect());
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let id = insert_ticket!(&mut *tx, new, actor)?;
            // Its notification commits with it.
            let facts: Option<JobFacts> = sqlx::query_as(JOB_FACTS_SQL).bind(new.job_id).fetch_optional(&mut *tx).await?;
            if let Some(f) = facts {
                let uuid: String = sqlx::query_scalar("SELECT ticket_id FROM tickets WHERE id = ?")
                    .bind(id).fetch_one(&mut *tx).await?;
                let title: String = new.title.chars().take(255).collect();
                let event = ticket_event(&f, TicketRef { id: uuid, title, priority: new.priority });
                enqueue_event!(&mut *tx, &event, outbox_sql)?;
            }
            tx.commit().await?;
            id
        });
        self.get_ticket(TicketId(id)).await
    }

    pub async fn get_ticket(&self, id: TicketId) -> Result<Ticket> {
        let sql = format!("SELECT {COLUMNS} FROM tickets WHERE id = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Ticket>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("ticket {id}")))
    }

    /// Newest first.
    pub async fn list_tickets(&self, f: &TicketFilter, paging: Paging) -> Result<Page<Ticket>> {
        let status = f.status.map(TicketStatus::as_str);
        let priority = f.priority.map(TicketPriority::as_str);
        Ok(
            page!(self, Ticket, select: COLUMNS, from: "tickets", order: "created_at DESC, id DESC", paging: paging,
            filters: [("status", status), ("priority", priority), ("job_id", f.job_id)]),
        )
    }

    /// Moves a ticket through its life; `resolved_at` is stamped on resolving and cleared on
    /// reopening.
    pub async fn set_ticket_status(
        &self,
        id: TicketId,
        status: TicketStatus,
        actor: &Actor,
    ) -> Result<Ticket> {
        let old = self.get_ticket(id).await?;
        let ts = now();
        let resolved_at: Option<NaiveDateTime> = match status {
            TicketStatus::Resolved | TicketStatus::Closed => {
                Some(old.resolved_at.map(|t| t.naive_utc()).unwrap_or(ts))
            }
            TicketStatus::Open | TicketStatus::InProgress => None,
        };
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("UPDATE tickets SET status = ?, resolved_at = ?, updated_at = ? WHERE id = ?")
                .bind(status.as_str()).bind(resolved_at).bind(ts).bind(id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "UPDATE", resource_type: "ticket", resource_id: Some(id.0),
                details: Some(json!({"status": {"old": old.status, "new": status}})),
            })?;
            tx.commit().await?;
        });
        self.get_ticket(id).await
    }
}
