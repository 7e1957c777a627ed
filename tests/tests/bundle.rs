//! Install bundles, end to end: `outpost-controller bundle` makes one, its `install.yml` is run
//! with `ansible-playbook` against a test-fleet datacenter's sshd (the bastion), and the agent
//! it installs comes online with the bundle's labels and runs a job there. A second run changes
//! nothing; a second bastion with the same (spent) token fails and says why. An agent that is
//! not root enrols as its own user, and a link it plants in its state directory does not make
//! root chown what the link points at. Through the API, bundles are for admins, and a bad
//! request gets a clear refusal with no token left behind.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use outpost_controller::model::{JobStatus, Role};
use outpost_tests::api::{login, user, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::fleet::Fleet;
use outpost_tests::procs::{bin, ControllerOpts};
use outpost_tests::{output_text, run_ok, workspace_root, Backend};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Unpacks `archive` into `into` with tar(1), as an operator would; the bundle's directory.
fn unpack(archive: &Path, into: &Path) -> PathBuf {
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(archive)
            .arg("-C")
            .arg(into),
        "tar -xzf",
    );
    let dirs: Vec<PathBuf> = std::fs::read_dir(into)
        .expect("unpacked")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "one directory in the bundle: {dirs:?}");
    dirs[0].clone()
}

/// The ansible-playbook the installed agent is to run: its real path, since the agent is
/// started from an SSH session whose PATH may not reach a shim.
fn ansible_playbook_path() -> String {
    let out = run_ok(
        Command::new("ansible-playbook").arg("--version"),
        "ansible-playbook --version (install ansible-core: python3 -m pip install ansible-core)",
    );
    let text = output_text(&out);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("executable location = "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no executable location in: {text}"))
}

/// A stripped copy of the agent in `dir`: what a package ships, and a tenth of the debug
/// build's size to compress and copy.
fn stripped_agent(dir: &Path) -> PathBuf {
    let copy = dir.join("outpost-agent");
    run_ok(
        Command::new("strip")
            .arg("-o")
            .arg(&copy)
            .arg(bin("outpost-agent")),
        "strip (binutils)",
    );
    copy
}

/// `outpost-controller bundle` for agent `name` (labelled dc=fra1) of the fleet's controller,
/// written into `dir`: what it printed, and the archive.
fn make_bundle(
    c: &Cluster,
    fleet: &Fleet,
    name: &str,
    agent_binary: &Path,
    dir: &Path,
) -> (String, PathBuf) {
    let archive = dir.join(format!("{name}.tar.gz"));
    let made = run_ok(
        Command::new(bin("outpost-controller"))
            .arg("bundle")
            .arg("--data-dir")
            .arg(&c.ctl.data_dir)
            .args(["--database-url", &c.ctl.database_url])
            .args(["--name", name, "--label", "dc=fra1"])
            .args(["--address", &fleet.host_ip().to_string()])
            .args(["--agent-port", &c.ctl.agents.port().to_string()])
            .args(["--enroll-port", &c.ctl.enroll.port().to_string()])
            .arg("--agent-binary")
            .arg(agent_binary)
            .arg("-o")
            .arg(&archive),
        "outpost-controller bundle",
    );
    (output_text(&made), archive)
}

/// The account of an agent that is not root. install.yml creates it; the test removes it (and
/// its group) when it ends, after the fleet has killed the agent running as it.
struct AgentAccount(&'static str);

impl AgentAccount {
    fn uid(&self) -> u32 {
        let out = run_ok(Command::new("id").args(["-u", self.0]), "id -u");
        output_text(&out)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("uid of {}: {e}", self.0))
    }

    /// `program args…` run as this account, as the agent could.
    fn run(&self, args: &[&std::ffi::OsStr]) {
        run_ok(
            Command::new("runuser")
                .args(["-u", self.0, "--"])
                .args(args),
            "runuser (util-linux)",
        );
    }
}

impl Drop for AgentAccount {
    fn drop(&mut self) {
        let _ = Command::new("userdel").args(["-f", self.0]).output();
        let _ = Command::new("groupdel").arg(self.0).output();
    }
}

/// Enrolment tokens install.yml left in the temporary directory.
fn tokens_left() -> Vec<PathBuf> {
    std::fs::read_dir("/tmp")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(".outpost-enroll"))
                .collect()
        })
        .unwrap_or_default()
}

/// The PLAY RECAP's counters for the one host.
fn recap(out: &str) -> String {
    out.lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .nth(1)
        .unwrap_or_else(|| panic!("no PLAY RECAP in:\n{out}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_installs_an_agent_over_ssh_that_comes_online_and_runs_jobs() {
    // Declared first, dropped last: the installed agents are stopped with the fleet, and then
    // the account one of them ran as is removed.
    let account = AgentAccount("outpost-test-agent");
    let roots = tempfile::tempdir().expect("install roots");
    let mut fleet = Fleet::start();
    fleet.add_datacenter("fra1");
    let c = Cluster::for_fleet(Backend::MariaDb, &fleet, ControllerOpts::default()).await;
    let w = &c.world;

    // The bundle, made where the controller runs.
    let work = tempfile::tempdir().expect("operator's machine");
    let build = tempfile::tempdir().expect("build");
    let agent_binary = stripped_agent(build.path());
    let (said, archive) = make_bundle(&c, &fleet, "bastion-fra1", &agent_binary, build.path());
    assert!(
        said.contains("ansible-playbook -i BASTION, install.yml"),
        "{said}"
    );
    assert!(
        !said.contains("opt1."),
        "the token is never printed: {said}"
    );
    assert_eq!(mode(&archive), 0o600, "the archive holds a secret");
    let bundle = unpack(&archive, work.path());
    assert!(bundle.ends_with("outpost-agent-bastion-fra1"));
    assert_eq!(mode(&bundle.join("enroll-token")), 0o600);
    assert_eq!(mode(&bundle.join("outpost-agent")), 0o755);
    let token = std::fs::read_to_string(bundle.join("enroll-token")).expect("token");
    let token = token.trim();
    assert!(token.starts_with("opt1."), "{token}");
    let vars = std::fs::read_to_string(bundle.join("bundle.yml")).expect("bundle.yml");
    assert!(
        vars.contains(&format!("{}:{}", fleet.host_ip(), c.ctl.enroll.port())),
        "{vars}"
    );

    // install.yml, run in the datacenter against its bastion over SSH.
    let root = roots.path().join("bastion");
    let inventory = fleet.bastion_inventory("fra1", "bastion-fra1");
    let settings = json!({
        "outpost_root": root.display().to_string(),
        // The test's bastion shares this machine: no user is added, and there is no systemd.
        "outpost_user": "root",
        "outpost_init": "daemon",
        "outpost_become": false,
        "outpost_ansible_playbook": ansible_playbook_path(),
    });
    let dc = fleet.dc("fra1");
    let install = || {
        let out = dc.ansible_playbook(&inventory, &bundle.join("install.yml"), &settings);
        (out.status.success(), output_text(&out))
    };
    let (ok, first) = install();
    assert!(ok, "install.yml failed:\n{first}");
    assert!(
        !first.contains(token),
        "the token shows in ansible's output:\n{first}"
    );
    assert!(first.contains("online: the controller at"), "{first}");
    assert!(recap(&first).contains("failed=0"), "{first}");

    // Installed as the bundle says, inside the bastion's root.
    let state = root.join("var/lib/outpost-agent");
    assert_eq!(mode(&root.join("usr/local/bin/outpost-agent")), 0o755);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("agent.key")), 0o600);
    assert!(
        !state.join("enroll-token").exists() && tokens_left().is_empty(),
        "the token is removed from the bastion: {:?}",
        tokens_left()
    );
    // Written by root: outside the state directory, which is the agent's user's.
    let pid_file = root.join("run/outpost-agent.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("pid file");
    assert!(root.join("var/log/outpost-agent.log").exists());

    // Online at the controller, with the bundle's labels, and it runs jobs in its datacenter.
    let agent = w
        .store
        .get_agent_by_name("bastion-fra1")
        .await
        .expect("the agent is enrolled");
    assert!(agent.connected_controller.is_some(), "online");
    assert_eq!(
        agent.label_pairs(),
        vec![("dc".to_owned(), "fra1".to_owned())]
    );
    let server = fleet.register(w, "fra1", "web-fra1").await;
    let yaml =
        std::fs::read_to_string(workspace_root().join("examples/ping.yml")).expect("ping.yml");
    let pb = w.playbook("ping", &yaml).await;
    let job = w.launch(&pb, &server).await;
    let done = w.wait_final(&job, 2 * MINUTE).await;
    assert_eq!(done.status, JobStatus::Success, "{:?}", w.lines(&job).await);
    assert_eq!(done.agent_id, Some(agent.id), "run by the installed agent");

    // Again: nothing changes, and the same process goes on.
    let (ok, second) = install();
    assert!(ok, "second run failed:\n{second}");
    assert!(recap(&second).contains("changed=0"), "{second}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file"),
        pid,
        "the agent was not restarted"
    );

    // Another bastion with the same bundle: the token is spent, and the run says so.
    let other = merge(
        &settings,
        &json!({"outpost_root": roots.path().join("second").display().to_string()}),
    );
    let out = dc.ansible_playbook(&inventory, &bundle.join("install.yml"), &other);
    let text = output_text(&out);
    assert!(!out.status.success(), "a spent token must fail:\n{text}");
    assert!(text.contains("was already used"), "{text}");
    assert!(text.contains("make a new bundle"), "{text}");
    assert!(
        !roots
            .path()
            .join("second/var/lib/outpost-agent/enroll-token")
            .exists()
            && tokens_left().is_empty(),
        "the token is removed after a failure too: {:?}",
        tokens_left()
    );

    // An agent that is not root, as on a real bastion: install.yml creates its account, and
    // the agent enrols, and runs, as it.
    std::fs::set_permissions(roots.path(), std::fs::Permissions::from_mode(0o755))
        .expect("let the agent's user reach its install root");
    let unprivileged = roots.path().join("unprivileged");
    let as_user = merge(
        &settings,
        &json!({"outpost_root": unprivileged.display().to_string(), "outpost_user": account.0}),
    );
    let install_as_user = |name: &str| {
        let dir = tempfile::tempdir().expect("bundle dir");
        let (_, archive) = make_bundle(&c, &fleet, name, &agent_binary, dir.path());
        let bundle = unpack(&archive, dir.path());
        let out = dc.ansible_playbook(&inventory, &bundle.join("install.yml"), &as_user);
        let text = output_text(&out);
        assert!(
            out.status.success(),
            "install.yml as {}:\n{text}",
            account.0
        );
        assert!(text.contains("online: the controller at"), "{text}");
        assert!(tokens_left().is_empty(), "{:?}", tokens_left());
    };
    install_as_user("bastion-fra1-user");
    let user_state = unprivileged.join("var/lib/outpost-agent");
    let uid = account.uid();
    for file in ["agent.key", "agent.pem", "ca.pem", "agent.toml", "status"] {
        let path = user_state.join(file);
        let meta = std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.uid(), uid, "{file} is the agent's user's own");
    }
    assert_eq!(mode(&user_state.join("agent.key")), 0o600);
    let user_pid =
        std::fs::read_to_string(unprivileged.join("run/outpost-agent.pid")).expect("pid file");
    let process = std::fs::metadata(format!("/proc/{}", user_pid.trim())).expect("the agent runs");
    assert_eq!(process.uid(), uid, "the agent runs as its user");

    // That user plants a link to a file of root's in its state directory and drops its
    // certificate, so that the operator enrols it again. Enrolment must not chown through
    // the link (install.yml used to `chown -R` the state directory as root afterwards).
    let victim = roots.path().join("roots-file");
    std::fs::write(&victim, "root's own\n").expect("victim");
    let planted = user_state.join("planted");
    account.run(&[
        "ln".as_ref(),
        "-s".as_ref(),
        victim.as_os_str(),
        planted.as_os_str(),
    ]);
    account.run(&["rm".as_ref(), user_state.join("agent.pem").as_os_str()]);
    install_as_user("bastion-fra1-again");
    let meta = std::fs::metadata(&victim).expect("victim");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "root's file was chowned through the agent's link"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "root's own\n"
    );
    assert!(std::fs::symlink_metadata(&planted)
        .expect("link")
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::symlink_metadata(user_state.join("agent.pem"))
            .expect("enrolled again")
            .uid(),
        uid
    );
}

/// `base` with the keys of `over` replaced.
fn merge(base: &serde_json::Value, over: &serde_json::Value) -> serde_json::Value {
    let mut m = base.as_object().cloned().unwrap_or_default();
    if let Some(o) = over.as_object() {
        m.extend(o.clone());
    }
    serde_json::Value::Object(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_through_the_api_are_for_admins_and_refusals_leave_no_token() {
    // The serve setting names the agent binary to bundle.
    let dir = tempfile::tempdir().expect("dir");
    let agent_copy = stripped_agent(dir.path());
    let opts = ControllerOpts {
        extra: vec!["--agent-binary".into(), agent_copy.display().to_string()],
        ..ControllerOpts::default()
    };
    let c = Cluster::start(Backend::MariaDb, opts).await;
    let admin = login(&c.ctl, &c.world.admin.username, PASSWORD).await;
    user(&c.world, "op", Role::Operator).await;
    let op = login(&c.ctl, "op", PASSWORD).await;

    let ask = |client: &outpost_api::client::Client, body: serde_json::Value| {
        client
            .request(reqwest::Method::POST, "/api/v1/agent-bundles")
            .json(&body)
            .send()
    };
    let good = json!({"name": "bastion-ams1", "labels": {"dc": "ams1"}, "ttl_hours": 2,
                      "addresses": ["127.0.0.1"]});

    let resp = ask(&op, good.clone()).await.expect("request");
    assert_eq!(resp.status(), 403, "operators may not make bundles");

    for (body, want) in [
        (json!({"name": "../etc"}), "cannot name"),
        (
            json!({"name": "b1", "addresses": ["evil.example.com"]}),
            "not among the names",
        ),
        (json!({"name": "b1", "ttl_hours": 0}), "ttl_hours"),
        (json!({"name": "b1", "labels": {"": "x"}}), "label"),
    ] {
        let resp = ask(&admin, body.clone()).await.expect("request");
        assert_eq!(resp.status(), 422, "{body}");
        let text = resp.text().await.unwrap_or_default();
        assert!(text.contains(want), "{body}: {text}");
    }
    let tokens: outpost_api::Page<outpost_api::EnrollmentTokenView> = admin
        .get("/api/v1/enrollment-tokens")
        .await
        .expect("tokens");
    assert!(tokens.items.is_empty(), "refused requests issue no token");

    let resp = ask(&admin, good).await.expect("request");
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/gzip"
    );
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("outpost-agent-bastion-ams1.tar.gz"));
    let bytes = resp.bytes().await.expect("body");
    let archive = dir.path().join("b.tar.gz");
    std::fs::write(&archive, &bytes).expect("save");
    let unpacked = dir.path().join("x");
    std::fs::create_dir(&unpacked).expect("dir");
    let bundle = unpack(&archive, &unpacked);
    assert_eq!(
        std::fs::read(bundle.join("outpost-agent")).expect("binary"),
        std::fs::read(&agent_copy).expect("copy"),
        "the configured agent binary"
    );
    let vars = std::fs::read_to_string(bundle.join("bundle.yml")).expect("vars");
    // The running controller's own ports, at the address asked for.
    assert!(
        vars.contains(&format!("127.0.0.1:{}", c.ctl.enroll.port())),
        "{vars}"
    );
    assert!(vars.contains(r#"outpost_labels: {"dc":"ams1"}"#), "{vars}");

    // Without addresses, the certificate's names minus loopback ones (here: the host's name).
    let resp = ask(&admin, json!({"name": "bastion-lon1"}))
        .await
        .expect("request");
    assert_eq!(resp.status(), 201);
    std::fs::write(&archive, resp.bytes().await.expect("body")).expect("save");
    let lon = dir.path().join("lon");
    std::fs::create_dir(&lon).expect("dir");
    let vars = std::fs::read_to_string(unpack(&archive, &lon).join("bundle.yml")).expect("vars");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert!(
        vars.contains(&format!(
            "outpost_connect: [\"{}:{}\"]",
            hostname.trim(),
            c.ctl.agents.port()
        )),
        "{vars}"
    );

    let tokens: outpost_api::Page<outpost_api::EnrollmentTokenView> = admin
        .get("/api/v1/enrollment-tokens")
        .await
        .expect("tokens");
    let names: Vec<&str> = tokens.items.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&"bastion-ams1") && names.contains(&"bastion-lon1"),
        "{names:?}"
    );
    assert!(tokens.items.iter().all(|t| t.used_at.is_none()));

    // The token in the bundle enrols an agent, once.
    let token = std::fs::read_to_string(bundle.join("enroll-token")).expect("token");
    let state = dir.path().join("state");
    let enrol = |state: &Path| {
        Command::new(bin("outpost-agent"))
            .arg("--state-dir")
            .arg(state)
            .arg("enroll")
            .args(["--controller", &c.ctl.enroll.to_string()])
            .arg("--token-file")
            .arg(bundle.join("enroll-token"))
            .output()
            .expect("enroll")
    };
    let out = enrol(&state);
    assert!(out.status.success(), "{}", output_text(&out));
    let again = enrol(&dir.path().join("state2"));
    assert!(!again.status.success());
    assert!(
        output_text(&again).contains("already used"),
        "{}",
        output_text(&again)
    );
    assert!(!token.is_empty());
}
