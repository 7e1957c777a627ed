//! The events found by looking rather than by a transaction: tickets unresolved past their
//! SLA, agents away longer than the setting, certificates (agents', the controller's API and
//! agent-facing ones, its CA) expiring within the setting. Each occurrence has an event key,
//! unique per channel in the outbox, so every controller may sweep and none doubles it.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::model::TicketPriority;
use crate::notification::facts::{JobFacts, JOB_FACTS_SQL};
use crate::notification::settings::NotifySettings;
use crate::notification::{labels_of, AgentRef, Event, NotificationEvent, TicketRef};
use crate::store::{now, on_pool, Result, Store};

/// Tickets looked at per priority per sweep (the oldest first).
const SWEEP_LIMIT: i64 = 200;

pub async fn run(store: &Store, s: &NotifySettings, pki_dir: &Path) -> Result<usize> {
    let mut n = sla(store, s).await?;
    n += agents(store, s).await?;
    n += controller_certs(store, s, pki_dir).await?;
    tracing::debug!(queued = n, "notification sweep done");
    Ok(n)
}

fn ago(d: std::time::Duration) -> chrono::NaiveDateTime {
    now() - chrono::Duration::from_std(d).unwrap_or_default()
}

async fn sla(store: &Store, s: &NotifySettings) -> Result<usize> {
    let mut n = 0;
    for p in TicketPriority::ALL {
        let rows: Vec<(String, String, i32, DateTime<Utc>)> = on_pool!(store, pool => sqlx::query_as(
            "SELECT ticket_id, title, job_id, created_at FROM tickets WHERE status IN ('open', 'in_progress') \
             AND priority = ? AND created_at <= ? ORDER BY created_at LIMIT ?")
            .bind(p.as_str()).bind(ago(s.sla.of(*p))).bind(SWEEP_LIMIT).fetch_all(pool).await?);
        for (uuid, title, job, created) in rows {
            let facts: Option<JobFacts> = on_pool!(store, pool => sqlx::query_as(JOB_FACTS_SQL).bind(job).fetch_optional(pool).await?);
            let mut e = Event::new(
                NotificationEvent::TicketSla,
                *p,
                format!(
                    "ticket unresolved past its SLA (opened {}): {title}",
                    created.format("%Y-%m-%d %H:%M UTC")
                ),
            );
            if let Some(f) = facts {
                e.environment = f.environment.clone();
                e.labels = labels_of(f.tags.as_ref().map(|t| &t.0));
            }
            e.link = format!("/tickets/{uuid}");
            e.key = Some(format!("sla:{uuid}"));
            e.ticket = Some(TicketRef {
                id: uuid,
                title,
                priority: *p,
            });
            n += store.enqueue_event(&e).await?;
        }
    }
    Ok(n)
}

async fn agents(store: &Store, s: &NotifySettings) -> Result<usize> {
    let mut n = 0;
    type Row = (
        i32,
        String,
        Option<sqlx::types::Json<crate::model::JsonObject>>,
        DateTime<Utc>,
    );
    let offline: Vec<Row> = on_pool!(store, pool => sqlx::query_as(
        "SELECT id, name, labels, last_seen FROM agents WHERE revoked = FALSE AND last_seen IS NOT NULL \
         AND last_seen <= ? AND (connected_controller IS NULL OR lost_at IS NOT NULL) ORDER BY id LIMIT ?")
        .bind(ago(s.agent_offline)).bind(SWEEP_LIMIT).fetch_all(pool).await?);
    for (id, name, labels, last_seen) in offline {
        let mut e = Event::new(
            NotificationEvent::AgentOffline,
            TicketPriority::High,
            format!(
                "agent {name} offline since {}",
                last_seen.format("%Y-%m-%d %H:%M UTC")
            ),
        );
        e.labels = labels_of(labels.as_ref().map(|l| &l.0));
        e.link = "/fleet".into();
        e.key = Some(format!("agent_offline:{id}:{}", last_seen.timestamp()));
        e.agent = Some(AgentRef { id, name });
        n += store.enqueue_event(&e).await?;
    }
    let soon = now() + chrono::Duration::from_std(s.cert_expiry).unwrap_or_default();
    type CertRow = (
        i32,
        String,
        Option<sqlx::types::Json<crate::model::JsonObject>>,
        DateTime<Utc>,
        Option<String>,
    );
    let expiring: Vec<CertRow> = on_pool!(store, pool => sqlx::query_as(
        "SELECT id, name, labels, cert_expires_at, cert_fingerprint FROM agents WHERE revoked = FALSE \
         AND cert_expires_at IS NOT NULL AND cert_expires_at <= ? ORDER BY id LIMIT ?")
        .bind(soon).bind(SWEEP_LIMIT).fetch_all(pool).await?);
    for (id, name, labels, expires, fp) in expiring {
        let mut e = cert_event(&format!("agent {name}"), expires);
        e.labels = labels_of(labels.as_ref().map(|l| &l.0));
        e.link = "/fleet".into();
        e.key = Some(format!(
            "cert:agent:{id}:{}",
            fp.unwrap_or_else(|| expires.timestamp().to_string())
        ));
        e.agent = Some(AgentRef { id, name });
        n += store.enqueue_event(&e).await?;
    }
    Ok(n)
}

fn cert_event(what: &str, expires: DateTime<Utc>) -> Event {
    let mut e = Event::new(
        NotificationEvent::CertificateExpiring,
        TicketPriority::High,
        format!(
            "the certificate of {what} expires {}",
            expires.format("%Y-%m-%d %H:%M UTC")
        ),
    );
    e.link = "/fleet".into();
    e
}

/// The controller's certificate (API and agents' endpoint) and its CA, read from its PKI
/// directory.
async fn controller_certs(store: &Store, s: &NotifySettings, pki_dir: &Path) -> Result<usize> {
    let soon = Utc::now() + chrono::Duration::from_std(s.cert_expiry).unwrap_or_default();
    let mut n = 0;
    for (file, what) in [
        ("server.pem", "the controller"),
        ("ca.pem", "the Outpost CA"),
    ] {
        let Ok(pem) = std::fs::read_to_string(pki_dir.join(file)) else {
            continue;
        };
        let Some(der) = outpost_protocol::pki::certs_from_pem(&pem)
            .ok()
            .and_then(|c| c.into_iter().next())
        else {
            continue;
        };
        let Ok(info) = outpost_protocol::pki::inspect(&der) else {
            continue;
        };
        let Some(expires) = DateTime::<Utc>::from_timestamp(info.not_after.unix_timestamp(), 0)
        else {
            continue;
        };
        if expires <= soon {
            let mut e = cert_event(what, expires);
            e.key = Some(format!(
                "cert:{file}:{}",
                outpost_protocol::pki::fingerprint(&der)
            ));
            n += store.enqueue_event(&e).await?;
        }
    }
    Ok(n)
}
