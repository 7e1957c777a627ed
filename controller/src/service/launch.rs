//! Launching: the one path of every launch — typed by a caller, or a template's. [`plan`]
//! checks the request (run options, variables, credentials, rollout) and resolves what it
//! names (playbook, revision, servers) into the run and the jobs to create, writing nothing;
//! [`commit`] creates them in one transaction and wakes the scheduler.

use outpost_api::{IdOrName, LaunchRequest, LaunchResponse, RunOptions};

use super::job_views::Names;
use super::{Result, ServiceError};
use crate::core::Core;
use crate::lifecycle::{Claim, LaunchClaim, Launching};
use crate::model::{
    Job, JobUuid, Paging, Playbook, PlaybookId, RevisionId, Role, ServerId, TemplateId, User,
};
use crate::scheduler::{Event, LaunchReads};
use crate::store::audit::Actor;
use crate::store::jobs::{LaunchAudit, NewJob};
use crate::store::launch::Known;
use crate::store::runs::NewRun;
use crate::store::schedules::{SlotClaim, SlotClaimed};
use crate::store::servers::ServerFilter;

/// A checked launch, ready to commit: its run and its jobs (one per server).
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub run: NewRun,
    pub jobs: Vec<NewJob>,
    /// The servers of the jobs, in the same order.
    pub servers: Vec<crate::model::Server>,
    /// The playbook, when the plan read it.
    pub playbook: Option<Playbook>,
    /// The enabled blackout windows, when the plan read them (beside its other reads, for a
    /// launch that claims its job not to wait for them after).
    pub blackouts: Option<Vec<crate::model::Blackout>>,
    /// The schedule's slot the launch fires, claimed in its commit.
    pub slot: Option<SlotClaim>,
    /// The launch commits no earlier than this: a slot's launch is written just ahead of the
    /// slot and committed at it.
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
    /// The rest of its one job's assignment, when read at planning ([`LaunchPlan::read_ahead`]);
    /// otherwise a launch that claims its job reads it beside its transaction. Used only if
    /// read for the job and server the plan holds when it commits.
    pub(super) reads: Option<LaunchReads>,
}

impl LaunchPlan {
    /// Makes the launch the firing of a schedule's slot, claimed in the launch's own commit.
    /// When the slot is not this controller's to fire (another fired it, or it fired before),
    /// [`commit`] creates nothing and says what the claim found. It commits at `not_before`
    /// at the earliest.
    pub fn scheduled(
        &mut self,
        slot: SlotClaim,
        not_before: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        self.run.schedule_id = Some(slot.schedule);
        for j in &mut self.jobs {
            j.schedule_id = Some(slot.schedule);
        }
        self.slot = Some(slot);
        self.not_before = not_before;
    }

    /// Reads the rest of its job's assignment now, for a launch of one job: a schedule's
    /// firing plans ahead of its slot, and the many firings due at one slot then write with
    /// no reads of their own beside their transactions, which would wait with the held
    /// transactions for the pool.
    pub async fn read_ahead(&mut self, store: &crate::store::Store) {
        self.reads = self.assignment_reads(store).await;
    }

    /// The rest of a one-job launch's assignment ([`LaunchReads`]), read now; `None` for any
    /// other launch.
    async fn assignment_reads(&self, store: &crate::store::Store) -> Option<LaunchReads> {
        let (job, server, playbook) = self.lone()?;
        Some(LaunchReads::read(store, job, server, playbook).await)
    }

    /// The rows read at planning, if they were read for the one job and server the plan holds
    /// now; taken out of the plan either way.
    fn take_reads(&mut self) -> Option<LaunchReads> {
        let reads = self.reads.take()?;
        let (job, server, _) = self.lone()?;
        reads.are_for(job, server).then_some(reads)
    }

    /// The plan's one job, its server and its playbook, when it launches one job that may
    /// start now (the only launch that claims its job, and so the only one whose assignment
    /// is read before its commit).
    fn lone(&self) -> Option<(&NewJob, &crate::model::Server, &Playbook)> {
        match (
            self.jobs.as_slice(),
            self.servers.as_slice(),
            self.playbook.as_ref(),
        ) {
            ([job], [server], Some(playbook))
                if job.wave == 0 && playbook.id == job.playbook_id =>
            {
                Some((job, server, playbook))
            }
            _ => None,
        }
    }

    /// What the lifecycle's launch takes of the plan.
    fn launching<'a>(&'a self, audit: Option<&'a LaunchAudit>) -> Launching<'a> {
        Launching {
            jobs: &self.jobs,
            run: Some(&self.run),
            known: Known {
                playbook: self.playbook.as_ref(),
                servers: &self.servers,
            },
            audit,
            slot: self.slot.as_ref(),
            not_before: self.not_before,
        }
    }
}

/// Checks a launch's rollout: every bad field named, at once.
pub fn check_rollout(r: &outpost_api::Rollout) -> Result<crate::rollout::Spec> {
    use crate::rollout::{Amount, Canary, Spec};
    let mut bad = Vec::new();
    let mut amount = |field: &str, v: &Option<String>| -> Option<Amount> {
        let v = v.as_ref()?;
        match v.parse::<Amount>() {
            Ok(a) => Some(a),
            Err(e) => {
                bad.push(outpost_api::FieldError {
                    field: format!("rollout.{field}"),
                    message: e.to_string(),
                });
                None
            }
        }
    };
    let batch = amount("batch", &r.batch);
    let max_failures = amount("max_failures", &r.max_failures);
    let max_unreachable = amount("max_unreachable", &r.max_unreachable);
    let canary = match (r.canary, &r.canary_datacenter) {
        (Some(_), Some(_)) => {
            bad.push(outpost_api::FieldError {
                field: "rollout.canary".into(),
                message: "give a number of servers or a datacenter, not both".into(),
            });
            None
        }
        (Some(n), None) => Some(Canary::Count(n)),
        (None, Some(dc)) if dc.is_empty() || dc.chars().count() > 255 => {
            bad.push(outpost_api::FieldError {
                field: "rollout.canary_datacenter".into(),
                message: "a datacenter's name: 1 to 255 characters".into(),
            });
            None
        }
        (None, Some(dc)) => Some(Canary::Datacenter(dc.clone())),
        (None, None) => None,
    };
    if r.batch_per_datacenter && batch.is_none() {
        bad.push(outpost_api::FieldError {
            field: "rollout.batch_per_datacenter".into(),
            message: "needs a batch".into(),
        });
    }
    if !bad.is_empty() {
        return Err(ServiceError::fields(bad));
    }
    Ok(Spec {
        canary,
        batch,
        batch_per_datacenter: r.batch_per_datacenter,
        pause: r.pause,
        max_failures,
        max_unreachable,
    })
}

/// The spec as the API shows it.
pub fn rollout_view(s: &crate::rollout::Spec) -> outpost_api::Rollout {
    use crate::rollout::Canary;
    outpost_api::Rollout {
        canary: match &s.canary {
            Some(Canary::Count(n)) => Some(*n),
            _ => None,
        },
        canary_datacenter: match &s.canary {
            Some(Canary::Datacenter(d)) => Some(d.clone()),
            _ => None,
        },
        batch: s.batch.map(|a| a.to_string()),
        batch_per_datacenter: s.batch_per_datacenter,
        pause: s.pause,
        max_failures: s.max_failures.map(|a| a.to_string()),
        max_unreachable: s.max_unreachable.map(|a| a.to_string()),
    }
}

/// A server's datacenter: the value of the first routing key it is tagged with.
pub fn datacenter_of(server: &crate::model::Server, routing_keys: &[String]) -> Option<String> {
    let tags = server.tags.as_ref()?;
    routing_keys.iter().find_map(|k| match tags.0.get(k) {
        Some(serde_json::Value::String(v)) => Some(v.clone()),
        _ => None,
    })
}

/// The run of a launch to `servers` with `spec`, and each server's wave.
pub fn plan_run(
    core: &Core,
    launcher: &Launcher,
    playbook: PlaybookId,
    template: Option<TemplateId>,
    servers: &[crate::model::Server],
    spec: Option<crate::rollout::Spec>,
) -> Result<(NewRun, Vec<u32>)> {
    let spec = spec.filter(|s| !s.is_plain());
    let dcs: Vec<Option<String>> = servers
        .iter()
        .map(|s| datacenter_of(s, &core.settings.routing_keys))
        .collect();
    let dc_refs: Vec<Option<&str>> = dcs.iter().map(|d| d.as_deref()).collect();
    let (waves, count) = match &spec {
        Some(sp) => crate::rollout::plan_waves(&dc_refs, sp).map_err(|e| {
            ServiceError::fields(vec![outpost_api::FieldError {
                field: "rollout".into(),
                message: e.to_string(),
            }])
        })?,
        None => (vec![0; servers.len()], 1),
    };
    let total = u32::try_from(servers.len()).unwrap_or(u32::MAX);
    Ok((
        NewRun {
            run_uuid: crate::model::RunUuid::new_v4(),
            user_id: launcher.id,
            playbook_id: playbook,
            template_id: template,
            schedule_id: None,
            budgets: spec.as_ref().map(|s| s.budgets(total)).unwrap_or_default(),
            spec,
            total,
            waves: count,
            relaunch_of: None,
        },
        waves,
    ))
}

/// The most servers one launch may target.
const MAX_LAUNCH: i64 = 10_000;

/// Checks the launch's extra vars for its origin (see [`crate::vars`]).
fn check_vars(
    core: &Core,
    req: &LaunchRequest,
    origin: &Origin<'_>,
) -> Result<Option<crate::vars::Checked>> {
    let Some(vars) = &req.extra_vars else {
        return Ok(None);
    };
    let giver = crate::vars::Giver {
        is_admin: origin.vars_by_admin,
        admin_templates_allowed: origin.templates_allowed
            && core.settings.admin_launch_vars_templates,
    };
    crate::vars::check(vars, giver)
        .map(Some)
        .map_err(vars_refused)
}

fn vars_refused(e: crate::vars::VarsError) -> ServiceError {
    match e {
        crate::vars::VarsError::TooLarge { .. } | crate::vars::VarsError::LaunchTooLarge { .. } => {
            ServiceError::too_large(e.to_string())
        }
        _ => ServiceError::unprocessable(e.to_string()),
    }
}

/// Checks the launch's run options.
fn check_launch(req: &LaunchRequest) -> Result<RunOptions> {
    let options = outpost_protocol::message::RunOptions {
        tags: req.tags.clone(),
        skip_tags: req.skip_tags.clone(),
        check: req.check,
        diff: req.diff,
        verbosity: req.verbosity,
    };
    options
        .args()
        .map_err(|e| ServiceError::unprocessable(e.to_string()))?;
    Ok(RunOptions {
        tags: req.tags.clone(),
        skip_tags: req.skip_tags.clone(),
        check: req.check,
        diff: req.diff,
        verbosity: req.verbosity,
    })
}

/// Who launches: the user whose role decides what is for admins only (the signed-in caller,
/// or the owner of a schedule).
pub type Launcher = User;

/// Where a launch comes from, beyond its request: a caller's own, or a template's.
pub struct Origin<'a> {
    /// Whether the variables were written by an admin (`ansible_*` allowed).
    pub vars_by_admin: bool,
    /// Whether the admin setting may let ansible evaluate templates in them (never for a
    /// template: its answers come from whoever launches it).
    pub templates_allowed: bool,
    pub template_id: Option<TemplateId>,
    pub time_limit_secs: Option<i32>,
    /// Secret answers, sealed per job.
    pub secrets: Option<&'a crate::survey::Answers>,
}

impl Origin<'_> {
    /// A launch as the launcher typed it.
    pub fn direct(launcher: &Launcher) -> Origin<'static> {
        Origin {
            vars_by_admin: launcher.role == Role::Admin,
            templates_allowed: true,
            template_id: None,
            time_limit_secs: None,
            secrets: None,
        }
    }
}

/// Checks a launch and resolves what it names (playbook, revision, servers, credentials,
/// rollout) into the run and the jobs to create, one per server; nothing is written. The one
/// path of every launch.
pub async fn plan(
    core: &Core,
    launcher: &Launcher,
    req: &LaunchRequest,
    origin: &Origin<'_>,
) -> Result<LaunchPlan> {
    let options = check_launch(req)?;
    let spec = req.rollout.as_ref().map(check_rollout).transpose()?;
    // Names, depth and size first, before any lookup; the copies per server once they are known.
    let vars = check_vars(core, req, origin)?;
    // Side by side: each is a round trip of its own, and a launch's latency is its round trips.
    // Errors are still told in this order, whichever read ends first.
    // A launch of one named server may claim its job at once, which needs the windows.
    let one_server = matches!(&req.servers, Some(list) if list.len() == 1);
    let windows = async {
        match one_server && core.settings.claim_at_launch {
            true => core.store.enabled_blackouts().await.map(Some),
            false => Ok(None),
        }
    };
    let (credential_ids, playbook, servers, blackouts) = tokio::join!(
        launch_credentials(core, launcher, req),
        launched_playbook(core, req),
        launched_servers(core, req),
        windows,
    );
    let (credential_ids, (playbook, revision_id), servers) = (credential_ids?, playbook?, servers?);
    if let Some(checked) = vars {
        crate::vars::check_copies(checked, servers.len()).map_err(vars_refused)?;
    }
    let templated = vars.is_some_and(|c| c.templated);
    let run_options =
        serde_json::to_value(&options).map_err(|e| ServiceError::internal(e.to_string()))?;
    let extra_vars = req.extra_vars.clone().map(serde_json::Value::Object);
    let (run, waves) = plan_run(
        core,
        launcher,
        playbook.id,
        origin.template_id,
        &servers,
        spec,
    )?;
    let mut new = Vec::with_capacity(servers.len());
    for (s, wave) in servers.iter().zip(waves) {
        let job_uuid = JobUuid::new_v4();
        let secret_vars = match origin.secrets {
            Some(answers) => crate::survey::sealing::seal(&core.keyring, job_uuid, answers)
                .map_err(|e| {
                    tracing::error!(error = %e, "sealing a job's secret answers");
                    ServiceError::internal(
                        "the controller could not seal the secret answers; see its log",
                    )
                })?,
            None => None,
        };
        new.push(NewJob {
            playbook_id: playbook.id,
            server_id: s.id,
            user_id: launcher.id,
            extra_vars: extra_vars.clone(),
            extra_vars_templated: templated,
            run_options: Some(run_options.clone()),
            revision_id,
            credential_ids: credential_ids.clone(),
            job_uuid,
            template_id: origin.template_id,
            time_limit_secs: origin.time_limit_secs,
            secret_vars,
            schedule_id: None,
            wave,
        });
    }
    Ok(LaunchPlan {
        run,
        jobs: new,
        servers,
        playbook: Some(playbook),
        blackouts: blackouts?,
        slot: None,
        not_before: None,
        reads: None,
    })
}

/// What a launch's commit made.
#[derive(Debug)]
pub struct Committed {
    /// The jobs created, in the plan's order; none when the plan's slot was not its to fire.
    pub jobs: Vec<Job>,
    /// What the claim of the plan's slot found, when it fires one ([`LaunchPlan::scheduled`]).
    pub slot: Option<SlotClaimed>,
}

/// Creates a planned run and its jobs in one transaction (with `audit`, when given). A launch
/// of one job that may start now claims it in that transaction for an agent the scheduler set
/// a place aside on, and the scheduler hands it over; any other job waits for the scheduler's
/// round, woken here.
pub async fn commit(
    core: &Core,
    plan: &LaunchPlan,
    actor: &Actor,
    audit: Option<&LaunchAudit>,
) -> Result<Committed> {
    let reservation = match (plan.jobs.as_slice(), plan.servers.as_slice()) {
        ([job], [server]) if job.wave == 0 && core.settings.claim_at_launch => {
            reserve(core, server, plan.blackouts.as_deref(), plan.not_before).await?
        }
        _ => None,
    };
    let Some(reservation) = reservation else {
        let launched = core
            .lifecycle
            .launch(plan.launching(audit), actor, None)
            .await?;
        if !launched.jobs.is_empty() {
            core.scheduler.send(Event::Wake);
        }
        return Ok(Committed {
            jobs: launched.jobs,
            slot: launched.slot,
        });
    };
    // From here the launch runs to its end even if its caller goes away: a claim committed
    // and never handed over would hold its job until the agent reconnects.
    let (lifecycle, scheduler) = (core.lifecycle.clone(), core.scheduler.clone());
    let (mut plan, actor, audit) = (plan.clone(), actor.clone(), audit.cloned());
    let max_per_server = core.settings.max_running_per_server;
    let task = tokio::spawn(async move {
        let claim = LaunchClaim {
            agent: reservation.agent(),
            max_per_server,
        };
        // The rest of the job's assignment, unless read at planning, is read beside the
        // transaction, so that nothing is left to read between its commit and its agent.
        let ahead = plan.take_reads();
        let reads = async {
            match ahead {
                Some(read) => Some(read),
                None => plan.assignment_reads(lifecycle.store()).await,
            }
        };
        let (launched, reads) = tokio::join!(
            lifecycle.launch(plan.launching(audit.as_ref()), &actor, Some(claim)),
            reads
        );
        let launched = launched?;
        match (
            launched.claim.clone(),
            launched.jobs.first(),
            plan.servers.first(),
        ) {
            (Some(Claim::Claimed(attempt)), Some(job), Some(server)) => {
                let playbook = plan.playbook.clone().filter(|p| p.id == job.playbook_id);
                reservation.claimed(job.clone(), server.clone(), playbook, reads, attempt);
            }
            // The place comes back with the reservation; the round takes the job.
            (_, Some(_), _) => scheduler.send(Event::Wake),
            // Nothing was created (the slot was not this launch's).
            (_, None, _) => {}
        }
        Ok::<_, crate::store::StoreError>(Committed {
            jobs: launched.jobs,
            slot: launched.slot,
        })
    });
    match task.await {
        Ok(committed) => Ok(committed?),
        Err(e) => Err(ServiceError::internal(format!(
            "the launch's task failed: {e}"
        ))),
    }
}

/// A place for a launch's one job on an agent that may run it now, unless a blackout window
/// is in force (at `not_before`, for a launch written ahead of the moment it commits at):
/// then the job is left to the round, which tells whether the window holds it and says so in
/// its pending reason.
async fn reserve(
    core: &Core,
    server: &crate::model::Server,
    read: Option<&[crate::model::Blackout]>,
    not_before: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<crate::scheduler::Reservation>> {
    let in_force = |windows: &[crate::model::Blackout]| {
        let now = not_before.map_or_else(chrono::Utc::now, |t| t.max(chrono::Utc::now()));
        windows
            .iter()
            .filter_map(crate::schedule::window)
            .any(|w| w.active_until(now).is_some())
    };
    if let Some(windows) = read {
        if in_force(windows) {
            return Ok(None);
        }
        return Ok(core.scheduler.reserve(server).await);
    }
    // The place is set aside while the windows are read; one not taken goes back on drop.
    let (windows, reservation) = tokio::join!(
        core.store.enabled_blackouts(),
        core.scheduler.reserve(server)
    );
    let windows = windows?;
    Ok(reservation.filter(|_| !in_force(&windows)))
}

/// Views of launched jobs, as a launch answers.
pub async fn launched(core: &Core, jobs: &[Job]) -> Result<LaunchResponse> {
    let mut names = Names::default();
    let mut views = Vec::with_capacity(jobs.len());
    for j in jobs {
        views.push(names.view(&core.store, j).await?);
    }
    let run = match jobs.first().and_then(|j| j.run_id) {
        Some(r) => Some(core.store.get_run(r).await?.run_id.to_string()),
        None => None,
    };
    Ok(LaunchResponse { jobs: views, run })
}

/// The servers a launch targets: named, or every active one a selector matches.
async fn launched_servers(core: &Core, req: &LaunchRequest) -> Result<Vec<crate::model::Server>> {
    Ok(match (&req.servers, &req.filter) {
        (Some(list), None) if !list.is_empty() => {
            let mut out = Vec::with_capacity(list.len());
            for s in list {
                out.push(match s {
                    IdOrName::Id(id) => {
                        core.store
                            .get_server(ServerId(
                                i32::try_from(*id)
                                    .map_err(|_| ServiceError::not_found(format!("server {id}")))?,
                            ))
                            .await?
                    }
                    IdOrName::Name(n) => core.store.get_server_by_hostname(n).await?,
                });
            }
            out
        }
        (None, Some(sel)) => {
            let f = ServerFilter {
                active: Some(true),
                environment: sel.environment.clone(),
                tags: sel.tags.clone().into_iter().collect(),
            };
            let page = core
                .store
                .list_servers(&f, Paging::new(MAX_LAUNCH, 0))
                .await?;
            if page.total > MAX_LAUNCH {
                return Err(ServiceError::unprocessable(format!(
                    "the filter matches {} servers; one launch takes at most {MAX_LAUNCH}",
                    page.total
                )));
            }
            if page.items.is_empty() {
                return Err(ServiceError::unprocessable(
                    "no active server matches the filter",
                ));
            }
            page.items
        }
        _ => return Err(ServiceError::unprocessable(
            "name the servers (\"servers\": [hostname or id, …]) or give a \"filter\", not both",
        )),
    })
}

/// The credentials a launch names for its jobs: an admin's choice (an operator launches with
/// what is attached to the servers and the project), at most one of each use.
async fn launch_credentials(
    core: &Core,
    launcher: &Launcher,
    req: &LaunchRequest,
) -> Result<Vec<crate::model::CredentialId>> {
    if req.credentials.is_empty() {
        return Ok(Vec::new());
    }
    if launcher.role != Role::Admin {
        return Err(ServiceError::forbidden(
            "only admins name credentials at launch; jobs use the credentials attached to their servers and project",
        ));
    }
    if req.credentials.len() > 16 {
        return Err(ServiceError::unprocessable(
            "credentials: at most 16 at one launch",
        ));
    }
    let mut found = Vec::with_capacity(req.credentials.len());
    for name in &req.credentials {
        found.push(super::credentials::by_name(core, name, "credentials").await?);
    }
    crate::credential::check_launch_set(&found)?;
    Ok(found.iter().map(|c| c.id).collect())
}

/// The playbook a launch names — by id or name, or by a project and a path in its tree — and
/// the revision its jobs run: its project's current one, recorded now so that a later sync
/// does not change what they run.
async fn launched_playbook(
    core: &Core,
    req: &LaunchRequest,
) -> Result<(Playbook, Option<RevisionId>)> {
    let playbook = match (&req.playbook, &req.project, &req.playbook_path) {
        (Some(p), None, None) => match p {
            IdOrName::Id(id) => {
                core.store
                    .get_playbook(PlaybookId(
                        i32::try_from(*id)
                            .map_err(|_| ServiceError::not_found(format!("playbook {id}")))?,
                    ))
                    .await?
            }
            IdOrName::Name(n) => core.store.get_playbook_by_name(n).await?,
        },
        (None, Some(project), Some(path)) => {
            let project = super::projects::by_id_or_name(&core.store, project).await?;
            match core.store.project_playbook(project.id, path).await {
                Ok(pb) => pb,
                Err(crate::store::StoreError::NotFound(_)) => {
                    return Err(ServiceError::not_found(format!(
                        "project {} has no playbook {path:?} (see its playbooks with `outpost project show {}`)",
                        project.name, project.name
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        _ => {
            return Err(ServiceError::unprocessable(
                "name the playbook one way: \"playbook\" (its id or name), or \"project\" and \"playbook_path\" (a path in the project's tree)",
            ))
        }
    };
    let revision_id = match playbook.project_id {
        None => None,
        Some(p) => {
            let project = core.store.get_project(p).await?;
            Some(project.current_revision_id.ok_or_else(|| {
                ServiceError::unprocessable(format!(
                    "project {} has no revision yet: sync it first",
                    project.name
                ))
            })?)
        }
    };
    Ok((playbook, revision_id))
}
