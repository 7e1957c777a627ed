//! The store's records as the API shows them.

use outpost_api as api;

use crate::model::{
    Agent, AuditEntry, EnrollmentToken, Job, JobUuid, Playbook, Project, Revision, Server, Ticket,
    User,
};

pub fn user(u: &User, password_expired: bool) -> api::UserView {
    api::UserView {
        id: u.id.0,
        username: u.username.clone(),
        email: u.email.clone(),
        role: u.role,
        is_active: u.is_active,
        must_change_password: password_expired,
        password_changed_at: u.password_changed_at,
        created_at: u.created_at,
        updated_at: u.updated_at,
        last_login: u.last_login,
    }
}

/// An attached credential by name (`names`: every credential's name by id).
pub fn name_ref(
    names: &std::collections::HashMap<crate::model::CredentialId, String>,
    id: Option<crate::model::CredentialId>,
) -> Option<api::NameRef> {
    id.map(|id| api::NameRef {
        id: id.0,
        name: names.get(&id).cloned().unwrap_or_default(),
    })
}

/// A server; `credentials` names its attached credentials.
pub fn server(
    s: &Server,
    credentials: &std::collections::HashMap<crate::model::CredentialId, String>,
) -> api::ServerView {
    api::ServerView {
        id: s.id.0,
        hostname: s.hostname.clone(),
        ip_address: s.ip_address.clone(),
        os_type: s.os_type.clone(),
        os_version: s.os_version.clone(),
        ssh_port: s.ssh_port,
        ssh_user: s.ssh_user.clone(),
        ssh_key_path: s.ssh_key_path.clone(),
        tags: s.tags.as_ref().map(|t| t.0.clone()),
        environment: s.environment.clone(),
        description: s.description.clone(),
        is_active: s.is_active,
        host_vars: s.host_vars.as_ref().map(|t| t.0.clone()),
        inventory_groups: s
            .inventory_groups
            .as_ref()
            .map(|g| g.0.clone())
            .unwrap_or_default(),
        ssh_credential: name_ref(credentials, s.ssh_credential_id),
        become_credential: name_ref(credentials, s.become_credential_id),
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

pub fn playbook(p: &Playbook, content: Option<String>) -> api::PlaybookView {
    api::PlaybookView {
        id: p.id.0,
        name: p.name.clone(),
        description: p.description.clone(),
        file_path: p.file_path.clone(),
        file_hash: p.file_hash.clone(),
        tags: p.tags.as_ref().map(|t| t.0.clone()),
        variables: p.variables.as_ref().map(|t| t.0.clone()),
        is_active: p.is_active,
        created_at: p.created_at,
        updated_at: p.updated_at,
        content,
    }
}

/// A job, with the names of what it refers to (looked up by the caller).
pub fn job(
    j: &Job,
    playbook: api::NameRef,
    server: api::NameRef,
    agent: Option<api::NameRef>,
    revision: Option<api::RevisionView>,
) -> api::JobView {
    api::JobView {
        id: j.job_id.to_string(),
        status: j.status,
        playbook,
        server,
        user_id: j.user_id.0,
        agent,
        extra_vars: j.extra_vars.as_ref().map(|v| v.0.clone()),
        run_options: j
            .run_options
            .as_ref()
            .and_then(|o| serde_json::from_value(serde_json::Value::Object(o.0.clone())).ok())
            .unwrap_or_default(),
        error_message: j.error_message.clone(),
        exit_code: j.exit_code,
        pending_reason: j.pending_reason.clone(),
        created_at: j.created_at,
        assigned_at: j.assigned_at,
        started_at: j.started_at,
        completed_at: j.completed_at,
        cancel_requested_at: j.cancel_requested_at,
        revision,
        credentials: None,
        template: None,
        secret_answers: None,
    }
}

pub fn revision(r: &Revision, project: &Project) -> api::RevisionView {
    api::RevisionView {
        project: api::NameRef {
            id: project.id.0,
            name: project.name.clone(),
        },
        digest: r.digest.clone(),
        commit: r.git_commit.clone(),
        size_bytes: r.size_bytes,
        entries: r.entries,
        created_at: r.created_at,
    }
}

/// A project's attached credentials, by name.
#[derive(Debug, Clone, Default)]
pub struct ProjectCredentials {
    pub git: Option<api::NameRef>,
    pub vault: Vec<api::NameRef>,
}

/// A project, with its current revision and credentials (looked up by the caller) and, for
/// single reads, its playbooks.
pub fn project(
    p: &Project,
    current: Option<&Revision>,
    playbooks: Option<&[Playbook]>,
    credentials: ProjectCredentials,
) -> api::ProjectView {
    api::ProjectView {
        id: p.id.0,
        name: p.name.clone(),
        description: p.description.clone(),
        kind: p.kind,
        git_url: p.git_url.clone(),
        git_ref: p.git_ref.clone(),
        git_key_path: p.git_key_path.clone(),
        git_credential: credentials.git,
        vault_credentials: credentials.vault,
        inventory_path: p.inventory_path.clone(),
        sync_state: p.sync_state,
        sync_error: p.sync_error.clone(),
        sync_started_at: p.sync_started_at,
        synced_at: p.synced_at,
        current_revision: current.map(|r| revision(r, p)),
        is_active: p.is_active,
        created_at: p.created_at,
        updated_at: p.updated_at,
        playbooks: playbooks.map(|list| {
            list.iter()
                .map(|pb| api::ProjectPlaybookView {
                    id: pb.id.0,
                    name: pb.name.clone(),
                    file_path: pb.file_path.clone(),
                    file_hash: pb.file_hash.clone(),
                    is_active: pb.is_active,
                })
                .collect()
        }),
    }
}

pub fn ticket(t: &Ticket, job_uuid: JobUuid) -> api::TicketView {
    api::TicketView {
        id: t.ticket_id.clone(),
        job_id: job_uuid.to_string(),
        created_by: t.created_by.0,
        title: t.title.clone(),
        description: t.description.clone(),
        status: t.status,
        priority: t.priority,
        created_at: t.created_at,
        updated_at: t.updated_at,
        resolved_at: t.resolved_at,
    }
}

pub fn agent(a: &Agent) -> api::AgentView {
    api::AgentView {
        id: a.id.0,
        uuid: a.uuid.to_string(),
        name: a.name.clone(),
        labels: a.labels.as_ref().map(|l| l.0.clone()),
        online: a.connected_controller.is_some(),
        connected_controller: a.connected_controller.clone(),
        version: a.version.clone(),
        hostname: a.hostname.clone(),
        ansible_version: a.ansible_version.clone(),
        capacity: a.capacity,
        cert_expires_at: a.cert_expires_at,
        revoked: a.revoked,
        last_seen: a.last_seen,
        lost_at: a.lost_at,
        created_at: a.created_at,
    }
}

pub fn enrollment_token(t: &EnrollmentToken) -> api::EnrollmentTokenView {
    api::EnrollmentTokenView {
        id: t.id,
        name: t.name.clone(),
        labels: t.labels.as_ref().map(|l| l.0.clone()),
        expires_at: t.expires_at,
        used_at: t.used_at,
        agent_id: t.agent_id.map(|a| a.0),
        created_by: t.created_by.map(|u| u.0),
        created_at: t.created_at,
    }
}

pub fn audit(e: &AuditEntry) -> api::AuditView {
    api::AuditView {
        id: e.id.0,
        user_id: e.user_id.map(|u| u.0),
        action: e.action.clone(),
        resource_type: e.resource_type.clone(),
        resource_id: e.resource_id,
        details: e.details.as_ref().map(|d| d.0.clone()),
        ip_address: e.ip_address.clone(),
        user_agent: e.user_agent.clone(),
        timestamp: e.timestamp,
    }
}

/// A page of the store as a page of the API.
pub fn page<T, V>(p: crate::model::Page<T>, f: impl Fn(&T) -> V) -> api::Page<V> {
    api::Page {
        items: p.items.iter().map(f).collect(),
        total: p.total,
        total_exact: p.total_exact,
        limit: p.limit,
        offset: p.offset,
        next: p.next.map(|c| c.encode()),
    }
}
