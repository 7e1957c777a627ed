//! The protocol's line cap against a real controller and MariaDB: a hand-written agent sends a
//! line one byte over `MAX_LOG_LINE_BYTES`. The controller neither stores it nor cuts it: the
//! lines before it are kept, the job fails saying why, and the agent is told to let go of it
//! (otherwise it would resend the line on every stream, for ever). A line exactly at the cap,
//! multi-byte characters included, is stored whole in the TEXT column.

use std::time::Duration;

use outpost_controller::model::JobStatus;
use outpost_protocol::codec::FramedStream;
use outpost_protocol::message::{JobDown, JobUp, Level, LogBatch, LogLine};
use outpost_protocol::MAX_LOG_LINE_BYTES;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{Agent, ControllerOpts, HandSession};
use outpost_tests::Backend;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn line(text: String) -> LogLine {
    LogLine {
        at_ms: chrono::Utc::now().timestamp_millis(),
        level: Level::Info,
        text,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_over_the_cap_fails_the_job_and_the_agent_is_told_to_let_go() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let rogue = Agent::enroll(&c.ctl, "rogue", &["dc=rogue"]);
    let HandSession {
        endpoint: _endpoint,
        conn,
        // Kept open: the session lives as long as its stream.
        session: _session,
    } = HandSession::open(&c.ctl, &rogue).await;

    let w = &c.world;
    let server = w.local_server("web1", json!({"dc": "rogue"}), "dev").await;
    let pb = w
        .playbook(
            "hello",
            "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: hi\n",
        )
        .await;
    let job = w.launch(&pb, &server).await;

    let (send, recv) = tokio::time::timeout(MINUTE, conn.accept_bi())
        .await
        .expect("an assignment in time")
        .unwrap();
    let mut stream = FramedStream::new(recv, send);
    let Some(JobDown::Assign(a)) = stream.recv::<JobDown>().await.unwrap() else {
        panic!("no assignment")
    };
    let id = a.job;
    stream.send(&JobUp::Accept { job: id }).await.unwrap();
    let at_ms = chrono::Utc::now().timestamp_millis();
    stream
        .send(&JobUp::Started { job: id, at_ms })
        .await
        .unwrap();

    // Exactly at the cap, in two-byte characters: stored whole.
    let at_cap = "é".repeat(MAX_LOG_LINE_BYTES / 2) + "x";
    assert_eq!(at_cap.len(), MAX_LOG_LINE_BYTES);
    let before = LogBatch {
        job: id,
        first_line: 1,
        lines: vec![line("before".into()), line(at_cap.clone())],
    };
    stream.send(&JobUp::Logs(before)).await.unwrap();
    let over = LogBatch {
        job: id,
        first_line: 3,
        lines: vec![line("y".repeat(MAX_LOG_LINE_BYTES + 1))],
    };
    stream.send(&JobUp::Logs(over)).await.unwrap();

    let mut answers = Vec::new();
    while let Ok(Ok(Some(msg))) = tokio::time::timeout(MINUTE, stream.recv::<JobDown>()).await {
        answers.push(msg);
    }
    assert_eq!(
        answers,
        [
            JobDown::LogAck {
                job: id,
                through_line: 2
            },
            JobDown::FinishAck { job: id }
        ],
        "the lines before are acknowledged, then the agent may forget the job"
    );

    let failed = w.wait_status(&job, JobStatus::Failed, MINUTE).await;
    let error = failed.error_message.unwrap_or_default();
    assert!(
        error.contains("line 3") && error.contains("above the protocol's limit"),
        "{error}"
    );
    let lines = w.lines(&job).await;
    assert_eq!(
        lines.len(),
        2,
        "the over-long line is not stored, cut or whole"
    );
    assert_eq!(lines[0].content, "before");
    assert_eq!(
        lines[1].content, at_cap,
        "a line at the cap is stored whole"
    );
    conn.close(quinn::VarInt::from_u32(0), b"done");
    drop(rogue);
}
