//! The operations callers ask of the controller, as plain functions of the domain: launch and
//! cancel jobs, launch templates, manage users, servers, playbooks, projects, templates, credentials and tickets, revoke agents, issue enrolment
//! tokens and bundles, sign in and out. Each takes the [`Core`](crate::core::Core), the
//! [`Caller`] and a typed request, validates it, records its audit row and returns records
//! or views — never an HTTP response.
//!
//! The API ([`crate::http`]) and the web UI ([`crate::ui`]) are both thin shells over this
//! module: extract, call, render. Neither imports the other's handlers. Who may call what is
//! the one table in [`access`], which the port's authorization layer applies to every API
//! route and every page (each page names the API route whose rule it follows).

pub mod access;
pub mod agents;
pub mod audit;
pub mod blackouts;
pub mod credentials;
pub mod error;
pub mod firing;
pub mod job_views;
pub mod jobs;
pub mod launch;
pub mod notifications;
pub mod playbooks;
pub mod projects;
pub mod results;
pub mod runs;
pub mod schedules;
pub mod servers;
pub mod sessions;
pub mod templates;
pub mod tickets;
pub mod users;
pub mod views;

use std::net::IpAddr;

use chrono::Utc;

pub use error::{Kind, Result, ServiceError};

use crate::model::{Paging, Role, User};
use crate::store::audit::Actor;

/// The signed-in user behind a request, with where the request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub token_id: i32,
    pub token_expires_at: chrono::DateTime<Utc>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Caller {
    /// The caller as the audit trail names it.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user.id),
            ip_address: self.ip.map(|i| i.to_string()),
            user_agent: self.user_agent.clone(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
}

/// A listing's paging from its query (default 50, at most 1,000).
pub fn paging(limit: Option<i64>, offset: Option<i64>) -> Paging {
    Paging::new(limit.unwrap_or(50), offset.unwrap_or(0))
}

/// The paging of a list paged by key (jobs, audit): `after` (a page's `next`) or, for old
/// clients, `offset` — not both, since they say different things about where to start.
pub fn keyset_paging(
    limit: Option<i64>,
    offset: Option<i64>,
    after: Option<&str>,
) -> Result<Paging> {
    let Some(after) = after else {
        return Ok(paging(limit, offset));
    };
    let field = |message: String| {
        ServiceError::fields(vec![outpost_api::FieldError {
            field: "after".into(),
            message,
        }])
    };
    if offset.is_some_and(|o| o != 0) {
        return Err(field("give either after or offset, not both".into()));
    }
    let cursor = crate::model::Cursor::decode(after).map_err(|e| field(e.to_string()))?;
    Ok(paging(limit, None).after(Some(cursor)))
}
