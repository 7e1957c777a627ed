//! store::jobs — jobs and their state machine. Every change of state is one conditional
//! UPDATE that names the state it leaves, so a job only moves forward (pending → running →
//! success/failed/cancelled, or pending → cancelled) and two controllers sharing one database
//! can never both claim it.

use serde_json::{json, Value};

use super::audit::{insert_audit, Actor, NewAudit};
use super::tickets::{insert_ticket, NewTicket};
use super::{json_object_text, now, on_pool, page, InsertedId, Result, Store, StoreError};
use crate::model::{AgentId, Job, JobId, JobStatus, Page, Paging, PlaybookId, ServerId, UserId};

const COLUMNS: &str = "id, job_id, playbook_id, server_id, user_id, status, celery_task_id, \
     extra_vars, error_message, started_at, completed_at, created_at, agent_id, assigned_at, \
     cancel_requested_at, exit_code, pending_reason";

#[derive(Debug, Clone)]
pub struct NewJob {
    pub playbook_id: PlaybookId,
    pub server_id: ServerId,
    pub user_id: UserId,
    pub extra_vars: Option<Value>,
}

/// Filters for [`Store::list_jobs`]; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub user_id: Option<UserId>,
    pub server_id: Option<ServerId>,
    pub playbook_id: Option<PlaybookId>,
    pub agent_id: Option<AgentId>,
}

/// How a job ended, as its agent (or the controller, for a lost agent) reports it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub error_message: Option<String>,
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelResult {
    /// The job had not reached an agent: it is cancelled now.
    Cancelled,
    /// The job is with an agent: the request is recorded for its session to deliver.
    Requested,
}

impl Store {
    /// Creates a pending job for each `(server)` of one playbook launch, in one transaction.
    pub async fn create_jobs(&self, new: &[NewJob], actor: &Actor) -> Result<Vec<Job>> {
        let mut prepared = Vec::with_capacity(new.len());
        for job in new {
            let vars = json_object_text("extra_vars", job.extra_vars.as_ref())?;
            let pb = self.get_playbook(job.playbook_id).await?;
            if !pb.is_active {
                return Err(StoreError::invalid(
                    "playbook",
                    format!("playbook {} is deactivated", pb.name),
                ));
            }
            let server = self.get_server(job.server_id).await?;
            if !server.is_active {
                return Err(StoreError::invalid(
                    "server",
                    format!("server {} is deactivated", server.hostname),
                ));
            }
            prepared.push((job, vars, uuid::Uuid::new_v4().to_string()));
        }
        let ts = now();
        let ids = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let mut ids = Vec::with_capacity(prepared.len());
            for (job, vars, uuid) in &prepared {
                let res = sqlx::query(
                    "INSERT INTO jobs (job_id, playbook_id, server_id, user_id, status, extra_vars, created_at) \
                     VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                )
                .bind(uuid).bind(job.playbook_id).bind(job.server_id).bind(job.user_id).bind(vars).bind(ts)
                .execute(&mut *tx).await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() =>
                        StoreError::NotFound(format!("user {}", job.user_id)),
                    _ => StoreError::Database(e),
                })?;
                let id = res.inserted_id() as i32;
                insert_audit!(&mut *tx, &NewAudit {
                    actor, action: "LAUNCH", resource_type: "job", resource_id: Some(id),
                    details: Some(json!({"job_id": uuid, "playbook_id": job.playbook_id, "server_id": job.server_id})),
                })?;
                ids.push(JobId(id));
            }
            tx.commit().await?;
            ids
        });
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            jobs.push(self.get_job(id).await?);
        }
        Ok(jobs)
    }

    pub async fn get_job(&self, id: JobId) -> Result<Job> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?");
        let row =
            on_pool!(self, p => sqlx::query_as::<_, Job>(&sql).bind(id).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("job {id}")))
    }

    pub async fn get_job_by_uuid(&self, uuid: &str) -> Result<Job> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE job_id = ?");
        let row =
            on_pool!(self, p => sqlx::query_as::<_, Job>(&sql).bind(uuid).fetch_optional(p).await?);
        row.ok_or_else(|| StoreError::NotFound(format!("job {uuid}")))
    }

    /// Newest first (the seed's `(status, created_at)` pattern).
    pub async fn list_jobs(&self, f: &JobFilter, paging: Paging) -> Result<Page<Job>> {
        let status = f.status.map(JobStatus::as_str);
        Ok(
            page!(self, Job, select: COLUMNS, from: "jobs", order: "created_at DESC, id DESC", paging: paging,
            filters: [("status", status), ("user_id", f.user_id), ("server_id", f.server_id),
                      ("playbook_id", f.playbook_id), ("agent_id", f.agent_id)]),
        )
    }

    /// Pending jobs no agent holds, oldest first: the scheduler's queue.
    pub async fn unassigned_jobs(&self, limit: i64) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE status = 'pending' AND agent_id IS NULL \
             AND cancel_requested_at IS NULL ORDER BY created_at, id LIMIT ?"
        );
        Ok(on_pool!(self, p => sqlx::query_as::<_, Job>(&sql).bind(limit).fetch_all(p).await?))
    }

    /// Claims a pending, unassigned job for an agent under a fresh dispatch id. Returns false
    /// when another scheduler got there first.
    pub async fn claim_job(&self, id: JobId, agent: AgentId, dispatch_id: &str) -> Result<bool> {
        let ts = now();
        let claimed = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let res = sqlx::query(
                "UPDATE jobs SET agent_id = ?, assigned_at = ?, celery_task_id = ?, pending_reason = NULL \
                 WHERE id = ? AND status = 'pending' AND agent_id IS NULL AND cancel_requested_at IS NULL",
            )
            .bind(agent).bind(ts).bind(dispatch_id).bind(id)
            .execute(&mut *tx).await?;
            let claimed = res.rows_affected() == 1;
            if claimed {
                insert_audit!(&mut *tx, &NewAudit {
                    actor: &Actor::system(), action: "DISPATCH", resource_type: "job", resource_id: Some(id.0),
                    details: Some(json!({"agent_id": agent, "dispatch_id": dispatch_id})),
                })?;
            }
            tx.commit().await?;
            claimed
        });
        Ok(claimed)
    }

    /// Hands an assigned-but-not-started job back to the queue (the agent rejected it or never
    /// got it). Only the attempt named by `dispatch_id` is released.
    pub async fn release_job(&self, id: JobId, dispatch_id: &str, reason: &str) -> Result<bool> {
        let released = on_pool!(self, p => {
            let res = sqlx::query(
                "UPDATE jobs SET agent_id = NULL, assigned_at = NULL, pending_reason = ? \
                 WHERE id = ? AND status = 'pending' AND celery_task_id = ?",
            )
            .bind(truncate(reason, 255)).bind(id).bind(dispatch_id)
            .execute(p).await?;
            res.rows_affected() == 1
        });
        Ok(released)
    }

    /// Notes why a job is still waiting (no agent can reach its server, all busy…).
    pub async fn set_pending_reason(&self, id: JobId, reason: Option<&str>) -> Result<()> {
        on_pool!(self, p => {
            sqlx::query("UPDATE jobs SET pending_reason = ? WHERE id = ? AND status = 'pending'")
                .bind(reason.map(|r| truncate(r, 255))).bind(id).execute(p).await?;
        });
        Ok(())
    }

    /// pending → running, for the attempt named by `dispatch_id`.
    pub async fn mark_job_running(&self, id: JobId, dispatch_id: &str) -> Result<bool> {
        let ts = now();
        let moved = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let res = sqlx::query(
                "UPDATE jobs SET status = 'running', started_at = ? \
                 WHERE id = ? AND status = 'pending' AND celery_task_id = ?",
            )
            .bind(ts).bind(id).bind(dispatch_id).execute(&mut *tx).await?;
            let moved = res.rows_affected() == 1;
            if moved {
                insert_audit!(&mut *tx, &NewAudit {
                    actor: &Actor::system(), action: "START", resource_type: "job", resource_id: Some(id.0),
                    details: Some(json!({"dispatch_id": dispatch_id})),
                })?;
            }
            tx.commit().await?;
            moved
        });
        Ok(moved)
    }

    /// Moves a job to its final state. success needs a running job; failed and cancelled may
    /// also end a pending one. Returns false (and changes nothing) when the job is already
    /// final or the move is not allowed.
    pub async fn finish_job(&self, id: JobId, outcome: &Outcome, actor: &Actor) -> Result<bool> {
        self.finish_job_with_ticket(id, outcome, actor, None).await
    }

    /// [`Store::finish_job`], opening `ticket` in the same transaction when the move happens:
    /// a failed job and its ticket are committed together or not at all.
    pub async fn finish_job_with_ticket(
        &self,
        id: JobId,
        outcome: &Outcome,
        actor: &Actor,
        ticket: Option<&NewTicket>,
    ) -> Result<bool> {
        if let Some(t) = ticket {
            t.check()?;
        }
        let from: &str = match outcome.status {
            JobStatus::Success => "('running')",
            JobStatus::Failed | JobStatus::Cancelled => "('pending', 'running')",
            JobStatus::Pending | JobStatus::Running => {
                return Err(StoreError::invalid(
                    "status",
                    format!("{} is not a final status", outcome.status),
                ))
            }
        };
        let sql = format!(
            "UPDATE jobs SET status = ?, exit_code = ?, error_message = ?, completed_at = ? \
             WHERE id = ? AND status IN {from}"
        );
        let ts = now();
        let moved = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let res = sqlx::query(&sql)
                .bind(outcome.status.as_str()).bind(outcome.exit_code).bind(&outcome.error_message)
                .bind(ts).bind(id).execute(&mut *tx).await?;
            let moved = res.rows_affected() == 1;
            if moved {
                insert_audit!(&mut *tx, &NewAudit {
                    actor, action: "FINISH", resource_type: "job", resource_id: Some(id.0),
                    details: Some(json!({"status": outcome.status, "exit_code": outcome.exit_code})),
                })?;
                if let Some(t) = ticket {
                    insert_ticket!(&mut *tx, t, &Actor::system())?;
                }
            }
            tx.commit().await?;
            moved
        });
        Ok(moved)
    }

    /// Cancels a job that no agent holds yet at once; otherwise records the request for the
    /// session that holds the agent to deliver.
    pub async fn request_cancel(&self, id: JobId, actor: &Actor) -> Result<CancelResult> {
        let ts = now();
        let result = on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let direct = sqlx::query(
                "UPDATE jobs SET status = 'cancelled', cancel_requested_at = ?, completed_at = ?, \
                 error_message = 'cancelled before it started' \
                 WHERE id = ? AND status = 'pending' AND agent_id IS NULL",
            )
            .bind(ts).bind(ts).bind(id).execute(&mut *tx).await?;
            let result = if direct.rows_affected() == 1 {
                Some(CancelResult::Cancelled)
            } else {
                let req = sqlx::query(
                    "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?) \
                     WHERE id = ? AND status IN ('pending', 'running')",
                )
                .bind(ts).bind(id).execute(&mut *tx).await?;
                (req.rows_affected() == 1).then_some(CancelResult::Requested)
            };
            if let Some(r) = result {
                insert_audit!(&mut *tx, &NewAudit {
                    actor, action: "CANCEL", resource_type: "job", resource_id: Some(id.0),
                    details: Some(json!({"immediate": r == CancelResult::Cancelled})),
                })?;
            }
            tx.commit().await?;
            result
        });
        match result {
            Some(r) => Ok(r),
            None => {
                let job = self.get_job(id).await?;
                Err(StoreError::WrongState {
                    job: job.job_id,
                    status: job.status.to_string(),
                    action: "cancel it",
                })
            }
        }
    }
}

impl Store {
    /// (job uuid, agent) of every unfinished job with a cancel request and an agent.
    pub async fn cancel_requested_jobs(&self) -> Result<Vec<(String, AgentId)>> {
        Ok(on_pool!(self, p => sqlx::query_as::<_, (String, AgentId)>(
            "SELECT job_id, agent_id FROM jobs WHERE status IN ('pending', 'running') \
             AND cancel_requested_at IS NOT NULL AND agent_id IS NOT NULL",
        ).fetch_all(p).await?))
    }

    /// How many jobs each server has with an agent (assigned or running).
    pub async fn active_jobs_per_server(&self) -> Result<std::collections::HashMap<ServerId, i64>> {
        let rows: Vec<(ServerId, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT server_id, COUNT(*) FROM jobs WHERE status IN ('pending', 'running') \
             AND agent_id IS NOT NULL GROUP BY server_id",
        ).fetch_all(p).await?);
        Ok(rows.into_iter().collect())
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}
