//! The outbox worker: one task per controller that flushes due digests, runs the sweeps, and
//! sends due deliveries. Every row it sends it first takes with a lease (a conditional UPDATE,
//! see [`crate::store::outbox`]), so controllers sharing a database never send one row at
//! once; a controller killed mid-send leaves a lease that runs out, and the row is sent again
//! with the same delivery id for the receiver to drop.

pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::notification::channel::{self, Outgoing, SendError};
use crate::notification::retry::After;
use crate::notification::secret::{self, ChannelSecret};
use crate::notification::settings::NotifySettings;

use crate::keyring::{Keyring, Sealed};
use crate::store::notifications::Channel;
use crate::store::outbox::Delivery;
use crate::store::{now, Store};

/// How long a taken row is this worker's: longer than an attempt may take.
const LEASE: Duration = Duration::from_secs(60);
/// Rows taken at a time.
const BATCH: i64 = 20;

pub struct Worker {
    pub store: Store,
    pub keyring: Arc<Keyring>,
    pub settings: NotifySettings,
    /// The controller's own certificates, for the expiry sweep.
    pub pki_dir: std::path::PathBuf,
}

/// Runs until `stop` fires; the attempt in flight then finishes (its lease covers it).
pub async fn run(w: Worker, stop: CancellationToken) {
    let http = match channel::http_client(w.settings.ca_file.as_deref()) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "notifications cannot be sent: the HTTP client cannot be made");
            return;
        }
    };
    let mut last_sweep: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(w.settings.poll) => {}
        }
        if last_sweep.is_none_or(|t| t.elapsed() >= w.settings.sweep) {
            last_sweep = Some(tokio::time::Instant::now());
            if let Err(e) = sweep::run(&w.store, &w.settings, &w.pki_dir).await {
                tracing::warn!(error = %e, "notification sweep failed");
            }
        }
        if let Err(e) = flush_digests(&w).await {
            tracing::warn!(error = %e, "cannot flush notification digests");
        }
        match send_due(&w, &http).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the notification outbox"),
        }
    }
}

async fn flush_digests(w: &Worker) -> crate::store::Result<()> {
    let digest = chrono::Duration::from_std(w.settings.digest).unwrap_or_default();
    for channel in w.store.digests_due(now() - digest).await? {
        if let Some(id) = w.store.flush_digest(channel).await? {
            tracing::info!(channel = %channel, delivery = %id, "notification digest queued");
        }
    }
    Ok(())
}

async fn send_due(w: &Worker, http: &reqwest::Client) -> crate::store::Result<()> {
    let lease = now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
    let due = w.store.claim_deliveries(lease, BATCH).await?;
    let attempts = due.iter().map(|d| attempt(w, http, d));
    for (d, result) in due
        .iter()
        .zip(futures_util::future::join_all(attempts).await)
    {
        record(w, d, result).await?;
    }
    Ok(())
}

/// The channel's secret, opened.
fn opened(keyring: &Keyring, c: &Channel) -> Result<ChannelSecret, SendError> {
    match (&c.key_id, &c.secret) {
        (Some(key_id), Some(bytes)) => secret::open(
            keyring,
            &c.uuid,
            c.kind,
            &Sealed {
                key_id: key_id.clone(),
                bytes: bytes.clone(),
            },
        )
        .map_err(|e| SendError::Config(format!("its secret cannot be opened: {e}"))),
        _ => Ok(ChannelSecret::default()),
    }
}

async fn attempt(w: &Worker, http: &reqwest::Client, d: &Delivery) -> Result<(), SendError> {
    let c = w
        .store
        .get_channel(d.channel_id)
        .await
        .map_err(|e| SendError::Transport(format!("reading the channel: {e}")))?;
    let secret = opened(&w.keyring, &c)?;
    let out = Outgoing {
        kind: c.kind,
        delivery_id: &d.delivery_id,
        event: d.event.as_str(),
        body: &d.payload.0,
        secret: &secret,
        email: c.config.0.email.as_ref(),
    };
    channel::send(http, &out).await
}

async fn record(w: &Worker, d: &Delivery, r: Result<(), SendError>) -> crate::store::Result<()> {
    match r {
        Ok(()) => {
            tracing::info!(delivery = %d.delivery_id, channel = %d.channel, event = %d.event, "notification sent");
            w.store.delivery_sent(d.id).await
        }
        Err(e) => {
            let attempts = u32::try_from(d.attempts).unwrap_or(0).saturating_add(1);
            let retry_at = match w.settings.backoff.after(attempts) {
                After::RetryIn(wait) => {
                    Some(now() + chrono::Duration::from_std(wait).unwrap_or_default())
                }
                After::GiveUp => None,
            };
            tracing::warn!(delivery = %d.delivery_id, channel = %d.channel, attempts, error = %e,
                dead = retry_at.is_none(), "notification not delivered");
            w.store
                .delivery_failed(d.id, &e.to_string(), retry_at)
                .await
        }
    }
}
