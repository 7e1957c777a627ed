//! What idle agents cost a controller: N agent sessions (real mTLS QUIC on loopback, each with
//! its own certificate, saying Hello and sending heartbeats) against one `outpost-controller
//! serve` process; the controller's resident memory and CPU are read from /proc before and
//! after, side by side in one run.
//!
//! Run: `cargo bench -p outpost-controller --bench idle_agents` (`OUTPOST_BENCH_AGENTS`, default
//! 2000; SQLite store in a temporary directory).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_controller::model::Paging;
use outpost_controller::store::agents::NewEnrollmentToken;
use outpost_controller::store::audit::Actor;
use outpost_controller::{PoolConfig, Store};
use outpost_protocol::codec::FramedStream;
use outpost_protocol::message::{Down, Hello, Up};
use outpost_protocol::pki::{AgentKey, Ca};
use outpost_protocol::tls::{self, Timers};
use outpost_protocol::token::EnrollToken;
use tokio::sync::Semaphore;

fn proc_stat(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat; after the ")" they are at 11 and 12.
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    (rss, ticks)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("OUTPOST_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("outpost.db").display());
    let bin = env!("CARGO_BIN_EXE_outpost-controller");
    let init = Command::new(bin)
        .args(["init", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", &url])
        .output()
        .expect("init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let ca = Ca::from_pem(
        &std::fs::read_to_string(dir.path().join("pki/ca.pem")).unwrap(),
        &std::fs::read_to_string(dir.path().join("pki/ca.key")).unwrap(),
    )
    .expect("CA");

    // N enrolled agents, each with its own key and certificate, enrolled through the store.
    let t = Instant::now();
    let store = Store::connect(&url, &PoolConfig::default())
        .await
        .expect("store");
    store.migrate_up().await.expect("migrate");
    let mut identities = Vec::with_capacity(n);
    for i in 0..n {
        let token = EnrollToken::generate(&ca.fingerprint());
        store
            .create_enrollment_token(
                &NewEnrollmentToken {
                    secret_hash: EnrollToken::secret_hash(&token.secret),
                    name: format!("agent-{i:05}"),
                    labels: serde_json::json!({"dc": format!("dc{}", i % 8)}),
                    expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
                },
                &Actor::system(),
            )
            .await
            .expect("token");
        let uuid = uuid::Uuid::new_v4();
        store
            .enroll_agent(
                &EnrollToken::secret_hash(&token.secret),
                &uuid.to_string(),
                &Default::default(),
                "bench",
            )
            .await
            .expect("enrol");
        let key = AgentKey::generate().expect("key");
        let cert = ca
            .sign_agent_csr(
                &key.csr("bench").expect("csr"),
                uuid,
                Duration::from_secs(86400),
            )
            .expect("sign");
        identities.push((cert, key.private_key_der()));
    }
    println!("enrolled {n} agents in {:.1} s", t.elapsed().as_secs_f64());

    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let enroll_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut ctl = Command::new(bin)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args([
            "--database-url",
            &url,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--enroll-listen",
            &format!("127.0.0.1:{enroll_port}"),
        ])
        .env("OUTPOST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = ctl.id();
    let (rss0, _) = proc_stat(pid);

    // Connect them all, 64 handshakes at a time.
    let mut client =
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client endpoint");
    client.set_default_client_config(
        tls::enroll_client_config(&ca.fingerprint(), Timers::default()).unwrap(),
    );
    let gate = Arc::new(Semaphore::new(64));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t = Instant::now();
    let mut sessions = Vec::with_capacity(n);
    for (cert, key) in identities {
        let cfg = tls::agent_client_config(ca.cert_der(), vec![cert], key, Timers::default())
            .expect("client config");
        let (gate, client) = (gate.clone(), client.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        sessions.push((
            tokio::spawn(async move {
                let permit = gate.acquire_owned().await.expect("gate");
                let conn = client
                    .connect_with(cfg, addr, "localhost")
                    .expect("connect")
                    .await
                    .expect("handshake");
                let (send, recv) = conn.open_bi().await.expect("stream");
                let mut s = FramedStream::new(recv, send);
                let hello = Hello {
                    protocol_version: outpost_protocol::PROTOCOL_VERSION,
                    agent_version: "bench".into(),
                    hostname: "bench".into(),
                    labels: vec![],
                    capacity: 4,
                    ansible_version: "none".into(),
                    running: vec![],
                    capabilities: vec![],
                };
                s.send(&Up::Hello(hello)).await.expect("hello");
                let Some(Down::Welcome(w)) = s.recv::<Down>().await.expect("welcome") else {
                    panic!("no Welcome")
                };
                drop(permit);
                let _ = ready_tx.send(());
                let mut seq = 0;
                loop {
                    tokio::time::sleep(Duration::from_millis(w.heartbeat_interval_ms.into())).await;
                    seq += 1;
                    if s.send(&Up::Heartbeat { seq }).await.is_err() {
                        return;
                    }
                    if s.recv::<Down>().await.ok().flatten().is_none() {
                        return;
                    }
                }
            }),
            ready_rx,
        ));
    }
    let mut handles = Vec::with_capacity(n);
    for (h, ready) in sessions {
        ready.await.expect("session up");
        handles.push(h);
    }
    let connect = t.elapsed().as_secs_f64();
    let online = store
        .list_agents(Paging::new(1, 0))
        .await
        .map(|p| p.total)
        .unwrap_or(0);
    let (rss1, ticks1) = proc_stat(pid);
    let idle = Duration::from_secs(20);
    tokio::time::sleep(idle).await;
    let (rss2, ticks2) = proc_stat(pid);
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (ticks2 - ticks1) as f64 / hz / idle.as_secs_f64() * 100.0;
    println!(
        "{n} agents ({online} enrolled) connected in {connect:.1} s ({:.0} handshakes/s)",
        n as f64 / connect
    );
    println!(
        "controller RSS: {} MiB before, {} MiB with {n} idle agents: {:.1} KiB per agent",
        rss0 / 1024,
        rss2.max(rss1) / 1024,
        (rss2.max(rss1) - rss0) as f64 / n as f64
    );
    println!("controller CPU while {n} agents idle (heartbeat every 5 s): {cpu:.1} % of one core");
    for h in handles {
        h.abort();
    }
    let _ = ctl.kill();
    let _ = ctl.wait();
    client.close(quinn::VarInt::from_u32(0), b"done");
}
