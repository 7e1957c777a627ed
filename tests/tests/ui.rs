//! The web UI in a real browser (headless Chromium over WebDriver) against a real controller
//! with a real agent running real ansible: sign in, launch, watch a log arrive live, cancel,
//! resolve a failure's ticket, a viewer refused, markup in a log shown as text, and a log of
//! 200,000 lines that loads and scrolls, projects (a sync started from the page, a failed
//! sync's error shown as text, a viewer refused), and credentials (written from a form, never
//! shown back, viewers and operators refused), and a template's survey as a launch form (errors
//! beside their fields), and the dashboard's charts drawn from a week of history. Screenshots land in `target/ui-screenshots/`.

use std::time::Duration;

use outpost_api::{NewProjectRequest, ProjectKind, SyncState};
use outpost_controller::model::{JobStatus, Role, TicketStatus};
use outpost_tests::api::{login, user, PASSWORD};
use outpost_tests::browser::Browser;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{AgentOpts, ControllerOpts};
use outpost_tests::repo::TeamRepo;
use outpost_tests::world::sleeping_playbook;
use outpost_tests::{unique_mark, wait_for, wait_no_process, wait_process, Backend};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// Markup in a playbook's output that, were it made into elements, would set `window.__alerted`
/// (the `<script>` if the page's HTML held it, the `<img>` even through `innerHTML`).
const PLAYBOOK_MARKUP: &str =
    "<script>window.__alerted=1</script> <img src=x onerror=window.__alerted=2>";

/// The same from the operator, typed into the launch form's extra vars.
const TYPED_MARKUP: &str =
    "<script>window.__alerted=3</script> <img src=y onerror=window.__alerted=4>";

/// Five bursts of output two seconds apart, each line carrying [`PLAYBOOK_MARKUP`].
const BURSTS: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "burst {{ item }} <script>window.__alerted=1</script> <img src=x onerror=window.__alerted=2> {{ greeting | default('') }}"
      loop: [1, 2, 3, 4, 5]
      loop_control:
        pause: 2
"#;

/// The job id of the job page the browser is on.
async fn job_on_page(b: &Browser) -> String {
    wait_for("a job page", MINUTE, || async {
        let p = b.path().await;
        let id = p.strip_prefix("/jobs/")?.to_owned();
        (id.len() == 36).then_some(id)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_launches_a_job_and_watches_its_log_live() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &["dc=local"], &AgentOpts::default());
    let w = &c.world;
    w.local_server("web1", json!({"dc": "local"}), "staging")
        .await;
    let pb = w.playbook("bursts", BURSTS).await;
    user(w, "olga", Role::Operator).await;

    let b = Browser::start(&c.ctl.api_url(), "launch").await;
    b.sign_in("olga", PASSWORD).await;
    b.wait_text("#n-running", MINUTE, |_| true).await;
    b.shot("dashboard").await;

    b.goto("/jobs/new").await;
    b.find("#playbook")
        .await
        .select_by_value(&pb.id.0.to_string())
        .await
        .unwrap();
    b.find("#servers")
        .await
        .select_by_value("web1")
        .await
        .unwrap();
    b.find("#extra_vars")
        .await
        .send_keys("greeting: [not, closed")
        .await
        .unwrap();
    b.find("form#launch button.primary")
        .await
        .click()
        .await
        .unwrap();
    // A mistake is shown next to its field, and what was typed is still there.
    let err = b
        .wait_text("#err-extra_vars", MINUTE, |t| !t.is_empty())
        .await;
    assert!(err.contains("YAML"), "{err}");
    b.shot("launch-error").await;
    let extra = b.find("#extra_vars").await;
    assert_eq!(
        extra.prop("value").await.unwrap().as_deref(),
        Some("greeting: [not, closed")
    );
    // A few hundred bytes of nested aliases would expand to a billion values: refused at once,
    // next to the field, and the controller is still here to say so.
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..=9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    extra.clear().await.unwrap();
    extra.send_keys(&laughs).await.unwrap();
    b.find("form#launch button.primary")
        .await
        .click()
        .await
        .unwrap();
    let err = b
        .wait_text("#err-extra_vars", MINUTE, |t| {
            t.contains("expands to more than")
        })
        .await;
    assert!(err.contains("aliases"), "{err}");
    // The operator's value tries to run a command on the bastion through a Jinja lookup, and
    // carries markup: it reaches ansible as data, is printed as typed, and runs nothing.
    let witness = tempfile::tempdir().unwrap();
    let marker = witness.path().join("ran");
    let lookup = format!("{{{{ lookup('pipe', 'touch {}') }}}}", marker.display());
    let extra = b.find("#extra_vars").await;
    extra.clear().await.unwrap();
    extra
        .send_keys(&format!(
            "greeting: from-the-browser {lookup} {TYPED_MARKUP}"
        ))
        .await
        .unwrap();
    let kept = b
        .js("return document.querySelector('#servers option[value=web1]').selected")
        .await;
    assert_eq!(kept, json!(true), "the chosen server is still chosen");
    b.find("form#launch button.primary")
        .await
        .click()
        .await
        .unwrap();
    let id = job_on_page(&b).await;

    // Lines arrive while the job still runs.
    wait_for("log lines shown while the job runs", MINUTE, || async {
        let status = b.text("#job-status").await?;
        let rows = b
            .js("return document.querySelectorAll('#log-rows .ln').length")
            .await;
        let shown = b
            .js("return document.getElementById('log-rows').textContent")
            .await;
        (status == "running" && rows.as_u64()? > 0 && shown.as_str()?.contains("burst 1"))
            .then_some(())
    })
    .await;
    b.shot("job-live").await;
    b.wait_text("#job-status", 2 * MINUTE, |t| t == "success")
        .await;
    b.wait_text("#job-exit", MINUTE, |t| t == "0").await;

    // Every stored line is counted, and markup from the playbook and the operator is text, not
    // elements: shown literally, no element made of it, none of its scripts run.
    let job = w
        .store
        .get_job_by_uuid(id.parse().expect("a job uuid"))
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Success);
    let stored = w.assert_contiguous(&job).await;
    b.wait_text("#log-count", MINUTE, |t| t == format!("{stored} lines"))
        .await;
    let text = b
        .js("return document.getElementById('log-rows').textContent")
        .await;
    let text = text.as_str().unwrap_or_default();
    assert!(
        BURSTS.contains(PLAYBOOK_MARKUP),
        "the playbook prints the markup this test looks for"
    );
    for n in 1..=5 {
        let line = format!("burst {n} {PLAYBOOK_MARKUP} from-the-browser {lookup} {TYPED_MARKUP}");
        assert!(
            text.contains(&line),
            "burst {n}'s markup (the playbook's and the typed extra var's) is shown as text, as \
             printed: {text}"
        );
    }
    assert!(!marker.exists(), "the operator's lookup ran on the bastion");
    let elements = b
        .js("return document.querySelectorAll('#log-rows script, #log-rows img').length")
        .await;
    assert_eq!(elements, json!(0), "no element was made from the log");
    let alerted = b.js("return typeof window.__alerted").await;
    assert_eq!(alerted, json!("undefined"), "a script of the log ran");
    b.shot("job-done").await;

    // A template's launch page is made from its survey: bad answers are refused beside their
    // fields with what was typed kept (a secret never echoed back), then the launch runs.
    w.playbook("greet", "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"hi {{ who }} x{{ times }}\"\n").await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let t: serde_json::Value = admin
        .post(
            "/api/v1/templates",
            &json!({"name": "greet", "playbook": "greet", "servers": ["web1"], "survey": [
                {"name": "who", "type": "text", "required": true, "max_length": 8},
                {"name": "times", "type": "integer", "min": 1, "max": 3, "default": 1},
                {"name": "pin", "type": "secret"}
            ]}),
        )
        .await
        .expect("template");
    b.goto("/templates").await;
    b.find(&format!("a[href='/templates/{}/launch']", t["id"]))
        .await
        .click()
        .await
        .unwrap();
    let times = b.find("#q-times").await;
    times.clear().await.unwrap();
    times.send_keys("7").await.unwrap();
    b.find("#q-pin").await.send_keys("1234").await.unwrap();
    b.find("form#template-launch button.primary")
        .await
        .click()
        .await
        .unwrap();
    let err = b.wait_text("#err-who", MINUTE, |t| !t.is_empty()).await;
    assert!(err.contains("required"), "{err}");
    let err = b.wait_text("#err-times", MINUTE, |t| !t.is_empty()).await;
    assert!(err.contains("above the maximum 3"), "{err}");
    b.shot("template-launch-errors").await;
    let times = b.find("#q-times").await;
    assert_eq!(
        times.prop("value").await.unwrap().as_deref(),
        Some("7"),
        "what was typed is kept"
    );
    let who = b.find("#q-who").await;
    let pin = b.find("#q-pin").await;
    assert_eq!(
        pin.prop("value").await.unwrap().as_deref(),
        Some(""),
        "a secret is not echoed back"
    );
    who.clear().await.unwrap();
    who.send_keys("browser").await.unwrap();
    let times = b.find("#q-times").await;
    times.clear().await.unwrap();
    times.send_keys("2").await.unwrap();
    b.find("form#template-launch button.primary")
        .await
        .click()
        .await
        .unwrap();
    let id = job_on_page(&b).await;
    b.wait_text("#job-template", MINUTE, |t| t == "greet").await;
    b.wait_text("#job-exit", MINUTE, |t| t == "0").await;
    let job = w
        .store
        .get_job_by_uuid(id.parse().expect("a job uuid"))
        .await
        .unwrap();
    let lines = w.lines(&job).await;
    assert!(
        lines.iter().any(|l| l.content.contains("hi browser x2")),
        "{lines:#?}"
    );
    // The finished job's page shows ansible's recap and its task above the log.
    b.goto(&format!("/jobs/{id}")).await;
    let recap = b
        .wait_text("#job-recap", MINUTE, |t| t.contains("ok 1"))
        .await;
    assert!(recap.contains("failed 0"), "{recap}");
    let tasks = b.wait_text("#job-tasks", MINUTE, |t| !t.is_empty()).await;
    assert!(
        tasks.contains("ansible.builtin.debug") && tasks.contains("ok"),
        "{tasks}"
    );
    b.shot("template-launched").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_resolve_and_a_viewer_refused() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let _agent = c.agent(
        "bastion",
        &[],
        &AgentOpts {
            capacity: 4,
            ..AgentOpts::default()
        },
    );
    let w = &c.world;
    let s1 = w.local_server("web1", json!({}), "production").await;
    let s2 = w.local_server("web2", json!({}), "production").await;
    let mark = unique_mark();
    let sleeper = w.playbook("sleeper", &sleeping_playbook(&mark)).await;
    let failing = w
        .playbook(
            "failing",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.fail:\n        msg: \"disk <b>full</b>\"\n",
        )
        .await;
    user(w, "olga", Role::Operator).await;
    user(w, "vic", Role::Viewer).await;
    let b = Browser::start(&c.ctl.api_url(), "operate").await;
    b.sign_in("olga", PASSWORD).await;
    b.wait_text("#n-running", MINUTE, |t| t == "0").await;
    let long = w.launch(&sleeper, &s1).await;
    let failed = w.launch(&failing, &s2).await;
    w.wait_status(&long, JobStatus::Running, MINUTE).await;
    w.wait_final(&failed, MINUTE).await;
    // The dashboard follows without a reload.
    b.wait_text("#n-running", MINUTE, |t| t == "1").await;
    b.wait_text("#n-failed", MINUTE, |t| t == "1").await;
    b.wait_text("#dashboard table.jobs", MINUTE, |t| t.contains("failing"))
        .await;
    b.shot("dashboard-live").await;
    // Cancel the long job from its page, once its sleep runs (so that its end below is the
    // cancel's doing, not a sleep that never started).
    wait_process(&mark, MINUTE).await;
    b.goto(&format!("/jobs/{}", long.job_id)).await;
    b.wait_text("#job-status", MINUTE, |t| t == "running").await;
    b.find("#cancel").await.click().await.unwrap();
    b.wait_text("#job-status", MINUTE, |t| t == "cancelled")
        .await;
    assert_eq!(w.job(&long).await.status, JobStatus::Cancelled);
    wait_no_process(&mark, MINUTE).await;
    b.shot("cancelled").await;

    // Resolve the failure's ticket on the board.
    let ticket = w.tickets(&failed).await.remove(0);
    b.goto("/tickets").await;
    b.shot("tickets").await;
    let card = format!("article[data-ticket='{}']", ticket.ticket_id);
    let title = b
        .text(&format!("{card} h3"))
        .await
        .expect("the ticket's card");
    assert!(title.contains("failing"), "{title}");
    b.find(&format!("{card} button.resolve"))
        .await
        .click()
        .await
        .unwrap();
    wait_for("the ticket resolved", MINUTE, || async {
        let t = w.tickets(&failed).await.remove(0);
        (t.status == TicketStatus::Resolved && t.resolved_at.is_some()).then_some(())
    })
    .await;
    b.wait_text(
        &format!("section[aria-label=resolved] {card} h3"),
        MINUTE,
        |_| true,
    )
    .await;
    b.find("form[action='/logout'] button")
        .await
        .click()
        .await
        .unwrap();
    wait_for("the sign-in page", MINUTE, || async {
        b.path().await.starts_with("/login").then_some(())
    })
    .await;

    // A viewer sees the jobs but no button to change them, and a form or API call sent with
    // the page's own CSRF token (so that only the role can refuse it) is refused.
    let running = w.launch(&sleeper, &s1).await;
    w.wait_status(&running, JobStatus::Running, MINUTE).await;
    wait_process(&mark, MINUTE).await;
    b.sign_in("vic", PASSWORD).await;
    b.goto(&format!("/jobs/{}", running.job_id)).await;
    b.wait_text("#job-status", MINUTE, |t| t == "running").await;
    assert!(
        b.find_all("#cancel").await.is_empty(),
        "a viewer has no cancel button"
    );
    assert!(
        b.find_all("a[href='/jobs/new']").await.is_empty(),
        "nor a launch link"
    );
    b.shot("viewer-job").await;
    let forged = b
        .js_async(&format!(
            "const done = arguments[arguments.length - 1];\
             const f = new URLSearchParams({{_csrf: document.querySelector('input[name=_csrf]').value}});\
             fetch('/jobs/{}/cancel', {{method: 'POST', body: f}}).then(r => r.text().then(t => done([r.status, t])));",
            running.job_id
        ))
        .await;
    assert_eq!(forged[0], json!(403), "{forged}");
    assert!(
        forged[1]
            .as_str()
            .unwrap_or_default()
            .contains("This needs a higher role than viewer: ask an admin."),
        "refused for the role: {forged}"
    );
    let api = b
        .js_async(&format!(
            "const done = arguments[arguments.length - 1];\
             const t = document.querySelector('input[name=_csrf]').value;\
             fetch('/api/v1/jobs/{}/cancel', {{method: 'POST', headers: {{'x-csrf-token': t}}}})\
               .then(r => r.json().then(j => done([r.status, j.message])));",
            running.job_id
        ))
        .await;
    assert_eq!(
        api,
        json!([
            403,
            "POST /api/v1/jobs/{job_id}/cancel needs a higher role than viewer"
        ]),
        "the API refuses a viewer's cancel for its role"
    );
    assert_eq!(w.job(&running).await.status, JobStatus::Running);
    b.goto("/jobs/new").await;
    let refusal = b.wait_text("h1", MINUTE, |_| true).await;
    assert_eq!(refusal, "Not allowed");
    b.shot("viewer-refused").await;
    b.close().await;
    let _ = outpost_controller::lifecycle::Lifecycle::new(w.store.clone())
        .cancel(
            running.id,
            &outpost_controller::store::audit::Actor::system(),
        )
        .await;
    wait_no_process(&mark, MINUTE).await;
}

/// What the UI says when a form's CSRF token is missing or not the session's.
const FORM_CSRF_REFUSAL: &str =
    "This form is out of date or was not sent from Outpost: reload the page and try again.";
/// What the API says when a change sent with the session cookie lacks the session's token.
const API_CSRF_REFUSAL: &str =
    "a change made with the session cookie needs the page's X-CSRF-Token";

/// The CSRF token of a second, separate session of `username`: signed in over plain HTTPS (no
/// browser), read from the `_csrf` field of a page of that session.
async fn another_sessions_csrf(c: &Cluster, username: &str) -> String {
    let tls = outpost_api::client::tls_config(&c.ctl.ca_pem()).expect("TLS config");
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(MINUTE)
        .build()
        .expect("client");
    let base = c.ctl.api_url();
    let body: String = url_encode(&[("username", username), ("password", PASSWORD)]);
    let resp = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("sign in");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie from signing in: {}", resp.status()))
        .to_owned();
    let page = http
        .get(format!("{base}/"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("a page of the second session")
        .text()
        .await
        .expect("page text");
    let start = page
        .find(r#"name="_csrf" value=""#)
        .unwrap_or_else(|| panic!("no _csrf field in the page: {page}"))
        + r#"name="_csrf" value=""#.len();
    page[start..]
        .split('"')
        .next()
        .expect("the field's value")
        .to_owned()
}

fn url_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        out.push_str(&enc(k));
        out.push('=');
        out.push_str(&enc(v));
    }
    out
}

/// Which CSRF token a forged request carries.
#[derive(Debug, Clone, Copy)]
enum Forged<'a> {
    None,
    /// As long as the right one, and different in every character.
    Wrong,
    /// A real token, of another session of the same user.
    OtherSession(&'a str),
}

/// The script fragment that sets `t` to the token a request carries (`null`: none); `real` is
/// the page's own token, read from its `_csrf` field.
fn token_js(forged: Option<Forged>) -> String {
    let real = "const real = document.querySelector('input[name=_csrf]').value;";
    let t = match forged {
        None => "const t = real;".to_owned(),
        Some(Forged::None) => "const t = null;".to_owned(),
        Some(Forged::Wrong) => {
            "const t = real.replace(/./g, ch => ch === 'a' ? 'b' : 'a');".to_owned()
        }
        Some(Forged::OtherSession(other)) => format!("const t = {};", json!(other)),
    };
    format!("{real}{t}")
}

/// Sends a form to `path` from the page, with `fields` and the CSRF token `forged` says (none:
/// the page's own); returns the answer's status, its final path and its text.
async fn post_form(
    b: &Browser,
    path: &str,
    fields: &serde_json::Value,
    forged: Option<Forged<'_>>,
) -> (u64, String, String) {
    let got = b
        .js_async(&format!(
            "const done = arguments[arguments.length - 1];\
             {tok}\
             const f = new URLSearchParams({fields});\
             if (t !== null) f.set('_csrf', t);\
             fetch({path}, {{method: 'POST', body: f}})\
               .then(r => r.text().then(x => done([r.status, new URL(r.url).pathname, x])))\
               .catch(e => done([0, '', String(e)]));",
            tok = token_js(forged),
            path = json!(path),
        ))
        .await;
    (
        got[0].as_u64().unwrap_or(0),
        got[1].as_str().unwrap_or_default().to_owned(),
        got[2].as_str().unwrap_or_default().to_owned(),
    )
}

/// Sends JSON to the API from the page with its session cookie and the X-CSRF-Token `forged`
/// says (none: the page's own); returns the status and the answer's text.
async fn post_api(
    b: &Browser,
    path: &str,
    body: &serde_json::Value,
    forged: Option<Forged<'_>>,
) -> (u64, String) {
    let got = b
        .js_async(&format!(
            "const done = arguments[arguments.length - 1];\
             {tok}\
             const h = {{'content-type': 'application/json'}};\
             if (t !== null) h['x-csrf-token'] = t;\
             fetch({path}, {{method: 'POST', headers: h, body: JSON.stringify({body})}})\
               .then(r => r.text().then(x => done([r.status, x])))\
               .catch(e => done([0, String(e)]));",
            tok = token_js(forged),
            path = json!(path),
        ))
        .await;
    (
        got[0].as_u64().unwrap_or(0),
        got[1].as_str().unwrap_or_default().to_owned(),
    )
}

/// An operator's launch and an admin's new user, each by form and through the API with the
/// session cookie, are refused without the session's own CSRF token (none, a wrong one, or
/// another session's) and change nothing; the same requests with the right token succeed, so
/// the refusals are the token's doing and not the role's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_without_the_sessions_csrf_token_are_refused() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let pb = w
        .playbook(
            "quick",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n",
        )
        .await;
    user(w, "olga", Role::Operator).await;
    let jobs = || async {
        w.store
            .list_jobs(
                &outpost_controller::store::jobs::JobFilter::default(),
                outpost_controller::model::Paging::new(1000, 0),
            )
            .await
            .expect("jobs")
            .total
    };
    let b = Browser::start(&c.ctl.api_url(), "csrf").await;

    // The operator launches.
    let other = another_sessions_csrf(&c, "olga").await;
    b.sign_in("olga", PASSWORD).await;
    b.goto("/jobs/new").await;
    let form = json!({
        "playbook": pb.id.0.to_string(),
        "target": "servers",
        "server": server.hostname,
    });
    let launch = json!({"playbook": "quick", "servers": ["web1"]});
    for forged in [Forged::None, Forged::Wrong, Forged::OtherSession(&other)] {
        let (status, _, text) = post_form(&b, "/jobs", &form, Some(forged)).await;
        assert_eq!(status, 403, "an operator's form with {forged:?}: {text}");
        assert!(text.contains(FORM_CSRF_REFUSAL), "{forged:?}: {text}");
        let (status, text) = post_api(&b, "/api/v1/jobs", &launch, Some(forged)).await;
        assert_eq!(
            status, 403,
            "an operator's API call with {forged:?}: {text}"
        );
        assert!(text.contains(API_CSRF_REFUSAL), "{forged:?}: {text}");
        assert_eq!(jobs().await, 0, "no job launched ({forged:?})");
    }
    let (status, path, text) = post_form(&b, "/jobs", &form, None).await;
    assert_eq!(status, 200, "the operator's own form launches: {text}");
    assert!(path.starts_with("/jobs/"), "on the new job's page: {path}");
    assert_eq!(jobs().await, 1, "the form launched one job");
    let (status, text) = post_api(&b, "/api/v1/jobs", &launch, None).await;
    assert_eq!(status, 201, "the operator's own API call launches: {text}");
    assert_eq!(jobs().await, 2, "the API call launched one job");
    b.shot("csrf-operator").await;
    b.find("form[action='/logout'] button")
        .await
        .click()
        .await
        .unwrap();
    wait_for("the sign-in page", MINUTE, || async {
        b.path().await.starts_with("/login").then_some(())
    })
    .await;

    // The admin adds users.
    let other = another_sessions_csrf(&c, "ops").await;
    b.sign_in("ops", PASSWORD).await;
    b.goto("/users").await;
    let exists =
        |name: &'static str| async move { w.store.get_user_by_username(name).await.is_ok() };
    let new_user = |name: &str| json!({"username": name, "email": format!("{name}@example.com"), "password": "first password 1"});
    for forged in [Forged::None, Forged::Wrong, Forged::OtherSession(&other)] {
        let (status, _, text) = post_form(&b, "/users", &new_user("formed"), Some(forged)).await;
        assert_eq!(status, 403, "an admin's form with {forged:?}: {text}");
        assert!(text.contains(FORM_CSRF_REFUSAL), "{forged:?}: {text}");
        let (status, text) = post_api(&b, "/api/v1/users", &new_user("called"), Some(forged)).await;
        assert_eq!(status, 403, "an admin's API call with {forged:?}: {text}");
        assert!(text.contains(API_CSRF_REFUSAL), "{forged:?}: {text}");
        assert!(
            !exists("formed").await && !exists("called").await,
            "no user created ({forged:?})"
        );
    }
    let (status, path, text) = post_form(&b, "/users", &new_user("formed"), None).await;
    assert_eq!((status, path.as_str()), (200, "/users"), "{text}");
    assert!(exists("formed").await, "the admin's own form adds the user");
    let (status, text) = post_api(&b, "/api/v1/users", &new_user("called"), None).await;
    assert_eq!(
        status, 201,
        "the admin's own API call adds the user: {text}"
    );
    assert!(exists("called").await);
    b.shot("csrf-admin").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_200000_lines_loads_and_scrolls() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let yaml = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "{{ query('ansible.builtin.sequence', 'start=1 end=199990 format=row-%06d') }}"
"#;
    let pb = w.playbook("huge", yaml).await;
    let job = w.launch(&pb, &server).await;
    let job = w.wait_final(&job, 5 * MINUTE).await;
    assert_eq!(job.status, JobStatus::Success);
    let total = w.assert_contiguous(&job).await;
    assert!(total > 200_000, "{total} lines");

    let b = Browser::start(&c.ctl.api_url(), "huge-log").await;
    b.sign_in("ops", PASSWORD).await;
    b.goto(&format!("/jobs/{}", job.job_id)).await;
    b.wait_text("#log-count", MINUTE, |t| t == format!("{total} lines"))
        .await;
    b.wait_text("#log-rows", MINUTE, |t| t.contains("PLAY [all]"))
        .await;
    let rows = b
        .js("return document.querySelectorAll('#log-rows .ln').length")
        .await;
    assert!(
        rows.as_u64().unwrap() < 200,
        "only the lines on screen are in the page: {rows}"
    );
    b.shot("top").await;

    // To the end, then to the middle: each shows its own lines, and the page stays small.
    b.js("const v = document.getElementById('log-view'); v.scrollTop = v.scrollHeight; return 0")
        .await;
    b.wait_text("#log-rows", MINUTE, |t| t.contains("PLAY RECAP"))
        .await;
    b.js(
        "const v = document.getElementById('log-view'); v.scrollTop = v.scrollHeight / 2; return 0",
    )
    .await;
    b.wait_text("#log-rows", MINUTE, |t| t.contains("row-1000"))
        .await;
    let rows = b
        .js("return document.querySelectorAll('#log-rows .ln').length")
        .await;
    assert!(rows.as_u64().unwrap() < 200, "{rows}");

    // Search jumps to the line that holds the text.
    b.find("#log-q")
        .await
        .send_keys("row-123456")
        .await
        .unwrap();
    b.find("#log-search button").await.click().await.unwrap();
    let note = b
        .wait_text("#log-note", MINUTE, |t| t.contains("line"))
        .await;
    let n: i32 = note.rsplit(' ').next().unwrap().parse().unwrap();
    let stored = w.store.read_log_lines(job.id, n - 1, 1).await.unwrap();
    assert!(
        stored[0].content.contains("row-123456"),
        "{note}: {:?}",
        stored[0].content
    );
    b.wait_text("#log-rows .ln.hit", MINUTE, |t| t.contains("row-123456"))
        .await;
    b.shot("search").await;

    // Past the retention and archived (its rows gone), the same log reads from the archive:
    // marked, the same count, the end and a search.
    for sql in [
        format!(
            "UPDATE job_logs SET timestamp = datetime('now', '-100 days') WHERE job_id = {}",
            job.id.0
        ),
        format!(
            "UPDATE jobs SET completed_at = datetime('now', '-100 days') WHERE id = {}",
            job.id.0
        ),
    ] {
        c.db.exec(&sql).await;
    }
    let out = std::process::Command::new(outpost_tests::procs::bin("outpost-controller"))
        .args(["archive", "run", "--data-dir"])
        .arg(c.data.path())
        .args(["--database-url", &c.db.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w
        .store
        .read_log_lines(job.id, 0, 1)
        .await
        .unwrap()
        .is_empty());
    b.goto(&format!("/jobs/{}", job.job_id)).await;
    b.wait_text("#log-archived", MINUTE, |t| t.contains("archived"))
        .await;
    b.wait_text("#log-count", MINUTE, |t| t == format!("{total} lines"))
        .await;
    b.wait_text("#log-rows", MINUTE, |t| t.contains("PLAY [all]"))
        .await;
    b.js("const v = document.getElementById('log-view'); v.scrollTop = v.scrollHeight; return 0")
        .await;
    b.wait_text("#log-rows", MINUTE, |t| t.contains("PLAY RECAP"))
        .await;
    b.find("#log-q")
        .await
        .send_keys("row-123456")
        .await
        .unwrap();
    b.find("#log-search button").await.click().await.unwrap();
    b.wait_text("#log-rows .ln.hit", MINUTE, |t| t.contains("row-123456"))
        .await;
    b.shot("archived").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages_tokens_playbooks_users_and_a_narrow_screen() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let failing = w
        .playbook(
            "failing",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: before\n    - ansible.builtin.fail:\n        msg: \"broken on purpose\"\n",
        )
        .await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let job = w.launch(&failing, &server).await;
    let job = w.wait_final(&job, MINUTE).await;
    assert_eq!(job.status, JobStatus::Failed);

    let b = Browser::start(&c.ctl.api_url(), "admin").await;
    b.sign_in("ops", PASSWORD).await;

    // The first error is one click away, and the log downloads whole.
    b.goto(&format!("/jobs/{}", job.job_id)).await;
    b.wait_text("#log-rows", MINUTE, |t| t.contains("PLAY RECAP"))
        .await;
    b.find("#log-first-error").await.click().await.unwrap();
    let note = b
        .wait_text("#log-note", MINUTE, |t| t.starts_with("First error"))
        .await;
    let n: i32 = note.rsplit(' ').next().unwrap().parse().unwrap();
    let first = w
        .lines(&job)
        .await
        .into_iter()
        .find(|l| l.log_level.as_deref() == Some("ERROR"))
        .unwrap();
    assert_eq!(n, first.line_number);
    let text = b
        .js_async(&format!(
            "const done = arguments[arguments.length - 1];\
             fetch('/jobs/{}/log.txt').then(r => r.text()).then(done);",
            job.job_id
        ))
        .await;
    let want: String = w
        .lines(&job)
        .await
        .iter()
        .map(|l| format!("{}\n", l.content))
        .collect();
    assert_eq!(text.as_str().unwrap(), want);

    // On a narrow screen nothing runs off the side.
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(&format!("/jobs/{}", job.job_id)).await;
    b.wait_text("#log-rows", MINUTE, |t| t.contains("PLAY"))
        .await;
    let fits = b
        .js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await;
    assert_eq!(fits, json!(true), "the page is no wider than the screen");
    b.shot("narrow-job").await;
    b.client.set_window_size(1280, 900).await.unwrap();

    // An enrolment token is shown once, with the command to paste.
    b.goto("/agents").await;
    b.find("#t-name")
        .await
        .send_keys("bastion-fra1")
        .await
        .unwrap();
    b.find("#t-labels")
        .await
        .send_keys("dc=fra1")
        .await
        .unwrap();
    b.find("#token-form button").await.click().await.unwrap();
    let token = b
        .wait_text("#token-value", MINUTE, |t| t.starts_with("opt1."))
        .await;
    let cmd = b.wait_text("#enroll-command", MINUTE, |_| true).await;
    assert!(
        cmd.contains("--token-file") && !cmd.contains(&token),
        "{cmd}"
    );
    let enrolled = outpost_tests::procs::Agent::new("fra1");
    let out = enrolled.try_enroll(c.ctl.enroll, &token, &[]);
    assert!(
        out.status.success(),
        "the token from the page enrols an agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.shot("agents-token").await;

    // The same form downloads an install bundle; a bad name is shown next to it instead.
    b.goto("/agents").await;
    b.find("#t-name")
        .await
        .send_keys("bastion-ams1")
        .await
        .unwrap();
    b.find("#t-labels")
        .await
        .send_keys("dc=ams1")
        .await
        .unwrap();
    let action = b
        .find("#bundle-submit")
        .await
        .attr("formaction")
        .await
        .unwrap();
    assert_eq!(action.as_deref(), Some("/agents/bundles"));
    let got = b
        .js_async(
            "const done = arguments[arguments.length - 1];\
             fetch('/agents/bundles', {method: 'POST', body: new URLSearchParams(new FormData(document.querySelector('#token-form')))})\
               .then(r => done([r.status, r.headers.get('content-type'), r.headers.get('content-disposition')]));",
        )
        .await;
    assert_eq!(got[0], json!(201), "{got}");
    assert_eq!(got[1], json!("application/gzip"), "{got}");
    assert!(
        got[2]
            .as_str()
            .unwrap_or("")
            .contains("outpost-agent-bastion-ams1.tar.gz"),
        "{got}"
    );
    b.find("#t-name").await.clear().await.unwrap();
    b.find("#t-name").await.send_keys("../etc").await.unwrap();
    b.find("#bundle-submit").await.click().await.unwrap();
    let err = b.wait_text("p.error", MINUTE, |t| !t.is_empty()).await;
    assert!(err.contains("cannot name"), "{err}");

    // A new version of a playbook gets a new hash; a broken one is refused next to the form.
    b.goto(&format!("/playbooks/{}", failing.id)).await;
    let area = b.find("#content").await;
    area.clear().await.unwrap();
    area.send_keys("not: [a playbook").await.unwrap();
    b.find("#upload button").await.click().await.unwrap();
    b.wait_text("p.error", MINUTE, |t| !t.is_empty()).await;
    let area = b.find("#content").await;
    assert_eq!(
        area.prop("value").await.unwrap().as_deref(),
        Some("not: [a playbook")
    );
    let yaml = "- hosts: all\n  gather_facts: false\n  tasks: []\n";
    area.clear().await.unwrap();
    area.send_keys(yaml).await.unwrap();
    b.find("#upload button").await.click().await.unwrap();
    let hash = b
        .wait_text("#playbook-hash", MINUTE, |t| t != failing.file_hash)
        .await;
    use sha2::Digest;
    assert_eq!(hash, hex::encode(sha2::Sha256::digest(yaml.as_bytes())));

    // Users are added here, and the audit trail shows what happened.
    b.goto("/users").await;
    b.find("#u-name").await.send_keys("newbie").await.unwrap();
    b.find("#u-email")
        .await
        .send_keys("newbie@example.com")
        .await
        .unwrap();
    b.find("#u-pass")
        .await
        .send_keys("first password 1")
        .await
        .unwrap();
    b.find("#user-form button").await.click().await.unwrap();
    b.wait_text("main table", MINUTE, |t| t.contains("newbie@example.com"))
        .await;
    b.goto("/audit?action=LOGIN").await;
    b.wait_text("table.audit", MINUTE, |t| t.contains("LOGIN"))
        .await;
    b.shot("audit").await;
    b.close().await;
}

/// Waits until the project page of `id` says its sync is `want`, reloading it (the page does not
/// follow a sync by itself); a sync that fails instead is shown with its error.
async fn wait_sync_state(b: &Browser, id: i32, want: &str) {
    wait_for("the project's sync to end", 3 * MINUTE, || async {
        b.goto(&format!("/projects/{id}")).await;
        let state = b.text("#sync-state").await?;
        if state == "failed" && want != "failed" {
            panic!(
                "the sync failed: {:?}",
                b.text("#sync-error").await.unwrap_or_default()
            );
        }
        (state == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_sync_from_their_page_and_a_failure_reads_as_text() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    user(w, "vic", Role::Viewer).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let out = tempfile::tempdir().unwrap();
    let repo = TeamRepo::create(out.path().to_str().unwrap());
    let team = admin
        .projects()
        .create(&NewProjectRequest {
            name: "team".into(),
            description: None,
            kind: ProjectKind::Git,
            git_url: Some(format!("file://{}", repo.bare().display())),
            git_ref: Some("main".into()),
            git_key_path: None,
            git_credential: None,
            vault_credentials: None,
            inventory_path: None,
            sync: Some(false),
        })
        .await
        .unwrap();
    // A repository that is not there, at a path that is markup: git's error names the path, so
    // the page must show `<b>` as two characters and a letter, never as bold text.
    let nowhere = tempfile::tempdir().unwrap();
    let gone_url = format!("file://{}/<b>gone</b>.git", nowhere.path().display());
    let gone = admin
        .projects()
        .create(&NewProjectRequest {
            name: "gone".into(),
            description: None,
            kind: ProjectKind::Git,
            git_url: Some(gone_url),
            git_ref: None,
            git_key_path: None,
            git_credential: None,
            vault_credentials: None,
            inventory_path: None,
            sync: Some(true),
        })
        .await
        .unwrap();
    let gone = wait_for(
        "the missing repository's sync to fail",
        2 * MINUTE,
        || async {
            let p = admin.projects().get(gone.id).await.ok()?;
            (p.sync_state == SyncState::Failed).then_some(p)
        },
    )
    .await;
    let error = gone.sync_error.clone().expect("a failed sync says why");
    assert!(error.contains("<b>gone</b>"), "git names the path: {error}");

    // The admin finds the projects from the navigation and syncs the git one from its page.
    let b = Browser::start(&c.ctl.api_url(), "projects").await;
    b.sign_in("ops", PASSWORD).await;
    b.find("nav a[href='/projects']")
        .await
        .click()
        .await
        .unwrap();
    let row = format!("#projects tr[data-project='{}']", team.id);
    let listed = b.wait_text(&row, MINUTE, |_| true).await;
    assert!(listed.contains("never"), "not synced yet: {listed}");
    assert!(
        listed.contains(&repo.bare().display().to_string()),
        "{listed}"
    );
    b.find(&format!("{row} a")).await.click().await.unwrap();
    b.wait_text("#sync-state", MINUTE, |t| t == "never").await;
    b.find("#sync button").await.click().await.unwrap();
    wait_for("the project page after Sync now", MINUTE, || async {
        (b.path().await == format!("/projects/{}", team.id)).then_some(())
    })
    .await;
    wait_sync_state(&b, team.id, "ok").await;
    let head = repo.head();
    let synced = admin.projects().get(team.id).await.unwrap();
    let rev = synced.current_revision.expect("a current revision");
    assert_eq!(rev.commit.as_deref(), Some(head.as_str()));
    let shown = b.text("#current-revision").await.unwrap();
    assert!(
        shown.contains(&head[..12]) && shown.contains(&rev.digest[..12]),
        "the page names the commit {head} and digest {}: {shown}",
        rev.digest
    );
    let titles = b
        .js("return [...document.querySelectorAll('#current-revision code')].map(c => c.title)")
        .await;
    assert_eq!(titles, json!([head, rev.digest]), "the whole ids on hover");
    let revisions = b.text("#revisions tbody").await.unwrap();
    assert!(revisions.contains(&head[..12]), "{revisions}");
    let playbooks = b.text("#project-playbooks").await.unwrap();
    assert!(playbooks.contains("team/site.yml"), "{playbooks}");
    b.shot("synced").await;
    // The playbook's launch link arrives at the launch form with it chosen.
    let site = synced
        .playbooks
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.file_path == "site.yml")
        .expect("site.yml is a playbook of the project");
    b.find(&format!(
        "#project-playbooks tr[data-playbook='{}'] a.launch",
        site.id
    ))
    .await
    .click()
    .await
    .unwrap();
    wait_for("the launch form", MINUTE, || async {
        b.path().await.starts_with("/jobs/new").then_some(())
    })
    .await;
    let chosen = b
        .js("return document.querySelector('#playbook').value")
        .await;
    assert_eq!(chosen, json!(site.id.to_string()));

    // The failed sync's error is shown literally, on the list and on the project's page.
    b.goto("/projects").await;
    let listed_error = b
        .js(&format!(
            "return document.querySelector(\"#projects tr[data-project='{}'] .sync-error\").textContent",
            gone.id
        ))
        .await;
    assert_eq!(listed_error, json!(error));
    b.shot("list").await;
    b.goto(&format!("/projects/{}", gone.id)).await;
    b.wait_text("#sync-state", MINUTE, |t| t == "failed").await;
    let page_error = b
        .js("return document.getElementById('sync-error').textContent")
        .await;
    assert_eq!(page_error, json!(error));
    let made = b
        .js("return document.querySelectorAll('main b').length")
        .await;
    assert_eq!(made, json!(0), "no element was made from the error");
    b.shot("failed").await;
    b.find("form[action='/logout'] button")
        .await
        .click()
        .await
        .unwrap();
    wait_for("the sign-in page", MINUTE, || async {
        b.path().await.starts_with("/login").then_some(())
    })
    .await;

    // A viewer reads the project but has no Sync button, and a sync sent with the page's own
    // CSRF token (so that only the role can refuse it) is refused.
    b.sign_in("vic", PASSWORD).await;
    b.goto(&format!("/projects/{}", team.id)).await;
    b.wait_text("#sync-state", MINUTE, |t| t == "ok").await;
    assert!(
        b.find_all("#sync").await.is_empty(),
        "a viewer has no Sync button"
    );
    assert!(b.find_all("a.launch").await.is_empty(), "nor launch links");
    b.shot("viewer").await;
    let forged = b
        .js_async(&format!(
            "const done = arguments[arguments.length - 1];\
             const f = new URLSearchParams({{_csrf: document.querySelector('input[name=_csrf]').value}});\
             fetch('/projects/{}/sync', {{method: 'POST', body: f}}).then(r => r.text().then(t => done([r.status, t])));",
            team.id
        ))
        .await;
    assert_eq!(forged[0], json!(403), "{forged}");
    assert!(
        forged[1]
            .as_str()
            .unwrap_or_default()
            .contains("This needs a higher role than viewer: ask an admin."),
        "refused for the role: {forged}"
    );
    let after = admin.projects().get(team.id).await.unwrap();
    assert_eq!(after.sync_state, SyncState::Ok, "no sync was started");
    assert_eq!(after.sync_started_at, synced.sync_started_at);
    b.close().await;
}

/// The page's HTML as the browser holds it now.
async fn source(b: &Browser) -> String {
    b.client.source().await.expect("page source")
}

/// An admin stores a become password through the form and replaces it; no page shows it back —
/// the listing, the credential's page, nor the form shown again after a mistake (whose secret
/// field comes back empty). A credential in use cannot be deleted, and the page says why;
/// viewers and operators are refused the pages and never see the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_written_once_and_never_shown_back() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    let web1 = w.local_server("web1", json!({}), "dev").await;
    user(w, "vic", Role::Viewer).await;
    user(w, "olga", Role::Operator).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let secret = format!("sudo-{}", uuid::Uuid::new_v4().simple());
    let replaced = format!("sudo-{}", uuid::Uuid::new_v4().simple());
    let no_secret = |html: &str, page: &str| {
        for s in [&secret, &replaced] {
            assert!(!html.contains(s.as_str()), "{page} shows a secret");
        }
    };

    let b = Browser::start(&c.ctl.api_url(), "credentials").await;
    b.sign_in("ops", PASSWORD).await;
    b.find("nav a[href='/admin/credentials']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_text("main", MINUTE, |t| t.contains("No credential yet"))
        .await;
    b.find("#c-name").await.send_keys("sudo").await.unwrap();
    b.find("#c-kind")
        .await
        .select_by_value("become_password")
        .await
        .unwrap();
    b.find("#c-password")
        .await
        .send_keys(&secret)
        .await
        .unwrap();
    b.find("#credential-form button")
        .await
        .click()
        .await
        .unwrap();
    let stored = wait_for("the new credential's page", MINUTE, || async {
        let p = b.path().await;
        p.strip_prefix("/admin/credentials/")?.parse::<i32>().ok()
    })
    .await;
    let view = admin.credentials().get(stored).await.unwrap();
    assert_eq!(
        (view.name.as_str(), view.kind),
        ("sudo", outpost_api::CredentialKind::BecomePassword)
    );
    assert_eq!(
        b.text("#credential-kind").await.as_deref(),
        Some("Become password")
    );
    assert!(b.text("#usage").await.unwrap().contains("Used nowhere"));
    no_secret(&source(&b).await, "the credential's page");
    b.shot("stored").await;

    // A mistake (a vault id ansible cannot take) shows the form again: what was typed stays,
    // except the secret.
    b.goto("/admin/credentials").await;
    b.find("#c-name").await.send_keys("vault").await.unwrap();
    b.find("#c-kind")
        .await
        .select_by_value("vault_password")
        .await
        .unwrap();
    b.find("#c-vault-id")
        .await
        .send_keys("no spaces please")
        .await
        .unwrap();
    b.find("#c-password")
        .await
        .send_keys(&secret)
        .await
        .unwrap();
    b.find("#credential-form button")
        .await
        .click()
        .await
        .unwrap();
    let err = b
        .wait_text("#credential-error", MINUTE, |t| !t.is_empty())
        .await;
    assert!(err.contains("vault_id"), "{err}");
    no_secret(&source(&b).await, "the form shown again");
    let value = |css: &'static str| {
        let b = &b;
        async move { b.find(css).await.prop("value").await.unwrap() }
    };
    assert_eq!(value("#c-password").await.as_deref(), Some(""));
    assert_eq!(value("#c-name").await.as_deref(), Some("vault"));
    assert_eq!(value("#c-kind").await.as_deref(), Some("vault_password"));
    assert_eq!(
        value("#c-vault-id").await.as_deref(),
        Some("no spaces please")
    );
    b.shot("form-again").await;
    let all = admin.credentials().list(&Default::default()).await.unwrap();
    assert_eq!(all.total, 1, "nothing stored by the mistake");

    // Attached to a server, it is listed as used, and cannot be deleted: the page says why.
    admin
        .servers()
        .update(
            web1.id.0,
            &outpost_api::ServerPatchRequest {
                become_credential: Some("sudo".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    b.goto("/admin/credentials").await;
    let row = b
        .wait_text(
            &format!("#credentials tr[data-credential='{stored}']"),
            MINUTE,
            |_| true,
        )
        .await;
    assert!(row.contains("sudo") && row.contains("1 server"), "{row}");
    no_secret(&source(&b).await, "the listing");
    b.goto(&format!("/admin/credentials/{stored}")).await;
    let usage = b.wait_text("#usage", MINUTE, |_| true).await;
    assert!(usage.contains("Become password of server web1"), "{usage}");
    let (status, _, text) = post_form(
        &b,
        &format!("/admin/credentials/{stored}/delete"),
        &json!({}),
        None,
    )
    .await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("detach it first"), "{text}");
    no_secret(&text, "the refused delete");
    assert!(admin.credentials().get(stored).await.is_ok(), "still there");
    // A project names its vault credential, linked for the admin.
    let vault = admin
        .credentials()
        .create(&outpost_api::NewCredentialRequest {
            name: "vault-prod".into(),
            kind: outpost_api::CredentialKind::VaultPassword,
            description: None,
            vault_id: Some("prod".into()),
            secret: secret.clone(),
            passphrase: None,
        })
        .await
        .unwrap();
    let site = admin
        .projects()
        .create(&NewProjectRequest {
            name: "site".into(),
            description: None,
            kind: ProjectKind::Archive,
            git_url: None,
            git_ref: None,
            git_key_path: None,
            git_credential: None,
            vault_credentials: Some(vec!["vault-prod".into()]),
            inventory_path: None,
            sync: None,
        })
        .await
        .unwrap();
    b.goto(&format!("/projects/{}", site.id)).await;
    b.find("#vault-credentials a").await.click().await.unwrap();
    let usage = b.wait_text("#usage", MINUTE, |_| true).await;
    assert_eq!(b.path().await, format!("/admin/credentials/{}", vault.id));
    assert!(usage.contains("Vault password of project site"), "{usage}");
    no_secret(&source(&b).await, "the vault credential's page");
    b.goto(&format!("/admin/credentials/{stored}")).await;

    // The secret is replaced from the credential's page, and still not shown.
    b.find("#r-password")
        .await
        .send_keys(&replaced)
        .await
        .unwrap();
    b.find("#replace button").await.click().await.unwrap();
    wait_for("the replaced secret's change time", MINUTE, || async {
        let now = admin.credentials().get(stored).await.ok()?;
        (now.updated_at > view.updated_at).then_some(())
    })
    .await;
    b.wait_text("#usage", MINUTE, |_| true).await;
    assert_eq!(value("#r-password").await.as_deref(), Some(""));
    no_secret(&source(&b).await, "the credential's page after a replace");
    b.shot("replaced").await;

    // Viewers and operators see no link, and are refused the pages.
    for who in ["vic", "olga"] {
        // The refusal page has no navigation: sign out from the dashboard.
        b.goto("/").await;
        b.find("form[action='/logout'] button")
            .await
            .click()
            .await
            .unwrap();
        wait_for("the sign-in page", MINUTE, || async {
            b.path().await.starts_with("/login").then_some(())
        })
        .await;
        b.sign_in(who, PASSWORD).await;
        assert!(
            b.find_all("nav a[href='/admin/credentials']")
                .await
                .is_empty(),
            "{who} has no link to the credentials"
        );
        for page in [
            "/admin/credentials".to_owned(),
            format!("/admin/credentials/{stored}"),
        ] {
            let got = b
                .js_async(&format!(
                    "const done = arguments[arguments.length - 1];\
                     fetch({}).then(r => r.text().then(t => done([r.status, t])));",
                    json!(page)
                ))
                .await;
            assert_eq!(got[0], json!(403), "{who} {page}: {got}");
            assert!(
                !got[1].as_str().unwrap_or_default().contains("sudo"),
                "{who} {page}"
            );
        }
        b.goto("/admin/credentials").await;
        assert_eq!(b.wait_text("h1", MINUTE, |_| true).await, "Not allowed");
    }
    b.shot("refused").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_page_sends_a_test_and_shows_the_delivery_log() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    user(&c.world, "vic", Role::Viewer).await;
    // Nothing listens on port 1: every attempt fails, and the log says why.
    let secret = format!("hook-{}", uuid::Uuid::new_v4().simple());
    let name = "<b>pager</b> & co";
    admin
        .notifications()
        .create_channel(&outpost_api::NewChannelRequest {
            name: name.into(),
            kind: outpost_api::ChannelKind::Webhook,
            url: Some("http://127.0.0.1:1/hook/PATHSECRET".into()),
            email: None,
            on_call: true,
            digest: false,
            secret: Some(secret.clone()),
        })
        .await
        .expect("channel");

    let b = Browser::start(&c.ctl.api_url(), "notifications").await;
    b.sign_in("ops", PASSWORD).await;
    b.find("nav a[href='/admin/notifications']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_text("main", MINUTE, |t| {
        t.contains("Nothing sent yet") && t.contains("default routing")
    })
    .await;
    // The name is text, not markup.
    assert_eq!(b.find_all("main td b").await.len(), 0);
    b.find("tr[data-channel] button")
        .await
        .click()
        .await
        .unwrap();
    let row = b
        .wait_text("#deliveries tbody tr", MINUTE, |t| t.contains("test"))
        .await;
    assert!(row.contains(name), "{row}");
    // The page is not live: reloaded until the worker's failed attempt is logged.
    let row = wait_for("the failed attempt in the log", MINUTE, || async {
        b.goto("/admin/notifications").await;
        let t = b.text("#deliveries tbody tr").await?;
        (t.contains("refused") || t.contains("connect")).then_some(t)
    })
    .await;
    assert!(row.contains("pending"), "{row}");
    let html = source(&b).await;
    assert!(
        !html.contains(&secret) && !html.contains("PATHSECRET"),
        "the page shows a secret"
    );
    b.shot("delivery-log").await;
    b.close().await;

    // A viewer has no such page.
    let b = Browser::start(&c.ctl.api_url(), "notifications-viewer").await;
    b.sign_in("vic", PASSWORD).await;
    assert!(b
        .find_all("nav a[href='/admin/notifications']")
        .await
        .is_empty());
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_shows_its_next_five_runs_before_it_is_saved() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    w.local_server("cron-1", json!({}), "production").await;
    let pb = w.playbook("cron", "- hosts: all\n  tasks: []\n").await;
    w.store
        .create_template(
            &outpost_controller::store::templates::NewTemplate::of_playbook(
                "cron",
                pb.id,
                &["cron-1"],
            ),
            &outpost_controller::store::audit::Actor::user(w.admin.id),
        )
        .await
        .unwrap();
    user(w, "vic", Role::Viewer).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;

    let b = Browser::start(&c.ctl.api_url(), "schedules").await;
    b.sign_in("ops", PASSWORD).await;
    b.find("nav a[href='/schedules']")
        .await
        .click()
        .await
        .unwrap();
    b.wait_text("main", MINUTE, |t| t.contains("No schedule yet"))
        .await;
    b.find("#s-name").await.send_keys("nightly").await.unwrap();
    b.find("#s-template").await.send_keys("cron").await.unwrap();
    b.find("#s-cron")
        .await
        .send_keys("0 0 30 2 *")
        .await
        .unwrap();
    // No save button before a preview.
    assert!(b.find_all("#schedule-save").await.is_empty());
    b.find("#schedule-preview-button")
        .await
        .click()
        .await
        .unwrap();
    b.wait_text("#schedule-error", MINUTE, |t| t.contains("never fires"))
        .await;
    assert!(b.find_all("#schedule-save").await.is_empty());
    let cron = b.find("#s-cron").await;
    cron.clear().await.unwrap();
    cron.send_keys("30 2 * * *").await.unwrap();
    let zone = b.find("#s-timezone").await;
    zone.clear().await.unwrap();
    zone.send_keys("Europe/Berlin").await.unwrap();
    b.find("#schedule-preview-button")
        .await
        .click()
        .await
        .unwrap();
    b.wait_text("#schedule-preview", MINUTE, |t| t.contains("02:30:00"))
        .await;
    let runs = b.find_all("#schedule-preview li").await;
    assert_eq!(runs.len(), 5);
    // Previewing saved nothing; the form kept what was typed.
    assert!(admin
        .schedules()
        .list(&outpost_api::PageQuery {
            limit: None,
            offset: None
        })
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        b.find("#s-name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("nightly")
    );
    b.shot("preview").await;
    b.find("#schedule-save").await.click().await.unwrap();
    let id = wait_for("the schedule's page", MINUTE, || async {
        b.path()
            .await
            .strip_prefix("/schedules/")?
            .parse::<i32>()
            .ok()
    })
    .await;
    let saved = admin.schedules().get(&id.to_string()).await.unwrap();
    assert_eq!(
        (saved.cron.as_str(), saved.timezone.as_str()),
        ("30 2 * * *", "Europe/Berlin")
    );
    assert!(saved.next_run_at.is_some());
    b.goto("/schedules").await;
    b.find("#b-name").await.send_keys("freeze").await.unwrap();
    b.find("#b-env")
        .await
        .send_keys("production")
        .await
        .unwrap();
    b.find("#b-from")
        .await
        .send_keys("Fri 16:00")
        .await
        .unwrap();
    b.find("#b-to").await.send_keys("Mon 08:00").await.unwrap();
    b.find("#blackout-form button").await.click().await.unwrap();
    b.wait_text("#blackouts", MINUTE, |t| {
        t.contains("Fri 16:00 – Mon 08:00")
    })
    .await;
    b.close().await;

    // A viewer sees the schedules and the windows, not the forms.
    let v = Browser::start(&c.ctl.api_url(), "schedules-viewer").await;
    v.sign_in("vic", PASSWORD).await;
    v.goto("/schedules").await;
    v.wait_text("#schedules", MINUTE, |t| t.contains("nightly"))
        .await;
    assert!(v.find_all("#schedule-form").await.is_empty());
    assert!(v.find_all("#blackout-form").await.is_empty());
    v.close().await;
}

/// A playbook name that, were it made into an element, would set `window.__alerted`.
const MARKUP_PLAYBOOK: &str = "<img src=x onerror=window.__alerted=5>";

/// Rewrites a job into a past one: its status, when it was created (`hours_ago`) and how long
/// it ran (`None`: it never started), straight in the database.
async fn make_past(
    c: &Cluster,
    job: &outpost_controller::model::Job,
    status: JobStatus,
    hours_ago: i64,
    ran_secs: Option<i64>,
) {
    let created = chrono::Utc::now() - chrono::Duration::hours(hours_ago);
    let fmt = |t: chrono::DateTime<chrono::Utc>| format!("'{}'", t.format("%Y-%m-%d %H:%M:%S"));
    let (started, completed) = match ran_secs {
        Some(s) => (
            fmt(created + chrono::Duration::seconds(1)),
            fmt(created + chrono::Duration::seconds(1 + s)),
        ),
        None => ("NULL".to_owned(), fmt(created)),
    };
    c.db.exec(&format!(
        "UPDATE jobs SET status = '{}', created_at = {}, started_at = {started}, completed_at = {completed} WHERE id = {}",
        status.as_str(),
        fmt(created),
        job.id.0
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_last_week_as_charts() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    let fra_a = w
        .local_server("fra-a", json!({"dc": "fra1"}), "production")
        .await;
    let fra_b = w
        .local_server("fra-b", json!({"dc": "fra1"}), "production")
        .await;
    let ams = w
        .local_server("ams-a", json!({"dc": "ams2"}), "production")
        .await;
    let yaml = "- hosts: all\n  gather_facts: false\n  tasks: []\n";
    let deploy = w.playbook("deploy", yaml).await;
    let evil = w.playbook(MARKUP_PLAYBOOK, yaml).await;
    // No agent is connected, so nothing runs these: they are made into a week of history.
    // (playbook, server, status, hours ago, seconds it ran)
    let history = [
        (&deploy, &fra_a, JobStatus::Success, 1, Some(30)),
        (&deploy, &fra_b, JobStatus::Success, 1, Some(40)),
        (&evil, &ams, JobStatus::Failed, 1, Some(5)),
        (&deploy, &fra_a, JobStatus::Failed, 5, Some(60)),
        (&evil, &ams, JobStatus::Success, 5, Some(8)),
        (&deploy, &fra_b, JobStatus::Success, 30, Some(50)),
        (&deploy, &ams, JobStatus::Cancelled, 100, None),
        // Older than a week: in no chart.
        (&deploy, &fra_a, JobStatus::Success, 24 * 10, Some(500)),
    ];
    for (pb, server, status, ago, ran) in history {
        let job = w.launch(pb, server).await;
        make_past(&c, &job, status, ago, ran).await;
    }

    let b = Browser::start(&c.ctl.api_url(), "charts").await;
    b.sign_in("ops", PASSWORD).await;
    b.wait_text("#chart-jobs-24h", MINUTE, |_| true).await;
    let count = |css: &str| {
        let css = css.to_owned();
        let b = &b;
        async move {
            b.js(&format!(
                "return document.querySelectorAll(\"{css}\").length"
            ))
            .await
            .as_u64()
            .unwrap_or(u64::MAX)
        }
    };
    // 24 hours: two hours with jobs, each with a success and a failure segment.
    assert_eq!(count("#chart-jobs-24h svg g.col").await, 2);
    assert_eq!(count("#chart-jobs-24h svg rect.seg").await, 4);
    assert_eq!(count("#chart-jobs-24h svg rect.seg.st-failed").await, 2);
    let total = b
        .js("return document.getElementById('chart-jobs-24h').dataset.total")
        .await;
    assert_eq!(total, json!("5"));
    // 7 days: two more hours (one success 30 h ago, one cancelled 100 h ago); not the old job.
    assert_eq!(count("#chart-jobs-7d svg g.col").await, 4);
    assert_eq!(count("#chart-jobs-7d svg rect.seg").await, 6);
    assert_eq!(count("#chart-jobs-7d svg rect.seg.st-cancelled").await, 1);
    let total = b
        .js("return document.getElementById('chart-jobs-7d').dataset.total")
        .await;
    assert_eq!(total, json!("7"));
    let legend = b
        .js("return [...document.querySelectorAll('#chart-jobs-7d .legend li')].map(l => l.textContent)")
        .await;
    assert_eq!(
        legend,
        json!([
            "success 4",
            "failed 2",
            "cancelled 1",
            "running 0",
            "pending 0"
        ])
    );
    // A bar says what it is on hover; the picture is described for screen readers.
    let tip = b
        .js("return document.querySelector('#chart-jobs-24h g.col title').textContent")
        .await;
    assert!(
        tip.as_str()
            .unwrap_or_default()
            .contains("1 success, 1 failed"),
        "{tip}"
    );
    let desc = b
        .js("return document.getElementById('chart-jobs-24h-desc').textContent")
        .await;
    assert!(
        desc.as_str()
            .unwrap_or_default()
            .starts_with("5 jobs created in the last 24 hours: 3 success, 2 failed."),
        "{desc}"
    );

    // Success rate per datacenter: ams2 1 of 2, fra1 3 of 4 (cancelled jobs do not count).
    let rows = b
        .js("return [...document.querySelectorAll('#chart-dc-rate g.row')].map(g => [g.dataset.name, g.querySelector('text.note').textContent, g.getAttribute('class')])")
        .await;
    assert_eq!(
        rows,
        json!([
            ["ams2", "50 % (1 of 2)", "row poor"],
            ["fra1", "75 % (3 of 4)", "row poor"]
        ])
    );
    let widths = b
        .js("return [...document.querySelectorAll('#chart-dc-rate rect.bar')].map(r => r.getBBox().width)")
        .await;
    let w: Vec<f64> = widths
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        w.len() == 2 && (w[1] / w[0] - 1.5).abs() < 0.02,
        "75 % is 1.5 × 50 %: {w:?}"
    );

    // Duration per playbook, the most run first: p50 and p95 of the sample.
    let rows = b
        .js("return [...document.querySelectorAll('#chart-durations g.row')].map(g => [g.dataset.name, g.querySelector('text.note').textContent, g.querySelectorAll('rect.bar').length])")
        .await;
    assert_eq!(
        rows,
        json!([
            ["deploy", "p50 40 s · p95 1 min · 4 runs", 2],
            [MARKUP_PLAYBOOK, "p50 5 s · p95 8 s · 2 runs", 2]
        ])
    );
    // The playbook's name is text in the picture: no element made of it, no script run.
    assert_eq!(count("#dashboard img").await, 0);
    let alerted = b.js("return typeof window.__alerted").await;
    assert_eq!(alerted, json!("undefined"));
    let shot = b.shot("dashboard-charts").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // The live dashboard replaces its figures every few seconds: the charts stay.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(count("#chart-jobs-7d svg g.col").await, 4);
    assert_eq!(count("#chart-durations g.row").await, 2);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_rollout_is_approved_from_its_run_page_and_followed_live() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let _agent = c.agent(
        "bastion",
        &["dc=local"],
        &AgentOpts {
            capacity: 4,
            ..AgentOpts::default()
        },
    );
    let w = &c.world;
    for name in ["web1", "web2", "web3"] {
        w.local_server(name, json!({"dc": "local"}), "staging")
            .await;
    }
    w.playbook(
        "hello",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hello\n",
    )
    .await;
    user(w, "olga", Role::Operator).await;
    user(w, "vic", Role::Viewer).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    // The operator launches from the form: a canary of one server, then the other two after
    // an operator approves; a launch on several servers lands on its run's page.
    let b = Browser::start(&c.ctl.api_url(), "run").await;
    b.sign_in("olga", PASSWORD).await;
    b.goto("/jobs/new").await;
    b.js("document.querySelectorAll('#servers option').forEach(o => { o.selected = true; }); return 0")
        .await;
    b.find("#rollout summary").await.click().await.unwrap();
    b.find("#canary").await.send_keys("one").await.unwrap();
    b.find("#pause").await.click().await.unwrap();
    b.find("form#launch button.primary")
        .await
        .click()
        .await
        .unwrap();
    let err = b.wait_text("#err-rollout", MINUTE, |t| !t.is_empty()).await;
    assert!(err.contains("'one' is not a number"), "{err}");
    let canary = b.find("#canary").await;
    canary.clear().await.unwrap();
    canary.send_keys("1").await.unwrap();
    let pause = b
        .js("return document.getElementById('pause').checked")
        .await;
    assert_eq!(pause, json!(true), "what was chosen is kept");
    b.find("form#launch button.primary")
        .await
        .click()
        .await
        .unwrap();
    let run = wait_for("the run's page", MINUTE, || async {
        let p = b.path().await;
        let id = p.strip_prefix("/runs/")?.to_owned();
        (id.len() == 36).then_some(id)
    })
    .await;
    wait_for(
        "the canary done and the next wave waiting",
        2 * MINUTE,
        || async {
            let d = admin.runs().get(&run).await.ok()?;
            (d.run.awaiting_approval && d.run.counts.success == 1).then_some(())
        },
    )
    .await;
    assert_eq!(admin.runs().get(&run).await.unwrap().run.counts.total, 3);
    b.find("form[action='/logout'] button")
        .await
        .click()
        .await
        .unwrap();
    wait_for("the sign-in page", MINUTE, || async {
        b.path().await.starts_with("/login").then_some(())
    })
    .await;

    // A viewer sees the run, its waves and no button; a forged approval is refused.
    b.sign_in("vic", PASSWORD).await;
    b.find("nav a[href='/runs']").await.click().await.unwrap();
    b.find(&format!("tr[data-run='{run}'] a"))
        .await
        .click()
        .await
        .unwrap();
    b.wait_text("#run-awaiting", MINUTE, |t| t.contains("Wave 2 of 2 waits"))
        .await;
    assert!(
        b.find_all("#approve").await.is_empty(),
        "a viewer has no approve button"
    );
    assert!(
        b.find_all("#cancel-run").await.is_empty(),
        "nor a cancel button"
    );
    let forged = b
        .js_async(&format!(
            "const done = arguments[arguments.length - 1];\
             const f = new URLSearchParams({{_csrf: document.querySelector('input[name=_csrf]').value}});\
             fetch('/runs/{run}/approve', {{method: 'POST', body: f}}).then(r => done(r.status));"
        ))
        .await;
    assert_eq!(forged, json!(403));
    b.shot("viewer-run").await;
    let d = admin.runs().get(&run).await.unwrap();
    assert!(
        d.run.awaiting_approval,
        "still waiting after the viewer's try"
    );
    b.find("form[action='/logout'] button")
        .await
        .click()
        .await
        .unwrap();
    wait_for("the sign-in page", MINUTE, || async {
        b.path().await.starts_with("/login").then_some(())
    })
    .await;

    // The operator: one wave done, one waiting, in the bars; approve, and the page follows.
    b.sign_in("olga", PASSWORD).await;
    b.goto(&format!("/runs/{run}")).await;
    b.wait_text("#run-status", MINUTE, |t| t == "running").await;
    let waves = b
        .js("return [...document.querySelectorAll('#run-waves g.row')].map(g => [g.dataset.name, g.dataset.total, [...g.querySelectorAll('rect.seg')].map(r => r.dataset.series + ':' + r.dataset.value)])")
        .await;
    assert_eq!(
        waves,
        json!([
            ["wave 1", "1", ["success:1"]],
            ["wave 2", "2", ["pending:2"]]
        ])
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#run-datacenters g.row').length")
            .await,
        json!(1)
    );
    assert_eq!(
        b.text("#run-counts").await.as_deref(),
        Some("1 of 3 done: 1 success, 2 pending")
    );
    b.shot("run-waiting").await;
    b.find("#approve").await.click().await.unwrap();
    b.wait_text("#run-status", 2 * MINUTE, |t| t == "succeeded")
        .await;
    let waves = b
        .js("return [...document.querySelectorAll('#run-waves g.row')].map(g => [g.dataset.name, [...g.querySelectorAll('rect.seg')].map(r => r.dataset.series + ':' + r.dataset.value)])")
        .await;
    assert_eq!(
        waves,
        json!([["wave 1", ["success:1"]], ["wave 2", ["success:2"]]])
    );
    assert_eq!(
        b.text("#run-counts").await.as_deref(),
        Some("3 of 3 done: 3 success")
    );
    assert!(
        b.find_all("#approve").await.is_empty(),
        "nothing left to approve"
    );
    assert_eq!(b.find_all("#run-jobs tbody tr").await.len(), 3);
    b.shot("run-done").await;
    // A job's page links back to its run.
    b.find("#run-jobs tbody tr a").await.click().await.unwrap();
    job_on_page(&b).await;
    b.find("#job-run").await.click().await.unwrap();
    wait_for("the run page again", MINUTE, || async {
        (b.path().await == format!("/runs/{run}")).then_some(())
    })
    .await;
    let approved = w
        .store
        .list_audit(
            &outpost_controller::store::audit::AuditFilter::default(),
            outpost_controller::model::Paging::new(1000, 0),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|a| a.action.contains("APPROVE"))
        .count();
    assert_eq!(approved, 1, "the approval is audited once");

    // A run whose jobs failed: relaunched for its failed servers from its page, the browser
    // lands on the new run, which names the one it relaunched.
    w.playbook(
        "broken",
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.fail:\n        msg: broken\n",
    )
    .await;
    let launched: serde_json::Value = admin
        .post(
            "/api/v1/jobs",
            &json!({"playbook": "broken", "servers": ["web1", "web2"]}),
        )
        .await
        .expect("launch");
    let failed_run = launched["run"].as_str().expect("a run id").to_owned();
    b.goto(&format!("/runs/{failed_run}")).await;
    b.wait_text("#run-status", 2 * MINUTE, |t| t == "failed")
        .await;
    b.wait_text("#relaunch-failed", MINUTE, |t| t == "Relaunch the 2 failed")
        .await;
    // Loaded again once ended: which task failed on how many servers.
    b.goto(&format!("/runs/{failed_run}")).await;
    let row = b
        .text("#run-failed-tasks tbody tr[data-status='failed']")
        .await
        .expect("a failed task's row");
    assert!(
        row.contains("ansible.builtin.fail") && row.trim_end().ends_with('2'),
        "{row}"
    );
    b.shot("run-failed").await;
    b.find("#relaunch-failed").await.click().await.unwrap();
    let again = wait_for("the relaunched run's page", MINUTE, || async {
        let p = b.path().await;
        let id = p.strip_prefix("/runs/")?.to_owned();
        (id.len() == 36 && id != failed_run).then_some(id)
    })
    .await;
    let href = b
        .js("return document.getElementById('run-relaunch-of').getAttribute('href')")
        .await;
    assert_eq!(href, json!(format!("/runs/{failed_run}")));
    let d = admin.runs().get(&again).await.unwrap();
    assert_eq!(d.run.counts.total, 2);
    assert_eq!(d.run.relaunch_of.as_deref(), Some(failed_run.as_str()));
    b.wait_text("#run-status", 2 * MINUTE, |t| t == "failed")
        .await;
    b.close().await;
}
