//! Job templates for real, on one world (a controller on MariaDB with the admin setting that
//! lets admins' launch values be templates switched on, an agent, a local server): an admin
//! saves a template with a survey; bad answers are refused with each field named; operators
//! launch but cannot write templates, viewers read but cannot launch; the answers reach the
//! play through real ansible as data — a `lookup('pipe', …)` answer is printed, never run, even
//! in an admin's launch — and a secret answer reaches the play (its length and digest are
//! printed) but is in no job row, audit record, log line, daemon log or command line.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use outpost_api::client::Client;
use outpost_controller::model::{JobId, JobStatus, Role};
use outpost_controller::store::audit::AuditFilter;
use outpost_tests::api::{job_ended, login, user, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{AgentOpts, ControllerOpts};
use outpost_tests::{unique_mark, Backend};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Prints every answer, a digest of the secret one, and lingers as long as asked (so that the
/// test can look at the command lines while ansible runs).
const SURVEYED: &str = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: answers
      ansible.builtin.debug:
        msg: "app={{ app }} count={{ count }} region={{ region }} roles={{ roles | default([]) | join('+') }} base={{ base }}"
    - name: note
      ansible.builtin.debug:
        msg: "note={{ note | default('none') }}"
    - name: secret
      ansible.builtin.debug:
        msg: "token_len={{ token | default('') | length }} token_sha256={{ token | default('') | hash('sha256') }}"
    - name: linger
      ansible.builtin.command: "sleep {{ linger }}"
"#;

fn template_spec(name: &str) -> Value {
    json!({
        "name": name,
        "description": "deploy the shop",
        "playbook": "surveyed",
        "servers": ["web1.fra1"],
        "extra_vars": {"base": "from-template", "app": "overridden"},
        "time_limit_secs": 300,
        "survey": [
            {"name": "app", "type": "text", "label": "Application", "required": true, "max_length": 20},
            {"name": "count", "type": "integer", "min": 1, "max": 5, "default": 2},
            {"name": "region", "type": "choice", "choices": ["eu", "us"], "required": true},
            {"name": "roles", "type": "multi_choice", "choices": ["web", "db"]},
            {"name": "note", "type": "multiline"},
            {"name": "linger", "type": "integer", "min": 0, "max": 30, "default": 0},
            {"name": "token", "type": "secret", "help": "an API token for the deploy"}
        ]
    })
}

/// Status and JSON body of a raw request (the typed client keeps only the message).
async fn raw(api: &Client, method: Method, path: &str, body: &Value) -> (u16, Value) {
    let resp = api
        .request(method, path)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn field_names(body: &Value) -> BTreeSet<String> {
    body["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields in {body}"))
        .iter()
        .map(|f| f["field"].as_str().expect("field").to_owned())
        .collect()
}

/// Every process's command line that holds `needle`.
fn command_lines_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(text);
        }
    }
    found
}

async fn log_text(api: &Client, id: &str) -> String {
    let page: outpost_api::LogPage = api
        .get(&format!("/api/v1/jobs/{id}/logs?limit=5000"))
        .await
        .expect("logs");
    page.lines
        .iter()
        .map(|l| l.content.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_surveys_roles_injection_and_secret_answers() {
    let c = Cluster::start(
        Backend::MariaDb,
        ControllerOpts {
            extra: vec!["--admin-launch-vars-templates".into()],
            ..ControllerOpts::default()
        },
    )
    .await;
    let agent = c.agent("bastion-fra1", &["dc=fra1"], &AgentOpts::default());
    let w = &c.world;
    w.local_server("web1.fra1", json!({"dc": "fra1"}), "staging")
        .await;
    w.playbook("surveyed", SURVEYED).await;
    user(w, "otto", Role::Operator).await;
    user(w, "vera", Role::Viewer).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let operator = login(&c.ctl, "otto", PASSWORD).await;
    let viewer = login(&c.ctl, "vera", PASSWORD).await;

    // A survey with a bad default and a repeated question is refused, each problem named.
    let mut bad = template_spec("broken");
    bad["survey"][1]["default"] = json!(9);
    bad["survey"][2]["choices"] = json!(["eu", "eu"]);
    let (status, body) = raw(&admin, Method::POST, "/api/v1/templates", &bad).await;
    assert_eq!(status, 422, "{body}");
    let names = field_names(&body);
    assert!(
        names.contains("survey.count.default") && names.contains("survey.region.choices"),
        "{body}"
    );

    // Admins create; operators may not; viewers read.
    let (status, created) = raw(
        &admin,
        Method::POST,
        "/api/v1/templates",
        &template_spec("deploy"),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["playbook"]["name"], "surveyed");
    let (status, _) = raw(
        &operator,
        Method::POST,
        "/api/v1/templates",
        &template_spec("mine"),
    )
    .await;
    assert_eq!(status, 403);
    let listed: Value = viewer.get("/api/v1/templates").await.expect("list");
    assert_eq!(listed["items"][0]["name"], "deploy", "{listed}");
    assert_eq!(
        listed["items"][0]["survey"].as_array().map(Vec::len),
        Some(7)
    );
    let (status, _) = raw(
        &viewer,
        Method::POST,
        "/api/v1/templates/deploy/launch",
        &json!({"answers": {"app": "x", "region": "eu"}}),
    )
    .await;
    assert_eq!(status, 403, "viewers do not launch");

    // Bad answers: 422, each field named with why, and no job made.
    let (status, body) = raw(
        &operator,
        Method::POST,
        "/api/v1/templates/deploy/launch",
        &json!({"answers": {"app": "a".repeat(30), "count": 9, "roles": ["mail"], "sneaky": 1}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "unprocessable");
    let expected: BTreeSet<String> = ["app", "count", "region", "roles", "sneaky"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(field_names(&body), expected, "{body}");
    let jobs: Value = admin.get("/api/v1/jobs").await.expect("jobs");
    assert_eq!(jobs["total"], 0, "a refused launch makes no job");

    // An operator's good launch: the answers over the template's vars reach the play.
    let launched: Value = operator
        .post(
            "/api/v1/templates/deploy/launch",
            &json!({"answers": {"app": "shop", "region": "eu", "roles": "web,db"}}),
        )
        .await
        .expect("launch");
    let id = launched["jobs"][0]["id"]
        .as_str()
        .expect("job id")
        .to_owned();
    assert_eq!(launched["jobs"][0]["template"]["name"], "deploy");
    let done = job_ended(&admin, &id).await;
    assert_eq!(done["status"], "success", "{done}");
    let log = log_text(&admin, &id).await;
    assert!(
        log.contains("app=shop count=2 region=eu roles=web+db base=from-template"),
        "{log}"
    );

    // An admin's launch with an injection attempt and a secret: the text is printed, not run;
    // the secret reaches the play but nowhere else.
    let mark = unique_mark();
    let pwned = format!("/tmp/outpost-pwned-{mark}");
    let attack = format!("{{{{ lookup('pipe','touch {pwned}') }}}}");
    let secret = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let launched: Value = admin
        .post(
            "/api/v1/templates/deploy/launch",
            &json!({"answers": {"app": "shop", "region": "us", "note": attack, "token": secret, "linger": 4}}),
        )
        .await
        .expect("launch");
    let id = launched["jobs"][0]["id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let mut seen_in_argv = Vec::new();
    let done = loop {
        seen_in_argv.extend(command_lines_with(&secret));
        let j: Value = admin.get(&format!("/api/v1/jobs/{id}")).await.expect("job");
        if matches!(
            j["status"].as_str(),
            Some("success" | "failed" | "cancelled")
        ) {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "success", "{done}");
    assert!(
        seen_in_argv.is_empty(),
        "the secret is on a command line: {seen_in_argv:?}"
    );
    assert!(
        !Path::new(&pwned).exists(),
        "the answer was run as a template"
    );
    let log = log_text(&admin, &id).await;
    assert!(log.contains(&format!("note={attack}")), "{log}");
    let digest = hex::encode(Sha256::digest(secret.as_bytes()));
    assert!(
        log.contains(&format!("token_len={} token_sha256={digest}", secret.len())),
        "the secret did not reach the play: {log}"
    );
    assert!(!log.contains(&secret), "the secret is in the job's log");
    assert_eq!(done["secret_answers"], json!({"token": "********"}));
    assert!(!done.to_string().contains(&secret));
    let job = w
        .store
        .get_job_by_uuid(id.parse().expect("uuid"))
        .await
        .expect("job row");
    assert!(!job.extra_vars_templated, "a template's answers are data");
    assert_eq!(job.time_limit_secs, Some(300));
    let row = serde_json::to_string(&job).expect("row");
    assert!(!row.contains(&secret), "the secret is in the jobs row");
    let sealed = w
        .store
        .job_secret_vars(JobId(job.id.0))
        .await
        .expect("secret vars")
        .expect("sealed");
    // The names stay for the job's view; the sealed values went with the job's end.
    assert_eq!(sealed.names, ["token"]);
    assert!(
        sealed.sealed.is_empty(),
        "a finished job still holds its sealed answers"
    );
    for line in w.lines(&job).await {
        assert!(!line.content.contains(&secret), "the secret is in job_logs");
    }
    assert!(
        !c.ctl.log().contains(&secret),
        "the secret is in the controller's log"
    );
    assert!(
        !agent.log().contains(&secret),
        "the secret is in the agent's log"
    );

    // The audit trail names who launched which template with which answers, the secret masked.
    let audit = w
        .store
        .list_audit(
            &AuditFilter {
                action: Some("TEMPLATE_LAUNCH".into()),
                ..Default::default()
            },
            outpost_controller::model::Paging::new(10, 0),
        )
        .await
        .expect("audit");
    assert_eq!(audit.items.len(), 2);
    let all = serde_json::to_string(&audit.items).expect("audit json");
    assert!(!all.contains(&secret), "the secret is in the audit trail");
    let admins = audit
        .items
        .iter()
        .find(|a| a.user_id == Some(w.admin.id))
        .expect("the admin's launch");
    let details = &admins.details.as_ref().expect("details").0;
    assert_eq!(details["template"], "deploy");
    assert_eq!(details["answers"]["token"], "********");
    assert_eq!(details["answers"]["note"], json!(attack));
    let launches = w
        .store
        .list_audit(
            &AuditFilter {
                action: Some("LAUNCH".into()),
                ..Default::default()
            },
            outpost_controller::model::Paging::new(10, 0),
        )
        .await
        .expect("audit");
    assert!(!serde_json::to_string(&launches.items)
        .expect("json")
        .contains(&secret));

    // Admins replace and delete; the jobs stay, without their template.
    let mut changed = template_spec("deploy");
    changed["description"] = json!("changed");
    let (status, body) = raw(&operator, Method::PUT, "/api/v1/templates/deploy", &changed).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = raw(&admin, Method::PUT, "/api/v1/templates/deploy", &changed).await;
    assert_eq!(
        (status, body["description"].as_str()),
        (200, Some("changed")),
        "{body}"
    );
    let (status, _) = raw(
        &operator,
        Method::DELETE,
        "/api/v1/templates/deploy",
        &json!({}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = raw(
        &admin,
        Method::DELETE,
        "/api/v1/templates/deploy",
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = raw(&viewer, Method::GET, "/api/v1/templates/deploy", &json!({})).await;
    assert_eq!(status, 404);
    let kept = w
        .store
        .get_job_by_uuid(id.parse().expect("uuid"))
        .await
        .expect("job kept");
    assert_eq!((kept.template_id, kept.status), (None, JobStatus::Success));
    for action in ["TEMPLATE_CREATE", "TEMPLATE_UPDATE", "TEMPLATE_DELETE"] {
        let n = w
            .store
            .list_audit(
                &AuditFilter {
                    action: Some(action.into()),
                    ..Default::default()
                },
                outpost_controller::model::Paging::new(10, 0),
            )
            .await
            .expect("audit")
            .items
            .len();
        assert_eq!(n, 1, "{action}");
    }
}
