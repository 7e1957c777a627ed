//! The store's contract: every case runs against MariaDB and against SQLite, with the same
//! expectations.

use chrono::{Duration, SubsecRound, Utc};
use outpost_controller::lifecycle::outcomes::OutcomeRecorder;
use outpost_controller::lifecycle::{
    Attempt, CancelResult, Claim, Final, Lifecycle, Outcome, Released, Starting,
};
use outpost_controller::model::{JobStatus, Paging, Role, TicketPriority, TicketStatus};
use outpost_controller::store::audit::{Actor, AuditFilter, NewAudit};
use outpost_controller::store::jobs::{JobFilter, NewJob};
use outpost_controller::store::logs::NewLogLine;
use outpost_controller::store::playbooks::NewPlaybook;
use outpost_controller::store::servers::{NewServer, ServerFilter};
use outpost_controller::store::tickets::{NewTicket, TicketFilter};
use outpost_controller::store::users::{NewUser, UserPatch};
use outpost_controller::{PoolConfig, Store, StoreError};
use outpost_tests::{Backend, TestDb};
use serde_json::json;

/// Generates one test per backend for each contract case.
macro_rules! contract {
    ($($name:ident),+ $(,)?) => {
        mod mariadb { $( #[tokio::test] async fn $name() { super::$name(outpost_tests::Backend::MariaDb).await } )+ }
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(outpost_tests::Backend::Sqlite).await } )+ }
    };
}

contract!(
    migrations_apply_once_and_roll_back,
    users_are_normalized_and_hashed,
    servers_validate_and_refuse_delete_when_in_use,
    playbooks_soft_delete_and_conflict,
    jobs_move_only_forward,
    claim_is_exclusive,
    cancel_pending_and_running,
    logs_are_idempotent_and_ordered,
    log_pages_stop_at_their_byte_budget,
    tickets_and_audit_listing,
    retention_deletes_old_lines_in_batches,
    agents_enrol_once_and_track_their_controller,
    a_failed_job_and_its_ticket_commit_together,
    a_long_failure_fits_its_columns,
    the_server_limit_is_part_of_the_claim,
    a_launch_claims_its_job_in_its_own_commit,
    a_batch_of_claims_shares_one_commit,
    a_release_after_a_cancel_request_cancels,
    lost_agents_are_settled_from_the_database,
    a_schedule_slot_is_claimed_once,
    slots_due_together_are_claimed_apart,
    a_slot_fires_in_its_launchs_commit,
    dashboard_charts_aggregate_alike,
    a_run_stops_at_its_budget_and_ends_with_one_ticket,
    a_run_ends_once_when_its_last_jobs_end_together,
    outcomes_that_arrive_together_share_one_commit,
    task_results_land_once_and_filter,
    lists_page_by_cursor_with_names,
    changes_that_read_first_wait_their_turn,
    a_batch_of_jobs_reads_its_own_rows_at_once,
);

/// Launches `n` jobs as one run with `max_failures`.
async fn launch_run(
    store: &Store,
    f: &Fixture,
    n: usize,
    max_failures: Option<u32>,
) -> (
    outpost_controller::model::RunId,
    Vec<outpost_controller::model::Job>,
) {
    let jobs: Vec<NewJob> = launch_plan(f, n);
    let run = outpost_controller::store::runs::NewRun {
        run_uuid: outpost_controller::model::RunUuid::new_v4(),
        user_id: f.admin.id,
        playbook_id: f.playbook.id,
        template_id: None,
        schedule_id: None,
        spec: None,
        total: n as u32,
        waves: 1,
        budgets: outpost_controller::rollout::Budgets {
            max_failures,
            max_unreachable: None,
        },
        relaunch_of: None,
    };
    let (id, jobs) = store
        .create_jobs_audited(&jobs, &Actor::user(f.admin.id), None, Some(&run))
        .await
        .expect("run");
    (id.expect("a run id"), jobs)
}

fn success() -> Outcome {
    Outcome {
        status: Final::Success,
        exit_code: Some(0),
        error_message: None,
        unreachable: false,
        started: true,
    }
}

fn failure() -> Outcome {
    Outcome {
        status: Final::Failed,
        exit_code: Some(2),
        error_message: Some("boom".into()),
        unreachable: false,
        started: true,
    }
}

async fn a_run_stops_at_its_budget_and_ends_with_one_ticket(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let (run, jobs) = launch_run(&store, &f, 4, Some(1)).await;
    let a = claimed(&life, &jobs[0]).await;
    let b = claimed(&life, &jobs[1]).await;
    assert!(life.finish(&a, &failure()).await.unwrap());
    assert_eq!(
        store.get_run(run).await.unwrap().stop,
        None,
        "within budget"
    );
    // The second failure spends the budget of 1: the jobs no agent holds are cancelled with
    // the reason, and the run ends with the last of its jobs.
    assert!(life.finish(&b, &failure()).await.unwrap());
    let reason = "failure budget spent: 2 of 4 failed (budget 1)";
    for j in &jobs[2..] {
        let j = store.get_job(j.id).await.unwrap();
        assert_eq!(j.status, JobStatus::Cancelled);
        assert_eq!(j.error_message.as_deref(), Some(reason));
    }
    let r = store.get_run(run).await.unwrap();
    assert_eq!(
        r.status,
        outpost_controller::model::RunStatus::StoppedByBudget
    );
    assert_eq!(r.stop_reason.as_deref(), Some(reason));
    assert!(r.completed_at.is_some());
    // One ticket for the run (on its first failed job), none for the second failure.
    assert_eq!(store.run_tickets(run).await.unwrap().len(), 1);
    assert_eq!(tickets_of(&store, jobs[1].id).await.total, 0);
    let t = tickets_of(&store, jobs[0].id).await;
    let d = t.items[0].description.clone().unwrap();
    assert_eq!(d.matches("- web1.fra1 (failed) boom").count(), 2, "{d}");
    assert!(d.contains(reason), "{d}");
}

async fn a_run_ends_once_when_its_last_jobs_end_together(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let (run, jobs) = launch_run(&store, &f, 3, None).await;
    let attempts = claimed_all(&life, &jobs).await;
    let ok = success();
    assert!(life.finish(&attempts[0], &ok).await.unwrap());
    assert_eq!(
        store.get_run(run).await.unwrap().status,
        outpost_controller::model::RunStatus::Running
    );
    // The last two end at the same moment, each in its own transaction: the run still ends,
    // once, with one ticket.
    let failed = failure();
    let (x, y) = tokio::join!(
        life.finish(&attempts[1], &failed),
        life.finish(&attempts[2], &failed)
    );
    assert!(x.unwrap() && y.unwrap());
    let r = store.get_run(run).await.unwrap();
    assert_eq!(
        r.status,
        outpost_controller::model::RunStatus::PartiallyFailed
    );
    assert_eq!(store.run_tickets(run).await.unwrap().len(), 1);
    let counts = store.run_counts(run).await.unwrap();
    assert_eq!((counts.success, counts.failed, counts.active()), (1, 2, 0));
}

/// How many audit records of `action` name the run.
async fn run_audits(store: &Store, run: outpost_controller::model::RunId, action: &str) -> usize {
    audit_actions(store, "run", run.0)
        .await
        .iter()
        .filter(|a| *a == action)
        .count()
}

/// A job's audit actions, oldest first.
async fn job_actions(store: &Store, job: outpost_controller::model::JobId) -> Vec<String> {
    audit_actions(store, "job", job.0).await
}

/// The audit actions of one resource, oldest first.
async fn audit_actions(store: &Store, resource_type: &str, id: i32) -> Vec<String> {
    let mut entries = store
        .list_audit(
            &AuditFilter {
                resource_type: Some(resource_type.into()),
                resource_id: Some(id),
                ..Default::default()
            },
            Paging::new(100, 0),
        )
        .await
        .unwrap()
        .items;
    entries.sort_by_key(|e| e.id);
    entries.into_iter().map(|e| e.action).collect()
}

async fn outcomes_that_arrive_together_share_one_commit(backend: Backend) {
    use outpost_controller::model::RunStatus;
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let (run_a, a_jobs) = launch_run(&store, &f, 4, None).await;
    let (run_b, b_jobs) = launch_run(&store, &f, 2, None).await;
    let a = claimed_all(&life, &a_jobs).await;
    let b = claimed_all(&life, &b_jobs).await;
    let ok = success();
    let prepare = |attempt: Attempt, outcome: Outcome| {
        let life = life.clone();
        async move {
            life.prepare_finish(&attempt, &outcome)
                .await
                .unwrap()
                .expect("held")
        }
    };
    let stale = Attempt {
        job: a[2].job,
        dispatch_id: "not-this-attempt".into(),
    };
    // A job of no run, with its own ticket.
    let lone = launch(&store, &f, 1).await;
    let lone = claimed(&life, &lone[0]).await;
    // Two runs' jobs, in no particular order, and an attempt that no longer holds its job.
    let first = vec![
        prepare(b[0].clone(), failure()).await,
        prepare(a[1].clone(), ok.clone()).await,
        prepare(stale, ok.clone()).await,
        prepare(lone.clone(), failure()).await,
        prepare(a[0].clone(), ok.clone()).await,
    ];
    let moved: Vec<bool> = life
        .finish_all(&first)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        moved,
        [true, true, false, true, true],
        "one result per outcome, in order"
    );
    assert_eq!(
        tickets_of(&store, lone.job).await.total,
        1,
        "the lone job's own ticket"
    );
    assert_eq!(
        tickets_of(&store, b[0].job).await.total,
        0,
        "its run opens the ticket"
    );
    assert_eq!(
        store.get_job(a[2].job).await.unwrap().status,
        JobStatus::Pending
    );
    assert_eq!(
        store.get_job(b[0].job).await.unwrap().status,
        JobStatus::Failed
    );
    for r in [run_a, run_b] {
        assert_eq!(store.get_run(r).await.unwrap().status, RunStatus::Running);
    }
    // Each finished job has its own FINISH record.
    for job in [a[0].job, a[1].job, b[0].job] {
        let finished = store
            .list_audit(
                &AuditFilter {
                    action: Some("FINISH".into()),
                    resource_type: Some("job".into()),
                    resource_id: Some(job.0),
                    ..Default::default()
                },
                Paging::new(10, 0),
            )
            .await
            .unwrap();
        assert_eq!(finished.items.len(), 1, "job {job}");
    }
    // Both runs' last jobs end in two batches at the same moment, one outcome sent in both.
    let x = vec![
        prepare(a[2].clone(), failure()).await,
        prepare(b[1].clone(), ok.clone()).await,
    ];
    let y = vec![
        prepare(a[3].clone(), ok.clone()).await,
        prepare(a[2].clone(), failure()).await,
    ];
    let (rx, ry) = tokio::join!(life.finish_all(&x), life.finish_all(&y));
    let rx: Vec<bool> = rx.into_iter().map(|r| r.unwrap()).collect();
    let ry: Vec<bool> = ry.into_iter().map(|r| r.unwrap()).collect();
    assert!(rx[1] && ry[0], "{rx:?} {ry:?}");
    assert!(
        rx[0] ^ ry[1],
        "the outcome sent twice is recorded once: {rx:?} {ry:?}"
    );
    // Each run ends once, with the status of all its jobs and one ticket listing its failures.
    for (r, jobs) in [(run_a, 4), (run_b, 2)] {
        let run = store.get_run(r).await.unwrap();
        assert_eq!(run.status, RunStatus::PartiallyFailed, "run {r}");
        assert!(run.completed_at.is_some());
        assert_eq!(
            run_audits(&store, r, "FINISH").await,
            1,
            "run {r} ended once"
        );
        assert_eq!(store.run_tickets(r).await.unwrap().len(), 1, "run {r}");
        let counts = store.run_counts(r).await.unwrap();
        assert_eq!(counts.success + counts.failed, jobs);
        assert_eq!(counts.active(), 0);
    }
    // Again, with every job final: nothing moves, nothing ends twice.
    assert!(life.finish_all(&x).await.into_iter().all(|r| !r.unwrap()));
    for r in [run_a, run_b] {
        assert_eq!(run_audits(&store, r, "FINISH").await, 1);
    }
    // Many runs racing in many batches: each ends exactly once.
    let mut runs = Vec::new();
    let mut held = Vec::new();
    for _ in 0..4 {
        let (r, jobs) = launch_run(&store, &f, 3, None).await;
        runs.push(r);
        for j in &jobs {
            held.push(claimed(&life, j).await);
        }
    }
    let mut batches: Vec<Vec<_>> = vec![Vec::new(); 3];
    for (i, attempt) in held.iter().enumerate() {
        batches[i % 3].push(prepare(attempt.clone(), ok.clone()).await);
    }
    let results = futures_util::future::join_all(batches.iter().map(|b| life.finish_all(b))).await;
    assert!(results.into_iter().flatten().all(|r| r.unwrap()));
    for r in runs {
        assert_eq!(store.get_run(r).await.unwrap().status, RunStatus::Succeeded);
        assert_eq!(
            run_audits(&store, r, "FINISH").await,
            1,
            "run {r} ended once"
        );
    }
    // Two failures in one batch spend a run's budget of 1: the run stops, once, and its job
    // still held is asked to stop.
    let (r, jobs) = launch_run(&store, &f, 3, Some(1)).await;
    let held = claimed_all(&life, &jobs).await;
    let two = vec![
        prepare(held[1].clone(), failure()).await,
        prepare(held[0].clone(), failure()).await,
    ];
    assert!(life.finish_all(&two).await.into_iter().all(|m| m.unwrap()));
    let run = store.get_run(r).await.unwrap();
    assert_eq!(
        run.stop_reason.as_deref(),
        Some("failure budget spent: 2 of 3 failed (budget 1)")
    );
    assert_eq!(run_audits(&store, r, "STOP").await, 1);
    assert!(store
        .get_job(held[2].job)
        .await
        .unwrap()
        .cancel_requested_at
        .is_some());
    assert_eq!(run.status, RunStatus::Running, "one job is still held");
    // The end of a wave's last job releases the next wave in the same commit; the round that
    // decides the same later finds it released.
    let mut plan = launch_plan(&f, 3);
    plan[2].wave = 1;
    let rolling = outpost_controller::store::runs::NewRun {
        run_uuid: outpost_controller::model::RunUuid::new_v4(),
        user_id: f.admin.id,
        playbook_id: f.playbook.id,
        template_id: None,
        schedule_id: None,
        spec: None,
        total: 3,
        waves: 2,
        budgets: Default::default(),
        relaunch_of: None,
    };
    let (r, jobs) = store
        .create_jobs_audited(&plan, &Actor::user(f.admin.id), None, Some(&rolling))
        .await
        .unwrap();
    let r = r.unwrap();
    let first_wave = vec![prepare(claimed(&life, &jobs[0]).await, ok.clone()).await];
    assert!(life.finish_all(&first_wave).await[0].as_ref().unwrap());
    assert_eq!(
        store.get_run(r).await.unwrap().current_wave,
        0,
        "a job of the first wave is still pending"
    );
    assert_eq!(run_audits(&store, r, "RELEASE_WAVE").await, 0);
    let last = vec![prepare(claimed(&life, &jobs[1]).await, failure()).await];
    assert!(life.finish_all(&last).await[0].as_ref().unwrap());
    let run = store.get_run(r).await.unwrap();
    assert_eq!((run.current_wave, run.status), (1, RunStatus::Running));
    assert_eq!(run_audits(&store, r, "RELEASE_WAVE").await, 1);
    assert_eq!(
        store.get_job(jobs[2].id).await.unwrap().pending_reason,
        None
    );
    assert!(!store.release_wave(r, 0, 1).await.unwrap(), "released once");
    // Through the recorder's tasks, as sessions do: outcomes sent at once, each caller told its
    // own; a second copy of one is told it moved nothing.
    let recorder = OutcomeRecorder::spawn(life.clone(), 4);
    let (r, jobs) = launch_run(&store, &f, 10, None).await;
    let mut held = claimed_all(&life, &jobs).await;
    held.push(held[0].clone());
    let told = futures_util::future::join_all(held.iter().map(|a| recorder.record(a, &ok))).await;
    let told: Vec<bool> = told.into_iter().map(|t| t.unwrap()).collect();
    assert_eq!(told.iter().filter(|&&t| t).count(), 10, "{told:?}");
    assert!(told[0] ^ told[10], "{told:?}");
    assert_eq!(store.get_run(r).await.unwrap().status, RunStatus::Succeeded);
    assert_eq!(run_audits(&store, r, "FINISH").await, 1);
    // A quick job's start and outcome, sent one right after the other as a session does (the
    // start queued, not waited for): each start is recorded before its outcome, in the same
    // commit or an earlier one, and no outcome is recorded over a job still pending.
    let (r, jobs) = launch_run(&store, &f, 10, None).await;
    let held = claimed_all(&life, &jobs).await;
    let told = futures_util::future::join_all(held.iter().map(|a| {
        let (recorder, ok) = (recorder.clone(), &ok);
        async move {
            let started = recorder.start(starting(a, Some(r), Utc::now())).await;
            let finished = recorder.record(a, ok).await.unwrap();
            (started.await.unwrap().unwrap(), finished)
        }
    }))
    .await;
    assert!(told.iter().all(|&(s, f)| s && f), "{told:?}");
    for a in &held {
        assert_eq!(
            job_actions(&store, a.job).await,
            ["LAUNCH", "DISPATCH", "START", "FINISH"],
            "job {}",
            a.job
        );
    }
    assert_eq!(store.get_run(r).await.unwrap().status, RunStatus::Succeeded);
    // Starts and outcomes given together, of two runs: each start is dated when it was
    // reported, not when the shared commit came; a start whose attempt no longer holds its
    // job, whose job has started already, or whose job was released back to the queue (it
    // keeps its last dispatch id) moves nothing and writes no record.
    let (r, jobs) = launch_run(&store, &f, 4, None).await;
    let (other, other_jobs) = launch_run(&store, &f, 2, None).await;
    let held = claimed_all(&life, &jobs).await;
    let other_held = claimed_all(&life, &other_jobs).await;
    assert!(life.start(&held[2]).await.unwrap());
    assert_eq!(
        life.release(&held[3], "the agent declined it")
            .await
            .unwrap(),
        Released::Queued
    );
    let not_held = Attempt {
        job: held[1].job,
        dispatch_id: "not-this-attempt".into(),
    };
    let an_hour_ago = Utc::now() - Duration::hours(1);
    let starts = [
        starting(&held[0], Some(r), an_hour_ago),
        starting(&not_held, Some(r), an_hour_ago),
        starting(&held[2], Some(r), an_hour_ago),
        starting(&held[3], Some(r), an_hour_ago),
        starting(&other_held[1], Some(other), an_hour_ago),
    ];
    let items = [
        prepare(held[0].clone(), ok.clone()).await,
        prepare(other_held[0].clone(), ok.clone()).await,
    ];
    let (started, moved) = life.record_all(&starts, &items).await;
    let started: Vec<bool> = started.into_iter().map(|s| s.unwrap()).collect();
    assert_eq!(started, [true, false, false, false, true]);
    assert!(moved.iter().all(|m| *m.as_ref().unwrap()), "{moved:?}");
    assert_eq!(
        job_actions(&store, held[0].job).await,
        ["LAUNCH", "DISPATCH", "START", "FINISH"]
    );
    let done = store.get_job(held[0].job).await.unwrap();
    assert_eq!(
        done.started_at,
        Some(an_hour_ago.trunc_subsecs(0)),
        "dated when reported"
    );
    assert!(done.completed_at.unwrap() >= Utc::now().trunc_subsecs(0) - Duration::minutes(1));
    assert_eq!(
        job_actions(&store, held[1].job).await,
        ["LAUNCH", "DISPATCH"]
    );
    // An agent's end over a job still pending (its start's record failed, or went with a
    // connection) records the start it missed: START before FINISH, and a start date.
    assert_eq!(
        job_actions(&store, other_held[0].job).await,
        ["LAUNCH", "DISPATCH", "START", "FINISH"]
    );
    let ended = store.get_job(other_held[0].job).await.unwrap();
    assert_eq!(ended.status, JobStatus::Success);
    assert!(ended.started_at.is_some() && ended.started_at <= ended.completed_at);
    assert_eq!(
        job_actions(&store, held[2].job).await,
        ["LAUNCH", "DISPATCH", "START"]
    );
    let released = store.get_job(held[3].job).await.unwrap();
    assert_eq!(
        (released.status, released.agent_id, released.started_at),
        (JobStatus::Pending, None, None),
        "a late start of a released attempt leaves it queued"
    );
    assert_eq!(
        store.get_job(held[1].job).await.unwrap().status,
        JobStatus::Pending
    );
    // A failure the controller decides over a job its agent never had starts nothing.
    assert!(life
        .finish(
            &held[1],
            &Outcome::failed("the assignment could not be made")
        )
        .await
        .unwrap());
    assert_eq!(
        job_actions(&store, held[1].job).await,
        ["LAUNCH", "DISPATCH", "FINISH"]
    );
    assert_eq!(
        store.get_job(other_held[1].job).await.unwrap().status,
        JobStatus::Running
    );
    assert_eq!(store.get_run(r).await.unwrap().status, RunStatus::Running);
    assert_eq!(
        store.get_run(other).await.unwrap().status,
        RunStatus::Running
    );
    // A start given with its own end, of a job that started already: the end's one UPDATE
    // for both moves nothing, so each is tried alone; one START record, the first date kept.
    let (_, jobs) = launch_run(&store, &f, 1, None).await;
    let held = claimed_all(&life, &jobs).await;
    assert!(life.start(&held[0]).await.unwrap());
    let first = store.get_job(held[0].job).await.unwrap().started_at;
    let (started, moved) = life
        .record_all(
            &[starting(&held[0], None, an_hour_ago)],
            &[prepare(held[0].clone(), ok.clone()).await],
        )
        .await;
    assert_eq!(
        (started[0].as_ref().unwrap(), moved[0].as_ref().unwrap()),
        (&false, &true)
    );
    assert_eq!(
        job_actions(&store, held[0].job).await,
        ["LAUNCH", "DISPATCH", "START", "FINISH"]
    );
    let done = store.get_job(held[0].job).await.unwrap();
    assert_eq!((done.status, done.started_at), (JobStatus::Success, first));
    // A start and an end each sent twice, in one batch: the first start dates the job and is
    // the one recorded; the first end moves it; the copies move nothing.
    let (_, jobs) = launch_run(&store, &f, 1, None).await;
    let held = claimed_all(&life, &jobs).await;
    let half_an_hour_ago = Utc::now() - Duration::minutes(30);
    let end = prepare(held[0].clone(), ok.clone()).await;
    let (started, moved) = life
        .record_all(
            &[
                starting(&held[0], None, an_hour_ago),
                starting(&held[0], None, half_an_hour_ago),
            ],
            &[end.clone(), end],
        )
        .await;
    let started: Vec<bool> = started.into_iter().map(|s| s.unwrap()).collect();
    let moved: Vec<bool> = moved.into_iter().map(|m| m.unwrap()).collect();
    assert_eq!((started, moved), (vec![true, false], vec![true, false]));
    assert_eq!(
        job_actions(&store, held[0].job).await,
        ["LAUNCH", "DISPATCH", "START", "FINISH"]
    );
    assert_eq!(
        store.get_job(held[0].job).await.unwrap().started_at,
        Some(an_hour_ago.trunc_subsecs(0))
    );
    // No shared commit had to be split (nextest runs each test in its own process).
    assert_eq!(
        outpost_controller::metrics::global()
            .outcome_batches_split
            .get(),
        0
    );
}

/// A start of `a` reported at `at`.
fn starting(
    a: &Attempt,
    run: Option<outpost_controller::model::RunId>,
    at: chrono::DateTime<Utc>,
) -> Starting {
    Starting {
        attempt: a.clone(),
        run,
        at,
    }
}

/// The credentials and sealed answers of a batch of jobs, read in one query each, reach every
/// job as its own: its server's, its playbook's project's vault passwords, its launch's, never
/// another job's; and the same as each job's read alone, and as its launch reads them by the
/// ids it names before the job's rows are written.
async fn a_batch_of_jobs_reads_its_own_rows_at_once(backend: Backend) {
    use outpost_controller::model::{CredentialId, CredentialKind, JobId};
    use outpost_controller::store::credentials::{CredentialsOf, NewCredential, Use};
    use outpost_controller::store::jobs::SealedVars;
    use outpost_controller::store::projects::NewRevision;
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let actor = Actor::user(f.admin.id);
    let mut cred = std::collections::HashMap::new();
    for (name, kind) in [
        ("ssh-a", CredentialKind::SshKey),
        ("ssh-b", CredentialKind::SshKey),
        ("become-a", CredentialKind::BecomePassword),
        ("vault-2", CredentialKind::VaultPassword),
        ("vault-1", CredentialKind::VaultPassword),
        ("launch-1", CredentialKind::VaultPassword),
    ] {
        let new = NewCredential {
            uuid: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            kind,
            description: None,
            vault_id: (kind == CredentialKind::VaultPassword).then(|| name.to_owned()),
            public_info: None,
            key_id: "k1".into(),
            secret: name.as_bytes().to_vec(),
        };
        let c = store.create_credential(&new, &actor).await.expect(name);
        cred.insert(name, c.id);
    }
    let server = |name: &str, ssh: &str, become_password: Option<&str>| {
        let mut new = NewServer::new(name, "10.0.0.9", "debian");
        new.ssh_credential_id = Some(cred[ssh]);
        new.become_credential_id = become_password.map(|b| cred[b]);
        new
    };
    let a = store
        .create_server(&server("a.fra1", "ssh-a", Some("become-a")), &actor)
        .await
        .expect("server a");
    let b = store
        .create_server(&server("b.fra1", "ssh-b", None), &actor)
        .await
        .expect("server b");
    // The fixture's playbook goes into a project with two vault passwords; a second stays loose.
    let rev = NewRevision {
        digest: "b".repeat(64),
        git_commit: None,
        size_bytes: 10,
        entries: 1,
    };
    let project = store
        .adopt_playbook(f.playbook.id, &rev, "ping.yml", &actor)
        .await
        .expect("adopt")
        .expect("adopted");
    store
        .set_project_vault_credentials(project, &[cred["vault-2"], cred["vault-1"]], &actor)
        .await
        .expect("vaults");
    let loose = store
        .create_playbook(
            &NewPlaybook {
                name: "loose".into(),
                description: None,
                file_path: "/var/lib/outpost/playbooks/loose.yml".into(),
                file_hash: "c".repeat(64),
                tags: None,
                variables: None,
            },
            &actor,
        )
        .await
        .expect("loose playbook");
    let mut plan = launch_plan(&f, 4);
    plan[0].server_id = a.id;
    plan[0].credential_ids = vec![cred["launch-1"]];
    plan[0].secret_vars = Some(SealedVars {
        names: vec!["db_password".into()],
        key_id: "k1".into(),
        sealed: vec![7, 7, 7],
    });
    plan[1].server_id = b.id;
    plan[1].playbook_id = loose.id;
    plan[2].server_id = a.id;
    plan[3].server_id = b.id;
    plan[3].playbook_id = loose.id;
    // Named out of id order: given in id order, as any job's.
    plan[3].credential_ids = vec![cred["launch-1"], cred["vault-2"]];
    let jobs = store.create_jobs(&plan, &actor).await.expect("jobs");
    let of: Vec<CredentialsOf> = jobs
        .iter()
        .map(|j| {
            let server = if j.server_id == a.id { &a } else { &b };
            CredentialsOf {
                job: j.id,
                playbook: j.playbook_id,
                ssh: server.ssh_credential_id,
                become_password: server.become_credential_id,
            }
        })
        .collect();
    let batch = store.credentials_of_jobs(&of).await.expect("batch");
    let named = |rows: Vec<(Use, outpost_controller::model::Credential)>| {
        rows.into_iter()
            .map(|(used, c)| (used, c.name))
            .collect::<Vec<_>>()
    };
    // Vault passwords in id order: vault-2 was made first.
    let vaults = [
        (Use::ProjectVault, "vault-2".to_owned()),
        (Use::ProjectVault, "vault-1".to_owned()),
    ];
    let server_a = [
        (Use::ServerSsh, "ssh-a".to_owned()),
        (Use::ServerBecome, "become-a".to_owned()),
    ];
    let mut first: Vec<_> = server_a.to_vec();
    first.extend(vaults.clone());
    first.push((Use::Launch, "launch-1".to_owned()));
    assert_eq!(named(batch.of(&of[0])), first);
    assert_eq!(
        named(batch.of(&of[1])),
        [(Use::ServerSsh, "ssh-b".to_owned())],
        "a loose playbook has no project's vault, and another job's launch credential is not its"
    );
    let mut third: Vec<_> = server_a.to_vec();
    third.extend(vaults);
    assert_eq!(named(batch.of(&of[2])), third);
    assert_eq!(
        named(batch.of(&of[3])),
        [
            (Use::ServerSsh, "ssh-b".to_owned()),
            (Use::Launch, "vault-2".to_owned()),
            (Use::Launch, "launch-1".to_owned()),
        ]
    );
    for (o, new) in of.iter().zip(&plan) {
        let alone = store
            .credentials_of_jobs(std::slice::from_ref(o))
            .await
            .expect("alone");
        assert_eq!(named(alone.of(o)), named(batch.of(o)), "job {}", o.job);
        // What a launch reads beside its transaction, before the job's rows exist, is what
        // the job's own rows give once written.
        let server = if new.server_id == a.id { &a } else { &b };
        let before = store
            .credentials_of_launch(new.playbook_id, server, &new.credential_ids)
            .await
            .expect("before");
        assert_eq!(named(before), named(batch.of(o)), "job {} before", o.job);
    }
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let sealed = store.secret_vars_of_jobs(&ids).await.expect("sealed");
    assert_eq!(sealed.len(), 1, "only the first job has answers");
    let s = &sealed[&jobs[0].id];
    assert_eq!(
        (s.names.clone(), s.key_id.as_str(), s.sealed.clone()),
        (vec!["db_password".to_owned()], "k1", vec![7, 7, 7])
    );
    assert!(store
        .secret_vars_of_jobs(&[])
        .await
        .expect("none")
        .is_empty());
    let nothing = CredentialsOf {
        job: JobId(0),
        playbook: loose.id,
        ssh: Some(CredentialId(0)),
        become_password: None,
    };
    assert!(store
        .credentials_of_jobs(&[])
        .await
        .expect("empty")
        .of(&nothing)
        .is_empty());
}

/// The tickets opened for a job.
async fn tickets_of(
    store: &Store,
    job: outpost_controller::model::JobId,
) -> outpost_controller::model::Page<outpost_controller::model::Ticket> {
    store
        .list_tickets(
            &TicketFilter {
                job_id: Some(job),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap()
}

/// Claims each of `jobs` for agent 1, in order.
async fn claimed_all(life: &Lifecycle, jobs: &[outpost_controller::model::Job]) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    for j in jobs {
        attempts.push(claimed(life, j).await);
    }
    attempts
}

/// Claims `job` for agent 1 and returns the attempt.
async fn claimed(life: &Lifecycle, job: &outpost_controller::model::Job) -> Attempt {
    match life
        .claim(
            job.id,
            job.server_id,
            outpost_controller::model::AgentId(1),
            100,
        )
        .await
        .unwrap()
    {
        Claim::Claimed(a) => a,
        other => panic!("claim of {} gave {other:?}", job.job_id),
    }
}

async fn a_failed_job_and_its_ticket_commit_together(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let jobs = launch(&store, &f, 1).await;
    let a = claimed(&life, &jobs[0]).await;
    let failed = Outcome {
        status: Final::Failed,
        exit_code: Some(2),
        error_message: Some("boom".into()),
        unreachable: false,
        started: true,
    };
    assert!(life.finish(&a, &failed).await.unwrap());
    // Finishing again changes nothing and opens no second ticket.
    assert!(!life.finish(&a, &failed).await.unwrap());
    let tickets = tickets_of(&store, jobs[0].id).await;
    assert_eq!(tickets.total, 1);
    assert_eq!(tickets.items[0].created_by, f.admin.id);
    assert_eq!(tickets.items[0].priority, TicketPriority::High);
    let d = tickets.items[0].description.clone().unwrap();
    assert!(d.contains("exit code 2") && d.contains("boom"), "{d}");
}

/// The failure that used to leave a job running forever: error text and error lines far longer
/// than the columns (MariaDB's strict mode refuses an over-long value).
async fn a_long_failure_fits_its_columns(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let jobs = launch(&store, &f, 1).await;
    let a = claimed(&life, &jobs[0]).await;
    assert!(life.start(&a).await.unwrap());
    let long = "fatal: ".to_owned() + &"é".repeat(30_000);
    let lines: Vec<NewLogLine> = (1..=5)
        .map(|n| NewLogLine {
            job: jobs[0].id,
            line_number: n,
            content: long.clone(),
            level: Some("ERROR".into()),
            timestamp: Utc::now(),
        })
        .collect();
    store.insert_log_lines(&lines).await.unwrap();
    let failed = Outcome {
        status: Final::Failed,
        exit_code: Some(3),
        error_message: Some("x".repeat(100_000)),
        unreachable: false,
        started: true,
    };
    assert!(life.finish(&a, &failed).await.unwrap());
    let job = store.get_job(jobs[0].id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let err = job.error_message.unwrap();
    assert!(err.len() <= 65_535 && err.contains("…[cut; 100000 bytes in all]"));
    let t = tickets_of(&store, jobs[0].id).await;
    assert_eq!(t.total, 1);
    assert!(t.items[0]
        .description
        .as_ref()
        .unwrap()
        .contains("fatal: éé"));
}

/// Two schedulers racing for the jobs of one server never exceed its limit.
async fn the_server_limit_is_part_of_the_claim(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let jobs = launch(&store, &f, 10).await;
    let mut handles = Vec::new();
    for job in &jobs {
        for _ in 0..2 {
            let (life, id, server) = (life.clone(), job.id, job.server_id);
            handles.push(tokio::spawn(async move {
                life.claim(id, server, outpost_controller::model::AgentId(1), 2)
                    .await
                    .unwrap()
            }));
        }
    }
    let mut claims = Vec::new();
    for h in handles {
        claims.push(h.await.unwrap());
    }
    let won: Vec<&Attempt> = claims
        .iter()
        .filter_map(|c| match c {
            Claim::Claimed(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(won.len(), 2, "{claims:?}");
    assert!(claims.contains(&Claim::ServerBusy));
    // A finished job frees its place.
    let ok = success();
    assert!(life.finish(won[0], &ok).await.unwrap());
    let next = store.unassigned_jobs(1).await.unwrap().remove(0);
    assert!(matches!(
        life.claim(
            next.id,
            next.server_id,
            outpost_controller::model::AgentId(1),
            2
        )
        .await
        .unwrap(),
        Claim::Claimed(_)
    ));
}

/// A round's claims in one commit: each server's limit counts the claims already there and
/// the batch's own; a job cancelled meanwhile is not claimed; and batches racing over the same
/// servers in opposite orders neither deadlock nor exceed a limit.
async fn a_batch_of_claims_shares_one_commit(backend: Backend) {
    use outpost_controller::lifecycle::Wanted;
    use outpost_controller::model::{AgentId, Job};
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let agent = AgentId(1);
    let admin = Actor::user(f.admin.id);
    let wanted = |jobs: &[Job]| -> Vec<Wanted> {
        jobs.iter()
            .map(|j| Wanted {
                job: j.id,
                server: j.server_id,
                agent,
                dispatch_id: uuid::Uuid::new_v4().to_string(),
            })
            .collect()
    };

    // Three servers, four jobs each; one job of the first already claimed, one of the second
    // cancelled. With a limit of 2 the batch of the other eleven takes 1 + 2 + 2.
    let jobs = three_servers_with_jobs(&store, &f, "b0", 4).await;
    let first = claimed(&life, &jobs[0]).await;
    life.cancel(jobs[4].id, &admin).await.unwrap();
    let batch = wanted(&jobs[1..]);
    let claims = life.claim_all(&batch, 2).await.unwrap();
    use Claim::{ServerBusy as Busy, Taken};
    let got: Vec<&str> = claims
        .iter()
        .map(|c| match c {
            Claim::Claimed(_) => "claimed",
            Busy => "busy",
            Taken => "taken",
        })
        .collect();
    assert_eq!(
        got,
        [
            "claimed", "busy", "busy", // the first server: one was there
            "taken", "claimed", "claimed", "busy", // the second: one cancelled
            "claimed", "claimed", "busy", "busy",
        ]
    );
    for (w, c) in batch.iter().zip(&claims) {
        let job = store.get_job(w.job).await.unwrap();
        if let Claim::Claimed(a) = c {
            // Each claimed job holds its own attempt, and its claim was audited.
            assert_eq!(a.dispatch_id, w.dispatch_id);
            assert_eq!(job.dispatch_id.as_deref(), Some(w.dispatch_id.as_str()));
            assert_eq!(job.agent_id, Some(agent));
            let dispatched = store
                .list_audit(
                    &AuditFilter {
                        action: Some("DISPATCH".into()),
                        resource_type: Some("job".into()),
                        resource_id: Some(job.id.0),
                        ..Default::default()
                    },
                    Paging::new(10, 0),
                )
                .await
                .unwrap();
            assert_eq!(dispatched.items.len(), 1);
        } else {
            assert_eq!(job.agent_id, None, "{:?} wrote its job", c);
        }
    }
    assert_ne!(first.dispatch_id, batch[0].dispatch_id);

    // Read back as after a commit that reported a failure: what was written is known, and an
    // attempt never written is not taken for one.
    let mut asked: Vec<Attempt> = claims
        .iter()
        .filter_map(|c| match c {
            Claim::Claimed(a) => Some(a.clone()),
            _ => None,
        })
        .collect();
    let written = asked.len();
    asked.push(Attempt {
        job: jobs[2].id,
        dispatch_id: "never-written".into(),
    });
    let answers = life.attempts_written(&asked).await.unwrap();
    assert_eq!(answers, [vec![true; written], vec![false]].concat());
    // On MariaDB a commit still under way is waited for, not read past.
    if backend == Backend::MariaDb {
        use sqlx::Connection;
        // A transaction of another connection writing the job's dispatch id, not committed.
        async fn writing<'c>(
            writer: &'c mut sqlx::MySqlConnection,
            job: outpost_controller::model::JobId,
            dispatch_id: &str,
        ) -> sqlx::Transaction<'c, sqlx::MySql> {
            let mut tx = writer.begin().await.unwrap();
            sqlx::query("UPDATE jobs SET celery_task_id = ? WHERE id = ?")
                .bind(dispatch_id)
                .bind(job.0)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx
        }
        let mut writer = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
        let tx = writing(&mut writer, jobs[2].id, "under-way").await;
        let reader = life.clone();
        let under_way = [Attempt {
            job: jobs[2].id,
            dispatch_id: "under-way".into(),
        }];
        let reading = tokio::spawn(async move { reader.attempts_written(&under_way).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!reading.is_finished(), "the read waits for the commit");
        tx.commit().await.unwrap();
        assert_eq!(reading.await.unwrap().unwrap(), [true]);
        // A lock held on and on: the server gives up after its 2 s, not the default 50 s.
        let tx = writing(&mut writer, jobs[2].id, "held").await;
        let held = [Attempt {
            job: jobs[2].id,
            dispatch_id: "held".into(),
        }];
        let started = std::time::Instant::now();
        let read = life.attempts_written(&held).await;
        let waited = started.elapsed();
        assert!(read.is_err(), "{read:?}");
        assert!(
            waited < std::time::Duration::from_secs(10),
            "the lock was waited for {waited:?}"
        );
        tx.rollback().await.unwrap();
    }

    // Two batches of the same nine jobs (three servers, three jobs each), one in the other's
    // reverse order, racing: each job is claimed once at most, each server twice.
    for round in 1..=5 {
        let jobs = three_servers_with_jobs(&store, &f, &format!("b{round}"), 3).await;
        let forward = wanted(&jobs);
        let mut backward = wanted(&jobs);
        backward.reverse();
        let (a, b) = tokio::join!(life.claim_all(&forward, 2), life.claim_all(&backward, 2));
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut per_server = std::collections::HashMap::new();
        for job in &jobs {
            let won = forward
                .iter()
                .zip(&a)
                .chain(backward.iter().zip(&b))
                .filter(|(w, c)| w.job == job.id && matches!(c, Claim::Claimed(_)))
                .count();
            assert!(won <= 1, "job {} claimed {won} times", job.job_id);
            *per_server.entry(job.server_id).or_insert(0) += won;
        }
        assert!(per_server.values().all(|n| *n == 2), "{per_server:?}");
    }

    // Another transaction holds the second server while the batch waits for it, and claims
    // one of its jobs before it lets go: the batch counts that claim (every count is read
    // after every lock is held) and leaves the server at its limit of 1.
    let jobs = three_servers_with_jobs(&store, &f, "b9", 2).await;
    let (held, mine) = (&jobs[2], &jobs[3]);
    let take = "UPDATE jobs SET agent_id = 1, celery_task_id = 'other', \
                assigned_at = CURRENT_TIMESTAMP WHERE id = ?";
    let batch = wanted(&[jobs[0].clone(), mine.clone()]);
    let racing = {
        let life = life.clone();
        async move {
            // Started once the other transaction holds its lock.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            life.claim_all(&batch, 1).await
        }
    };
    let other = async {
        use sqlx::Connection;
        let pause = std::time::Duration::from_millis(500);
        match backend {
            Backend::MariaDb => {
                let mut c = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
                let mut tx = c.begin().await.unwrap();
                sqlx::query("SELECT id FROM servers WHERE id = ? FOR UPDATE")
                    .bind(held.server_id)
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
                tokio::time::sleep(pause).await;
                sqlx::query(take)
                    .bind(held.id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                tokio::time::sleep(pause).await;
                sqlx::query(take)
                    .bind(held.id)
                    .execute(&mut c)
                    .await
                    .unwrap();
                sqlx::query("COMMIT").execute(&mut c).await.unwrap();
            }
        }
    };
    let (claims, ()) = tokio::join!(racing, other);
    let claims = claims.unwrap();
    assert!(matches!(claims[0], Claim::Claimed(_)), "{claims:?}");
    assert_eq!(
        claims[1],
        Claim::ServerBusy,
        "the held server went over its limit"
    );
}

/// Three new servers named after `tag`, with `n` pending jobs each, in server order.
async fn three_servers_with_jobs(
    store: &Store,
    f: &Fixture,
    tag: &str,
    n: usize,
) -> Vec<outpost_controller::model::Job> {
    let admin = Actor::user(f.admin.id);
    let mut plan = Vec::new();
    for i in 0..3 {
        let server = store
            .create_server(
                &NewServer::new(&format!("{tag}-{i}.fra1"), "10.0.0.6", "debian"),
                &admin,
            )
            .await
            .unwrap();
        for mut j in launch_plan(f, n) {
            j.server_id = server.id;
            plan.push(j);
        }
    }
    store.create_jobs(&plan, &admin).await.unwrap()
}

/// One-job launches racing on one server, each claiming in its own transaction: none fails
/// (on MySQL the server's lock is taken before the insert, or two launches would deadlock
/// upgrading their foreign-key locks), the limit holds, and the unclaimed wait in the queue.
async fn a_launch_claims_its_job_in_its_own_commit(backend: Backend) {
    use outpost_controller::lifecycle::{LaunchClaim, Launching};
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let agent = outpost_controller::model::AgentId(1);
    let claim = LaunchClaim {
        agent,
        max_per_server: 2,
    };
    let mut handles = Vec::new();
    for _ in 0..12 {
        let (life, new, actor) = (life.clone(), launch_plan(&f, 1), Actor::user(f.admin.id));
        handles.push(tokio::spawn(async move {
            life.launch(
                Launching {
                    jobs: &new,
                    ..Default::default()
                },
                &actor,
                Some(claim),
            )
            .await
            .expect("a launch racing others on one server succeeds")
        }));
    }
    let mut launched = Vec::new();
    for h in handles {
        launched.push(h.await.unwrap());
    }
    let won: Vec<_> = launched
        .iter()
        .filter(|l| matches!(l.claim, Some(Claim::Claimed(_))))
        .collect();
    assert_eq!(won.len(), 2, "the server's limit holds: {launched:?}");
    assert!(launched
        .iter()
        .all(|l| matches!(l.claim, Some(Claim::Claimed(_) | Claim::ServerBusy))));
    for l in &won {
        let Some(Claim::Claimed(a)) = &l.claim else {
            unreachable!()
        };
        // The job the launch answers with is the claimed one, and its claim was audited.
        assert_eq!(l.jobs[0].agent_id, Some(agent));
        assert_eq!(
            l.jobs[0].dispatch_id.as_deref(),
            Some(a.dispatch_id.as_str())
        );
        let dispatched = store
            .list_audit(
                &AuditFilter {
                    action: Some("DISPATCH".into()),
                    resource_type: Some("job".into()),
                    resource_id: Some(l.jobs[0].id.0),
                    ..Default::default()
                },
                Paging::new(10, 0),
            )
            .await
            .unwrap();
        assert_eq!(dispatched.items.len(), 1);
    }
    assert_eq!(store.unassigned_jobs(100).await.unwrap().len(), 10);
    // A launch of several jobs leaves them all to the scheduler.
    let many = life
        .launch(
            Launching {
                jobs: &launch_plan(&f, 2),
                ..Default::default()
            },
            &Actor::user(f.admin.id),
            Some(claim),
        )
        .await
        .unwrap();
    assert!(many.claim.is_none());
    assert!(many.jobs.iter().all(|j| j.agent_id.is_none()));
}

/// A job whose assignment is given back after a cancel request ends cancelled, not queued
/// (the queue skips cancel-requested jobs: it would wait forever).
async fn a_release_after_a_cancel_request_cancels(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let jobs = launch(&store, &f, 1).await;
    let a = claimed(&life, &jobs[0]).await;
    assert_eq!(
        life.cancel(jobs[0].id, &Actor::user(f.admin.id))
            .await
            .unwrap(),
        CancelResult::Requested
    );
    assert_eq!(
        life.release(&a, "cancelled before it started")
            .await
            .unwrap(),
        Released::Cancelled
    );
    let j = store.get_job(jobs[0].id).await.unwrap();
    assert_eq!((j.status, j.agent_id), (JobStatus::Cancelled, None));
    assert_eq!(life.release(&a, "again").await.unwrap(), Released::NotHeld);
}

/// An agent lost on a controller that then restarted: its deadline is in the database, so the
/// job fails "agent lost" with a ticket once the grace period passes, and only once.
async fn lost_agents_are_settled_from_the_database(backend: Backend) {
    use outpost_controller::store::agents::AgentPresence;
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let agent = outpost_controller::model::AgentId(1);
    let presence = AgentPresence {
        version: "1".into(),
        hostname: "bastion".into(),
        ansible_version: "2.17".into(),
        capacity: 4,
        controller: "ctl-a".into(),
        session: "s1".into(),
        certificate: None,
    };
    store.agent_connected(agent, &presence).await.unwrap();
    let jobs = launch(&store, &f, 2).await;
    let running = claimed(&life, &jobs[0]).await;
    assert!(life.start(&running).await.unwrap());
    let assigned = claimed(&life, &jobs[1]).await;
    // ctl-a is killed and comes back: its old sessions are lost from now on.
    assert_eq!(store.sessions_of_controller_lost("ctl-a").await.unwrap(), 1);
    let grace = std::time::Duration::from_secs(2);
    assert!(
        life.settle_abandoned(grace).await.unwrap().is_empty(),
        "within the grace period"
    );
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    // Two controllers settle at once: the agent is recorded lost once.
    let (a, b) = tokio::join!(life.settle_abandoned(grace), life.settle_abandoned(grace));
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 1);
    let j = store.get_job(jobs[0].id).await.unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    assert!(j.error_message.unwrap().starts_with("agent lost"));
    let back = store.get_job(jobs[1].id).await.unwrap();
    assert_eq!((back.status, back.agent_id), (JobStatus::Pending, None));
    let _ = assigned;
    let tickets = tickets_of(&store, jobs[0].id).await;
    assert_eq!(tickets.total, 1);
    let lost = store
        .list_audit(
            &AuditFilter {
                action: Some("AGENT_LOST".into()),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    assert_eq!(lost.total, 1);
}

async fn agents_enrol_once_and_track_their_controller(backend: Backend) {
    use outpost_controller::store::agents::{AgentPresence, HeldCertificate, NewEnrollmentToken};
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let token = |hash: &str, name: &str, minutes: i64| NewEnrollmentToken {
        secret_hash: hash.into(),
        name: name.into(),
        labels: json!({"dc": "fra1"}),
        expires_at: Utc::now() + Duration::minutes(minutes),
    };
    store
        .create_enrollment_token(
            &token("5ecre7hash0001", "bastion-fra1", 10),
            &Actor::system(),
        )
        .await
        .unwrap();
    store
        .create_enrollment_token(&token("5ecre7hash0002", "late", -1), &Actor::system())
        .await
        .unwrap();
    // The token's labels are the agent's: asking for another is refused and spends nothing.
    let mut greedy = serde_json::Map::new();
    greedy.insert("dc".into(), json!("evil"));
    let refused = store
        .enroll_agent(
            "5ecre7hash0001",
            "00000000-0000-0000-0000-00000000000a",
            &greedy,
            "bastion",
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("cannot ask for dc=evil"),
        "{refused}"
    );
    let mut asked = serde_json::Map::new();
    asked.insert("dc".into(), json!("fra1"));
    let a = store
        .enroll_agent(
            "5ecre7hash0001",
            "00000000-0000-0000-0000-00000000000a",
            &asked,
            "bastion",
        )
        .await
        .unwrap();
    let labels: std::collections::BTreeMap<_, _> = a.label_pairs().into_iter().collect();
    assert_eq!(labels.len(), 1);
    assert_eq!(labels["dc"], "fra1");
    let again = store
        .enroll_agent(
            "5ecre7hash0001",
            "00000000-0000-0000-0000-00000000000b",
            &asked,
            "x",
        )
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already used"), "{again}");
    let expired = store
        .enroll_agent(
            "5ecre7hash0002",
            "00000000-0000-0000-0000-00000000000c",
            &asked,
            "x",
        )
        .await
        .unwrap_err();
    assert!(expired.to_string().contains("expired"), "{expired}");
    assert!(matches!(
        store.enroll_agent("nope", "u", &asked, "x").await,
        Err(StoreError::NotFound(_))
    ));

    let presence = |ctl: &str, session: &str| AgentPresence {
        version: "0.1.0".into(),
        hostname: "bastion".into(),
        ansible_version: "ansible-playbook [core 2.19]".into(),
        capacity: 4,
        controller: ctl.into(),
        session: session.into(),
        certificate: None,
    };
    // A renewal recorded, then a session with the certificate the agent really holds (it
    // never received the renewed one): the row names what the agent holds again. A session
    // whose certificate could not be read leaves the row as it was.
    let expires = |s: i64| chrono::DateTime::from_timestamp(1_900_000_000 + s, 0).unwrap();
    let renewed = HeldCertificate {
        fingerprint: "ab".repeat(32),
        expires: expires(86_400),
    };
    store
        .set_agent_certificate(a.id, &renewed, None)
        .await
        .unwrap();
    let held = HeldCertificate {
        fingerprint: "cd".repeat(32),
        expires: expires(0),
    };
    store
        .agent_connected(
            a.id,
            &AgentPresence {
                certificate: Some(held.clone()),
                ..presence("ctl-a", "s0")
            },
        )
        .await
        .unwrap();
    store
        .agent_connected(a.id, &presence("ctl-a", "s1"))
        .await
        .unwrap();
    // A renewal answered in the older session s0, recorded late: s1 is the latest, so the
    // row keeps what s1 connected with. One renewed in s1 is recorded.
    store
        .set_agent_certificate(a.id, &renewed, Some("s0"))
        .await
        .unwrap();
    let row = store.get_agent(a.id).await.unwrap();
    assert_eq!(
        (row.cert_fingerprint.as_deref(), row.cert_expires_at),
        (Some(held.fingerprint.as_str()), Some(held.expires))
    );
    store
        .set_agent_certificate(a.id, &renewed, Some("s1"))
        .await
        .unwrap();
    let row = store.get_agent(a.id).await.unwrap();
    assert_eq!(row.cert_fingerprint, Some(renewed.fingerprint.clone()));
    assert_eq!(store.agents_seen("ctl-a").await.unwrap(), 1);
    assert_eq!(store.agents_seen("ctl-b").await.unwrap(), 0);
    assert_eq!(store.agents_on("ctl-a").await.unwrap(), vec![a.id]);
    assert!(store.agents_on("ctl-b").await.unwrap().is_empty());
    assert!(store.revoked_agents().await.unwrap().is_empty());
    store.revoke_agent(a.id, &Actor::system()).await.unwrap();
    assert_eq!(store.revoked_agents().await.unwrap(), vec![a.id]);
    // The agent moved to a newer session: the old session's late goodbye does not mark it offline.
    store
        .agent_connected(a.id, &presence("ctl-b", "s2"))
        .await
        .unwrap();
    store.agent_disconnected(a.id, "s1").await.unwrap();
    assert_eq!(
        store
            .get_agent(a.id)
            .await
            .unwrap()
            .connected_controller
            .as_deref(),
        Some("ctl-b")
    );
    // A controller closing a session whose row no longer names it starts the grace of a row
    // left with no session; a row with one (ctl-b's) is not touched.
    store.sessions_disowned(&[a.id]).await.unwrap();
    assert_eq!(store.get_agent(a.id).await.unwrap().lost_at, None);
    assert_eq!(
        store
            .orphan_sessions_lost(Utc::now() + Duration::minutes(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.agents_on("ctl-b").await.unwrap(), vec![]);
    // The sweeping controller settles it and clears its deadline, as after any loss.
    let lost = store
        .get_agent(a.id)
        .await
        .unwrap()
        .lost_at
        .expect("a deadline");
    let settled = NewAudit {
        actor: &Actor::system(),
        action: "AGENT_LOST",
        resource_type: "agent",
        resource_id: Some(a.id.0),
        details: None,
    };
    assert!(store.clear_lost(a.id, lost, &settled).await.unwrap());
    assert_eq!(store.get_agent(a.id).await.unwrap().lost_at, None);
    store.sessions_disowned(&[a.id]).await.unwrap();
    assert!(store.get_agent(a.id).await.unwrap().lost_at.is_some());
    store
        .agent_connected(a.id, &presence("ctl-b", "s2"))
        .await
        .unwrap();
    store.agent_disconnected(a.id, "s2").await.unwrap();
    assert_eq!(
        store.get_agent(a.id).await.unwrap().connected_controller,
        None
    );
    let audit = store
        .list_audit(
            &AuditFilter {
                resource_type: Some("enrollment_token".into()),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    assert_eq!(audit.total, 2);
    assert!(
        !serde_json::to_string(&audit.items)
            .unwrap()
            .contains("5ecre7hash0001"),
        "no token hash in the audit"
    );
}

async fn store(db: &TestDb) -> Store {
    let store = Store::connect(&db.url, &PoolConfig::default())
        .await
        .expect("connect");
    store.migrate_up().await.expect("migrate");
    store
}

struct Fixture {
    admin: outpost_controller::model::User,
    server: outpost_controller::model::Server,
    playbook: outpost_controller::model::Playbook,
}

async fn fixture(store: &Store) -> Fixture {
    let admin = store
        .create_user(
            &NewUser {
                username: "admin".into(),
                email: "Admin@Example.com".into(),
                password: "correct horse battery".into(),
                role: Role::Admin,
                must_change_password: false,
            },
            &Actor::system(),
        )
        .await
        .expect("admin");
    let mut new = NewServer::new("web1.fra1", "10.0.0.5", "debian");
    new.tags = Some(json!({"dc": "fra1", "role": "web"}));
    new.environment = Some("production".into());
    let server = store
        .create_server(&new, &Actor::user(admin.id))
        .await
        .expect("server");
    let playbook = store
        .create_playbook(
            &NewPlaybook {
                name: "ping".into(),
                description: None,
                file_path: "/var/lib/outpost/playbooks/ping.yml".into(),
                file_hash: "a".repeat(64),
                tags: None,
                variables: Some(json!({"greeting": "hi"})),
            },
            &Actor::user(admin.id),
        )
        .await
        .expect("playbook");
    Fixture {
        admin,
        server,
        playbook,
    }
}

async fn launch(store: &Store, f: &Fixture, n: usize) -> Vec<outpost_controller::model::Job> {
    let new = launch_plan(f, n);
    store
        .create_jobs(&new, &Actor::user(f.admin.id))
        .await
        .expect("jobs")
}

fn launch_plan(f: &Fixture, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob {
            playbook_id: f.playbook.id,
            server_id: f.server.id,
            user_id: f.admin.id,
            extra_vars: Some(json!({"x": 1})),
            extra_vars_templated: false,
            run_options: None,
            revision_id: None,
            credential_ids: Vec::new(),
            job_uuid: outpost_controller::model::JobUuid::new_v4(),
            template_id: None,
            time_limit_secs: None,
            secret_vars: None,
            schedule_id: None,
            wave: 0,
        })
        .collect()
}

async fn migrations_apply_once_and_roll_back(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, &PoolConfig::default())
        .await
        .unwrap();
    store.ping().await.unwrap();
    let first = store.migrate_up().await.unwrap();
    assert_eq!(first.len(), store.known_migrations());
    assert_eq!(first[0].version, 1);
    assert!(
        store.migrate_up().await.unwrap().is_empty(),
        "a second run applies nothing"
    );
    let undone = store.migrate_down(2).await.unwrap();
    // The two highest versions (numbers may skip: each branch takes its own).
    let (last, previous) = (
        first[first.len() - 1].version,
        first[first.len() - 2].version,
    );
    assert_eq!(
        undone.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![last, previous]
    );
    let again = store.migrate_up().await.unwrap();
    assert_eq!(
        again.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![previous, last]
    );
    let all = store.migrate_down(store.known_migrations()).await.unwrap();
    assert_eq!(all.len(), store.known_migrations());
    assert!(matches!(
        store.migrate_down(1).await,
        Err(StoreError::Migrate(_))
    ));
    assert_eq!(
        store.migrate_up().await.unwrap().len(),
        store.known_migrations()
    );
}

async fn users_are_normalized_and_hashed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    assert_eq!(f.admin.email, "admin@example.com");
    assert!(
        f.admin.password_hash.starts_with("$2b$12$"),
        "bcrypt cost 12: {}",
        f.admin.password_hash
    );
    assert!(store
        .verify_login("admin", "correct horse battery")
        .await
        .unwrap()
        .unwrap()
        .last_login
        .is_some());
    assert!(store
        .verify_login("admin", "wrong")
        .await
        .unwrap()
        .is_none());
    assert!(store.verify_login("nobody", "x").await.unwrap().is_none());

    let dup = store
        .create_user(
            &NewUser {
                username: "other".into(),
                email: "ADMIN@example.com".into(),
                password: "12345678".into(),
                role: Role::Viewer,
                must_change_password: false,
            },
            &Actor::system(),
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let short = store
        .create_user(
            &NewUser {
                username: "v".into(),
                email: "v@example.com".into(),
                password: "short".into(),
                role: Role::Viewer,
                must_change_password: false,
            },
            &Actor::system(),
        )
        .await;
    assert!(matches!(
        short,
        Err(StoreError::Invalid {
            field: "password",
            ..
        })
    ));

    let updated = store
        .update_user(
            f.admin.id,
            &UserPatch {
                email: Some("NEW@Example.com".into()),
                password: Some("another secret".into()),
                ..Default::default()
            },
            &Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(updated.email, "new@example.com");
    assert!(store
        .verify_login("admin", "another secret")
        .await
        .unwrap()
        .is_some());

    // The audit trail says a password changed, never what it is or hashes to.
    let audit = store
        .list_audit(
            &AuditFilter {
                resource_type: Some("user".into()),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    let text = serde_json::to_string(&audit.items).unwrap();
    assert!(text.contains("\"password\":\"changed\""), "{text}");
    assert!(
        !text.contains("another secret") && !text.contains("$2b$"),
        "{text}"
    );

    let page = store
        .list_users(Some(Role::Admin), None, Paging::default())
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    // Users with history cannot be deleted; a fresh one can.
    launch(&store, &f, 1).await;
    assert!(matches!(
        store.delete_user(f.admin.id, &Actor::system()).await,
        Err(StoreError::InUse { .. })
    ));
}

async fn servers_validate_and_refuse_delete_when_in_use(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    assert_eq!(f.server.ssh_port, 22);
    assert_eq!(f.server.ssh_user, "root");
    assert_eq!(f.server.tags.as_ref().unwrap().0["dc"], "fra1");

    let mut bad = NewServer::new("x", "10.0.0.300", "debian");
    assert!(matches!(
        store.create_server(&bad, &Actor::system()).await,
        Err(StoreError::Invalid {
            field: "ip_address",
            ..
        })
    ));
    bad.ip_address = "::1".into();
    bad.tags = Some(json!(["not", "an", "object"]));
    assert!(matches!(
        store.create_server(&bad, &Actor::system()).await,
        Err(StoreError::Invalid { field: "tags", .. })
    ));
    bad.tags = None;
    bad.host_vars = Some(json!({"ansible_connection": "local"}));
    let local = store.create_server(&bad, &Actor::system()).await.unwrap();
    assert_eq!(local.host_vars.unwrap().0["ansible_connection"], "local");
    // Group chains round-trip as JSON; a bad group name is refused, named; none is NULL.
    let mut grouped = NewServer::new("web2.fra1", "10.0.0.7", "debian");
    let chains = vec![
        vec!["prod".to_owned(), "web".to_owned()],
        vec!["dc_fra1".to_owned()],
    ];
    grouped.inventory_groups = Some(chains.clone());
    let g = store
        .create_server(&grouped, &Actor::system())
        .await
        .unwrap();
    assert_eq!(g.inventory_groups.unwrap().0, chains);
    grouped.inventory_groups = Some(vec![vec!["prod".into(), "web-servers".into()]]);
    match store.update_server(g.id, &grouped, &Actor::system()).await {
        Err(StoreError::Invalid {
            field: "inventory_groups",
            reason,
        }) => assert!(reason.contains("'web-servers'"), "{reason}"),
        other => panic!("a bad group name must be refused: {other:?}"),
    }
    assert_eq!(
        store
            .get_server(g.id)
            .await
            .unwrap()
            .inventory_groups
            .unwrap()
            .0,
        chains
    );
    grouped.inventory_groups = Some(Vec::new());
    let cleared = store
        .update_server(g.id, &grouped, &Actor::system())
        .await
        .unwrap();
    assert!(cleared.inventory_groups.is_none());
    store.delete_server(g.id, &Actor::system()).await.unwrap();
    assert!(matches!(
        store
            .create_server(
                &NewServer::new("web1.fra1", "10.0.0.6", "debian"),
                &Actor::system()
            )
            .await,
        Err(StoreError::Conflict(_))
    ));

    launch(&store, &f, 3).await;
    let err = store
        .delete_server(f.server.id, &Actor::system())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "server web1.fra1 has 3 jobs; deactivate it instead"
    );
    let off = store
        .set_server_active(f.server.id, false, &Actor::system())
        .await
        .unwrap();
    assert!(!off.is_active);
    let active = store
        .list_servers(
            &ServerFilter {
                active: Some(true),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        active
            .items
            .iter()
            .map(|s| s.hostname.as_str())
            .collect::<Vec<_>>(),
        vec!["x"]
    );
    store
        .delete_server(local.id, &Actor::system())
        .await
        .unwrap();
    assert!(matches!(
        store.get_server(local.id).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn playbooks_soft_delete_and_conflict(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    assert_eq!(f.playbook.variables.as_ref().unwrap().0["greeting"], "hi");
    let mut dup = NewPlaybook {
        name: "ping".into(),
        description: None,
        file_path: "/tmp/p.yml".into(),
        file_hash: "b".repeat(64),
        tags: None,
        variables: None,
    };
    assert!(matches!(
        store.create_playbook(&dup, &Actor::system()).await,
        Err(StoreError::Conflict(_))
    ));
    dup.name = "other".into();
    dup.file_hash = "XYZ".into();
    assert!(matches!(
        store.create_playbook(&dup, &Actor::system()).await,
        Err(StoreError::Invalid {
            field: "file_hash",
            ..
        })
    ));
    store
        .set_playbook_active(f.playbook.id, false, &Actor::system())
        .await
        .unwrap();
    let launch_inactive = store
        .create_jobs(
            &[NewJob {
                playbook_id: f.playbook.id,
                server_id: f.server.id,
                user_id: f.admin.id,
                extra_vars: None,
                extra_vars_templated: false,
                run_options: None,
                revision_id: None,
                credential_ids: Vec::new(),
                job_uuid: outpost_controller::model::JobUuid::new_v4(),
                template_id: None,
                time_limit_secs: None,
                secret_vars: None,
                schedule_id: None,
                wave: 0,
            }],
            &Actor::system(),
        )
        .await;
    assert!(
        matches!(
            launch_inactive,
            Err(StoreError::Invalid {
                field: "playbook",
                ..
            })
        ),
        "{launch_inactive:?}"
    );
    assert_eq!(
        store
            .list_playbooks(Some(true), Paging::default())
            .await
            .unwrap()
            .total,
        0
    );
    assert_eq!(
        store
            .list_playbooks(None, Paging::default())
            .await
            .unwrap()
            .total,
        1
    );
}

async fn jobs_move_only_forward(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let jobs = launch(&store, &f, 2).await;
    let job = &jobs[0];
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.job_id.to_string().len(), 36);
    assert_eq!(job.extra_vars.as_ref().unwrap().0["x"], 1);

    let ok = |s| Outcome {
        status: s,
        exit_code: Some(0),
        error_message: None,
        unreachable: false,
        started: true,
    };
    let life = Lifecycle::new(store.clone());
    // No agent row: the FK on MySQL refuses the claim; create one the plain way.
    sqlx_insert_agent(&db, &store).await;
    let a = claimed(&life, job).await;
    let stale = Attempt {
        job: job.id,
        dispatch_id: "stale-dispatch".into(),
    };
    assert!(!life.start(&stale).await.unwrap());
    assert!(
        !life.finish(&stale, &ok(Final::Success)).await.unwrap(),
        "finishing is tied to the dispatch id"
    );
    assert!(life.start(&a).await.unwrap());
    assert!(life.finish(&a, &ok(Final::Success)).await.unwrap());
    let done = store.get_job(job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Success);
    assert!(done.started_at.is_some() && done.completed_at.is_some());
    // Final is final.
    assert!(!life.finish(&a, &ok(Final::Failed)).await.unwrap());
    assert!(!life.start(&a).await.unwrap());
    // Finishing as pending or running cannot be written: `Final` has no such states.
    // The agent ran a job whose "started" was never recorded: its outcome records both.
    let b = claimed(&life, &jobs[1]).await;
    assert!(life.finish(&b, &ok(Final::Success)).await.unwrap());
    let j = store.get_job(jobs[1].id).await.unwrap();
    assert_eq!(j.status, JobStatus::Success);
    assert!(j.started_at.is_some());
    let more = launch(&store, &f, 1).await;

    let by_status = store
        .list_jobs(
            &JobFilter {
                status: Some(JobStatus::Pending),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    assert_eq!(by_status.total, 1);
    assert_eq!(by_status.items[0].id, more[0].id);
    let page = store
        .list_jobs(&JobFilter::default(), Paging::new(1, 1))
        .await
        .unwrap();
    assert_eq!((page.total, page.items.len()), (3, 1));
    assert_eq!(store.get_job_by_uuid(job.job_id).await.unwrap().id, job.id);
}

/// Agents arrive with the controller issue; until then the contract inserts one row by hand.
async fn sqlx_insert_agent(db: &TestDb, _store: &Store) {
    use sqlx::Connection;
    let sql =
        "INSERT INTO agents (uuid, name) VALUES ('00000000-0000-0000-0000-000000000001', 'a1')";
    match db.backend {
        Backend::MariaDb => {
            let mut c = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
}

async fn claim_is_exclusive(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let jobs = launch(&store, &f, 20).await;
    let agent = outpost_controller::model::AgentId(1);
    let life = Lifecycle::new(store.clone());
    // Two racing claimers per job: exactly one wins each.
    let mut handles = Vec::new();
    for job in &jobs {
        for _ in 0..2 {
            let (life, id, server) = (life.clone(), job.id, job.server_id);
            handles.push(tokio::spawn(async move {
                life.claim(id, server, agent, 1000).await.unwrap()
            }));
        }
    }
    let mut wins = 0;
    for h in handles {
        wins += matches!(h.await.unwrap(), Claim::Claimed(_)) as usize;
    }
    assert_eq!(wins, jobs.len());
    assert!(store.unassigned_jobs(100).await.unwrap().is_empty());
    // Released with the wrong dispatch id: nothing happens; with the right one: back in the queue.
    let j = store.get_job(jobs[0].id).await.unwrap();
    let dispatch = j.dispatch_id.clone().unwrap();
    let wrong = Attempt {
        job: j.id,
        dispatch_id: "nope".into(),
    };
    assert_eq!(life.release(&wrong, "x").await.unwrap(), Released::NotHeld);
    let right = Attempt {
        job: j.id,
        dispatch_id: dispatch,
    };
    assert_eq!(
        life.release(&right, "agent rejected: at capacity")
            .await
            .unwrap(),
        Released::Queued
    );
    let queue = store.unassigned_jobs(100).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(
        queue[0].pending_reason.as_deref(),
        Some("agent rejected: at capacity")
    );
}

async fn cancel_pending_and_running(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    sqlx_insert_agent(&db, &store).await;
    let jobs = launch(&store, &f, 2).await;
    let actor = Actor::user(f.admin.id);
    let life = Lifecycle::new(store.clone());
    assert_eq!(
        life.cancel(jobs[0].id, &actor).await.unwrap(),
        CancelResult::Cancelled
    );
    assert_eq!(
        store.get_job(jobs[0].id).await.unwrap().status,
        JobStatus::Cancelled
    );
    let again = life.cancel(jobs[0].id, &actor).await.unwrap_err();
    assert!(
        again.to_string().contains("is cancelled: cannot cancel it"),
        "{again}"
    );

    let a = claimed(&life, &jobs[1]).await;
    assert!(life.start(&a).await.unwrap());
    assert_eq!(
        life.cancel(jobs[1].id, &actor).await.unwrap(),
        CancelResult::Requested
    );
    let j = store.get_job(jobs[1].id).await.unwrap();
    assert_eq!(j.status, JobStatus::Running);
    assert!(j.cancel_requested_at.is_some());
    let cancelled = Outcome {
        status: Final::Cancelled,
        exit_code: None,
        error_message: Some("cancelled by admin".into()),
        unreachable: false,
        started: true,
    };
    assert!(life.finish(&a, &cancelled).await.unwrap());
    let audit = store
        .list_audit(
            &AuditFilter {
                action: Some("CANCEL".into()),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    assert_eq!(audit.total, 2);
    assert_eq!(audit.items[0].user_id, Some(f.admin.id));
}

/// A page of long lines ends at its byte budget, the next page takes up where it stopped, and
/// the store answers on after each cut (on MySQL a cut page closes its connection rather than
/// read the rest of its rows).
async fn log_pages_stop_at_their_byte_budget(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let job = launch(&store, &f, 1).await.remove(0);
    let big = "x".repeat(60 * 1024);
    let lines: Vec<NewLogLine> = (1..=150)
        .map(|n| NewLogLine {
            job: job.id,
            line_number: n,
            content: format!("{n:03}{big}"),
            level: None,
            timestamp: Utc::now(),
        })
        .collect();
    for chunk in lines.chunks(10) {
        store.insert_log_lines(chunk).await.unwrap();
    }
    let budget = 1024 * 1024;
    let (mut after, mut seen, mut cuts) = (0, Vec::new(), 0);
    loop {
        let page = store
            .log_page(job.id, after, (None, None), 1000, budget)
            .await
            .unwrap();
        let bytes: usize = page.lines.iter().map(|l| l.content.len()).sum();
        assert!(bytes <= budget, "{bytes} bytes in one page");
        assert!(!page.more, "the limit is never reached here");
        cuts += usize::from(page.cut);
        let Some(last) = page.lines.last() else { break };
        after = last.line_number;
        seen.extend(page.lines.iter().map(|l| l.line_number));
        // The store answers between pages, on whatever connection the pool gives.
        assert_eq!(store.log_extent(job.id).await.unwrap(), (150, 150));
    }
    assert_eq!(seen, (1..=150).collect::<Vec<i32>>());
    assert_eq!(
        cuts,
        150 / 17,
        "17 lines of 60 KiB fill each 1 MiB page but the last"
    );
    // The line limit ends a page and tells that more follow.
    let page = store
        .log_page(job.id, 0, (None, None), 3, budget)
        .await
        .unwrap();
    assert_eq!(page.lines.len(), 3);
    assert!(page.more && !page.cut);
}

async fn logs_are_idempotent_and_ordered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let jobs = launch(&store, &f, 2).await;
    let now = Utc::now();
    let lines = |job, range: std::ops::RangeInclusive<i32>| -> Vec<NewLogLine> {
        range
            .map(|n| NewLogLine {
                job,
                line_number: n,
                content: format!("line {n} ✓"),
                level: Some("INFO".into()),
                timestamp: now,
            })
            .collect()
    };
    // Two jobs interleaved in one call, more than one statement's worth.
    let mut batch = lines(jobs[0].id, 1..=2500);
    batch.extend(lines(jobs[1].id, 1..=10));
    assert_eq!(store.insert_log_lines(&batch).await.unwrap(), 2510);
    // A replay that overlaps stored lines stores only the new ones.
    assert_eq!(
        store
            .insert_log_lines(&lines(jobs[0].id, 2400..=2600))
            .await
            .unwrap(),
        100
    );
    assert_eq!(store.log_extent(jobs[0].id).await.unwrap(), (2600, 2600));
    let page = store.read_log_lines(jobs[0].id, 2598, 10).await.unwrap();
    assert_eq!(
        page.iter().map(|l| l.line_number).collect::<Vec<_>>(),
        vec![2599, 2600]
    );
    assert_eq!(page[0].content, "line 2599 ✓");
    let first = store.read_log_lines(jobs[0].id, 0, 3).await.unwrap();
    assert_eq!(
        first.iter().map(|l| l.line_number).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(store.log_extent(jobs[1].id).await.unwrap(), (10, 10));
}

async fn tickets_and_audit_listing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let jobs = launch(&store, &f, 1).await;
    let t = store
        .create_ticket(
            &NewTicket {
                job_id: jobs[0].id,
                created_by: f.admin.id,
                title: "x".repeat(300),
                description: Some("details".into()),
                priority: TicketPriority::for_environment(f.server.environment.as_deref()),
            },
            &Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(t.title.chars().count(), 255);
    assert_eq!(
        (t.status, t.priority),
        (TicketStatus::Open, TicketPriority::High)
    );
    let resolved = store
        .set_ticket_status(t.id, TicketStatus::Resolved, &Actor::user(f.admin.id))
        .await
        .unwrap();
    assert!(resolved.resolved_at.is_some());
    let reopened = store
        .set_ticket_status(t.id, TicketStatus::Open, &Actor::user(f.admin.id))
        .await
        .unwrap();
    assert!(reopened.resolved_at.is_none());
    let open = store
        .list_tickets(
            &TicketFilter {
                status: Some(TicketStatus::Open),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    assert_eq!(open.total, 1);

    let all = store
        .list_audit(&AuditFilter::default(), Paging::new(500, 0))
        .await
        .unwrap();
    // admin, server, playbook, job launch, ticket create, two ticket updates
    assert_eq!(
        all.total,
        7,
        "{:#?}",
        all.items
            .iter()
            .map(|a| (&a.action, &a.resource_type))
            .collect::<Vec<_>>()
    );
    assert!(
        all.items
            .windows(2)
            .all(|w| w[0].timestamp >= w[1].timestamp),
        "newest first"
    );
    let server_history = store
        .list_audit(
            &AuditFilter {
                resource_type: Some("server".into()),
                resource_id: Some(f.server.id.0),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    assert_eq!(server_history.total, 1);
    assert_eq!(server_history.items[0].user_id, Some(f.admin.id));
}

async fn retention_deletes_old_lines_in_batches(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let jobs = launch(&store, &f, 1).await;
    let old = Utc::now() - Duration::days(100);
    let lines: Vec<NewLogLine> = (1..=25)
        .map(|n| NewLogLine {
            job: jobs[0].id,
            line_number: n,
            content: "x".into(),
            level: None,
            timestamp: if n <= 20 { old } else { Utc::now() },
        })
        .collect();
    store.insert_log_lines(&lines).await.unwrap();
    let cutoff = Utc::now() - Duration::days(90);
    assert_eq!(store.delete_log_lines_before(cutoff, 8).await.unwrap(), 8);
    assert_eq!(store.delete_log_lines_before(cutoff, 8).await.unwrap(), 8);
    assert_eq!(store.delete_log_lines_before(cutoff, 8).await.unwrap(), 4);
    assert_eq!(store.delete_log_lines_before(cutoff, 8).await.unwrap(), 0);
    assert_eq!(store.log_extent(jobs[0].id).await.unwrap(), (25, 5));
}

/// Two controllers claiming the same slot: one wins (the conditional UPDATE), and the slot's
/// run row cannot be written twice; a claim never launched is settled as failed.
async fn a_schedule_slot_is_claimed_once(backend: Backend) {
    use outpost_controller::model::{OverlapRule, ScheduleRunStatus};
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let actor = Actor::user(f.admin.id);
    assert_eq!(
        store
            .earliest_slot(Utc::now() - Duration::hours(2))
            .await
            .unwrap(),
        None,
        "no schedule yet"
    );
    let (s, slot, next) = due_schedule(&store, &f, OverlapRule::Skip).await;
    assert_eq!(
        store
            .due_schedules(Utc::now(), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Paged past it, nothing else is due.
    assert!(store
        .due_schedules(Utc::now(), Some((slot, s.id)), 10)
        .await
        .unwrap()
        .is_empty());
    // The firing task sleeps until the earliest slot after its pass began.
    let before = slot - Duration::seconds(1);
    assert_eq!(store.earliest_slot(before).await.unwrap(), Some(slot));
    assert_eq!(store.earliest_slot(slot).await.unwrap(), None);
    // A claimed run, as an earlier version wrote before its launch.
    let claim = |controller: &str| {
        slot_claim(
            &s,
            (slot, next),
            (ScheduleRunStatus::Claimed, 0),
            controller,
        )
    };
    let (ca, cb) = (claim("ctl-a"), claim("ctl-b"));
    let (a, b) = tokio::join!(store.claim_slot(&ca), store.claim_slot(&cb));
    assert_eq!(
        [a.unwrap(), b.unwrap()].iter().filter(|w| **w).count(),
        1,
        "exactly one claim wins"
    );
    assert!(store
        .due_schedules(Utc::now(), None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.earliest_slot(before).await.unwrap(), Some(next));
    // Even with next_run_at put back, the slot's run row is there: no second firing.
    put_back(&store, &s, slot, &actor).await;
    assert!(!store.claim_slot(&claim("ctl-b")).await.unwrap());
    // …and it does not stay due: its next slot moved on all the same.
    assert_eq!(
        store.get_schedule(s.id).await.unwrap().next_run_at,
        Some(next)
    );
    // The winner stopped before launching: settled at its next start.
    let winner = a_or_b(&store, &s).await;
    assert_eq!(
        store
            .fail_abandoned_claims(&winner, Utc::now() - Duration::hours(1))
            .await
            .unwrap(),
        1
    );
    let runs = store
        .list_schedule_runs(s.id, Paging::default())
        .await
        .unwrap();
    assert_eq!(runs.items.len(), 1);
    assert_eq!(runs.items[0].status, ScheduleRunStatus::Failed);
    assert!(runs.items[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("stopped before launching"));
}

/// A slot that fires is claimed in its launch's commit: of two controllers firing it at once
/// one launches and the other creates nothing; a launch that fails writes nothing, the slot
/// still due; a slot that has its run already moves on without launching again.
async fn a_slot_fires_in_its_launchs_commit(backend: Backend) {
    use outpost_controller::lifecycle::Launching;
    use outpost_controller::model::{CredentialId, OverlapRule, ScheduleRunStatus};
    use outpost_controller::store::schedules::{SlotClaim, SlotClaimed};
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let life = Lifecycle::new(store.clone());
    let f = fixture(&store).await;
    let actor = Actor::user(f.admin.id);
    let (s, slot, next) = due_schedule(&store, &f, OverlapRule::Queue).await;
    let claim =
        |controller: &str| slot_claim(&s, (slot, next), (ScheduleRunStatus::Fired, 1), controller);
    let scheduled = || {
        let mut jobs = launch_plan(&f, 1);
        jobs[0].schedule_id = Some(s.id);
        jobs
    };
    fn fire<'a>(jobs: &'a [NewJob], slot: &'a SlotClaim) -> Launching<'a> {
        Launching {
            jobs,
            slot: Some(slot),
            ..Default::default()
        }
    }
    let runs = || async {
        store
            .list_schedule_runs(s.id, Paging::default())
            .await
            .unwrap()
            .items
    };
    // The launch fails (its credential is gone) after the slot's UPDATE: all of it is undone.
    let mut bad = scheduled();
    bad[0].credential_ids = vec![CredentialId(999_999)];
    let failed = life.launch(fire(&bad, &claim("ctl-a")), &actor, None).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(
        store.get_schedule(s.id).await.unwrap().next_run_at,
        Some(slot),
        "the slot is still due"
    );
    assert!(runs().await.is_empty());
    assert!(store.unassigned_jobs(100).await.unwrap().is_empty());
    // Two controllers at once: one launch.
    let (ja, jb, ca, cb) = (scheduled(), scheduled(), claim("ctl-a"), claim("ctl-b"));
    let (a, b) = tokio::join!(
        life.launch(fire(&ja, &ca), &actor, None),
        life.launch(fire(&jb, &cb), &actor, None),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (won, lost, winner) = match (a.slot, b.slot) {
        (Some(SlotClaimed::Ours), Some(SlotClaimed::Taken)) => (a, b, "ctl-a"),
        (Some(SlotClaimed::Taken), Some(SlotClaimed::Ours)) => (b, a, "ctl-b"),
        other => panic!("exactly one launch fires the slot: {other:?}"),
    };
    assert_eq!(won.jobs.len(), 1);
    assert!(lost.jobs.is_empty() && lost.run.is_none());
    assert_eq!(store.unassigned_jobs(100).await.unwrap().len(), 1);
    let recorded = runs().await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].status, ScheduleRunStatus::Fired);
    assert_eq!(recorded[0].jobs, 1);
    assert_eq!(recorded[0].controller_id.as_deref(), Some(winner));
    assert_eq!(
        store.get_schedule(s.id).await.unwrap().next_run_at,
        Some(next)
    );
    // Put back, the slot has its run: it moves on, and nothing is launched again.
    put_back(&store, &s, slot, &actor).await;
    let jobs = scheduled();
    let twice = life
        .launch(fire(&jobs, &claim("ctl-b")), &actor, None)
        .await
        .unwrap();
    assert_eq!(twice.slot, Some(SlotClaimed::FiredBefore));
    assert!(twice.jobs.is_empty());
    assert_eq!(
        store.get_schedule(s.id).await.unwrap().next_run_at,
        Some(next)
    );
    assert_eq!(store.unassigned_jobs(100).await.unwrap().len(), 1);
    assert_eq!(runs().await.len(), 1);
}

/// A schedule of a template on the fixture's server whose slot was a second ago, and its next
/// slot an hour after it.
/// Puts `s`'s next slot back to `slot`, as if it had not been claimed.
async fn put_back(
    store: &Store,
    s: &outpost_controller::model::Schedule,
    slot: chrono::DateTime<Utc>,
    actor: &Actor,
) {
    let mut again = store.get_schedule(s.id).await.unwrap();
    again.next_run_at = Some(slot);
    store
        .update_schedule(&again, &["next_run_at"], actor)
        .await
        .unwrap();
}

/// Schedules due at the same slot are claimed side by side: a claim held open (a launch
/// written ahead of its slot holds its transaction until the slot) keeps no other schedule's
/// claim waiting. On MariaDB the claim's UPDATE once went through the index every schedule due
/// at that slot shares, and waited for the neighbours' held claims.
async fn slots_due_together_are_claimed_apart(backend: Backend) {
    use outpost_controller::model::ScheduleRunStatus;
    use outpost_controller::store::schedules::NewSchedule;
    use outpost_controller::store::templates::NewTemplate;
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let actor = Actor::user(f.admin.id);
    let slot = Utc::now().trunc_subsecs(0) - Duration::seconds(1);
    let mut due = Vec::new();
    for i in 0..5 {
        let t = store
            .create_template(
                &NewTemplate::of_playbook(&format!("t{i}"), f.playbook.id, &[&f.server.hostname]),
                &actor,
            )
            .await
            .unwrap();
        let s = store
            .create_schedule(&NewSchedule::hourly(&format!("s{i}"), t.id, slot), &actor)
            .await
            .unwrap();
        due.push(s);
    }
    let claim = |s| {
        slot_claim(
            s,
            (slot, slot + Duration::hours(1)),
            (ScheduleRunStatus::Fired, 1),
            "ctl-a",
        )
    };
    // The last schedule's claim (the highest id), held open by another connection as a launch
    // holds it: its UPDATE took the gap after its entry of the due index, where the others move theirs.
    let mut holder;
    let mut held = None;
    if backend == Backend::MariaDb {
        use outpost_controller::store::Dialect;
        use sqlx::Connection;
        holder = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
        // By the primary key alone, whatever the optimizer would choose: the index of due
        // slots would lock the other schedules' entries (the bench's held launches waited
        // on them), which a lone claim held here does not always show.
        let sql = outpost_controller::store::schedules::claim_sql(Dialect::Mysql);
        let plan: Vec<sqlx::mysql::MySqlRow> = sqlx::query(&format!("EXPLAIN {sql}"))
            .bind((slot + Duration::hours(1)).naive_utc())
            .bind(due[4].id)
            .bind(slot.naive_utc())
            .fetch_all(&mut holder)
            .await
            .unwrap();
        let keys: Vec<Option<String>> = plan
            .iter()
            .map(|r| sqlx::Row::try_get(r, "key").unwrap())
            .collect();
        assert_eq!(keys, [Some("PRIMARY".to_owned())], "the claim's plan");
        let mut tx = holder.begin().await.unwrap();
        let moved = sqlx::query(outpost_controller::store::schedules::claim_sql(
            Dialect::Mysql,
        ))
        .bind((slot + Duration::hours(1)).naive_utc())
        .bind(due[4].id)
        .bind(slot.naive_utc())
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(moved, 1);
        sqlx::query(
            "INSERT INTO schedule_runs (schedule_id, slot_at, status, jobs, controller_id, created_at) \
             VALUES (?, ?, 'fired', 1, 'ctl-b', ?)",
        )
        .bind(due[4].id)
        .bind(slot.naive_utc())
        .bind(Utc::now().naive_utc())
        .execute(&mut *tx)
        .await
        .unwrap();
        held = Some(tx);
    }
    // Each waits 5 s at most; the held claim is let go before anything is asserted, so that
    // a claim that waited fails the test instead of hanging it.
    let mut waited = Vec::new();
    for s in due.iter().filter(|s| held.is_none() || s.id != due[4].id) {
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            store.claim_slot(&claim(s)),
        )
        .await
        {
            Ok(claimed) => assert!(claimed.unwrap(), "{} is claimed", s.name),
            Err(_) => waited.push(s.name.clone()),
        }
    }
    if let Some(tx) = held {
        tx.rollback().await.unwrap();
    }
    assert!(
        waited.is_empty(),
        "claims that waited for another schedule's: {waited:?}"
    );
    if backend == Backend::MariaDb {
        assert!(store.claim_slot(&claim(&due[4])).await.unwrap());
    }
}

/// `controller`'s claim of `s`'s `slot`, moving it on to `next`, with the slot's one run.
fn slot_claim(
    s: &outpost_controller::model::Schedule,
    (slot, next): (chrono::DateTime<Utc>, chrono::DateTime<Utc>),
    (status, jobs): (outpost_controller::model::ScheduleRunStatus, i32),
    controller: &str,
) -> outpost_controller::store::schedules::SlotClaim {
    use outpost_controller::store::schedules::{NewRun, SlotClaim};
    SlotClaim {
        schedule: s.id,
        slot,
        next: Some(next),
        runs: vec![NewRun {
            slot_at: slot,
            status,
            reason: None,
            jobs,
        }],
        controller: controller.into(),
    }
}

async fn due_schedule(
    store: &Store,
    f: &Fixture,
    overlap: outpost_controller::model::OverlapRule,
) -> (
    outpost_controller::model::Schedule,
    chrono::DateTime<Utc>,
    chrono::DateTime<Utc>,
) {
    use outpost_controller::store::schedules::NewSchedule;
    use outpost_controller::store::templates::NewTemplate;
    let actor = Actor::user(f.admin.id);
    let t = store
        .create_template(
            &NewTemplate::of_playbook("t", f.playbook.id, &[&f.server.hostname]),
            &actor,
        )
        .await
        .unwrap();
    let slot = Utc::now().trunc_subsecs(0) - Duration::seconds(1);
    let s = store
        .create_schedule(
            &NewSchedule {
                overlap,
                ..NewSchedule::hourly("hourly", t.id, slot)
            },
            &actor,
        )
        .await
        .unwrap();
    (s, slot, slot + Duration::hours(1))
}

/// The controller that holds a schedule's only run.
async fn a_or_b(store: &Store, s: &outpost_controller::model::Schedule) -> String {
    let runs = store
        .list_schedule_runs(s.id, Paging::default())
        .await
        .unwrap();
    runs.items[0].controller_id.clone().unwrap_or_default()
}

/// The dashboard's chart aggregates: per hour and status, per datacenter (the server's routing
/// tag, else the label of the agent that ran the job), and the newest durations, bounded.
async fn dashboard_charts_aggregate_alike(backend: Backend) {
    use outpost_controller::store::dashboard::{DatacenterCount, HourCount};
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let untagged = store
        .create_server(
            &NewServer::new("any1", "10.0.0.6", "debian"),
            &Actor::user(f.admin.id),
        )
        .await
        .unwrap();
    db.exec(
        "INSERT INTO agents (uuid, name, labels) VALUES ('00000000-0000-0000-0000-000000000001', 'a1', '{\"dc\": \"lon\"}')",
    )
    .await;
    let mut jobs = launch(&store, &f, 5).await;
    let other = Fixture {
        admin: f.admin.clone(),
        server: untagged,
        playbook: f.playbook.clone(),
    };
    jobs.extend(launch(&store, &other, 2).await);
    let now = Utc::now().trunc_subsecs(0);
    let fmt = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    // (job, status, created this long ago, ran for, agent)
    let plan: [(usize, &str, Duration, Option<i64>, &str); 6] = [
        (0, "success", Duration::hours(1), Some(10), "NULL"),
        (1, "success", Duration::hours(1), Some(20), "NULL"),
        (2, "failed", Duration::hours(3), Some(30), "NULL"),
        (3, "success", Duration::days(8), Some(50), "NULL"),
        (5, "success", Duration::hours(3), Some(40), "1"),
        (6, "failed", Duration::hours(3), None, "NULL"),
    ];
    for (i, status, ago, ran, agent) in plan {
        let created = now - ago;
        let (started, completed) = match ran {
            Some(secs) => (
                format!("'{}'", fmt(created + Duration::seconds(1))),
                format!("'{}'", fmt(created + Duration::seconds(1 + secs))),
            ),
            None => ("NULL".into(), format!("'{}'", fmt(created))),
        };
        db.exec(&format!(
            "UPDATE jobs SET status = '{status}', created_at = '{}', started_at = {started}, \
                 completed_at = {completed}, agent_id = {agent} WHERE id = {}",
            fmt(created),
            jobs[i].id.0
        ))
        .await;
    }
    // Job 6's server could not be reached; job 4 stays pending, created now.
    db.exec(&format!(
        "UPDATE jobs SET unreachable = TRUE WHERE id = {}",
        jobs[6].id.0
    ))
    .await;
    let since = now - Duration::days(7);
    let hour = |ago: Duration| (now - ago).timestamp().div_euclid(3600);
    let mut per_hour = store.jobs_per_hour(since).await.unwrap();
    per_hour.sort_by_key(|h| (h.hour, h.status));
    let created_now = store.get_job(jobs[4].id).await.unwrap().created_at;
    let mut want = vec![
        HourCount {
            hour: hour(Duration::hours(3)),
            status: JobStatus::Success,
            count: 1,
        },
        HourCount {
            hour: hour(Duration::hours(3)),
            status: JobStatus::Failed,
            count: 2,
        },
        HourCount {
            hour: hour(Duration::hours(1)),
            status: JobStatus::Success,
            count: 2,
        },
        HourCount {
            hour: created_now.timestamp().div_euclid(3600),
            status: JobStatus::Pending,
            count: 1,
        },
    ];
    want.sort_by_key(|h| (h.hour, h.status));
    assert_eq!(per_hour, want);

    let mut per_dc = store
        .outcomes_per_datacenter(since, "dc", 100)
        .await
        .unwrap();
    per_dc.sort_by(|a, b| (&a.datacenter, a.status).cmp(&(&b.datacenter, b.status)));
    let dc = |d: Option<&str>, status, count| DatacenterCount {
        datacenter: d.map(str::to_owned),
        status,
        unreachable: false,
        count,
    };
    assert_eq!(
        per_dc,
        vec![
            DatacenterCount {
                unreachable: true,
                ..dc(None, JobStatus::Failed, 1)
            },
            dc(Some("fra1"), JobStatus::Success, 2),
            dc(Some("fra1"), JobStatus::Failed, 1),
            dc(Some("lon"), JobStatus::Success, 1),
        ]
    );
    assert_eq!(
        store.outcomes_per_datacenter(since, "dc", 1).await.unwrap(),
        vec![dc(Some("fra1"), JobStatus::Success, 2)],
        "the biggest group first, and no more rows than asked"
    );
    assert!(store
        .outcomes_per_datacenter(since, "d\"c", 100)
        .await
        .is_err());

    let mut secs: Vec<f64> = store
        .recent_durations(since, 100)
        .await
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(
                (d.playbook, d.playbook_name.as_str()),
                (f.playbook.id, "ping")
            );
            d.seconds
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    assert_eq!(secs, vec![10.0, 20.0, 30.0, 40.0]);
    let mut newest: Vec<f64> = store
        .recent_durations(since, 2)
        .await
        .unwrap()
        .iter()
        .map(|d| d.seconds)
        .collect();
    newest.sort_by(f64::total_cmp);
    assert_eq!(newest, vec![10.0, 20.0], "the newest jobs of the sample");
}

async fn task_results_land_once_and_filter(backend: Backend) {
    use outpost_controller::model::TaskStatus;
    use outpost_controller::store::results::{NewTaskResult, Recap, ResultFilter};
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let jobs = launch(&store, &f, 2).await;
    let row = |seq: i32, status| NewTaskResult {
        seq,
        host: "web1".into(),
        play: "site".into(),
        task: format!("task {seq} ✓"),
        action: "ansible.builtin.command".into(),
        status,
        started_at: Utc::now(),
        duration_ms: 1500,
        message: (status == TaskStatus::Failed).then(|| "x".repeat(1024)),
    };
    let rows: Vec<NewTaskResult> = (1..=700)
        .map(|i| {
            row(
                i,
                if i % 100 == 0 {
                    TaskStatus::Failed
                } else {
                    TaskStatus::Ok
                },
            )
        })
        .collect();
    assert_eq!(
        store.insert_task_results(jobs[0].id, &rows).await.unwrap(),
        700
    );
    // A replay overlapping what is stored lands only what is new.
    let again: Vec<NewTaskResult> = (650..=710).map(|i| row(i, TaskStatus::Changed)).collect();
    assert_eq!(
        store.insert_task_results(jobs[0].id, &again).await.unwrap(),
        10
    );
    let all = ResultFilter {
        limit: 5_000,
        ..ResultFilter::default()
    };
    let (got, total) = store.task_results(jobs[0].id, &all).await.unwrap();
    assert_eq!((got.len(), total), (710, 710));
    assert_eq!(
        got[649].status,
        TaskStatus::Ok,
        "the first write of a result stays"
    );
    assert_eq!(got[0].task, "task 1 ✓");
    let failed = ResultFilter {
        status: Some(TaskStatus::Failed),
        limit: 3,
        ..ResultFilter::default()
    };
    let (got, total) = store.task_results(jobs[0].id, &failed).await.unwrap();
    assert_eq!(total, 7);
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [100, 200, 300]
    );
    assert_eq!(got[0].message.as_deref().map(str::len), Some(1024));
    let first = ResultFilter {
        failed_first: true,
        limit: 2,
        ..ResultFilter::default()
    };
    let (got, _) = store.task_results(jobs[0].id, &first).await.unwrap();
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [100, 200]);
    let by_task = ResultFilter {
        task: Some("task 5 ✓"),
        limit: 10,
        ..ResultFilter::default()
    };
    assert_eq!(store.task_results(jobs[0].id, &by_task).await.unwrap().1, 1);
    assert_eq!(store.task_results(jobs[1].id, &all).await.unwrap().1, 0);
    // One recap per job: a resent outcome does not change it.
    let recap = Recap {
        ok: 3,
        failed: 1,
        unreachable: 0,
        ..Recap::default()
    };
    store.insert_recap(jobs[0].id, &recap).await.unwrap();
    store
        .insert_recap(
            jobs[0].id,
            &Recap {
                ok: 99,
                ..Recap::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.recap(jobs[0].id).await.unwrap(), Some(recap));
    assert_eq!(store.recap(jobs[1].id).await.unwrap(), None);
}

/// Jobs and audit records paged by cursor read alike on both backends: one launch makes all
/// its jobs in the same second, so the id alone orders them within it; a page's names come
/// from the joined rows.
async fn lists_page_by_cursor_with_names(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let mut jobs = launch(&store, &f, 7).await;
    jobs.reverse();
    let expected: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let mut seen = Vec::new();
    let mut paging = Paging::new(3, 0);
    let mut launched = 0;
    loop {
        let page = store
            .list_named_jobs(&JobFilter::default(), paging)
            .await
            .unwrap();
        assert_eq!((page.total, page.total_exact), (7 + launched, true));
        for l in &page.items {
            assert_eq!(l.playbook_name.as_deref(), Some(f.playbook.name.as_str()));
            assert_eq!(
                l.server_hostname.as_deref(),
                Some(f.server.hostname.as_str())
            );
            assert_eq!(l.agent_name, None);
        }
        seen.extend(page.items.iter().map(|l| l.job.id));
        match page.next {
            Some(c) => paging = paging.after(Some(c)),
            None => break,
        }
        // A launch between pages lands at the head, not in the pages still to come.
        launch(&store, &f, 1).await;
        launched += 1;
    }
    assert_eq!(seen, expected);

    let trail = store
        .list_audit(&AuditFilter::default(), Paging::new(1000, 0))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut paging = Paging::new(4, 0);
    loop {
        let page = store
            .list_audit(&AuditFilter::default(), paging)
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|a| a.id));
        match page.next {
            Some(c) => paging = paging.after(Some(c)),
            None => break,
        }
    }
    assert_eq!(seen, trail.items.iter().map(|a| a.id).collect::<Vec<_>>());
    assert!(trail.items.len() > 8, "the launches were audited");
}

/// Changes whose transaction reads before it writes, run side by side: on SQLite a deferred
/// transaction cannot wait for the write lock once it has read ("database is locked" at once,
/// whatever the busy timeout), which the API answered with a 500 under two concurrent
/// clients. Each change must wait its turn and land.
async fn changes_that_read_first_wait_their_turn(backend: Backend) {
    use outpost_controller::model::ProjectKind;
    use outpost_controller::store::projects::NewProject;
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let f = fixture(&store).await;
    let actor = Actor::user(f.admin.id);
    let mut ids = Vec::new();
    for i in 0..24 {
        let new = NewProject {
            name: format!("p{i}"),
            description: None,
            kind: ProjectKind::Git,
            git_url: Some(format!("https://git.example/p{i}.git")),
            git_ref: None,
            git_key_path: None,
            git_credential_id: None,
            inventory_path: None,
        };
        ids.push(
            store
                .create_project(&new, &actor)
                .await
                .expect("project")
                .id,
        );
    }
    // delete_project reads the project's revisions, then deletes, in one transaction.
    let deletes = ids.iter().map(|&id| {
        let (store, actor) = (store.clone(), actor.clone());
        tokio::spawn(async move { store.delete_project(id, &actor).await })
    });
    let mut failed = Vec::new();
    for (i, d) in futures_util::future::join_all(deletes)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(e) = d.expect("the delete's task") {
            failed.push(format!("p{i}: {e}"));
        }
    }
    assert!(failed.is_empty(), "deletes failed: {failed:#?}");
    let left = store
        .list_projects(None, Paging::new(100, 0))
        .await
        .expect("list");
    assert!(
        left.items.is_empty(),
        "every project deleted: {:?}",
        left.items
    );
}
