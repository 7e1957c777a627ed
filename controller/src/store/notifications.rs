//! store::notifications — notification channels (their URL and secret sealed before they get
//! here) and routing rules. Audit records name a channel, never its URL or secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::{now, on_pool, InsertedId, Result, Store, StoreError, WritePool};
use crate::model::{ChannelId, RuleId, TicketPriority};
use crate::notification::routing::{parse_label, Marks, Rule};
use crate::notification::{ChannelKind, DeliveryMode, NotificationEvent};
use outpost_api::EmailSettings;

const CHANNEL_COLUMNS: &str =
    "id, uuid, name, kind, config, on_call, digest, key_id, secret, created_at, updated_at";

/// What a channel's row shows in the clear.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChannelConfig {
    /// The URL's origin (the whole URL is sealed).
    #[serde(default)]
    pub url_shown: Option<String>,
    #[serde(default)]
    pub email: Option<EmailSettings>,
    /// Whether the sealed part holds a secret (not only a URL).
    #[serde(default)]
    pub secret_set: bool,
}

#[derive(Clone, sqlx::FromRow)]
pub struct Channel {
    pub id: ChannelId,
    /// Binds the sealed secret to this row.
    pub uuid: String,
    pub name: String,
    #[sqlx(try_from = "crate::model::Named<ChannelKind>")]
    pub kind: ChannelKind,
    pub config: sqlx::types::Json<ChannelConfig>,
    pub on_call: bool,
    pub digest: bool,
    pub key_id: Option<String>,
    /// Sealed [`crate::notification::secret::ChannelSecret`].
    pub secret: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A channel to store or a change to one; `sealed` is (key id, sealed bytes).
#[derive(Clone)]
pub struct ChannelRecord {
    pub uuid: String,
    pub name: String,
    pub kind: ChannelKind,
    pub config: ChannelConfig,
    pub on_call: bool,
    pub digest: bool,
    pub sealed: (String, Vec<u8>),
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRow {
    pub id: RuleId,
    #[sqlx(try_from = "crate::model::Named<NotificationEvent>")]
    pub event: NotificationEvent,
    pub environment: Option<String>,
    pub min_priority: Option<String>,
    pub routing_label: Option<String>,
    pub channel_id: ChannelId,
    pub channel: String,
    #[sqlx(try_from = "crate::model::Named<DeliveryMode>")]
    pub mode: DeliveryMode,
    pub created_at: DateTime<Utc>,
}

impl RuleRow {
    pub fn min_priority(&self) -> Option<TicketPriority> {
        self.min_priority.as_deref().and_then(|p| p.parse().ok())
    }
}

pub const RULE_SQL: &str = "SELECT r.id, r.event, r.environment, r.min_priority, r.routing_label, \
     r.channel_id, c.name AS channel, r.mode, r.created_at FROM notification_rules r \
     JOIN notification_channels c ON c.id = r.channel_id ORDER BY r.id";

/// The rules as routing reads them inside an event's transaction: as text, so that a row this
/// binary cannot read (written by a newer version) is skipped rather than failing the job's
/// final state with it.
pub const ROUTING_RULES_SQL: &str = "SELECT event, environment, min_priority, routing_label, \
     channel_id, mode FROM notification_rules ORDER BY id";

/// A row of [`ROUTING_RULES_SQL`].
pub type RoutingRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i32,
    String,
);

/// The rules routing can use; unreadable rows are left out (and logged).
pub fn routing_rules(rows: Vec<RoutingRow>) -> Vec<Rule> {
    rows.into_iter()
        .filter_map(|(event, environment, min_priority, label, channel, mode)| {
            let rule = (|| {
                Some(Rule {
                    event: event.parse().ok()?,
                    environment,
                    min_priority: match min_priority {
                        Some(p) => Some(p.parse().ok()?),
                        None => None,
                    },
                    label: match label {
                        Some(l) => Some(parse_label(&l)?),
                        None => None,
                    },
                    channel,
                    mode: mode.parse().ok()?,
                })
            })();
            if rule.is_none() {
                tracing::warn!(event = %crate::text::excerpt(&event, 64), channel, "a notification rule cannot be read; it is skipped");
            }
            rule
        })
        .collect()
}

pub const MARKS_SQL: &str = "SELECT id, on_call, digest FROM notification_channels ORDER BY id";

pub fn marks(rows: Vec<(i32, bool, bool)>) -> Vec<Marks> {
    rows.into_iter()
        .map(|(channel, on_call, digest)| Marks {
            channel,
            on_call,
            digest,
        })
        .collect()
}

/// A new rule, its channel resolved.
#[derive(Debug, Clone)]
pub struct NewRule {
    pub event: NotificationEvent,
    pub environment: Option<String>,
    pub min_priority: Option<TicketPriority>,
    pub routing_label: Option<String>,
    pub channel: ChannelId,
    pub mode: DeliveryMode,
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > 255 || name.trim() != name || name.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "name",
            "must be 1 to 255 characters, without surrounding spaces or control characters",
        ));
    }
    Ok(())
}

impl Store {
    pub async fn create_channel(&self, c: &ChannelRecord, actor: &Actor) -> Result<Channel> {
        check_name(&c.name)?;
        let config = serde_json::to_string(&c.config).unwrap_or_else(|_| "{}".into());
        let ts = now();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO notification_channels (uuid, name, kind, config, on_call, digest, key_id, secret, \
                 created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(&c.uuid).bind(&c.name).bind(c.kind.as_str()).bind(&config).bind(c.on_call).bind(c.digest)
                .bind(&c.sealed.0).bind(&c.sealed.1).bind(ts).bind(ts)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::on_write(e, || format!("channel '{}'", c.name)))?;
            let id = res.inserted_id() as i32;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "CREATE", resource_type: "notification_channel", resource_id: Some(id),
                details: Some(json!({"name": c.name, "kind": c.kind.as_str(), "on_call": c.on_call, "digest": c.digest})),
            })?;
            tx.commit().await?;
            id
        });
        self.get_channel(ChannelId(id)).await
    }

    pub async fn update_channel(
        &self,
        id: ChannelId,
        c: &ChannelRecord,
        actor: &Actor,
    ) -> Result<Channel> {
        check_name(&c.name)?;
        let config = serde_json::to_string(&c.config).unwrap_or_else(|_| "{}".into());
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "UPDATE notification_channels SET name = ?, config = ?, on_call = ?, digest = ?, key_id = ?, \
                 secret = ?, updated_at = ? WHERE id = ?")
                .bind(&c.name).bind(&config).bind(c.on_call).bind(c.digest).bind(&c.sealed.0).bind(&c.sealed.1)
                .bind(now()).bind(id)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::on_write(e, || format!("channel '{}'", c.name)))?;
            if res.rows_affected() != 1 {
                return Err(StoreError::NotFound(format!("channel {id}")));
            }
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "UPDATE", resource_type: "notification_channel", resource_id: Some(id.0),
                details: Some(json!({"name": c.name, "on_call": c.on_call, "digest": c.digest})),
            })?;
            tx.commit().await?;
        });
        self.get_channel(id).await
    }

    pub async fn get_channel(&self, id: ChannelId) -> Result<Channel> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Channel>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("channel {id}")))
    }

    pub async fn get_channel_by_name(&self, name: &str) -> Result<Channel> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE name = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Channel>(&sql).bind(name).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("channel '{name}'")))
    }

    /// Every channel, by name (there are few).
    pub async fn list_channels(&self) -> Result<Vec<Channel>> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels ORDER BY name");
        Ok(on_pool!(self, p => sqlx::query_as::<_, Channel>(&sql).fetch_all(p).await?))
    }

    /// Deletes a channel with its rules and its deliveries' log.
    pub async fn delete_channel(&self, id: ChannelId, actor: &Actor) -> Result<()> {
        let c = self.get_channel(id).await?;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            // SQLite enforces the cascade only with foreign keys on; say it explicitly.
            sqlx::query("DELETE FROM notification_outbox WHERE channel_id = ?").bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM notification_rules WHERE channel_id = ?").bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM notification_channels WHERE id = ?").bind(id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "DELETE", resource_type: "notification_channel", resource_id: Some(id.0),
                details: Some(json!({"name": c.name})),
            })?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Writes re-sealed channel secrets (a key rotation) in one transaction, each only if it
    /// still holds what was read.
    pub async fn reseal_channels(
        &self,
        rows: &[(ChannelId, Vec<u8>, String, Vec<u8>)],
    ) -> Result<u64> {
        let mut changed = 0u64;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for (id, old, key, new) in rows {
                let res = sqlx::query(
                    "UPDATE notification_channels SET key_id = ?, secret = ? WHERE id = ? AND secret = ?")
                    .bind(key).bind(new).bind(id).bind(old)
                    .execute(&mut *tx).await?;
                if res.rows_affected() != 1 {
                    return Err(StoreError::Conflict(format!(
                        "channel {id} changed during the rotation; run it again")));
                }
                changed += 1;
            }
            tx.commit().await?;
        });
        Ok(changed)
    }

    pub async fn create_rule(&self, r: &NewRule, actor: &Actor) -> Result<RuleRow> {
        if let Some(l) = &r.routing_label {
            if parse_label(l).is_none() || l.chars().count() > 255 {
                return Err(StoreError::invalid(
                    "routing_label",
                    "must be key=value (a server tag), at most 255 characters",
                ));
            }
        }
        if r.environment
            .as_ref()
            .is_some_and(|e| e.is_empty() || e.chars().count() > 50)
        {
            return Err(StoreError::invalid(
                "environment",
                "must be 1 to 50 characters",
            ));
        }
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO notification_rules (event, environment, min_priority, routing_label, channel_id, mode, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)")
                .bind(r.event.as_str()).bind(&r.environment).bind(r.min_priority.map(|p| p.as_str()))
                .bind(&r.routing_label).bind(r.channel).bind(r.mode.as_str()).bind(now())
                .execute(&mut *tx).await?;
            let id = res.inserted_id() as i32;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "CREATE", resource_type: "notification_rule", resource_id: Some(id),
                details: Some(json!({"event": r.event, "environment": r.environment, "min_priority": r.min_priority,
                    "routing_label": r.routing_label, "channel_id": r.channel, "mode": r.mode})),
            })?;
            tx.commit().await?;
            id
        });
        self.list_rules()
            .await?
            .into_iter()
            .find(|r| r.id.0 == id)
            .ok_or_else(|| StoreError::NotFound(format!("rule {id}")))
    }

    pub async fn list_rules(&self) -> Result<Vec<RuleRow>> {
        Ok(on_pool!(self, p => sqlx::query_as::<_, RuleRow>(RULE_SQL).fetch_all(p).await?))
    }

    pub async fn delete_rule(&self, id: RuleId, actor: &Actor) -> Result<()> {
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query("DELETE FROM notification_rules WHERE id = ?").bind(id).execute(&mut *tx).await?;
            if res.rows_affected() != 1 {
                return Err(StoreError::NotFound(format!("rule {id}")));
            }
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "DELETE", resource_type: "notification_rule", resource_id: Some(id.0), details: None,
            })?;
            tx.commit().await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_rule_is_skipped_not_fatal() {
        let row = |event: &str, p: Option<&str>| {
            (
                event.to_owned(),
                None,
                p.map(str::to_owned),
                Some("dc=fra1".to_owned()),
                3,
                "immediate".to_owned(),
            )
        };
        let rules = routing_rules(vec![
            row("job_failed", Some("high")),
            row("job_exploded", None),
            row("job_failed", Some("urgent")),
        ]);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].min_priority, Some(TicketPriority::High));
        assert_eq!(rules[0].label, Some(("dc".into(), "fra1".into())));
    }
}
