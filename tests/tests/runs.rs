//! Runs across a test fleet of three datacenters (network namespaces, one sshd each, ten server
//! names per datacenter reaching it over real SSH), on MariaDB, in one shared world: a playbook
//! broken on one datacenter's servers stops its run after the budget's next failure, cancels
//! the rest with the reason and opens one ticket listing the failed servers; a relaunch runs
//! those servers only. A canary rollout starts its second wave only after the canary
//! succeeded, and with an approval gate nothing more runs until an operator (not a viewer)
//! approves — from the API and from the `outpost` CLI. A canary that fails stops its run.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use outpost_api::client::Client;
use outpost_api::{LaunchResponse, RunDetail, RunStatus, RunView, TicketView};
use outpost_controller::model::{JobStatus, Role};
use outpost_tests::api::{login, user, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::fleet::Fleet;
use outpost_tests::procs::{bin, AgentOpts, ControllerOpts};
use outpost_tests::{output_within, wait_for, Backend};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// Fails on a server whose marker file exists (the test's "broken" servers), succeeds elsewhere.
fn playbook(markers: &Path) -> String {
    format!(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: look for the marker\n      ansible.builtin.stat:\n        path: {}/broken-{{{{ inventory_hostname }}}}\n      register: marker\n    - name: fail where it is\n      ansible.builtin.fail:\n        msg: broken on {{{{ inventory_hostname }}}}\n      when: marker.stat.exists\n",
        markers.display()
    )
}

fn outpost(config: &Path, args: &[&str]) -> Output {
    output_within(
        Command::new(bin("outpost"))
            .args(args)
            .env("OUTPOST_CONFIG_DIR", config)
            .env("OUTPOST_PASSWORD", PASSWORD)
            .env_remove("OUTPOST_CONTEXT"),
        2 * MINUTE,
        &format!("outpost {}", args.join(" ")),
    )
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn run(api: &Client, id: &str) -> RunDetail {
    api.get(&format!("/api/v1/runs/{id}")).await.expect("run")
}

async fn ended(api: &Client, id: &str) -> RunDetail {
    wait_for("the run to end", 3 * MINUTE, || async {
        let d = run(api, id).await;
        (d.run.status != RunStatus::Running).then_some(d)
    })
    .await
}

fn servers(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_tickets_relaunch_canaries_and_approvals_across_datacenters() {
    let mut fleet = Fleet::start();
    for dc in ["fra1", "ams1", "lon1"] {
        fleet.add_datacenter(dc);
    }
    let c = Cluster::for_fleet(Backend::MariaDb, &fleet, ControllerOpts::default()).await;
    let w = &c.world;
    // ams1 runs one job at a time, so its failures come one after another and the budget
    // stops the run after exactly one more than it allows.
    let _fra = c.fleet_agent(
        &fleet,
        "fra1",
        c.ctl.agents,
        &AgentOpts {
            capacity: 4,
            ..AgentOpts::default()
        },
    );
    let _ams = c.fleet_agent(
        &fleet,
        "ams1",
        c.ctl.agents,
        &AgentOpts {
            capacity: 1,
            ..AgentOpts::default()
        },
    );
    let _lon = c.fleet_agent(
        &fleet,
        "lon1",
        c.ctl.agents,
        &AgentOpts {
            capacity: 4,
            ..AgentOpts::default()
        },
    );
    let (fra, ams, lon) = (servers("fra", 10), servers("ams", 10), servers("lon", 10));
    for (dc, names) in [("fra1", &fra), ("ams1", &ams), ("lon1", &lon)] {
        for n in names {
            fleet.register(w, dc, n).await;
        }
    }
    let markers = tempfile::tempdir().unwrap();
    for n in &ams {
        std::fs::write(markers.path().join(format!("broken-{n}")), "").unwrap();
    }
    w.playbook("rollout", &playbook(markers.path())).await;
    user(w, "otto", Role::Operator).await;
    user(w, "vera", Role::Viewer).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let otto = login(&c.ctl, "otto", PASSWORD).await;
    let vera = login(&c.ctl, "vera", PASSWORD).await;

    // A rule for failures, to a webhook nobody answers: the outbox holds what would be sent.
    let _: serde_json::Value = admin
        .post(
            "/api/v1/notifications/channels",
            &json!({"name": "failures", "kind": "webhook", "url": "http://127.0.0.1:9/hook",
                    "on_call": false, "digest": false,
                    "secret": "a signing secret that is long enough"}),
        )
        .await
        .expect("channel");
    let _: serde_json::Value = admin
        .post(
            "/api/v1/notifications/rules",
            &json!({"event": "job_failed", "channel": "failures", "mode": "immediate"}),
        )
        .await
        .expect("rule");

    // 30 servers, a budget of 3 failures across the datacenters.
    let all: Vec<String> = fra.iter().chain(&ams).chain(&lon).cloned().collect();
    let launched: LaunchResponse = otto
        .post(
            "/api/v1/jobs",
            &json!({"playbook": "rollout", "servers": all, "rollout": {"max_failures": "3"}}),
        )
        .await
        .expect("launch");
    assert_eq!(launched.jobs.len(), 30);
    let first = launched.run.clone().expect("the launch names its run");
    let d = ended(&admin, &first).await;
    let reason = "failure budget spent: 4 of 30 failed (budget 3)";
    assert_eq!(d.run.status, RunStatus::StoppedByBudget, "{:?}", d.run);
    assert_eq!(d.run.stop_reason.as_deref(), Some(reason));
    assert_eq!(d.budget.failed, 4);
    assert!(d.budget.spent);
    let ams_counts = &d
        .datacenters
        .iter()
        .find(|g| g.name == "ams1")
        .unwrap()
        .counts;
    assert_eq!(
        (ams_counts.failed, ams_counts.cancelled),
        (4, 6),
        "{ams_counts:?}"
    );
    let failed: Vec<String> = d
        .jobs
        .iter()
        .filter(|j| j.job.status == JobStatus::Failed)
        .map(|j| j.job.server.name.clone())
        .collect();
    assert_eq!(failed.len(), 4);
    assert!(failed.iter().all(|s| s.starts_with("ams-")), "{failed:?}");
    for j in d
        .jobs
        .iter()
        .filter(|j| j.job.status == JobStatus::Cancelled)
    {
        assert_eq!(j.job.error_message.as_deref(), Some(reason));
        assert!(j.job.started_at.is_none());
    }
    // One notification for the run, not one per failed job.
    let sent: Vec<String> = {
        use sqlx::Connection;
        let mut conn = sqlx::MySqlConnection::connect(&c.db.url).await.unwrap();
        let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT payload FROM notification_outbox WHERE event = 'job_failed'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        payloads
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    };
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(sent[0].contains("failed on 4 of 30 servers"), "{}", sent[0]);
    assert!(sent[0].contains(&format!("/runs/{first}")), "{}", sent[0]);
    // One ticket for the run, listing every failed server; none per job.
    assert_eq!(d.tickets.len(), 1, "{:?}", d.tickets);
    let tickets: outpost_api::Page<TicketView> = admin.get("/api/v1/tickets").await.unwrap();
    assert_eq!(tickets.total, 1);
    let ticket = &tickets.items[0];
    assert_eq!(ticket.id, d.tickets[0]);
    assert!(ticket.title.contains("4 failed of 30"), "{}", ticket.title);
    let text = ticket.description.clone().unwrap_or_default();
    for s in &failed {
        assert!(text.contains(&format!("- {s} (failed)")), "{text}");
    }
    assert!(text.contains(reason), "{text}");

    // Relaunch: the failed servers only, fixed meanwhile.
    for n in &ams {
        std::fs::remove_file(markers.path().join(format!("broken-{n}"))).unwrap();
    }
    let (status, ..) = match vera
        .post::<_, RunView>(&format!("/api/v1/runs/{first}/relaunch"), &json!({}))
        .await
    {
        Err(e) => (e.status(), ()),
        Ok(_) => panic!("a viewer relaunched"),
    };
    assert_eq!(status, Some(403));
    let again: RunView = otto
        .post(
            &format!("/api/v1/runs/{first}/relaunch"),
            &json!({"only": "failed"}),
        )
        .await
        .expect("relaunch");
    assert_eq!(again.relaunch_of.as_deref(), Some(first.as_str()));
    let d2 = ended(&admin, &again.id).await;
    assert_eq!(d2.run.status, RunStatus::Succeeded);
    let mut rerun: Vec<String> = d2.jobs.iter().map(|j| j.job.server.name.clone()).collect();
    rerun.sort();
    let mut want = failed.clone();
    want.sort();
    assert_eq!(rerun, want);

    // A canary, then batches of 5, with an approval gate before each wave after the first.
    let launched: LaunchResponse = otto
        .post(
            "/api/v1/jobs",
            &json!({"playbook": "rollout", "servers": fra,
                    "rollout": {"canary": 1, "batch": "5", "pause": true}}),
        )
        .await
        .expect("launch");
    let gated = launched.run.clone().unwrap();
    let d = wait_for(
        "the canary to end and the gate to hold",
        2 * MINUTE,
        || async {
            let d = run(&admin, &gated).await;
            let held =
                d.jobs.iter().filter(|j| j.wave == 2).all(|j| {
                    j.job.pending_reason.as_deref() == Some("waiting for approval of wave 2")
                });
            (d.run.awaiting_approval && held).then_some(d)
        },
    )
    .await;
    assert_eq!(d.run.waves, 3);
    assert_eq!(d.waves[0].counts.success, 1);
    assert!(d
        .jobs
        .iter()
        .filter(|j| j.wave > 1)
        .all(|j| j.job.status == JobStatus::Pending
            && j.job.agent.is_none()
            && j.job.started_at.is_none()));
    let canary_end = d
        .jobs
        .iter()
        .find(|j| j.wave == 1)
        .unwrap()
        .job
        .completed_at
        .unwrap();
    let refused = vera
        .post::<_, serde_json::Value>(&format!("/api/v1/runs/{gated}/approve"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(403));
    // Nothing moved for the viewer's attempt.
    let d = run(&admin, &gated).await;
    assert!(d
        .jobs
        .iter()
        .filter(|j| j.wave > 1)
        .all(|j| j.job.status == JobStatus::Pending));
    let approved: serde_json::Value = otto
        .post(&format!("/api/v1/runs/{gated}/approve"), &json!({}))
        .await
        .expect("approve");
    assert_eq!(approved["outcome"], "wave 2 approved");
    let d = wait_for("wave 2 to end and wave 3 to wait", 2 * MINUTE, || async {
        let d = run(&admin, &gated).await;
        (d.waves[1].counts.success == 5 && d.run.awaiting_approval).then_some(d)
    })
    .await;
    for j in d.jobs.iter().filter(|j| j.wave == 2) {
        assert!(
            j.job.started_at.unwrap() >= canary_end,
            "wave 2 started before the canary ended"
        );
    }
    assert!(d
        .jobs
        .iter()
        .filter(|j| j.wave == 3)
        .all(|j| j.job.started_at.is_none()));

    // The CLI: the run's progress, the approval of wave 3, listings as JSON.
    let cfg = tempfile::tempdir().unwrap();
    let cfg = cfg.path();
    ok(outpost(
        cfg,
        &[
            "login",
            &c.ctl.api_url(),
            "-u",
            "otto",
            "--ca-fingerprint",
            &c.ctl.ca_fingerprint(),
        ],
    ));
    let shown = ok(outpost(cfg, &["run", "show", &gated]));
    assert!(shown.contains("wave 2/3"), "{shown}");
    assert!(shown.contains("waits for approval"), "{shown}");
    assert!(
        shown.contains("dc fra1: 6/10 done: 6 ok, 0 failed"),
        "{shown}"
    );
    assert!(ok(outpost(cfg, &["run", "approve", &gated])).contains("wave 3 approved"));
    let followed = outpost(cfg, &["run", "show", &gated, "--follow"]);
    assert_eq!(
        followed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&followed.stderr)
    );
    assert!(String::from_utf8_lossy(&followed.stderr).contains("fra1: 10/10 done: 10 ok, 0 failed"));
    let stopped = ok(outpost(cfg, &["run", "show", &first]));
    assert!(stopped.contains("failure budget: 4 of 3 used"), "{stopped}");
    assert!(stopped.contains(&format!("stopped: {reason}")), "{stopped}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(outpost(cfg, &["--json", "run", "list"]))).unwrap();
    assert_eq!(listed["total"], 3);
    assert_eq!(listed["items"][0]["status"], "succeeded");

    // A canary that fails stops its run: the other servers never start.
    std::fs::write(markers.path().join("broken-ams-0"), "").unwrap();
    let bad_canary = ok(outpost(
        cfg,
        &[
            "--json",
            "job",
            "run",
            "rollout",
            "--server",
            "ams-0",
            "--server",
            "lon-0",
            "--server",
            "lon-1",
            "--canary",
            "1",
            "--max-failures",
            "5",
        ],
    ));
    let bad: LaunchResponse = serde_json::from_str(&bad_canary).unwrap();
    let d = ended(&admin, bad.run.as_deref().unwrap()).await;
    assert_eq!(d.run.status, RunStatus::Failed);
    assert!(d
        .run
        .stop_reason
        .as_deref()
        .unwrap_or_default()
        .starts_with("canary did not succeed"));
    assert_eq!(d.run.counts.cancelled, 2);
    assert_eq!(d.run.counts.failed, 1);

    // Cancelling a run held at its gate cancels every job not started, once.
    let launched: LaunchResponse = otto
        .post(
            "/api/v1/jobs",
            &json!({"playbook": "rollout", "servers": lon,
                    "rollout": {"canary": 1, "batch": "50%", "pause": true}}),
        )
        .await
        .expect("launch");
    let held = launched.run.clone().unwrap();
    wait_for("the gate to hold", 2 * MINUTE, || async {
        run(&admin, &held).await.run.awaiting_approval.then_some(())
    })
    .await;
    let cancelled: serde_json::Value = otto
        .post(&format!("/api/v1/runs/{held}/cancel"), &json!({}))
        .await
        .expect("cancel");
    assert_eq!(cancelled["outcome"], "cancelled");
    let d = run(&admin, &held).await;
    assert_eq!(d.run.status, RunStatus::Cancelled);
    assert_eq!((d.run.counts.success, d.run.counts.cancelled), (1, 9));
    assert!(d
        .jobs
        .iter()
        .filter(|j| j.wave > 1)
        .all(|j| j.job.error_message.as_deref() == Some("run cancelled by otto")));
    let again = otto
        .post::<_, serde_json::Value>(&format!("/api/v1/runs/{held}/cancel"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(409));

    // A rollout the API cannot read is refused by field, as a one-line error in the CLI.
    let bad = outpost(
        cfg,
        &[
            "job", "run", "rollout", "--server", "lon-0", "--batch", "ten",
        ],
    );
    assert_eq!(bad.status.code(), Some(3));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("rollout.batch") && err.contains("\"ten\""),
        "{err}"
    );

    // A template keeps its rollout; its launches roll out so unless they give their own.
    let bad = admin
        .post::<_, serde_json::Value>(
            "/api/v1/templates",
            &json!({"name": "staged", "playbook": "rollout", "servers": ["lon-0", "lon-1", "lon-2"],
                    "rollout": {"batch": "lots"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(422));
    assert!(bad.to_string().contains("rollout.batch"), "{bad}");
    let t: serde_json::Value = admin
        .post(
            "/api/v1/templates",
            &json!({"name": "staged", "playbook": "rollout", "servers": ["lon-0", "lon-1", "lon-2"],
                    "rollout": {"canary": 1, "max_failures": "0"}}),
        )
        .await
        .expect("template");
    assert_eq!(t["rollout"]["canary"], 1);
    let launched: LaunchResponse = otto
        .post("/api/v1/templates/staged/launch", &json!({}))
        .await
        .expect("template launch");
    let d = ended(&admin, launched.run.as_deref().unwrap()).await;
    assert_eq!(d.run.status, RunStatus::Succeeded);
    assert_eq!((d.run.waves, d.budget.max_failures), (2, Some(0)));
    assert_eq!(
        d.run.template.as_ref().map(|t| t.name.as_str()),
        Some("staged")
    );
}
