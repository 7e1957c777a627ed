//! The Outpost agent: a small daemon on a bastion host. It enrols once with a one-time token,
//! then dials the controller over mutual-TLS QUIC (outbound only), runs the `ansible-playbook`
//! jobs it is given against the servers near it, and delivers every line of their output
//! exactly once, through reconnects and restarts, from an on-disk spool.
//!
//! - [`enroll`]: key pair, CSR, certificate.
//! - [`session`]: the connection to the controller and its reconnect loop.
//! - [`jobs`]: the jobs held, and delivering them; [`runner`]: one ansible-playbook run;
//!   [`spool`]: output kept until acknowledged; [`callback`]: the callback plugin shipped
//!   for per-task results, and [`results`]: those results kept until acknowledged; [`record`]:
//!   the checked records both files are written in; [`watermark`]: how far the controller
//!   has acknowledged either.
//! - [`revisions`]: project revisions unpacked read-only, shared and bounded; [`fetch`]:
//!   getting one over the session, resumably.
//! - [`state`]: the state directory; [`doctor`]: what a bastion needs, checked;
//!   [`status`]: whether the controller has this agent online, as the service last saw it.
//! - [`vars`]: launch values written so that ansible reads them as data, never templates.
//! - [`secrets`]: a job's credentials, written privately for its run and removed after.

pub mod callback;
pub mod doctor;
pub mod enroll;
pub mod fetch;
pub mod jobs;
pub mod record;
pub mod results;
pub mod revisions;
pub mod runner;
pub mod secrets;
pub mod service;
pub mod session;
pub mod spool;
pub mod state;
pub mod status;
pub mod vars;
pub mod watermark;
