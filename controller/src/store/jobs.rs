//! store::jobs — launching jobs and reading them. Their changes of state are not here: the
//! [`crate::lifecycle`] module owns every transition.

use std::collections::HashMap;

use serde_json::Value;

use super::listing::{self, keyset_page};
use super::{on_pool, Result, Store, StoreError};
use crate::model::{
    AgentId, Cursor, Job, JobId, JobStatus, JobUuid, Page, Paging, PlaybookId, ProjectId,
    RevisionId, ServerId, TemplateId, UserId,
};

/// The states of a job that is not over ([`crate::lifecycle::machine::ACTIVE`]), as an SQL list.
pub const ACTIVE_SQL: &str = "('pending', 'running')";

/// The jobs waiting for the scheduler's round: pending, with no agent and no cancel request,
/// and in a wave of their run that was released (see [`Store::unassigned_jobs`]).
pub(crate) const UNASSIGNED_SQL: &str = "status = 'pending' AND agent_id IS NULL \
     AND cancel_requested_at IS NULL \
     AND (run_id IS NULL OR wave = 0 OR wave <= (SELECT r.current_wave FROM runs r WHERE r.id = jobs.run_id))";

pub(crate) const COLUMNS: &str = "id, job_id, playbook_id, server_id, user_id, status, celery_task_id, \
     extra_vars, error_message, started_at, completed_at, created_at, agent_id, assigned_at, \
     cancel_requested_at, exit_code, pending_reason, run_options, extra_vars_templated, revision_id, template_id, time_limit_secs, \
     run_id, wave, unreachable";

#[derive(Debug, Clone)]
pub struct NewJob {
    pub playbook_id: PlaybookId,
    pub server_id: ServerId,
    pub user_id: UserId,
    pub extra_vars: Option<Value>,
    /// Whether ansible may evaluate templates in `extra_vars` (an admin's launch with
    /// `admin_launch_vars_templates` on); otherwise they reach ansible as data.
    pub extra_vars_templated: bool,
    /// ansible-playbook's run options (a JSON object), if any.
    pub run_options: Option<Value>,
    /// The project revision the job runs (its project's current one at launch).
    pub revision_id: Option<RevisionId>,
    /// Credentials named at launch, for this job only.
    pub credential_ids: Vec<crate::model::CredentialId>,
    /// Its public handle, chosen before the insert so that secrets can be sealed to it.
    pub job_uuid: JobUuid,
    /// The template it is launched from.
    pub template_id: Option<TemplateId>,
    /// Seconds it may run (the controller's default when `None`).
    pub time_limit_secs: Option<i32>,
    /// Secret survey answers, sealed for `job_uuid` (see [`crate::survey`]).
    pub secret_vars: Option<SealedVars>,
    /// The schedule whose run launched it (blackouts hold such jobs back).
    pub schedule_id: Option<crate::model::ScheduleId>,
    /// Its wave in its run's rollout (0: the first).
    pub wave: u32,
}

/// A job's secret answers as stored: the names may be shown, the values are sealed.
#[derive(Clone)]
pub struct SealedVars {
    pub names: Vec<String>,
    pub key_id: String,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedVars")
            .field("names", &self.names)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// An audit record written with a launch's jobs, in their transaction (a template launch).
#[derive(Debug, Clone)]
pub struct LaunchAudit {
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: Option<i32>,
    pub details: Value,
}

/// A job as a list shows it: the row and the names of what it refers to, each `None` when
/// the row it names is gone (or the job has none).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedJob {
    #[sqlx(flatten)]
    pub job: Job,
    pub playbook_name: Option<String>,
    pub server_hostname: Option<String>,
    pub agent_name: Option<String>,
    pub template_name: Option<String>,
    pub revision_project_id: Option<ProjectId>,
    pub revision_project_name: Option<String>,
    pub revision_digest: Option<String>,
    pub revision_commit: Option<String>,
    pub revision_size_bytes: Option<i64>,
    pub revision_entries: Option<i32>,
    pub revision_created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Filters for [`Store::list_jobs`]; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub user_id: Option<UserId>,
    pub server_id: Option<ServerId>,
    pub playbook_id: Option<PlaybookId>,
    pub agent_id: Option<AgentId>,
    /// Created at or after.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Created before.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl Store {
    /// Every job of a run, in wave order.
    pub async fn jobs_of_run(&self, run: crate::model::RunId) -> Result<Vec<Job>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE run_id = ? ORDER BY wave, id");
        Ok(on_pool!(self, p => sqlx::query_as::<_, Job>(&sql).bind(run).fetch_all(p).await?))
    }

    pub async fn get_job(&self, id: JobId) -> Result<Job> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?");
        let row =
            on_pool!(self, p => sqlx::query_as::<_, Job>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("job {id}")))
    }

    pub async fn get_job_by_uuid(&self, uuid: JobUuid) -> Result<Job> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE job_id = ?");
        let row =
            on_pool!(self, p => sqlx::query_as::<_, Job>(&sql).bind(uuid).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("job {uuid}")))
    }

    /// A job by its UUID and whether its log was archived, in one query (a log page asks
    /// both before anything else).
    pub async fn get_job_for_log(&self, uuid: JobUuid) -> Result<(Job, bool)> {
        use sqlx::{FromRow, Row};
        let sql = format!(
            "SELECT {COLUMNS}, EXISTS (SELECT 1 FROM job_log_archives a WHERE a.job_id = jobs.id) \
             AS log_archived FROM jobs WHERE job_id = ?"
        );
        let found = on_pool!(self, p => match sqlx::query(&sql).bind(uuid).fetch_optional(p).await? {
            Some(row) => Some((Job::from_row(&row)?, row.try_get::<i64, _>("log_archived")? != 0)),
            None => None,
        });
        found.ok_or_else(|| StoreError::NotFound(format!("job {uuid}")))
    }

    /// Newest first (the seed's `(status, created_at)` pattern), paged by offset or by
    /// cursor, with a bounded count (see [`super::listing`]).
    pub async fn list_jobs(&self, f: &JobFilter, paging: Paging) -> Result<Page<Job>> {
        let page = self.list_named_jobs(f, paging).await?;
        Ok(Page {
            items: page.items.into_iter().map(|l| l.job).collect(),
            total: page.total,
            total_exact: page.total_exact,
            limit: page.limit,
            offset: page.offset,
            next: page.next,
        })
    }

    /// [`Store::list_jobs`] with the names a job view shows, joined in the same statement so
    /// that a page costs one query however many playbooks, servers and agents it names.
    pub async fn list_named_jobs(&self, f: &JobFilter, paging: Paging) -> Result<Page<ListedJob>> {
        let status = f.status.map(JobStatus::as_str);
        let since = f.since.map(|t| t.naive_utc());
        let until = f.until.map(|t| t.naive_utc());
        let select = format!(
            "{}, p.name AS playbook_name, s.hostname AS server_hostname, a.name AS agent_name, \
             t.name AS template_name, r.project_id AS revision_project_id, \
             pr.name AS revision_project_name, r.digest AS revision_digest, \
             r.git_commit AS revision_commit, r.size_bytes AS revision_size_bytes, \
             r.entries AS revision_entries, r.created_at AS revision_created_at",
            listing::qualified("j", COLUMNS)
        );
        Ok(keyset_page!(self, ListedJob, select: select,
            from: "jobs j LEFT JOIN playbooks p ON p.id = j.playbook_id \
                   LEFT JOIN servers s ON s.id = j.server_id LEFT JOIN agents a ON a.id = j.agent_id \
                   LEFT JOIN job_templates t ON t.id = j.template_id \
                   LEFT JOIN project_revisions r ON r.id = j.revision_id \
                   LEFT JOIN projects pr ON pr.id = r.project_id",
            count_from: "jobs j", key: ("j.created_at", "j.id"),
            key_of: |l: &ListedJob| Cursor::new(l.job.created_at.naive_utc(), i64::from(l.job.id.0)),
            paging: paging,
            filters: [("j.status", status), ("j.user_id", f.user_id), ("j.server_id", f.server_id),
                      ("j.playbook_id", f.playbook_id), ("j.agent_id", f.agent_id)],
            ranges: [("j.created_at", ">=", since), ("j.created_at", "<", until)]))
    }

    /// Pending jobs no agent holds, oldest first: the scheduler's queue. Jobs of a run's
    /// waves not released yet are not in it (their pending reason says which wave they wait
    /// for), so that a large rollout does not fill the queue with jobs that may not start.
    pub async fn unassigned_jobs(&self, limit: i64) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE {UNASSIGNED_SQL} ORDER BY created_at, id LIMIT ?"
        );
        Ok(on_pool!(self, p => sqlx::query_as::<_, Job>(&sql).bind(limit).fetch_all(p).await?))
    }

    /// Notes why a job is still waiting (no agent can reach its server, all busy…).
    pub async fn set_pending_reason(&self, id: JobId, reason: Option<&str>) -> Result<()> {
        on_pool!(self, p => {
            sqlx::query("UPDATE jobs SET pending_reason = ? WHERE id = ? AND status = 'pending'")
                .bind(reason.map(|r| crate::text::fit_chars(r, crate::text::VARCHAR_255))).bind(id).execute(p).await?;
        });
        Ok(())
    }
}

impl Store {
    /// A job's sealed secret answers, if it has any.
    pub async fn job_secret_vars(&self, id: JobId) -> Result<Option<SealedVars>> {
        let row: Option<(sqlx::types::Json<Vec<String>>, String, Vec<u8>)> = on_pool!(self, p => sqlx::query_as(
            "SELECT names, key_id, sealed FROM job_secret_vars WHERE job_id = ?")
            .bind(id).fetch_optional(p).await?);
        Ok(row.map(|(names, key_id, sealed)| SealedVars {
            names: names.0,
            key_id,
            sealed,
        }))
    }

    /// The secret answers of each of `jobs` that has any, in one query.
    pub async fn secret_vars_of_jobs(&self, jobs: &[JobId]) -> Result<HashMap<JobId, SealedVars>> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        type Row = (JobId, sqlx::types::Json<Vec<String>>, String, Vec<u8>);
        let rows: Vec<Row> = on_pool!(self, p => {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT job_id, names, key_id, sealed FROM job_secret_vars WHERE job_id");
            super::push_in(&mut qb, jobs);
            // As a batch's credentials: one job's read is prepared once, a batch's is not.
            qb.build_query_as().persistent(jobs.len() == 1).fetch_all(p).await?
        });
        Ok(rows
            .into_iter()
            .map(|(job, names, key_id, sealed)| {
                let vars = SealedVars {
                    names: names.0,
                    key_id,
                    sealed,
                };
                (job, vars)
            })
            .collect())
    }

    /// (job uuid, agent) of every unfinished job with a cancel request and an agent.
    pub async fn cancel_requested_jobs(&self) -> Result<Vec<(String, AgentId)>> {
        let sql = format!(
            "SELECT job_id, agent_id FROM jobs WHERE status IN {ACTIVE_SQL} \
             AND cancel_requested_at IS NOT NULL AND agent_id IS NOT NULL"
        );
        Ok(on_pool!(self, p => sqlx::query_as::<_, (String, AgentId)>(&sql).fetch_all(p).await?))
    }

    /// Every job an agent holds (assigned or running), however many.
    pub async fn active_jobs_of_agent(&self, agent: AgentId) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE agent_id = ? AND status IN {ACTIVE_SQL} ORDER BY id"
        );
        Ok(on_pool!(self, p => sqlx::query_as::<_, Job>(&sql).bind(agent).fetch_all(p).await?))
    }

    /// How many jobs each server has with an agent (assigned or running).
    pub async fn active_jobs_per_server(&self) -> Result<HashMap<ServerId, i64>> {
        let sql = format!(
            "SELECT server_id, COUNT(*) FROM jobs WHERE status IN {ACTIVE_SQL} \
             AND agent_id IS NOT NULL GROUP BY server_id"
        );
        let rows: Vec<(ServerId, i64)> =
            on_pool!(self, p => sqlx::query_as(&sql).fetch_all(p).await?);
        Ok(rows.into_iter().collect())
    }
}
