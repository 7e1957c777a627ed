//! Per-task results as callers read them: a job's recap and task rows, filtered by task and
//! status. (A run's aggregate — which task ended how on how many servers, per datacenter —
//! joins them once runs exist.)

use outpost_api::{FieldError, JobRecap, JobResults, ResultsQuery, TaskResultView};

use super::jobs::by_uuid;
use super::{Result, ServiceError};
use crate::core::Core;
use crate::model::{Job, TaskStatus};
use crate::store::results::{Recap, ResultFilter, TaskResultRow};
use crate::store::Store;

/// The most rows one read returns.
pub const MAX_LIMIT: i64 = 5_000;

/// The query's filters, checked: every bad field is named.
struct Checked<'a> {
    task: Option<&'a str>,
    status: Option<TaskStatus>,
    datacenter: Option<&'a str>,
    after: i32,
    limit: i64,
}

fn check(q: &ResultsQuery) -> Result<Checked<'_>> {
    let mut bad = Vec::new();
    let mut field = |field: &str, message: String| {
        bad.push(FieldError {
            field: field.into(),
            message,
        })
    };
    let task = q.task.as_deref().filter(|t| !t.is_empty());
    if task.is_some_and(|t| t.len() > outpost_protocol::results::MAX_RESULT_NAME_BYTES) {
        field("task", "at most 255 bytes".into());
    }
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse::<TaskStatus>() {
            Ok(s) => Some(s),
            Err(e) => {
                field("status", e.to_string());
                None
            }
        },
    };
    let datacenter = q.datacenter.as_deref().filter(|d| !d.is_empty());
    if datacenter.is_some_and(|d| d.len() > 255) {
        field("datacenter", "at most 255 bytes".into());
    }
    let after = q.after.unwrap_or(0);
    if after < 0 {
        field("after", "must be 0 or more".into());
    }
    let limit = q.limit.unwrap_or(1_000);
    if !(1..=MAX_LIMIT).contains(&limit) {
        field("limit", format!("must be 1 to {MAX_LIMIT}"));
    }
    if !bad.is_empty() {
        return Err(ServiceError::fields(bad));
    }
    Ok(Checked {
        task,
        status,
        datacenter,
        after: i32::try_from(after).unwrap_or(i32::MAX),
        limit,
    })
}

pub fn recap_view(r: &Recap) -> JobRecap {
    JobRecap {
        ok: r.ok.into(),
        changed: r.changed.into(),
        unreachable: r.unreachable.into(),
        failed: r.failed.into(),
        skipped: r.skipped.into(),
        rescued: r.rescued.into(),
        ignored: r.ignored.into(),
    }
}

pub fn row_view(r: TaskResultRow) -> TaskResultView {
    TaskResultView {
        seq: r.seq.into(),
        host: r.host,
        play: r.play,
        task: r.task,
        action: r.action,
        status: r.status,
        started_at: r.started_at,
        duration_ms: r.duration_ms.into(),
        message: r.message,
    }
}

/// Whether the job's target was unreachable, as ansible said by its exit code or its recap.
pub fn unreachable(job: &Job, recap: Option<&Recap>) -> bool {
    job.exit_code == Some(crate::task_results::EXIT_UNREACHABLE)
        || recap.is_some_and(|r| r.unreachable > 0)
}

/// `GET /jobs/{id}/results`: the recap and the task rows, in the order they ended.
pub async fn job_results(core: &Core, job_id: &str, q: &ResultsQuery) -> Result<JobResults> {
    let c = check(q)?;
    if c.datacenter.is_some() {
        return Err(ServiceError::fields(vec![FieldError {
            field: "datacenter".into(),
            message: "a job runs on one server; filter a run's results by datacenter".into(),
        }]));
    }
    let job = by_uuid(&core.store, job_id).await?;
    let f = ResultFilter {
        task: c.task,
        status: c.status,
        failed_first: false,
        after: c.after,
        limit: c.limit,
    };
    read(&core.store, &job, &f).await
}

/// A job's results for a page: failed, unreachable and rescued tasks first.
pub async fn job_summary(store: &Store, job: &Job, limit: i64) -> Result<JobResults> {
    let f = ResultFilter {
        failed_first: true,
        limit,
        ..ResultFilter::default()
    };
    read(store, job, &f).await
}

async fn read(store: &Store, job: &Job, f: &ResultFilter<'_>) -> Result<JobResults> {
    let recap = store.recap(job.id).await?;
    let (rows, total) = store.task_results(job.id, f).await?;
    Ok(JobResults {
        job_id: job.job_id.to_string(),
        unreachable: unreachable(job, recap.as_ref()),
        recap: recap.as_ref().map(recap_view),
        results: rows.into_iter().map(row_view).collect(),
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_filter_is_named() {
        let q = ResultsQuery {
            task: Some("t".repeat(300)),
            status: Some("exploded".into()),
            after: Some(-1),
            limit: Some(0),
            ..ResultsQuery::default()
        };
        let e = check(&q).err().expect("refused");
        let named: Vec<&str> = e.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(named, ["task", "status", "after", "limit"]);
        let q = ResultsQuery {
            status: Some("failed".into()),
            ..ResultsQuery::default()
        };
        let ok = check(&q).unwrap();
        assert_eq!(ok.status, Some(TaskStatus::Failed));
        assert_eq!(ok.limit, 1_000);
    }
}
