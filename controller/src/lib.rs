//! The Outpost controller: it owns all state (in MySQL/MariaDB, or an embedded SQLite file),
//! decides which agent runs which Ansible job, ingests the agents' output, and keeps the audit
//! trail.
//!
//! - [`store`]: the database, one API over both backends; [`model`]: its records.
//! - [`server`]: the daemon, wiring the rest: [`session`] (one task per agent), [`dispatch`]
//!   (job streams), [`scheduler`], [`ingest`], [`enroll`], [`lifecycle`], [`retention`].
//! - [`config`], [`pki`] (the CA on disk), [`metrics`].

pub mod config;
pub mod dispatch;
pub mod enroll;
pub mod ingest;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod retention;
pub mod scheduler;
pub mod server;
pub mod session;
pub mod store;

pub use store::{PoolConfig, Store, StoreError};
