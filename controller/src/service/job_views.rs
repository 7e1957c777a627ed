//! Job views as the API and the UI show them: a job with the names of its playbook, server,
//! agent, template and revision. A list's rows come with their names joined in by the store
//! ([`listed`]); a single job or a launch's few look them up, each once per request
//! ([`Names`]).

use std::collections::HashMap;

use outpost_api::{JobView, NameRef, RevisionView};

use super::views;
use crate::model::{AgentId, Job, PlaybookId, RevisionId, ServerId, TemplateId};
use crate::store::jobs::ListedJob;
use crate::store::{Store, StoreError};

/// The view of a listed job, from the names its row was read with. A name whose row is gone
/// reads as `#<id>`, as the agent of a job does when the agent was removed.
pub fn listed(l: &ListedJob) -> JobView {
    let j = &l.job;
    let named = |id: i32, name: &Option<String>| NameRef {
        id,
        name: name.clone().unwrap_or_else(|| format!("#{id}")),
    };
    let revision = match (
        j.revision_id,
        l.revision_project_id,
        &l.revision_digest,
        l.revision_size_bytes,
        l.revision_entries,
        l.revision_created_at,
    ) {
        (Some(_), Some(project), Some(digest), Some(size_bytes), Some(entries), Some(at)) => {
            Some(RevisionView {
                project: named(project.0, &l.revision_project_name),
                digest: digest.clone(),
                commit: l.revision_commit.clone(),
                size_bytes,
                entries,
                created_at: at,
            })
        }
        _ => None,
    };
    let mut view = views::job(
        j,
        named(j.playbook_id.0, &l.playbook_name),
        named(j.server_id.0, &l.server_hostname),
        j.agent_id
            .filter(|_| l.agent_name.is_some())
            .map(|a| named(a.0, &l.agent_name)),
        revision,
    );
    view.template = j
        .template_id
        .filter(|_| l.template_name.is_some())
        .map(|t| named(t.0, &l.template_name));
    view
}

/// Names for job views, looked up once per request.
#[derive(Default)]
pub struct Names {
    playbooks: HashMap<PlaybookId, NameRef>,
    servers: HashMap<ServerId, NameRef>,
    agents: HashMap<AgentId, NameRef>,
    revisions: HashMap<RevisionId, RevisionView>,
    templates: HashMap<TemplateId, Option<NameRef>>,
}

impl Names {
    pub async fn view(&mut self, store: &Store, j: &Job) -> Result<JobView, StoreError> {
        use std::collections::hash_map::Entry;
        if let Entry::Vacant(e) = self.playbooks.entry(j.playbook_id) {
            let p = store.get_playbook(j.playbook_id).await?;
            e.insert(NameRef {
                id: p.id.0,
                name: p.name,
            });
        }
        if let Entry::Vacant(e) = self.servers.entry(j.server_id) {
            let s = store.get_server(j.server_id).await?;
            e.insert(NameRef {
                id: s.id.0,
                name: s.hostname,
            });
        }
        if let Some(a) = j.agent_id.filter(|a| !self.agents.contains_key(a)) {
            if let Ok(agent) = store.get_agent(a).await {
                self.agents.insert(
                    a,
                    NameRef {
                        id: agent.id.0,
                        name: agent.name,
                    },
                );
            }
        }
        if let Some(r) = j.revision_id.filter(|r| !self.revisions.contains_key(r)) {
            let rev = store.get_revision(r).await?;
            let project = store.get_project(rev.project_id).await?;
            self.revisions.insert(r, views::revision(&rev, &project));
        }
        if let Some(t) = j.template_id.filter(|t| !self.templates.contains_key(t)) {
            // A template deleted meanwhile is just not named.
            let name = store.get_template(t).await.ok().map(|t| NameRef {
                id: t.id.0,
                name: t.name,
            });
            self.templates.insert(t, name);
        }
        let mut view = views::job(
            j,
            self.playbooks[&j.playbook_id].clone(),
            self.servers[&j.server_id].clone(),
            j.agent_id.and_then(|a| self.agents.get(&a).cloned()),
            j.revision_id.and_then(|r| self.revisions.get(&r).cloned()),
        );
        view.template = j
            .template_id
            .and_then(|t| self.templates.get(&t).cloned().flatten());
        Ok(view)
    }
}
