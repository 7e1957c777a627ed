//! Following a job's log live over the API: every line once and in order, the end event with
//! the outcome, a follower that drops and resumes with Last-Event-ID, and a finished job
//! replayed — against a real agent running real ansible.

use std::time::Duration;

use outpost_api::{LaunchResponse, LogEnd, LogLineView, LogPage};
use outpost_controller::model::JobStatus;
use outpost_tests::api::{login, read_events, SseEvent, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{AgentOpts, ControllerOpts};
use outpost_tests::Backend;
use reqwest::Method;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn bursts(bursts: usize, per: usize) -> String {
    let mut y = format!(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: seq -f \"n%06g\" 1 {per}\n      register: nums\n"
    );
    for _ in 0..bursts {
        y.push_str("    - ansible.builtin.debug:\n        var: nums.stdout_lines\n    - ansible.builtin.command: sleep 1\n");
    }
    y
}

fn lines_of(events: &[SseEvent]) -> Vec<LogLineView> {
    events
        .iter()
        .filter(|e| e.event == "line")
        .map(|e| {
            let l: LogLineView = serde_json::from_str(&e.data).unwrap();
            assert_eq!(e.id.as_deref(), Some(l.line_number.to_string().as_str()));
            l
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_every_line_once_and_the_end() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    w.local_server("web1", json!({}), "dev").await;
    w.playbook("bursts", &bursts(4, 1500)).await;
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let launched: LaunchResponse = admin
        .post(
            "/api/v1/jobs",
            &json!({"playbook": "bursts", "servers": ["web1"]}),
        )
        .await
        .unwrap();
    let job = launched.jobs[0].id.clone();
    let path = format!("/api/v1/jobs/{job}/logs/stream");

    // One follower from the start to the end…
    let full = {
        let resp = admin.request(Method::GET, &path).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        tokio::spawn(read_events(resp, |e| e.event == "end"))
    };
    // …and one that drops after 2,000 lines and resumes where it was.
    let resp = admin.request(Method::GET, &path).send().await.unwrap();
    let first = read_events(resp, |e| e.id.as_deref() == Some("2000")).await;
    let resp = admin
        .request(Method::GET, &path)
        .header("Last-Event-ID", "2000")
        .send()
        .await
        .unwrap();
    let rest = read_events(resp, |e| e.event == "end").await;

    let full = tokio::time::timeout(3 * MINUTE, full)
        .await
        .unwrap()
        .unwrap();
    let end: LogEnd = serde_json::from_str(&full.last().unwrap().data).unwrap();
    assert_eq!(full.last().unwrap().event, "end");
    assert_eq!(end.status, JobStatus::Success);
    let stored = w.lines(&w.store.get_job_by_uuid(&job).await.unwrap()).await;
    assert_eq!(end.last_line as usize, stored.len());
    let streamed = lines_of(&full);
    assert_eq!(streamed.len(), stored.len(), "every line, once");
    for (s, d) in streamed.iter().zip(&stored) {
        assert_eq!((s.line_number, &s.content), (d.line_number, &d.content));
    }
    let mut resumed = lines_of(&first);
    resumed.extend(lines_of(&rest));
    let numbers: Vec<i32> = resumed.iter().map(|l| l.line_number).collect();
    let want: Vec<i32> = (1..=stored.len() as i32).collect();
    assert_eq!(
        numbers, want,
        "the resumed follower misses nothing and gets nothing twice"
    );
    assert_eq!(rest.last().unwrap().event, "end");

    // A finished job replays and ends at once; pages walk the same lines.
    let resp = admin.request(Method::GET, &path).send().await.unwrap();
    let replay = tokio::time::timeout(MINUTE, read_events(resp, |e| e.event == "end"))
        .await
        .unwrap();
    assert_eq!(lines_of(&replay).len(), stored.len());
    let mut after = 0;
    let mut paged = 0;
    loop {
        let page: LogPage = admin
            .get(&format!("/api/v1/jobs/{job}/logs?after={after}&limit=5000"))
            .await
            .unwrap();
        paged += page.lines.len();
        after = page.next_after;
        if page.complete {
            break;
        }
    }
    assert_eq!(paged, stored.len());
}
