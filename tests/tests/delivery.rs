//! Every line exactly once, in order: through network cuts, an agent killed with SIGKILL, an
//! agent that never comes back, and output far larger than the agent's memory.

use std::time::Duration;

use outpost_controller::model::JobStatus;
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{AgentOpts, ControllerOpts};
use outpost_tests::proxy::UdpProxy;
use outpost_tests::{wait_for, Backend};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// `bursts` tasks each printing `per_burst` numbered lines (n000001…), with a pause after each.
fn bursts_playbook(bursts: usize, per_burst: usize, pause_secs: u32) -> String {
    let mut y = String::from("- hosts: all\n  gather_facts: false\n  tasks:\n");
    y.push_str(&format!(
        "    - name: numbers\n      ansible.builtin.command: seq -f \"n%06g\" 1 {per_burst}\n      register: nums\n"
    ));
    for b in 1..=bursts {
        y.push_str(&format!(
            "    - name: burst {b}\n      ansible.builtin.debug:\n        var: nums.stdout_lines\n"
        ));
        y.push_str(&format!(
            "    - name: pause {b}\n      ansible.builtin.command: sleep {pause_secs}\n"
        ));
    }
    y
}

/// The numbers printed by the bursts, in the order they were stored.
fn numbers(lines: &[outpost_controller::model::LogLine]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| {
            let t = l.content.trim().trim_end_matches(',').trim_matches('"');
            t.strip_prefix('n')
                .filter(|d| d.len() == 6)
                .and_then(|d| d.parse().ok())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_lines_through_two_network_cuts() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::fast_failure()).await;
    let proxy = UdpProxy::start(c.ctl.agents).await;
    let mut agent = outpost_tests::procs::Agent::enroll(&c.ctl, "bastion", &[]);
    agent.start(&[proxy.addr], &AgentOpts::fast_failure());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let (bursts, per) = (10, 20_000);
    let pb = w.playbook("bursts", &bursts_playbook(bursts, per, 2)).await;
    let job = w.launch(&pb, &server).await;
    w.wait_status(&job, JobStatus::Running, MINUTE).await;

    for (cut, threshold) in [(1, 30_000i64), (2, 110_000)] {
        wait_for(&format!("{threshold} lines stored"), 3 * MINUTE, || async {
            (w.store.log_extent(job.id).await.ok()?.1 >= threshold).then_some(())
        })
        .await;
        assert!(
            !w.job(&job).await.status.is_final(),
            "the job must still be running at cut {cut}"
        );
        let before = proxy.dropped();
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(5)).await;
        proxy.restore();
        assert!(proxy.dropped() > before, "cut {cut} dropped nothing");
    }
    w.wait_status(&job, JobStatus::Success, 5 * MINUTE).await;
    let n = w.assert_contiguous(&job).await;
    let lines = w.lines(&job).await;
    let got = numbers(&lines);
    let want: Vec<u32> = (0..bursts).flat_map(|_| 1..=per as u32).collect();
    assert_eq!(got.len(), want.len(), "every printed number stored once");
    assert!(got == want, "numbers out of order");
    assert!(n > bursts * per);
    // The agent really lost and regained the controller twice.
    let connects = agent.log().matches("connected controller=").count();
    assert!(
        connects >= 3,
        "expected at least 3 sessions, saw {connects}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_job_reports_it_failed_with_its_lines() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let mut agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "production").await;
    // The sleep's command line carries this test's own mark.
    let mark = outpost_tests::unique_mark();
    let yaml = format!("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: before the crash\n    - ansible.builtin.shell: \"sleep 131; echo {mark}\"\n");
    let job = w.launch(&w.playbook("crash", &yaml).await, &server).await;
    wait_for("the sleep to start", MINUTE, || async {
        w.lines(&job)
            .await
            .iter()
            .any(|l| l.content.contains("TASK [ansible.builtin.shell]"))
            .then_some(())
    })
    .await;
    // Its process runs: what the restarted agent must kill below.
    outpost_tests::wait_process(&mark, MINUTE).await;
    agent.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    agent.start(&[c.ctl.agents], &AgentOpts::default());
    let failed = w.wait_status(&job, JobStatus::Failed, MINUTE).await;
    assert!(failed
        .error_message
        .unwrap_or_default()
        .contains("agent restarted"));
    w.assert_contiguous(&job).await;
    assert!(w
        .lines(&job)
        .await
        .iter()
        .any(|l| l.content.contains("before the crash")));
    // The orphaned ansible process group was killed by the restarted agent.
    outpost_tests::wait_no_process(&mark, Duration::from_secs(20)).await;
    let tickets = w.tickets(&job).await;
    assert_eq!(tickets.len(), 1);
    // The agent goes on serving.
    let next = w.launch(&w.playbook("after", "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: fine\n").await, &server).await;
    w.wait_status(&next, JobStatus::Success, MINUTE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_returns_fails_its_job_after_the_grace_period() {
    let opts = ControllerOpts {
        agent_grace_secs: 3,
        ..ControllerOpts::default()
    };
    let c = Cluster::start(Backend::Sqlite, opts).await;
    let mut agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "staging").await;
    let mark = outpost_tests::unique_mark();
    let yaml = outpost_tests::world::sleeping_playbook(&mark);
    let job = w.launch(&w.playbook("long", &yaml).await, &server).await;
    w.wait_status(&job, JobStatus::Running, MINUTE).await;
    agent.kill9();
    let lost = std::time::Instant::now();
    let failed = w.wait_status(&job, JobStatus::Failed, MINUTE).await;
    let err = failed.error_message.unwrap_or_default();
    assert!(err.contains("agent lost") && err.contains("3 s"), "{err}");
    // Not before the grace period (3 s), which starts once the idle timeout noticed the loss.
    assert!(
        lost.elapsed() >= Duration::from_secs(3),
        "failed too early: {:?}",
        lost.elapsed()
    );
    let tickets = w.tickets(&job).await;
    assert_eq!(tickets.len(), 1);
    // The killed agent's ansible lives on: end it, and only it (its job's processes).
    agent.reap_orphans();
    outpost_tests::wait_no_process(&mark, MINUTE).await;
}

fn read_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_memory_stays_bounded_while_output_piles_up() {
    // The cut lasts as long as the spool takes to fill: the agent must not be declared lost.
    let c = Cluster::start(
        Backend::Sqlite,
        ControllerOpts {
            agent_grace_secs: 600,
            ..ControllerOpts::fast_failure()
        },
    )
    .await;
    let proxy = UdpProxy::start(c.ctl.agents).await;
    let mut agent = outpost_tests::procs::Agent::enroll(&c.ctl, "bastion", &[]);
    agent.start(&[proxy.addr], &AgentOpts::fast_failure());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    // 50,000 lines of 2 KB: about 100 MB of output. Made by a template in ansible itself: a
    // module's 100 MB result takes ansible two minutes of system time to read back, which on
    // a loaded machine outlasts the test; this prints the same bytes in seconds.
    let yaml = r#"- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: "{{ query('ansible.builtin.sequence', 'start=0 end=49999 format=%06d') | product(['x' * 2000]) | map('join', ' ') | list }}"
"#;
    let job = w.launch(&w.playbook("big", yaml).await, &server).await;
    w.wait_status(&job, JobStatus::Running, MINUTE).await;
    // Cut the network so the output has to pile up in the spool, not in memory.
    proxy.cut();
    let spool = agent.state_dir.join("spool");
    let piled = wait_for(
        "the spool to hold most of the output",
        3 * MINUTE,
        || async {
            let size: u64 = walk_size(&spool);
            (size > 80 * 1024 * 1024).then_some(size)
        },
    )
    .await;
    proxy.restore();
    w.wait_status(&job, JobStatus::Success, 5 * MINUTE).await;
    let n = w.assert_contiguous(&job).await;
    assert!(n > 50_000);
    let pid = agent.pid().expect("running");
    let peak = read_kib(pid, "VmHWM:").expect("VmHWM");
    eprintln!(
        "spool reached {} MiB; agent peak RSS {} MiB",
        piled / 1024 / 1024,
        peak / 1024
    );
    assert!(
        peak < 64 * 1024,
        "agent peak RSS {peak} KiB for ~100 MB of output"
    );
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_size(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// `n` quick tasks named `step 1`…`step n`, with a one-second pause after every `pause_every`.
fn steps_playbook(n: usize, pause_every: usize, tail: &str) -> String {
    let mut y = String::from("- hosts: all\n  gather_facts: false\n  tasks:\n    - name: warm up\n      ansible.builtin.command: sleep 3\n");
    for i in 1..=n {
        y.push_str(&format!(
            "    - name: step {i}\n      ansible.builtin.debug:\n        msg: step {i}\n"
        ));
        if pause_every > 0 && i % pause_every == 0 {
            y.push_str(&format!(
                "    - name: pause {i}\n      ansible.builtin.command: sleep 1\n"
            ));
        }
    }
    y.push_str(tail);
    y
}

/// A job's stored task names, checked to be numbered 1, 2, 3 … without a gap.
async fn result_names(
    w: &outpost_tests::world::World,
    job: &outpost_controller::model::Job,
) -> Vec<String> {
    use outpost_controller::store::results::ResultFilter;
    let f = ResultFilter {
        limit: 5_000,
        ..ResultFilter::default()
    };
    // Polled while results arrive: the rows are read in one statement, the count in another.
    let (rows, _) = w.store.task_results(job.id, &f).await.unwrap();
    let seqs: Vec<i32> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=rows.len() as i32).collect::<Vec<_>>(),
        "results numbered without a gap"
    );
    rows.into_iter().map(|r| r.task).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_results_land_once_through_an_uplink_cut_and_an_agent_kill() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::fast_failure()).await;
    let proxy = UdpProxy::start(c.ctl.agents).await;
    let mut agent = outpost_tests::procs::Agent::enroll(&c.ctl, "bastion", &[]);
    agent.start(&[proxy.addr], &AgentOpts::fast_failure());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;

    // An uplink cut mid-play: the results spooled meanwhile arrive after it, once each.
    let (n, every) = (40, 5);
    let job = w
        .launch(
            &w.playbook("steps", &steps_playbook(n, every, "")).await,
            &server,
        )
        .await;
    wait_for("some results stored", 2 * MINUTE, || async {
        (result_names(w, &job).await.len() >= 8).then_some(())
    })
    .await;
    assert!(
        !w.job(&job).await.status.is_final(),
        "cut while the play runs"
    );
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.restore();
    w.wait_status(&job, JobStatus::Success, 3 * MINUTE).await;
    let mut want = vec!["warm up".to_owned()];
    for i in 1..=n {
        want.push(format!("step {i}"));
        if i % every == 0 {
            want.push(format!("pause {i}"));
        }
    }
    assert_eq!(
        result_names(w, &job).await,
        want,
        "every task's result once, in order"
    );
    let recap = w.store.recap(job.id).await.unwrap().expect("recap");
    assert_eq!(recap.ok as usize, want.len());

    // The agent killed while results wait in its spool (the uplink is cut): the restarted
    // agent delivers them, once each, and nothing of the task it was killed in.
    let mark = outpost_tests::unique_mark();
    let tail = format!(
        "    - name: the long one\n      ansible.builtin.shell: \"sleep 131; echo {mark}\"\n"
    );
    let job = w
        .launch(
            &w.playbook("killed", &steps_playbook(10, 0, &tail)).await,
            &server,
        )
        .await;
    w.wait_status(&job, JobStatus::Running, MINUTE).await;
    proxy.cut();
    outpost_tests::wait_process(&mark, MINUTE).await;
    let stored_at_kill = result_names(w, &job).await.len();
    agent.kill9();
    proxy.restore();
    agent.start(&[proxy.addr], &AgentOpts::fast_failure());
    let failed = w.wait_status(&job, JobStatus::Failed, 2 * MINUTE).await;
    assert!(failed
        .error_message
        .unwrap_or_default()
        .contains("agent restarted"));
    let mut want = vec!["warm up".to_owned()];
    want.extend((1..=10).map(|i| format!("step {i}")));
    assert!(
        stored_at_kill < want.len(),
        "results were still in the spool at the kill ({stored_at_kill})"
    );
    assert_eq!(
        result_names(w, &job).await,
        want,
        "spooled results delivered once after the kill"
    );
    assert!(
        w.store.recap(job.id).await.unwrap().is_none(),
        "ansible never printed a recap"
    );
    outpost_tests::wait_no_process(&mark, Duration::from_secs(20)).await;
}
