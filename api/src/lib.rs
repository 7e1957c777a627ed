//! Outpost's HTTPS API as types: every request and response body of `/api/v1`, the error body,
//! and (feature `client`, on by default) a typed client over rustls. The controller serves these,
//! the `outpost` CLI and the tests send them; none of it touches a database.
//!
//! - [`credentials`]: credentials' bodies; their secrets are written, never read back.
//! - [`notifications`]: notification channels, rules and the delivery log; channel secrets
//!   are written, never read back.
//! - [`results`]: per-task results of a job (from the agent's callback) and their aggregate
//!   over a run.
//! - [`enums`]: roles, job and ticket states, as the database and the JSON spell them.
//! - [`templates`]: job templates and their surveys.
//! - [`types`]: the bodies, one section per resource.
//! - [`schedules`]: schedules, their runs and blackout windows.
//! - [`client`]: an HTTPS client that trusts the Outpost CA and speaks these types.
//! - [`yaml`]: YAML from callers (launch vars, playbooks, inventories) read within bounds.
//! - [`inventory`]: `ansible-inventory --list` output into server records, and the rules for a
//!   server's group chains.

#[cfg(feature = "client")]
pub mod client;
pub mod credentials;
pub mod enums;
pub mod inventory;
pub mod notifications;
pub mod results;
pub mod runs;
pub mod schedules;
pub mod templates;
pub mod types;
pub mod yaml;

pub use credentials::*;
pub use enums::{
    ChannelKind, CredentialKind, DeliveryMode, DeliveryStatus, JobStatus, NotificationEvent,
    OverlapRule, ProjectKind, Role, RunStatus, ScheduleRunStatus, SyncState, TaskStatus,
    TicketPriority, TicketStatus,
};
pub use notifications::*;
pub use results::*;
pub use runs::*;
pub use schedules::*;
pub use templates::*;
pub use types::*;

/// The prefix of every API path.
pub const PREFIX: &str = "/api/v1";
