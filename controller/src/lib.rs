//! The Outpost controller: it owns all state (in MySQL/MariaDB, or an embedded SQLite file),
//! decides which agent runs which Ansible job, ingests the agents' output, and keeps the audit
//! trail.
//!
//! - [`store`]: the database, one API over both backends; [`model`]: its records.
//! - [`server`]: the daemon, wiring the rest: [`session`] (one task per agent, sharing a
//!   [`context`]), [`dispatch`]
//!   (job streams), [`scheduler`], [`ingest`], [`enroll`], [`lifecycle`], [`retention`].
//! - [`lifecycle`]: the one place where a job changes state.
//! - [`http`]: the HTTPS API; [`ui`]: the web UI above it; [`web`]: both on one port.
//! - [`bundle`]: install bundles for new agents; [`vars`]: the rules a launch's variables meet.
//! - [`config`], [`pki`] (the CA on disk), [`metrics`], [`text`] (fitting text to columns).

pub mod bundle;
pub mod config;
pub mod core;
pub mod dispatch;
pub mod enroll;
pub mod http;
pub mod ingest;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod retention;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod session;
pub mod store;
pub mod text;
pub mod ui;
pub mod vars;
pub mod web;

pub use store::{PoolConfig, Store, StoreError};
