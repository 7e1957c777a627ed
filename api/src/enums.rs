//! The domain's enums, spelled as the database and the API spell them: one definition for the
//! controller's store, the API's JSON and the CLI.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

/// A string that does not name a variant of one of the domain's enums.
#[derive(Debug, Error)]
#[error("unknown {kind} '{value}'; expected one of: {}", .expected.trim_end())]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Declares an enum stored as a lower-case string (a MySQL ENUM, a CHECKed TEXT in SQLite).
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant {
                        kind: $kind,
                        value: s.to_owned(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownVariant;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
}

string_enum!(
    /// What a user may do: viewers read, operators also run jobs and work tickets, admins
    /// also manage users, servers, playbooks and agents.
    Role, "role", { Admin => "admin", Operator => "operator", Viewer => "viewer" }
);

string_enum!(
    /// Where a job is in its life. Moves only forward: pending → running → a final state,
    /// or pending → cancelled.
    JobStatus, "job status", {
        Pending => "pending",
        Running => "running",
        Success => "success",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

string_enum!(
    /// How one task ended on one host, as the agent's callback reported it.
    TaskStatus, "task status", {
        Ok => "ok",
        Changed => "changed",
        Failed => "failed",
        Unreachable => "unreachable",
        Skipped => "skipped",
        Rescued => "rescued",
    }
);

string_enum!(
    /// Where a run stands: running while any of its jobs is; then from how its jobs ended
    /// and whether a budget, a canary or a person stopped it.
    RunStatus, "run status", {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        PartiallyFailed => "partially_failed",
        Cancelled => "cancelled",
        StoppedByBudget => "stopped_by_budget",
    }
);

string_enum!(
    TicketStatus, "ticket status", {
        Open => "open",
        InProgress => "in_progress",
        Resolved => "resolved",
        Closed => "closed",
    }
);

string_enum!(
    TicketPriority, "ticket priority", {
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
);

string_enum!(
    /// Where a project's tree comes from: a git repository, an uploaded archive, or one
    /// uploaded playbook (what `POST /api/v1/playbooks` with content makes).
    ProjectKind, "project kind", { Git => "git", Archive => "archive", File => "file" }
);

string_enum!(
    /// What a credential holds: an SSH private key (for servers' SSH and projects' git), a
    /// password for `become`, or an ansible-vault password (with its vault id).
    CredentialKind, "credential kind", {
        SshKey => "ssh_key",
        BecomePassword => "become_password",
        VaultPassword => "vault_password",
    }
);

string_enum!(
    /// Where a project's last sync stands. A failed sync keeps the previous revision.
    SyncState, "sync state", {
        Never => "never",
        Syncing => "syncing",
        Ok => "ok",
        Failed => "failed",
    }
);

impl JobStatus {
    /// A final status never changes again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl Role {
    /// Whether this role includes everything `other` may do.
    pub fn at_least(self, other: Role) -> bool {
        fn rank(r: Role) -> u8 {
            match r {
                Role::Viewer => 0,
                Role::Operator => 1,
                Role::Admin => 2,
            }
        }
        rank(self) >= rank(other)
    }
}

impl TicketPriority {
    /// The priority of a ticket opened for a failure in the given server environment.
    pub fn for_environment(environment: Option<&str>) -> TicketPriority {
        match environment.map(str::to_ascii_lowercase).as_deref() {
            Some("production" | "prod") => TicketPriority::High,
            Some("staging" | "stage") => TicketPriority::Medium,
            _ => TicketPriority::Low,
        }
    }
}

string_enum!(
    /// Where a notification channel sends: a signed JSON webhook, a Slack-compatible chat
    /// webhook (Slack, Mattermost), or email over SMTP with STARTTLS.
    ChannelKind, "channel kind", { Webhook => "webhook", Chat => "chat", Email => "email" }
);

string_enum!(
    /// What a notification reports. `ticket_opened` also matches the ticket a failed job opens;
    /// `test` is the "send a test" of one channel.
    NotificationEvent, "notification event", {
        JobFailed => "job_failed",
        JobRecovered => "job_recovered",
        TicketOpened => "ticket_opened",
        TicketSla => "ticket_sla",
        AgentOffline => "agent_offline",
        CertificateExpiring => "certificate_expiring",
        Digest => "digest",
        Test => "test",
    }
);

string_enum!(
    /// A rule's delivery: at once, or batched per channel every `notification_digest_secs`.
    DeliveryMode, "delivery mode", { Immediate => "immediate", Digest => "digest" }
);

string_enum!(
    /// Where a delivery stands: `pending` (due or waiting for a retry), `digest` (waiting for
    /// its channel's next digest), `batched` (sent inside a digest), `sent`, `dead` (gave up
    /// after the most attempts).
    DeliveryStatus, "delivery status", {
        Pending => "pending",
        Digest => "digest",
        Batched => "batched",
        Sent => "sent",
        Dead => "dead",
    }
);

string_enum!(
    /// What a schedule does when its previous run's jobs are still pending or running at the
    /// next slot: skip the slot (recorded), or queue another run behind them.
    OverlapRule, "overlap rule", { Skip => "skip", Queue => "queue" }
);

string_enum!(
    /// What became of one slot of a schedule: `fired` (its jobs were created, in the same
    /// commit), `skipped` (missed or overlapping) or `failed` (the launch was refused: owner
    /// deactivated, template gone, bad answers…). `claimed` (by a controller, being launched)
    /// is written only by earlier versions, which claimed a slot before launching it.
    ScheduleRunStatus, "schedule run status", {
        Claimed => "claimed",
        Fired => "fired",
        Skipped => "skipped",
        Failed => "failed",
    }
);
