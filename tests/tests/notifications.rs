//! Notifications for real, on one controller and MariaDB: a failed production job (a high
//! priority ticket) reaches an on-call webhook — whose HMAC signature this test checks with its
//! own code — and an on-call mailbox on a real SMTP server (Python's aiosmtpd, STARTTLS
//! required, a login, a CA made here); a failed dev job reaches only the digest chat channel,
//! with hostile names escaped; a webhook receiver that refuses connections while the controller
//! is SIGKILLed after the commit gets the notification once after both are back, under the
//! same delivery id; "send a test" goes through the outbox; no secret or webhook path shows in
//! the API, the audit trail or the controller's log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use outpost_api::{ChannelKind, DeliveryQuery, DeliveryStatus, EmailSettings, NewChannelRequest};
use outpost_tests::api::login;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{AgentOpts, ControllerOpts};
use outpost_tests::{wait_for, Backend};
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);
const HOOK_SECRET: &str = "hook-signing-secret-7f3a";
const SMTP_PASSWORD: &str = "smtp-password-91c2";
/// In the webhook's path: a secret of its own (as a chat webhook's token is).
const HOOK_PATH_TOKEN: &str = "T0PATHTOKEN55";

#[derive(Default)]
struct Seen {
    /// (delivery id, event header, body) of webhook posts whose signature verified.
    hooks: Vec<(String, String, Value, Vec<u8>, String)>,
    bad_signatures: usize,
    chats: Vec<(String, String)>,
}

type Shared = Arc<Mutex<Seen>>;

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

async fn hook(State(seen): State<Shared>, h: HeaderMap, body: Bytes) -> StatusCode {
    let sig = header(&h, "x-outpost-signature");
    if sig != format!("sha256={}", hmac_hex(HOOK_SECRET, &body)) {
        seen.lock().unwrap().bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().unwrap().hooks.push((
        header(&h, "x-outpost-delivery"),
        header(&h, "x-outpost-event"),
        v,
        body.to_vec(),
        sig,
    ));
    StatusCode::OK
}

async fn chat(State(seen): State<Shared>, h: HeaderMap, body: Bytes) -> StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = v["text"].as_str().unwrap_or_default().to_owned();
    seen.lock()
        .unwrap()
        .chats
        .push((header(&h, "x-outpost-delivery"), text));
    StatusCode::OK
}

/// An HTTP receiver on a fixed port that can be taken down (connections refused) and back.
struct Receiver {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start(addr: SocketAddr, seen: Shared) -> Receiver {
        let app = axum::Router::new()
            .route(
                &format!("/hook/{HOOK_PATH_TOKEN}"),
                axum::routing::post(hook),
            )
            .route("/chat", axum::routing::post(chat))
            .with_state(seen);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            task: Some(task),
        }
    }

    async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

const SMTP_SERVER: &str = r#"
import asyncio, json, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
import ssl
port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({"to": envelope.rcpt_tos, "from": envelope.mail_from,
                "tls": session.ssl is not None, "authenticated": session.authenticated,
                "data": envelope.content.decode("utf-8", "replace")}) + "\n")
        return "250 OK"
def auth(server, session, envelope, mechanism, data):
    ok = data.login == b"outpost" and data.password == sys.argv[5].encode()
    return AuthResult(success=ok)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
               auth_require_tls=True, auth_required=True, authenticator=auth)
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"#;

/// aiosmtpd on `port`, STARTTLS with a certificate of `ca` for 127.0.0.1; mails go to `out`.
fn smtp_server(
    dir: &std::path::Path,
    port: u16,
    out: &std::path::Path,
) -> (Child, std::path::PathBuf) {
    let probe = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .output()
        .expect("python3");
    assert!(
        probe.status.success(),
        "aiosmtpd is missing: python3 -m pip install aiosmtpd (bash scripts/test installs it)"
    );
    let ca =
        outpost_protocol::pki::Ca::generate("notifications test CA", Duration::from_secs(86400))
            .expect("CA");
    let leaf = ca
        .issue_server(&["127.0.0.1".into()], Duration::from_secs(86400))
        .expect("leaf");
    let (cert, key, ca_pem, script) = (
        dir.join("smtp.pem"),
        dir.join("smtp.key"),
        dir.join("smtp-ca.pem"),
        dir.join("smtp.py"),
    );
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::write(&ca_pem, ca.cert_pem()).unwrap();
    std::fs::write(&script, SMTP_SERVER).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .arg(&cert)
        .arg(&key)
        .arg(out)
        .arg(SMTP_PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start aiosmtpd");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .expect("aiosmtpd ready line");
    assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
    (child, ca_pem)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mails(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const FAILING: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.fail:\n        msg: \"disk full <!channel>\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_failures_reach_on_call_channels_once_through_a_kill_and_the_rest_the_digest() {
    scenario(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failures_reach_on_call_channels_once_through_a_kill_and_the_rest_the_digest() {
    scenario(Backend::Sqlite).await;
}

async fn scenario(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let mail_log = tmp.path().join("mails.jsonl");
    let smtp_port = free_port();
    let (mut smtp, ca_file) = smtp_server(tmp.path(), smtp_port, &mail_log);
    let seen: Shared = Default::default();
    let mut rx = Receiver::start("127.0.0.1:0".parse().unwrap(), seen.clone()).await;
    let opts = ControllerOpts {
        extra: [
            "--notification-retry-base-ms",
            "500",
            "--notification-retry-cap-secs",
            "2",
            "--notification-digest-secs",
            "2",
            // Every certificate expires "soon": the sweep reports each once, however many
            // times it runs (every start sweeps).
            "--cert-expiry-days",
            "3650",
        ]
        .map(String::from)
        .to_vec(),
        ..ControllerOpts::default()
    };
    let mut c = Cluster::start(backend, opts).await;
    let _agent = c.agent("bastion-fra1", &["dc=fra1"], &AgentOpts::default());
    let api = login(&c.ctl, "ops", outpost_tests::api::PASSWORD).await;
    let n = api.notifications();

    let hook_url = format!("http://{}/hook/{HOOK_PATH_TOKEN}", rx.addr);
    let webhook = n
        .create_channel(&NewChannelRequest {
            name: "on-call hook".into(),
            kind: ChannelKind::Webhook,
            url: Some(hook_url.clone()),
            email: None,
            on_call: true,
            digest: false,
            secret: Some(HOOK_SECRET.into()),
        })
        .await
        .expect("webhook channel");
    n.create_channel(&NewChannelRequest {
        name: "on-call mail".into(),
        kind: ChannelKind::Email,
        url: None,
        email: Some(EmailSettings {
            host: "127.0.0.1".into(),
            port: smtp_port,
            from: "outpost@example.com".into(),
            to: vec!["oncall@example.com".into()],
            username: Some("outpost".into()),
            ca_file: Some(ca_file.display().to_string()),
        }),
        on_call: true,
        digest: false,
        secret: Some(SMTP_PASSWORD.into()),
    })
    .await
    .expect("email channel");
    n.create_channel(&NewChannelRequest {
        name: "team chat".into(),
        kind: ChannelKind::Chat,
        url: Some(format!("http://{}/chat", rx.addr)),
        email: None,
        on_call: false,
        digest: true,
        secret: None,
    })
    .await
    .expect("chat channel");
    // A webhook without a signing secret, or with a URL that is not http(s), is refused by name.
    let mut bad = NewChannelRequest {
        name: "bad".into(),
        kind: ChannelKind::Webhook,
        url: Some("file:///etc/passwd".into()),
        email: None,
        on_call: true,
        digest: false,
        secret: Some("x".into()),
    };
    let e = n
        .create_channel(&bad)
        .await
        .expect_err("file URL")
        .to_string();
    assert!(e.contains("url"), "{e}");
    bad.url = Some(hook_url.clone());
    bad.secret = None;
    let e = n
        .create_channel(&bad)
        .await
        .expect_err("no secret")
        .to_string();
    assert!(e.contains("secret"), "{e}");

    let w = &c.world;
    let prod = w
        .local_server("web1.prod", json!({"dc": "fra1"}), "production")
        .await;
    let dev = w
        .local_server("web1.dev", json!({"dc": "fra1"}), "dev")
        .await;
    let pb = w.playbook("deploy <!channel> & <@here>", FAILING).await;

    // 1. Production failure: on-call webhook and mail, at once; not the digest.
    let job = w.launch(&pb, &prod).await;
    w.wait_status(
        &job,
        outpost_controller::model::JobStatus::Failed,
        3 * MINUTE,
    )
    .await;
    let tickets = w.tickets(&job).await;
    assert_eq!(
        tickets[0].priority,
        outpost_controller::model::TicketPriority::High
    );
    let (hook_id, body) = wait_for(
        "the webhook to get the production failure",
        MINUTE,
        || async {
            let s = seen.lock().unwrap();
            s.hooks
                .iter()
                .find(|h| h.2["job"]["id"] == job.job_id.to_string())
                .map(|h| (h.0.clone(), h.2.clone()))
        },
    )
    .await;
    assert_eq!(body["event"], "job_failed");
    assert_eq!(body["priority"], "high");
    assert_eq!(body["environment"], "production");
    assert_eq!(body["ticket"]["id"], tickets[0].ticket_id.to_string());
    assert_eq!(body["link"], format!("/jobs/{}", job.job_id));
    assert_eq!(body["delivery_id"], hook_id);
    {
        // The signature is over the exact body: another secret or a changed body fails.
        let s = seen.lock().unwrap();
        let (_, _, _, raw, sig) = s.hooks.iter().find(|h| h.0 == hook_id).unwrap();
        assert_ne!(*sig, format!("sha256={}", hmac_hex("wrong secret", raw)));
        let mut changed = raw.clone();
        changed.push(b' ');
        assert_ne!(*sig, format!("sha256={}", hmac_hex(HOOK_SECRET, &changed)));
        assert_eq!(s.bad_signatures, 0);
    }
    let mail = wait_for("the on-call mail", MINUTE, || async {
        mails(&mail_log).into_iter().find(|m| {
            m["data"]
                .as_str()
                .unwrap_or("")
                .contains(&job.job_id.to_string())
        })
    })
    .await;
    assert_eq!(mail["tls"], true, "{mail}");
    assert_eq!(mail["authenticated"], true, "{mail}");
    assert_eq!(mail["to"], json!(["oncall@example.com"]));
    let data = mail["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [Outpost] deploy <!channel> & <@here> failed on web1.prod"),
        "{data}"
    );

    // 2. Dev failure: low priority, only the chat digest, with the names escaped.
    let job2 = w.launch(&pb, &dev).await;
    w.wait_status(
        &job2,
        outpost_controller::model::JobStatus::Failed,
        3 * MINUTE,
    )
    .await;
    let digest = wait_for("the chat digest", MINUTE, || async {
        seen.lock()
            .unwrap()
            .chats
            .iter()
            .find(|c| c.1.contains("web1.dev"))
            .cloned()
    })
    .await;
    assert!(digest.1.starts_with("Outpost digest: "), "{}", digest.1);
    assert!(
        digest.1.contains("&lt;!channel&gt; &amp; &lt;@here&gt;"),
        "{}",
        digest.1
    );
    assert!(
        !digest.1.contains('<') && !digest.1.contains('>'),
        "{}",
        digest.1
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let s = seen.lock().unwrap();
        assert!(
            !s.hooks
                .iter()
                .any(|h| h.2["job"]["id"] == job2.job_id.to_string()),
            "a low priority failure paged on-call"
        );
        assert!(
            !s.chats.iter().any(|c| c.1.contains("web1.prod")),
            "a high priority failure went to the digest"
        );
    }
    assert!(!mails(&mail_log).iter().any(|m| m["data"]
        .as_str()
        .unwrap_or("")
        .contains(&job2.job_id.to_string())));

    // 3. Once a rule exists only rules route: a production failure in dc=fra1 goes to the chat
    //    at once (the rule), no longer to the on-call channels.
    let rule = n
        .create_rule(&outpost_api::NewRuleRequest {
            event: outpost_api::NotificationEvent::JobFailed,
            environment: Some("production".into()),
            min_priority: Some(outpost_api::TicketPriority::High),
            routing_label: Some("dc=fra1".into()),
            channel: "team chat".into(),
            mode: outpost_api::DeliveryMode::Immediate,
        })
        .await
        .expect("rule");
    assert_eq!(rule.channel, "team chat");
    let job4 = w.launch(&pb, &prod).await;
    w.wait_status(
        &job4,
        outpost_controller::model::JobStatus::Failed,
        3 * MINUTE,
    )
    .await;
    wait_for("the rule's chat message", MINUTE, || async {
        let s = seen.lock().unwrap();
        s.chats
            .iter()
            .any(|c| c.1.starts_with("Outpost: [high]") && c.1.contains("web1.prod"))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !seen
            .lock()
            .unwrap()
            .hooks
            .iter()
            .any(|h| h.2["job"]["id"] == job4.job_id.to_string()),
        "with rules configured, the default on-call routing still paged"
    );
    // Without it, the default routing is back for what follows.
    n.delete_rule(rule.id).await.expect("delete the rule");

    // 4. The receiver refuses connections; the job's row is committed and tried; the
    //    controller is killed; both come back: the receiver gets it once, same delivery id.
    rx.stop().await;
    let job3 = w.launch(&pb, &prod).await;
    w.wait_status(
        &job3,
        outpost_controller::model::JobStatus::Failed,
        3 * MINUTE,
    )
    .await;
    let q = DeliveryQuery {
        channel_id: Some(webhook.id),
        ..Default::default()
    };
    let pending = wait_for("a failed attempt to be logged", MINUTE, || async {
        let page = n.deliveries(&q).await.ok()?;
        page.items.into_iter().find(|d| {
            d.summary.contains("web1.prod")
                && d.status == DeliveryStatus::Pending
                && d.attempts >= 1
                && d.last_error.is_some()
        })
    })
    .await;
    c.ctl.kill();
    let addr = rx.addr;
    let mut rx2 = Receiver::start(addr, seen.clone()).await;
    c.ctl.restart();
    let api = login(&c.ctl, "ops", outpost_tests::api::PASSWORD).await;
    let n = api.notifications();
    wait_for("the delivery after the restart", MINUTE, || async {
        seen.lock()
            .unwrap()
            .hooks
            .iter()
            .any(|h| h.0 == pending.delivery_id)
            .then_some(())
    })
    .await;
    let logged = wait_for("the log to say sent", MINUTE, || async {
        let page = n.deliveries(&q).await.ok()?;
        page.items
            .into_iter()
            .find(|d| d.delivery_id == pending.delivery_id && d.status == DeliveryStatus::Sent)
    })
    .await;
    assert!(logged.attempts >= 2, "{logged:?}");

    // 5. "Send a test" goes through the outbox.
    let t = n.test_channel(webhook.id).await.expect("test");
    wait_for("the test notification", MINUTE, || async {
        seen.lock()
            .unwrap()
            .hooks
            .iter()
            .find(|h| h.0 == t.delivery_id)
            .map(|h| h.1.clone())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let s = seen.lock().unwrap();
        let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
        for h in &s.hooks {
            *per_id.entry(h.0.as_str()).or_default() += 1;
        }
        assert_eq!(
            per_id.get(pending.delivery_id.as_str()),
            Some(&1),
            "{per_id:?}"
        );
        assert!(
            per_id.values().all(|&c| c == 1),
            "a delivery id arrived twice: {per_id:?}"
        );
        assert_eq!(s.bad_signatures, 0);
    }

    // 6. Secrets: not in the API's answers, the audit trail or the controller's log.
    let shown = serde_json::to_string(&n.channels().await.expect("channels")).unwrap();
    let audit: Value = api.get("/api/v1/audit?limit=1000").await.expect("audit");
    let audit = audit.to_string();
    let log = c.ctl.log();
    for secret in [HOOK_SECRET, SMTP_PASSWORD, HOOK_PATH_TOKEN] {
        assert!(!shown.contains(secret), "the API shows {secret}: {shown}");
        assert!(!audit.contains(secret), "the audit holds {secret}");
        assert!(!log.contains(secret), "the controller's log holds {secret}");
    }
    assert!(shown.contains("\"secret_set\":true"), "{shown}");

    // 7. A key rotation re-seals the channels' secrets: the webhook still signs with its own.
    let webhook_id = outpost_controller::model::ChannelId(webhook.id);
    let before = c.world.store.get_channel(webhook_id).await.unwrap().key_id;
    c.ctl.stop();
    let out = Command::new(outpost_tests::procs::bin("outpost-controller"))
        .args(["credentials", "rotate-key", "--data-dir"])
        .arg(c.data.path())
        .env("OUTPOST_DATABASE_URL", &c.db.url)
        .env("OUTPOST_LOG", "warn")
        .output()
        .expect("rotate-key");
    let text = outpost_tests::output_text(&out);
    assert!(
        out.status.success() && text.contains("3 credential(s) and notification channel"),
        "{text}"
    );
    // Read through the world's store, open all along. On SQLite this read used to see the old
    // key now and then (once in 60 runs when reproduced): each read opened a store of its own,
    // opening the file again dropped this process's POSIX locks, and the exits of the
    // controller and of rotate-key then deleted the WAL and its index under it (fixed in
    // `Store::connect`).
    assert_ne!(
        c.world.store.get_channel(webhook_id).await.unwrap().key_id,
        before,
        "rotate-key said: {text}"
    );
    c.ctl.restart();
    let api = login(&c.ctl, "ops", outpost_tests::api::PASSWORD).await;
    let t = api
        .notifications()
        .test_channel(webhook.id)
        .await
        .expect("test after rotation");
    wait_for("a signed test after the rotation", MINUTE, || async {
        seen.lock()
            .unwrap()
            .hooks
            .iter()
            .any(|h| h.0 == t.delivery_id)
            .then_some(())
    })
    .await;
    assert_eq!(seen.lock().unwrap().bad_signatures, 0);
    // The controller's certificate was reported by the sweep of the first restart (the first
    // start's found no channel yet), and not again by the sweep of the second.
    let cert_hooks = || {
        let s = seen.lock().unwrap();
        s.hooks
            .iter()
            .filter(|h| {
                h.1 == "certificate_expiring"
                    && h.2["summary"]
                        .as_str()
                        .unwrap_or("")
                        .contains("of the controller")
            })
            .count()
    };
    wait_for("the controller's certificate report", MINUTE, || async {
        (cert_hooks() > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        cert_hooks(),
        1,
        "the certificate was reported more than once"
    );

    rx2.stop().await;
    let _ = smtp.kill();
    let _ = smtp.wait();
}
