//! store::agents — enrolled agents and their one-time enrolment tokens (stored as SHA-256
//! only). Connection state is mirrored here so that several controllers sharing one database
//! know who holds which agent.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::{
    json_object_text, now, on_pool, page, InsertedId, Result, Store, StoreError, WritePool,
};
use crate::model::{Agent, AgentId, EnrollmentToken, Page, Paging};
use crate::text::{fit_chars, VARCHAR_255};

const COLUMNS: &str =
    "id, uuid, name, labels, cert_fingerprint, cert_expires_at, revoked, capacity, \
     version, hostname, ansible_version, last_seen, connected_controller, lost_at, created_at, updated_at";

/// A new enrolment token's record (the secret itself is never passed to the store).
#[derive(Debug, Clone)]
pub struct NewEnrollmentToken {
    pub secret_hash: String,
    pub name: String,
    pub labels: serde_json::Value,
    pub expires_at: DateTime<Utc>,
}

/// What an agent's Hello tells about it.
#[derive(Debug, Clone)]
pub struct AgentPresence {
    pub version: String,
    pub hostname: String,
    pub ansible_version: String,
    pub capacity: i32,
    pub controller: String,
    /// Names this session (a uuid), so only it can mark the agent offline.
    pub session: String,
    /// The certificate the agent connected with, when it could be read: the one it holds,
    /// whatever a renewal it never received left in the row.
    pub certificate: Option<HeldCertificate>,
}

/// What the store keeps of an agent's certificate: for the fleet's view and the expiry
/// notifier, never for authentication (which is the CA's signature and the revoked flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCertificate {
    /// sha256 of the DER, hex.
    pub fingerprint: String,
    pub expires: DateTime<Utc>,
}

impl Store {
    pub async fn create_enrollment_token(
        &self,
        new: &NewEnrollmentToken,
        actor: &Actor,
    ) -> Result<EnrollmentToken> {
        if new.name.is_empty() || new.name.chars().count() > 255 {
            return Err(StoreError::invalid("name", "must be 1 to 255 characters"));
        }
        let labels = json_object_text("labels", Some(&new.labels))?;
        let expires = new.expires_at.naive_utc();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO enrollment_tokens (token_hash, name, labels, expires_at, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.secret_hash).bind(&new.name).bind(&labels).bind(expires).bind(actor.user_id).bind(now())
            .execute(&mut *tx).await?;
            let id = res.inserted_id() as i32;
            // The audit names the token, never its secret or hash.
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "CREATE", resource_type: "enrollment_token", resource_id: Some(id),
                details: Some(json!({"name": new.name, "labels": new.labels, "expires_at": new.expires_at})),
            })?;
            tx.commit().await?;
            id
        });
        let row = on_pool!(self, p => sqlx::query_as::<_, EnrollmentToken>(
            "SELECT id, name, labels, expires_at, used_at, agent_id, created_by, created_at FROM enrollment_tokens WHERE id = ?")
            .bind(id).fetch_one(p).await?);
        Ok(row)
    }

    /// Checks that a token exists, is unused and unexpired, without spending it.
    pub async fn check_enrollment_token(&self, secret_hash: &str) -> Result<()> {
        let token = on_pool!(self, p => sqlx::query_as::<_, EnrollmentToken>(
            "SELECT id, name, labels, expires_at, used_at, agent_id, created_by, created_at FROM enrollment_tokens WHERE token_hash = ?")
            .bind(secret_hash).fetch_optional(p).await?)
            .ok_or_else(|| StoreError::NotFound("enrolment token".into()))?;
        if token.used_at.is_some() {
            return Err(StoreError::invalid(
                "token",
                format!("token '{}' was already used; make a new one", token.name),
            ));
        }
        if token.expires_at < chrono::Utc::now() {
            return Err(StoreError::invalid(
                "token",
                format!(
                    "token '{}' expired at {}; make a new one",
                    token.name, token.expires_at
                ),
            ));
        }
        Ok(())
    }

    /// Spends a token and creates the agent it enrols, atomically: a token works once, and only
    /// before it expires. Returns the new agent.
    pub async fn enroll_agent(
        &self,
        secret_hash: &str,
        uuid: &str,
        extra_labels: &serde_json::Map<String, serde_json::Value>,
        hostname: &str,
    ) -> Result<Agent> {
        let ts = now();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let token = sqlx::query_as::<_, EnrollmentToken>(
                "SELECT id, name, labels, expires_at, used_at, agent_id, created_by, created_at FROM enrollment_tokens WHERE token_hash = ?")
                .bind(secret_hash).fetch_optional(&mut *tx).await?
                .ok_or_else(|| StoreError::NotFound("enrolment token (it may have been deleted, or mistyped)".into()))?;
            if token.used_at.is_some() {
                return Err(StoreError::invalid("token", format!("token '{}' was already used; make a new one", token.name)));
            }
            if token.expires_at.naive_utc() < ts {
                return Err(StoreError::invalid("token", format!("token '{}' expired at {}; make a new one", token.name, token.expires_at)));
            }
            // The token's labels are the agent's: they decide which servers it may reach, so an
            // agent may repeat them but never add or change one.
            let labels = token.labels.as_ref().map(|t| t.0.clone()).unwrap_or_default();
            if let Some((k, v)) = extra_labels.iter().find(|(k, v)| labels.get(*k) != Some(*v)) {
                let given = labels.iter().map(|(k, v)| format!("{k}={}", crate::model::label_text(v))).collect::<Vec<_>>().join(",");
                return Err(StoreError::invalid("labels", format!(
                    "token '{}' gives this agent the labels [{given}]; it cannot ask for {k}={}: make a token with the labels it needs",
                    token.name, crate::model::label_text(v))));
            }
            let labels_text = serde_json::Value::Object(labels.clone()).to_string();
            let res = sqlx::query(
                "INSERT INTO agents (uuid, name, labels, hostname, revoked, capacity, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
                .bind(uuid).bind(&token.name).bind(&labels_text).bind(fit_chars(hostname, VARCHAR_255)).bind(false).bind(4).bind(ts).bind(ts)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::on_write(e, || format!("an agent named '{}' (revoke and delete it, or name the token differently)", token.name)))?;
            let agent_id = res.inserted_id() as i32;
            let spent = sqlx::query("UPDATE enrollment_tokens SET used_at = ?, agent_id = ? WHERE id = ? AND used_at IS NULL")
                .bind(ts).bind(agent_id).bind(token.id).execute(&mut *tx).await?;
            if spent.rows_affected() != 1 {
                return Err(StoreError::invalid("token", "token was used concurrently"));
            }
            insert_audit!(&mut *tx, &NewAudit {
                actor: &Actor::system(), action: "ENROLL", resource_type: "agent", resource_id: Some(agent_id),
                details: Some(json!({"uuid": uuid, "name": token.name, "hostname": hostname, "labels": labels})),
            })?;
            tx.commit().await?;
            agent_id
        });
        self.get_agent(AgentId(id)).await
    }

    /// Enrolment tokens, newest first (never their secrets).
    pub async fn list_enrollment_tokens(&self, paging: Paging) -> Result<Page<EnrollmentToken>> {
        Ok(page!(self, EnrollmentToken,
            select: "id, name, labels, expires_at, used_at, agent_id, created_by, created_at",
            from: "enrollment_tokens", order: "created_at DESC, id DESC", paging: paging, filters: []))
    }

    /// Deletes an enrolment token (used or not).
    pub async fn delete_enrollment_token(&self, id: i32, actor: &Actor) -> Result<()> {
        let deleted = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query("DELETE FROM enrollment_tokens WHERE id = ?").bind(id).execute(&mut *tx).await?;
            let deleted = res.rows_affected() == 1;
            if deleted {
                insert_audit!(&mut *tx, &NewAudit {
                    actor, action: "DELETE", resource_type: "enrollment_token", resource_id: Some(id),
                    details: None,
                })?;
            }
            tx.commit().await?;
            deleted
        });
        if deleted {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("enrolment token {id}")))
        }
    }

    pub async fn get_agent(&self, id: AgentId) -> Result<Agent> {
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE id = ?");
        let row =
            on_pool!(self, p => sqlx::query_as::<_, Agent>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("agent {id}")))
    }

    pub async fn get_agent_by_uuid(&self, uuid: &str) -> Result<Agent> {
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE uuid = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Agent>(&sql).bind(uuid).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("agent {uuid}")))
    }

    pub async fn get_agent_by_name(&self, name: &str) -> Result<Agent> {
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE name = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Agent>(&sql).bind(name).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("agent '{name}'")))
    }

    pub async fn list_agents(&self, paging: Paging) -> Result<Page<Agent>> {
        Ok(
            page!(self, Agent, select: COLUMNS, from: "agents", order: "name", paging: paging, filters: []),
        )
    }

    /// Records the certificate an agent now holds: at enrolment (`session` None), or renewed
    /// in `session`, then only while that session is the agent's latest. A later session
    /// recorded the certificate it connected with, which is what the agent holds.
    pub async fn set_agent_certificate(
        &self,
        id: AgentId,
        cert: &HeldCertificate,
        session: Option<&str>,
    ) -> Result<()> {
        on_pool!(self, p => {
            let sql = match session {
                None => "UPDATE agents SET cert_fingerprint = ?, cert_expires_at = ?, updated_at = ? WHERE id = ?",
                Some(_) => "UPDATE agents SET cert_fingerprint = ?, cert_expires_at = ?, updated_at = ? \
                            WHERE id = ? AND session_id = ?",
            };
            let mut q = sqlx::query(sql).bind(&cert.fingerprint).bind(cert.expires.naive_utc()).bind(now()).bind(id);
            if let Some(s) = session {
                q = q.bind(s);
            }
            q.execute(p).await?;
        });
        Ok(())
    }

    /// An agent's session started on `presence.controller`.
    pub async fn agent_connected(&self, id: AgentId, presence: &AgentPresence) -> Result<()> {
        let ts = now();
        on_pool!(self, p => {
            // The certificate in the same statement: no round trip more on a connect storm.
            let cert = presence.certificate.as_ref();
            sqlx::query(
                "UPDATE agents SET version = ?, hostname = ?, ansible_version = ?, capacity = ?, last_seen = ?, \
                 connected_controller = ?, session_id = ?, lost_at = NULL, updated_at = ?, \
                 cert_fingerprint = COALESCE(?, cert_fingerprint), cert_expires_at = COALESCE(?, cert_expires_at) \
                 WHERE id = ?")
                .bind(fit_chars(&presence.version, 50)).bind(fit_chars(&presence.hostname, VARCHAR_255))
                .bind(fit_chars(&presence.ansible_version, VARCHAR_255))
                .bind(presence.capacity).bind(ts).bind(&presence.controller).bind(&presence.session).bind(ts)
                .bind(cert.map(|c| &c.fingerprint)).bind(cert.map(|c| c.expires.naive_utc()))
                .bind(id)
                .execute(p).await?;
        });
        Ok(())
    }

    /// Stamps `last_seen` on every agent with a session on `controller`: one statement for
    /// all of them, however many there are.
    pub async fn agents_seen(&self, controller: &str) -> Result<u64> {
        Ok(
            on_pool!(self, p => sqlx::query("UPDATE agents SET last_seen = ? WHERE connected_controller = ?")
            .bind(now()).bind(controller).execute(p).await?.rows_affected()),
        )
    }

    /// The agents whose rows say they have a session on `controller`. A controller that
    /// holds a session its row no longer names lost it to another controller's sweep, or to a
    /// newer session elsewhere (see `Scheduler::check_presence`).
    pub async fn agents_on(&self, controller: &str) -> Result<Vec<AgentId>> {
        Ok(on_pool!(self, p => sqlx::query_scalar::<_, AgentId>(
            "SELECT id FROM agents WHERE connected_controller = ?")
            .bind(controller).fetch_all(p).await?))
    }

    /// Starts the grace of agents whose sessions a controller closed because their rows no
    /// longer named it: a row with no session and no deadline would never be settled.
    pub async fn sessions_disowned(&self, ids: &[AgentId]) -> Result<()> {
        let ts = now();
        on_pool!(self, p => {
            // After a long outage it may be every session: a statement per thousand, not one
            // (and a commit) per agent.
            for chunk in ids.chunks(1000) {
                let mut qb = sqlx::QueryBuilder::new("UPDATE agents SET lost_at = COALESCE(lost_at, ");
                qb.push_bind(ts);
                qb.push(") WHERE connected_controller IS NULL AND id");
                super::push_in(&mut qb, chunk);
                qb.build().execute(p).await?;
            }
        });
        Ok(())
    }

    /// Every revoked agent (each controller drops the sessions it holds of them, whatever the
    /// rows say about where they are connected).
    pub async fn revoked_agents(&self) -> Result<Vec<AgentId>> {
        Ok(on_pool!(self, p => sqlx::query_scalar::<_, AgentId>(
            "SELECT id FROM agents WHERE revoked = ?")
            .bind(true).fetch_all(p).await?))
    }

    /// The session `session` ended. A newer session of the same agent — on this controller or
    /// another — is left alone, however late this one's goodbye arrives.
    pub async fn agent_disconnected(&self, id: AgentId, session: &str) -> Result<()> {
        on_pool!(self, p => {
            let ts = now();
            sqlx::query("UPDATE agents SET connected_controller = NULL, session_id = NULL, last_seen = ?, lost_at = ? \
                         WHERE id = ? AND session_id = ?")
                .bind(ts).bind(ts).bind(id).bind(session).execute(p).await?;
        });
        Ok(())
    }

    /// At start-up: sessions this controller held before it stopped are gone. Their agents'
    /// grace periods start now (or go on, if they had started), so any controller settles them.
    pub async fn sessions_of_controller_lost(&self, controller: &str) -> Result<u64> {
        let ts = now();
        Ok(on_pool!(self, p => sqlx::query(
            "UPDATE agents SET connected_controller = NULL, session_id = NULL, lost_at = COALESCE(lost_at, ?) \
             WHERE connected_controller = ?")
            .bind(ts).bind(controller).execute(p).await?.rows_affected()))
    }

    /// Sessions whose controller stopped stamping `last_seen` before `cutoff` (it died and did
    /// not come back): their agents count as lost since they were last seen.
    pub async fn orphan_sessions_lost(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        Ok(on_pool!(self, p => sqlx::query(
            "UPDATE agents SET connected_controller = NULL, session_id = NULL, lost_at = COALESCE(lost_at, last_seen) \
             WHERE connected_controller IS NOT NULL AND last_seen < ?")
            .bind(cutoff.naive_utc()).execute(p).await?.rows_affected()))
    }

    /// Agents without a session since before `cutoff`, with the moment they were lost.
    pub async fn agents_lost_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<(Agent, DateTime<Utc>)>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM agents WHERE connected_controller IS NULL AND lost_at IS NOT NULL AND lost_at <= ?"
        );
        let agents = on_pool!(self, p => sqlx::query_as::<_, Agent>(&sql).bind(cutoff.naive_utc()).fetch_all(p).await?);
        Ok(agents
            .into_iter()
            .filter_map(|a| {
                let lost = a.lost_at?;
                Some((a, lost))
            })
            .collect())
    }

    /// Clears an agent's loss deadline if it is still `lost_at` (the agent did not come back,
    /// and no other controller settled it first), recording `audit` with it. Returns whether
    /// this call did it.
    pub async fn clear_lost(
        &self,
        id: AgentId,
        lost_at: DateTime<Utc>,
        audit: &NewAudit<'_>,
    ) -> Result<bool> {
        Ok(on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query("UPDATE agents SET lost_at = NULL WHERE id = ? AND lost_at = ? AND connected_controller IS NULL")
                .bind(id).bind(lost_at.naive_utc()).execute(&mut *tx).await?;
            let cleared = res.rows_affected() == 1;
            if cleared {
                insert_audit!(&mut *tx, audit)?;
            }
            tx.commit().await?;
            cleared
        }))
    }

    /// Revokes an agent: its next handshake is refused and live sessions are dropped.
    pub async fn revoke_agent(&self, id: AgentId, actor: &Actor) -> Result<Agent> {
        let agent = self.get_agent(id).await?;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("UPDATE agents SET revoked = ?, updated_at = ? WHERE id = ?").bind(true).bind(now()).bind(id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "REVOKE", resource_type: "agent", resource_id: Some(id.0),
                details: Some(json!({"uuid": agent.uuid, "name": agent.name})),
            })?;
            tx.commit().await?;
        });
        self.get_agent(id).await
    }
}
