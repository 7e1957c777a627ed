//! A job's whole life through real processes: the controller, an enrolled agent over mTLS
//! QUIC, real ansible-playbook on a local connection, the store on SQLite and on MariaDB.

use std::time::Duration;

use outpost_controller::lifecycle::{CancelResult, Lifecycle};
use outpost_controller::model::{CredentialKind, JobStatus, Paging, TicketPriority};
use outpost_controller::store::audit::{Actor, AuditFilter};
use outpost_controller::store::credentials::NewCredential;
use outpost_controller::store::servers::NewServer;
use outpost_controller::store::tickets::TicketFilter;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{AgentOpts, ControllerOpts};
use outpost_tests::{wait_for, Backend};
use serde_json::json;
use sqlx::Connection;

const MINUTE: Duration = Duration::from_secs(60);

const HELLO: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: greet
      ansible.builtin.debug:
        msg: "hello from {{ inventory_hostname }}"
"#;

const FAIL: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: break on purpose
      ansible.builtin.command: /bin/false
"#;

async fn success_failure_and_ticket(backend: Backend) {
    let c = Cluster::start(backend, ControllerOpts::default()).await;
    let _agent = c.agent("bastion-fra1", &["dc=fra1"], &AgentOpts::default());
    let w = &c.world;
    let web = w
        .local_server("web1.fra1", json!({"dc": "fra1"}), "production")
        .await;
    let ok = w.playbook("hello", HELLO).await;
    let bad = w.playbook("fail", FAIL).await;

    let job = w.launch(&ok, &web).await;
    let done = w.wait_status(&job, JobStatus::Success, 2 * MINUTE).await;
    assert_eq!(done.exit_code, Some(0));
    assert!(done.started_at.is_some() && done.completed_at.is_some());
    let n = w.assert_contiguous(&job).await;
    let lines = w.lines(&job).await;
    assert!(
        lines
            .iter()
            .any(|l| l.content.contains("hello from web1.fra1")),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.content.starts_with("PLAY RECAP")));
    assert!(n >= 8, "{n} lines");
    assert!(lines.iter().all(|l| l.log_level.as_deref() == Some("INFO")));

    let job = w.launch(&bad, &web).await;
    let failed = w.wait_status(&job, JobStatus::Failed, 2 * MINUTE).await;
    assert_eq!(
        failed.exit_code,
        Some(2),
        "ansible exits 2 when a task fails"
    );
    let err = failed.error_message.clone().unwrap_or_default();
    assert!(
        err.contains("exited with code 2") && err.contains("fatal:"),
        "{err}"
    );
    w.assert_contiguous(&job).await;
    let errors: Vec<_> = w
        .lines(&job)
        .await
        .into_iter()
        .filter(|l| l.log_level.as_deref() == Some("ERROR"))
        .collect();
    assert!(
        errors
            .iter()
            .any(|l| l.content.starts_with("fatal: [web1.fra1]")),
        "{errors:#?}"
    );

    // The failure opened a ticket on behalf of whoever launched the job.
    let tickets = w.tickets(&job).await;
    assert_eq!(tickets.len(), 1);
    let t = &tickets[0];
    assert_eq!(t.created_by, w.admin.id);
    assert_eq!(t.priority, TicketPriority::High, "production server");
    assert!(
        t.title.contains("fail") && t.title.contains("web1.fra1"),
        "{}",
        t.title
    );
    assert!(t
        .description
        .as_deref()
        .unwrap_or("")
        .contains("fatal: [web1.fra1]"));

    // The system's own actions are audited without a user.
    let dispatches = w
        .store
        .list_audit(
            &AuditFilter {
                action: Some("DISPATCH".into()),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    assert_eq!(dispatches.total, 2);
    assert!(dispatches.items.iter().all(|a| a.user_id.is_none()));
    let enrolled = w
        .store
        .list_audit(
            &AuditFilter {
                action: Some("ENROLL".into()),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    assert_eq!(enrolled.total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_success_failure_and_ticket() {
    success_failure_and_ticket(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_success_failure_and_ticket() {
    success_failure_and_ticket(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_cancel_pending_and_running() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let mut agent = c.agent("bastion-fra1", &["dc=fra1"], &AgentOpts::default());
    let w = &c.world;
    let far = w
        .local_server("db1.nyc1", json!({"dc": "nyc1"}), "staging")
        .await;
    let near = w
        .local_server("web1.fra1", json!({"dc": "fra1"}), "staging")
        .await;
    let mark = outpost_tests::unique_mark();
    let sleep = w
        .playbook("sleep", &outpost_tests::world::sleeping_playbook(&mark))
        .await;

    // No agent in nyc1: the job waits, says why, and can be cancelled at once.
    let stuck = w.launch(&sleep, &far).await;
    let reason = wait_for("a pending reason", MINUTE, || async {
        w.job(&stuck)
            .await
            .pending_reason
            .filter(|r| r.contains("dc=nyc1"))
    })
    .await;
    assert_eq!(reason, "no connected agent matches dc=nyc1");
    assert_eq!(
        Lifecycle::new(w.store.clone())
            .cancel(stuck.id, &Actor::user(w.admin.id))
            .await
            .unwrap(),
        CancelResult::Cancelled
    );
    assert_eq!(w.job(&stuck).await.status, JobStatus::Cancelled);

    // A running job: the cancel reaches the agent, which stops ansible and reports it.
    let running = w.launch(&sleep, &near).await;
    w.wait_status(&running, JobStatus::Running, MINUTE).await;
    wait_for("the sleep task to start", MINUTE, || async {
        w.lines(&running)
            .await
            .iter()
            .any(|l| l.content.contains("TASK [sleep]"))
            .then_some(())
    })
    .await;
    // And its process runs (the header comes first): what the cancel must end.
    outpost_tests::wait_process(&mark, MINUTE).await;
    assert_eq!(
        Lifecycle::new(w.store.clone())
            .cancel(running.id, &Actor::user(w.admin.id))
            .await
            .unwrap(),
        CancelResult::Requested
    );
    let cancelled = w.wait_status(&running, JobStatus::Cancelled, MINUTE).await;
    assert!(cancelled.completed_at.is_some());
    assert_eq!(
        cancelled.error_message.as_deref(),
        Some("cancelled on request")
    );
    w.assert_contiguous(&running).await;
    // ansible's process group is gone: nothing of this job is left behind.
    outpost_tests::wait_no_process(&mark, Duration::from_secs(5)).await;
    // No ticket for a cancel.
    let tickets = w
        .store
        .list_tickets(&TicketFilter::default(), Paging::default())
        .await
        .unwrap();
    assert_eq!(tickets.total, 0);
    assert!(agent.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limit_fails_the_job() {
    const LIMIT_SECS: i64 = 20;
    let opts = ControllerOpts {
        // Long enough for ansible, slow to start on a loaded machine, to reach its sleep (10 s
        // was not, with five builds sharing two cores).
        job_time_limit_secs: LIMIT_SECS as u32,
        ..ControllerOpts::default()
    };
    let c = Cluster::start(Backend::Sqlite, opts).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let mark = outpost_tests::unique_mark();
    let pb = w
        .playbook("sleep", &outpost_tests::world::sleeping_playbook(&mark))
        .await;
    let job = w.launch(&pb, &server).await;
    // The sleep runs before the limit ends it (so that its end below is the limit's doing).
    outpost_tests::wait_process(&mark, MINUTE).await;
    let failed = w.wait_status(&job, JobStatus::Failed, MINUTE).await;
    assert_eq!(
        failed.error_message,
        Some(format!("timed out after {LIMIT_SECS} s"))
    );
    let elapsed = failed.completed_at.unwrap() - failed.started_at.unwrap();
    // Within 26 s of the limit, as when the limit was 4 s and this said "under 30 s".
    assert!(
        elapsed.num_seconds() < LIMIT_SECS + 26,
        "stopped promptly: {elapsed}"
    );
    outpost_tests::wait_no_process(&mark, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ansible_fails_jobs_and_the_agent_keeps_serving() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let opts = AgentOpts {
        ansible_playbook: Some("/nonexistent/ansible-playbook".into()),
        ..AgentOpts::default()
    };
    let mut agent = c.agent("bastion", &[], &opts);
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let pb = w.playbook("hello", HELLO).await;
    for _ in 0..2 {
        let job = w.launch(&pb, &server).await;
        let failed = w.wait_status(&job, JobStatus::Failed, MINUTE).await;
        let err = failed.error_message.unwrap_or_default();
        assert!(
            err.contains("cannot run /nonexistent/ansible-playbook")
                && err.contains("pip install ansible-core"),
            "{err}"
        );
    }
    assert!(agent.is_running(), "the agent survives");
    let a = w.store.get_agent_by_name("bastion").await.unwrap();
    assert!(a
        .ansible_version
        .unwrap_or_default()
        .starts_with("unavailable"));
}

/// An admin revokes an agent through the API while it runs a job: the agent stops its ansible
/// and exits for good, and the job — whose end the revoked agent can no longer report — fails
/// at once, with a ticket, rather than after the grace period of an agent that may come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_dropped_and_stays_out() {
    // A grace period longer than the test waits: the job must not fail as an agent lost.
    let opts = ControllerOpts {
        agent_grace_secs: 600,
        ..ControllerOpts::default()
    };
    let c = Cluster::start(Backend::Sqlite, opts).await;
    let mut agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    // It is running a job when it is revoked.
    let server = w.local_server("web1", json!({}), "dev").await;
    let mark = outpost_tests::unique_mark();
    let pb = w
        .playbook("sleep", &outpost_tests::world::sleeping_playbook(&mark))
        .await;
    let job = w.launch(&pb, &server).await;
    w.wait_status(&job, JobStatus::Running, MINUTE).await;
    outpost_tests::wait_process(&mark, MINUTE).await;
    let a = wait_for("the agent to connect", MINUTE, || async {
        w.store
            .get_agent_by_name("bastion")
            .await
            .ok()
            .filter(|a| a.connected_controller.is_some())
    })
    .await;
    assert_eq!(a.hostname.as_deref().map(|h| !h.is_empty()), Some(true));
    let admin = outpost_tests::api::login(&c.ctl, "ops", outpost_tests::api::PASSWORD).await;
    let view: outpost_api::AgentView = admin
        .post(&format!("/api/v1/agents/{}/revoke", a.id.0), &json!({}))
        .await
        .expect("an admin revokes the agent");
    assert!(view.revoked, "{view:?}");
    let status = agent
        .wait_exit(Duration::from_secs(30))
        .expect("the agent exits once refused");
    assert_eq!(
        status.code(),
        Some(78),
        "exit status that systemd does not restart on"
    );
    assert!(agent.log().contains("revoked"), "{}", agent.log());
    // Its ansible is stopped before it exits.
    outpost_tests::wait_no_process(&mark, Duration::from_secs(5)).await;
    // The job was the agent's: it fails as revoked, without waiting out the grace period.
    let failed = w.wait_status(&job, JobStatus::Failed, MINUTE).await;
    assert_eq!(
        failed.error_message.as_deref(),
        Some("agent revoked: bastion was revoked by an admin while it ran this job")
    );
    assert_eq!(w.tickets(&job).await.len(), 1, "a ticket for the failure");
    // The revocation is the admin's, in the audit trail.
    let revokes = w
        .store
        .list_audit(
            &AuditFilter {
                action: Some("REVOKE".into()),
                ..Default::default()
            },
            Paging::default(),
        )
        .await
        .unwrap();
    assert_eq!(revokes.total, 1);
    assert_eq!(revokes.items[0].user_id, Some(w.admin.id));
    // Started again, it is refused at once and exits 78 again (not "connection lost" forever).
    agent.start(&[c.ctl.agents], &AgentOpts::default());
    let again = agent
        .wait_exit(Duration::from_secs(30))
        .expect("a revoked agent started again exits");
    assert_eq!(again.code(), Some(78), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ansible_sees_an_allow_list_of_the_agents_environment() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let pb = w
        .playbook(
            "env",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"secret=[{{ lookup('env', 'OUTPOST_TEST_SECRET') }}] home=[{{ lookup('env', 'HOME') }}]\"\n",
        )
        .await;
    let job = w.launch(&pb, &server).await;
    w.wait_status(&job, JobStatus::Success, 2 * MINUTE).await;
    let lines = w.lines(&job).await;
    let msg = lines
        .iter()
        .find(|l| l.content.contains("secret=["))
        .map(|l| l.content.clone())
        .expect("the message");
    assert!(msg.contains("secret=[]"), "{msg}");
    assert!(!msg.contains("home=[]"), "HOME is passed on: {msg}");
}

/// The attack of issue 19: an operator's launch values try to run a command on the bastion
/// through Jinja (`lookup('pipe', …)`), in a value, nested, and in a key. They reach ansible as
/// data: the job prints them literally and no command runs. On a controller where admins may
/// launch templates, the same lookup from an admin does run — so the marker file is a witness
/// that would notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_values_are_data_and_only_admins_may_be_allowed_templates() {
    use outpost_api::LaunchResponse;
    use outpost_controller::model::Role;
    use outpost_tests::api::{login, user, PASSWORD};
    let opts = ControllerOpts {
        extra: vec!["--admin-launch-vars-templates".into()],
        ..ControllerOpts::default()
    };
    let c = Cluster::start(Backend::Sqlite, opts).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    w.local_server("web1", json!({}), "dev").await;
    w.playbook(
        "echo",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"greeting=[{{ greeting }}] nested=[{{ nested | default({}) | to_json }}]\"\n",
    )
    .await;
    user(w, "otto", Role::Operator).await;
    let otto = login(&c.ctl, "otto", PASSWORD).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let marks = tempfile::tempdir().unwrap();
    let lookup = |name: &str| {
        format!(
            "{{{{ lookup('pipe', 'touch {}') }}}}",
            marks.path().join(name).display()
        )
    };
    let run = |client: outpost_api::client::Client, vars: serde_json::Value| async move {
        let launched: LaunchResponse = client
            .post(
                "/api/v1/jobs",
                &json!({"playbook": "echo", "servers": ["web1"], "extra_vars": vars}),
            )
            .await
            .expect("launch");
        launched.jobs[0].id.clone()
    };

    let id = run(
        otto,
        json!({"greeting": lookup("value"),
               "nested": {"list": [lookup("nested")], lookup("key"): {"deeper": [[lookup("deep")]]}}}),
    )
    .await;
    let job = w
        .store
        .get_job_by_uuid(id.parse().expect("a job uuid"))
        .await
        .unwrap();
    w.wait_status(&job, JobStatus::Success, 2 * MINUTE).await;
    let text: String = w
        .lines(&job)
        .await
        .into_iter()
        .map(|l| l.content + "\n")
        .collect();
    assert!(
        text.contains(&format!("greeting=[{}]", lookup("value"))),
        "the value is printed as given: {text}"
    );
    for name in ["nested", "key", "deep"] {
        let touch = format!("touch {}", marks.path().join(name).display());
        assert!(text.contains(&touch), "{name} is printed as given: {text}");
    }
    let ran: Vec<_> = std::fs::read_dir(marks.path()).unwrap().collect();
    assert!(ran.is_empty(), "an operator's lookup ran: {ran:?}");

    // An admin, where the setting allows it, gets templates: the witness sees this one.
    let id = run(admin, json!({"greeting": lookup("admin")})).await;
    let job = w
        .store
        .get_job_by_uuid(id.parse().expect("a job uuid"))
        .await
        .unwrap();
    w.wait_status(&job, JobStatus::Success, 2 * MINUTE).await;
    assert!(
        marks.path().join("admin").exists(),
        "the admin's template ran: {:?}",
        w.lines(&job).await
    );
}

/// The jobs a round hands over together read their own rows (credentials, sealed answers) in
/// one query. A row that cannot be read (here a credential whose kind the database should
/// never hold, written past SQLite's CHECK) fails that query for the whole batch: then each job
/// reads its own, so the job that uses the row fails, naming the column, and the others run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_row_fails_its_own_job_and_not_the_others_of_its_batch() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    let admin = Actor::user(w.admin.id);
    let become_cred = w
        .store
        .create_credential(
            &NewCredential {
                uuid: uuid::Uuid::new_v4().to_string(),
                name: "damaged".into(),
                kind: CredentialKind::BecomePassword,
                description: None,
                vault_id: None,
                public_info: None,
                key_id: "0".repeat(16),
                secret: vec![0; 32],
            },
            &admin,
        )
        .await
        .expect("credential");
    let mut damaged = NewServer::new("damaged.local", "127.0.0.1", "linux");
    damaged.tags = Some(json!({"dc": "local"}));
    damaged.environment = Some("dev".into());
    damaged.host_vars = Some(json!({"ansible_connection": "local"}));
    damaged.become_credential_id = Some(become_cred.id);
    let damaged = w
        .store
        .create_server(&damaged, &admin)
        .await
        .expect("server");
    let mut sound = Vec::new();
    for i in 0..3 {
        let name = format!("sound{i}.local");
        sound.push(w.local_server(&name, json!({"dc": "local"}), "dev").await);
    }
    let mut db = sqlx::SqliteConnection::connect(&c.db.url)
        .await
        .expect("the database");
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut db)
        .await
        .expect("pragma");
    sqlx::query("UPDATE credentials SET kind = 'damaged' WHERE id = ?")
        .bind(become_cred.id.0)
        .execute(&mut db)
        .await
        .expect("the row is damaged");
    db.close().await.expect("closed");

    // Launched before any agent is there, so that the first round hands all four over at once.
    let pb = w.playbook("hello", HELLO).await;
    let mut jobs = vec![w.launch(&pb, &damaged).await];
    for s in &sound {
        jobs.push(w.launch(&pb, s).await);
    }
    // Room for all four at once: one at a time, the damaged job would be alone in its batch.
    let opts = AgentOpts {
        capacity: 4,
        ..AgentOpts::default()
    };
    let _agent = c.agent("bastion", &["dc=local"], &opts);
    let failed = w.wait_status(&jobs[0], JobStatus::Failed, MINUTE).await;
    let reason = failed.error_message.clone().unwrap_or_default();
    assert!(reason.contains("column \"kind\""), "{reason}");
    // The error says what the row holds, not sqlx's "unprintable error".
    assert!(
        reason.contains("unknown credential kind 'damaged'"),
        "{reason}"
    );
    for job in &jobs[1..] {
        w.wait_status(job, JobStatus::Success, MINUTE).await;
    }
}
