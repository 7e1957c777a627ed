//! Per-task results as callers read them: a job's recap and task rows, filtered by task and
//! status; and a run's aggregate — which task ended how on how many servers, per datacenter —
//! filtered by task, status and datacenter ([`run_results`], for the API and the run page).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use outpost_api::{
    FieldError, JobRecap, JobResults, ResultsQuery, RunResults, TaskResultView, TaskTally,
};

use super::jobs::by_uuid;
use super::{Result, ServiceError};
use crate::core::Core;
use crate::model::{Job, ServerId, TaskStatus};
use crate::store::results::{Recap, ResultFilter, RunTaskRow, TaskResultRow};
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

/// Whether the job's target was unreachable, as recorded when it ended (and, for a job that
/// ended before that was recorded, as ansible said by its exit code or its recap).
pub fn unreachable(job: &Job, recap: Option<&Recap>) -> bool {
    job.unreachable
        || job.exit_code == Some(crate::task_results::EXIT_UNREACHABLE)
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

/// `GET /runs/{id}/results`: for each task, status and datacenter, on how many servers.
pub async fn run_results(core: &Core, run_id: &str, q: &ResultsQuery) -> Result<RunResults> {
    let c = check(q)?;
    let run = super::runs::by_uuid(core, run_id).await?;
    let rows = core
        .store
        .run_task_results(run.id, c.task, c.status)
        .await?;
    let mut dc: HashMap<ServerId, String> = HashMap::new();
    for j in core.store.jobs_of_run(run.id).await? {
        if let std::collections::hash_map::Entry::Vacant(e) = dc.entry(j.server_id) {
            let server = core.store.get_server(j.server_id).await?;
            e.insert(
                super::launch::datacenter_of(&server, &core.settings.routing_keys)
                    .unwrap_or_default(),
            );
        }
    }
    Ok(RunResults {
        run_id: run.run_id.to_string(),
        tasks: tally(&rows, &dc, c.datacenter),
        unreachable_jobs: core.store.run_unreachable_jobs(run.id).await?,
    })
}

/// Counts servers per (play, task, status, datacenter): a server counts once however many
/// times a task ran on it (a loop, a handler). Failed and unreachable rows come first, then
/// the most servers.
pub fn tally(
    rows: &[RunTaskRow],
    dc_of: &HashMap<ServerId, String>,
    datacenter: Option<&str>,
) -> Vec<TaskTally> {
    let mut by: BTreeMap<(&str, &str, TaskStatus, &str), BTreeSet<ServerId>> = BTreeMap::new();
    for r in rows {
        let dc = dc_of.get(&r.server_id).map(String::as_str).unwrap_or("");
        if datacenter.is_some_and(|d| d != dc) {
            continue;
        }
        by.entry((&r.play, &r.task, r.status, dc))
            .or_default()
            .insert(r.server_id);
    }
    let mut out: Vec<TaskTally> = by
        .into_iter()
        .map(|((play, task, status, dc), servers)| TaskTally {
            play: play.to_owned(),
            task: task.to_owned(),
            status,
            datacenter: dc.to_owned(),
            servers: servers.len() as i64,
        })
        .collect();
    let rank = |s: TaskStatus| match s {
        TaskStatus::Failed | TaskStatus::Unreachable => 0,
        TaskStatus::Rescued => 1,
        _ => 2,
    };
    out.sort_by(|a, b| {
        rank(a.status)
            .cmp(&rank(b.status))
            .then(b.servers.cmp(&a.servers))
            .then_with(|| (&a.task, &a.datacenter).cmp(&(&b.task, &b.datacenter)))
    });
    out
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
    fn a_run_tallies_servers_per_task_status_and_datacenter() {
        let row = |server: i32, task: &str, status| RunTaskRow {
            server_id: ServerId(server),
            play: "site".into(),
            task: task.into(),
            status,
        };
        let rows = vec![
            row(1, "install", TaskStatus::Ok),
            row(2, "install", TaskStatus::Failed),
            row(3, "install", TaskStatus::Failed),
            row(3, "install", TaskStatus::Failed), // a second run of it on the same server
            row(4, "install", TaskStatus::Failed),
            row(5, "ping", TaskStatus::Unreachable),
        ];
        let dc: HashMap<ServerId, String> = [
            (1, "fra1"),
            (2, "fra1"),
            (3, "fra1"),
            (4, "ams1"),
            (5, "ams1"),
        ]
        .into_iter()
        .map(|(s, d)| (ServerId(s), d.to_owned()))
        .collect();
        let t = tally(&rows, &dc, None);
        let seen: Vec<(&str, TaskStatus, &str, i64)> = t
            .iter()
            .map(|t| (t.task.as_str(), t.status, t.datacenter.as_str(), t.servers))
            .collect();
        assert_eq!(
            seen,
            [
                ("install", TaskStatus::Failed, "fra1", 2),
                ("install", TaskStatus::Failed, "ams1", 1),
                ("ping", TaskStatus::Unreachable, "ams1", 1),
                ("install", TaskStatus::Ok, "fra1", 1),
            ]
        );
        let ams = tally(&rows, &dc, Some("ams1"));
        assert_eq!(ams.len(), 2);
        assert!(ams.iter().all(|t| t.datacenter == "ams1"));
    }

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
