//! The Outpost controller: it owns all state (in MySQL/MariaDB, or an embedded SQLite file),
//! decides which agent runs which Ansible job, ingests the agents' output, and keeps the audit
//! trail.
//!
//! The layers, from the bottom; each imports only the ones below it:
//! - [`store`]: the database, one API over both backends; [`model`]: its records and id types.
//! - The domain: [`lifecycle`] (the one place where a job changes state, its state machine in
//!   [`lifecycle::machine`]), [`scheduler`], [`schedule`] (cron calendars, missed slots,
//!   blackout windows), [`ingest`], [`task_results`] (per-task results from the agents'
//!   callback, into rows), [`enroll`], [`retention`], [`vars`]
//!   (the rules a launch's variables meet), [`survey`] (templates' questions and their
//!   answers), [`bundle`] (install bundles), [`pki`] (the CA),
//!   [`project`] (project trees: git and archive syncs into revisions), [`credential`] (what a
//!   credential holds, sealed and opened with the [`keyring`]'s keys, and a job's secrets).
//! - [`core`]: the [`core::Core`] every part of one controller shares.
//! - [`service`]: the operations callers ask for (launch, cancel, users, servers, playbooks,
//!   tickets, agents, sign-in), as plain functions of the core and the caller.
//! - The ports: [`session`], [`dispatch`] and [`fetch`] (project revisions) for agents over
//!   QUIC; [`http`] (the API) and
//!   [`ui`] (the web pages), both thin shells over [`service`], put on one HTTPS port by
//!   [`web`].
//! - [`server`]: the daemon that wires them; the binary's commands sit above it.
//! - [`archive`] (job output and audit records in cold storage: zstd frames with a line
//!   index, in a directory or an S3 bucket, verified before rows go),
//!   [`backup`] (a consistent copy of the database and the PKI, and its restore),
//!   [`config`], [`metrics`], [`text`] (fitting text to columns), [`throttle`] (failed
//!   sign-ins counted per account, name and address).

pub mod archive;
pub mod backup;
pub mod bundle;
pub mod config;
pub mod core;
pub mod credential;
pub mod dispatch;
pub mod enroll;
pub mod fetch;
pub mod http;
pub mod ingest;
pub mod keyring;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod notification;
pub mod notifier;
pub mod partitioner;
pub mod pki;
pub mod project;
pub mod retention;
pub mod rollout;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod session;
pub mod socket;
pub mod store;
pub mod survey;
pub mod task_results;
pub mod text;
pub mod throttle;
pub mod token_uses;
pub mod ui;
pub mod vars;
pub mod web;

pub use store::{PoolConfig, Store, StoreError};
