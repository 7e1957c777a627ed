//! The API against its own OpenAPI document, fuzzed by schemathesis: a real controller (on
//! SQLite), an admin's bearer token, and every operation but logout given generated valid and
//! invalid input, alone and in chains (stateful). Each answer must not be a 5xx, must be a
//! status the document lists for that operation, with the content type and schema listed for
//! it (refusals included: `{error, message}`); input the document calls invalid must be
//! refused, and so must a request without the token (see [`fuzz`] for the two checks left out).
//!
//! `bash scripts/test` installs schemathesis (`python3 -m pip install schemathesis`); without
//! it this test fails with that hint.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use outpost_api::{LoginResponse, Whoami};
use outpost_controller::lifecycle::Lifecycle;
use outpost_controller::model::{Paging, Role};
use outpost_controller::store::audit::{Actor, AuditFilter};
use outpost_tests::api::{user, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::ControllerOpts;
use outpost_tests::{output_text, Backend};

/// The schemathesis command on PATH (`schemathesis`, or its short name `st`).
fn schemathesis() -> String {
    for name in ["schemathesis", "st"] {
        let ok = Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success() && output_text(&o).contains("schemathesis"));
        if ok {
            return name.to_owned();
        }
    }
    panic!(
        "schemathesis is not on PATH: install it with `python3 -m pip install schemathesis` \
         (bash scripts/test does)"
    );
}

/// A schemathesis hook (Python) that keeps the run from demoting or deactivating the account
/// whose token signs its requests: schemathesis reuses values it saw in responses (the account's
/// id is in `GET /auth/whoami`'s), so `PATCH /users/{id}` soon lands on it, and every later
/// answer would then be a documented 403 or 401: a run that passes having tested little. Those
/// calls go to another admin's account instead, which the run may change as it likes.
const HOOKS: &str = r#"
import os

import schemathesis

OWN = int(os.environ["OUTPOST_FUZZ_USER_ID"])
OTHER = int(os.environ["OUTPOST_FUZZ_OTHER_ID"])


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.method.upper() != "PATCH" or case.operation.path != "/api/v1/users/{id}":
        return
    try:
        # Read as the controller does ("+12" and " 12" are 12 to it too).
        same = int(str(case.path_parameters.get("id")).strip()) == OWN
    except ValueError:
        return
    if same:
        case.path_parameters["id"] = OTHER
"#;

/// Runs schemathesis against the controller and returns (success, everything it printed).
fn fuzz(base: &str, token: &str, ca: &Path, work: &Path, own: i32, other: i32) -> (bool, String) {
    let hooks = work.join("outpost_hooks.py");
    std::fs::write(&hooks, HOOKS).expect("write the hooks");
    let mut cmd = Command::new(schemathesis());
    cmd.env("SCHEMATHESIS_HOOKS", &hooks)
        .env("OUTPOST_FUZZ_USER_ID", own.to_string())
        .env("OUTPOST_FUZZ_OTHER_ID", other.to_string())
        .current_dir(work) // its example database and reports stay out of the repository
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(["--url", base])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .arg("--tls-verify")
        .arg(ca)
        // Every check but two. positive_data_acceptance expects every request the schema
        // allows to succeed, but the API's rules say more than a JSON schema can (a playbook
        // is YAML with plays, a password policy, an email's shape, a ttl's range): such a
        // request is refused with a documented 422. use_after_free expects a deleted resource
        // to be gone, but deleting a server or playbook that jobs refer to deactivates it
        // instead (the answer says `"outcome": "deactivated"`), and it can still be read.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,use_after_free",
        ])
        // Bounded: at most 20 examples per operation and phase, and 90 s in all (fuzzing and
        // stateful runs repeat until the time is spent). The request timeout leaves room for a
        // loaded machine (a timeout is a failure); a live log stream of a job the run launched
        // itself (no agent runs it) is read until then, and cut.
        .args(["--max-examples", "20", "--workers", "2"])
        .args(["--request-timeout", "30", "--max-time", "90"])
        // Ends the token the run signs every request with; it takes no input to fuzz.
        .args(["--exclude-path", "/api/v1/auth/logout"])
        .args(["--generation-database", "none", "--no-color"])
        .env("NO_COLOR", "1");
    if let Ok(seed) = std::env::var("OUTPOST_FUZZ_SEED") {
        cmd.args(["--seed", &seed]); // to replay a failing run: its seed is in its output
    }
    let out = cmd.output().expect("run schemathesis");
    (out.status.success(), output_text(&out))
}

/// Whether a failed run found nothing about the API and only schemathesis itself broke (its
/// "Runtime Error" entries, seen from hypothesis's source introspection): such a run says
/// nothing either way and is run again, once.
fn only_tool_errors(text: &str) -> bool {
    !text.contains("=== FAILURES ===") && text.contains("Runtime Error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_its_openapi_document_says() {
    let started = Instant::now();
    // Install bundles carry the agent binary: a small stand-in keeps each one milliseconds of
    // work, where the 30 MB debug build would spend the run's time budget gzipping.
    let stand_in = tempfile::tempdir().expect("dir");
    let agent = stand_in.path().join("outpost-agent");
    std::fs::write(&agent, "#!/bin/sh\necho stand-in agent\n").expect("write the stand-in");
    let opts = ControllerOpts {
        // The controller closes a kept-alive connection with no next request within the
        // header timeout (10 s). schemathesis's pool reuses such a connection after a pause
        // (it generates slowly on a loaded machine, and moves between phases), and its HTTP
        // library retries a GET that finds the connection closed but not a POST: the run saw
        // "EOF occurred in violation of protocol" on POSTs that the API never received. The
        // defence against slow clients is tested elsewhere (tests/tests/edges.rs).
        extra: vec![
            "--agent-binary".into(),
            agent.display().to_string(),
            "--api-header-timeout-secs".into(),
            "300".into(),
        ],
        ..ControllerOpts::default()
    };
    let c = Cluster::start(Backend::Sqlite, opts).await;
    let me = user(&c.world, "fuzzer", Role::Admin).await;
    // Something for the listings to show and the fuzzer's ids to miss or hit.
    let server = c
        .world
        .local_server("web1", serde_json::json!({"dc": "local"}), "test")
        .await;
    let playbook = c
        .world
        .playbook("ping", "- hosts: all\n  tasks: []\n")
        .await;
    // A job for the listings and reads to show, cancelled: a final job's live log replays and
    // ends at once, where a pending one's (no agent runs it) would hold a request open until
    // its timeout.
    let job = c.world.launch(&playbook, &server).await;
    Lifecycle::new(c.world.store.clone())
        .cancel(job.id, &Actor::system())
        .await
        .expect("cancel the seeded job");

    let anon = c.ctl.api();
    let login: LoginResponse = anon
        .post(
            "/api/v1/auth/login",
            &serde_json::json!({"username": "fuzzer", "password": PASSWORD}),
        )
        .await
        .expect("sign in as the fuzzer");
    let doc: serde_json::Value = anon
        .get("/api/v1/openapi.json")
        .await
        .expect("the OpenAPI document");
    let work = tempfile::tempdir().expect("work dir");
    let ca = c.ctl.data_dir.join("pki").join("ca.pem");
    let base = c.ctl.api_url();
    let token = login.token.clone();
    let (ok, text) = tokio::task::spawn_blocking({
        let work = work.path().to_path_buf();
        let (own, other) = (me.id.0, c.world.admin.id.0);
        move || {
            let (ok, text) = fuzz(&base, &token, &ca, &work, own, other);
            if ok || !only_tool_errors(&text) {
                return (ok, text);
            }
            println!(
                "{text}\n--- schemathesis broke on itself, not on the API: running it again ---"
            );
            fuzz(&base, &token, &ca, &work, own, other)
        }
    })
    .await
    .expect("the schemathesis run");
    println!("{text}");
    assert!(ok, "schemathesis found failures (its report is above)");
    // The run covered the API rather than a row of refusals: it tested every operation it
    // loaded but logout (it leaves out the document's own route), and its session lived to
    // the end.
    let summary = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no '{key}' in schemathesis's summary"))
            .to_owned()
    };
    let (selected, total) = summary("Selected:")
        .split_once('/')
        .and_then(|(s, t)| Some((s.parse::<usize>().ok()?, t.parse::<usize>().ok()?)))
        .expect("Selected: N/M");
    let operations = doc["paths"]
        .as_object()
        .expect("the document's paths")
        .values()
        .flat_map(|item| item.as_object().into_iter().flat_map(|m| m.keys()))
        .filter(|m| ["get", "put", "post", "patch", "delete"].contains(&m.as_str()))
        .count();
    assert!(
        total >= operations - 1 && selected == total - 1,
        "schemathesis selected {selected} of {total} operations; the document has {operations}"
    );
    assert_eq!(
        summary("Tested:"),
        selected.to_string(),
        "operations tested"
    );
    let whoami: Result<Whoami, _> = anon
        .with_token(login.token)
        .get("/api/v1/auth/whoami")
        .await;
    let account = c
        .world
        .store
        .get_user(me.id)
        .await
        .expect("the fuzzer's account");
    let intact = whoami.is_ok() && account.is_active && account.role == Role::Admin;
    if !intact {
        // What the run did to its own account, from the audit trail.
        let f = AuditFilter {
            user_id: None,
            action: None,
            resource_type: Some("user".into()),
            resource_id: Some(me.id.0),
            since: None,
            until: None,
        };
        let trail = c.world.store.list_audit(&f, Paging::new(50, 0)).await;
        panic!("the fuzzer's session did not survive its run: {whoami:?}, {account:?}\n{trail:#?}");
    }
    println!("fuzzed in {:?}", started.elapsed());
}
