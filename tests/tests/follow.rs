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
    let stored = w
        .lines(
            &w.store
                .get_job_by_uuid(job.parse().expect("a job uuid"))
                .await
                .unwrap(),
        )
        .await;
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

/// Opens a live log stream with `client`, checks it was accepted, and reads it in a task that
/// returns once the controller ends it.
async fn open_stream(
    client: &outpost_api::client::Client,
    path: &str,
) -> tokio::task::JoinHandle<Vec<SseEvent>> {
    let resp = client.request(Method::GET, path).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a stream is refused");
    tokio::spawn(read_events(resp, |_| false))
}

/// Waits (with a deadline) for a stream the controller should end.
async fn ended(stream: tokio::task::JoinHandle<Vec<SseEvent>>, why: &str) {
    tokio::time::timeout(Duration::from_secs(15), stream)
        .await
        .unwrap_or_else(|_| panic!("the stream is still open after {why}"))
        .unwrap();
}

/// Live streams are capped per user, and each ends with the session that opened it: logout,
/// deactivation, a password change that ends the other sessions. A log page is cut to its
/// byte budget, and the pages after it carry on where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_are_capped_and_end_with_their_session_and_pages_with_their_bytes() {
    use outpost_controller::model::Role;
    use outpost_controller::store::logs::NewLogLine;
    use outpost_tests::api::user;
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let pb = w
        .playbook("idle", "- hosts: all\n  gather_facts: false\n  tasks: []\n")
        .await;
    // No agent: the job stays pending and its stream stays open.
    let job = w.launch(&pb, &server).await;
    let path = format!("/api/v1/jobs/{}/logs/stream", job.job_id);
    for name in ["otto", "dora", "pat"] {
        user(w, name, Role::Operator).await;
    }
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let otto = login(&c.ctl, "otto", PASSWORD).await;

    let mut otto_streams = Vec::new();
    for _ in 0..outpost_controller::http::live::MAX_PER_USER {
        otto_streams.push(open_stream(&otto, &path).await);
    }
    let refused = otto.request(Method::GET, &path).send().await.unwrap();
    assert_eq!(
        refused.status(),
        429,
        "one stream more than a user may hold"
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("live streams"),
        "{body}"
    );
    let admins = open_stream(&admin, &path).await;

    // Logout ends every stream of that token, and only those.
    let out = otto
        .request(Method::POST, "/api/v1/auth/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    for s in otto_streams {
        ended(s, "logout").await;
    }
    tokio::time::sleep(outpost_controller::http::live::SWEEP * 2).await;
    assert!(!admins.is_finished(), "another user's stream ended too");

    // Deactivation ends the account's streams.
    let dora = login(&c.ctl, "dora", PASSWORD).await;
    let doras = open_stream(&dora, &path).await;
    let dora_id = w.store.get_user_by_username("dora").await.unwrap().id;
    let _: serde_json::Value = admin
        .patch(
            &format!("/api/v1/users/{dora_id}"),
            &json!({"is_active": false}),
        )
        .await
        .unwrap();
    ended(doras, "deactivation").await;

    // A password change ends the other sessions' streams.
    let pat_a = login(&c.ctl, "pat", PASSWORD).await;
    let pat_b = login(&c.ctl, "pat", PASSWORD).await;
    let pats = open_stream(&pat_a, &path).await;
    let pat_id = w.store.get_user_by_username("pat").await.unwrap().id;
    let changed = pat_b
        .request(Method::POST, &format!("/api/v1/users/{pat_id}/password"))
        .json(&json!({"current_password": PASSWORD, "new_password": "another long pass 7"}))
        .send()
        .await
        .unwrap();
    assert!(changed.status().is_success(), "{}", changed.status());
    ended(pats, "a password change").await;
    admins.abort();

    // 100 lines of 60 KiB: a page holds at most 4 MiB of text and says it is not complete;
    // the pages after it bring the rest, each line once.
    let big = "x".repeat(60 * 1024);
    let lines: Vec<NewLogLine> = (1..=100)
        .map(|n| NewLogLine {
            job: job.id,
            line_number: n,
            content: big.clone(),
            level: None,
            timestamp: chrono::Utc::now(),
        })
        .collect();
    w.store.insert_log_lines(&lines).await.unwrap();
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page: LogPage = admin
            .get(&format!(
                "/api/v1/jobs/{}/logs?after={after}&limit=10000",
                job.job_id
            ))
            .await
            .unwrap();
        let bytes: usize = page.lines.iter().map(|l| l.content.len()).sum();
        assert!(
            bytes <= outpost_controller::http::logs::MAX_PAGE_BYTES,
            "{bytes} bytes in one page"
        );
        if page.lines.is_empty() {
            break;
        }
        assert!(!page.complete);
        seen.extend(page.lines.iter().map(|l| l.line_number));
        after = page.next_after;
    }
    assert_eq!(seen, (1..=100).collect::<Vec<i32>>());
}
