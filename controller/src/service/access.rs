//! Who may call what: the one table of the API's access rules. Every route of the router must
//! have a row here (the router refuses to start otherwise, and a test walks the whole matrix);
//! the authorization layer reads it for every request.
//!
//! Viewers read jobs, logs, servers, playbooks, projects, templates, tickets and agents;
//! operators also launch and cancel jobs and runs, approve a run's next wave, launch templates and write tickets; admins do everything (projects: create, change,
//! sync, upload, delete), and alone read users, credentials and the audit log.

use axum::http::Method;

use crate::model::Role;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (login, health, metrics, the OpenAPI document).
    Public,
    /// Any signed-in user, even one who must change their password first.
    Session,
    /// At least this role.
    Role(Role),
    /// The user named by the path's `{id}`, or an admin.
    SelfOrAdmin,
}

use Access::*;
use Role::{Admin, Operator, Viewer};

/// (method, path template, access). Paths are written as the router writes them.
pub const RULES: &[(&str, &str, Access)] = &[
    ("POST", "/api/v1/auth/login", Public),
    ("POST", "/api/v1/auth/logout", Session),
    ("GET", "/api/v1/auth/whoami", Session),
    ("GET", "/api/v1/users", Role(Admin)),
    ("POST", "/api/v1/users", Role(Admin)),
    ("GET", "/api/v1/users/{id}", Role(Admin)),
    ("PATCH", "/api/v1/users/{id}", Role(Admin)),
    ("POST", "/api/v1/users/{id}/password", SelfOrAdmin),
    ("GET", "/api/v1/servers", Role(Viewer)),
    ("POST", "/api/v1/servers", Role(Admin)),
    ("GET", "/api/v1/servers/{id}", Role(Viewer)),
    ("PATCH", "/api/v1/servers/{id}", Role(Admin)),
    ("DELETE", "/api/v1/servers/{id}", Role(Admin)),
    ("GET", "/api/v1/playbooks", Role(Viewer)),
    ("POST", "/api/v1/playbooks", Role(Admin)),
    ("GET", "/api/v1/playbooks/{id}", Role(Viewer)),
    ("PATCH", "/api/v1/playbooks/{id}", Role(Admin)),
    ("DELETE", "/api/v1/playbooks/{id}", Role(Admin)),
    ("GET", "/api/v1/projects", Role(Viewer)),
    ("POST", "/api/v1/projects", Role(Admin)),
    ("GET", "/api/v1/projects/{id}", Role(Viewer)),
    ("PATCH", "/api/v1/projects/{id}", Role(Admin)),
    ("DELETE", "/api/v1/projects/{id}", Role(Admin)),
    ("POST", "/api/v1/projects/{id}/sync", Role(Admin)),
    ("POST", "/api/v1/projects/{id}/archive", Role(Admin)),
    ("GET", "/api/v1/projects/{id}/revisions", Role(Viewer)),
    ("GET", "/api/v1/projects/{id}/files", Role(Viewer)),
    // Credentials are an admin's resource (readers of servers, projects and jobs see only the
    // names attached there); their secrets are nobody's to read.
    ("GET", "/api/v1/credentials", Role(Admin)),
    ("POST", "/api/v1/credentials", Role(Admin)),
    ("GET", "/api/v1/credentials/{id}", Role(Admin)),
    ("PATCH", "/api/v1/credentials/{id}", Role(Admin)),
    ("DELETE", "/api/v1/credentials/{id}", Role(Admin)),
    // Admins write templates; operators launch them; everyone reads them.
    ("GET", "/api/v1/templates", Role(Viewer)),
    ("POST", "/api/v1/templates", Role(Admin)),
    ("GET", "/api/v1/templates/{id_or_name}", Role(Viewer)),
    ("PUT", "/api/v1/templates/{id_or_name}", Role(Admin)),
    ("DELETE", "/api/v1/templates/{id_or_name}", Role(Admin)),
    (
        "POST",
        "/api/v1/templates/{id_or_name}/launch",
        Role(Operator),
    ),
    // Notification channels hold webhook secrets and SMTP logins; routing is an admin's.
    ("GET", "/api/v1/notifications/channels", Role(Admin)),
    ("POST", "/api/v1/notifications/channels", Role(Admin)),
    ("GET", "/api/v1/notifications/channels/{id}", Role(Admin)),
    ("PATCH", "/api/v1/notifications/channels/{id}", Role(Admin)),
    ("DELETE", "/api/v1/notifications/channels/{id}", Role(Admin)),
    (
        "POST",
        "/api/v1/notifications/channels/{id}/test",
        Role(Admin),
    ),
    ("GET", "/api/v1/notifications/rules", Role(Admin)),
    ("POST", "/api/v1/notifications/rules", Role(Admin)),
    ("DELETE", "/api/v1/notifications/rules/{id}", Role(Admin)),
    ("GET", "/api/v1/notifications/deliveries", Role(Admin)),
    ("GET", "/api/v1/jobs", Role(Viewer)),
    ("POST", "/api/v1/jobs", Role(Operator)),
    ("GET", "/api/v1/jobs/{job_id}", Role(Viewer)),
    ("POST", "/api/v1/jobs/{job_id}/cancel", Role(Operator)),
    ("GET", "/api/v1/runs", Role(Viewer)),
    ("GET", "/api/v1/runs/{run_id}", Role(Viewer)),
    ("POST", "/api/v1/runs/{run_id}/cancel", Role(Operator)),
    ("POST", "/api/v1/runs/{run_id}/approve", Role(Operator)),
    ("POST", "/api/v1/runs/{run_id}/relaunch", Role(Operator)),
    ("GET", "/api/v1/jobs/{job_id}/logs", Role(Viewer)),
    ("GET", "/api/v1/jobs/{job_id}/results", Role(Viewer)),
    ("GET", "/api/v1/runs/{run_id}/results", Role(Viewer)),
    ("GET", "/api/v1/jobs/{job_id}/logs/stream", Role(Viewer)),
    ("GET", "/api/v1/tickets", Role(Viewer)),
    ("POST", "/api/v1/tickets", Role(Operator)),
    ("GET", "/api/v1/tickets/{ticket_id}", Role(Viewer)),
    ("PATCH", "/api/v1/tickets/{ticket_id}", Role(Operator)),
    ("GET", "/api/v1/agents", Role(Viewer)),
    ("GET", "/api/v1/agents/{id}", Role(Viewer)),
    ("POST", "/api/v1/agents/{id}/revoke", Role(Admin)),
    ("GET", "/api/v1/enrollment-tokens", Role(Admin)),
    ("POST", "/api/v1/enrollment-tokens", Role(Admin)),
    ("DELETE", "/api/v1/enrollment-tokens/{id}", Role(Admin)),
    ("POST", "/api/v1/agent-bundles", Role(Admin)),
    ("GET", "/api/v1/schedules", Role(Viewer)),
    ("POST", "/api/v1/schedules", Role(Admin)),
    ("POST", "/api/v1/schedules/preview", Session),
    ("GET", "/api/v1/schedules/{id}", Role(Viewer)),
    ("PATCH", "/api/v1/schedules/{id}", Role(Admin)),
    ("DELETE", "/api/v1/schedules/{id}", Role(Admin)),
    ("GET", "/api/v1/schedules/{id}/runs", Role(Viewer)),
    ("GET", "/api/v1/blackouts", Role(Viewer)),
    ("POST", "/api/v1/blackouts", Role(Admin)),
    ("GET", "/api/v1/blackouts/{id}", Role(Viewer)),
    ("DELETE", "/api/v1/blackouts/{id}", Role(Admin)),
    ("GET", "/api/v1/audit", Role(Admin)),
    ("GET", "/api/v1/openapi.json", Public),
    ("GET", "/healthz", Public),
    ("GET", "/readyz", Public),
    ("GET", "/metrics", Public),
];

/// The rule for a route, if it has one.
pub fn rule(method: &Method, path: &str) -> Option<Access> {
    RULES
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, a)| *a)
}

/// Whether `role` satisfies `access` (path ownership is checked by the caller).
pub fn allows(access: Access, role: Role) -> bool {
    match access {
        Public | Session | SelfOrAdmin => true,
        Access::Role(needed) => role.at_least(needed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_has_one_rule() {
        let mut seen = std::collections::HashSet::new();
        for (m, p, _) in RULES {
            assert!(seen.insert((m, p)), "{m} {p} twice");
        }
    }

    #[test]
    fn only_admins_read_users_and_the_audit() {
        let users = rule(&Method::GET, "/api/v1/users").unwrap();
        let audit = rule(&Method::GET, "/api/v1/audit").unwrap();
        for access in [users, audit] {
            assert!(allows(access, Admin));
            assert!(!allows(access, Operator));
        }
        let launch = rule(&Method::POST, "/api/v1/jobs").unwrap();
        assert!(allows(launch, Operator) && !allows(launch, Viewer));
        assert_eq!(rule(&Method::PUT, "/api/v1/jobs"), None);
    }
}
