//! What idle agents cost a controller: N agent sessions (real mTLS QUIC on loopback, each with
//! its own certificate, saying Hello and then keeping the session alive) against one
//! `outpost-controller serve` process; the controller's resident memory and CPU are read from
//! /proc before and after, side by side in one run. Then the controller is killed (-9) and started again on the
//! same port, and the time until every agent is back in a new session is measured, with the
//! failed attempts on the way and the controller's peak memory.
//!
//! The agents live in client processes (this binary again, started with
//! `OUTPOST_BENCH_IDLE_CLIENT` set), `OUTPOST_BENCH_AGENTS_PER_CLIENT` each (default 10,000),
//! so the agents' side of 50,000 sessions is spread over processes and sockets as a controller
//! sees it spread over hosts, rather than on one runtime. A client process is cheap: one
//! current-thread runtime, a quinn endpoint (one UDP socket) per 2,500 sessions, and one task
//! per session that does what an agent's session does (Hello, then the agent's own
//! `AgentSide` rules: its QUIC keep-alive as its heartbeat, or a Heartbeat every interval the
//! Welcome names if that is shorter or `OUTPOST_BENCH_IDLE_HEARTBEATS=1` asks for the agents
//! of before 12-05, reading each acknowledgement). The clients also count the packets their
//! sessions send and receive, so the run says what an idle tick is on the wire.
//!
//! Run: `cargo bench -p outpost-controller --bench idle_agents` (`OUTPOST_BENCH_AGENTS`, default
//! 2000; `OUTPOST_BENCH_IDLE_SECS`, default 20; `OUTPOST_BENCH_IDLE_RESTART=0` skips the
//! kill -9; `OUTPOST_BENCH_IDLE_TIMEOUT_MS`, default 15,000, the idle timeout of both sides;
//! SQLite store in a temporary directory).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost_controller::model::Paging;
use outpost_controller::store::agents::NewEnrollmentToken;
use outpost_controller::store::audit::Actor;
use outpost_controller::{PoolConfig, Store};
use outpost_protocol::codec::FramedStream;
use outpost_protocol::control::{sleep_until, AgentAction, AgentSide};
use outpost_protocol::message::{Down, Hello, Up};
use outpost_protocol::pki::{AgentKey, Ca};
use outpost_protocol::tls::{self, Timers};
use outpost_protocol::token::EnrollToken;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::Semaphore;

/// The QUIC timers of both sides: `OUTPOST_BENCH_IDLE_TIMEOUT_MS` (default 15,000) is given to
/// the controller (`--idle-timeout-ms`) and to each agent, whose keep-alive goes out at a third
/// of it, as `outpost-agent` sends it.
fn timers() -> Timers {
    let idle = Duration::from_millis(env_num("OUTPOST_BENCH_IDLE_TIMEOUT_MS", 15_000) as u64);
    Timers {
        idle_timeout: idle,
        keep_alive: idle / 3,
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

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

fn main() {
    if let Ok(ids) = std::env::var("OUTPOST_BENCH_IDLE_CLIENT") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(client_main(PathBuf::from(ids)));
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(controller_main());
}

/// One client process as the parent sees it: its counters, updated from its stdout.
#[derive(Default)]
struct ClientCounts {
    /// Sessions live and welcomed since the last `epoch` the client was told of.
    welcomed: AtomicUsize,
    failed: AtomicUsize,
    /// The last answer to "stats": (sequence, [datagrams sent, received, pings sent, live
    /// sessions, heartbeat interval in ms, sessions ended so far]).
    stats: Mutex<(u64, [u64; 6])>,
}

struct Client {
    child: Child,
    stdin: ChildStdin,
    counts: Arc<ClientCounts>,
}

fn spawn_client(
    ids: &Path,
    ca: &Path,
    addr: std::net::SocketAddr,
    gate: usize,
) -> std::io::Result<Client> {
    let mut child = Command::new(std::env::current_exe()?)
        .env("OUTPOST_BENCH_IDLE_CLIENT", ids)
        .env("OUTPOST_BENCH_IDLE_CA", ca)
        .env("OUTPOST_BENCH_IDLE_ADDR", addr.to_string())
        .env("OUTPOST_BENCH_IDLE_GATE", gate.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let counts = Arc::new(ClientCounts::default());
    let c = counts.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            match (line.split_whitespace().next(), f.as_slice()) {
                (Some("count"), [w, fl]) => {
                    c.welcomed.store(*w as usize, Ordering::Relaxed);
                    c.failed.store(*fl as usize, Ordering::Relaxed);
                }
                (Some("stats"), [seq, tx, rx, ping, live, hb, ended]) => {
                    *c.stats.lock().unwrap() = (*seq, [*tx, *rx, *ping, *live, *hb, *ended]);
                }
                _ => {}
            }
        }
    });
    Ok(Client {
        child,
        stdin,
        counts,
    })
}

/// Asks every client for its sessions' packet counters and waits for all answers.
async fn client_stats(clients: &mut [Client], seq: u64) -> [u64; 6] {
    for c in clients.iter_mut() {
        let _ = writeln!(c.stdin, "stats {seq}");
        let _ = c.stdin.flush();
    }
    let mut sum = [0u64; 6];
    for c in clients.iter() {
        loop {
            let (s, v) = *c.counts.stats.lock().unwrap();
            if s == seq {
                for (a, b) in sum.iter_mut().zip(v) {
                    *a += b;
                }
                sum[4] = v[4];
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    sum
}

async fn controller_main() {
    let n = env_num("OUTPOST_BENCH_AGENTS", 2000);
    let per_client = env_num("OUTPOST_BENCH_AGENTS_PER_CLIENT", 10_000).max(1);
    let idle_secs = env_num("OUTPOST_BENCH_IDLE_SECS", 20) as u64;
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
    let ca_file = dir.path().join("bench-ca.der");
    std::fs::write(&ca_file, ca.cert_der().as_ref()).expect("ca file");

    // N enrolled agents, each with its own key and certificate, enrolled through the store;
    // each client process gets a file of its agents' certificates and keys.
    let t = Instant::now();
    let store = Store::connect(&url, &PoolConfig::default())
        .await
        .expect("store");
    store.migrate_up().await.expect("migrate");
    let clients_n = n.div_ceil(per_client);
    let mut id_files = Vec::new();
    let mut out: Option<std::io::BufWriter<std::fs::File>> = None;
    for i in 0..n {
        if i % per_client == 0 {
            if let Some(mut o) = out.take() {
                o.flush().expect("ids");
            }
            let path = dir.path().join(format!("client-{}.ids", i / per_client));
            out = Some(std::io::BufWriter::new(
                std::fs::File::create(&path).expect("ids"),
            ));
            id_files.push(path);
        }
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
        let o = out.as_mut().expect("ids");
        for part in [cert.as_ref(), key.private_key_der().secret_der()] {
            o.write_all(&(part.len() as u32).to_be_bytes())
                .expect("ids");
            o.write_all(part).expect("ids");
        }
    }
    if let Some(mut o) = out.take() {
        o.flush().expect("ids");
    }
    println!(
        "enrolled {n} agents in {:.1} s, for {clients_n} client processes",
        t.elapsed().as_secs_f64()
    );

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
                "--idle-timeout-ms",
                &timers().idle_timeout.as_millis().to_string(),
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
    // The controller's own idle cost, with no session: its periodic tasks.
    let (_, ticks_a) = proc_stat(pid);
    let quiet = Duration::from_secs(5);
    tokio::time::sleep(quiet).await;
    let (rss0, ticks_b) = proc_stat(pid);
    let hz = 100.0; // USER_HZ on Linux

    // The client processes do at most 128 handshakes at a time between them (they share the
    // two cores with the controller), the controller at most 256.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let gate = (128 / clients_n).max(8);
    let t = Instant::now();
    let mut clients: Vec<Client> = id_files
        .iter()
        .map(|ids| spawn_client(ids, &ca_file, addr, gate).expect("client process"))
        .collect();
    let counts: Vec<Arc<ClientCounts>> = clients.iter().map(|c| c.counts.clone()).collect();
    let welcomed = {
        let counts = counts.clone();
        move || {
            counts
                .iter()
                .map(|c| c.welcomed.load(Ordering::Relaxed))
                .sum::<usize>()
        }
    };
    let failed = {
        let counts = counts.clone();
        move || {
            counts
                .iter()
                .map(|c| c.failed.load(Ordering::Relaxed))
                .sum::<usize>()
        }
    };
    let all_welcomed = |target: usize| {
        let welcomed = welcomed.clone();
        async move {
            while welcomed() < target {
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
    println!(
        "{n} agents ({online} enrolled) connected in {connect:.1} s ({:.0} handshakes/s), \
         {clients_n} client processes",
        n as f64 / connect
    );
    // Let the last handshakes' work settle before the idle window starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss1, ticks1) = proc_stat(pid);
    let s1 = client_stats(&mut clients, 1).await;
    let idle = Duration::from_secs(idle_secs);
    tokio::time::sleep(idle).await;
    let (rss2, ticks2) = proc_stat(pid);
    let s2 = client_stats(&mut clients, 2).await;
    let cpu = (ticks2 - ticks1) as f64 / hz / idle.as_secs_f64() * 100.0;
    let rss = rss2.max(rss1);
    println!(
        "controller RSS: {} MiB before, {} MiB with {n} idle agents: {:.1} KiB per agent",
        rss0 / 1024,
        rss / 1024,
        (rss - rss0) as f64 / n as f64
    );
    // The heartbeat interval the controller's Welcome named.
    let hb = s2[4] as f64 / 1e3;
    // What a tokio channel costs before anything is sent: its first block of 32 slots.
    let block = |slot: usize| (32 * slot) as f64 / 1024.0;
    let up = std::mem::size_of::<Result<Up, outpost_protocol::codec::FrameError>>();
    let cmd = std::mem::size_of::<outpost_controller::scheduler::SessionCommand>();
    println!(
        "sizes: a session-stream message {up} B (a reader task's channel holds a first block of \
         32: {:.1} KiB), a session command {cmd} B (its channel's first block: {:.1} KiB)",
        block(up),
        block(cmd)
    );
    let per_agent_s = |d: u64| d as f64 / n as f64 / idle.as_secs_f64();
    println!(
        "controller CPU with no agent: {:.1} % of one core",
        (ticks_b - ticks_a) as f64 / hz / quiet.as_secs_f64() * 100.0
    );
    println!(
        "controller CPU while {n} agents idle: {cpu:.1} % of one core \
         ({:.1} us per agent per heartbeat interval of {hb:.0} s)",
        (ticks2 - ticks1) as f64 / hz * 1e6 / (n as f64 * idle.as_secs_f64() / hb)
    );
    println!(
        "on the wire per agent per {hb:.0} s: {:.2} datagrams to the controller, {:.2} from it, \
         {:.2} QUIC PINGs (keep-alives) among them; {} sessions live at the end, {} ended \
         during the idle window",
        per_agent_s(s2[0] - s1[0]) * hb,
        per_agent_s(s2[1] - s1[1]) * hb,
        per_agent_s(s2[2] - s1[2]) * hb,
        s2[3],
        s2[5] - s1[5]
    );

    if env_num("OUTPOST_BENCH_IDLE_RESTART", 1) == 0 {
        for c in &mut clients {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
        let _ = ctl.kill();
        let _ = ctl.wait();
        return;
    }
    // kill -9 and start again on the same port: every agent must come back by itself.
    let _ = ctl.kill();
    let _ = ctl.wait();
    let failed_before = failed();
    // From now on the clients count only sessions welcomed by the new controller.
    for c in &mut clients {
        let _ = writeln!(c.stdin, "epoch 1");
        let _ = c.stdin.flush();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let readies = ready_lines(&ctl_log);
    let mut ctl = serve();
    let t = Instant::now();
    wait_ready(&ctl_log, readies).await;
    let ready = t.elapsed().as_secs_f64() * 1e3;
    all_welcomed(n).await;
    let back = t.elapsed().as_secs_f64();
    let refused = failed() - failed_before;
    let (rss3, _) = proc_stat(ctl.id());
    let peak = peak_rss(ctl.id());
    println!(
        "after kill -9 and restart: ready in {ready:.0} ms, all {n} agents back in {back:.1} s; \
         {refused} failed attempts on the way (refused or timed out handshakes); controller RSS \
         {} MiB, peak {} MiB",
        rss3 / 1024,
        peak / 1024
    );
    for c in &mut clients {
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
    let _ = ctl.kill();
    let _ = ctl.wait();
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

type Live = Arc<Mutex<Vec<Option<(u64, quinn::Connection)>>>>;

/// Sessions per client endpoint (UDP socket).
const SESSIONS_PER_ENDPOINT: usize = 2500;

/// A client process: the agents in `ids`, until killed. Prints `count WELCOMED FAILED` every
/// 200 ms, and `stats SEQ SENT RECEIVED PINGS SESSIONS` (datagrams of its live sessions) when
/// asked with `stats SEQ` on stdin.
async fn client_main(ids: PathBuf) {
    let bytes = std::fs::read(&ids).expect("ids");
    let ca = CertificateDer::from(
        std::fs::read(std::env::var("OUTPOST_BENCH_IDLE_CA").expect("ca")).expect("ca"),
    );
    let addr: std::net::SocketAddr = std::env::var("OUTPOST_BENCH_IDLE_ADDR")
        .expect("addr")
        .parse()
        .expect("addr");
    let gate = Arc::new(Semaphore::new(env_num("OUTPOST_BENCH_IDLE_GATE", 32)));
    let mut parts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        parts.push(bytes[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    let identities: Vec<(Vec<u8>, Vec<u8>)> = parts
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    drop(parts);
    let n = identities.len();
    let endpoints: Vec<quinn::Endpoint> = (0..n.div_ceil(SESSIONS_PER_ENDPOINT))
        .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint"))
        .collect();
    let welcomed = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicU64::new(0));
    // Each agent's live session, with the epoch it was welcomed in.
    let live: Live = Arc::new(Mutex::new(vec![None; n]));
    let epoch = Arc::new(AtomicU64::new(0));
    let heartbeat_ms = Arc::new(AtomicU64::new(0));

    // Counters to the parent; packet counters on request.
    {
        let (live, epoch, failed) = (live.clone(), epoch.clone(), failed.clone());
        tokio::spawn(async move {
            loop {
                let now = epoch.load(Ordering::Relaxed);
                let current = live
                    .lock()
                    .unwrap()
                    .iter()
                    .flatten()
                    .filter(|(e, _)| *e == now)
                    .count();
                println!("count {current} {}", failed.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    {
        let (live, heartbeat_ms, ended) = (live.clone(), heartbeat_ms.clone(), ended.clone());
        let epoch = epoch.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                if let Some(e) = line
                    .strip_prefix("epoch ")
                    .and_then(|s| s.trim().parse().ok())
                {
                    epoch.store(e, Ordering::Relaxed);
                }
                if let Some(seq) = line
                    .strip_prefix("stats ")
                    .and_then(|s| s.trim().parse().ok())
                {
                    let _ = tx.send(seq);
                }
            }
        });
        tokio::spawn(async move {
            while let Some(seq) = rx.recv().await {
                let mut sum = [0u64; 4];
                for (_, c) in live.lock().unwrap().iter().flatten() {
                    let s = c.stats();
                    sum[0] += s.udp_tx.datagrams;
                    sum[1] += s.udp_rx.datagrams;
                    sum[2] += s.frame_tx.ping;
                    sum[3] += 1;
                }
                println!(
                    "stats {seq} {} {} {} {} {} {}",
                    sum[0],
                    sum[1],
                    sum[2],
                    sum[3],
                    heartbeat_ms.load(Ordering::Relaxed),
                    ended.load(Ordering::Relaxed)
                );
            }
        });
    }

    let mut handles = Vec::with_capacity(n);
    for (i, (cert, key)) in identities.into_iter().enumerate() {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let cfg = tls::agent_client_config(&ca, vec![CertificateDer::from(cert)], key, timers())
            .expect("client config");
        let client = endpoints[i / SESSIONS_PER_ENDPOINT].clone();
        let (gate, welcomed, failed, live, heartbeat_ms) = (
            gate.clone(),
            welcomed.clone(),
            failed.clone(),
            live.clone(),
            heartbeat_ms.clone(),
        );
        let (epoch, ended) = (epoch.clone(), ended.clone());
        handles.push(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            let mut dice = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            loop {
                let to = Session {
                    client: &client,
                    cfg: &cfg,
                    addr,
                    gate: &gate,
                    welcomed: &welcomed,
                    live: &live,
                    slot: i,
                    heartbeat_ms: &heartbeat_ms,
                    epoch: &epoch,
                };
                if session(to).await {
                    ended.fetch_add(1, Ordering::Relaxed);
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
    for h in handles {
        let _ = h.await;
    }
}

/// One agent session: true if it got as far as Welcome (and then ran until it broke).
struct Session<'a> {
    client: &'a quinn::Endpoint,
    cfg: &'a quinn::ClientConfig,
    addr: std::net::SocketAddr,
    gate: &'a Semaphore,
    welcomed: &'a AtomicUsize,
    live: &'a Mutex<Vec<Option<(u64, quinn::Connection)>>>,
    slot: usize,
    heartbeat_ms: &'a AtomicU64,
    epoch: &'a AtomicU64,
}

async fn session(to: Session<'_>) -> bool {
    let Session {
        client,
        cfg,
        addr,
        gate,
        welcomed,
        live,
        slot,
        heartbeat_ms,
        epoch,
    } = to;
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
    // The agent's own rules decide whether it beats (protocol::control::AgentSide): by default
    // its QUIC keep-alive is its heartbeat; OUTPOST_BENCH_IDLE_HEARTBEATS=1 makes the agents
    // of before 12-05, which sent a Heartbeat every interval whatever their keep-alive.
    let now = || tokio::time::Instant::now().into_std();
    let (mut machine, hello) = AgentSide::new(hello, now());
    if std::env::var_os("OUTPOST_BENCH_IDLE_HEARTBEATS").is_none() {
        machine.set_keep_alive(timers().keep_alive);
    }
    if s.send(&hello).await.is_err() {
        return false;
    }
    let Ok(Some(Down::Welcome(w))) = s.recv::<Down>().await else {
        return false;
    };
    drop(permit);
    welcomed.fetch_add(1, Ordering::Relaxed);
    live.lock().unwrap()[slot] = Some((epoch.load(Ordering::Relaxed), conn.clone()));
    heartbeat_ms.store(w.heartbeat_interval_ms.into(), Ordering::Relaxed);
    if machine.receive(Down::Welcome(w), now()).is_err() {
        return false;
    }
    // A session ends when its connection does, whether or not a beat is due.
    loop {
        tokio::select! {
            _ = conn.closed() => break,
            _ = sleep_until(machine.poll_timeout()) => {}
        }
        while let Ok(Some(AgentAction::Send(up))) = machine.poll(now()) {
            if s.send(&up).await.is_err() || s.recv::<Down>().await.ok().flatten().is_none() {
                break;
            }
        }
    }
    live.lock().unwrap()[slot] = None;
    true
}
