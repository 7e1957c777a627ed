//! Per-task results from the agent's shipped callback, through real processes: they equal what
//! ansible's own report (its `junit` callback, part of ansible-core) says of the same play run
//! by hand; the recap equals ansible's PLAY RECAP line; an unreachable server is reported as
//! unreachable, not as a failed playbook; and the API filters and refuses as documented.
//! (Exactly once across faults: see `delivery.rs`.)

use std::time::Duration;

use outpost_api::client::ApiError;
use outpost_api::{JobResults, ResultsQuery, Role, TaskStatus};
use outpost_controller::model::{Job, JobStatus};
use outpost_controller::store::audit::Actor;
use outpost_controller::store::servers::NewServer;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{AgentOpts, ControllerOpts};
use outpost_tests::Backend;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

/// Every status a task can end with, one task each (the loop and the ignored failure too).
const MIXED: &str = r#"
- name: mixed
  hosts: all
  gather_facts: false
  tasks:
    - name: say hi
      ansible.builtin.command: echo hi
    - name: unchanged
      ansible.builtin.debug:
        msg: x
    - name: skipped one
      ansible.builtin.debug:
        msg: y
      when: false
    - block:
        - name: boom in block
          ansible.builtin.command: /bin/false
      rescue:
        - name: rescuer
          ansible.builtin.debug:
            msg: rescued
    - name: ignored failure
      ansible.builtin.command: /bin/false
      ignore_errors: true
    - name: loop
      ansible.builtin.command: "echo {{ item }}"
      loop: [1, 2]
    - name: final failure
      ansible.builtin.fail:
        msg: "it broke with ünïcode"
"#;

/// A task ansible's junit report lists: `[host] play: task`, its status, its failure message.
#[derive(Debug, PartialEq)]
struct Reported {
    name: String,
    status: String,
    message: Option<String>,
}

/// Reads ansible's junit XML with Python's standard library (the tests have no XML parser):
/// passed tests are ok or changed by their result's `changed`, failures and errors failed.
fn junit_report(dir: &std::path::Path) -> Vec<Reported> {
    const READ: &str = r#"
import glob, json, sys, xml.etree.ElementTree as ET
out = []
for path in sorted(glob.glob(sys.argv[1] + '/*.xml')):
    for case in ET.parse(path).getroot().iter('testcase'):
        bad = case.find('failure')
        if bad is None:
            bad = case.find('error')
        if bad is not None:
            out.append({'name': case.get('name'), 'status': 'failed', 'message': bad.get('message')})
        elif case.find('skipped') is not None:
            out.append({'name': case.get('name'), 'status': 'skipped', 'message': None})
        else:
            res = json.loads(case.findtext('system-out') or '{}')
            out.append({'name': case.get('name'), 'status': 'changed' if res.get('changed') else 'ok', 'message': None})
print(json.dumps(out))
"#;
    let out = std::process::Command::new(outpost_tests::world::python())
        .args(["-c", READ])
        .arg(dir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    v.into_iter()
        .map(|r| Reported {
            name: r["name"].as_str().unwrap_or_default().to_owned(),
            status: r["status"].as_str().unwrap_or_default().to_owned(),
            message: r["message"].as_str().map(str::to_owned),
        })
        .collect()
}

/// Runs `yaml` by hand against a local `host` with ansible's junit callback; its report.
fn by_hand(yaml: &str, host: &str) -> Vec<Reported> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("play.yml"), yaml).unwrap();
    std::fs::write(
        dir.path().join("inventory.yml"),
        json!({"all": {"hosts": {host: {"ansible_connection": "local", "ansible_python_interpreter": outpost_tests::world::python()}}}}).to_string(),
    )
    .unwrap();
    let junit = dir.path().join("junit");
    let out = std::process::Command::new("ansible-playbook")
        .args(["-i", "inventory.yml", "play.yml"])
        .current_dir(dir.path())
        .env("ANSIBLE_CALLBACKS_ENABLED", "junit")
        .env("JUNIT_OUTPUT_DIR", &junit)
        .env("JUNIT_HIDE_TASK_ARGUMENTS", "true")
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-playbook");
    assert_eq!(out.status.code(), Some(2), "the play fails at its end");
    junit_report(&junit)
}

/// The numbers of the `PLAY RECAP` line of `host` in a job's stored log.
async fn recap_line(w: &outpost_tests::world::World, job: &Job, host: &str) -> Vec<(String, i64)> {
    let lines = w.lines(job).await;
    let line = lines
        .iter()
        .find(|l| l.content.starts_with(host) && l.content.contains(" : ok="))
        .unwrap_or_else(|| panic!("no recap line for {host}"));
    line.content
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

fn recap_pairs(r: &JobResults) -> Vec<(String, i64)> {
    let c = r.recap.expect("a recap");
    [
        ("ok", c.ok),
        ("changed", c.changed),
        ("unreachable", c.unreachable),
        ("failed", c.failed),
        ("skipped", c.skipped),
        ("rescued", c.rescued),
        ("ignored", c.ignored),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_results_match_ansibles_own_report_and_unreachable_is_told_apart() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let web = w.local_server("web1", json!({}), "dev").await;
    // A server whose ssh port is closed: ansible cannot reach it.
    let mut far = NewServer::new("far1", "127.0.0.1", "linux");
    far.host_vars = Some(json!({"ansible_connection": "ssh", "ansible_port": 1}));
    far.environment = Some("dev".into());
    let far = w
        .store
        .create_server(&far, &Actor::user(w.admin.id))
        .await
        .unwrap();
    let pb = w.playbook("mixed", MIXED).await;
    let job = w.launch(&pb, &web).await;
    let gone = w.launch(&pb, &far).await;
    let failed = w.wait_status(&job, JobStatus::Failed, 2 * MINUTE).await;
    assert_eq!(failed.exit_code, Some(2));

    outpost_tests::api::user(w, "reader", Role::Viewer).await;
    let api = outpost_tests::api::login(&c.ctl, "reader", outpost_tests::api::PASSWORD).await;
    let all = ResultsQuery::default();
    let r = api
        .jobs()
        .results(&job.job_id.to_string(), &all)
        .await
        .unwrap();

    // Task by task, what ansible's own report says of the same play run by hand.
    let want = by_hand(MIXED, "web1");
    let got: Vec<Reported> = r
        .results
        .iter()
        .map(|t| Reported {
            name: format!("[{}] {}: {}", t.host, t.play, t.task),
            // junit cannot tell a rescued failure from another one.
            status: match t.status {
                TaskStatus::Rescued => "failed".into(),
                s => s.as_str().into(),
            },
            message: t.message.clone(),
        })
        .collect();
    assert_eq!(
        got.iter().map(|g| (&g.name, &g.status)).collect::<Vec<_>>(),
        want.iter()
            .map(|g| (&g.name, &g.status))
            .collect::<Vec<_>>(),
        "per-task results differ from ansible's junit report"
    );
    for (g, w) in got.iter().zip(&want).filter(|(g, _)| g.status == "failed") {
        let (ours, theirs) = (g.message.as_deref().unwrap(), w.message.as_deref().unwrap());
        assert!(
            theirs.contains(ours),
            "{}: ours {ours:?}, ansible's {theirs:?}",
            g.name
        );
    }
    let status_of = |task: &str| r.results.iter().find(|t| t.task == task).unwrap().status;
    assert_eq!(status_of("boom in block"), TaskStatus::Rescued);
    assert_eq!(status_of("skipped one"), TaskStatus::Skipped);
    assert_eq!(status_of("say hi"), TaskStatus::Changed);
    assert_eq!(r.total, 8);
    assert!(r.results.windows(2).all(|p| p[1].seq == p[0].seq + 1));
    // The failure message is kept as the module gave it.
    let last = r.results.last().unwrap();
    assert_eq!(last.status, TaskStatus::Failed);
    assert_eq!(last.message.as_deref(), Some("it broke with ünïcode"));
    // The recap is ansible's PLAY RECAP, number for number.
    assert_eq!(recap_pairs(&r), recap_line(w, &job, "web1").await);
    assert!(!r.unreachable);

    // Filters: by status, by task; a bad one is a 422 naming its field.
    let q = |task: Option<&str>, status: Option<&str>| ResultsQuery {
        task: task.map(Into::into),
        status: status.map(Into::into),
        ..ResultsQuery::default()
    };
    let f = api
        .jobs()
        .results(&job.job_id.to_string(), &q(None, Some("failed")))
        .await
        .unwrap();
    assert_eq!(
        f.results
            .iter()
            .map(|t| t.task.as_str())
            .collect::<Vec<_>>(),
        ["final failure"]
    );
    let f = api
        .jobs()
        .results(&job.job_id.to_string(), &q(Some("loop"), None))
        .await
        .unwrap();
    assert_eq!((f.total, f.results[0].status), (1, TaskStatus::Changed));
    match api
        .jobs()
        .results(&job.job_id.to_string(), &q(None, Some("exploded")))
        .await
    {
        Err(ApiError::Refused {
            status: 422,
            message,
            ..
        }) => {
            assert!(message.contains("status"), "{message}")
        }
        other => panic!("expected a 422, got {other:?}"),
    }

    // Unreachable: the job is failed (the seed's statuses are fixed) and reported unreachable.
    let gone_job = w.wait_status(&gone, JobStatus::Failed, 2 * MINUTE).await;
    assert_eq!(
        gone_job.exit_code,
        Some(4),
        "ansible's exit code for unreachable"
    );
    let u = api
        .jobs()
        .results(&gone.job_id.to_string(), &all)
        .await
        .unwrap();
    assert!(u.unreachable);
    assert_eq!(u.recap.unwrap().unreachable, 1);
    assert_eq!(u.recap.unwrap().failed, 0, "unreachable is not failed");
    assert_eq!(
        u.results.iter().map(|t| t.status).collect::<Vec<_>>(),
        [TaskStatus::Unreachable]
    );
    assert_eq!(recap_pairs(&u), recap_line(w, &gone, "far1").await);

    // A run of both servers: its aggregate says which task ended how on how many servers, per
    // datacenter (neither server has a `dc` tag: ""), failed and unreachable first.
    outpost_tests::api::user(w, "launcher", Role::Operator).await;
    let op = outpost_tests::api::login(&c.ctl, "launcher", outpost_tests::api::PASSWORD).await;
    let launched: outpost_api::LaunchResponse = op
        .post(
            "/api/v1/jobs",
            &json!({"playbook": "mixed", "servers": ["web1", "far1"]}),
        )
        .await
        .expect("an operator launches");
    let run = launched.run.expect("a launch to two servers is a run");
    for j in &launched.jobs {
        outpost_tests::bench::wait_final(w, &j.id, Duration::from_millis(200)).await;
    }
    let agg = api.runs().results(&run, &all).await.unwrap();
    assert_eq!(agg.unreachable_jobs, 1);
    let first: Vec<(&str, TaskStatus, i64)> = agg
        .tasks
        .iter()
        .take(2)
        .map(|t| (t.task.as_str(), t.status, t.servers))
        .collect();
    assert!(
        first.contains(&("final failure", TaskStatus::Failed, 1)),
        "{first:?}"
    );
    assert!(
        first.contains(&("say hi", TaskStatus::Unreachable, 1)),
        "{first:?}"
    );
    assert!(agg.tasks.iter().all(|t| t.datacenter.is_empty()));
    let failed_only = ResultsQuery {
        status: Some("failed".into()),
        ..ResultsQuery::default()
    };
    let agg = api.runs().results(&run, &failed_only).await.unwrap();
    assert_eq!(agg.tasks.len(), 1, "{:?}", agg.tasks);
    let elsewhere = ResultsQuery {
        datacenter: Some("ams1".into()),
        ..ResultsQuery::default()
    };
    assert!(api
        .runs()
        .results(&run, &elsewhere)
        .await
        .unwrap()
        .tasks
        .is_empty());
    // Each job of the run records whether its server was reachable.
    for j in &launched.jobs {
        let job = w
            .store
            .get_job_by_uuid(j.id.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(job.unreachable, job.server_id == far.id, "{}", j.id);
    }
}
