//! The agent against a minimal controller built from `outpost-protocol` alone: what the agent
//! says and does on the wire, independent of the real controller. Real QUIC on loopback and
//! real ansible-playbook (and, for a kill -9, the agent binary itself).

use std::time::Duration;

use outpost_agent::service::{self, ServiceOptions};
use outpost_agent::state::{Identity, StateDir};
use outpost_protocol::codec::FramedStream;
use outpost_protocol::message::{
    Assignment, Down, FinalStatus, JobDown, JobUp, RevisionRef, StreamUp, Target, Up, Welcome,
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

/// A project tree of `files` packed as a revision: its tar, and a reference carrying it inline
/// when `inline`.
fn pack(files: &[(&str, &[u8])], inline: bool) -> (Vec<u8>, RevisionRef) {
    let dir = tempfile::tempdir().unwrap();
    for (path, body) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let mut tar = Vec::new();
    let packed = outpost_protocol::tree::pack_dir(
        dir.path(),
        &mut tar,
        &outpost_protocol::tree::Limits::REVISION,
    )
    .unwrap();
    let rev = RevisionRef {
        digest: packed.digest,
        size: packed.size,
        commit: None,
        inventory_dir: String::new(),
        inline: inline.then(|| tar.clone()),
    };
    (tar, rev)
}

/// A job of a one-file project (`playbook.yml`), carried inline.
fn assignment(playbook: &str, limit: u32) -> Assignment {
    let (_, revision) = pack(&[("playbook.yml", playbook.as_bytes())], true);
    Assignment {
        job: Uuid::new_v4(),
        dispatch_id: Uuid::new_v4().to_string(),
        playbook_name: "peer".into(),
        playbook_path: "playbook.yml".into(),
        revision,
        target: Target {
            hostname: "localhost".into(),
            ip_address: "127.0.0.1".into(),
            ssh_port: 22,
            ssh_user: "root".into(),
            ssh_key_path: None,
            host_vars_json: serde_json::json!({"ansible_connection": "local", "ansible_python_interpreter": python()}).to_string(),
            groups: vec![],
        },
        vars_json: "{}".into(),
        launch_vars_json: r#"{"who": "peer"}"#.into(),
        time_limit_secs: limit,
        options: Default::default(),
        secrets: Default::default(),
    }
}

/// The job's end: the last message of its stream.
fn finished_of(control: &[JobUp]) -> &outpost_protocol::message::Finished {
    match control.last() {
        Some(JobUp::Finished(f)) => f,
        other => panic!("the stream did not end with Finished: {other:?}"),
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
            // Task results travel beside the lines; these tests look at lines and control.
            JobUp::Results(_) => {}
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
    let f = finished_of(&control);
    assert_eq!((f.status, f.exit_code), (FinalStatus::Success, Some(0)));
    assert!(
        lines.iter().any(|l| l.contains("done for peer")),
        "extra vars reach the playbook: {lines:#?}"
    );

    // A revision whose bytes do not match its digest never runs. (A new one: a revision
    // already cached is run from the verified copy, whatever rides along.)
    let mut tampered = assignment(&format!("{slow}# another revision\n"), 60);
    if let Some(tar) = tampered.revision.inline.as_mut() {
        tar[600] ^= 1;
    }
    let (control, _) = run_job(&conn, tampered).await;
    let f = finished_of(&control);
    assert_eq!(f.status, FinalStatus::Failed);
    assert!(
        f.error.as_deref().unwrap_or("").contains("is not revision"),
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

/// An agent whose QUIC keep-alive beats at least as often as the Welcome asks sends no
/// Heartbeat of its own: the keep-alive's PINGs alone keep the session open, well past its
/// idle timeout, and nothing else crosses the session stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_lives_on_keep_alives_alone() {
    let peer = setup();
    let stop = CancellationToken::new();
    let idle_timeout = Duration::from_millis(1500);
    let opts = ServiceOptions {
        host_key_checking: false,
        // A keep-alive every 500 ms, more often than the Welcome's beat (1 s).
        idle_timeout,
        ..ServiceOptions::default()
    };
    let agent = tokio::spawn(service::run(peer.state.clone(), opts, stop.clone(), || {}));
    let (conn, mut session, _) = welcomed(&peer.endpoint).await;
    let pings = conn.stats().frame_rx.ping;
    let quiet = 3 * idle_timeout;
    let said = tokio::time::timeout(quiet, session.recv::<Up>()).await;
    assert!(
        said.is_err(),
        "the agent said something on its session stream: {said:?}"
    );
    assert!(
        conn.close_reason().is_none(),
        "the session did not outlive its idle timeout: {:?}",
        conn.close_reason()
    );
    let pinged = conn.stats().frame_rx.ping - pings;
    assert!(
        pinged >= 4,
        "{pinged} keep-alives in {quiet:?}: the session stayed open on something else"
    );
    // And it asked to have each packet acknowledged at once, so that a lone keep-alive costs
    // the controller no timer.
    assert!(
        conn.stats().frame_rx.ack_frequency >= 1,
        "the agent never asked for its acknowledgements at once"
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
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
    let Some(StreamUp::Resume {
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
            JobUp::Results(_) => {}
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

/// Accepts the agent's connection and completes its handshake; the session stream is returned
/// so it stays open.
async fn welcomed(
    endpoint: &quinn::Endpoint,
) -> (
    quinn::Connection,
    FramedStream<quinn::RecvStream, quinn::SendStream>,
    outpost_protocol::message::Hello,
) {
    let conn = tokio::time::timeout(Duration::from_secs(30), endpoint.accept())
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
    // As a controller does: the streams the agent may open grow from the Hello's two to what
    // its capacity and held jobs can use.
    conn.set_max_concurrent_bi_streams(
        tls::session_streams(hello.capacity, hello.running.len()).into(),
    );
    let welcome = Welcome {
        protocol_version: outpost_protocol::PROTOCOL_VERSION,
        controller_version: "peer".into(),
        agent: tls::peer_agent_uuid(&conn).unwrap(),
        heartbeat_interval_ms: 1000,
        capabilities: vec![],
    };
    session.send(&Down::Welcome(welcome)).await.unwrap();
    (conn, session, hello)
}

type Stream = FramedStream<quinn::RecvStream, quinn::SendStream>;

/// The next stream the agent opens, and what its first frame says it is for.
async fn next_stream(conn: &quinn::Connection) -> (Stream, StreamUp) {
    let (send, recv) = tokio::time::timeout(Duration::from_secs(30), conn.accept_bi())
        .await
        .expect("the agent opened no stream")
        .unwrap();
    let mut s = FramedStream::new(recv, send);
    let first = s.recv::<StreamUp>().await.unwrap().expect("a first frame");
    (s, first)
}

/// Answers a fetch from `offset` like a controller: the manifest, then chunks `offset..`;
/// `chunk` may alter each (by index) or end the stream before it (None).
async fn serve_fetch(
    s: &mut Stream,
    tar: &[u8],
    offset: u64,
    chunk: impl Fn(u32, Vec<u8>) -> Option<Vec<u8>>,
) {
    use outpost_protocol::fetch::{first_chunk, manifest_of, CHUNK_SIZE};
    use outpost_protocol::message::FetchDown;
    s.max = outpost_protocol::fetch::MAX_FETCH_FRAME;
    let (manifest, _) = manifest_of(tar).unwrap();
    let first = first_chunk(&manifest, offset).unwrap() as usize;
    let count = manifest.chunks.len();
    s.send(&FetchDown::Manifest(manifest)).await.unwrap();
    for i in first..count {
        let start = i * CHUNK_SIZE as usize;
        let end = (start + CHUNK_SIZE as usize).min(tar.len());
        let Some(data) = chunk(i as u32, tar[start..end].to_vec()) else {
            return;
        };
        if s.send(&FetchDown::Chunk {
            index: i as u32,
            data,
        })
        .await
        .is_err()
        {
            return; // the agent refused the chunk and let the stream go
        }
    }
    let _ = s.send.finish();
}

/// Reads a job stream to its outcome, acknowledging like a controller.
async fn deliver(mut s: Stream, job: Uuid) -> (outpost_protocol::message::Finished, Vec<String>) {
    let mut lines = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(90), s.recv::<JobUp>())
            .await
            .expect("agent silent")
            .unwrap()
            .expect("stream ended");
        match msg {
            JobUp::Logs(b) => {
                lines.extend(b.lines.into_iter().map(|l| l.text));
                s.send(&JobDown::LogAck {
                    job,
                    through_line: lines.len() as u32,
                })
                .await
                .unwrap();
            }
            JobUp::Finished(f) => {
                s.send(&JobDown::FinishAck { job }).await.unwrap();
                let _ = s.send.finish();
                return (f, lines);
            }
            _ => {}
        }
    }
}

fn big_project() -> (Vec<u8>, RevisionRef) {
    let blob: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 253) as u8).collect();
    let play = b"- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.stat:\n        path: files/blob.bin\n      register: blob\n    - ansible.builtin.debug:\n        msg: \"blob of {{ blob.stat.size }} bytes\"\n";
    pack(
        &[("site.yml", &play[..]), ("files/blob.bin", &blob[..])],
        false,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_cut_midway_resumes_and_a_corrupted_chunk_is_asked_again() {
    use outpost_protocol::fetch::CHUNK_SIZE;
    let peer = setup();
    let stop = CancellationToken::new();
    let opts = ServiceOptions {
        host_key_checking: false,
        max_backoff: Duration::from_secs(1),
        ..ServiceOptions::default()
    };
    let agent = tokio::spawn(service::run(peer.state.clone(), opts, stop.clone(), || {}));
    let (tar, rev) = big_project();
    assert!(tar.len() > 3 * CHUNK_SIZE as usize, "four chunks");
    let mut job = assignment("", 120);
    job.revision = rev.clone();
    job.playbook_path = "site.yml".into();

    // Session 1: the job is taken; its fetch gets a corrupted chunk 1, then is cut after 2.
    let (conn, _session, _) = welcomed(&peer.endpoint).await;
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut js = FramedStream::new(recv, send);
    js.send(&JobDown::Assign(Box::new(job.clone())))
        .await
        .unwrap();
    assert!(matches!(
        js.recv::<JobUp>().await.unwrap(),
        Some(JobUp::Accept { .. })
    ));
    let (mut f, first) = next_stream(&conn).await;
    assert_eq!(
        first,
        StreamUp::Fetch {
            digest: rev.digest.clone(),
            offset: 0
        }
    );
    serve_fetch(&mut f, &tar, 0, |i, mut d| {
        if i == 1 {
            d[7] ^= 0x40;
        }
        Some(d)
    })
    .await;
    let (mut f, again) = next_stream(&conn).await;
    assert_eq!(
        again,
        StreamUp::Fetch {
            digest: rev.digest.clone(),
            offset: u64::from(CHUNK_SIZE)
        },
        "the refused chunk is asked for again, the good one kept"
    );
    serve_fetch(&mut f, &tar, u64::from(CHUNK_SIZE), |i, d| {
        (i < 3).then_some(d)
    })
    .await;
    let part = peer
        .state
        .revisions_dir()
        .join(format!("{}.part", rev.digest));
    let on_disk = || std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while on_disk() < 3 * u64::from(CHUNK_SIZE) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        on_disk(),
        3 * u64::from(CHUNK_SIZE),
        "verified chunks are on disk"
    );
    conn.close(quinn::VarInt::from_u32(0), b"test cuts the uplink");

    // Session 2: the fetch resumes from the part file's length; the job then runs.
    let (conn, _session, hello) = welcomed(&peer.endpoint).await;
    assert_eq!(hello.running.len(), 1, "the job is still held");
    let mut outcome = None;
    let mut fetched = false;
    while outcome.is_none() {
        let (mut s, first) = next_stream(&conn).await;
        match first {
            StreamUp::Fetch { digest, offset } => {
                assert_eq!(
                    (digest.as_str(), offset),
                    (rev.digest.as_str(), 3 * u64::from(CHUNK_SIZE))
                );
                serve_fetch(&mut s, &tar, offset, |_, d| Some(d)).await;
                fetched = true;
            }
            StreamUp::Resume { job: id, .. } => {
                assert_eq!(id, job.job);
                outcome = Some(tokio::spawn(deliver(s, job.job)));
            }
        }
    }
    if !fetched {
        // The resume came first: the fetch follows on its own stream, and the job waits for
        // it (the resumed stream is read meanwhile by its own task).
        let (mut s, first) = next_stream(&conn).await;
        assert!(
            matches!(first, StreamUp::Fetch { offset, .. } if offset == 3 * u64::from(CHUNK_SIZE))
        );
        serve_fetch(&mut s, &tar, 3 * u64::from(CHUNK_SIZE), |_, d| Some(d)).await;
    }
    let (finished, lines) = outcome.unwrap().await.unwrap();
    assert_eq!(
        finished.status,
        FinalStatus::Success,
        "{:?} {lines:#?}",
        finished.error
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("blob of {} bytes", 3 << 20))),
        "the playbook ran in the tree: {lines:#?}"
    );
    assert!(!part.exists(), "the part file is gone once unpacked");

    // A second job of the same revision needs no transfer.
    let mut second = job.clone();
    second.job = Uuid::new_v4();
    second.dispatch_id = Uuid::new_v4().to_string();
    let (control, _) = tokio::select! {
        r = run_job(&conn, second) => r,
        s = conn.accept_bi() => panic!("the agent opened a stream for a cached revision: {s:?}"),
    };
    let f = finished_of(&control);
    assert_eq!(f.status, FinalStatus::Success);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_stays_corrupted_fails_the_job_and_says_why() {
    let peer = setup();
    let stop = CancellationToken::new();
    let opts = ServiceOptions {
        host_key_checking: false,
        ..ServiceOptions::default()
    };
    let agent = tokio::spawn(service::run(peer.state.clone(), opts, stop.clone(), || {}));
    let (tar, rev) = big_project();
    let mut job = assignment("", 120);
    job.revision = rev.clone();
    job.playbook_path = "site.yml".into();
    let (conn, _session, _) = welcomed(&peer.endpoint).await;
    let fetches = tokio::spawn({
        let conn = conn.clone();
        async move {
            let mut asked = 0;
            while let Ok(Ok((send, recv))) =
                tokio::time::timeout(Duration::from_secs(5), conn.accept_bi()).await
            {
                let mut s = FramedStream::new(recv, send);
                let Some(StreamUp::Fetch { offset, .. }) = s.recv::<StreamUp>().await.unwrap()
                else {
                    continue;
                };
                asked += 1;
                serve_fetch(&mut s, &tar, offset, |_, mut d| {
                    d[0] ^= 1;
                    Some(d)
                })
                .await;
            }
            asked
        }
    });
    let (control, lines) = run_job(&conn, job).await;
    let f = finished_of(&control);
    assert_eq!(f.status, FinalStatus::Failed);
    let error = f.error.clone().unwrap_or_default();
    assert!(
        error.contains(&rev.digest) && error.contains("failed its SHA-256 4 times"),
        "{error}"
    );
    assert!(lines.is_empty(), "ansible never ran: {lines:?}");
    assert_eq!(
        fetches.await.unwrap(),
        outpost_protocol::fetch::MAX_REFUSALS,
        "asked again after each refusal, then gave up"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_runs_from_its_tree_with_roles_templates_and_group_vars() {
    let peer = setup();
    let stop = CancellationToken::new();
    let opts = ServiceOptions {
        host_key_checking: false,
        ..ServiceOptions::default()
    };
    let agent = tokio::spawn(service::run(peer.state.clone(), opts, stop.clone(), || {}));
    let out = tempfile::tempdir().unwrap();
    let (_, mut rev) = pack(
        &[
            ("site.yml", b"- hosts: web\n  gather_facts: false\n  roles: [motd]\n"),
            ("nomatch.yml", b"- hosts: db\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: never\n"),
            ("roles/motd/tasks/main.yml", b"- ansible.builtin.template:\n    src: motd.j2\n    dest: \"{{ out }}/motd\"\n"),
            ("roles/motd/templates/motd.j2", b"{{ greeting }} from {{ inventory_hostname }}\n"),
            ("inventories/prod/group_vars/web.yml", b"greeting: hello web\n"),
            ("inventories/prod/hosts.yml", b"all: {}\n"),
        ],
        true,
    );
    rev.inventory_dir = "inventories/prod".into();
    let (conn, _session, _) = welcomed(&peer.endpoint).await;

    let mut job = assignment("", 120);
    job.revision = rev.clone();
    job.playbook_path = "site.yml".into();
    job.target.groups = vec![vec!["prod".into(), "web".into()]];
    job.launch_vars_json = serde_json::json!({ "out": out.path() }).to_string();
    let (control, lines) = run_job(&conn, job.clone()).await;
    let f = finished_of(&control);
    assert_eq!(f.status, FinalStatus::Success, "{:?} {lines:#?}", f.error);
    assert_eq!(
        std::fs::read_to_string(out.path().join("motd")).unwrap(),
        "hello web from localhost\n",
        "the role's template, with the group's vars"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("TASK [motd : ")),
        "{lines:#?}"
    );

    // A playbook none of whose plays targets the host did nothing: that is no success.
    let mut nothing = job.clone();
    nothing.job = Uuid::new_v4();
    nothing.dispatch_id = Uuid::new_v4().to_string();
    nothing.playbook_path = "nomatch.yml".into();
    let (control, lines) = run_job(&conn, nothing).await;
    let f = finished_of(&control);
    assert_eq!((f.status, f.exit_code), (FinalStatus::Failed, Some(0)));
    assert_eq!(
        f.error.as_deref(),
        Some("no hosts matched: none of the playbook's plays targets localhost (its groups: prod, web)")
    );
    assert!(
        lines.iter().any(|l| l == "skipping: no hosts matched"),
        "the log is ansible's own: {lines:#?}"
    );

    // A playbook path that leaves the tree is refused before anything runs.
    let mut escape = job.clone();
    escape.job = Uuid::new_v4();
    escape.playbook_path = "../../etc/passwd".into();
    let (control, _) = run_job(&conn, escape).await;
    let f = finished_of(&control);
    assert_eq!(f.status, FinalStatus::Failed);
    assert!(
        f.error
            .clone()
            .unwrap_or_default()
            .contains("refusing playbook path"),
        "{:?}",
        f.error
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// What `/proc` shows of the processes carrying a job's mark: pid, command line, environment.
fn job_processes(job: Uuid) -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    let mark = format!("{}={job}", outpost_agent::runner::JOB_MARK);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == mark.as_bytes()) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, cmdline, environ));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `value` encrypted by ansible-vault under `id`, as the YAML of a variable `name`; the vault
/// password is read from a 0600 file, never given on the command line.
fn vault_encrypt(id: &str, password: &str, name: &str, value: &str) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pw)
            .unwrap(),
        password.as_bytes(),
    )
    .unwrap();
    let out = std::process::Command::new("ansible-vault")
        .arg("encrypt_string")
        .arg("--vault-id")
        .arg(format!("{id}@{}", pw.display()))
        .args(["--name", name, value])
        .output()
        .unwrap_or_else(|e| {
            panic!("ansible-vault cannot run ({e}): install ansible-core (`python3 -m pip install ansible-core`)")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_reach_ansible_as_private_files_and_nowhere_else() {
    use outpost_protocol::message::{JobSecrets, VaultSecret};
    use std::os::unix::fs::PermissionsExt;
    let peer = setup();
    let secrets_dir = tempfile::tempdir().unwrap();
    let root = secrets_dir.path().join("root");
    let stop = CancellationToken::new();
    let opts = ServiceOptions {
        host_key_checking: false,
        secrets_dir: Some(root.clone()),
        ..ServiceOptions::default()
    };
    let agent = tokio::spawn(service::run(peer.state.clone(), opts, stop.clone(), || {}));
    let vault_pw = format!("vault-pw-{}", Uuid::new_v4());
    let become_pw = format!("become-pw-{}", Uuid::new_v4());
    let plaintext = "the-decrypted-plaintext";
    let encrypted = vault_encrypt("outpost", &vault_pw, "secret_value", plaintext);
    let vars: String = encrypted.lines().map(|l| format!("    {l}\n")).collect();
    let playbook = format!(
        "- hosts: all\n  gather_facts: false\n  vars:\n{vars}  tasks:\n    - ansible.builtin.debug:\n        msg: \"decrypted: {{{{ secret_value }}}}\"\n    - ansible.builtin.command: sleep 3\n"
    );
    let mut job = assignment(&playbook, 120);
    job.secrets = JobSecrets {
        vars: Vec::new(),
        ssh_key: None,
        become_password: Some(become_pw.clone()),
        vault: vec![VaultSecret {
            id: "outpost".into(),
            password: vault_pw.clone(),
        }],
    };
    let (conn, _session, _) = welcomed(&peer.endpoint).await;
    let run = tokio::spawn({
        let (conn, job) = (conn.clone(), job.clone());
        async move { run_job(&conn, job).await }
    });

    // While it runs: the files are there and private, and no process of the job shows a
    // secret in its command line or environment.
    let job_dir = root.join(job.job.to_string());
    let mut seen = std::collections::BTreeSet::new();
    let mut saw_files = false;
    let mut saw_vault_arg = false;
    while !run.is_finished() {
        if let Ok(meta) = std::fs::symlink_metadata(&job_dir) {
            assert_eq!(meta.permissions().mode() & 0o777, 0o700);
            let pw = job_dir.join("vault-outpost");
            if let Ok(m) = std::fs::symlink_metadata(&pw) {
                assert_eq!(m.permissions().mode() & 0o777, 0o600);
                assert_eq!(std::fs::read_to_string(&pw).unwrap(), vault_pw);
                saw_files = true;
            }
        }
        for (pid, cmdline, environ) in job_processes(job.job) {
            for secret in [&vault_pw, &become_pw] {
                assert!(!contains(&cmdline, secret), "argv of {pid} holds a secret");
                assert!(!contains(&environ, secret), "env of {pid} holds a secret");
            }
            saw_vault_arg |=
                contains(&cmdline, "--vault-id") && contains(&cmdline, "--become-password-file");
            seen.insert(pid);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_files, "the job's secret files were never seen");
    assert!(
        seen.len() >= 2,
        "ansible-playbook and its workers were looked at: {seen:?}"
    );
    assert!(saw_vault_arg, "ansible-playbook was given the paths");

    let (control, lines) = run.await.unwrap();
    let f = finished_of(&control);
    assert_eq!(f.status, FinalStatus::Success, "{:?} {lines:#?}", f.error);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("decrypted: {plaintext}"))),
        "the vault was opened: {lines:#?}"
    );
    for line in &lines {
        assert!(
            !line.contains(&vault_pw) && !line.contains(&become_pw),
            "{line}"
        );
    }
    assert!(!job_dir.exists(), "the job's secrets are gone");
    assert!(root.exists(), "an operator's root stays");

    // A run that times out loses its secrets as well.
    let mut slow = assignment(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 30\n",
        2,
    );
    slow.secrets = JobSecrets {
        vars: Vec::new(),
        ssh_key: None,
        become_password: Some(become_pw.clone()),
        vault: vec![],
    };
    let (control, _) = run_job(&conn, slow.clone()).await;
    let f = finished_of(&control);
    assert_eq!(f.status, FinalStatus::Failed);
    assert!(
        f.error.as_deref().unwrap_or("").contains("timed out"),
        "{:?}",
        f.error
    );
    assert!(!root.join(slow.job.to_string()).exists());

    // A vault id ansible would misread fails the job before ansible runs, saying why.
    let mut bad = assignment(&playbook, 60);
    bad.secrets = JobSecrets {
        vars: Vec::new(),
        ssh_key: None,
        become_password: None,
        vault: vec![VaultSecret {
            id: "a@b".into(),
            password: vault_pw.clone(),
        }],
    };
    let (control, lines) = run_job(&conn, bad.clone()).await;
    let f = finished_of(&control);
    let error = f.error.clone().unwrap_or_default();
    assert_eq!(f.status, FinalStatus::Failed);
    assert!(error.contains("vault id \"a@b\" is refused"), "{error}");
    assert!(!error.contains(&vault_pw), "{error}");
    assert!(lines.is_empty(), "ansible never ran: {lines:?}");
    assert!(!root.join(bad.job.to_string()).exists());

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The agent binary, run against the test's controller; killed when dropped.
fn agent_process(
    peer: &Peer,
    secrets: &std::path::Path,
    log: &std::path::Path,
) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost-agent"))
        .arg("--state-dir")
        .arg(&peer.state.root)
        .args([
            "run",
            "--host-key-checking",
            "false",
            "--max-backoff-secs",
            "1",
        ])
        .arg("--secrets-dir")
        .arg(secrets)
        .env("OUTPOST_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_s_secrets_are_gone_at_its_next_start() {
    use outpost_protocol::message::JobSecrets;
    let peer = setup();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("secrets");
    let log = dir.path().join("agent.log");
    let become_pw = format!("become-pw-{}", Uuid::new_v4());
    let mut agent = agent_process(&peer, &root, &log);

    let (conn, _session, _) = welcomed(&peer.endpoint).await;
    let mut job = assignment(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 60\n",
        120,
    );
    job.secrets = JobSecrets {
        vars: Vec::new(),
        ssh_key: None,
        become_password: Some(become_pw.clone()),
        vault: vec![],
    };
    let (send, recv) = conn.open_bi().await.unwrap();
    let mut js = FramedStream::new(recv, send);
    js.send(&JobDown::Assign(Box::new(job.clone())))
        .await
        .unwrap();
    assert!(matches!(
        js.recv::<JobUp>().await.unwrap(),
        Some(JobUp::Accept { .. })
    ));
    // Kill it once ansible runs the task: its secrets and work directory are on disk.
    let job_dir = root.join(job.job.to_string());
    let work_dir = peer.state.work_dir().join(job.job.to_string());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(job_processes(job.job)
        .iter()
        .any(|(_, cmd, _)| cmd.starts_with(b"sleep\0")))
    {
        assert!(std::time::Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    assert!(
        job_dir.join("become_password").exists(),
        "kill -9 leaves the secrets behind"
    );
    assert!(work_dir.exists());

    let mut agent = agent_process(&peer, &root, &log);
    let (_conn, _session, hello) = welcomed(&peer.endpoint).await;
    assert!(!job_dir.exists(), "swept before the agent said Hello");
    assert!(
        !work_dir.exists(),
        "the interrupted job's work directory too"
    );
    assert!(root.exists());
    assert_eq!(
        hello
            .running
            .iter()
            .map(|r| (r.job, r.finished))
            .collect::<Vec<_>>(),
        vec![(job.job, true)],
        "the interrupted job is reported ended"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !job_processes(job.job).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the interrupted job's processes were killed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("removed the credentials of jobs interrupted"),
        "{logged}"
    );
    assert!(!logged.contains(&become_pw), "a secret in the agent's log");
}
