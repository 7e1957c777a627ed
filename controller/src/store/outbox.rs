//! store::outbox — the notification outbox and delivery log: rows written in the transaction
//! of the event they report ([`enqueue_event!`]), claimed by one worker at a time with a
//! conditional UPDATE of a lease, and marked sent, retried or dead with every attempt counted.

use chrono::{DateTime, NaiveDateTime, Utc};

use super::{now, on_pool, page, Dialect, Result, Store, StoreError, WritePool};
use crate::model::{ChannelId, Page, Paging};
use crate::notification::{DeliveryStatus, Event, NotificationEvent};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub delivery_id: String,
    pub channel_id: ChannelId,
    pub channel: String,
    #[sqlx(try_from = "crate::model::Named<NotificationEvent>")]
    pub event: NotificationEvent,
    pub payload: sqlx::types::Json<serde_json::Value>,
    #[sqlx(try_from = "crate::model::Named<DeliveryStatus>")]
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "o.id, o.delivery_id, o.channel_id, c.name AS channel, o.event, o.payload, \
     o.status, o.attempts, o.last_error, o.created_at, o.next_attempt_at, o.last_attempt_at, o.sent_at";
const FROM: &str = "notification_outbox o JOIN notification_channels c ON c.id = o.channel_id";

/// The statement that adds an outbox row, skipping one whose (channel, event key) is there.
pub fn insert_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Mysql => "INSERT IGNORE INTO notification_outbox (delivery_id, channel_id, event, event_key, payload, \
             status, attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
        Dialect::Sqlite => "INSERT OR IGNORE INTO notification_outbox (delivery_id, channel_id, event, event_key, payload, \
             status, attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
    }
}

/// Routes an [`Event`] with the rules and channels as the transaction `$exec` sees them, and
/// writes one outbox row per channel it goes to, in that transaction; evaluates to how many.
macro_rules! enqueue_event {
    ($exec:expr, $event:expr, $sql:expr) => {{
        let event: &$crate::notification::Event = $event;
        let sql: &str = $sql;
        async {
            use $crate::store::notifications as n;
            let rows: Vec<n::RoutingRow> = sqlx::query_as(n::ROUTING_RULES_SQL)
                .fetch_all(&mut *$exec)
                .await?;
            let rules = n::routing_rules(rows);
            let marks: Vec<(i32, bool, bool)> =
                sqlx::query_as(n::MARKS_SQL).fetch_all(&mut *$exec).await?;
            let routes = $crate::notification::routing::route(event, &rules, &n::marks(marks));
            let ts = $crate::store::now();
            let at = ts.and_utc();
            for (channel, mode) in &routes {
                let delivery_id = uuid::Uuid::new_v4().to_string();
                let body = $crate::notification::payload::build(event, &delivery_id, at);
                let status = match mode {
                    $crate::notification::DeliveryMode::Immediate => "pending",
                    $crate::notification::DeliveryMode::Digest => "digest",
                };
                sqlx::query(sql)
                    .bind(&delivery_id)
                    .bind(channel)
                    .bind(event.kind.as_str())
                    .bind(&event.key)
                    .bind(body.to_string())
                    .bind(status)
                    .bind(ts)
                    .bind(ts)
                    .execute(&mut *$exec)
                    .await?;
            }
            Ok::<usize, $crate::store::StoreError>(routes.len())
        }
        .await
    }};
}
pub(crate) use enqueue_event;

/// Filters of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub channel: Option<ChannelId>,
    pub status: Option<DeliveryStatus>,
}

impl Store {
    /// Writes an event found by a sweep in its own transaction; a (channel, event key) already
    /// there is skipped, so sweeping controllers never double it.
    pub async fn enqueue_event(&self, event: &Event) -> Result<usize> {
        let sql = insert_sql(self.dialect());
        Ok(on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let n = enqueue_event!(&mut *tx, event, sql)?;
            tx.commit().await?;
            n
        }))
    }

    /// Queues one delivery of `body` to a channel at once (a test, a digest).
    pub async fn enqueue_one(
        &self,
        channel: ChannelId,
        event: NotificationEvent,
        delivery_id: &str,
        body: &serde_json::Value,
    ) -> Result<()> {
        let sql = insert_sql(self.dialect());
        let ts = now();
        on_pool!(self, p => {
            sqlx::query(sql).bind(delivery_id).bind(channel).bind(event.as_str()).bind(None::<String>)
                .bind(body.to_string()).bind("pending").bind(ts).bind(ts).execute(p).await?;
        });
        Ok(())
    }

    /// Takes up to `limit` due deliveries for this worker until `lease_until`: each row is
    /// taken by a conditional UPDATE, so of two controllers only one gets it.
    pub async fn claim_deliveries(
        &self,
        lease_until: NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        let ts = now();
        let ids: Vec<i64> = on_pool!(self, p => sqlx::query_scalar(
            "SELECT id FROM notification_outbox WHERE status = 'pending' AND next_attempt_at <= ? \
             AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt_at, id LIMIT ?")
            .bind(ts).bind(ts).bind(limit).fetch_all(p).await?);
        let mut out = Vec::new();
        let sql = format!("SELECT {COLUMNS} FROM {FROM} WHERE o.id = ?");
        for id in ids {
            let taken = on_pool!(self, p => sqlx::query(
                "UPDATE notification_outbox SET lease_until = ? WHERE id = ? AND status = 'pending' \
                 AND (lease_until IS NULL OR lease_until < ?)")
                .bind(lease_until).bind(id).bind(ts).execute(p).await?.rows_affected() == 1);
            if taken {
                let row = on_pool!(self, p => sqlx::query_as::<_, Delivery>(&sql).bind(id).fetch_optional(p).await?);
                out.extend(row);
            }
        }
        Ok(out)
    }

    pub async fn delivery_sent(&self, id: i64) -> Result<()> {
        let ts = now();
        on_pool!(self, p => sqlx::query(
            "UPDATE notification_outbox SET status = 'sent', attempts = attempts + 1, last_attempt_at = ?, \
             sent_at = ?, lease_until = NULL, last_error = NULL WHERE id = ?")
            .bind(ts).bind(ts).bind(id).execute(p).await?.rows_affected());
        Ok(())
    }

    /// Records a failed attempt: tried again at `retry_at`, or dead when `None`.
    pub async fn delivery_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<NaiveDateTime>,
    ) -> Result<()> {
        let ts = now();
        let status = if retry_at.is_some() {
            "pending"
        } else {
            "dead"
        };
        let error = crate::text::fit_chars(error, 2000);
        on_pool!(self, p => sqlx::query(
            "UPDATE notification_outbox SET status = ?, attempts = attempts + 1, last_attempt_at = ?, \
             next_attempt_at = ?, lease_until = NULL, last_error = ? WHERE id = ?")
            .bind(status).bind(ts).bind(retry_at.unwrap_or(ts)).bind(error.as_ref()).bind(id).execute(p).await?.rows_affected());
        Ok(())
    }

    /// Channels whose oldest waiting digest item is at least as old as `before`.
    pub async fn digests_due(&self, before: NaiveDateTime) -> Result<Vec<ChannelId>> {
        Ok(on_pool!(self, p => sqlx::query_scalar(
            "SELECT channel_id FROM notification_outbox WHERE status = 'digest' \
             GROUP BY channel_id HAVING MIN(created_at) <= ?")
            .bind(before).fetch_all(p).await?))
    }

    /// Moves a channel's waiting digest items into one new delivery listing them, in one
    /// transaction: the items are taken by a conditional UPDATE, so two controllers flushing
    /// at once make one digest. Returns its delivery id, if there were items.
    pub async fn flush_digest(&self, channel: ChannelId) -> Result<Option<String>> {
        let batch = uuid::Uuid::new_v4().to_string();
        let delivery_id = uuid::Uuid::new_v4().to_string();
        let sql = insert_sql(self.dialect());
        let ts = now();
        Ok(on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let taken = sqlx::query(
                "UPDATE notification_outbox SET status = 'batched', batch_id = ?, sent_at = ? \
                 WHERE channel_id = ? AND status = 'digest'")
                .bind(&batch).bind(ts).bind(channel).execute(&mut *tx).await?.rows_affected();
            if taken == 0 {
                return Ok(None);
            }
            let bodies: Vec<sqlx::types::Json<serde_json::Value>> = sqlx::query_scalar(
                "SELECT payload FROM notification_outbox WHERE batch_id = ? ORDER BY id")
                .bind(&batch).fetch_all(&mut *tx).await?;
            let items: Vec<serde_json::Value> = bodies.into_iter().map(|b| b.0).collect();
            let body = crate::notification::payload::digest(&items, &delivery_id, ts.and_utc());
            sqlx::query(sql).bind(&delivery_id).bind(channel).bind(NotificationEvent::Digest.as_str())
                .bind(None::<String>).bind(body.to_string()).bind("pending").bind(ts).bind(ts)
                .execute(&mut *tx).await?;
            tx.commit().await?;
            Some(delivery_id)
        }))
    }

    /// The delivery log, newest first.
    pub async fn list_deliveries(
        &self,
        f: &DeliveryFilter,
        paging: Paging,
    ) -> Result<Page<Delivery>> {
        let status = f.status.map(DeliveryStatus::as_str);
        Ok(
            page!(self, Delivery, select: COLUMNS, from: FROM, order: "o.id DESC", paging: paging,
            filters: [("o.channel_id", f.channel), ("o.status", status)]),
        )
    }

    pub async fn get_delivery(&self, delivery_id: &str) -> Result<Delivery> {
        let sql = format!("SELECT {COLUMNS} FROM {FROM} WHERE o.delivery_id = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Delivery>(&sql).bind(delivery_id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("delivery {delivery_id}")))
    }
}
