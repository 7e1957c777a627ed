//! The Outpost controller: it owns all state (in MySQL/MariaDB, or an embedded SQLite file),
//! decides which agent runs which Ansible job, ingests the agents' output, and serves the API
//! that people and the `outpost` CLI use.
//!
//! This crate holds the store and the domain model today; the QUIC endpoint, scheduler,
//! ingest and API are built on them.

pub mod model;
pub mod store;

pub use store::{PoolConfig, Store, StoreError};
