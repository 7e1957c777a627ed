//! A team's real repository runs through Outpost: a git project with a role, a template, a
//! static file, `group_vars/` and a collection from `requirements.yml` is synced by the
//! controller, delivered to a datacenter's bastion over its QUIC session, run there over SSH,
//! and its stored log is what `ansible-playbook` prints in a checkout by hand. A second job does
//! not transfer the revision again; a new commit is synced and picked up.

use std::time::Duration;

use outpost_tests::api::{job_ended, login, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::fleet::Fleet;
use outpost_tests::procs::{Agent, AgentOpts, ControllerOpts};
use outpost_tests::proxy::{Impairment, UdpProxy};
use outpost_tests::repo::{random_repository, GitDaemon, TeamRepo};
use outpost_tests::{unique_mark, wait_for, Backend};
use reqwest::Method;
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);

/// The controller's count of revision bytes sent to agents.
async fn bytes_served(c: &Cluster) -> u64 {
    let text = c
        .ctl
        .api()
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("outpost_revision_bytes_served_total "))
        .map(|v| v.trim().parse().expect("a number"))
        .unwrap_or_else(|| panic!("no outpost_revision_bytes_served_total in:\n{text}"))
}

/// Waits for the project's sync to end and returns the project; panics if it failed.
async fn synced(api: &outpost_api::client::Client, id: i64, past_commit: Option<&str>) -> Value {
    wait_for("the project to sync", 2 * MINUTE, || async {
        let p: Value = api.get(&format!("/api/v1/projects/{id}")).await.ok()?;
        match p["sync_state"].as_str() {
            Some("failed") => panic!("sync failed: {}", p["sync_error"]),
            Some("ok") if p["current_revision"]["commit"].as_str() != past_commit => Some(p),
            _ => None,
        }
    })
    .await
}

async fn run_job(
    c: &Cluster,
    api: &outpost_api::client::Client,
    project: &str,
    server: &str,
) -> (Value, Vec<String>) {
    let launched: Value = api
        .post(
            "/api/v1/jobs",
            &json!({"project": project, "playbook_path": "site.yml", "servers": [server]}),
        )
        .await
        .expect("launch by project and playbook path");
    let id = launched["jobs"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job in {launched}"))
        .to_owned();
    let job = job_ended(api, &id).await;
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page: outpost_api::LogPage = api
            .get(&format!("/api/v1/jobs/{id}/logs?after={after}&limit=1000"))
            .await
            .expect("logs");
        stored.extend(page.lines.iter().map(|l| l.content.clone()));
        after = page.next_after;
        if page.complete {
            break;
        }
    }
    let _ = c;
    (job, stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_git_repository_runs_in_a_datacenter_as_it_does_by_hand() {
    let mut fleet = Fleet::start();
    fleet.add_datacenter("fra1");
    let c = Cluster::for_fleet(Backend::MariaDb, &fleet, ControllerOpts::default()).await;
    let _agent = c.fleet_agent(&fleet, "fra1", c.ctl.agents, &AgentOpts::default());
    let out = fleet.dir.path().join(unique_mark());
    std::fs::create_dir_all(&out).expect("out dir");
    let repo = TeamRepo::create(&out.display().to_string());
    let daemon = GitDaemon::serve(repo.base());
    let server = fleet.register(&c.world, "fra1", "web-fra1").await;
    let api = login(&c.ctl, "ops", PASSWORD).await;
    let _: Value = api
        .patch(
            &format!("/api/v1/servers/{}", server.id.0),
            &json!({"inventory_groups": [["web"]]}),
        )
        .await
        .expect("put the server in group web");

    let created: Value = api
        .post(
            "/api/v1/projects",
            &json!({"name": "team", "git_url": daemon.url("team.git"), "git_ref": "main", "kind": "git"}),
        )
        .await
        .expect("create the project");
    let pid = created["id"].as_i64().expect("project id");
    let first = synced(&api, pid, None).await;
    let commit = repo.head();
    assert_eq!(
        first["current_revision"]["commit"],
        commit.as_str(),
        "{first}"
    );
    let digest = first["current_revision"]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    assert_eq!(digest.len(), 64);

    // The job: the role's template and file land on the target, with group_vars applied.
    let before = bytes_served(&c).await;
    let (job, stored) = run_job(&c, &api, "team", "web-fra1").await;
    assert_eq!(job["status"], "success", "{job}\n{}", stored.join("\n"));
    assert_eq!(job["revision"]["digest"], digest.as_str(), "{job}");
    assert_eq!(job["revision"]["commit"], commit.as_str(), "{job}");
    assert_eq!(
        std::fs::read_to_string(out.join("motd")).expect("the template was rendered"),
        "Welcome to web-fra1 in fra1\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("banner.txt")).expect("the file was copied"),
        "a static banner from the role\n"
    );
    assert!(
        stored.iter().any(|l| l.contains("HELLO FROM GROUP_VARS!")),
        "the collection's filter ran on the group variable:\n{}",
        stored.join("\n")
    );
    let served = bytes_served(&c).await - before;
    assert!(
        served > 0,
        "the revision was not delivered over the session"
    );

    // By hand in a checkout of the same commit, on the bastion, same inventory: same lines.
    // (The target's files are removed first, so both runs report the same "changed".)
    std::fs::remove_file(out.join("motd")).expect("rm motd");
    std::fs::remove_file(out.join("banner.txt")).expect("rm banner");
    let checkout = repo.checkout(&commit);
    let mut inventory = fleet.inventory(&server);
    let host = inventory["all"]["hosts"].take();
    inventory = json!({"all": {"children": {"web": {"hosts": host}}}});
    let hand = fleet.dc("fra1").ansible_playbook_in(
        checkout.path(),
        &inventory,
        std::path::Path::new("site.yml"),
        &json!({}),
    );
    let by_hand: Vec<String> = String::from_utf8_lossy(&hand.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        hand.status.success(),
        "hand run failed:\n{}",
        by_hand.join("\n")
    );
    assert_eq!(
        stored, by_hand,
        "the stored log differs from a hand run in a checkout"
    );

    // A second job on the same revision is not transferred again.
    let before = bytes_served(&c).await;
    let (job2, _) = run_job(&c, &api, "team", "web-fra1").await;
    assert_eq!(job2["status"], "success", "{job2}");
    assert_eq!(
        bytes_served(&c).await,
        before,
        "the cached revision was sent again"
    );

    // A new commit is synced and picked up by the next job.
    let commit2 = repo.commit(
        "roles/common/templates/motd.j2",
        "Second edition for {{ inventory_hostname }} in {{ dc_name }}\n",
        "a new motd",
    );
    let _: Value = api
        .post(&format!("/api/v1/projects/{pid}/sync"), &json!({}))
        .await
        .expect("sync again");
    let second = synced(&api, pid, Some(&commit)).await;
    assert_eq!(second["current_revision"]["commit"], commit2.as_str());
    assert_ne!(second["current_revision"]["digest"], digest.as_str());
    let (job3, stored3) = run_job(&c, &api, "team", "web-fra1").await;
    assert_eq!(job3["status"], "success", "{job3}\n{}", stored3.join("\n"));
    assert_eq!(job3["revision"]["commit"], commit2.as_str());
    assert_eq!(
        std::fs::read_to_string(out.join("motd")).expect("motd"),
        "Second edition for web-fra1 in fra1\n"
    );
    // The first job still names the revision it ran.
    let again: Value = api
        .get(&format!(
            "/api/v1/jobs/{}",
            job["id"].as_str().unwrap_or_default()
        ))
        .await
        .expect("job");
    assert_eq!(again["revision"]["commit"], commit.as_str());
    drop(daemon);
}

/// The length of the agent's part file of a revision being fetched (None: there is none).
fn part_len(agent: &Agent) -> Option<u64> {
    let dir = agent.state_dir.join("revisions");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name();
        name.to_str()?
            .ends_with(".part")
            .then(|| e.metadata().ok().map(|m| m.len()))?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_transfer_cut_midway_resumes_from_what_had_arrived() {
    let c = Cluster::start(Backend::MariaDb, ControllerOpts::fast_failure()).await;
    // A far link (50 ms each way, nothing lost) makes a 32 MiB transfer take seconds.
    let relay = UdpProxy::start_on(
        std::net::Ipv4Addr::LOCALHOST.into(),
        c.ctl.agents,
        Impairment {
            delay: Duration::from_millis(50),
            loss: 0.0,
        },
    )
    .await;
    let mut agent = Agent::enroll(&c.ctl, "bastion-far", &["dc=far"]);
    agent.start(&[relay.addr], &AgentOpts::fast_failure());
    let (_repo, daemon) = random_repository(32);
    let api = login(&c.ctl, "ops", PASSWORD).await;
    let created: Value = api
        .post(
            "/api/v1/projects",
            &json!({"name": "big", "git_url": daemon.url("big.git"), "git_ref": "main", "kind": "git"}),
        )
        .await
        .expect("create the project");
    let pid = created["id"].as_i64().expect("project id");
    let project = synced(&api, pid, None).await;
    let size = project["current_revision"]["size_bytes"]
        .as_u64()
        .expect("revision size");
    c.world
        .local_server("far-host", json!({"dc": "far"}), "dev")
        .await;
    let launched: Value = api
        .post(
            "/api/v1/jobs",
            &json!({"project": "big", "playbook_path": "site.yml", "servers": ["far-host"]}),
        )
        .await
        .expect("launch");
    let id = launched["jobs"][0]["id"]
        .as_str()
        .expect("job id")
        .to_owned();

    // Cut once some of it has arrived, for longer than either side waits for the other.
    let arrived = wait_for("the first chunks to arrive", MINUTE, || async {
        part_len(&agent).filter(|n| *n > 0)
    })
    .await;
    relay.cut();
    assert!(arrived < size, "the whole revision arrived before the cut");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = part_len(&agent).expect("the part file is kept through the cut");
    assert!(during >= arrived && during < size, "{during} of {size}");
    relay.restore();

    let job = job_ended(&api, &id).await;
    assert_eq!(job["status"], "success", "{job}\n{}", agent.log());
    // The fetch went on from what it held, not from the start.
    let log = agent.log();
    let resumed = log
        .lines()
        .filter(|l| l.contains("resuming"))
        .filter_map(|l| {
            l.split("have=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or_else(|| panic!("the agent never resumed a fetch:\n{log}"));
    assert!(resumed >= during, "resumed from {resumed}, held {during}");
    assert_eq!(
        part_len(&agent),
        None,
        "the part file is gone once the revision is whole"
    );
}

/// The project's servers as the API lists them, by hostname.
async fn servers_named(
    api: &outpost_api::client::Client,
    prefix: &str,
) -> std::collections::BTreeMap<String, Value> {
    let page: Value = api
        .get("/api/v1/servers?limit=1000")
        .await
        .expect("servers");
    page["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| {
            let name = s["hostname"].as_str()?.to_owned();
            name.starts_with(prefix).then_some((name, s))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projects_inventory_file_is_read_as_ansible_reads_it_at_every_sync() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let repo = TeamRepo::create("/nonexistent");
    // A range, a group of groups, and group_vars/ beside the inventory file: what Outpost's
    // own reader never understood and ansible does.
    repo.commit(
        "inventory/hosts.ini",
        "[web]\nweb[01:03] ansible_host=10.20.0.7\n\n[prod:children]\nweb\n",
        "an inventory",
    );
    repo.commit(
        "inventory/group_vars/web.yml",
        "http_port: 8080\n",
        "group vars for web",
    );
    let daemon = GitDaemon::serve(repo.base());
    let api = login(&c.ctl, "ops", PASSWORD).await;
    let created: Value = api
        .post(
            "/api/v1/projects",
            &json!({"name": "inv", "kind": "git", "git_url": daemon.url("team.git"),
                    "git_ref": "main", "inventory_path": "inventory/hosts.ini"}),
        )
        .await
        .expect("create the project");
    let pid = created["id"].as_i64().expect("project id");
    let first = synced(&api, pid, None).await;
    let servers = wait_for("the inventory's servers", MINUTE, || async {
        let s = servers_named(&api, "web0").await;
        (s.len() == 3).then_some(s)
    })
    .await;
    for (name, s) in &servers {
        assert_eq!(s["ip_address"], "10.20.0.7", "{name}: {s}");
        assert_eq!(
            s["inventory_groups"],
            json!([["prod", "web"]]),
            "{name}: {s}"
        );
        assert_eq!(s["host_vars"]["http_port"], 8080, "{name}: {s}");
    }

    // The next commit grows the range; the next sync records the fourth server.
    let commit = first["current_revision"]["commit"]
        .as_str()
        .map(str::to_owned);
    repo.commit(
        "inventory/hosts.ini",
        "[web]\nweb[01:04] ansible_host=10.20.0.7\n\n[prod:children]\nweb\n",
        "a fourth web server",
    );
    let _: Value = api
        .post(&format!("/api/v1/projects/{pid}/sync"), &json!({}))
        .await
        .expect("sync again");
    synced(&api, pid, commit.as_deref()).await;
    wait_for("the fourth server", MINUTE, || async {
        (servers_named(&api, "web0").await.len() == 4).then_some(())
    })
    .await;

    // An inventory ansible cannot read fails the sync and keeps the revision that was.
    let before = synced(&api, pid, None).await["current_revision"]["digest"].clone();
    repo.commit(
        "inventory/hosts.ini",
        "[web\nbroken\n",
        "a broken inventory",
    );
    let _: Value = api
        .post(&format!("/api/v1/projects/{pid}/sync"), &json!({}))
        .await
        .expect("sync a broken inventory");
    let failed: Value = wait_for("the sync to fail", MINUTE, || async {
        let p: Value = api.get(&format!("/api/v1/projects/{pid}")).await.ok()?;
        (p["sync_state"] == "failed").then_some(p)
    })
    .await;
    let why = failed["sync_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("ansible-inventory -i inventory/hosts.ini failed"),
        "{why}"
    );
    assert_eq!(failed["current_revision"]["digest"], before);
}
