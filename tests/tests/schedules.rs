//! Schedules and blackouts, whole-system: two controllers on one MariaDB fire each slot of a
//! seconds-resolution schedule exactly once; a controller down past its slots records one
//! skipped run and launches no burst; overlap "skip" skips while the previous run goes on; a
//! blackout holds a scheduled job and an operator's manual launch pending with the reason,
//! while an admin's launch runs; bad input is refused naming the field, and a deactivated
//! owner's run fails saying so.

use std::time::Duration;

use chrono::Utc;
use outpost_api::client::Client;
use outpost_api::*;
use outpost_controller::model::{JobStatus, Paging, Role};
use outpost_controller::store::audit::Actor;
use outpost_controller::store::jobs::JobFilter;
use outpost_controller::store::templates::NewTemplate;
use outpost_tests::api::{login, user, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{AgentOpts, Controller, ControllerOpts};
use outpost_tests::world::World;
use outpost_tests::{wait_for, Backend, TestDb};

const MINUTE: Duration = Duration::from_secs(60);
const QUICK: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: scheduled\n";

/// A template running `playbook` on `server`.
async fn template(w: &World, name: &str, playbook: &str, server: &str) {
    template_asking(w, name, playbook, server, Vec::new()).await;
}

/// A template with a survey.
async fn template_asking(
    w: &World,
    name: &str,
    playbook: &str,
    server: &str,
    survey: Vec<Question>,
) {
    let pb = w.playbook(playbook, QUICK).await;
    w.store
        .create_template(
            &NewTemplate {
                survey,
                ..NewTemplate::of_playbook(name, pb.id, &[server])
            },
            &Actor::user(w.admin.id),
        )
        .await
        .expect("template");
}

async fn schedule(api: &Client, name: &str, template: &str, cron: &str, overlap: OverlapRule) {
    api.schedules()
        .create(&NewScheduleRequest {
            name: name.into(),
            template: IdOrName::Name(template.into()),
            cron: cron.into(),
            timezone: "UTC".into(),
            enabled: true,
            ends_at: None,
            answers: None,
            overlap: Some(overlap),
        })
        .await
        .expect("schedule");
}

async fn runs(api: &Client, name: &str) -> Vec<ScheduleRunView> {
    let q = PageQuery {
        limit: Some(1000),
        offset: None,
    };
    api.schedules().runs(name, &q).await.expect("runs").items
}

/// Jobs of the server's playbook launched by schedules, oldest first.
async fn jobs_of(w: &World, server: &str) -> Vec<outpost_controller::model::Job> {
    let s = w
        .store
        .get_server_by_hostname(server)
        .await
        .expect("server");
    let f = JobFilter {
        server_id: Some(s.id),
        ..JobFilter::default()
    };
    let mut jobs = w
        .store
        .list_jobs(&f, Paging::new(1000, 0))
        .await
        .expect("jobs")
        .items;
    jobs.reverse();
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_fire_each_slot_once() {
    let db = TestDb::mariadb().await;
    let data = tempfile::tempdir().unwrap();
    let w = World::new(&db.url).await;
    Controller::init(data.path(), &db.url);
    let opts = ControllerOpts {
        extra: vec!["--schedule-grace-secs".into(), "5".into()],
        ..ControllerOpts::default()
    };
    let a = Controller::start(data.path(), &db.url, "ctl-a", opts.clone());
    let b = Controller::start(data.path(), &db.url, "ctl-b", opts);
    w.local_server("tick-1", serde_json::json!({}), "staging")
        .await;
    template(&w, "tick", "tick", "tick-1").await;
    let api = login(&a, "ops", PASSWORD).await;
    // No agent: the jobs stay pending, so "queue" lets every slot launch.
    schedule(
        &api,
        "every-2s",
        "tick",
        "*/2 * * * * *",
        OverlapRule::Queue,
    )
    .await;
    // A slot's launch is written just ahead of it and committed at it: a read that ended
    // before a slot (its snapshot taken before then) never sees that slot's job. Watched until
    // the schedule is disabled.
    let watching = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let (store, stop) = (w.store.clone(), watching.clone());
        let server = store
            .get_server_by_hostname("tick-1")
            .await
            .expect("server")
            .id;
        async move {
            let f = JobFilter {
                server_id: Some(server),
                ..JobFilter::default()
            };
            let mut early = Vec::new();
            let mut reads = 0u32;
            while !stop.is_cancelled() {
                let jobs = store
                    .list_jobs(&f, Paging::new(1000, 0))
                    .await
                    .expect("jobs")
                    .items;
                let ended = Utc::now();
                reads += 1;
                early.extend(
                    jobs.into_iter()
                        .filter(|j| j.created_at > ended)
                        .map(|j| (j.created_at, ended)),
                );
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (early, reads)
        }
    });
    wait_for("ten fired slots", MINUTE, || async {
        let r = runs(&api, "every-2s").await;
        (r.iter()
            .filter(|r| r.status == ScheduleRunStatus::Fired)
            .count()
            >= 10)
            .then_some(())
    })
    .await;
    login(&b, "ops", PASSWORD)
        .await
        .schedules()
        .update(
            "every-2s",
            &SchedulePatchRequest {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .expect("disable");
    tokio::time::sleep(Duration::from_secs(2)).await;
    watching.cancel();
    let (early, reads) = watcher.await.expect("the watcher");
    assert!(reads > 100, "the watcher read {reads} times");
    assert!(
        early.is_empty(),
        "jobs seen before their slot (the slot, when the read ended): {early:?}"
    );

    let r = runs(&api, "every-2s").await;
    let fired: Vec<_> = r
        .iter()
        .filter(|r| r.status == ScheduleRunStatus::Fired)
        .collect();
    assert!(
        r.iter().all(|r| r.status == ScheduleRunStatus::Fired),
        "every slot fired, none skipped or failed: {r:#?}"
    );
    assert!(
        fired.iter().all(|r| r.jobs == 1),
        "one job per slot: {r:#?}"
    );
    let mut slots: Vec<_> = fired.iter().map(|r| r.slot_at).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), fired.len(), "each slot once");
    for pair in slots.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_seconds(),
            2,
            "consecutive slots, none missed: {slots:?}"
        );
    }
    let jobs = jobs_of(&w, "tick-1").await;
    assert_eq!(jobs.len(), fired.len(), "exactly one job per fired slot");
    // Written ahead of the slot, a launch's rows are still dated at it, not a second before.
    let dated: Vec<_> = jobs.iter().map(|j| j.created_at).zip(&slots).collect();
    assert!(
        dated.iter().all(|(at, slot)| at >= *slot),
        "each slot's job dated at or after its slot (job, slot): {dated:?}"
    );
    let mut recorded: Vec<_> = fired.iter().map(|r| (r.slot_at, r.created_at)).collect();
    recorded.sort();
    assert!(
        recorded.iter().all(|(slot, at)| at >= slot),
        "each fired run recorded at or after its slot: {recorded:?}"
    );
    // What both controllers' logs say they launched is what the database recorded.
    let launched =
        a.log().matches("schedule fired").count() + b.log().matches("schedule fired").count();
    assert_eq!(
        launched,
        fired.len(),
        "launches logged by the two controllers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtime_past_grace_is_one_skipped_record_and_no_burst() {
    let mut c = Cluster::start(
        Backend::Sqlite,
        ControllerOpts {
            extra: vec!["--schedule-grace-secs".into(), "1".into()],
            ..ControllerOpts::default()
        },
    )
    .await;
    let w = &c.world;
    w.local_server("down-1", serde_json::json!({}), "staging")
        .await;
    template(w, "down", "down", "down-1").await;
    let api = login(&c.ctl, "ops", PASSWORD).await;
    schedule(
        &api,
        "every-3s",
        "down",
        "*/3 * * * * *",
        OverlapRule::Queue,
    )
    .await;
    wait_for("a first fired slot", MINUTE, || async {
        runs(&api, "every-3s")
            .await
            .iter()
            .any(|r| r.status == ScheduleRunStatus::Fired)
            .then_some(())
    })
    .await;
    c.ctl.stop();
    let before = jobs_of(&c.world, "down-1").await.len();
    // Past at least three slots and well past the grace.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let restarted = Utc::now();
    c.ctl.restart();
    let api = login(&c.ctl, "ops", PASSWORD).await;
    let skipped = wait_for("the missed slots recorded", MINUTE, || async {
        let r = runs(&api, "every-3s").await;
        let s: Vec<_> = r
            .into_iter()
            .filter(|r| r.status == ScheduleRunStatus::Skipped)
            .collect();
        (!s.is_empty()).then_some(s)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let jobs = jobs_of(&c.world, "down-1").await;
    assert_eq!(skipped.len(), 1, "one skipped record: {skipped:#?}");
    let reason = skipped[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("missed slots") && reason.contains("grace of 1 s"),
        "{reason}"
    );
    let missed: u32 = reason
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(missed >= 3, "the downtime's slots are counted: {reason}");
    // No burst: what the controller launched on coming back is at most the next regular slot.
    let burst = jobs
        .iter()
        .skip(before)
        .filter(|j| j.created_at <= restarted + chrono::Duration::milliseconds(1500))
        .count();
    assert!(burst <= 1, "{burst} jobs launched at restart");
    let late = Utc::now();
    assert!(
        jobs.len() - before <= 1 + ((late - restarted).num_seconds() as usize / 3 + 1),
        "no more than the regular slots since the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_and_blackouts_hold_jobs_pending_with_the_reason() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    user(w, "otto", Role::Operator).await;
    w.local_server("prod-1", serde_json::json!({}), "production")
        .await;
    template(w, "prod", "prod", "prod-1").await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let otto = login(&c.ctl, "otto", PASSWORD).await;
    // Operators may not write blackouts or schedules.
    let now = Utc::now();
    let freeze = NewBlackoutRequest {
        name: "freeze".into(),
        environment: Some("production".into()),
        timezone: "UTC".into(),
        weekly_start: None,
        weekly_end: None,
        starts_at: Some(now - chrono::Duration::hours(1)),
        ends_at: Some(now + chrono::Duration::hours(1)),
        applies_to_manual: true,
        enabled: true,
    };
    let refused = otto.blackouts().create(&freeze).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    let b = admin.blackouts().create(&freeze).await.expect("blackout");
    assert!(b.active_until.is_some(), "in force now: {b:?}");

    let _agent = c.agent("agent-1", &[], &AgentOpts::default());
    schedule(
        &admin,
        "prod-2s",
        "prod",
        "*/2 * * * * *",
        OverlapRule::Skip,
    )
    .await;
    let held = wait_for("the scheduled job held by the blackout", MINUTE, || async {
        let jobs = jobs_of(w, "prod-1").await;
        let j = jobs.into_iter().next()?;
        j.pending_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("blackout 'freeze' until"))
            .then_some(j)
    })
    .await;
    // Its next slots are skipped: the first run is still going (held).
    let r = wait_for("an overlapping slot skipped", MINUTE, || async {
        let r = runs(&admin, "prod-2s").await;
        r.iter()
            .any(|r| {
                r.status == ScheduleRunStatus::Skipped
                    && r.reason.as_deref() == Some("previous run still going (overlap rule: skip)")
            })
            .then_some(r)
    })
    .await;
    assert_eq!(
        r.iter()
            .filter(|r| r.status == ScheduleRunStatus::Fired)
            .count(),
        1,
        "one run fired, the rest skipped: {r:#?}"
    );
    admin
        .schedules()
        .update(
            "prod-2s",
            &SchedulePatchRequest {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .expect("disable");

    // A manual launch by an operator is held too (the window applies to manual launches)…
    let launch = |api: Client| async move {
        let r: LaunchResponse = api
            .post(
                "/api/v1/jobs",
                &serde_json::json!({"playbook": "prod", "servers": ["prod-1"]}),
            )
            .await
            .expect("launch");
        r.jobs[0].id.clone()
    };
    let op_job = launch(otto.clone()).await;
    // …an admin's is not: it runs now.
    let admin_job = launch(admin.clone()).await;
    let ended = outpost_tests::api::job_ended(&admin, &admin_job).await;
    assert_eq!(ended["status"], "success", "{ended}");
    let op: serde_json::Value = admin.get(&format!("/api/v1/jobs/{op_job}")).await.unwrap();
    assert_eq!(op["status"], "pending", "{op}");
    assert!(
        op["pending_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("blackout 'freeze' until")),
        "{op}"
    );
    let held = w.job(&held).await;
    assert_eq!(held.status, JobStatus::Pending);
    // Deleting the window lets the held jobs start.
    admin.blackouts().delete("freeze").await.expect("delete");
    let ended = outpost_tests::api::job_ended(&admin, &op_job).await;
    assert_eq!(ended["status"], "success", "{ended}");
}

/// The refusal's status and message.
fn refusal<T: std::fmt::Debug>(r: Result<T, outpost_api::client::ApiError>) -> (u16, String) {
    let e = r.expect_err("refused");
    (e.status().unwrap_or(0), e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_field_and_a_deactivated_owner_fails_the_run() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    w.local_server("own-1", serde_json::json!({}), "staging")
        .await;
    template(w, "plain", "plain", "own-1").await;
    let secret = Question {
        name: "token".into(),
        kind: QuestionKind::Secret,
        label: None,
        help: None,
        required: true,
        default: None,
        max_length: None,
        min: None,
        max: None,
        choices: Vec::new(),
        pattern: None,
    };
    template_asking(w, "secretive", "secretive", "own-1", vec![secret]).await;
    let ada = user(w, "ada", Role::Admin).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let req = |template: &str, cron: &str, tz: &str| NewScheduleRequest {
        name: "s".into(),
        template: IdOrName::Name(template.into()),
        cron: cron.into(),
        timezone: tz.into(),
        enabled: true,
        ends_at: None,
        answers: None,
        overlap: None,
    };
    let s = admin.schedules();
    for (r, field) in [
        (
            req("secretive", "0 * * * *", "UTC"),
            "required secret question (token)",
        ),
        (
            req("plain", "0 0 30 2 *", "UTC"),
            "cron: \"0 0 30 2 *\" never fires",
        ),
        (req("plain", "0 * * * *", "Mars/Base"), "timezone:"),
        (
            req("plain", &"1,".repeat(100), "UTC"),
            "cron: longer than 128",
        ),
        (req("plain", "61 * * * *", "UTC"), "cron:"),
        (
            req("nothing", "0 * * * *", "UTC"),
            "template: template 'nothing' not found",
        ),
    ] {
        let (status, msg) = refusal(s.create(&r).await);
        assert_eq!(status, 422, "{msg}");
        assert!(msg.contains(field), "{field}: {msg}");
    }
    let (status, msg) = refusal(
        admin
            .schedules()
            .preview(&PreviewRequest {
                cron: "* * * *".into(),
                timezone: "UTC".into(),
            })
            .await,
    );
    assert!(status == 422 && msg.starts_with("cron:"), "{msg}");
    let bad_window = NewBlackoutRequest {
        name: "w".into(),
        environment: None,
        timezone: "UTC".into(),
        weekly_start: Some("Fry 16:00".into()),
        weekly_end: Some("Mon 08:00".into()),
        starts_at: None,
        ends_at: None,
        applies_to_manual: false,
        enabled: true,
    };
    let (status, msg) = refusal(admin.blackouts().create(&bad_window).await);
    assert!(status == 422 && msg.contains("weekly_start"), "{msg}");
    assert!(
        admin
            .schedules()
            .list(&PageQuery {
                limit: None,
                offset: None
            })
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing half-written"
    );

    // A run launches as the schedule's owner: deactivated, the run fails and says why.
    login(&c.ctl, "ada", PASSWORD)
        .await
        .schedules()
        .create(&NewScheduleRequest {
            name: "ada-2s".into(),
            overlap: Some(OverlapRule::Queue),
            ..req("plain", "*/2 * * * * *", "UTC")
        })
        .await
        .expect("schedule");
    let _: serde_json::Value = admin
        .patch(
            &format!("/api/v1/users/{}", ada.id),
            &serde_json::json!({"is_active": false}),
        )
        .await
        .expect("deactivate");
    let failed = wait_for("a failed run", MINUTE, || async {
        runs(&admin, "ada-2s")
            .await
            .into_iter()
            .find(|r| r.status == ScheduleRunStatus::Failed)
    })
    .await;
    assert_eq!(
        failed.reason.as_deref(),
        Some("its owner ada is deactivated"),
        "{failed:?}"
    );
    assert_eq!(failed.jobs, 0);
}
