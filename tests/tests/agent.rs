//! The agent as an operator runs it: enrolment and its refusals, several controller
//! addresses, certificate renewal, and a graceful stop on SIGTERM.

use std::time::Duration;

use outpost_controller::model::JobStatus;
use outpost_protocol::token::EnrollToken;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{ca_fingerprint, Agent, AgentOpts, ControllerOpts};
use outpost_tests::proxy::UdpProxy;
use outpost_tests::{output_text, wait_for, Backend};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_refuses_bad_tokens_and_keeps_identities() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let token = c.ctl.token("bastion-fra1", &["dc=fra1"]);

    // A damaged token is refused on the agent, before anything is sent.
    let a = Agent::new("a");
    let mut damaged = token.clone();
    let last = damaged.pop().unwrap();
    damaged.push(if last == '0' { '1' } else { '0' });
    let out = a.try_enroll(c.ctl.enroll, &damaged, &[]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("damaged"),
        "{}",
        output_text(&out)
    );
    assert!(
        !a.state_dir.join("agent.key").exists(),
        "no key written for a refused token"
    );

    // A token for another CA: the agent refuses the controller at the handshake.
    let other = tempfile::tempdir().unwrap();
    let other_db = other.path().join("o.db");
    outpost_tests::procs::Controller::init(
        other.path(),
        &format!("sqlite://{}", other_db.display()),
    );
    let real = EnrollToken::parse(&token).unwrap();
    let forged = EnrollToken {
        secret: real.secret.clone(),
        ca_fingerprint: ca_fingerprint(other.path()),
    }
    .encode();
    let out = a.try_enroll(c.ctl.enroll, &forged, &[]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("does not match the fingerprint"),
        "{}",
        output_text(&out)
    );

    // The token's labels are the agent's: asking for others is refused and spends nothing.
    for ask in [["--label", "dc=evil"], ["--label", "rack=12"]] {
        let out = a.try_enroll(c.ctl.enroll, &token, &ask);
        assert!(!out.status.success());
        assert!(
            output_text(&out).contains("cannot ask for"),
            "{}",
            output_text(&out)
        );
    }
    // Repeating them is fine; the real token works once.
    let out = a.try_enroll(c.ctl.enroll, &token, &["--label", "dc=fra1"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let agent = c
        .world
        .store
        .get_agent_by_name("bastion-fra1")
        .await
        .unwrap();
    let labels: std::collections::BTreeMap<_, _> = agent.label_pairs().into_iter().collect();
    assert_eq!(labels.get("dc").map(String::as_str), Some("fra1"));
    assert_eq!(labels.len(), 1, "{labels:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(a.state_dir.join("agent.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // An expired token is refused with a reason, and spends nothing.
    let stale = EnrollToken::generate(&c.ctl.ca_fingerprint());
    c.world
        .store
        .create_enrollment_token(
            &outpost_controller::store::agents::NewEnrollmentToken {
                secret_hash: EnrollToken::secret_hash(&stale.secret),
                name: "late".into(),
                labels: json!({}),
                expires_at: chrono::Utc::now() - chrono::Duration::minutes(1),
            },
            &outpost_controller::store::audit::Actor::system(),
        )
        .await
        .unwrap();
    let late = Agent::new("late");
    let out = late.try_enroll(c.ctl.enroll, &stale.encode(), &[]);
    assert!(!out.status.success());
    // The controller's own word for this case (not any refusal that mentions expiry).
    let said = output_text(&out);
    assert!(
        said.contains("token 'late' expired at ") && said.contains("; make a new one"),
        "{said}"
    );
    assert!(c.world.store.get_agent_by_name("late").await.is_err());

    // Enrolling again needs --force; a spent token is refused with a reason.
    let again = a.try_enroll(c.ctl.enroll, &token, &[]);
    assert!(
        output_text(&again).contains("already enrolled"),
        "{}",
        output_text(&again)
    );
    let b = Agent::new("b");
    let reuse = b.try_enroll(c.ctl.enroll, &token, &[]);
    assert!(!reuse.status.success());
    assert!(
        output_text(&reuse).contains("already used"),
        "{}",
        output_text(&reuse)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_tries_controller_addresses_in_turn() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let mut agent = Agent::enroll(&c.ctl, "bastion", &[]);
    // An address that is held by this test and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = silent.local_addr().unwrap();
    agent.start(&[dead, c.ctl.agents], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let pb = w.playbook("hello", "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n").await;
    let job = w.launch(&pb, &server).await;
    w.wait_status(&job, JobStatus::Success, MINUTE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_before_they_expire() {
    let opts = ControllerOpts {
        extra: vec!["--agent-cert-secs".into(), "30".into()],
        ..ControllerOpts::fast_failure()
    };
    let c = Cluster::start(Backend::Sqlite, opts).await;
    let proxy = UdpProxy::start(c.ctl.agents).await;
    let mut agent = Agent::enroll(&c.ctl, "bastion", &[]);
    let first = std::fs::read_to_string(agent.state_dir.join("agent.pem")).unwrap();
    agent.start(&[proxy.addr], &AgentOpts::fast_failure());
    let w = &c.world;
    let expiry = || async {
        w.store
            .get_agent_by_name("bastion")
            .await
            .unwrap()
            .cert_expires_at
            .unwrap()
    };
    let before = expiry().await;
    wait_for("a renewed certificate", MINUTE, || async {
        let now = std::fs::read_to_string(agent.state_dir.join("agent.pem")).ok()?;
        (now != first).then_some(())
    })
    .await;
    let after = expiry().await;
    assert!(after > before, "the controller recorded the new expiry");
    // Wait until the first certificate has expired, then force a new session: it must use
    // the renewed certificate.
    wait_for("the first certificate to expire", MINUTE, || async {
        (chrono::Utc::now() > before + chrono::Duration::seconds(1)).then_some(())
    })
    .await;
    proxy.cut();
    wait_for(
        "the controller to drop the cut-off session",
        MINUTE,
        || async {
            let a = w.store.get_agent_by_name("bastion").await.ok()?;
            a.connected_controller.is_none().then_some(())
        },
    )
    .await;
    proxy.restore();
    let server = w.local_server("web1", json!({}), "dev").await;
    let pb = w.playbook("hello", "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n").await;
    let job = w.launch(&pb, &server).await;
    w.wait_status(&job, JobStatus::Success, MINUTE).await;
    assert!(
        agent.log().matches("connected controller=").count() >= 2,
        "{}",
        agent.log()
    );
    let renewals = agent.log().matches("certificate renewed").count();
    assert!(
        (1..=3).contains(&renewals),
        "renewed {renewals} times in ~45 s of 30 s certificates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_jobs_finish_then_exits_zero() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let mut agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let yaml = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 4\n    - ansible.builtin.debug:\n        msg: finished in time\n";
    let job = w.launch(&w.playbook("short", yaml).await, &server).await;
    w.wait_status(&job, JobStatus::Running, MINUTE).await;
    let status = agent.stop(MINUTE);
    assert_eq!(status.code(), Some(0));
    let done = w.wait_status(&job, JobStatus::Success, MINUTE).await;
    assert!(w
        .lines(&done)
        .await
        .iter()
        .any(|l| l.content.contains("finished in time")));
    w.assert_contiguous(&job).await;
    let spool: Vec<_> = std::fs::read_dir(agent.state_dir.join("spool"))
        .unwrap()
        .collect();
    assert!(spool.is_empty(), "everything was delivered before exiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_what_outlasts_the_drain_timeout() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let opts = AgentOpts {
        drain_timeout_secs: 2,
        ..AgentOpts::default()
    };
    let mut agent = c.agent("bastion", &[], &opts);
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    // This test's own mark on its sleep's command line: another test's sleeps are not its own.
    let mark = outpost_tests::unique_mark();
    let yaml = outpost_tests::world::sleeping_playbook(&mark);
    let job = w.launch(&w.playbook("long", &yaml).await, &server).await;
    w.wait_status(&job, JobStatus::Running, MINUTE).await;
    // Stopped while ansible's sleep runs, so that its end below is the agent's doing.
    outpost_tests::wait_process(&mark, MINUTE).await;
    let status = agent.stop(MINUTE);
    assert_eq!(status.code(), Some(0));
    let cancelled = w.wait_status(&job, JobStatus::Cancelled, MINUTE).await;
    assert!(cancelled
        .error_message
        .unwrap_or_default()
        .contains("drain timeout"));
    // ansible stopped with the agent.
    outpost_tests::wait_no_process(&mark, Duration::from_secs(5)).await;
}
