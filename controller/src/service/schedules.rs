//! Schedules: admins create, change and delete them; everyone signed in reads them and their
//! runs and previews a cron expression. Each change recomputes the next slot from now, so an
//! edit never fires a slot that passed while the schedule was disabled. The firing itself is
//! [`super::firing`]'s; the launch a run makes is [`plan_launch`], fired by [`fire`].

use chrono::Utc;
use outpost_api::{
    DeleteResult, IdOrName, NewScheduleRequest, Page, PageQuery, PreviewRequest, PreviewResponse,
    SchedulePatchRequest, ScheduleRunView, ScheduleView,
};

use super::{paging, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::TemplateId;
use crate::model::{JsonObject, OverlapRule, Schedule, ScheduleId, ScheduleRun};
use crate::schedule::calendar::{Calendar, CalendarError};
use crate::store::audit::Actor;
use crate::store::schedules::{NewSchedule, SlotClaim, SlotClaimed};
use crate::store::StoreError;

/// How many runs a preview shows.
pub const PREVIEW: usize = 5;
/// The largest answers object a schedule keeps, as JSON text.
const MAX_ANSWERS_BYTES: usize = 64 * 1024;

impl From<CalendarError> for ServiceError {
    fn from(e: CalendarError) -> ServiceError {
        ServiceError::unprocessable(e.to_string())
    }
}

/// The schedule named by an id or a name in a path.
pub async fn by_ref(core: &Core, r: &str) -> Result<Schedule> {
    let found = match r.parse::<i32>() {
        Ok(id) => core.store.get_schedule(ScheduleId(id)).await,
        Err(_) => core.store.get_schedule_by_name(r).await,
    };
    Ok(found?)
}

pub async fn view(core: &Core, s: &Schedule) -> Result<ScheduleView> {
    let template = template_ref(core, s.template_id).await?;
    let created_by = match s.created_by {
        Some(u) => core
            .store
            .get_user(u)
            .await
            .ok()
            .map(|u| outpost_api::NameRef {
                id: u.id.0,
                name: u.username,
            }),
        None => None,
    };
    Ok(ScheduleView {
        id: s.id.0,
        name: s.name.clone(),
        template,
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
        enabled: s.enabled,
        ends_at: s.ends_at,
        answers: s.answers.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
        overlap: s.overlap,
        next_run_at: s.next_run_at,
        created_by,
        created_at: s.created_at,
        updated_at: s.updated_at,
    })
}

pub fn run_view(r: &ScheduleRun) -> ScheduleRunView {
    ScheduleRunView {
        id: r.id.0,
        slot_at: r.slot_at,
        status: r.status,
        reason: r.reason.clone(),
        jobs: r.jobs,
        created_at: r.created_at,
    }
}

fn check_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > 255 || name.trim() != name || name.chars().any(char::is_control) {
        return Err(ServiceError::unprocessable(
            "name: must be 1 to 255 characters, without surrounding spaces or control characters",
        ));
    }
    if name.parse::<i64>().is_ok() {
        return Err(ServiceError::unprocessable(
            "name: must not be a number (numbers name schedules by id)",
        ));
    }
    Ok(())
}

fn check_answers(answers: &JsonObject) -> Result<()> {
    let size = serde_json::to_string(answers).map_or(usize::MAX, |s| s.len());
    if size > MAX_ANSWERS_BYTES {
        return Err(ServiceError::too_large(format!(
            "answers: {size} bytes; at most {MAX_ANSWERS_BYTES}"
        )));
    }
    Ok(())
}

/// The next slot of an enabled schedule from now, within its end date.
fn next_slot(
    s_enabled: bool,
    calendar: &Calendar,
    ends_at: Option<chrono::DateTime<Utc>>,
) -> Option<chrono::DateTime<Utc>> {
    if !s_enabled {
        return None;
    }
    calendar
        .next_after(Utc::now())
        .filter(|n| ends_at.is_none_or(|e| *n <= e))
}

pub async fn preview(r: &PreviewRequest) -> Result<PreviewResponse> {
    let calendar = Calendar::new(&r.cron, &r.timezone)?;
    let runs = calendar.next_n(Utc::now(), PREVIEW);
    let zone = calendar.zone();
    Ok(PreviewResponse {
        timezone: zone.name().to_owned(),
        local: runs
            .iter()
            .map(|t| {
                t.with_timezone(&zone)
                    .format("%a %Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .collect(),
        runs,
    })
}

pub async fn create(core: &Core, caller: &Caller, r: NewScheduleRequest) -> Result<ScheduleView> {
    check_name(&r.name)?;
    let calendar = Calendar::new(&r.cron, &r.timezone)?;
    let answers = r.answers.unwrap_or_default();
    check_answers(&answers)?;
    let template_id = template_for(core, &r.template, &answers).await?;
    let new = NewSchedule {
        name: r.name,
        template_id,
        cron: r.cron.trim().to_owned(),
        timezone: calendar.zone().name().to_owned(),
        enabled: r.enabled,
        ends_at: r.ends_at,
        answers,
        overlap: r.overlap.unwrap_or(OverlapRule::Skip),
        next_run_at: next_slot(r.enabled, &calendar, r.ends_at),
    };
    let s = core.store.create_schedule(&new, &caller.actor()).await?;
    core.schedules_changed.notify_one();
    view(core, &s).await
}

pub async fn list(core: &Core, q: &PageQuery) -> Result<Page<ScheduleView>> {
    let page = core.store.list_schedules(paging(q.limit, q.offset)).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for s in &page.items {
        items.push(view(core, s).await?);
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

pub async fn get(core: &Core, r: &str) -> Result<ScheduleView> {
    let s = by_ref(core, r).await?;
    view(core, &s).await
}

pub async fn update(
    core: &Core,
    caller: &Caller,
    r: &str,
    p: SchedulePatchRequest,
) -> Result<ScheduleView> {
    let mut s = by_ref(core, r).await?;
    let mut changed = Vec::new();
    if let Some(name) = p.name {
        check_name(&name)?;
        s.name = name;
        changed.push("name");
    }
    if let Some(cron) = p.cron {
        s.cron = cron.trim().to_owned();
        changed.push("cron");
    }
    if let Some(tz) = p.timezone {
        s.timezone = tz;
        changed.push("timezone");
    }
    if let Some(e) = p.enabled {
        s.enabled = e;
        changed.push("enabled");
    }
    if p.clear_ends_at {
        s.ends_at = None;
        changed.push("ends_at");
    } else if let Some(e) = p.ends_at {
        s.ends_at = Some(e);
        changed.push("ends_at");
    }
    if let Some(o) = p.overlap {
        s.overlap = o;
        changed.push("overlap");
    }
    if let Some(a) = p.answers {
        check_answers(&a)?;
        template_for(core, &IdOrName::Id(i64::from(s.template_id.0)), &a).await?;
        s.answers = Some(sqlx::types::Json(a));
        changed.push("answers");
    }
    let calendar = Calendar::new(&s.cron, &s.timezone)?;
    s.timezone = calendar.zone().name().to_owned();
    s.next_run_at = next_slot(s.enabled, &calendar, s.ends_at);
    let s = core
        .store
        .update_schedule(&s, &changed, &caller.actor())
        .await?;
    core.schedules_changed.notify_one();
    view(core, &s).await
}

pub async fn delete(core: &Core, caller: &Caller, r: &str) -> Result<DeleteResult> {
    let s = by_ref(core, r).await?;
    core.store.delete_schedule(&s, &caller.actor()).await?;
    Ok(DeleteResult {
        outcome: "deleted".into(),
        message: format!("schedule {} deleted; its jobs are kept", s.name),
    })
}

pub async fn runs(core: &Core, r: &str, q: &PageQuery) -> Result<Page<ScheduleRunView>> {
    let s = by_ref(core, r).await?;
    let page = core
        .store
        .list_schedule_runs(s.id, paging(q.limit, q.offset))
        .await?;
    Ok(Page {
        items: page.items.iter().map(run_view).collect(),
        total: page.total,
        total_exact: page.total_exact,
        limit: page.limit,
        offset: page.offset,
        next: None,
    })
}

// ---------------------------------------------------------------- templates

async fn template_ref(core: &Core, id: TemplateId) -> Result<outpost_api::NameRef> {
    let name = match core.store.get_template(id).await {
        Ok(t) => t.name,
        Err(StoreError::NotFound(_)) => format!("(deleted template {id})"),
        Err(e) => return Err(e.into()),
    };
    Ok(outpost_api::NameRef { id: id.0, name })
}

/// The template a schedule runs, checked for scheduling with `answers`: no secret question may
/// need an answer (secrets are not kept with schedules), and the answers pass its survey.
async fn template_for(core: &Core, t: &IdOrName, answers: &JsonObject) -> Result<TemplateId> {
    let template = match t {
        IdOrName::Id(id) => {
            let id = i32::try_from(*id)
                .map_err(|_| ServiceError::not_found(format!("template {id}")))?;
            core.store.get_template(TemplateId(id)).await
        }
        IdOrName::Name(n) => core.store.get_template_by_name(n).await,
    }
    .map_err(|e| match e {
        StoreError::NotFound(what) => {
            ServiceError::unprocessable(format!("template: {what} not found"))
        }
        e => e.into(),
    })?;
    let secrets: Vec<&str> = template
        .survey
        .0
        .iter()
        .filter(|q| q.kind == outpost_api::QuestionKind::Secret)
        .map(|q| q.name.as_str())
        .collect();
    if let Some(q) = template
        .survey
        .0
        .iter()
        .find(|q| q.kind == outpost_api::QuestionKind::Secret && q.required)
    {
        return Err(ServiceError::unprocessable(format!(
            "template: {} has a required secret question ({}); a schedule cannot keep secrets, so it cannot be scheduled",
            template.name, q.name
        )));
    }
    if let Some(name) = answers.keys().find(|k| secrets.contains(&k.as_str())) {
        return Err(ServiceError::unprocessable(format!(
            "answers: {name} is a secret question; a schedule cannot keep secrets"
        )));
    }
    crate::survey::answer(&template.survey.0, answers).map_err(ServiceError::fields)?;
    Ok(template.id)
}

/// Plans the launch of a schedule's template as its owner, writing nothing. `Err` says why
/// not: a refusal (its owner deactivated, its template deleted…) is the reason the slot's run
/// fails; an error of kind `Unavailable` is the database's, for the slot to be tried again.
pub async fn plan_launch(core: &Core, s: &Schedule) -> Result<super::templates::TemplatePlan> {
    let refused = |reason: String| ServiceError::unprocessable(reason);
    let owner = s
        .created_by
        .ok_or_else(|| refused("its owner's account no longer exists".into()))?;
    // Side by side: the slot's job waits for every round trip on the way.
    let (user, template) = tokio::join!(
        core.store.get_user(owner),
        core.store.get_template(s.template_id)
    );
    let user = match user {
        Ok(u) => u,
        Err(e @ StoreError::NotFound(_)) => return Err(refused(format!("its owner: {e}"))),
        Err(e) => return Err(e.into()),
    };
    if !user.is_active {
        return Err(refused(format!(
            "its owner {} is deactivated",
            user.username
        )));
    }
    if !user.role.at_least(crate::model::Role::Operator) {
        return Err(refused(format!(
            "its owner {} is a {} now and may not launch",
            user.username, user.role
        )));
    }
    let template = match template {
        Ok(t) => t,
        Err(StoreError::NotFound(_)) => return Err(refused("its template was deleted".into())),
        Err(e) => return Err(e.into()),
    };
    let answers = s.answers.as_ref().map(|a| a.0.clone()).unwrap_or_default();
    super::templates::plan(core, &template, &answers, &user).await
}

/// Fires a slot with a planned launch, its claim in the launch's commit, as the schedule's
/// owner (whom the plan checked); the commit waits for `not_before`, when the launch is
/// written ahead of its slot. `Ok(None)`: the slot was not this controller's to fire,
/// and nothing was launched. On `Err` nothing was written and the slot is still due, unless
/// the error came after the commit (reading the jobs back): then a claim of the slot finds
/// it taken.
pub async fn fire(
    core: &Core,
    mut plan: super::templates::TemplatePlan,
    slot: SlotClaim,
    not_before: Option<chrono::DateTime<chrono::Utc>>,
    owner: crate::model::UserId,
) -> Result<Option<usize>> {
    plan.launch.scheduled(slot, not_before);
    let committed = super::templates::commit(core, plan, &Actor::user(owner)).await?;
    Ok(match committed.slot {
        Some(SlotClaimed::Taken | SlotClaimed::FiredBefore) => None,
        _ => Some(committed.jobs.len()),
    })
}
