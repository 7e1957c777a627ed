//! What idle agents cost a controller: N agent sessions (real mTLS QUIC on loopback, each with
//! its own certificate, saying Hello and sending heartbeats) against one `outpost-controller
//! serve` process; the controller's resident memory and CPU are read from /proc before and
//! after, side by side in one run. Then the controller is killed (-9) and started again on the
//! same port, and the time until every agent is back in a new session is measured, with the
//! failed attempts on the way and the controller's peak memory.
//!
//! Run: `cargo bench -p outpost-controller --bench idle_agents` (`OUTPOST_BENCH_AGENTS`, default
//! 2000; SQLite store in a temporary directory).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    let rss = outpost_tests::procs::proc_status_kib(pid, "VmRSS").unwrap_or(0);
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
    let ctl_log = dir.path().join("controller.log");
    let serve = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ctl_log)
            .expect("log");
        Command::new(bin)
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args([
                "--database-url",
                &url,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--enroll-listen",
                &format!("127.0.0.1:{enroll_port}"),
                "--api-listen",
                "127.0.0.1:0",
            ])
            .env("OUTPOST_LOG", "warn,outpost_controller::server=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("serve")
    };
    let mut ctl = serve();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = ctl.id();
    let (rss0, _) = proc_stat(pid);

    // Each session acts as an agent does: connect, Hello, heartbeats; on any failure, wait
    // with the agent's jittered backoff (0.5 s doubling to 30 s) and connect again. The client
    // process does at most 64 handshakes at a time (it has the same two cores).
    let mut client =
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("client endpoint");
    client.set_default_client_config(
        tls::enroll_client_config(&ca.fingerprint(), Timers::default()).unwrap(),
    );
    let gate = Arc::new(Semaphore::new(64));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let welcomed = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for (i, (cert, key)) in identities.into_iter().enumerate() {
        let cfg = tls::agent_client_config(ca.cert_der(), vec![cert], key, Timers::default())
            .expect("client config");
        let (gate, client) = (gate.clone(), client.clone());
        let (welcomed, failed) = (welcomed.clone(), failed.clone());
        handles.push(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            let mut dice = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            loop {
                if session(&client, &cfg, addr, &gate, &welcomed).await {
                    backoff = Duration::from_millis(500);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                dice ^= dice << 13;
                dice ^= dice >> 7;
                dice ^= dice << 17;
                let jitter = 0.5 + (dice % 1000) as f64 / 1000.0;
                tokio::time::sleep(backoff.mul_f64(jitter)).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }));
    }
    let all_welcomed = |target: usize| {
        let welcomed = welcomed.clone();
        async move {
            while welcomed.load(Ordering::Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    all_welcomed(n).await;
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

    // kill -9 and start again on the same port: every agent must come back by itself.
    let _ = ctl.kill();
    let _ = ctl.wait();
    let failed_before = failed.load(Ordering::Relaxed);
    let readies = ready_lines(&ctl_log);
    let mut ctl = serve();
    let t = Instant::now();
    wait_ready(&ctl_log, readies).await;
    let ready = t.elapsed().as_secs_f64() * 1e3;
    all_welcomed(2 * n).await;
    let back = t.elapsed().as_secs_f64();
    let refused = failed.load(Ordering::Relaxed) - failed_before;
    let (rss3, _) = proc_stat(ctl.id());
    let peak = peak_rss(ctl.id());
    println!(
        "after kill -9 and restart: ready in {ready:.0} ms, all {n} agents back in {back:.1} s; \
         {refused} failed attempts on the way (refused or timed out handshakes); controller RSS \
         {} MiB, peak {} MiB",
        rss3 / 1024,
        peak / 1024
    );
    for h in handles {
        h.abort();
    }
    let _ = ctl.kill();
    let _ = ctl.wait();
    client.close(quinn::VarInt::from_u32(0), b"done");
}

/// Peak resident memory (VmHWM) in KiB.
fn peak_rss(pid: u32) -> u64 {
    outpost_tests::procs::proc_status_kib(pid, "VmHWM").unwrap_or(0)
}

fn ready_lines(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("controller ready")
        .count()
}

/// Waits for one more "controller ready" line than `before`.
async fn wait_ready(log: &std::path::Path, before: usize) {
    loop {
        if ready_lines(log) > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One agent session: true if it got as far as Welcome (and then ran until it broke).
async fn session(
    client: &quinn::Endpoint,
    cfg: &quinn::ClientConfig,
    addr: std::net::SocketAddr,
    gate: &Semaphore,
    welcomed: &AtomicUsize,
) -> bool {
    let permit = gate.acquire().await.expect("gate");
    let Ok(connecting) = client.connect_with(cfg.clone(), addr, "localhost") else {
        return false;
    };
    let Ok(conn) = connecting.await else {
        return false;
    };
    let Ok((send, recv)) = conn.open_bi().await else {
        return false;
    };
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
    if s.send(&Up::Hello(hello)).await.is_err() {
        return false;
    }
    let Ok(Some(Down::Welcome(w))) = s.recv::<Down>().await else {
        return false;
    };
    drop(permit);
    welcomed.fetch_add(1, Ordering::Relaxed);
    let mut seq = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(w.heartbeat_interval_ms.into())).await;
        seq += 1;
        if s.send(&Up::Heartbeat { seq }).await.is_err() {
            return true;
        }
        if s.recv::<Down>().await.ok().flatten().is_none() {
            return true;
        }
    }
}
