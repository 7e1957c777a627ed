//! store::launch — a launch's rows (its run, its jobs, their secrets and credentials, the
//! audit records) written in one transaction. [`Store::prepare_launch`] checks what the rows
//! name and renders them; [`insert_launch!`] writes them through a transaction the caller
//! holds, so that the lifecycle can claim a job in the same commit (see
//! [`crate::lifecycle::Lifecycle::launch`]).

use std::collections::HashSet;

use chrono::NaiveDateTime;

use super::audit::{insert_audits, Actor};
use super::jobs::{LaunchAudit, NewJob};
use super::runs::NewRun;
use super::{json_object_text, now, on_pool, Result, Store, StoreError, WritePool};
use crate::model::{Job, JobId, Playbook, RunId, Server};

/// A launch checked and rendered for its insert: nothing in it is read again inside the
/// transaction.
pub struct PreparedLaunch<'a> {
    pub(crate) jobs: Vec<PreparedJob<'a>>,
    pub(crate) run: Option<&'a NewRun>,
    pub(crate) rollout: Option<String>,
    pub(crate) ts: NaiveDateTime,
}

pub(crate) struct PreparedJob<'a> {
    pub(crate) job: &'a NewJob,
    pub(crate) vars: Option<String>,
    pub(crate) options: Option<String>,
    pub(crate) uuid: String,
}

/// Rows a launch's caller has read already (each server in its job's place), checked by
/// [`Store::prepare_launch`] rather than read again.
#[derive(Default, Clone, Copy)]
pub struct Known<'a> {
    pub playbook: Option<&'a Playbook>,
    pub servers: &'a [Server],
}

/// A launch's one job, claimed as it is inserted (see [`crate::lifecycle::Lifecycle::launch`]).
pub struct Assign<'a> {
    pub agent: crate::model::AgentId,
    pub dispatch_id: &'a str,
}

/// Writes a [`PreparedLaunch`] through an executor of either backend (inside the caller's
/// transaction); evaluates to the run's id and the jobs' ids, in the launch's order. Its audit
/// records are added to `$audits` (a `Vec<NewAudit>`) for the caller to write with the
/// transaction's others ([`crate::store::audit::insert_audits!`]). `$assign`, when given,
/// claims the first job as it is inserted (the caller decided it under the server's lock).
macro_rules! insert_launch {
    ($exec:expr, $prepared:expr, $actor:expr, $audit:expr, $audits:expr, $assign:expr) => {{
        let prepared: &$crate::store::launch::PreparedLaunch<'_> = $prepared;
        let actor: &$crate::store::audit::Actor = $actor;
        let audit: Option<&$crate::store::jobs::LaunchAudit> = $audit;
        let assign: Option<&$crate::store::launch::Assign<'_>> = $assign;
        async {
            use $crate::store::audit::NewAudit;
            use $crate::store::InsertedId;
            use $crate::store::StoreError;
            let ts = prepared.ts;
            let run_id = match prepared.run {
                Some(r) => Some($crate::store::runs::insert_run!(&mut *$exec, r, prepared.rollout, ts, actor, $audits)?),
                None => None,
            };
            let mut ids = Vec::with_capacity(prepared.jobs.len());
            for (i, p) in prepared.jobs.iter().enumerate() {
                let job = p.job;
                let claim = assign.filter(|_| i == 0);
                let res = sqlx::query(
                    "INSERT INTO jobs (job_id, playbook_id, server_id, user_id, status, extra_vars, extra_vars_templated, run_options, revision_id, template_id, time_limit_secs, schedule_id, run_id, wave, pending_reason, created_at, agent_id, assigned_at, celery_task_id) \
                     VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&p.uuid).bind(job.playbook_id).bind(job.server_id).bind(job.user_id).bind(&p.vars).bind(job.extra_vars_templated).bind(&p.options).bind(job.revision_id).bind(job.template_id).bind(job.time_limit_secs).bind(job.schedule_id)
                .bind(run_id).bind(i32::try_from(job.wave).unwrap_or(i32::MAX))
                .bind(if claim.is_some() { None } else { $crate::rollout::queued_reason(job.wave) }).bind(ts)
                .bind(claim.map(|c| c.agent)).bind(claim.map(|_| ts)).bind(claim.map(|c| c.dispatch_id))
                .execute(&mut *$exec).await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() =>
                        StoreError::NotFound(format!("user {}", job.user_id)),
                    _ => StoreError::Database(e),
                })?;
                let id = res.inserted_id() as i32;
                if let Some(sv) = &job.secret_vars {
                    sqlx::query("INSERT INTO job_secret_vars (job_id, names, key_id, sealed) VALUES (?, ?, ?, ?)")
                        .bind(id).bind(serde_json::to_string(&sv.names).unwrap_or_else(|_| "[]".into()))
                        .bind(&sv.key_id).bind(&sv.sealed).execute(&mut *$exec).await?;
                }
                for c in &job.credential_ids {
                    sqlx::query("INSERT INTO job_credentials (job_id, credential_id) VALUES (?, ?)")
                        .bind(id).bind(c).execute(&mut *$exec).await
                        .map_err(|e| match &e {
                            sqlx::Error::Database(db) if db.is_foreign_key_violation() =>
                                StoreError::NotFound(format!("credential {c}")),
                            _ => StoreError::Database(e),
                        })?;
                }
                let credentials: Vec<i32> = job.credential_ids.iter().map(|c| c.0).collect();
                $audits.push(NewAudit {
                    actor, action: "LAUNCH", resource_type: "job", resource_id: Some(id),
                    details: Some(serde_json::json!({"job_id": p.uuid, "playbook_id": job.playbook_id, "server_id": job.server_id, "revision_id": job.revision_id, "credential_ids": credentials, "template_id": job.template_id, "run_id": run_id, "wave": job.wave})),
                });
                ids.push($crate::model::JobId(id));
            }
            if let Some(l) = audit {
                let mut details = l.details.clone();
                if let Some(o) = details.as_object_mut() {
                    o.insert("jobs".into(), prepared.jobs.iter().map(|p| serde_json::Value::String(p.uuid.clone())).collect());
                }
                $audits.push(NewAudit {
                    actor, action: l.action, resource_type: l.resource_type, resource_id: l.resource_id,
                    details: Some(details),
                });
            }
            Ok::<(Option<$crate::model::RunId>, Vec<$crate::model::JobId>), StoreError>((run_id, ids))
        }.await
    }};
}
pub(crate) use insert_launch;

impl Store {
    /// Checks what a launch's jobs name (an active playbook, active servers, JSON objects) and
    /// renders them for [`insert_launch!`]. Each playbook and server is read once, however many
    /// jobs name it.
    pub async fn prepare_launch<'a>(
        &self,
        new: &'a [NewJob],
        run: Option<&'a NewRun>,
        known: Known<'_>,
    ) -> Result<PreparedLaunch<'a>> {
        let mut playbooks = HashSet::new();
        let mut jobs = Vec::with_capacity(new.len());
        for (i, job) in new.iter().enumerate() {
            let vars = json_object_text("extra_vars", job.extra_vars.as_ref())?;
            if !playbooks.contains(&job.playbook_id) {
                let pb = match known.playbook.filter(|p| p.id == job.playbook_id) {
                    Some(p) => p.clone(),
                    None => self.get_playbook(job.playbook_id).await?,
                };
                if !pb.is_active {
                    return Err(StoreError::invalid(
                        "playbook",
                        format!("playbook {} is deactivated", pb.name),
                    ));
                }
                playbooks.insert(job.playbook_id);
            }
            let server = match known.servers.get(i).filter(|s| s.id == job.server_id) {
                Some(s) => s.clone(),
                None => self.get_server(job.server_id).await?,
            };
            if !server.is_active {
                return Err(StoreError::invalid(
                    "server",
                    format!("server {} is deactivated", server.hostname),
                ));
            }
            let options = json_object_text("run_options", job.run_options.as_ref())?;
            jobs.push(PreparedJob {
                job,
                vars,
                options,
                uuid: job.job_uuid.to_string(),
            });
        }
        let rollout = match run {
            Some(r) => r.rollout_text()?,
            None => None,
        };
        Ok(PreparedLaunch {
            jobs,
            run,
            rollout,
            ts: now(),
        })
    }

    /// Creates a pending job for each `(server)` of one playbook launch, in one transaction.
    pub async fn create_jobs(&self, new: &[NewJob], actor: &Actor) -> Result<Vec<Job>> {
        self.create_jobs_audited(new, actor, None, None)
            .await
            .map(|(_, jobs)| jobs)
    }

    /// [`Store::create_jobs`], with the run grouping them (when given) and one more audit
    /// record (the launch of a template, which names the template and its answers once), all
    /// in the same transaction.
    pub async fn create_jobs_audited(
        &self,
        new: &[NewJob],
        actor: &Actor,
        launch: Option<&LaunchAudit>,
        run: Option<&NewRun>,
    ) -> Result<(Option<RunId>, Vec<Job>)> {
        let prepared = self.prepare_launch(new, run, Known::default()).await?;
        let (run_id, ids) = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut audits = Vec::new();
            let made = insert_launch!(&mut *tx, &prepared, actor, launch, &mut audits, None)?;
            insert_audits!(&mut *tx, &audits)?;
            tx.commit().await?;
            made
        });
        Ok((run_id, self.jobs_by_ids(&ids).await?))
    }

    /// Jobs by id, in the order given.
    pub async fn jobs_by_ids(&self, ids: &[JobId]) -> Result<Vec<Job>> {
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            jobs.push(self.get_job(*id).await?);
        }
        Ok(jobs)
    }
}
