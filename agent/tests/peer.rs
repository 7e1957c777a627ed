//! The agent against a minimal controller built from `outpost-protocol` alone: what the agent
//! says and does on the wire, independent of the real controller. Real QUIC on loopback and
//! real ansible-playbook.

use std::time::Duration;

use outpost_agent::service::{self, ServiceOptions};
use outpost_agent::state::{Identity, StateDir};
use outpost_protocol::codec::FramedStream;
use outpost_protocol::message::{
    Assignment, Down, FinalStatus, JobDown, JobUp, Target, Up, Welcome,
};
use outpost_protocol::pki::{self, AgentKey, Ca};
use outpost_protocol::tls::{self, Timers};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(86400);

/// A CA, a controller endpoint, and an agent state directory enrolled by hand.
struct Peer {
    endpoint: quinn::Endpoint,
    state: StateDir,
    _dir: tempfile::TempDir,
}

fn setup() -> Peer {
    let ca = Ca::generate("peer CA", DAY).unwrap();
    let server = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()], DAY)
        .unwrap();
    let chain = vec![server.cert_der.clone(), ca.cert_der().clone()];
    let cfg = tls::agent_server_config(
        ca.cert_der(),
        chain,
        pki::private_key_from_pem(&server.key_pem).unwrap(),
        Timers::default(),
    )
    .unwrap();
    let endpoint = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    state.create().unwrap();
    let agent = Uuid::new_v4();
    let key = AgentKey::generate().unwrap();
    let cert = ca
        .sign_agent_csr(&key.csr("peer-test").unwrap(), agent, DAY)
        .unwrap();
    pki::write_private(&state.key_file(), &key.pem()).unwrap();
    state.save_chain(&[cert.to_vec()]).unwrap();
    pki::write_public(&state.ca_file(), &ca.cert_pem()).unwrap();
    state
        .save_identity(&Identity {
            uuid: agent,
            name: "peer-test".into(),
            labels: vec![("dc".into(), "lab".into())],
            controllers: vec![endpoint.local_addr().unwrap().to_string()],
            ca_fingerprint: ca.fingerprint(),
        })
        .unwrap();
    Peer {
        endpoint,
        state,
        _dir: dir,
    }
}

fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A revision of one file, `playbook.yml`, carried inline.
fn one_file_revision(playbook: &str) -> outpost_protocol::message::RevisionRef {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("playbook.yml"), playbook).unwrap();
    let mut tar = Vec::new();
    let packed = outpost_protocol::tree::pack_dir(
        dir.path(),
        &mut tar,
        &outpost_protocol::tree::Limits::REVISION,
    )
    .unwrap();
    outpost_protocol::message::RevisionRef {
        digest: packed.digest,
        size: packed.size,
        commit: None,
        inventory_dir: String::new(),
        inline: Some(tar),
    }
}

fn assignment(playbook: &str, limit: u32) -> Assignment {
    Assignment {
        job: Uuid::new_v4(),
        dispatch_id: Uuid::new_v4().to_string(),
        playbook_name: "peer".into(),
        playbook_path: "playbook.yml".into(),
        revision: one_file_revision(playbook),
        target: Target {
            hostname: "localhost".into(),
            ip_address: "127.0.0.1".into(),
            ssh_port: 22,
            ssh_user: "root".into(),
            ssh_key_path: None,
            host_vars_json: serde_json::json!({"ansible_connection": "local", "ansible_python_interpreter": python()}).to_string(),
            groups: Vec::new(),
        },
        vars_json: "{}".into(),
        launch_vars_json: r#"{"who": "peer"}"#.into(),
        time_limit_secs: limit,
        options: Default::default(),
    }
}

/// Hands a job over and collects everything the agent sends on its stream until Finished,
/// acknowledging batches like a controller.
async fn run_job(conn: &quinn::Connection, job: Assignment) -> (Vec<JobUp>, Vec<String>) {
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut s = FramedStream::new(recv, send);
    s.send(&JobDown::Assign(Box::new(job.clone())))
        .await
        .unwrap();
    let mut control = Vec::new();
    let mut lines = Vec::new();
    loop {
        let msg: JobUp = tokio::time::timeout(Duration::from_secs(60), s.recv())
            .await
            .expect("agent silent")
            .unwrap()
            .expect("stream ended");
        match msg {
            JobUp::Logs(b) => {
                assert_eq!(b.first_line as usize, lines.len() + 1, "contiguous batches");
                lines.extend(b.lines.into_iter().map(|l| l.text));
                s.send(&JobDown::LogAck {
                    job: job.job,
                    through_line: lines.len() as u32,
                })
                .await
                .unwrap();
            }
            JobUp::Reject { .. } => {
                control.push(msg);
                return (control, lines);
            }
            JobUp::Finished(ref f) => {
                assert_eq!(
                    f.last_line as usize,
                    lines.len(),
                    "Finished comes after the last line"
                );
                control.push(msg);
                s.send(&JobDown::FinishAck { job: job.job }).await.unwrap();
                s.send.finish().unwrap();
                return (control, lines);
            }
            other => control.push(other),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_jobs_capacity_and_extra_vars_on_the_wire() {
    let peer = setup();
    let stop = CancellationToken::new();
    let opts = ServiceOptions {
        capacity: 1,
        host_key_checking: false,
        ..ServiceOptions::default()
    };
    let agent = tokio::spawn(service::run(peer.state.clone(), opts, stop.clone(), || {}));

    let conn = tokio::time::timeout(Duration::from_secs(30), peer.endpoint.accept())
        .await
        .unwrap()
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = conn.accept_bi().await.unwrap();
    let mut session = FramedStream::new(recv, send);
    let Some(Up::Hello(hello)) = session.recv::<Up>().await.unwrap() else {
        panic!("Hello first")
    };
    assert_eq!(hello.protocol_version, outpost_protocol::PROTOCOL_VERSION);
    assert_eq!(hello.capacity, 1);
    assert_eq!(hello.labels, vec![("dc".to_owned(), "lab".to_owned())]);
    assert!(
        hello.ansible_version.starts_with("ansible-playbook"),
        "{}",
        hello.ansible_version
    );
    assert!(hello.running.is_empty());
    let agent_id = tls::peer_agent_uuid(&conn).unwrap();
    let welcome = Welcome {
        protocol_version: outpost_protocol::PROTOCOL_VERSION,
        controller_version: "peer".into(),
        agent: agent_id,
        heartbeat_interval_ms: 1000,
        capabilities: vec![],
    };
    session.send(&Down::Welcome(welcome)).await.unwrap();
    // Heartbeats flow on the session stream.
    let beat = tokio::time::timeout(Duration::from_secs(5), session.recv::<Up>())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(beat, Some(Up::Heartbeat { .. })), "{beat:?}");

    // Capacity 1: a second job while the first runs is rejected with a reason.
    let slow = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 3\n    - ansible.builtin.debug:\n        msg: \"done for {{ who }}\"\n";
    let first = tokio::spawn({
        let conn = conn.clone();
        async move { run_job(&conn, assignment(slow, 60)).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (second, _) = run_job(&conn, assignment(slow, 60)).await;
    match &second[..] {
        [JobUp::Reject { reason, .. }] => assert!(reason.contains("at capacity"), "{reason}"),
        other => panic!("expected a Reject, got {other:?}"),
    }
    let (control, lines) = first.await.unwrap();
    assert!(matches!(control[0], JobUp::Accept { .. }));
    assert!(matches!(control[1], JobUp::Started { .. }));
    let JobUp::Finished(f) = control.last().unwrap() else {
        panic!("Finished last")
    };
    assert_eq!((f.status, f.exit_code), (FinalStatus::Success, Some(0)));
    assert!(
        lines.iter().any(|l| l.contains("done for peer")),
        "extra vars reach the playbook: {lines:#?}"
    );

    // A playbook whose content does not match its hash never runs.
    let mut tampered = assignment(slow, 60);
    if let Some(inline) = tampered.revision.inline.as_mut() {
        inline[600] ^= 1;
    }
    let (control, _) = run_job(&conn, tampered).await;
    let JobUp::Finished(f) = control.last().unwrap() else {
        panic!("Finished last")
    };
    assert_eq!(f.status, FinalStatus::Failed);
    assert!(
        f.error
            .as_deref()
            .unwrap_or("")
            .contains("does not match its SHA-256"),
        "{:?}",
        f.error
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        std::fs::read_dir(peer.state.spool_dir()).unwrap().count(),
        0,
        "acknowledged spools are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_lines_are_resent_on_the_next_session() {
    let peer = setup();
    let stop = CancellationToken::new();
    let opts = ServiceOptions {
        host_key_checking: false,
        max_backoff: Duration::from_secs(1),
        ..ServiceOptions::default()
    };
    let agent = tokio::spawn(service::run(peer.state.clone(), opts, stop.clone(), || {}));
    let welcome = |agent| {
        Down::Welcome(Welcome {
            protocol_version: outpost_protocol::PROTOCOL_VERSION,
            controller_version: "peer".into(),
            agent,
            heartbeat_interval_ms: 1000,
            capabilities: vec![],
        })
    };

    // Session 1: take the job, read its output but acknowledge nothing, then drop the connection.
    let conn = peer.endpoint.accept().await.unwrap().await.unwrap();
    let id = tls::peer_agent_uuid(&conn).unwrap();
    let (send, recv) = conn.accept_bi().await.unwrap();
    let mut session = FramedStream::new(recv, send);
    let _hello: Option<Up> = session.recv().await.unwrap();
    session.send(&welcome(id)).await.unwrap();
    let job = assignment("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: one\n    - ansible.builtin.debug:\n        msg: two\n", 60);
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut s = FramedStream::new(recv, send);
    s.send(&JobDown::Assign(Box::new(job.clone())))
        .await
        .unwrap();
    let mut seen = 0;
    let mut last_line = 0;
    while let Ok(Ok(Some(msg))) =
        tokio::time::timeout(Duration::from_secs(30), s.recv::<JobUp>()).await
    {
        match msg {
            JobUp::Logs(b) => seen += b.lines.len(),
            JobUp::Finished(f) => {
                last_line = f.last_line;
                break;
            }
            _ => {}
        }
    }
    assert!(last_line > 0 && seen == last_line as usize);
    conn.close(quinn::VarInt::from_u32(0), b"test cuts the session");

    // Session 2: the agent reports the job and resends every line from line 1.
    let conn = peer.endpoint.accept().await.unwrap().await.unwrap();
    let (send, recv) = conn.accept_bi().await.unwrap();
    let mut session = FramedStream::new(recv, send);
    let Some(Up::Hello(hello)) = session.recv::<Up>().await.unwrap() else {
        panic!("Hello")
    };
    assert_eq!(hello.running.len(), 1);
    assert_eq!(
        (
            hello.running[0].job,
            hello.running[0].acked_through,
            hello.running[0].finished
        ),
        (job.job, 0, true)
    );
    session.send(&welcome(id)).await.unwrap();
    let (send, recv) = conn.accept_bi().await.unwrap();
    let mut s = FramedStream::new(recv, send);
    let Some(JobUp::Resume {
        job: resumed,
        acked_through,
        ..
    }) = s.recv().await.unwrap()
    else {
        panic!("Resume")
    };
    assert_eq!((resumed, acked_through), (job.job, 0));
    let mut lines = Vec::new();
    loop {
        match s.recv::<JobUp>().await.unwrap().expect("stream") {
            JobUp::Logs(b) => {
                assert_eq!(b.first_line as usize, lines.len() + 1);
                lines.extend(b.lines);
                s.send(&JobDown::LogAck {
                    job: job.job,
                    through_line: lines.len() as u32,
                })
                .await
                .unwrap();
            }
            JobUp::Finished(f) => {
                assert_eq!(f.last_line as usize, lines.len());
                s.send(&JobDown::FinishAck { job: job.job }).await.unwrap();
                s.send.finish().unwrap();
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        lines.len(),
        last_line as usize,
        "every line again, none twice"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
