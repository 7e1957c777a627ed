//! Notification channels, routing rules and the delivery log (admins only). A channel's URL
//! and secret are checked, sealed under the keyring's current key and never shown again (a
//! view says only whether a secret is set and the URL's origin). "Send a test" goes through
//! the outbox like every other notification.

use outpost_api::{
    ChannelPatchRequest, ChannelView, DeleteResult, DeliveryQuery, DeliveryView, EmailSettings,
    NewChannelRequest, NewRuleRequest, Page, RuleView, TestQueued, MAX_CHANNEL_SECRET_BYTES,
    MAX_RECIPIENTS, MAX_URL_BYTES,
};

use super::{paging, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::{ChannelId, RuleId};
use crate::notification::secret::{self, ChannelSecret};
use crate::notification::{payload, ChannelKind, NotificationEvent};
use crate::store::notifications::{Channel, ChannelConfig, ChannelRecord, NewRule, RuleRow};
use crate::store::outbox::{Delivery, DeliveryFilter};

pub fn view(c: &Channel) -> ChannelView {
    ChannelView {
        id: c.id.0,
        name: c.name.clone(),
        kind: c.kind,
        on_call: c.on_call,
        digest: c.digest,
        url: c.config.0.url_shown.clone(),
        email: c.config.0.email.clone(),
        secret_set: c.secret.is_some() && c.config.0.secret_set,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

fn rule_view(r: &RuleRow) -> RuleView {
    RuleView {
        id: r.id.0,
        event: r.event,
        environment: r.environment.clone(),
        min_priority: r.min_priority(),
        routing_label: r.routing_label.clone(),
        channel_id: r.channel_id.0,
        channel: r.channel.clone(),
        mode: r.mode,
        created_at: r.created_at,
    }
}

pub fn delivery_view(d: &Delivery) -> DeliveryView {
    DeliveryView {
        id: d.id,
        delivery_id: d.delivery_id.clone(),
        channel_id: d.channel_id.0,
        channel: d.channel.clone(),
        event: d.event,
        status: d.status,
        attempts: d.attempts,
        last_error: d.last_error.clone(),
        summary: payload::summary_of(&d.payload.0),
        created_at: d.created_at,
        next_attempt_at: d.next_attempt_at,
        last_attempt_at: d.last_attempt_at,
        sent_at: d.sent_at,
    }
}

fn check_url(url: &str) -> Result<()> {
    if url.len() > MAX_URL_BYTES {
        return Err(ServiceError::unprocessable(format!(
            "url: at most {MAX_URL_BYTES} bytes"
        )));
    }
    let u = url::Url::parse(url)
        .map_err(|_| ServiceError::unprocessable("url: not a URL (https://host/path)"))?;
    if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none_or(str::is_empty) {
        return Err(ServiceError::unprocessable(
            "url: must be an http:// or https:// URL with a host",
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(ServiceError::unprocessable(
            "url: must not carry a user or password",
        ));
    }
    Ok(())
}

fn check_secret(s: &str, field: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_CHANNEL_SECRET_BYTES || s.contains(['\r', '\n', '\0']) {
        return Err(ServiceError::unprocessable(format!(
            "{field}: must be 1 to {MAX_CHANNEL_SECRET_BYTES} bytes without line breaks"
        )));
    }
    Ok(())
}

fn check_email(e: &EmailSettings) -> Result<()> {
    let bad = |m: &str| Err(ServiceError::unprocessable(m.to_owned()));
    let host_ok = !e.host.is_empty()
        && e.host.len() <= 253
        && e.host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !host_ok {
        return bad("email.host: must be a host name or address");
    }
    if e.port == 0 {
        return bad("email.port: must be 1 to 65535");
    }
    if e.from.parse::<lettre::message::Mailbox>().is_err() {
        return bad("email.from: not an email address");
    }
    if e.to.is_empty() || e.to.len() > MAX_RECIPIENTS {
        return Err(ServiceError::unprocessable(format!(
            "email.to: 1 to {MAX_RECIPIENTS} addresses"
        )));
    }
    if let Some(bad_to) =
        e.to.iter()
            .find(|t| t.parse::<lettre::message::Mailbox>().is_err())
    {
        return Err(ServiceError::unprocessable(format!(
            "email.to: '{}' is not an email address",
            payload::plain_line(bad_to)
        )));
    }
    if e.username
        .as_ref()
        .is_some_and(|u| u.is_empty() || u.len() > 255 || u.chars().any(char::is_control))
    {
        return bad("email.username: 1 to 255 characters without control characters");
    }
    if e.ca_file
        .as_ref()
        .is_some_and(|p| !p.starts_with('/') || p.contains('\0'))
    {
        return bad("email.ca_file: must be an absolute path on the controller");
    }
    Ok(())
}

/// Checks what a channel of `kind` needs, then seals it for the row `uuid`.
fn sealed_record(
    core: &Core,
    uuid: String,
    name: String,
    kind: ChannelKind,
    email: Option<EmailSettings>,
    flags: (bool, bool),
    s: &ChannelSecret,
) -> Result<ChannelRecord> {
    match kind {
        ChannelKind::Webhook | ChannelKind::Chat => {
            let url = s.url.as_deref().ok_or_else(|| {
                ServiceError::unprocessable("url: a webhook or chat channel needs one")
            })?;
            check_url(url)?;
            if email.is_some() {
                return Err(ServiceError::unprocessable(
                    "email: only email channels have SMTP settings",
                ));
            }
            match (&s.secret, kind) {
                (Some(x), _) => check_secret(x, "secret")?,
                (None, ChannelKind::Webhook) => {
                    return Err(ServiceError::unprocessable(
                        "secret: a webhook needs a signing secret",
                    ))
                }
                _ => {}
            }
        }
        ChannelKind::Email => {
            let e = email.as_ref().ok_or_else(|| {
                ServiceError::unprocessable("email: an email channel needs its SMTP settings")
            })?;
            check_email(e)?;
            if s.url.is_some() {
                return Err(ServiceError::unprocessable(
                    "url: only webhook and chat channels have one",
                ));
            }
            if let Some(x) = &s.secret {
                check_secret(x, "secret")?;
            }
            if e.username.is_some() != s.secret.is_some() {
                return Err(ServiceError::unprocessable(
                    "secret: an SMTP login needs both email.username and the password as secret",
                ));
            }
        }
    }
    let sealed = secret::seal(&core.keyring, &uuid, kind, s).map_err(|e| {
        tracing::error!(error = %e, "a channel secret cannot be sealed");
        ServiceError::internal(
            "the controller cannot seal secrets: see its log (its credentials key)",
        )
    })?;
    Ok(ChannelRecord {
        uuid,
        name,
        kind,
        config: ChannelConfig {
            url_shown: s.url.as_deref().map(secret::shown_url),
            email,
            secret_set: s.secret.is_some(),
        },
        on_call: flags.0,
        digest: flags.1,
        sealed: (sealed.key_id, sealed.bytes),
    })
}

pub async fn create_channel(
    core: &Core,
    caller: &Caller,
    mut r: NewChannelRequest,
) -> Result<ChannelView> {
    let s = ChannelSecret {
        url: r.url.take(),
        secret: r.secret.take(),
    };
    let rec = sealed_record(
        core,
        uuid::Uuid::new_v4().to_string(),
        r.name.clone(),
        r.kind,
        r.email.take(),
        (r.on_call, r.digest),
        &s,
    )?;
    Ok(view(
        &core.store.create_channel(&rec, &caller.actor()).await?,
    ))
}

pub async fn update_channel(
    core: &Core,
    caller: &Caller,
    id: ChannelId,
    mut r: ChannelPatchRequest,
) -> Result<ChannelView> {
    let old = core.store.get_channel(id).await?;
    let mut s = match (&old.key_id, &old.secret) {
        (Some(k), Some(b)) => secret::open(
            &core.keyring,
            &old.uuid,
            old.kind,
            &crate::keyring::Sealed {
                key_id: k.clone(),
                bytes: b.clone(),
            },
        )
        .map_err(|e| {
            tracing::error!(error = %e, channel = %old.name, "a channel secret cannot be opened");
            ServiceError::internal("the controller cannot open this channel's secret: see its log")
        })?,
        _ => ChannelSecret::default(),
    };
    if let Some(u) = r.url.take() {
        s.url = Some(u);
    }
    if let Some(x) = r.secret.take() {
        s.secret = Some(x);
    }
    let rec = sealed_record(
        core,
        old.uuid.clone(),
        r.name.take().unwrap_or(old.name.clone()),
        old.kind,
        r.email.take().or(old.config.0.email.clone()),
        (
            r.on_call.unwrap_or(old.on_call),
            r.digest.unwrap_or(old.digest),
        ),
        &s,
    )?;
    Ok(view(
        &core.store.update_channel(id, &rec, &caller.actor()).await?,
    ))
}

pub async fn list_channels(core: &Core) -> Result<Vec<ChannelView>> {
    Ok(core.store.list_channels().await?.iter().map(view).collect())
}

pub async fn get_channel(core: &Core, id: ChannelId) -> Result<ChannelView> {
    Ok(view(&core.store.get_channel(id).await?))
}

pub async fn delete_channel(core: &Core, caller: &Caller, id: ChannelId) -> Result<DeleteResult> {
    core.store.delete_channel(id, &caller.actor()).await?;
    Ok(DeleteResult {
        outcome: "deleted".into(),
        message: "the channel, its rules and its delivery log are deleted".into(),
    })
}

/// Queues a test notification to one channel; the worker sends it like any other.
pub async fn test_channel(core: &Core, caller: &Caller, id: ChannelId) -> Result<TestQueued> {
    let c = core.store.get_channel(id).await?;
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let body = payload::test(&c.name, &delivery_id, chrono::Utc::now());
    core.store
        .enqueue_one(id, NotificationEvent::Test, &delivery_id, &body)
        .await?;
    tracing::info!(channel = %c.name, delivery = %delivery_id, user = %caller.user.username, "test notification queued");
    Ok(TestQueued {
        delivery_id,
        message: format!("a test to {} is queued; see the delivery log", c.name),
    })
}

pub async fn create_rule(core: &Core, caller: &Caller, r: NewRuleRequest) -> Result<RuleView> {
    if matches!(r.event, NotificationEvent::Digest | NotificationEvent::Test) {
        return Err(ServiceError::unprocessable(
            "event: digest and test are not events a rule can route",
        ));
    }
    let channel = core
        .store
        .get_channel_by_name(&r.channel)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound(_) => ServiceError::unprocessable(format!(
                "channel: no channel named '{}'",
                payload::plain_line(&r.channel)
            )),
            e => e.into(),
        })?;
    let new = NewRule {
        event: r.event,
        environment: r.environment.filter(|e| !e.is_empty()),
        min_priority: r.min_priority,
        routing_label: r.routing_label.filter(|l| !l.is_empty()),
        channel: channel.id,
        mode: r.mode,
    };
    Ok(rule_view(
        &core.store.create_rule(&new, &caller.actor()).await?,
    ))
}

pub async fn list_rules(core: &Core) -> Result<Vec<RuleView>> {
    Ok(core
        .store
        .list_rules()
        .await?
        .iter()
        .map(rule_view)
        .collect())
}

pub async fn delete_rule(core: &Core, caller: &Caller, id: RuleId) -> Result<DeleteResult> {
    core.store.delete_rule(id, &caller.actor()).await?;
    Ok(DeleteResult {
        outcome: "deleted".into(),
        message: "the rule is deleted".into(),
    })
}

pub async fn deliveries(core: &Core, q: &DeliveryQuery) -> Result<Page<DeliveryView>> {
    let f = DeliveryFilter {
        channel: q.channel_id.map(ChannelId),
        status: q.status,
    };
    let page = core
        .store
        .list_deliveries(&f, paging(q.limit, q.offset))
        .await?;
    Ok(super::views::page(page, delivery_view))
}
