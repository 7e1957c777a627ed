//! Controllers as a fleet: two sharing one MariaDB never run a job twice; a controller
//! restarted mid-job loses no line; nor does the database going away mid-ingest.

use std::collections::HashMap;
use std::time::Duration;

use outpost_controller::model::{JobStatus, Paging};
use outpost_controller::store::audit::AuditFilter;
use outpost_tests::cluster::Cluster;
use outpost_tests::mariadb::PrivateMariaDb;
use outpost_tests::procs::{Agent, AgentOpts, Controller, ControllerOpts};
use outpost_tests::world::World;
use outpost_tests::{wait_for, Backend, TestDb};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// Says which host it runs on, then appends a line naming the run (`run` is an extra var the
/// test gives each launch) and the host to `runs` on the target: a record kept outside the
/// controller of how often each job really ran, and where.
fn recorded_run(runs: &std::path::Path) -> String {
    format!(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"job on {{{{ inventory_hostname }}}}\"\n    - ansible.builtin.shell: \"echo '{{{{ run }}}} {{{{ inventory_hostname }}}}' >> {}\"\n",
        runs.display()
    )
}

/// `bursts` debug tasks of `per` numbered lines with a pause after each.
fn bursts(bursts: usize, per: usize, pause: u32) -> String {
    let mut y = format!(
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: seq -f \"n%06g\" 1 {per}\n      register: nums\n"
    );
    for _ in 0..bursts {
        y.push_str(&format!("    - ansible.builtin.debug:\n        var: nums.stdout_lines\n    - ansible.builtin.command: sleep {pause}\n"));
    }
    y
}

fn count_numbers(lines: &[outpost_controller::model::LogLine]) -> usize {
    lines
        .iter()
        .filter(|l| {
            l.content
                .trim()
                .trim_end_matches(',')
                .trim_matches('"')
                .starts_with("n0")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_one_database_every_job_runs_once() {
    let db = TestDb::mariadb().await;
    let data = tempfile::tempdir().unwrap();
    let w = World::new(&db.url).await;
    Controller::init(data.path(), &db.url);
    let a = Controller::start(data.path(), &db.url, "ctl-a", ControllerOpts::default());
    let b = Controller::start(data.path(), &db.url, "ctl-b", ControllerOpts::default());
    let mut agents = Vec::new();
    // Each agent knows only its own controller: agent-0 and agent-1 are ctl-a's, agent-2 and
    // agent-3 ctl-b's, so the agent that ran a job says which controller dispatched it.
    let home = ["ctl-a", "ctl-a", "ctl-b", "ctl-b"];
    for (i, ctl) in [&a, &a, &b, &b].into_iter().enumerate() {
        assert_eq!(ctl.id, home[i]);
        let mut agent = Agent::enroll(ctl, &format!("agent-{i}"), &[]);
        agent.start(
            &[ctl.agents],
            &AgentOpts {
                capacity: 4,
                ..AgentOpts::default()
            },
        );
        agents.push(agent);
    }
    wait_for("four agents online", MINUTE, || async {
        let page = w.store.list_agents(Paging::default()).await.ok()?;
        (page
            .items
            .iter()
            .filter(|a| a.connected_controller.is_some())
            .count()
            == 4)
            .then_some(())
    })
    .await;
    let runs = w.dir.path().join("runs");
    let pb = w.playbook("recorded", &recorded_run(&runs)).await;
    let mut servers = Vec::new();
    for i in 0..20 {
        servers.push(
            w.local_server(&format!("node{i:02}"), json!({}), "dev")
                .await,
        );
    }
    // (job, the name its run records, the host it was launched on)
    let mut jobs = Vec::new();
    for round in 0..10 {
        for s in &servers {
            let run = format!("run-{round}-{}", s.hostname);
            let job = w.launch_with(&pb, s, Some(json!({ "run": run }))).await;
            jobs.push((job, run, s.hostname.clone()));
        }
    }
    assert_eq!(jobs.len(), 200);
    for (job, _, _) in &jobs {
        w.wait_status(job, JobStatus::Success, 10 * MINUTE).await;
    }
    // What ran on the targets: each launch's run exactly once, on the host it was launched on.
    let recorded = std::fs::read_to_string(&runs).expect("the targets' record of runs");
    let mut ran: HashMap<&str, Vec<&str>> = HashMap::new();
    for line in recorded.lines() {
        let (run, host) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("a line of the record: {line:?}"));
        ran.entry(run).or_default().push(host);
    }
    for (job, run, host) in &jobs {
        assert_eq!(
            ran.get(run.as_str()),
            Some(&vec![host.as_str()]),
            "job {} ran once, on {host}",
            job.job_id
        );
    }
    assert_eq!(recorded.lines().count(), 200, "nothing else ran");
    // Exactly one dispatch and one start per job, whichever controller made it.
    let audit = w
        .store
        .list_audit(
            &AuditFilter {
                resource_type: Some("job".into()),
                ..Default::default()
            },
            Paging::new(1000, 0),
        )
        .await
        .unwrap();
    let mut per_job: HashMap<(i32, String), usize> = HashMap::new();
    let mut offset = 0;
    let mut total = audit.total;
    while offset < total {
        let page = w
            .store
            .list_audit(
                &AuditFilter {
                    resource_type: Some("job".into()),
                    ..Default::default()
                },
                Paging::new(1000, offset),
            )
            .await
            .unwrap();
        total = page.total;
        for e in &page.items {
            *per_job
                .entry((e.resource_id.unwrap(), e.action.clone()))
                .or_default() += 1;
        }
        offset += 1000;
    }
    let mut by_agent: HashMap<i32, usize> = HashMap::new();
    for (job, _, host) in &jobs {
        assert_eq!(
            per_job.get(&(job.id.0, "DISPATCH".into())),
            Some(&1),
            "job {} dispatched once",
            job.job_id
        );
        assert_eq!(
            per_job.get(&(job.id.0, "START".into())),
            Some(&1),
            "job {} started once",
            job.job_id
        );
        assert_eq!(
            per_job.get(&(job.id.0, "FINISH".into())),
            Some(&1),
            "job {} finished once",
            job.job_id
        );
        let j = w.job(job).await;
        *by_agent.entry(j.agent_id.unwrap().0).or_default() += 1;
        // One run's output in the job's log, and it is its own host's.
        let lines = w.lines(job).await;
        let said: Vec<&str> = lines
            .iter()
            .filter(|l| l.content.contains("\"msg\": \"job on node"))
            .map(|l| l.content.as_str())
            .collect();
        assert_eq!(said.len(), 1, "one run's output: {said:?}");
        assert!(
            said[0].contains(&format!("\"msg\": \"job on {host}\"")),
            "job {}'s output is {host}'s: {said:?}",
            job.job_id
        );
    }
    // Both controllers handed out work: each through its own agents (whose only controller
    // it is), whichever the store says they are connected to now.
    let page = w.store.list_agents(Paging::default()).await.unwrap();
    let mut by_controller: HashMap<&str, usize> = HashMap::new();
    for a in &page.items {
        let i: usize = a
            .name
            .strip_prefix("agent-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("an agent of this test: {}", a.name));
        *by_controller.entry(home[i]).or_default() += by_agent.get(&a.id.0).copied().unwrap_or(0);
    }
    assert_eq!(
        by_controller.values().sum::<usize>(),
        200,
        "{by_controller:?}"
    );
    for ctl in ["ctl-a", "ctl-b"] {
        assert!(
            by_controller.get(ctl).copied().unwrap_or(0) > 0,
            "{ctl} dispatched nothing: {by_controller:?}"
        );
    }
    drop(agents);
}

async fn restart_mid_job(backend: Backend, hard: bool) {
    let c = Cluster::start(backend, ControllerOpts::default()).await;
    let mut c = c;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    let server = w.local_server("web1", json!({}), "dev").await;
    let job = w
        .launch(&w.playbook("bursts", &bursts(6, 3000, 2)).await, &server)
        .await;
    wait_for("the first burst stored", MINUTE, || async {
        (w.store.log_extent(job.id).await.ok()?.1 >= 3000).then_some(())
    })
    .await;
    if hard {
        c.ctl.kill();
    } else {
        assert!(c.ctl.stop().success(), "clean exit on SIGTERM");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.ctl.restart();
    w.wait_status(&job, JobStatus::Success, 3 * MINUTE).await;
    w.assert_contiguous(&job).await;
    assert_eq!(count_numbers(&w.lines(&job).await), 6 * 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_stopped_and_restarted_mid_job_mariadb() {
    restart_mid_job(Backend::MariaDb, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_killed_and_restarted_mid_job_sqlite() {
    restart_mid_job(Backend::Sqlite, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restarted_mid_ingest_loses_nothing() {
    let mut mdb = PrivateMariaDb::start();
    let data = tempfile::tempdir().unwrap();
    let w = World::new(&mdb.url()).await;
    Controller::init(data.path(), &mdb.url());
    let ctl = Controller::start(data.path(), &mdb.url(), "ctl", ControllerOpts::default());
    let _agent = {
        let mut a = Agent::enroll(&ctl, "bastion", &[]);
        a.start(&[ctl.agents], &AgentOpts::default());
        a
    };
    let server = w.local_server("web1", json!({}), "dev").await;
    let job = w
        .launch(&w.playbook("bursts", &bursts(8, 5000, 1)).await, &server)
        .await;
    wait_for("some lines stored", MINUTE, || async {
        (w.store.log_extent(job.id).await.ok()?.1 >= 5000).then_some(())
    })
    .await;
    let stored_before = w.store.log_extent(job.id).await.unwrap().1;
    mdb.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    mdb.restart();
    w.wait_status(&job, JobStatus::Success, 3 * MINUTE).await;
    w.assert_contiguous(&job).await;
    assert_eq!(count_numbers(&w.lines(&job).await), 8 * 5000);
    // The outage fell in the middle of the output: most of it was stored after the restart.
    assert!(
        stored_before < 8 * 5000 / 2,
        "{stored_before} lines were in before the outage"
    );
}

/// The seed asks for TLS on database connections: a MariaDB that refuses plain TCP is reached
/// with `ssl-mode=VERIFY_CA` and the CA that signed it, and refused with another CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_connects_to_a_mariadb_that_requires_tls() {
    use outpost_controller::{PoolConfig, Store};
    let (mdb, ca) = PrivateMariaDb::start_tls();
    let tls_url = format!("{}?ssl-mode=VERIFY_CA&ssl-ca={}", mdb.url(), ca.display());
    let store = Store::connect(&tls_url, &PoolConfig::default())
        .await
        .expect("a TLS connection verified against the CA");
    store.migrate_up().await.expect("migrations over TLS");
    store.ping().await.unwrap();
    store.close().await;
    // Without TLS the server refuses.
    let plain = format!("{}?ssl-mode=DISABLED", mdb.url());

    let err = Store::connect(&plain, &PoolConfig::default())
        .await
        .unwrap_err();
    // MySQL 8 says why; MariaDB only refuses the login: either way the error names the fix.
    assert!(err.to_string().contains("ssl-mode=VERIFY_CA"), "{err}");
    // And a server whose certificate another CA signed is not trusted.
    let other = tempfile::tempdir().unwrap();
    let stranger =
        outpost_protocol::pki::Ca::generate("stranger", Duration::from_secs(3600)).unwrap();
    let stranger_pem = other.path().join("ca.pem");
    std::fs::write(&stranger_pem, stranger.cert_pem()).unwrap();
    let wrong = format!(
        "{}?ssl-mode=VERIFY_CA&ssl-ca={}",
        mdb.url(),
        stranger_pem.display()
    );
    assert!(Store::connect(&wrong, &PoolConfig::default())
        .await
        .is_err());
}

/// A controller killed and started again answers its previous run's connections with a QUIC
/// stateless reset (its reset key is kept with its PKI): the agent reconnects at once (1.5 s
/// measured: a heartbeat interval and a backoff), where without the reset it waits out the
/// connection's idle timeout, the smaller of the controller's (10 s) and its own (60 s here):
/// 11.6 s measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_learn_of_a_restarted_controller_at_once() {
    let mut c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let idle = AgentOpts {
        idle_timeout_ms: 60_000,
        ..AgentOpts::default()
    };
    let agent = c.agent("bastion", &[], &idle);
    let sessions = |a: &Agent| a.log().matches(": connected ").count();
    wait_for("the first session", MINUTE, || async {
        (sessions(&agent) == 1).then_some(())
    })
    .await;
    let key = std::fs::read_to_string(c.data.path().join("pki/quic-reset.key")).expect("reset key");
    c.ctl.kill();
    c.ctl.restart();
    let restarted = std::time::Instant::now();
    wait_for("the agent back in a new session", MINUTE, || async {
        (sessions(&agent) == 2).then_some(())
    })
    .await;
    let back = restarted.elapsed();
    assert!(
        back < Duration::from_secs(8),
        "back after {back:?}: the agent waited for its idle timeout instead of a reset"
    );
    assert_eq!(
        std::fs::read_to_string(c.data.path().join("pki/quic-reset.key")).expect("reset key"),
        key,
        "the reset key survives a restart"
    );
}
