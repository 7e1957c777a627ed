//! Hostile agents against a real controller: ones that flood their session stream, whether
//! they read the answers or not, are cut off each time they come back, without starving the
//! agent that runs a job meanwhile; renewal requests back to back are refused unread; and a
//! renewal the agent never received leaves the store naming the certificate the agent has.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_controller::model::JobStatus;
use outpost_protocol::close;
use outpost_protocol::control::SESSION_BURST;
use outpost_protocol::message::{Down, Up};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{Agent, AgentOpts, Controller, ControllerOpts, HandSession};
use outpost_tests::{wait_for, Backend};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// Heartbeats as fast as `session`'s stream takes them, counted in `written`; the answers are
/// read (and dropped) when `reads`, never read otherwise. Ends when a write fails.
fn flood(
    session: HandSession,
    reads: bool,
    written: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let HandSession {
        endpoint,
        conn,
        session,
    } = session;
    let mut send = session.send;
    let mut recv = session.recv;
    // A deaf flooder keeps its receiving half open (dropping it would tell the controller to
    // stop sending, which ends the session for another reason) and never reads it.
    let deaf = if reads {
        tokio::spawn(async move {
            while let Ok(Some(_)) =
                outpost_protocol::codec::read_frame::<_, Down>(&mut recv, 1 << 20).await
            {
            }
        });
        None
    } else {
        Some(recv)
    };
    tokio::spawn(async move {
        let _keep = (endpoint, conn, deaf);
        let mut seq = 0u64;
        loop {
            seq += 1;
            written.store(seq, Ordering::Relaxed);
            if outpost_protocol::codec::write_frame(&mut send, &Up::Heartbeat { seq }, 1024)
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

/// Waits for the controller to cut off `conn`, the session of the agent `uuid`, for flooding.
async fn cut_off_for_flooding(ctl: &Controller, name: &str, uuid: &str, conn: &quinn::Connection) {
    let reason = tokio::time::timeout(Duration::from_secs(20), conn.closed())
        .await
        .unwrap_or_else(|_| panic!("{name}'s session is still open"));
    let flooded = "the agent flooded its session stream";
    match reason {
        quinn::ConnectionError::ApplicationClosed(a) => {
            assert_eq!(
                a.error_code.into_inner(),
                u64::from(close::PROTOCOL),
                "{name}"
            );
            let said = String::from_utf8_lossy(&a.reason).into_owned();
            assert!(said.contains(flooded), "{name} was told: {said}");
        }
        // A client that keeps sending after the close may meet the controller's stateless
        // reset before the close frame: then the controller's own word must say why.
        quinn::ConnectionError::Reset => {
            let log = ctl.log();
            assert!(
                log.lines().any(|l| l.contains(uuid) && l.contains(flooded)),
                "{name} reset without a flood:\n{log}"
            )
        }
        other => panic!("{name} closed for another reason: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_agents_are_cut_off_refused_or_set_right() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let _steady = c.agent("steady", &["dc=local"], &AgentOpts::default());
    let w = &c.world;
    // The flooders cannot be given the job: the test is about whether they starve the others.
    let mut flooders = Vec::new();
    for (name, reads) in [("flood-deaf", false), ("flood-reading", true)] {
        let agent = Agent::enroll(&c.ctl, name, &["dc=elsewhere"]);
        let uuid = w.store.get_agent_by_name(name).await.unwrap().uuid.0;
        flooders.push((name, agent, uuid.to_string(), reads));
    }
    let server = w.local_server("web1", json!({"dc": "local"}), "dev").await;
    let pb = w
        .playbook(
            "hello",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 6\n",
        )
        .await;
    let job = w.launch(&pb, &server).await;

    // Both flood, are cut off and come back to flood again, for as long as the job runs.
    let started = Instant::now();
    let mut rounds = 0;
    while !w.job(&job).await.status.is_final() {
        assert!(
            started.elapsed() < MINUTE,
            "the job did not end in {rounds} rounds of flooding"
        );
        let mut floods = Vec::new();
        for (name, agent, uuid, reads) in &flooders {
            let session = HandSession::open(&c.ctl, agent).await;
            let conn = session.conn.clone();
            let written = Arc::new(AtomicU64::new(0));
            let task = flood(session, *reads, written.clone());
            floods.push((name, uuid, conn, written, task));
        }
        for (name, uuid, conn, written, task) in floods {
            cut_off_for_flooding(&c.ctl, name, uuid, &conn).await;
            let _ = tokio::time::timeout(MINUTE, task).await;
            let sent = written.load(Ordering::Relaxed);
            assert!(
                sent > u64::from(SESSION_BURST),
                "{name} did flood ({sent} heartbeats)"
            );
        }
        rounds += 1;
    }
    // The job takes seconds: flooders kept coming back all through it.
    assert!(rounds > 1, "the job ended after {rounds} round of flooding");
    eprintln!("{rounds} rounds of flooding while the job ran");
    // The steady agent kept working.
    let done = w.wait_status(&job, JobStatus::Success, MINUTE).await;
    let steady = w.store.get_agent_by_name("steady").await.unwrap();
    assert_eq!(done.agent_id, Some(steady.id));

    // Renewal requests back to back: the first is looked at (and refused, for its request is
    // not a CSR); the next ones are refused unread, and the session stays up.
    let asker = Agent::enroll(&c.ctl, "asker", &["dc=elsewhere"]);
    let mut s = HandSession::open(&c.ctl, &asker).await;
    let mut reasons = Vec::new();
    for _ in 0..3 {
        s.session
            .send(&Up::Renew {
                csr_der: vec![0x30, 0x03, 1, 2, 3],
            })
            .await
            .expect("the request is sent");
        match tokio::time::timeout(MINUTE, s.session.recv::<Down>()).await {
            Ok(Ok(Some(Down::RenewRefused { reason }))) => reasons.push(reason),
            other => panic!("not a refusal: {other:?}"),
        }
    }
    assert!(!reasons[0].contains("too soon"), "{reasons:?}");
    assert!(
        reasons[1..].iter().all(|r| r.contains("too soon")),
        "{reasons:?}"
    );
    assert!(s.conn.close_reason().is_none(), "the asker was not cut off");
    drop(s);

    // A renewal the agent never received: the controller signs and records it, the agent
    // goes away without reading the answer, and comes back with the certificate it has. The
    // store then names that one again, for the fleet's view and the expiry notices.
    let state = outpost_agent::state::StateDir::new(&asker.state_dir);
    let pem = std::fs::read_to_string(state.cert_file()).expect("the asker's certificate");
    let leaf = outpost_protocol::pki::certs_from_pem(&pem).expect("a certificate chain");
    let held = outpost_protocol::pki::fingerprint(&leaf[0]);
    let key = std::fs::read_to_string(state.key_file()).expect("the asker's key");
    let csr = outpost_protocol::pki::AgentKey::from_pem(&key)
        .and_then(|k| k.csr("asker"))
        .expect("a certificate request");
    let fingerprint = || async {
        w.store
            .get_agent_by_name("asker")
            .await
            .ok()?
            .cert_fingerprint
    };
    assert_eq!(fingerprint().await.as_deref(), Some(held.as_str()));
    let mut s = HandSession::open(&c.ctl, &asker).await;
    s.session
        .send(&Up::Renew { csr_der: csr })
        .await
        .expect("the request is sent");
    wait_for("the renewal recorded", MINUTE, || async {
        fingerprint().await.filter(|f| *f != held)
    })
    .await;
    s.conn.close(0u32.into(), b"gone");
    drop(s);
    let _back = HandSession::open(&c.ctl, &asker).await;
    wait_for("the certificate the agent holds", MINUTE, || async {
        fingerprint().await.filter(|f| *f == held)
    })
    .await;
}

// ---- The HTTPS API's edge, against anonymous clients ----

mod api_edge {
    use std::net::{IpAddr, SocketAddr};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use outpost_controller::model::Role;
    use outpost_tests::cluster::Cluster;
    use outpost_tests::procs::{Controller, ControllerOpts};
    use outpost_tests::Backend;
    use reqwest::{Method, StatusCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};
    use tokio_rustls::client::TlsStream;
    use tokio_rustls::rustls::pki_types::ServerName;

    type Tls = TlsStream<TcpStream>;

    /// A TLS connection to the API from `from` (any address of 127/8 is this host's), speaking
    /// HTTP/1.1 when it speaks at all.
    async fn tls_from(ctl: &Controller, from: IpAddr) -> std::io::Result<Tls> {
        let mut cfg = outpost_api::client::tls_config(&ctl.ca_pem()).expect("TLS config");
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let tcp = socket.connect(ctl.api).await?;
        let name = ServerName::try_from("localhost").expect("name");
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// Reads until the server closes the connection (EOF, or an error such as a reset or a
    /// missing close_notify); `None` if it is still open after `within`.
    async fn closed_within(conn: &mut Tls, within: Duration) -> Option<Instant> {
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
                // An error page before closing is fine: read on to the end.
                Ok(Ok(_)) => continue,
            }
        }
    }

    async fn metrics(ctl: &Controller) -> String {
        let resp = ctl
            .api()
            .request(Method::GET, "/metrics")
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.expect("metrics text")
    }

    /// `GET path` over a connection of its own from `from`; `None` if it is refused.
    async fn get_from(ctl: &Controller, from: IpAddr, path: &str) -> Option<String> {
        let mut conn = tls_from(ctl, from).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        // To the end, which may come without a TLS close_notify.
        while let Ok(n @ 1..) = conn.read(&mut buf).await {
            out.extend_from_slice(&buf[..n]);
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// The value of the sample `name` (with its labels, as rendered) in a metrics text.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// 400 anonymous requests, each with its own 8 KiB method name, used to add a labelled
    /// series each to /metrics (46 MB for 400): now they are all `OTHER`, and /metrics grows by
    /// a few series at most.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn made_up_methods_do_not_grow_metrics() {
        let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
        // Once, so that GET /metrics' own series exists before the figure is taken.
        metrics(&c.ctl).await;
        let before = metrics(&c.ctl).await.len();
        let anon = c.ctl.api();
        for i in 0..400 {
            let name = format!("M{i:04}{}", "X".repeat(8 * 1024 - 5));
            let method = Method::from_bytes(name.as_bytes()).expect("a valid token");
            // Half at a route that exists, half at made-up paths.
            let path = if i % 2 == 0 {
                "/healthz".to_owned()
            } else {
                format!("/made-up/{i}")
            };
            let resp = anon.request(method, &path).send().await.expect("an answer");
            assert!(resp.status().is_client_error(), "{}", resp.status());
        }
        let text = metrics(&c.ctl).await;
        let growth = text.len() as i64 - before as i64;
        println!("/metrics: {before} bytes before, {} after", text.len());
        assert!(!text.contains("XXXXXXXX"), "a method name is a label");
        assert!(!text.contains("M0001"), "a method name is a label");
        assert!(!text.contains("/made-up/"), "a raw path is a label");
        assert!(growth < 16 * 1024, "/metrics grew by {growth} bytes");
        let other: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("outpost_http_requests_total{") && l.contains("method=\"OTHER\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(
            other, 400.0,
            "every made-up method is counted as OTHER:\n{text}"
        );
        assert!(
            text.contains("method=\"OTHER\",route=\"unmatched\",status=\"404\""),
            "{text}"
        );
    }

    /// Clients that connect and then send half a request head, nothing at all, or half an
    /// HTTP/2 preface are all closed by the server once the header timeout (2 s here) is up,
    /// and not before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_sent_requests_are_cut_off_at_the_header_timeout() {
        let timeout = Duration::from_secs(2);
        let slack = Duration::from_secs(3);
        let opts = ControllerOpts {
            extra: vec!["--api-header-timeout-secs".into(), "2".into()],
            ..ControllerOpts::default()
        };
        let c = Cluster::start(Backend::Sqlite, opts).await;
        let mut conns = Vec::new();
        for i in 0..50 {
            let mut conn = tls_from(&c.ctl, ip("127.0.0.1"))
                .await
                .expect("TLS handshake");
            let opened = Instant::now();
            let (kind, bytes): (&str, &[u8]) = match i % 5 {
                0 => ("silent", b""),
                1 => ("h2 preface", b"PRI * HTTP/2.0\r\n"),
                _ => (
                    "half a head",
                    b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: a",
                ),
            };
            conn.write_all(bytes).await.expect("write");
            conn.flush().await.expect("flush");
            conns.push((kind, opened, conn));
        }
        let closing = conns.into_iter().map(|(kind, opened, mut conn)| {
            tokio::spawn(async move {
                let closed = closed_within(&mut conn, timeout + slack + Duration::from_secs(2))
                    .await
                    .map(|at| at - opened);
                (kind, closed)
            })
        });
        let mut took = Vec::new();
        for t in closing {
            let (kind, closed) = t.await.expect("task");
            let Some(after) = closed else {
                panic!(
                    "a client sending {kind} is still connected after {:?}",
                    timeout + slack
                )
            };
            assert!(
                after >= timeout - Duration::from_millis(300) && after <= timeout + slack,
                "a client sending {kind} was closed after {after:?}"
            );
            took.push(after);
        }
        took.sort();
        println!(
            "50 stalled clients closed after {:?} to {:?}",
            took[0],
            took[took.len() - 1]
        );
        let text = metrics(&c.ctl).await;
        assert!(
            sample(&text, "outpost_api_connections_timed_out_total").unwrap_or(0.0) >= 50.0,
            "{text}"
        );
        // The metrics request's own connection is the only one left.
        assert_eq!(
            sample(&text, "outpost_api_connections_open"),
            Some(1.0),
            "{text}"
        );
    }

    /// More connections than the per-address cap from one address: the extra ones are closed
    /// at once, before TLS, while another address still gets in — until the total cap is
    /// reached too. Closing connections gives their places back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_capped_per_address_and_in_total() {
        let opts = ControllerOpts {
            extra: [
                "--api-max-connections-per-address",
                "20",
                "--api-max-connections",
                "30",
                // Nothing times out during the test.
                "--api-header-timeout-secs",
                "120",
            ]
            .map(String::from)
            .to_vec(),
            ..ControllerOpts::default()
        };
        let c = Cluster::start(Backend::Sqlite, opts).await;
        let refused = |from: &'static str| {
            let ctl = &c.ctl;
            async move {
                let started = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(10), tls_from(ctl, ip(from)))
                    .await
                    .expect("an answer, not a hang");
                assert!(
                    r.is_err(),
                    "a connection from {from} beyond the cap was served"
                );
                let took = started.elapsed();
                assert!(took < Duration::from_secs(2), "refused only after {took:?}");
            }
        };
        let mut first = Vec::new();
        for _ in 0..20 {
            first.push(
                tls_from(&c.ctl, ip("127.0.0.1"))
                    .await
                    .expect("within the cap"),
            );
        }
        for _ in 0..5 {
            refused("127.0.0.1").await;
        }
        let mut second = Vec::new();
        for _ in 0..10 {
            second.push(
                tls_from(&c.ctl, ip("127.0.0.2"))
                    .await
                    .expect("another address is not capped by the first"),
            );
        }
        refused("127.0.0.3").await;
        // The connections let in are served.
        let conn = &mut first[0];
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 1024];
        let n = conn.read(&mut buf).await.expect("an answer");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        // Five places given back, once the server has seen the closes (asked from an address of
        // its own, whose only refusals can be for the total), and four more get in.
        first.truncate(15);
        let text =
            outpost_tests::wait_for("closed connections freed", Duration::from_secs(10), || {
                let ctl = &c.ctl;
                async move {
                    let text = get_from(ctl, ip("127.0.0.9"), "/metrics").await?;
                    // The 25 kept and this one.
                    (sample(&text, "outpost_api_connections_open") == Some(26.0)).then_some(text)
                }
            })
            .await;
        for _ in 0..4 {
            first.push(
                tls_from(&c.ctl, ip("127.0.0.1"))
                    .await
                    .expect("a freed place"),
            );
        }
        assert_eq!(
            sample(
                &text,
                "outpost_api_connections_refused_total{reason=\"max_connections_per_address\"}"
            ),
            Some(5.0),
            "{text}"
        );
        assert!(
            sample(
                &text,
                "outpost_api_connections_refused_total{reason=\"max_connections\"}"
            )
            .is_some_and(|n| n >= 1.0),
            "{text}"
        );
    }

    /// The head of an HTTP/1.1 answer read from `conn` (to its blank line), lower-cased.
    async fn answer_head(conn: &mut tokio::io::ReadHalf<Tls>) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut byte)).await {
                Ok(Ok(1)) => head.push(byte[0]),
                other => panic!(
                    "the answer ended early ({other:?}): {}",
                    String::from_utf8_lossy(&head)
                ),
            }
        }
        String::from_utf8_lossy(&head).to_lowercase()
    }

    /// Reads the body of an answer whose head is `head` (by its Content-Length).
    async fn skip_body(conn: &mut tokio::io::ReadHalf<Tls>, head: &str) {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no content-length: {head}"));
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).await.expect("the answer's body");
    }

    /// The connection whose answer's head is `head` was kept: the answer does not close it,
    /// and after its body a second request is answered on it.
    async fn kept_alive(
        rd: &mut tokio::io::ReadHalf<Tls>,
        wr: &mut tokio::io::WriteHalf<Tls>,
        head: &str,
    ) {
        assert!(!head.contains("connection: close"), "{head}");
        skip_body(rd, head).await;
        wr.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("a second request on the connection");
        let again = answer_head(rd).await;
        assert!(again.starts_with("http/1.1 200"), "after {head}: {again}");
    }

    /// A request answered before its body was read (here: no session) closes its connection
    /// and says so when the body is too large to drain (over 1 MiB). hyper closed such a
    /// socket after the answer without a word: a client that reused the connection saw its
    /// next request fail with "EOF occurred in violation of protocol". A small body is read
    /// and dropped, and the connection kept; so is one whose body the handler read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_before_the_body_is_read_closes_the_connection_and_says_so() {
        let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
        for (size, kept) in [(64 * 1024, true), (1_500_000, false)] {
            let conn = tls_from(&c.ctl, ip("127.0.0.1")).await.expect("connect");
            let (mut rd, mut wr) = tokio::io::split(conn);
            let head = format!(
                "POST /api/v1/enrollment-tokens HTTP/1.1\r\nHost: localhost\r\n\
                 Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
            );
            // Written beside the reading: the server may answer, and close, before it is all
            // sent.
            let writer = tokio::spawn(async move {
                let _ = wr.write_all(head.as_bytes()).await;
                let _ = wr.write_all(&vec![b' '; size]).await;
                wr
            });
            let answer = answer_head(&mut rd).await;
            assert!(answer.starts_with("http/1.1 401"), "{size} B: {answer}");
            let mut wr = writer.await.expect("the writer");
            if kept {
                kept_alive(&mut rd, &mut wr, &answer).await;
                continue;
            }
            assert!(
                answer.contains("\r\nconnection: close\r\n"),
                "{size} B unread: the answer must close the connection: {answer}"
            );
            let mut conn = rd.unsplit(wr);
            assert!(
                closed_within(&mut conn, Duration::from_secs(10))
                    .await
                    .is_some(),
                "{size} B unread: the connection was left open"
            );
        }
        // Read to its end (a refusal of its content, after reading it): kept alive.
        outpost_tests::api::user(&c.world, "edge-admin", Role::Admin).await;
        let signed_in =
            outpost_tests::api::login(&c.ctl, "edge-admin", outpost_tests::api::PASSWORD).await;
        let token = signed_in.token().expect("a token");
        let conn = tls_from(&c.ctl, ip("127.0.0.1")).await.expect("connect");
        let (mut rd, mut wr) = tokio::io::split(conn);
        let body = format!("{{\"name\": \"{}\"}}", "x".repeat(64 * 1024));
        let req = format!(
            "POST /api/v1/enrollment-tokens HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        wr.write_all(req.as_bytes()).await.expect("send");
        let answer = answer_head(&mut rd).await;
        assert!(answer.starts_with("http/1.1 422"), "{answer}");
        kept_alive(&mut rd, &mut wr, &answer).await;
    }

    /// Every answer says HTTPS only (HSTS), API and UI alike; and signing in never leads to
    /// another site, however `next` disguises it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_carry_hsts_and_sign_in_stays_on_site() {
        let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
        let tls = outpost_api::client::tls_config(&c.ctl.ca_pem()).expect("TLS config");
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let base = c.ctl.api_url();
        for path in [
            "/healthz",
            "/login",
            "/jobs",
            "/no-such-page",
            "/api/v1/jobs",
        ] {
            let resp = http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("answer");
            assert_eq!(
                resp.headers()
                    .get("strict-transport-security")
                    .and_then(|v| v.to_str().ok()),
                Some("max-age=31536000"),
                "{path} ({})",
                resp.status()
            );
        }
        outpost_tests::api::user(&c.world, "edge-viewer", Role::Viewer).await;
        let login = |next: &'static str| {
            let http = http.clone();
            let base = base.clone();
            async move {
                let body = format!(
                    "username=edge-viewer&password={}&next={next}",
                    outpost_tests::api::PASSWORD.replace(' ', "+")
                );
                let resp = http
                    .post(format!("{base}/login"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .expect("answer");
                assert!(resp.status().is_redirection(), "{next}: {}", resp.status());
                resp.headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            }
        };
        // As a browser sends them, percent-encoded in the form.
        for evil in [
            "%2F%09%2Fevil.example",
            "/%09/evil.example",
            "/%5Cevil.example",
            "%2F%2Fevil.example",
            "/%252F%252Fevil.example",
            "/%255Cevil.example",
            "/%250A/evil.example",
        ] {
            assert_eq!(login(evil).await, "/", "next={evil}");
        }
        assert_eq!(
            login("%2Fjobs%3Fstatus%3Dfailed").await,
            "/jobs?status=failed"
        );
    }
}
