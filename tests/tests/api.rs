//! The HTTPS API against a real controller process: the whole role matrix (every route of the
//! OpenAPI document, which is generated from the router), signing in and out, throttling,
//! password rotation, the ansible_* rule, launches, playbooks, bad input, health and metrics.

use std::collections::BTreeSet;
use std::time::Duration;

use outpost_api::client::{ApiError, Client};
use outpost_api::{
    AuditView, JobView, LaunchResponse, Page, PlaybookView, ServerView, TicketView, UserView,
};
use outpost_controller::model::Role;
use outpost_tests::api::{login, user, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::ControllerOpts;
use outpost_tests::Backend;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Who may call each route: the specification the access table is held to. A route the
/// router serves but this table lacks (or the reverse) fails the matrix test.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("POST", "/api/v1/auth/login", "public"),
    ("POST", "/api/v1/auth/logout", "viewer"),
    ("GET", "/api/v1/auth/whoami", "viewer"),
    ("GET", "/api/v1/users", "admin"),
    ("POST", "/api/v1/users", "admin"),
    ("GET", "/api/v1/users/{id}", "admin"),
    ("PATCH", "/api/v1/users/{id}", "admin"),
    ("POST", "/api/v1/users/{id}/password", "admin"),
    ("GET", "/api/v1/servers", "viewer"),
    ("POST", "/api/v1/servers", "admin"),
    ("GET", "/api/v1/servers/{id}", "viewer"),
    ("PATCH", "/api/v1/servers/{id}", "admin"),
    ("DELETE", "/api/v1/servers/{id}", "admin"),
    ("GET", "/api/v1/playbooks", "viewer"),
    ("POST", "/api/v1/playbooks", "admin"),
    ("GET", "/api/v1/playbooks/{id}", "viewer"),
    ("PATCH", "/api/v1/playbooks/{id}", "admin"),
    ("DELETE", "/api/v1/playbooks/{id}", "admin"),
    ("GET", "/api/v1/projects", "viewer"),
    ("POST", "/api/v1/projects", "admin"),
    ("GET", "/api/v1/projects/{id}", "viewer"),
    ("PATCH", "/api/v1/projects/{id}", "admin"),
    ("DELETE", "/api/v1/projects/{id}", "admin"),
    ("POST", "/api/v1/projects/{id}/sync", "admin"),
    ("POST", "/api/v1/projects/{id}/archive", "admin"),
    ("GET", "/api/v1/projects/{id}/revisions", "viewer"),
    ("GET", "/api/v1/projects/{id}/files", "viewer"),
    ("GET", "/api/v1/credentials", "admin"),
    ("POST", "/api/v1/credentials", "admin"),
    ("GET", "/api/v1/credentials/{id}", "admin"),
    ("PATCH", "/api/v1/credentials/{id}", "admin"),
    ("DELETE", "/api/v1/credentials/{id}", "admin"),
    ("GET", "/api/v1/schedules", "viewer"),
    ("POST", "/api/v1/schedules", "admin"),
    ("POST", "/api/v1/schedules/preview", "viewer"),
    ("GET", "/api/v1/schedules/{id}", "viewer"),
    ("PATCH", "/api/v1/schedules/{id}", "admin"),
    ("DELETE", "/api/v1/schedules/{id}", "admin"),
    ("GET", "/api/v1/schedules/{id}/runs", "viewer"),
    ("GET", "/api/v1/blackouts", "viewer"),
    ("POST", "/api/v1/blackouts", "admin"),
    ("GET", "/api/v1/blackouts/{id}", "viewer"),
    ("DELETE", "/api/v1/blackouts/{id}", "admin"),
    ("GET", "/api/v1/templates", "viewer"),
    ("POST", "/api/v1/templates", "admin"),
    ("GET", "/api/v1/templates/{id_or_name}", "viewer"),
    ("PUT", "/api/v1/templates/{id_or_name}", "admin"),
    ("DELETE", "/api/v1/templates/{id_or_name}", "admin"),
    ("POST", "/api/v1/templates/{id_or_name}/launch", "operator"),
    ("GET", "/api/v1/notifications/channels", "admin"),
    ("POST", "/api/v1/notifications/channels", "admin"),
    ("GET", "/api/v1/notifications/channels/{id}", "admin"),
    ("PATCH", "/api/v1/notifications/channels/{id}", "admin"),
    ("DELETE", "/api/v1/notifications/channels/{id}", "admin"),
    ("POST", "/api/v1/notifications/channels/{id}/test", "admin"),
    ("GET", "/api/v1/notifications/rules", "admin"),
    ("POST", "/api/v1/notifications/rules", "admin"),
    ("DELETE", "/api/v1/notifications/rules/{id}", "admin"),
    ("GET", "/api/v1/notifications/deliveries", "admin"),
    ("GET", "/api/v1/jobs", "viewer"),
    ("POST", "/api/v1/jobs", "operator"),
    ("GET", "/api/v1/jobs/{job_id}", "viewer"),
    ("POST", "/api/v1/jobs/{job_id}/cancel", "operator"),
    ("GET", "/api/v1/runs", "viewer"),
    ("GET", "/api/v1/runs/{run_id}", "viewer"),
    ("POST", "/api/v1/runs/{run_id}/cancel", "operator"),
    ("POST", "/api/v1/runs/{run_id}/approve", "operator"),
    ("POST", "/api/v1/runs/{run_id}/relaunch", "operator"),
    ("GET", "/api/v1/jobs/{job_id}/logs", "viewer"),
    ("GET", "/api/v1/jobs/{job_id}/results", "viewer"),
    ("GET", "/api/v1/runs/{run_id}/results", "viewer"),
    ("GET", "/api/v1/jobs/{job_id}/logs/stream", "viewer"),
    ("GET", "/api/v1/tickets", "viewer"),
    ("POST", "/api/v1/tickets", "operator"),
    ("GET", "/api/v1/tickets/{ticket_id}", "viewer"),
    ("PATCH", "/api/v1/tickets/{ticket_id}", "operator"),
    ("GET", "/api/v1/agents", "viewer"),
    ("GET", "/api/v1/agents/{id}", "viewer"),
    ("POST", "/api/v1/agents/{id}/revoke", "admin"),
    ("GET", "/api/v1/enrollment-tokens", "admin"),
    ("POST", "/api/v1/enrollment-tokens", "admin"),
    ("DELETE", "/api/v1/enrollment-tokens/{id}", "admin"),
    ("POST", "/api/v1/agent-bundles", "admin"),
    ("GET", "/api/v1/audit", "admin"),
    ("GET", "/api/v1/openapi.json", "public"),
    ("GET", "/healthz", "public"),
    ("GET", "/readyz", "public"),
    ("GET", "/metrics", "public"),
];

fn rank(role: &str) -> u8 {
    match role {
        "public" => 0,
        "viewer" => 1,
        "operator" => 2,
        _ => 3,
    }
}

/// A path with its parameters filled by ids that name nothing.
fn concrete(path: &str) -> String {
    path.replace("{id}", "999999")
        .replace("{job_id}", "00000000-0000-4000-8000-000000000000")
        .replace("{ticket_id}", "00000000-0000-4000-8000-000000000000")
        .replace("{id_or_name}", "no-such-template")
}

async fn status_of(c: &Client, method: &str, path: &str) -> StatusCode {
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = c.request(m.clone(), &concrete(path));
    if m == Method::POST || m == Method::PATCH || m == Method::PUT {
        rb = rb.json(&json!({}));
    }
    rb.timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_times_every_role_and_no_token() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    user(w, "vera", Role::Viewer).await;
    user(w, "otto", Role::Operator).await;
    // The document is generated from the router: it lists what is served.
    let doc: serde_json::Value = c.ctl.api().get("/api/v1/openapi.json").await.unwrap();
    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in ["get", "post", "put", "patch", "delete"] {
            if item.get(m).is_some() {
                served.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    let specified: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(served, specified, "routes served vs routes specified");

    let sessions = [
        ("anonymous", c.ctl.api(), ""),
        ("viewer", login(&c.ctl, "vera", PASSWORD).await, "vera"),
        ("operator", login(&c.ctl, "otto", PASSWORD).await, "otto"),
        ("admin", login(&c.ctl, "ops", PASSWORD).await, "ops"),
    ];
    for (method, path, needed) in EXPECTED {
        for (who, session, name) in &sessions {
            let who = *who;
            // Logging out ends the session: that route gets a session of its own.
            let client = if *path == "/api/v1/auth/logout" && !name.is_empty() {
                login(&c.ctl, name, PASSWORD).await
            } else {
                session.clone()
            };
            let status = status_of(&client, method, path).await;
            let caller_rank = match who {
                "anonymous" => 0,
                "viewer" => 1,
                "operator" => 2,
                _ => 3,
            };
            let allowed = caller_rank >= rank(needed);
            if allowed {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{who} {method} {path}: {status}, expected to be let through"
                );
                assert!(status.as_u16() < 500, "{who} {method} {path}: {status}");
            } else if who == "anonymous" {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{who} {method} {path}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{who} {method} {path}");
            }
        }
    }
}

fn refused(e: ApiError) -> (u16, String, String) {
    match e {
        ApiError::Refused {
            status,
            code,
            message,
            ..
        } => (status, code, message),
        other => panic!("not a refusal: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_throttling_logout_expiry_deactivation_and_rotation() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let w = &c.world;
    let vera = user(w, "vera", Role::Viewer).await;
    let anon = c.ctl.api();
    let attempt = |pw: &'static str| {
        let anon = anon.clone();
        async move {
            anon.post::<_, serde_json::Value>(
                "/api/v1/auth/login",
                &json!({"username": "vera", "password": pw}),
            )
            .await
        }
    };
    for _ in 0..5 {
        let (status, code, _) = refused(attempt("wrong password").await.unwrap_err());
        assert_eq!((status, code.as_str()), (401, "unauthorized"));
    }
    let throttled = attempt(PASSWORD).await.unwrap_err();
    let retry = match &throttled {
        ApiError::Refused {
            status: 429,
            retry_after: Some(s),
            ..
        } => *s,
        other => panic!("expected 429 with Retry-After, got {other:?}"),
    };
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let ok = attempt(PASSWORD)
        .await
        .expect("after the wait the right password works");
    assert!(ok["token"].as_str().unwrap().starts_with("opat_"));
    // By email too, case-insensitively.
    let by_mail: serde_json::Value = anon
        .post(
            "/api/v1/auth/login",
            &json!({"email": "VERA@example.com", "password": PASSWORD}),
        )
        .await
        .unwrap();
    assert_eq!(by_mail["user"]["username"], "vera");

    // Logout ends the token.
    let session = login(&c.ctl, "vera", PASSWORD).await;
    let me: serde_json::Value = session.get("/api/v1/auth/whoami").await.unwrap();
    assert_eq!(me["user"]["role"], "viewer");
    let resp = session
        .request(Method::POST, "/api/v1/auth/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, ..) = refused(
        session
            .get::<serde_json::Value>("/api/v1/auth/whoami")
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);

    // An expired token is refused.
    let expiring = login(&c.ctl, "vera", PASSWORD).await;
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        expiring.token().unwrap().as_bytes(),
    ));
    {
        use sqlx::Connection;
        let mut conn = sqlx::MySqlConnection::connect(&c.db.url).await.unwrap();
        sqlx::query(
            "UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00' WHERE token_hash = ?",
        )
        .bind(&hash)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let (status, ..) = refused(
        expiring
            .get::<serde_json::Value>("/api/v1/servers")
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);

    // Deactivating a user stops their tokens at once.
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let vera_session = login(&c.ctl, "vera", PASSWORD).await;
    let _: serde_json::Value = vera_session.get("/api/v1/servers").await.unwrap();
    let _: UserView = admin
        .patch(
            &format!("/api/v1/users/{}", vera.id),
            &json!({"is_active": false}),
        )
        .await
        .unwrap();
    let (status, ..) = refused(
        vera_session
            .get::<serde_json::Value>("/api/v1/servers")
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);
    // The last admin cannot demote themselves.
    let admin_id = w.admin.id.0;
    let (status, code, _) = refused(
        admin
            .patch::<_, UserView>(
                &format!("/api/v1/users/{admin_id}"),
                &json!({"role": "viewer"}),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (409, "conflict"));

    // A user an admin made must change the password first, to a different one.
    let new: UserView = admin
        .post(
            "/api/v1/users",
            &json!({"username": "nina", "email": "nina@example.com", "password": "initial-pass-1", "role": "operator"}),
        )
        .await
        .unwrap();
    assert!(new.must_change_password);
    let nina = login(&c.ctl, "nina", "initial-pass-1").await;
    let (status, code, message) = refused(
        nina.get::<serde_json::Value>("/api/v1/servers")
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (403, "password_expired"));
    assert!(
        message.contains(&format!("/api/v1/users/{}/password", new.id)),
        "{message}"
    );
    let path = format!("/api/v1/users/{}/password", new.id);
    let (status, ..) = refused(
        nina.post::<_, UserView>(
            &path,
            &json!({"current_password": "initial-pass-1", "new_password": "initial-pass-1"}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status, 422, "the new password must differ");
    let changed: UserView = nina
        .post(
            &path,
            &json!({"current_password": "initial-pass-1", "new_password": "a-new-pass-2"}),
        )
        .await
        .unwrap();
    assert!(!changed.must_change_password);
    let _: serde_json::Value = nina.get("/api/v1/servers").await.unwrap();

    // Logins, failures and logouts are audited with address and agent; no password anywhere.
    let audit: Page<AuditView> = admin.get("/api/v1/audit?limit=1000").await.unwrap();
    for action in ["LOGIN", "LOGIN_FAILED", "LOGOUT", "PASSWORD"] {
        let e = audit
            .items
            .iter()
            .find(|e| e.action == action)
            .unwrap_or_else(|| panic!("no {action} in the audit"));
        if action.starts_with("LOG") {
            assert_eq!(e.ip_address.as_deref(), Some("127.0.0.1"), "{action}");
        }
    }
    let text = serde_json::to_string(&audit.items).unwrap();
    for secret in [PASSWORD, "initial-pass-1", "a-new-pass-2", "wrong password"] {
        assert!(!text.contains(secret), "the audit holds a password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launches_playbooks_and_the_ansible_vars_rule() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    user(w, "otto", Role::Operator).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let otto = login(&c.ctl, "otto", PASSWORD).await;

    // Playbooks: JSON or raw YAML, checked, stored by hash.
    let yaml = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n";
    let pb: PlaybookView = admin
        .post(
            "/api/v1/playbooks",
            &json!({"name": "hello", "content": yaml}),
        )
        .await
        .unwrap();
    assert_eq!(
        pb.file_hash,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(yaml.as_bytes()))
    );
    let raw = admin
        .request(Method::POST, "/api/v1/playbooks?name=raw")
        .header("content-type", "application/yaml")
        .body("- hosts: all\n  tasks: []\n")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::CREATED);
    let (status, _, message) = refused(
        admin
            .post::<_, PlaybookView>(
                "/api/v1/playbooks",
                &json!({"name": "bad", "content": "hosts: all\n"}),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 422);
    assert!(message.contains("list of plays"), "{message}");
    let again: PlaybookView = admin
        .get(&format!("/api/v1/playbooks/{}", pb.id))
        .await
        .unwrap();
    assert_eq!(again.content.as_deref(), Some(yaml));
    let v2 = format!("{yaml}    - ansible.builtin.debug:\n        msg: two\n");
    let updated: PlaybookView = admin
        .patch(
            &format!("/api/v1/playbooks/{}", pb.id),
            &json!({"content": v2}),
        )
        .await
        .unwrap();
    assert_ne!(updated.file_hash, pb.file_hash);
    assert_eq!(updated.content.as_deref(), Some(v2.as_str()));

    // Servers: the filter picks active servers by environment and tags.
    for (host, env, dc, active) in [
        ("web1", "prod", "fra1", true),
        ("web2", "prod", "fra1", true),
        ("web3", "prod", "nyc1", true),
        ("web4", "prod", "fra1", false),
        ("dev1", "dev", "fra1", true),
    ] {
        let s: ServerView = admin
            .post(
                "/api/v1/servers",
                &json!({"hostname": host, "ip_address": "127.0.0.1", "os_type": "debian",
                        "environment": env, "tags": {"dc": dc}}),
            )
            .await
            .unwrap();
        if !active {
            let _: ServerView = admin
                .patch(
                    &format!("/api/v1/servers/{}", s.id),
                    &json!({"is_active": false}),
                )
                .await
                .unwrap();
        }
    }
    let tagged: Page<ServerView> = otto
        .get("/api/v1/servers?tag=dc%3Dfra1&active=true")
        .await
        .unwrap();
    assert_eq!(tagged.total, 3);
    let launched: LaunchResponse = otto
        .post(
            "/api/v1/jobs",
            &json!({"playbook": "hello", "filter": {"environment": "prod", "tags": {"dc": "fra1"}},
                    "extra_vars": {"release": "1.2"}, "tags": ["web"], "check": true, "verbosity": 2}),
        )
        .await
        .unwrap();
    let hosts: BTreeSet<String> = launched
        .jobs
        .iter()
        .map(|j| j.server.name.clone())
        .collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["web1".to_owned(), "web2".to_owned()])
    );
    assert!(launched
        .jobs
        .iter()
        .all(|j| j.run_options.check && j.run_options.verbosity == 2));
    // Run options are typed: a tag that could read as a flag is refused.
    let (status, _, message) = refused(
        otto.post::<_, LaunchResponse>(
            "/api/v1/jobs",
            &json!({"playbook": "hello", "servers": ["web1"], "tags": ["--become"]}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status, 422);
    assert!(message.contains("--become"), "{message}");
    // ansible_* extra vars: operators are refused, naming the key; admins may.
    let bad = json!({"playbook": pb.id, "servers": ["web1"], "extra_vars": {"ansible_connection": "local"}});
    let (status, _, message) = refused(
        otto.post::<_, LaunchResponse>("/api/v1/jobs", &bad)
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 422);
    assert!(message.contains("ansible_connection"), "{message}");
    let ok: LaunchResponse = admin.post("/api/v1/jobs", &bad).await.unwrap();
    assert_eq!(ok.jobs.len(), 1);
    // Listing and filtering.
    let listed: Page<JobView> = otto
        .get("/api/v1/jobs?status=pending&limit=2")
        .await
        .unwrap();
    assert_eq!((listed.total, listed.items.len()), (3, 2));
    // The scheduler says why the job waits as soon as it has looked at it (woken by the
    // launch, but on a busy machine not necessarily before this read).
    let one: JobView = outpost_tests::wait_for(
        "the job's pending reason",
        Duration::from_secs(30),
        || async {
            let j: JobView = otto
                .get(&format!("/api/v1/jobs/{}", ok.jobs[0].id))
                .await
                .ok()?;
            (j.pending_reason.is_some() || j.agent.is_some()).then_some(j)
        },
    )
    .await;
    // Cancel a queued job at once; a second cancel conflicts.
    let cancelled: serde_json::Value = otto
        .post(&format!("/api/v1/jobs/{}/cancel", one.id), &json!({}))
        .await
        .unwrap();
    assert_eq!(cancelled["outcome"], "cancelled");
    let (status, ..) = refused(
        otto.post::<_, serde_json::Value>(&format!("/api/v1/jobs/{}/cancel", one.id), &json!({}))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 409);
    // A manual ticket on a job, worked by an operator.
    let t: TicketView = otto
        .post(
            "/api/v1/tickets",
            &json!({"job_id": one.id, "title": "check web1", "priority": "high"}),
        )
        .await
        .unwrap();
    let resolved: TicketView = otto
        .patch(
            &format!("/api/v1/tickets/{}", t.id),
            &json!({"status": "resolved"}),
        )
        .await
        .unwrap();
    assert!(resolved.resolved_at.is_some());
    // Deleting a server with jobs deactivates it and says so.
    let web1 = w.store.get_server_by_hostname("web1").await.unwrap();
    let gone: serde_json::Value = admin
        .delete(&format!("/api/v1/servers/{}", web1.id))
        .await
        .unwrap();
    assert_eq!(gone["outcome"], "deactivated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_documented_status_and_text_is_kept_verbatim() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let send =
        |method: Method, path: &'static str, body: Option<&'static str>, ct: &'static str| {
            let rb = admin.request(method, path);
            async move {
                let rb = match body {
                    Some(b) => rb.header("content-type", ct).body(b),
                    None => rb,
                };
                let resp = rb.send().await.unwrap();
                let status = resp.status().as_u16();
                let body: serde_json::Value = resp.json().await.unwrap_or(json!(null));
                (status, body)
            }
        };
    let cases: &[(Method, &str, Option<&str>, u16)] = &[
        (Method::POST, "/api/v1/servers", Some("{not json"), 400),
        (
            Method::POST,
            "/api/v1/servers",
            Some(r#"{"hostname": 5, "ip_address": "10.0.0.1", "os_type": "x"}"#),
            422,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            Some(r#"{"hostname": "a"}"#),
            422,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            Some(r#"{"hostname": "a", "ip_address": "10.0.0.1", "os_type": "x", "colour": "red"}"#),
            422,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            Some(r#"{"hostname": "a", "ip_address": "not-an-ip", "os_type": "x"}"#),
            422,
        ),
        (
            Method::POST,
            "/api/v1/servers",
            Some(
                r#"{"hostname": "a", "ip_address": "10.0.0.1", "os_type": "x", "ssh_port": 70000}"#,
            ),
            422,
        ),
        (
            Method::PATCH,
            "/api/v1/servers/424242",
            Some(r#"{"os_type": "x"}"#),
            404,
        ),
        (Method::GET, "/api/v1/servers/not-a-number", None, 400),
        (Method::GET, "/api/v1/jobs/not-a-uuid", None, 404),
        (Method::GET, "/api/v1/jobs?status=sleeping", None, 400),
        (
            Method::POST,
            "/api/v1/jobs",
            Some(r#"{"playbook": "nope", "servers": ["x"]}"#),
            404,
        ),
        (
            Method::POST,
            "/api/v1/jobs",
            Some(r#"{"playbook": "nope"}"#),
            404,
        ),
        (
            Method::POST,
            "/api/v1/templates",
            Some(r#"{"name": "t", "project": "%", "playbook_path": "site.yml", "servers": ["x"]}"#),
            404,
        ),
        (
            Method::POST,
            "/api/v1/users",
            Some(r#"{"username": "u", "email": "u@example.com", "password": "short"}"#),
            422,
        ),
        (
            Method::POST,
            "/api/v1/tickets",
            Some(r#"{"job_id": "00000000-0000-4000-8000-000000000000", "title": "x"}"#),
            404,
        ),
        (
            Method::POST,
            "/api/v1/enrollment-tokens",
            Some(r#"{"name": "b", "ttl_hours": 0}"#),
            422,
        ),
        (Method::GET, "/api/v1/no-such-route", None, 404),
    ];
    let doc: serde_json::Value = c.ctl.api().get("/api/v1/openapi.json").await.unwrap();
    for (method, path, body, want) in cases {
        let (status, err) = send(method.clone(), path, *body, "application/json").await;
        assert_eq!(status, *want, "{method} {path} {body:?}: {err}");
        // A route the router serves documents each status it answers with.
        if let Some((route, op)) = operation(&doc, method, path) {
            assert!(
                op["responses"].get(want.to_string()).is_some(),
                "{method} {route} answers {want} but its document does not say so"
            );
        }
        assert!(
            err["error"].is_string() && err["message"].is_string(),
            "{method} {path}: error body {err}"
        );
    }
    // Oversized bodies are refused before they are read: 1 MiB in general, 5 MiB playbooks.
    let big = format!(r#"{{"hostname": "{}"}}"#, "x".repeat(1_100_000));
    assert_eq!(
        oversized(&admin, "/api/v1/servers", "application/json", big).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let huge_yaml = format!(
        "- hosts: all\n  vars:\n    blob: \"{}\"\n",
        "y".repeat(6 * 1024 * 1024)
    );
    assert_eq!(
        oversized(
            &admin,
            "/api/v1/playbooks?name=huge",
            "application/yaml",
            huge_yaml
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let under_five = format!(
        "- hosts: all\n  vars:\n    blob: \"{}\"\n",
        "y".repeat(2 * 1024 * 1024)
    );
    let resp = admin
        .request(Method::POST, "/api/v1/playbooks?name=big-but-fine")
        .header("content-type", "application/yaml")
        .body(under_five)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // YAML that would grow the controller: a few hundred bytes of aliases expanding to a
    // billion values, and a list nested a million levels deep. Each is a prompt 422 that says
    // why, and the controller still answers afterwards.
    let mut laughs =
        String::from("- hosts: all\n  vars:\n    a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..=9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("    a{i}: &a{i} [{refs}]\n"));
    }
    let deep = "- ".repeat(1_000_000) + "x\n";
    for (name, body, want) in [
        ("laughs", laughs, "expands to more than"),
        ("deep", deep, "nested more than"),
    ] {
        let started = std::time::Instant::now();
        let resp = admin
            .request(Method::POST, &format!("/api/v1/playbooks?name={name}"))
            .header("content-type", "application/yaml")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{name}");
        let err: serde_json::Value = resp.json().await.unwrap();
        let message = err["message"].as_str().unwrap_or_default();
        assert!(message.contains(want), "{name}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    let h: serde_json::Value = admin.get("/healthz").await.unwrap();
    assert_eq!(h["status"], "ok");

    // Launch values are bounded: in size (413), in depth (422), and in what one launch copies
    // into the database once per target server (413), before any job is made.
    let w = &c.world;
    w.playbook("vars", "- hosts: all\n  gather_facts: false\n  tasks: []\n")
        .await;
    let mut names = Vec::new();
    for i in 0..300 {
        let name = format!("many-{i:03}");
        w.local_server(&name, json!({}), "bulk").await;
        names.push(name);
    }
    let launch = |vars: serde_json::Value, servers: &[String]| {
        let rb = admin
            .request(Method::POST, "/api/v1/jobs")
            .json(&json!({"playbook": "vars", "servers": servers, "extra_vars": vars}));
        async move {
            let resp = rb.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or(json!(null));
            (
                status,
                body["message"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let (status, message) = launch(json!({"blob": "z".repeat(70 * 1024)}), &names[..1]).await;
    assert_eq!(status, 413, "{message}");
    assert!(message.contains("at most 65536"), "{message}");
    let mut deep = json!("x");
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let (status, message) = launch(json!({ "deep": deep }), &names[..1]).await;
    assert_eq!(status, 422, "{message}");
    assert!(message.contains("levels deep"), "{message}");
    let (status, message) = launch(json!({"blob": "z".repeat(60 * 1024)}), &names).await;
    assert_eq!(status, 413, "{message}");
    assert!(message.contains("for each of 300 servers"), "{message}");
    let (status, message) = launch(json!({"blob": "z".repeat(60 * 1024)}), &names[..10]).await;
    assert_eq!(status, 201, "{message}");
    let (status, message) = launch(json!({"bad-name": 1}), &names[..1]).await;
    assert_eq!(status, 422, "{message}");
    assert!(message.contains("'bad-name'"), "{message}");
    let jobs = w
        .store
        .list_jobs(
            &Default::default(),
            outpost_controller::model::Paging::new(1000, 0),
        )
        .await
        .unwrap();
    assert_eq!(jobs.total, 10, "only the launch that passed made jobs");

    // SQL metacharacters and non-ASCII are data, stored and returned as sent.
    let hostname = "ünïcødé-節點-01";
    let description = "'; DROP TABLE servers; -- \" \\ % _ ` 🚀";
    let s: ServerView = admin
        .post(
            "/api/v1/servers",
            &json!({"hostname": hostname, "ip_address": "2001:db8::1", "os_type": "debian",
                    "description": description, "tags": {"owner": "Zoë O'Brien"}}),
        )
        .await
        .unwrap();
    let back: ServerView = admin
        .get(&format!("/api/v1/servers/{}", s.id))
        .await
        .unwrap();
    assert_eq!(back.hostname, hostname);
    assert_eq!(back.description.as_deref(), Some(description));
    assert_eq!(back.tags.unwrap()["owner"], "Zoë O'Brien");
    let dup = admin
        .post::<_, ServerView>(
            "/api/v1/servers",
            &json!({"hostname": hostname, "ip_address": "10.0.0.2", "os_type": "debian"}),
        )
        .await
        .unwrap_err();
    assert_eq!(dup.status(), Some(409));
    // limit is capped.
    let page: Page<ServerView> = admin.get("/api/v1/servers?limit=1000000").await.unwrap();
    assert_eq!(page.limit, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let anon = c.ctl.api();
    let h: serde_json::Value = anon.get("/healthz").await.unwrap();
    assert_eq!(h["status"], "ok");
    let r: serde_json::Value = anon.get("/readyz").await.unwrap();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["checks"]["database"], "ok");
    let _ = login(&c.ctl, "ops", PASSWORD).await;
    let text = anon
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("outpost_jobs_dispatched_total"), "{text}");
    assert!(
        text.contains("outpost_http_requests_total{method=\"POST\",route=\"/api/v1/auth/login\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("outpost_http_request_duration_seconds_bucket{"));
}

/// The document's operation serving `method path`: its path template and the operation. Of
/// the templates that match, the one with the most literal segments wins, as in the router.
fn operation<'d>(
    doc: &'d serde_json::Value,
    method: &Method,
    path: &str,
) -> Option<(&'d str, &'d serde_json::Value)> {
    let path = path.split('?').next().unwrap_or(path);
    let wanted: Vec<&str> = path.split('/').collect();
    let mut best: Option<(usize, &str, &serde_json::Value)> = None;
    for (route, item) in doc["paths"].as_object()? {
        let parts: Vec<&str> = route.split('/').collect();
        let fits = parts.len() == wanted.len()
            && parts
                .iter()
                .zip(&wanted)
                .all(|(p, w)| p.starts_with('{') || p == w);
        let op = &item[method.as_str().to_lowercase()];
        if fits && op.is_object() {
            let literal = parts.iter().filter(|p| !p.starts_with('{')).count();
            if best.is_none_or(|(n, _, _)| literal > n) {
                best = Some((literal, route, op));
            }
        }
    }
    best.map(|(_, route, op)| (route, op))
}

/// POSTs an oversized body and returns the answer's status. The controller answers before it
/// reads such a body and closes the connection, so the client may still be writing when it
/// does and meet a broken pipe instead of the answer: such a try is made again, and the
/// answer itself must be seen.
async fn oversized(admin: &Client, path: &str, content_type: &str, body: String) -> StatusCode {
    for _ in 0..5 {
        let sent = admin
            .request(Method::POST, path)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) => return resp.status(),
            Err(e) if cut_while_writing(&e) => continue,
            Err(e) => panic!("{path}: {e:?}"),
        }
    }
    panic!("{path}: every try was cut while its body was being written");
}

/// Whether a request failed because the connection was closed while its body was written.
fn cut_while_writing(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
        }
        source = s.source();
    }
    false
}
