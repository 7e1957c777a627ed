//! The notification settings: digest period, retry backoff, sweep thresholds and SLAs. The
//! configuration layers fill them in (`crate::config`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::retry::Backoff;
use crate::model::TicketPriority;

/// Minutes a ticket of each priority may stay unresolved (the file's `[ticket_sla_minutes]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaMinutes {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
}

impl Default for SlaMinutes {
    fn default() -> Self {
        SlaMinutes {
            critical: 60,
            high: 240,
            medium: 1440,
            low: 4320,
        }
    }
}

impl SlaMinutes {
    pub fn of(&self, p: TicketPriority) -> Duration {
        let m = match p {
            TicketPriority::Critical => self.critical,
            TicketPriority::High => self.high,
            TicketPriority::Medium => self.medium,
            TicketPriority::Low => self.low,
        };
        Duration::from_secs(m.max(1).saturating_mul(60))
    }
}

#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub digest: Duration,
    pub backoff: Backoff,
    pub ca_file: Option<PathBuf>,
    pub agent_offline: Duration,
    pub cert_expiry: Duration,
    pub sla: SlaMinutes,
    /// How often the worker looks for due deliveries.
    pub poll: Duration,
    /// How often the sweeps (SLA, agents, certificates) run.
    pub sweep: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            digest: Duration::from_secs(900),
            backoff: Backoff {
                base: Duration::from_secs(5),
                cap: Duration::from_secs(3600),
                max_attempts: 12,
            },
            ca_file: None,
            agent_offline: Duration::from_secs(600),
            cert_expiry: Duration::from_secs(2 * 86400),
            sla: SlaMinutes::default(),
            poll: Duration::from_millis(500),
            sweep: Duration::from_secs(30),
        }
    }
}
