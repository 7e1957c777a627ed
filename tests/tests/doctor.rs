//! `outpost-agent doctor` on a real enrolled agent: passes when healthy, and names each problem
//! of a broken bastion (missing ansible, a private key others can read, an unreachable
//! controller, an unreadable SSH key) with a non-zero exit; and `outpost-agent status`, which
//! says online only once the controller has welcomed the agent.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{bin, Agent, AgentOpts, ControllerOpts};
use outpost_tests::{output_text, wait_blocking, Backend};

fn doctor(agent: &Agent, extra: &[&str]) -> (bool, String) {
    let out = Command::new(bin("outpost-agent"))
        .arg("doctor")
        .arg("--state-dir")
        .arg(&agent.state_dir)
        .args(extra)
        .env_remove("OUTPOST_CONTROLLERS")
        .output()
        .expect("run doctor");
    (out.status.success(), output_text(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_agent_and_names_what_is_broken() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let agent = Agent::enroll(&c.ctl, "bastion", &[]);
    let key = tempfile::NamedTempFile::new().expect("key");
    std::fs::write(key.path(), "-----BEGIN OPENSSH PRIVATE KEY-----\n...\n").expect("key");
    let key_path = key.path().display().to_string();

    let (ok, out) = doctor(&agent, &["--ssh-key", &key_path]);
    assert!(ok, "{out}");
    assert!(out.contains("handshake accepted"), "{out}");
    assert!(out.contains("ansible-playbook [core"), "{out}");
    assert!(out.contains("days left"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");

    // ansible missing.
    let (ok, out) = doctor(
        &agent,
        &["--ansible-playbook", "/nonexistent/ansible-playbook"],
    );
    assert!(!ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("ansible"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("install ansible-core"), "{line}");

    // The private key readable by others.
    let key_file = agent.state_dir.join("agent.key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (ok, out) = doctor(&agent, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("private key") && l.contains("0644")),
        "{out}"
    );
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // A controller address where nothing answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let (ok, out) = doctor(&agent, &["--controller", &addr]);
    assert!(!ok, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("FAIL")
            && l.contains(&addr)
            && l.contains("no answer over UDP")),
        "{out}"
    );

    // An SSH key that is not there.
    let (ok, out) = doctor(&agent, &["--ssh-key", "/nonexistent/id_ed25519"]);
    assert!(!ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("/nonexistent/id_ed25519")),
        "{out}"
    );
}

fn status(agent: &Agent, wait: &str) -> (bool, String) {
    let out = Command::new(bin("outpost-agent"))
        .arg("status")
        .arg("--state-dir")
        .arg(&agent.state_dir)
        .args(["--wait", wait])
        .output()
        .expect("run status");
    (out.status.success(), output_text(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_online_only_once_the_controller_has_the_agent() {
    let mut c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let mut agent = Agent::enroll(&c.ctl, "bastion", &[]);
    let (ok, out) = status(&agent, "0");
    assert!(!ok && out.contains("not running"), "{out}");

    agent.start(&[c.ctl.agents], &AgentOpts::default());
    let (ok, out) = status(&agent, "60");
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("online: the controller at {}", c.ctl.agents)),
        "{out}"
    );
    let online = c
        .world
        .store
        .get_agent_by_name("bastion")
        .await
        .expect("agent");
    assert!(
        online.connected_controller.is_some(),
        "the controller agrees"
    );

    // The controller goes away: the agent says it is connecting, and why.
    c.ctl.stop();
    wait_blocking("status to leave online", Duration::from_secs(60), || {
        !status(&agent, "0").0
    });
    let (_, out) = status(&agent, "0");
    assert!(out.contains("connecting for"), "{out}");
    assert!(
        out.contains(&c.ctl.agents.to_string()),
        "names the address: {out}"
    );

    agent.stop(Duration::from_secs(30));
    let (ok, out) = status(&agent, "0");
    assert!(
        !ok && out.contains("stopped: the service was stopped"),
        "{out}"
    );
}
