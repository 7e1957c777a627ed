//! Notifications' bodies: channels (a channel's URL and secret are written, never read back:
//! a chat webhook's URL is its secret), routing rules, and the delivery log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::enums::{ChannelKind, DeliveryMode, DeliveryStatus, NotificationEvent, TicketPriority};

/// The longest channel secret (webhook signing secret, SMTP password) accepted.
pub const MAX_CHANNEL_SECRET_BYTES: usize = 1024;
/// The longest webhook URL accepted.
pub const MAX_URL_BYTES: usize = 2048;
/// The most recipients of an email channel.
pub const MAX_RECIPIENTS: usize = 50;

/// An email channel's SMTP settings (what may be shown; the password is the channel's secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// The SMTP server's host name (its certificate must carry it).
    pub host: String,
    /// The submission port, STARTTLS always [default: 587].
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    pub from: String,
    pub to: Vec<String>,
    /// The SMTP login; its password is the channel's `secret`.
    #[serde(default)]
    pub username: Option<String>,
    /// A PEM file of CA certificates to trust for this server, beside the public roots.
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_smtp_port() -> u16 {
    587
}

/// A channel as the API shows it: its URL only as scheme and host, never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelView {
    pub id: i32,
    pub name: String,
    pub kind: ChannelKind,
    /// Receives critical and high priority events when no rules are configured.
    pub on_call: bool,
    /// Receives the other events, batched, when no rules are configured.
    pub digest: bool,
    /// The webhook's origin (`https://host:port/…`); the full URL is sealed.
    pub url: Option<String>,
    pub email: Option<EmailSettings>,
    /// Whether a secret (signing secret, SMTP password) is stored.
    pub secret_set: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new channel. `url` for webhook and chat, `email` for email; `secret` is a webhook's
/// signing secret (required) or the SMTP password.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannelRequest {
    pub name: String,
    pub kind: ChannelKind,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub email: Option<EmailSettings>,
    #[serde(default)]
    pub on_call: bool,
    #[serde(default)]
    pub digest: bool,
    #[serde(default)]
    pub secret: Option<String>,
}

/// Changes to a channel; a field left out stays as it is.
#[derive(Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelPatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub email: Option<EmailSettings>,
    #[serde(default)]
    pub on_call: Option<bool>,
    #[serde(default)]
    pub digest: Option<bool>,
    #[serde(default)]
    pub secret: Option<String>,
}

macro_rules! redacted_debug {
    ($ty:ident, $($field:ident),*) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .field("url", &self.url.as_ref().map(|_| "<redacted>"))
                    .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
                    .finish()
            }
        }
        impl Drop for $ty {
            fn drop(&mut self) {
                use zeroize::Zeroize;
                self.secret.zeroize();
                self.url.zeroize();
            }
        }
    };
}
redacted_debug!(NewChannelRequest, name, kind, email, on_call, digest);
redacted_debug!(ChannelPatchRequest, name, email, on_call, digest);

/// A routing rule: an event, filters, a channel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuleView {
    pub id: i32,
    pub event: NotificationEvent,
    pub environment: Option<String>,
    pub min_priority: Option<TicketPriority>,
    /// `key=value`: the server's tag (or the agent's label) that must match.
    pub routing_label: Option<String>,
    pub channel_id: i32,
    pub channel: String,
    pub mode: DeliveryMode,
    pub created_at: DateTime<Utc>,
}

/// A new routing rule; the channel is named.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRuleRequest {
    pub event: NotificationEvent,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub min_priority: Option<TicketPriority>,
    #[serde(default)]
    pub routing_label: Option<String>,
    pub channel: String,
    #[serde(default = "immediate")]
    pub mode: DeliveryMode,
}

fn immediate() -> DeliveryMode {
    DeliveryMode::Immediate
}

/// One delivery of the log: an event to a channel, with its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    /// Sent with every attempt (`X-Outpost-Delivery`, the email's Message-ID) so a receiver
    /// can drop repeats.
    pub delivery_id: String,
    pub channel_id: i32,
    pub channel: String,
    pub event: NotificationEvent,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// One line saying what it reports.
    pub summary: String,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Filters of the delivery log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only this channel's (by id).
    pub channel_id: Option<i32>,
    pub status: Option<DeliveryStatus>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// What "send a test" queued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TestQueued {
    pub delivery_id: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_never_show_their_secret_or_url() {
        let r = NewChannelRequest {
            name: "hook".into(),
            kind: ChannelKind::Chat,
            url: Some("https://hooks.example/T000/SECRETPATH".into()),
            email: None,
            on_call: true,
            digest: false,
            secret: Some("SIGNINGSECRET".into()),
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("SECRETPATH") && !shown.contains("SIGNINGSECRET"));
        assert!(shown.contains("hook"));
    }
}
