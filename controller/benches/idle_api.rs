//! What idle HTTPS connections cost a controller: N TLS connections to the API of one
//! `outpost-controller serve` process (SQLite store), opened from 50 loopback addresses (so
//! that each stays under the per-address cap), measured in the same run:
//!
//! 1. silent: each connection finished its TLS handshake and sent nothing — what an anonymous
//!    client holds until the header timeout;
//! 2. kept alive: each then sent one `GET /healthz` over HTTP/1.1 and read the answer;
//! 3. closed: all of them closed by the client, once the controller counts none open.
//!
//! The controller's resident memory is read from /proc at each step. Its timeouts are raised
//! to 300 s for the run so that nothing is closed while it is measured, and its total cap to
//! N + 100; the per-address cap is the default.
//!
//! Run: `cargo bench -p outpost-controller --bench idle_api` (`OUTPOST_BENCH_API_CONNECTIONS`,
//! default 10000). It raises its own open-file limit to the hard limit; the controller
//! inherits it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;

/// Source addresses the connections come from (127.0.0.2 onwards).
const SOURCES: usize = 50;

fn rss_kib(pid: u32) -> u64 {
    outpost_tests::procs::proc_status_kib(pid, "VmRSS").unwrap_or(0)
}

/// Raises the soft open-file limit to the hard one; returns it.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

type Tls = TlsStream<TcpStream>;

async fn connect(
    tls: &tokio_rustls::TlsConnector,
    api: SocketAddr,
    from: IpAddr,
) -> std::io::Result<Tls> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let tcp = socket.connect(api).await?;
    let name = ServerName::try_from("localhost").expect("name");
    tls.connect(name, tcp).await
}

/// One `GET path` on a kept-alive HTTP/1.1 connection; the whole answer (it is small).
async fn get(conn: &mut Tls, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = conn.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the answer");
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse().ok())
                })
                .expect("content-length");
            if out.len() >= head_end + 4 + len {
                return text.into_owned();
            }
        }
    }
}

/// `outpost_api_connections_open` as the controller reports it, over its own connection.
async fn open_on_server(tls: &tokio_rustls::TlsConnector, api: SocketAddr) -> u64 {
    let mut conn = connect(tls, api, IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .expect("metrics connection");
    let text = get(&mut conn, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("outpost_api_connections_open "))
        .and_then(|v| v.trim().parse().ok())
        .expect("outpost_api_connections_open")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("OUTPOST_BENCH_API_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let nofile = raise_nofile();
    assert!(
        nofile as usize > n + 200,
        "the open-file limit ({nofile}) is too low for {n} connections: raise the hard limit"
    );
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("outpost.db").display());
    let bin = env!("CARGO_BIN_EXE_outpost-controller");
    let init = Command::new(bin)
        .args(["init", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", &url])
        .env_remove("OUTPOST_ADMIN_PASSWORD")
        .output()
        .expect("init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let log_path = dir.path().join("controller.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let max = (n + 100).to_string();
    let mut ctl = Command::new(bin)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args([
            "--database-url",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--enroll-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--api-header-timeout-secs",
            "300",
            "--api-idle-timeout-secs",
            "300",
            "--api-max-connections",
            &max,
        ])
        .env("OUTPOST_LOG", "warn,outpost_controller::server=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("serve");
    let started = Instant::now();
    let api: SocketAddr = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let found = text
            .lines()
            .find(|l| l.contains("controller ready"))
            .and_then(|l| {
                let rest = &l[l.find("api=")? + 4..];
                rest.split(|c: char| c.is_whitespace() || c == ',')
                    .next()?
                    .trim_matches('"')
                    .parse()
                    .ok()
            });
        if let Some(a) = found {
            break a;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "controller not ready:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pid = ctl.id();
    let ca = std::fs::read_to_string(dir.path().join("pki/ca.pem")).expect("CA");
    let mut cfg = outpost_api::client::tls_config(&ca).expect("TLS config");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));

    // One request first, so that what is allocated once (the router, the TLS session cache) is
    // in the baseline.
    assert_eq!(open_on_server(&tls, api).await, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss_kib(pid);

    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(64));
    let opening: Vec<_> = (0..n)
        .map(|i| {
            let (tls, gate) = (tls.clone(), gate.clone());
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCES) as u8));
            tokio::spawn(async move {
                let _permit = gate.acquire().await.expect("gate");
                connect(&tls, api, from).await
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(n);
    for o in opening {
        conns.push(o.await.expect("task").expect("connection"));
    }
    let opened = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = rss_kib(pid);
    let counted = open_on_server(&tls, api).await;

    let t = Instant::now();
    let requests: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await.expect("gate");
                let answer = get(&mut c, "/healthz").await;
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                c
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(n);
    for r in requests {
        conns.push(r.await.expect("request"));
    }
    let served = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss2 = rss_kib(pid);

    drop(conns);
    let t = Instant::now();
    while open_on_server(&tls, api).await > 1 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "connections not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss3 = rss_kib(pid);

    let per = |rss: u64| (rss.saturating_sub(rss0)) as f64 / n as f64;
    println!(
        "{n} TLS connections from {SOURCES} addresses opened in {opened:.1} s ({:.0} handshakes/s); the controller counted {counted} open",
        n as f64 / opened
    );
    println!(
        "controller RSS: {} MiB before; {} MiB with {n} silent ({:.1} KiB each); {} MiB with {n} kept alive after a request ({:.1} KiB each, requests in {served:.1} s); {} MiB once all closed",
        rss0 / 1024,
        rss1 / 1024,
        per(rss1),
        rss2 / 1024,
        per(rss2),
        rss3 / 1024,
    );
    let _ = ctl.kill();
    let _ = ctl.wait();
}
