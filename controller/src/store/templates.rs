//! store::templates — job templates' rows, written with their audit records. The rules a
//! template meets (one playbook, one target, a valid survey) are checked by the service before
//! it gets here.

use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::{now, on_pool, page, InsertedId, Result, Store, StoreError, WritePool};
use crate::model::{Page, Paging, PlaybookId, ProjectId, Template, TemplateId};
use outpost_api::{Question, RunOptions, ServerSelector};

const COLUMNS: &str = "id, uuid, name, description, playbook_id, project_id, playbook_path, \
     servers, server_filter, extra_vars, run_options, time_limit_secs, survey, rollout, created_by, \
     created_at, updated_at";

/// A template to store (create, or replace whole).
#[derive(Debug, Clone)]
pub struct NewTemplate {
    pub name: String,
    pub description: Option<String>,
    pub playbook_id: Option<PlaybookId>,
    pub project_id: Option<ProjectId>,
    pub playbook_path: Option<String>,
    pub servers: Option<Vec<String>>,
    pub server_filter: Option<ServerSelector>,
    pub extra_vars: Option<crate::model::JsonObject>,
    pub run_options: RunOptions,
    pub time_limit_secs: Option<i32>,
    pub survey: Vec<Question>,
    pub rollout: Option<outpost_api::Rollout>,
}

impl NewTemplate {
    /// The plainest template: a stored playbook on named servers, nothing else set.
    pub fn of_playbook(name: &str, playbook: PlaybookId, servers: &[&str]) -> NewTemplate {
        NewTemplate {
            name: name.to_owned(),
            description: None,
            playbook_id: Some(playbook),
            project_id: None,
            playbook_path: None,
            servers: Some(servers.iter().map(|s| (*s).to_owned()).collect()),
            server_filter: None,
            extra_vars: None,
            run_options: RunOptions::default(),
            time_limit_secs: None,
            survey: Vec::new(),
            rollout: None,
        }
    }
}

/// JSON text of a value for a JSON column (`None` stays NULL).
fn text<T: serde::Serialize>(field: &'static str, v: Option<&T>) -> Result<Option<String>> {
    v.map(|v| serde_json::to_string(v).map_err(|e| StoreError::invalid(field, e.to_string())))
        .transpose()
}

/// The JSON columns of a template, as bound.
struct Encoded {
    servers: Option<String>,
    filter: Option<String>,
    vars: Option<String>,
    options: Option<String>,
    survey: Option<String>,
    rollout: Option<String>,
}

fn encode(t: &NewTemplate) -> Result<Encoded> {
    Ok(Encoded {
        servers: text("servers", t.servers.as_ref())?,
        filter: text("filter", t.server_filter.as_ref())?,
        vars: text("extra_vars", t.extra_vars.as_ref())?,
        options: text("options", Some(&t.run_options))?,
        survey: text("survey", Some(&t.survey))?,
        rollout: text("rollout", t.rollout.as_ref())?,
    })
}

/// What the audit trail says of a template: where it points and what it asks, never an answer.
fn summary(t: &NewTemplate) -> serde_json::Value {
    json!({
        "name": t.name,
        "playbook_id": t.playbook_id,
        "project_id": t.project_id,
        "playbook_path": t.playbook_path,
        "servers": t.servers,
        "filter": t.server_filter,
        "questions": t.survey.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(),
    })
}

impl Store {
    pub async fn create_template(&self, t: &NewTemplate, actor: &Actor) -> Result<Template> {
        let e = encode(t)?;
        let ts = now();
        let uuid = uuid::Uuid::new_v4().to_string();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO job_templates (uuid, name, description, playbook_id, project_id, playbook_path, \
                 servers, server_filter, extra_vars, run_options, time_limit_secs, survey, rollout, created_by, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&uuid).bind(&t.name).bind(&t.description).bind(t.playbook_id).bind(t.project_id)
            .bind(&t.playbook_path).bind(&e.servers).bind(&e.filter).bind(&e.vars).bind(&e.options)
            .bind(t.time_limit_secs).bind(&e.survey).bind(&e.rollout).bind(actor.user_id).bind(ts).bind(ts)
            .execute(&mut *tx).await
            .map_err(|err| StoreError::on_write(err, || format!("template '{}'", t.name)))?;
            let id = res.inserted_id() as i32;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "TEMPLATE_CREATE", resource_type: "job_template", resource_id: Some(id),
                details: Some(summary(t)),
            })?;
            tx.commit().await?;
            id
        });
        self.get_template(TemplateId(id)).await
    }

    /// Replaces a template whole.
    pub async fn update_template(
        &self,
        id: TemplateId,
        t: &NewTemplate,
        actor: &Actor,
    ) -> Result<Template> {
        let old = self.get_template(id).await?;
        let e = encode(t)?;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "UPDATE job_templates SET name = ?, description = ?, playbook_id = ?, project_id = ?, \
                 playbook_path = ?, servers = ?, server_filter = ?, extra_vars = ?, run_options = ?, \
                 time_limit_secs = ?, survey = ?, rollout = ?, updated_at = ? WHERE id = ?",
            )
            .bind(&t.name).bind(&t.description).bind(t.playbook_id).bind(t.project_id)
            .bind(&t.playbook_path).bind(&e.servers).bind(&e.filter).bind(&e.vars).bind(&e.options)
            .bind(t.time_limit_secs).bind(&e.survey).bind(&e.rollout).bind(now()).bind(id)
            .execute(&mut *tx).await
            .map_err(|err| StoreError::on_write(err, || format!("template '{}'", t.name)))?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "TEMPLATE_UPDATE", resource_type: "job_template", resource_id: Some(id.0),
                details: Some(json!({"old_name": old.name, "new": summary(t)})),
            })?;
            tx.commit().await?;
        });
        self.get_template(id).await
    }

    /// Deletes a template; its jobs keep running and forget it (SQLite has no foreign key on
    /// `jobs.template_id`, so it is cleared here on both databases).
    pub async fn delete_template(&self, id: TemplateId, actor: &Actor) -> Result<()> {
        let old = self.get_template(id).await?;
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("UPDATE jobs SET template_id = NULL WHERE template_id = ?")
                .bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM job_templates WHERE id = ?")
                .bind(id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "TEMPLATE_DELETE", resource_type: "job_template", resource_id: Some(id.0),
                details: Some(json!({"name": old.name})),
            })?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn get_template(&self, id: TemplateId) -> Result<Template> {
        let sql = format!("SELECT {COLUMNS} FROM job_templates WHERE id = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Template>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("template {id}")))
    }

    pub async fn get_template_by_name(&self, name: &str) -> Result<Template> {
        let sql = format!("SELECT {COLUMNS} FROM job_templates WHERE name = ?");
        let row = on_pool!(self, p => sqlx::query_as::<_, Template>(&sql).bind(name).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("template '{name}'")))
    }

    /// Templates ordered by name.
    pub async fn list_templates(&self, paging: Paging) -> Result<Page<Template>> {
        let none: Option<&str> = None;
        Ok(
            page!(self, Template, select: COLUMNS, from: "job_templates", order: "name", paging: paging,
            filters: [("name", none)]),
        )
    }
}
