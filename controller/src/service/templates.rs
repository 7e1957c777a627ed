//! Job templates: admins save a launch with a survey; operators launch it with answers;
//! everyone reads them. A launch goes [`plan`] (answers checked, everything resolved, secret
//! answers sealed per job — nothing written) then [`commit`] (jobs and the `TEMPLATE_LAUNCH`
//! record in one transaction), through the same path as a typed launch
//! ([`super::jobs::plan`]). A schedule uses the same two steps.

use outpost_api::{
    DeleteResult, IdOrName, LaunchRequest, LaunchResponse, NameRef, Page, PageQuery,
    TemplateLaunchRequest, TemplateSpec, TemplateView,
};
use serde_json::{json, Map, Value};

use super::jobs::{Launcher, Origin};
use super::{paging, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::{PlaybookId, Template, TemplateId};
use crate::store::audit::Actor;
use crate::store::jobs::LaunchAudit;
use crate::store::templates::NewTemplate;

/// The longest time limit a template may give a job: a week.
const MAX_TIME_LIMIT: u32 = 7 * 24 * 3600;
/// Servers a template may name at most (a selector reaches more).
const MAX_SERVERS: usize = 1000;

/// A checked template launch, ready to commit: its jobs and what the audit trail records.
#[derive(Debug)]
pub struct TemplatePlan {
    pub launch: super::jobs::LaunchPlan,
    pub template_id: TemplateId,
    pub template_name: String,
    /// The answers as recorded: secret ones masked.
    pub answers: Map<String, Value>,
}

/// The template named in a path: its id (digits), or its name (never all digits).
pub async fn by_id_or_name(core: &Core, key: &str) -> Result<Template> {
    match key.parse::<i32>() {
        Ok(id) => Ok(core.store.get_template(TemplateId(id)).await?),
        Err(_) => Ok(core.store.get_template_by_name(key).await?),
    }
}

pub async fn list(core: &Core, q: &PageQuery) -> Result<Page<TemplateView>> {
    let page = core.store.list_templates(paging(q.limit, q.offset)).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for t in &page.items {
        items.push(view(core, t).await?);
    }
    Ok(Page {
        items,
        total: page.total,
        total_exact: page.total_exact,
        limit: page.limit,
        offset: page.offset,
        next: None,
    })
}

pub async fn get(core: &Core, key: &str) -> Result<TemplateView> {
    let t = by_id_or_name(core, key).await?;
    view(core, &t).await
}

pub async fn create(core: &Core, caller: &Caller, spec: TemplateSpec) -> Result<TemplateView> {
    let new = check_spec(core, spec).await?;
    let t = core.store.create_template(&new, &caller.actor()).await?;
    view(core, &t).await
}

/// Replaces a template whole.
pub async fn update(
    core: &Core,
    caller: &Caller,
    key: &str,
    spec: TemplateSpec,
) -> Result<TemplateView> {
    let old = by_id_or_name(core, key).await?;
    let new = check_spec(core, spec).await?;
    let t = core
        .store
        .update_template(old.id, &new, &caller.actor())
        .await?;
    view(core, &t).await
}

pub async fn delete(core: &Core, caller: &Caller, key: &str) -> Result<DeleteResult> {
    let t = by_id_or_name(core, key).await?;
    core.store.delete_template(t.id, &caller.actor()).await?;
    Ok(DeleteResult {
        outcome: "deleted".into(),
        message: format!("template {} is deleted; its jobs are kept", t.name),
    })
}

/// Launches a template as the caller, with the answers (and the rollout) given.
pub async fn launch(
    core: &Core,
    caller: &Caller,
    key: &str,
    req: &TemplateLaunchRequest,
) -> Result<LaunchResponse> {
    let t = by_id_or_name(core, key).await?;
    let plan = plan_with(core, &t, &req.answers, &caller.user, req.rollout.as_ref()).await?;
    let jobs = commit(core, plan, &caller.actor()).await?.jobs;
    super::jobs::launched(core, &jobs).await
}

/// Checks `answers` against the template's survey (a 422 naming each bad field) and resolves
/// the launch for `launcher`. The answers are data: these jobs never let ansible evaluate
/// templates in their variables, whatever the admin setting says.
pub async fn plan(
    core: &Core,
    template: &Template,
    answers: &Map<String, Value>,
    launcher: &Launcher,
) -> Result<TemplatePlan> {
    plan_with(core, template, answers, launcher, None).await
}

/// [`plan`], rolled out as `rollout` says.
pub async fn plan_with(
    core: &Core,
    template: &Template,
    answers: &Map<String, Value>,
    launcher: &Launcher,
    rollout: Option<&outpost_api::Rollout>,
) -> Result<TemplatePlan> {
    let checked =
        crate::survey::answer(&template.survey.0, answers).map_err(ServiceError::fields)?;
    let mut req = launch_request(template, &checked.vars)?;
    if rollout.is_some() {
        req.rollout = rollout.cloned();
    }
    let origin = Origin {
        // The variables are the template's (an admin's) and the answers to its questions,
        // whose names an admin chose and which are never ansible_*.
        vars_by_admin: true,
        templates_allowed: false,
        template_id: Some(template.id),
        time_limit_secs: template.time_limit_secs,
        secrets: Some(&checked),
    };
    let launch = super::jobs::plan(core, launcher, &req, &origin).await?;
    Ok(TemplatePlan {
        launch,
        template_id: template.id,
        template_name: template.name.clone(),
        answers: checked.masked(),
    })
}

/// Creates a planned launch's jobs with its `TEMPLATE_LAUNCH` record, in one transaction, and
/// wakes the scheduler.
pub async fn commit(
    core: &Core,
    plan: TemplatePlan,
    actor: &Actor,
) -> Result<super::jobs::Committed> {
    let audit = LaunchAudit {
        action: "TEMPLATE_LAUNCH",
        resource_type: "job_template",
        resource_id: Some(plan.template_id.0),
        details: json!({"template": plan.template_name, "answers": plan.answers}),
    };
    super::jobs::commit(core, &plan.launch, actor, Some(&audit)).await
}

/// The launch a template makes, with the answers' variables over its own.
fn launch_request(t: &Template, answers: &Map<String, Value>) -> Result<LaunchRequest> {
    let mut vars = t
        .extra_vars
        .as_ref()
        .map(|v| v.0.clone())
        .unwrap_or_default();
    vars.extend(answers.clone());
    let options = t
        .run_options
        .as_ref()
        .map(|o| o.0.clone())
        .unwrap_or_default();
    let playbook = t.playbook_id.map(|p| IdOrName::Id(p.0.into()));
    let project = t.project_id.map(|p| IdOrName::Id(p.0.into()));
    if playbook.is_none() && project.is_none() {
        return Err(ServiceError::unprocessable(format!(
            "template {}: its playbook or project was deleted; an admin must point it at another",
            t.name
        )));
    }
    Ok(LaunchRequest {
        playbook,
        project,
        playbook_path: t.playbook_path.clone(),
        servers: t
            .servers
            .as_ref()
            .map(|s| s.0.iter().cloned().map(IdOrName::Name).collect()),
        filter: t.server_filter.as_ref().map(|f| f.0.clone()),
        extra_vars: (!vars.is_empty()).then_some(vars),
        tags: options.tags,
        skip_tags: options.skip_tags,
        check: options.check,
        diff: options.diff,
        verbosity: options.verbosity,
        credentials: Vec::new(),
        rollout: t.rollout.as_ref().map(|r| r.0.clone()),
    })
}

fn field(field: &str, message: impl Into<String>) -> outpost_api::FieldError {
    outpost_api::FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks an admin's template: every problem named by its field, all at once where they do
/// not depend on a lookup.
async fn check_spec(core: &Core, s: TemplateSpec) -> Result<NewTemplate> {
    let mut bad = Vec::new();
    let n = s.name.chars().count();
    if n == 0 || n > 255 || s.name.trim() != s.name || s.name.chars().any(char::is_control) {
        bad.push(field(
            "name",
            "1 to 255 characters, without surrounding spaces or control characters",
        ));
    } else if s.name.bytes().all(|b| b.is_ascii_digit()) {
        bad.push(field(
            "name",
            "not only digits (a number names a template by its id)",
        ));
    }
    if s.description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 2000)
    {
        bad.push(field("description", "at most 2,000 characters"));
    }
    match (&s.playbook, &s.project, &s.playbook_path) {
        (Some(_), None, None) => {}
        (None, Some(_), Some(p))
            if p.len() <= 1024 && crate::project::relative_path(p).is_some() => {}
        (None, Some(_), Some(_)) => bad.push(field(
            "playbook_path",
            "a relative path inside the project's tree, without '..'",
        )),
        _ => bad.push(field(
            "playbook",
            "name the playbook one way: \"playbook\", or \"project\" and \"playbook_path\"",
        )),
    }
    match (&s.servers, &s.filter) {
        (Some(list), None) if !list.is_empty() && list.len() <= MAX_SERVERS => {}
        (Some(_), None) => bad.push(field("servers", format!("1 to {MAX_SERVERS} hostnames"))),
        (None, Some(_)) => {}
        _ => bad.push(field(
            "servers",
            "name the servers (\"servers\": [hostname, …]) or give a \"filter\", not both",
        )),
    }
    if let Some(vars) = &s.extra_vars {
        let giver = crate::vars::Giver {
            is_admin: true,
            admin_templates_allowed: false,
        };
        if let Err(e) = crate::vars::check(vars, giver) {
            bad.push(field("extra_vars", e.to_string()));
        }
    }
    if let Err(e) = run_options(&s.options) {
        bad.push(field("options", e));
    }
    if s.time_limit_secs
        .is_some_and(|t| t == 0 || t > MAX_TIME_LIMIT)
    {
        bad.push(field(
            "time_limit_secs",
            format!("1 to {MAX_TIME_LIMIT} seconds"),
        ));
    }
    if let Err(mut e) = crate::survey::check_definition(&s.survey) {
        bad.append(&mut e);
    }
    if let Some(r) = &s.rollout {
        if let Err(e) = super::launch::check_rollout(r) {
            bad.extend(e.fields);
        }
    }
    if !bad.is_empty() {
        return Err(ServiceError::fields(bad));
    }
    let playbook_id = match &s.playbook {
        Some(IdOrName::Id(id)) => {
            let id = i32::try_from(*id)
                .map_err(|_| ServiceError::not_found(format!("playbook {id}")))?;
            Some(core.store.get_playbook(PlaybookId(id)).await?.id)
        }
        Some(IdOrName::Name(n)) => Some(core.store.get_playbook_by_name(n).await?.id),
        None => None,
    };
    let project_id = match &s.project {
        Some(p) => Some(super::projects::by_id_or_name(&core.store, p).await?.id),
        None => None,
    };
    Ok(NewTemplate {
        name: s.name,
        description: s.description,
        playbook_id,
        project_id,
        playbook_path: s.playbook_path,
        servers: s.servers,
        server_filter: s.filter,
        extra_vars: s.extra_vars,
        run_options: s.options,
        time_limit_secs: s.time_limit_secs.map(|t| t as i32),
        survey: s.survey,
        rollout: s.rollout,
    })
}

/// Run options as ansible-playbook would take them.
fn run_options(o: &outpost_api::RunOptions) -> Result<(), String> {
    outpost_protocol::message::RunOptions {
        tags: o.tags.clone(),
        skip_tags: o.skip_tags.clone(),
        check: o.check,
        diff: o.diff,
        verbosity: o.verbosity,
    }
    .args()
    .map(|_| ())
    .map_err(|e| e.to_string())
}

async fn view(core: &Core, t: &Template) -> Result<TemplateView> {
    let playbook = match t.playbook_id {
        Some(p) => core.store.get_playbook(p).await.ok().map(|p| NameRef {
            id: p.id.0,
            name: p.name,
        }),
        None => None,
    };
    let project = match t.project_id {
        Some(p) => core.store.get_project(p).await.ok().map(|p| NameRef {
            id: p.id.0,
            name: p.name,
        }),
        None => None,
    };
    Ok(TemplateView {
        id: t.id.0,
        uuid: t.uuid.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        playbook,
        project,
        playbook_path: t.playbook_path.clone(),
        servers: t.servers.as_ref().map(|s| s.0.clone()),
        filter: t.server_filter.as_ref().map(|f| f.0.clone()),
        extra_vars: t.extra_vars.as_ref().map(|v| v.0.clone()),
        options: t
            .run_options
            .as_ref()
            .map(|o| o.0.clone())
            .unwrap_or_default(),
        time_limit_secs: t.time_limit_secs.and_then(|s| u32::try_from(s).ok()),
        survey: t.survey.0.clone(),
        rollout: t.rollout.as_ref().map(|r| r.0.clone()),
        created_by: t.created_by.map(|u| u.0),
        created_at: t.created_at,
        updated_at: t.updated_at,
    })
}
