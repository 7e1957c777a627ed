//! Hostile agents against a real controller: one that floods its session stream with
//! heartbeats and never reads the answers cannot keep a revoked session alive, nor starve the
//! other agents.

use std::time::{Duration, Instant};

use outpost_controller::model::JobStatus;
use outpost_controller::store::audit::Actor;
use outpost_protocol::codec::FramedStream;
use outpost_protocol::message::{Down, Hello, Up};
use outpost_protocol::{close, tls};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{Agent, AgentOpts, ControllerOpts};
use outpost_tests::Backend;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_is_still_revoked_and_starves_nobody() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let _steady = c.agent("steady", &["dc=local"], &AgentOpts::default());
    // The flooder cannot be given the job: the test is about whether it starves the others.
    let flood = Agent::enroll(&c.ctl, "flood", &["dc=elsewhere"]);
    let state = outpost_agent::state::StateDir::new(&flood.state_dir);
    let (chain, key, ca) = state.credentials().expect("credentials");
    let cfg = tls::agent_client_config(&ca, chain, key, tls::Timers::default()).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(cfg, c.ctl.agents, "localhost")
        .unwrap()
        .await
        .expect("handshake");
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut session = FramedStream::new(recv, send);
    session
        .send(&Up::Hello(Hello {
            protocol_version: outpost_protocol::PROTOCOL_VERSION,
            agent_version: "flood".into(),
            hostname: "flood".into(),
            labels: vec![],
            capacity: 1,
            ansible_version: "none".into(),
            running: vec![],
            capabilities: vec![],
        }))
        .await
        .unwrap();
    let Some(Down::Welcome(_)) = session.recv::<Down>().await.unwrap() else {
        panic!("no Welcome")
    };
    // Heartbeats as fast as the stream takes them; the answers are never read.
    let mut send = session.send;
    let flooding = tokio::spawn(async move {
        let mut seq = 0u64;
        loop {
            seq += 1;
            if outpost_protocol::codec::write_frame(&mut send, &Up::Heartbeat { seq }, 1024)
                .await
                .is_err()
            {
                return seq;
            }
        }
    });
    let w = &c.world;
    // A job for the steady agent while the flood goes on.
    let server = w.local_server("web1", json!({"dc": "local"}), "dev").await;
    let pb = w
        .playbook(
            "hello",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n",
        )
        .await;
    let job = w.launch(&pb, &server).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Revoked, the flooding session is closed from outside its loop within seconds.
    let agent = w.store.get_agent_by_name("flood").await.unwrap();
    let revoked_at = Instant::now();
    w.store
        .revoke_agent(agent.id, &Actor::user(w.admin.id))
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), conn.closed())
        .await
        .expect("the session is closed");
    let took = revoked_at.elapsed();
    match reason {
        quinn::ConnectionError::ApplicationClosed(a) => {
            assert_eq!(a.error_code.into_inner(), u64::from(close::REVOKED))
        }
        // A client that keeps sending after the close may meet the controller's stateless
        // reset before the close frame: then the controller's own word must say why.
        quinn::ConnectionError::Reset => assert!(
            c.ctl.log().contains("agent revoked: dropping its session"),
            "reset without a revocation:\n{}",
            c.ctl.log()
        ),
        other => panic!("closed for another reason: {other}"),
    }
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // The steady agent kept working.
    let done = w.wait_status(&job, JobStatus::Success, MINUTE).await;
    let steady = w.store.get_agent_by_name("steady").await.unwrap();
    assert_eq!(done.agent_id, Some(steady.id));

    let sent = flooding.await.unwrap();
    assert!(sent > 100, "the agent did flood ({sent} heartbeats)");
    drop(flood);
}
