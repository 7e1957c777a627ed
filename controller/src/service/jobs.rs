//! Jobs: launch a playbook on servers (one job per server, in one transaction; the scheduler
//! is woken at once), list and read jobs, cancel them. Every launch — typed, or a template's —
//! goes through [`plan`] (check and resolve, nothing written) and [`commit`], in
//! [`super::launch`].

use outpost_api::{
    CancelResponse, JobQuery, JobView, LaunchRequest, LaunchResponse, NameRef, Page,
};

use super::job_views::{self, Names};
pub use super::launch::{commit, launched, plan, Committed, LaunchPlan, Launcher, Origin};
use super::{keyset_paging, views, Caller, Result, ServiceError};
use crate::core::Core;
use crate::lifecycle::CancelResult;
use crate::model::{Job, JobUuid, PlaybookId, ServerId, UserId};
use crate::store::jobs::JobFilter;
use crate::store::Store;

/// The job named by a uuid in a path.
pub async fn by_uuid(store: &Store, job_id: &str) -> Result<Job> {
    Ok(store.get_job_by_uuid(job_uuid(job_id)?).await?)
}

/// A job's id as a caller wrote it, checked: not found unless it is a UUID.
pub fn job_uuid(job_id: &str) -> Result<JobUuid> {
    job_id
        .parse::<JobUuid>()
        .map_err(|_| ServiceError::not_found(format!("job {job_id}: not a job id")))
}

/// A page of jobs, from the read replica while it is good.
pub async fn list(core: &Core, q: &JobQuery) -> Result<Page<JobView>> {
    core.store.read(|store| list_from(store, q)).await
}

async fn list_from(store: Store, q: &JobQuery) -> Result<Page<JobView>> {
    let f = JobFilter {
        status: q.status,
        user_id: q.user.map(UserId),
        server_id: q.server.map(ServerId),
        playbook_id: q.playbook.map(PlaybookId),
        agent_id: None,
        since: q.since,
        until: q.until,
    };
    let paging = keyset_paging(q.limit, q.offset, q.after.as_deref())?;
    let page = store.list_named_jobs(&f, paging).await?;
    Ok(views::page(page, job_views::listed))
}

/// One job, from the read replica while it is good (a job it does not have yet is read from
/// the primary).
pub async fn get(core: &Core, job_id: &str) -> Result<JobView> {
    core.store.read(|store| get_from(store, job_id)).await
}

async fn get_from(store: Store, job_id: &str) -> Result<JobView> {
    let job = by_uuid(&store, job_id).await?;
    let mut view = Names::default().view(&store, &job).await?;
    view.credentials = Some(
        store
            .job_credentials(job.id)
            .await?
            .into_iter()
            .map(|c| NameRef {
                id: c.id.0,
                name: c.name.clone(),
            })
            .collect(),
    );
    view.secret_answers = store.job_secret_vars(job.id).await?.map(|s| {
        s.names
            .into_iter()
            .map(|n| (n, outpost_api::MASK.to_owned()))
            .collect()
    });
    Ok(view)
}

/// Launches a playbook: one pending job per server, created in one transaction with their audit
/// rows, after the run options and launch values have passed their rules for this caller.
pub async fn launch(core: &Core, caller: &Caller, req: LaunchRequest) -> Result<LaunchResponse> {
    let new = plan(core, &caller.user, &req, &Origin::direct(&caller.user)).await?;
    let jobs = commit(core, &new, &caller.actor(), None).await?.jobs;
    launched(core, &jobs).await
}

/// Cancels a job at once when no agent holds it, or asks its agent to stop it.
pub async fn cancel(core: &Core, caller: &Caller, job_id: &str) -> Result<CancelResponse> {
    let job = by_uuid(&core.store, job_id).await?;
    let outcome = match core.lifecycle.cancel(job.id, &caller.actor()).await? {
        CancelResult::Cancelled => "cancelled",
        CancelResult::Requested => "requested",
    };
    let job = core.store.get_job(job.id).await?;
    Ok(CancelResponse {
        outcome: outcome.into(),
        job: Names::default().view(&core.store, &job).await?,
    })
}
