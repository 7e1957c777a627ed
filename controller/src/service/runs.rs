//! Runs: list and read them (counts per status, datacenter and wave, budgets, jobs), cancel a
//! run (its jobs, through the lifecycle), approve its next wave, and relaunch it for its
//! failed servers only, with the same playbook, revision, variables and options.

use std::collections::{BTreeMap, HashMap};

use outpost_api::{
    BudgetView, NameRef, Page, RelaunchOnly, RelaunchRequest, RunActionResponse, RunCounts,
    RunDetail, RunGroup, RunJob, RunQuery, RunView,
};

use super::job_views::Names;
use super::launch::{datacenter_of, rollout_view, LaunchPlan};
use super::{paging, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::{
    JobStatus, PlaybookId, Run, RunId, RunStatus, RunUuid, Server, ServerId, TemplateId, UserId,
};
use crate::rollout::{Counts, Stop, StopKind};
use crate::scheduler::Event;
use crate::store::jobs::NewJob;
use crate::store::runs::RunFilter;

/// The run named by a uuid in a path.
pub async fn by_uuid(core: &Core, run_id: &str) -> Result<Run> {
    let Ok(uuid) = run_id.parse::<RunUuid>() else {
        return Err(ServiceError::not_found(format!(
            "run {run_id}: not a run id"
        )));
    };
    Ok(core.store.get_run_by_uuid(uuid).await?)
}

pub fn counts_view(c: &Counts) -> RunCounts {
    RunCounts {
        pending: c.pending,
        running: c.running,
        success: c.success,
        failed: c.failed,
        unreachable: c.unreachable,
        cancelled: c.cancelled,
        total: c.total(),
    }
}

/// A run as listings show it.
pub async fn view(core: &Core, run: &Run) -> Result<RunView> {
    let counts = core.store.run_counts(run.id).await?;
    let per_wave = if run.status == RunStatus::Running && run.waves > 1 {
        core.store
            .run_wave_counts(run.id, run.state().waves)
            .await?
    } else {
        Vec::new()
    };
    view_with(core, run, &counts, &per_wave).await
}

async fn view_with(
    core: &Core,
    run: &Run,
    counts: &Counts,
    per_wave: &[Counts],
) -> Result<RunView> {
    let playbook = core.store.get_playbook(run.playbook_id).await?;
    let user = core.store.get_user(run.user_id).await?;
    let template = match run.template_id {
        Some(t) => core.store.get_template(t).await.ok().map(|t| NameRef {
            id: t.id.0,
            name: t.name,
        }),
        None => None,
    };
    let relaunch_of = match run.relaunch_of {
        Some(r) => Some(core.store.get_run(r).await?.run_id.to_string()),
        None => None,
    };
    let state = run.state();
    let awaiting_approval = run.status == RunStatus::Running
        && matches!(
            crate::rollout::next(&state, per_wave),
            crate::rollout::Step::AwaitApproval { .. }
        );
    Ok(RunView {
        id: run.run_id.to_string(),
        status: run.status,
        playbook: NameRef {
            id: playbook.id.0,
            name: playbook.name,
        },
        user: NameRef {
            id: user.id.0,
            name: user.username,
        },
        template,
        schedule_id: run.schedule_id.map(|s| s.0),
        counts: counts_view(counts),
        waves: state.waves,
        current_wave: state.current_wave + 1,
        awaiting_approval,
        stop_reason: run.stop_reason.clone(),
        relaunch_of,
        rollout: run.rollout.as_ref().map(|r| rollout_view(&r.0)),
        created_at: run.created_at,
        completed_at: run.completed_at,
    })
}

pub async fn list(core: &Core, q: &RunQuery) -> Result<Page<RunView>> {
    let f = RunFilter {
        status: q.status,
        user_id: q.user.map(UserId),
        playbook_id: q.playbook.map(PlaybookId),
        template_id: q.template.map(TemplateId),
        since: q.since,
        until: q.until,
    };
    let page = core.store.list_runs(&f, paging(q.limit, q.offset)).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for r in &page.items {
        items.push(view(core, r).await?);
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

/// A run with its counts per datacenter and wave, its budgets, its jobs and its tickets.
pub async fn get(core: &Core, run_id: &str) -> Result<RunDetail> {
    let run = by_uuid(core, run_id).await?;
    let jobs = core.store.jobs_of_run(run.id).await?;
    let state = run.state();
    let mut total = Counts::default();
    let mut per_wave = vec![Counts::default(); state.waves as usize];
    let mut per_dc: BTreeMap<String, Counts> = BTreeMap::new();
    let mut servers: HashMap<ServerId, Server> = HashMap::new();
    let mut names = Names::default();
    let mut out = Vec::with_capacity(jobs.len());
    for j in &jobs {
        if let std::collections::hash_map::Entry::Vacant(e) = servers.entry(j.server_id) {
            e.insert(core.store.get_server(j.server_id).await?);
        }
        let dc = datacenter_of(&servers[&j.server_id], &core.settings.routing_keys);
        let wave = u32::try_from(j.wave).unwrap_or(0);
        total.add(j.status, j.unreachable, 1);
        if let Some(w) = per_wave.get_mut(wave as usize) {
            w.add(j.status, j.unreachable, 1);
        }
        per_dc
            .entry(dc.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .add(j.status, j.unreachable, 1);
        out.push(RunJob {
            wave: wave + 1,
            datacenter: dc,
            unreachable: j.unreachable,
            job: names.view(&core.store, j).await?,
        });
    }
    let budgets = run.budgets();
    let budget = BudgetView {
        max_failures: budgets.max_failures,
        failed: total.failed,
        max_unreachable: budgets.max_unreachable,
        unreachable: total.unreachable,
        spent: run.stop_kind() == Some(StopKind::Budget),
    };
    let run_view = view_with(core, &run, &total, &per_wave).await?;
    Ok(RunDetail {
        run: run_view,
        budget,
        datacenters: per_dc
            .into_iter()
            .map(|(name, c)| RunGroup {
                name,
                counts: counts_view(&c),
            })
            .collect(),
        waves: per_wave
            .iter()
            .enumerate()
            .map(|(i, c)| RunGroup {
                name: (i + 1).to_string(),
                counts: counts_view(c),
            })
            .collect(),
        jobs: out,
        tickets: core.store.run_tickets(run.id).await?,
    })
}

/// Cancels a run: its jobs not yet with an agent are cancelled, agents are asked to stop the
/// others; the run ends cancelled when the last of them does.
pub async fn cancel(core: &Core, caller: &Caller, run_id: &str) -> Result<RunActionResponse> {
    let run = by_uuid(core, run_id).await?;
    if run.status != RunStatus::Running {
        return Err(ServiceError::conflict(format!(
            "run {} is {}: there is nothing to cancel",
            run.run_id, run.status
        )));
    }
    let stop = Stop {
        kind: StopKind::Cancelled,
        reason: format!("run cancelled by {}", caller.user.username),
    };
    let stopped = core
        .lifecycle
        .stop_run(run.id, &stop, true, &caller.actor())
        .await?;
    if !stopped {
        return Err(ServiceError::conflict(format!(
            "run {} was already stopped: {}",
            run.run_id,
            run.stop_reason.as_deref().unwrap_or("it is ending")
        )));
    }
    let run = core.store.get_run(run.id).await?;
    Ok(RunActionResponse {
        outcome: if run.status == RunStatus::Running {
            "requested".into()
        } else {
            "cancelled".into()
        },
        run: view(core, &run).await?,
    })
}

/// Lets the next wave of a paused rollout start (once the waves before it are over).
pub async fn approve(core: &Core, caller: &Caller, run_id: &str) -> Result<RunActionResponse> {
    let run = by_uuid(core, run_id).await?;
    let state = run.state();
    if run.status != RunStatus::Running || state.stopped {
        return Err(ServiceError::conflict(format!(
            "run {} is {}: no wave waits for approval",
            run.run_id,
            if state.stopped {
                "stopped"
            } else {
                run.status.as_str()
            }
        )));
    }
    if !state.pause || state.current_wave + 1 >= state.waves {
        return Err(ServiceError::conflict(format!(
            "run {} has no wave waiting for approval",
            run.run_id
        )));
    }
    let wave = state.current_wave + 1;
    if !core
        .store
        .approve_wave(run.id, wave, &caller.actor())
        .await?
    {
        return Err(ServiceError::conflict(format!(
            "wave {} of run {} is already approved",
            wave + 1,
            run.run_id
        )));
    }
    core.scheduler.send(Event::Wake);
    let run = core.store.get_run(run.id).await?;
    Ok(RunActionResponse {
        outcome: format!("wave {} approved", wave + 1),
        run: view(core, &run).await?,
    })
}

/// A new run of the same playbook, revision, variables, options and rollout on the servers
/// whose jobs failed (and, if asked, were unreachable).
pub async fn relaunch(
    core: &Core,
    caller: &Caller,
    run_id: &str,
    req: &RelaunchRequest,
) -> Result<RunView> {
    let old = by_uuid(core, run_id).await?;
    if old.status == RunStatus::Running {
        return Err(ServiceError::conflict(format!(
            "run {} is still running: relaunch it when it has ended",
            old.run_id
        )));
    }
    let jobs = core.store.jobs_of_run(old.id).await?;
    let picked: Vec<_> = jobs
        .iter()
        .filter(|j| {
            j.status == JobStatus::Failed
                && (!j.unreachable || req.only == RelaunchOnly::FailedOrUnreachable)
        })
        .collect();
    if picked.is_empty() {
        return Err(ServiceError::conflict(format!(
            "run {} has no {} server to run again",
            old.run_id,
            match req.only {
                RelaunchOnly::Failed => "failed",
                RelaunchOnly::FailedOrUnreachable => "failed or unreachable",
            }
        )));
    }
    let mut servers = Vec::with_capacity(picked.len());
    let mut new_jobs = Vec::with_capacity(picked.len());
    for j in &picked {
        if core.store.job_secret_vars(j.id).await?.is_some() {
            return Err(ServiceError::conflict(
                "this run's jobs had secret survey answers, which are not kept once a job ends: launch its template again",
            ));
        }
        let server = core.store.get_server(j.server_id).await?;
        if !server.is_active {
            return Err(ServiceError::conflict(format!(
                "server {} is deactivated: activate it or launch without it",
                server.hostname
            )));
        }
        servers.push(server);
        let credential_ids = core
            .store
            .job_credentials(j.id)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        new_jobs.push(NewJob {
            playbook_id: j.playbook_id,
            server_id: j.server_id,
            user_id: caller.user.id,
            extra_vars: j
                .extra_vars
                .as_ref()
                .map(|v| serde_json::Value::Object(v.0.clone())),
            extra_vars_templated: j.extra_vars_templated,
            run_options: j
                .run_options
                .as_ref()
                .map(|v| serde_json::Value::Object(v.0.clone())),
            revision_id: j.revision_id,
            credential_ids,
            job_uuid: crate::model::JobUuid::new_v4(),
            template_id: j.template_id,
            time_limit_secs: j.time_limit_secs,
            secret_vars: None,
            schedule_id: None,
            wave: 0,
        });
    }
    let spec = old.rollout.as_ref().map(|r| r.0.clone());
    // A canary datacenter the failed servers are not in cannot be kept: the relaunch keeps
    // the rest of the rollout.
    let spec = spec.map(|mut s| {
        if let Some(crate::rollout::Canary::Datacenter(dc)) = &s.canary {
            let any = servers
                .iter()
                .any(|sv| datacenter_of(sv, &core.settings.routing_keys).as_deref() == Some(dc));
            if !any {
                s.canary = None;
                if s.batch.is_none() {
                    s.pause = false;
                }
            }
        }
        s
    });
    let (mut run, waves) = super::launch::plan_run(
        core,
        &caller.user,
        old.playbook_id,
        old.template_id,
        &servers,
        spec,
    )?;
    run.relaunch_of = Some(old.id);
    for (j, w) in new_jobs.iter_mut().zip(waves) {
        j.wave = w;
    }
    let plan = LaunchPlan {
        run,
        jobs: new_jobs,
        servers,
        playbook: None,
        blackouts: None,
        slot: None,
        not_before: None,
        reads: None,
    };
    let audit = crate::store::jobs::LaunchAudit {
        action: "RELAUNCH",
        resource_type: "run",
        resource_id: Some(old.id.0),
        details: serde_json::json!({"run_id": old.run_id, "only": req.only}),
    };
    let jobs = super::launch::commit(core, &plan, &caller.actor(), Some(&audit))
        .await?
        .jobs;
    let run_id: Option<RunId> = jobs.first().and_then(|j| j.run_id);
    let Some(run_id) = run_id else {
        return Err(ServiceError::internal("the relaunch created no run"));
    };
    let run = core.store.get_run(run_id).await?;
    view(core, &run).await
}
