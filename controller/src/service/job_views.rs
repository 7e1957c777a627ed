//! Job views as the API and the UI show them: a job with the names of its playbook, server,
//! agent, template and revision, each looked up once per request however many jobs name it.

use std::collections::HashMap;

use outpost_api::{JobView, NameRef, RevisionView};

use super::views;
use crate::model::{AgentId, Job, PlaybookId, RevisionId, ServerId, TemplateId};
use crate::store::{Store, StoreError};

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
