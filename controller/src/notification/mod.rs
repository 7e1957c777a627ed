//! Notifications: what happened ([`Event`]), where it goes ([`routing`]), what is sent
//! ([`payload`], signed by [`signing`]), and how it gets there without being lost or doubled
//! (outbox rows written in the same transaction as the event, `crate::store::outbox`; sent with
//! retries, [`retry`], through [`channel`]: the webhook, chat and email senders). The worker and
//! the sweeps that read and write the store are `crate::notifier`, above the store.
//!
//! Text in an event (hostnames, error lines, titles) comes from callers and managed hosts: it
//! is data everywhere it goes — escaped for chat markup, kept out of mail headers.

pub mod channel;
pub mod facts;
pub mod payload;
pub mod retry;
pub mod routing;
pub mod secret;
pub mod settings;
pub mod signing;

use std::collections::BTreeMap;

use serde::Serialize;

pub use outpost_api::{ChannelKind, DeliveryMode, DeliveryStatus, NotificationEvent};

use crate::model::TicketPriority;

/// A job an event is about.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobRef {
    pub id: String,
    pub playbook: String,
    pub server: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A ticket an event is about.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TicketRef {
    pub id: String,
    pub title: String,
    pub priority: TicketPriority,
}

/// An agent an event is about.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentRef {
    pub id: i32,
    pub name: String,
}

/// Something to tell people about, with what routing looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: NotificationEvent,
    pub priority: TicketPriority,
    pub environment: Option<String>,
    /// The server's tags or the agent's labels (string values only), for routing labels.
    pub labels: BTreeMap<String, String>,
    /// The event opened this ticket (a failed job's): `ticket_opened` rules match it too.
    pub opened_ticket: bool,
    pub job: Option<JobRef>,
    pub ticket: Option<TicketRef>,
    pub agent: Option<AgentRef>,
    /// One line saying what happened.
    pub summary: String,
    /// The UI path that shows it (`/jobs/…`, `/tickets/…`).
    pub link: String,
    /// Sweeper events: what makes this occurrence unique (one row per channel however many
    /// controllers sweep).
    pub key: Option<String>,
}

impl Event {
    pub fn new(kind: NotificationEvent, priority: TicketPriority, summary: String) -> Event {
        Event {
            kind,
            priority,
            environment: None,
            labels: BTreeMap::new(),
            opened_ticket: false,
            job: None,
            ticket: None,
            agent: None,
            summary,
            link: String::new(),
            key: None,
        }
    }
}

/// String-valued tags of a JSON object (other values cannot be a routing label).
pub fn labels_of(
    tags: Option<&serde_json::Map<String, serde_json::Value>>,
) -> BTreeMap<String, String> {
    tags.map(|t| {
        t.iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
            .collect()
    })
    .unwrap_or_default()
}
