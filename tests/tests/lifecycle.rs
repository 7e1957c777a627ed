//! No job is ever stuck: whole-system tests of the job lifecycle with real controllers, agents,
//! ansible and MariaDB — a failure far longer than the columns, the database refusing the
//! "running" record, cancels racing the assignment and a reconnect, a session whose row another
//! controller took, an agent lost while its controller restarts, and two controllers holding a
//! server to its limit.

use std::time::Duration;

use outpost_controller::lifecycle::{CancelResult, Lifecycle};
use outpost_controller::model::{JobStatus, Paging};
use outpost_controller::store::audit::{Actor, AuditFilter};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{Agent, AgentOpts, Controller, ControllerOpts};
use outpost_tests::proxy::UdpProxy;
use outpost_tests::world::{sleeping_playbook, World};
use outpost_tests::{unique_mark, wait_for, wait_no_process, wait_process, Backend, TestDb};
use serde_json::json;
use sqlx::Connection;

const MINUTE: Duration = Duration::from_secs(60);

const QUICK: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"quick on {{ inventory_hostname }}\"\n";

/// A failing task whose output is three lines of 40,000 characters, exiting 3.
const LONG_FAILURE: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: fail loudly
      ansible.builtin.shell: "for i in 1 2 3; do head -c 40000 /dev/zero | tr '\\0' E; echo; done; exit 3"
"#;

async fn audit_count(w: &World, action: &str, job: i32) -> usize {
    let page = w
        .store
        .list_audit(
            &AuditFilter {
                action: Some(action.into()),
                resource_type: Some("job".into()),
                ..Default::default()
            },
            Paging::new(1000, 0),
        )
        .await
        .unwrap();
    page.items
        .iter()
        .filter(|e| e.resource_id == Some(job))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_failure_ends_failed_with_a_ticket_and_frees_the_server() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "production").await;
    let job = w
        .launch(&w.playbook("loud", LONG_FAILURE).await, &server)
        .await;
    let failed = w.wait_status(&job, JobStatus::Failed, 2 * MINUTE).await;
    assert_eq!(
        failed.exit_code,
        Some(2),
        "ansible-playbook exits 2 on a failed task"
    );
    let tickets = w.tickets(&job).await;
    assert_eq!(tickets.len(), 1);
    let d = tickets[0].description.clone().unwrap();
    assert!(d.len() <= 65_535, "{}", d.len());
    assert!(d.contains("EEEE") && d.contains("…[cut;"), "{}", &d[..300]);
    // The whole output is in the log (each line cut only at the agent's 32 KiB).
    let lines = w.lines(&job).await;
    assert!(lines
        .iter()
        .any(|l| l.content.contains(&"E".repeat(30_000))));
    // The server is free again: the next job runs.
    let next = w.launch(&w.playbook("quick", QUICK).await, &server).await;
    w.wait_status(&next, JobStatus::Success, 2 * MINUTE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refusing_the_running_record_still_runs_the_job_once_with_its_start() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    // A trigger refuses the first pending → running update; its mark is kept in a MyISAM
    // table, which the refused statement's rollback does not undo.
    let mut conn = sqlx::MySqlConnection::connect(&c.db.url).await.unwrap();
    sqlx::query("CREATE TABLE refused_once (n INT) ENGINE=MyISAM")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_running_once BEFORE UPDATE ON jobs FOR EACH ROW \
         BEGIN \
           IF NEW.status = 'running' AND OLD.status = 'pending' \
              AND (SELECT COUNT(*) FROM refused_once) = 0 THEN \
             INSERT INTO refused_once VALUES (1); \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused once by the test'; \
           END IF; \
         END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let job = w.launch(&w.playbook("quick", QUICK).await, &server).await;
    w.wait_status(&job, JobStatus::Success, 2 * MINUTE).await;
    let refused: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refused_once")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(refused, 1, "the refusal happened");
    assert_eq!(audit_count(w, "DISPATCH", job.id.0).await, 1);
    assert_eq!(audit_count(w, "START", job.id.0).await, 1);
    let lines = w.lines(&job).await;
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.content.starts_with("PLAY RECAP"))
            .count(),
        1,
        "ansible ran once"
    );
    w.assert_contiguous(&job).await;
    // Now every start's record is refused (its retries too): the agent's outcome records the
    // start it missed, so the job still has its START entry, before its FINISH, and a start
    // date.
    for sql in [
        "DROP TRIGGER refuse_running_once",
        "CREATE TRIGGER refuse_running BEFORE UPDATE ON jobs FOR EACH ROW \
         BEGIN \
           IF NEW.status = 'running' AND OLD.status = 'pending' THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; \
           END IF; \
         END",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    let job = w.launch(&w.playbook("quick-2", QUICK).await, &server).await;
    w.wait_status(&job, JobStatus::Success, 2 * MINUTE).await;
    assert_eq!(audit_count(w, "START", job.id.0).await, 1);
    assert_eq!(audit_count(w, "FINISH", job.id.0).await, 1);
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_logs WHERE resource_type = 'job' AND resource_id = ? ORDER BY id",
    )
    .bind(job.id.0)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(order, ["LAUNCH", "DISPATCH", "START", "FINISH"]);
    let details: String = sqlx::query_scalar(
        "SELECT CAST(details AS CHAR) FROM audit_logs WHERE resource_type = 'job' AND resource_id = ? AND action = 'START'",
    )
    .bind(job.id.0)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(details.contains("\"from_outcome\":true"), "{details}");
    let done = w.store.get_job(job.id).await.unwrap();
    assert!(done.started_at.is_some() && done.started_at <= done.completed_at);
    let _ = conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_dispatch_ends_the_job_cancelled() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let mark = unique_mark();
    let pb = w.playbook("sleep", &sleeping_playbook(&mark)).await;
    let life = Lifecycle::new(w.store.clone());
    for _ in 0..3 {
        let job = w.launch(&pb, &server).await;
        // Cancel the moment an agent is chosen, while the assignment is on its way.
        wait_for("the job to be claimed", MINUTE, || async {
            w.job(&job).await.agent_id.map(|_| ())
        })
        .await;
        let r = life.cancel(job.id, &Actor::user(w.admin.id)).await.unwrap();
        assert_eq!(r, CancelResult::Requested);
        w.wait_status(&job, JobStatus::Cancelled, MINUTE).await;
        wait_no_process(&mark, Duration::from_secs(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_a_dying_session_reaches_the_next_one() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::fast_failure()).await;
    let proxy = UdpProxy::start(c.ctl.agents).await;
    let mut agent = Agent::enroll(&c.ctl, "bastion", &[]);
    agent.start(&[proxy.addr], &AgentOpts::fast_failure());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let mark = unique_mark();
    let job = w
        .launch(
            &w.playbook("sleep", &sleeping_playbook(&mark)).await,
            &server,
        )
        .await;
    w.wait_status(&job, JobStatus::Running, MINUTE).await;
    // Its sleep runs: what the cancel must end.
    wait_process(&mark, MINUTE).await;
    // The network goes; the cancel is written to the old session before the controller
    // notices it is dead, and is lost with it.
    proxy.cut();
    let r = Lifecycle::new(w.store.clone())
        .cancel(job.id, &Actor::user(w.admin.id))
        .await
        .unwrap();
    assert_eq!(r, CancelResult::Requested);
    wait_for("the controller to drop the session", MINUTE, || async {
        let a = w.store.get_agent_by_name("bastion").await.ok()?;
        a.connected_controller.is_none().then_some(())
    })
    .await;
    proxy.restore();
    let cancelled = w.wait_status(&job, JobStatus::Cancelled, MINUTE).await;
    assert_eq!(
        cancelled.error_message.as_deref(),
        Some("cancelled on request")
    );
    wait_no_process(&mark, Duration::from_secs(10)).await;
    w.assert_contiguous(&job).await;
}

/// The session bastion's row names, while the row says it is on `controller`.
async fn session_on(db: &sqlx::MySqlPool, controller: &str) -> Option<String> {
    let (session, on): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT session_id, connected_controller FROM agents WHERE name = 'bastion'",
    )
    .fetch_optional(db)
    .await
    .unwrap()?;
    session.filter(|_| on.as_deref() == Some(controller))
}

/// Another controller's sweep takes the row of a session this one still holds (as it does when
/// a controller stops stamping its rows, cut off from the database for longer than the grace):
/// the holder closes that session at its next stamp, the agent reconnects, and its row names a
/// session again. Kept, the agent would look offline to everyone while this controller
/// dispatched to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_row_another_controller_took_is_closed_and_the_agent_reconnects() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let db = sqlx::MySqlPool::connect(&c.db.url).await.unwrap();
    let first = wait_for("the agent's session", MINUTE, || session_on(&db, "ctl-a")).await;
    // The statement another controller's sweep runs, with a cutoff that takes every row.
    let taken = w
        .store
        .orphan_sessions_lost(chrono::Utc::now() + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(taken, 1);
    // last_seen is stamped every 30 s; the stamp that finds the row gone closes the session.
    let second = wait_for("the agent back with a new session", 2 * MINUTE, || async {
        session_on(&db, "ctl-a").await.filter(|s| *s != first)
    })
    .await;
    assert_ne!(first, second);
    assert!(w
        .store
        .get_agent_by_name("bastion")
        .await
        .unwrap()
        .lost_at
        .is_none());
    // The new session takes work.
    let server = w.local_server("web1", json!({}), "dev").await;
    let job = w.launch(&w.playbook("quick", QUICK).await, &server).await;
    w.wait_status(&job, JobStatus::Success, 2 * MINUTE).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_lost_while_its_controller_restarts_fails_its_job_after_the_grace() {
    let opts = ControllerOpts {
        agent_grace_secs: 5,
        ..ControllerOpts::default()
    };
    let mut c = Cluster::start(Backend::MariaDb, opts).await;
    let mut agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "staging").await;
    let mark = unique_mark();
    let job = w
        .launch(
            &w.playbook("sleep", &sleeping_playbook(&mark)).await,
            &server,
        )
        .await;
    w.wait_status(&job, JobStatus::Running, MINUTE).await;
    agent.kill9();
    agent.reap_orphans();
    // The controller dies before it notices the agent is gone, and comes back.
    c.ctl.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.ctl.restart();
    let w = &c.world;
    let failed = w.wait_status(&job, JobStatus::Failed, MINUTE).await;
    assert!(
        failed
            .error_message
            .as_deref()
            .unwrap_or_default()
            .starts_with("agent lost: bastion did not come back within 5 s"),
        "{:?}",
        failed.error_message
    );
    assert_eq!(w.tickets(&job).await.len(), 1);
    let lost = w
        .store
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
    let a = w.store.get_agent_by_name("bastion").await.unwrap();
    assert_eq!((a.connected_controller, a.lost_at), (None, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_never_run_two_jobs_at_once_on_one_server() {
    let db = TestDb::mariadb().await;
    let data = tempfile::tempdir().unwrap();
    let w = World::new(&db.url).await;
    Controller::init(data.path(), &db.url);
    let a = Controller::start(data.path(), &db.url, "ctl-a", ControllerOpts::default());
    let b = Controller::start(data.path(), &db.url, "ctl-b", ControllerOpts::default());
    let mut agents = Vec::new();
    for (i, ctl) in [&a, &b].into_iter().enumerate() {
        let mut agent = Agent::enroll(ctl, &format!("agent-{i}"), &[]);
        agent.start(&[ctl.agents], &AgentOpts::default());
        agents.push(agent);
    }
    // Each run takes a lock directory on the target and fails if another run holds it.
    let lock = w.dir.path().join("one-at-a-time");
    let pb = w
        .playbook(
            "exclusive",
            &format!(
                "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.shell: \"mkdir {l} && sleep 0.3 && rmdir {l}\"\n",
                l = lock.display()
            ),
        )
        .await;
    let server = w.local_server("web1", json!({}), "dev").await;
    let mut jobs = Vec::new();
    for _ in 0..50 {
        jobs.push(w.launch(&pb, &server).await);
    }
    // The controller whose agent finishes a job hears of it first and may win every next
    // claim. So once ten have run, the agent that ran most of them is stopped (SIGTERM: it
    // finishes the job it holds and takes no more): the rest can only go through the other
    // controller, and that handover is where two holds would overlap if they could.
    let runs = || async {
        let mut runs_of = std::collections::HashMap::new();
        for job in &jobs {
            let j = w.job(job).await;
            if j.status == JobStatus::Success {
                *runs_of
                    .entry(j.agent_id.expect("the agent that ran it"))
                    .or_insert(0) += 1;
            }
        }
        runs_of
    };
    let early = wait_for("ten jobs to run", 5 * MINUTE, || async {
        let r = runs().await;
        (r.values().sum::<usize>() >= 10).then_some(r)
    })
    .await;
    let mut busiest = 0;
    for (i, agent) in agents.iter().enumerate() {
        let id = w.store.get_agent_by_name(&agent.name).await.unwrap().id;
        let best = w
            .store
            .get_agent_by_name(&agents[busiest].name)
            .await
            .unwrap()
            .id;
        if early.get(&id).copied().unwrap_or(0) > early.get(&best).copied().unwrap_or(0) {
            busiest = i;
        }
    }
    agents[busiest].stop(2 * MINUTE);
    for job in &jobs {
        w.wait_status(job, JobStatus::Success, 10 * MINUTE).await;
    }
    // Both controllers dispatched: agent-0 knows only ctl-a and agent-1 only ctl-b, so each
    // having run jobs means each controller held the server for some of them, and their
    // holds never overlapped (the lock directory above would have failed a job).
    let runs_of = runs().await;
    for (i, ctl) in ["ctl-a", "ctl-b"].into_iter().enumerate() {
        let agent = w
            .store
            .get_agent_by_name(&format!("agent-{i}"))
            .await
            .unwrap();
        assert!(
            runs_of.get(&agent.id).copied().unwrap_or(0) > 0,
            "{ctl} dispatched none of the 50 jobs: {runs_of:?}"
        );
    }
    drop(agents);
}
