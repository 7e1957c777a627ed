//! Credentials for real: a datacenter job reaches its server with an SSH key credential (no key
//! on the bastion beforehand), becomes root with a become-password credential and opens a
//! project's vault-encrypted variable and file with a vault credential; no secret shows up in
//! the stored log, ansible's command lines or environments, the audit trail, an API answer or
//! either daemon's log; the job's secret files are gone after success, failure, cancel and an
//! agent's kill -9. And the key that seals them: only ciphertext in the database, a missing or
//! wrong key file stops the controller at start-up with the reason, a rotation re-seals every
//! row, and a backup taken before it still opens with the old key file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use outpost_tests::api::{job_ended, login, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::fleet::Fleet;
use outpost_tests::procs::{bin, AgentOpts, ControllerOpts};
use outpost_tests::{output_text, run_ok, unique_mark, wait_for, Backend, TestDb};
use serde_json::{json, Value};

const MINUTE: Duration = Duration::from_secs(60);
const BECOME_USER: &str = "outpost-become";

/// A random printable secret with a recognisable prefix.
fn secret(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The account jobs log in as and become root from, with sudo asking for `password`. Made
/// once per machine (the same name every run); its password is set anew by each run.
fn become_user(password: &str) {
    assert!(
        Path::new("/usr/bin/sudo").exists(),
        "sudo is missing: install it (apt-get install sudo; bash scripts/test does)"
    );
    let exists = Command::new("id")
        .arg(BECOME_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        run_ok(
            Command::new("useradd").args(["-m", "-s", "/bin/bash", BECOME_USER]),
            "useradd",
        );
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("chpasswd");
    {
        use std::io::Write;
        let mut stdin = chpasswd.stdin.take().expect("stdin");
        writeln!(stdin, "{BECOME_USER}:{password}").expect("password");
    }
    assert!(chpasswd.wait().expect("chpasswd").success());
    let rule = format!("{BECOME_USER} ALL=(ALL:ALL) ALL\n");
    let path = format!("/etc/sudoers.d/{BECOME_USER}");
    std::fs::write(&path, rule).expect("sudoers rule");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o440))
        .expect("sudoers mode");
}

/// `text` run through `ansible-vault` with `password` for `vault_id`; the password goes in a
/// file, never on a command line.
fn vault(args: &[&str], vault_id: &str, password: &str, dir: &Path) -> String {
    let pass = dir.join(format!("vault-pass-{}", unique_mark()));
    std::fs::write(&pass, password).expect("vault password file");
    let out = Command::new("ansible-vault")
        .args(args)
        .arg("--vault-id")
        .arg(format!("{vault_id}@{}", pass.display()))
        .output()
        .expect("ansible-vault (install ansible-core)");
    std::fs::remove_file(&pass).expect("remove the vault password file");
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tar.gz of `files` (path, content).
fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let src = tempfile::tempdir().expect("tree");
    for (path, content) in files {
        let p = src.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, content).expect("file");
    }
    let out = Command::new("tar")
        .arg("-cz")
        .arg("-C")
        .arg(src.path())
        .arg(".")
        .output()
        .expect("tar");
    assert!(out.status.success());
    out.stdout
}

async fn launch(api: &outpost_api::client::Client, playbook: &str, extra: Value) -> String {
    let launched: Value = api
        .post(
            "/api/v1/jobs",
            &json!({"project": "team", "playbook_path": playbook, "servers": ["db-fra1"], "extra_vars": extra}),
        )
        .await
        .expect("launch");
    launched["jobs"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job in {launched}"))
        .to_owned()
}

async fn stored_log(api: &outpost_api::client::Client, id: &str) -> String {
    let page: outpost_api::LogPage = api
        .get(&format!("/api/v1/jobs/{id}/logs?limit=5000"))
        .await
        .expect("logs");
    page.lines
        .iter()
        .map(|l| l.content.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every process of job `id` (ansible marks them all with OUTPOST_JOB_ID): its command line and
/// environment, as the kernel shows them to anyone on the bastion.
fn job_processes(id: &str) -> Vec<(u32, String, String)> {
    let mark = format!("OUTPOST_JOB_ID={id}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
        if !environ.lines().any(|l| l == mark) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        found.push((
            pid,
            String::from_utf8_lossy(&cmdline).replace('\0', " "),
            environ,
        ));
    }
    found
}

/// Fails naming `place` if `text` holds any of `secrets` or private key material.
fn assert_clean(place: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !text.contains(s),
            "a secret ({}…) is in {place}",
            &s[..6.min(s.len())]
        );
    }
    assert!(
        !text.contains("PRIVATE KEY"),
        "private key material is in {place}"
    );
}

/// Waits until the agent has written job `id`'s secrets under `root`.
async fn secrets_written(root: &Path, id: &str) {
    wait_for("the job's secrets on the bastion", MINUTE, || async {
        root.join(id).is_dir().then_some(())
    })
    .await
}

/// The directory the agent writes job secrets under (it says so at start-up).
fn secrets_root(agent_log: &str) -> PathBuf {
    let line = agent_log
        .lines()
        .find(|l| l.contains("job secrets go to memory-backed storage"))
        .unwrap_or_else(|| panic!("the agent did not say where job secrets go:\n{agent_log}"));
    let dir = line
        .split("dir=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no dir= in {line}"));
    PathBuf::from(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datacenter_job_logs_in_becomes_and_opens_the_vault_with_credentials_and_leaves_no_secret(
) {
    let become_password = secret("sudo");
    let vault_password = secret("vault");
    let passphrase = secret("phrase");
    let db_password = secret("dbpw");
    let file_secret = secret("file");
    become_user(&become_password);

    let mut fleet = Fleet::start();
    fleet.add_datacenter("fra1");
    let c = Cluster::for_fleet(Backend::MariaDb, &fleet, ControllerOpts::default()).await;
    let mut agent = c.fleet_agent(&fleet, "fra1", c.ctl.agents, &AgentOpts::default());
    let api = login(&c.ctl, "ops", PASSWORD).await;

    // The key exists only in the credential: its file is gone before anything runs, and the
    // server names no key path.
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("id");
    run_ok(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-C",
                "credential",
                "-N",
                &passphrase,
                "-f",
            ])
            .arg(&key_file),
        "ssh-keygen",
    );
    let key = std::fs::read_to_string(&key_file).expect("key");
    let public = std::fs::read_to_string(key_file.with_extension("pub")).expect("public key");
    std::fs::remove_file(&key_file).expect("remove the key file");
    let authorized = fleet.dir.path().join("authorized_keys");
    let mut keys_text = std::fs::read_to_string(&authorized).expect("authorized_keys");
    keys_text.push_str(&public);
    std::fs::write(&authorized, keys_text).expect("authorized_keys");
    let key_body = key.lines().nth(2).expect("a key body line").to_owned();

    let ssh: Value = api
        .post(
            "/api/v1/credentials",
            &json!({"name": "dc-key", "kind": "ssh_key", "secret": key, "passphrase": passphrase}),
        )
        .await
        .expect("store the key");
    let fingerprint = ssh["public_info"].as_str().expect("public info").to_owned();
    assert!(fingerprint.starts_with("ssh-ed25519 SHA256:"), "{ssh}");
    let _: Value = api
        .post(
            "/api/v1/credentials",
            &json!({"name": "dc-become", "kind": "become_password", "secret": become_password}),
        )
        .await
        .expect("store the become password");
    let _: Value = api
        .post(
            "/api/v1/credentials",
            &json!({"name": "team-vault", "kind": "vault_password", "vault_id": "prod", "secret": vault_password}),
        )
        .await
        .expect("store the vault password");

    let mut host_vars = fleet.host_vars();
    host_vars["ansible_become_method"] = json!("sudo");
    // The agent's own per-job control sockets, not the fleet's shared directory.
    host_vars
        .as_object_mut()
        .expect("host vars")
        .remove("ansible_control_path_dir");
    let server: Value = api
        .post(
            "/api/v1/servers",
            &json!({
                "hostname": "db-fra1", "ip_address": fleet.dc("fra1").server_ip.to_string(),
                "os_type": "linux", "ssh_user": BECOME_USER, "tags": {"dc": "fra1"},
                "environment": "staging", "host_vars": host_vars,
                "ssh_credential": "dc-key", "become_credential": "dc-become",
            }),
        )
        .await
        .expect("add the server");
    assert_eq!(server["ssh_credential"]["name"], "dc-key", "{server}");
    assert!(server["ssh_key_path"].is_null(), "{server}");

    // The project's repository: a vault-encrypted variable and a vault-encrypted file.
    let work = tempfile::tempdir().expect("work");
    let vaulted = vault(
        &["encrypt_string", "--name", "db_password", &db_password],
        "prod",
        &vault_password,
        work.path(),
    );
    let plain_file = work.path().join("secret.txt");
    std::fs::write(&plain_file, &file_secret).expect("file");
    vault(
        &["encrypt", &plain_file.display().to_string()],
        "prod",
        &vault_password,
        work.path(),
    );
    let encrypted_file = std::fs::read_to_string(&plain_file).expect("encrypted file");
    assert!(encrypted_file.starts_with("$ANSIBLE_VAULT;1.2;AES256;prod"));
    let site = "- hosts: all\n  gather_facts: false\n  become: true\n  tasks:\n\
        \x20   - command: whoami\n      register: who\n\
        \x20   - debug:\n        msg: \"became {{ who.stdout }}\"\n\
        \x20   - pause:\n        seconds: 4\n\
        \x20   - copy:\n        content: \"{{ db_password }}\"\n        dest: \"{{ out_dir }}/db_password\"\n        mode: \"0600\"\n\
        \x20   - copy:\n        src: secret.txt\n        dest: \"{{ out_dir }}/secret.txt\"\n        mode: \"0600\"\n";
    let long = "- hosts: all\n  gather_facts: false\n  become: true\n  tasks:\n\
        \x20   - command: sleep 300\n";
    let fail = "- hosts: all\n  gather_facts: false\n  become: true\n  tasks:\n\
        \x20   - fail:\n        msg: broken on purpose\n";
    let scheduled = "- hosts: all\n  gather_facts: false\n  become: true\n  tasks:\n\
        \x20   - command: whoami\n      register: who\n\
        \x20   - debug:\n        msg: \"scheduled as {{ who.stdout }}, db_password {{ db_password | length }} long\"\n";
    let archive = tar_gz(&[
        ("site.yml", site),
        ("long.yml", long),
        ("fail.yml", fail),
        ("scheduled.yml", scheduled),
        ("group_vars/all/vault.yml", &vaulted),
        ("files/secret.txt", &encrypted_file),
    ]);
    let project: Value = api
        .post(
            "/api/v1/projects",
            &json!({"name": "team", "kind": "archive", "vault_credentials": ["team-vault"]}),
        )
        .await
        .expect("create the project");
    assert_eq!(
        project["vault_credentials"][0]["name"], "team-vault",
        "{project}"
    );
    let pid = project["id"].as_i64().expect("id") as i32;
    let synced = api.projects().upload(pid, archive).await.expect("upload");
    assert_eq!(synced.sync_state.as_str(), "ok", "{:?}", synced.sync_error);

    // Success: logged in with the key, became root with the password, opened the vault.
    let out_dir = fleet.dir.path().join(unique_mark());
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let id = launch(
        &api,
        "site.yml",
        json!({"out_dir": out_dir.display().to_string()}),
    )
    .await;
    let secrets = [
        become_password.as_str(),
        vault_password.as_str(),
        passphrase.as_str(),
        key_body.as_str(),
    ];
    // While it runs (its pause): ansible's processes, as anyone on the bastion sees them.
    let seen = wait_for("the job's ansible processes", MINUTE, || async {
        let procs = job_processes(&id);
        (procs.len() >= 2).then_some(procs)
    })
    .await;
    let control_dir = format!("/tmp/opcp-{}", id.replace('-', ""));
    let mut saw_secret_args = false;
    for (pid, cmdline, environ) in &seen {
        assert_clean(&format!("the command line of pid {pid}"), cmdline, &secrets);
        assert_clean(&format!("the environment of pid {pid}"), environ, &secrets);
        saw_secret_args |= cmdline.contains("--become-password-file")
            && cmdline.contains("--private-key")
            && cmdline.contains("--vault-id prod@");
    }
    assert!(
        seen.iter()
            .any(|(_, cmdline, _)| cmdline.contains(&control_dir))
            || Path::new(&control_dir).is_dir(),
        "ssh does not use the job's own control directory {control_dir}: {seen:?}"
    );
    assert!(
        saw_secret_args,
        "no ansible-playbook with the secret files' paths among {seen:?}"
    );
    let root = secrets_root(&agent.log());
    assert!(
        root.starts_with("/dev/shm"),
        "secrets are not on a tmpfs: {}",
        root.display()
    );
    let job_dir = root.join(&id);
    assert!(
        job_dir.is_dir(),
        "no secrets directory {} while the job runs",
        job_dir.display()
    );
    {
        use std::os::unix::fs::PermissionsExt;
        // The secret files 0600; ansible's local temp (vault-decrypted copies) 0700.
        for f in std::fs::read_dir(&job_dir).expect("job secrets").flatten() {
            let meta = f.metadata().expect("meta");
            let want = if meta.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(
                meta.permissions().mode() & 0o777,
                want,
                "{}",
                f.path().display()
            );
        }
        assert!(
            job_dir.join("tmp").is_dir(),
            "ansible's local temp is not with the secrets"
        );
    }
    let job = job_ended(&api, &id).await;
    let log = stored_log(&api, &id).await;
    assert_eq!(job["status"], "success", "{job}\n{log}");
    assert!(log.contains("became root"), "{log}");
    assert_eq!(job["credentials"], json!([]), "{job}");
    {
        use std::os::unix::fs::MetadataExt;
        for (name, want) in [("db_password", &db_password), ("secret.txt", &file_secret)] {
            let p = out_dir.join(name);
            assert_eq!(&std::fs::read_to_string(&p).expect("written"), want);
            assert_eq!(
                std::fs::metadata(&p).expect("meta").uid(),
                0,
                "{name} not written as root"
            );
        }
    }
    let sshd = fleet.dc("fra1").sshd_log();
    let fp = fingerprint.split_whitespace().nth(1).expect("fingerprint");
    assert!(
        sshd.contains(&format!("Accepted publickey for {BECOME_USER}")) && sshd.contains(fp),
        "sshd did not accept the credential's key {fp}:\n{sshd}"
    );
    assert!(
        !job_dir.exists(),
        "the secrets of a finished job are left in {}",
        job_dir.display()
    );
    assert_clean("the stored log", &log, &secrets);

    // A schedule's firing reads its job's credentials while it plans, ahead of the slot, not
    // beside its launch: the key, the become password and the project's vault password still
    // reach the play, and no secret reaches its log.
    let _: Value = api
        .post(
            "/api/v1/templates",
            &json!({"name": "every-second", "project": "team", "playbook_path": "scheduled.yml", "servers": ["db-fra1"]}),
        )
        .await
        .expect("the template");
    let since = chrono::Utc::now();
    let _: Value = api
        .post(
            "/api/v1/schedules",
            &json!({"name": "every-second", "template": "every-second", "cron": "* * * * * *",
                    "timezone": "UTC", "enabled": true, "overlap": "skip"}),
        )
        .await
        .expect("the schedule");
    let fired = wait_for("the schedule's job", MINUTE, || async {
        let f = outpost_controller::store::jobs::JobFilter {
            since: Some(since),
            ..Default::default()
        };
        let jobs = c
            .world
            .store
            .list_jobs(&f, outpost_controller::model::Paging::new(10, 0))
            .await
            .ok()?;
        jobs.items.last().map(|j| j.job_id.to_string())
    })
    .await;
    let _: Value = api
        .delete("/api/v1/schedules/every-second")
        .await
        .expect("delete the schedule");
    let job = job_ended(&api, &fired).await;
    let log = stored_log(&api, &fired).await;
    assert_eq!(job["status"], "success", "{job}\n{log}");
    assert!(
        log.contains(&format!(
            "scheduled as root, db_password {} long",
            db_password.len()
        )),
        "{log}"
    );
    assert_clean("the scheduled job's log", &log, &secrets);

    // Failure and cancel: the job's secrets go too.
    let failed = launch(&api, "fail.yml", json!({})).await;
    assert_eq!(job_ended(&api, &failed).await["status"], "failed");
    assert!(
        !root.join(&failed).exists(),
        "a failed job's secrets are left"
    );
    let cancelled = launch(&api, "long.yml", json!({})).await;
    secrets_written(&root, &cancelled).await;
    let _: Value = api
        .post(&format!("/api/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await
        .expect("cancel");
    assert_eq!(job_ended(&api, &cancelled).await["status"], "cancelled");
    assert!(
        !root.join(&cancelled).exists(),
        "a cancelled job's secrets are left"
    );

    // kill -9: the secrets outlive the agent, and its next start removes them.
    let killed = launch(&api, "long.yml", json!({})).await;
    secrets_written(&root, &killed).await;
    agent.kill9();
    assert!(
        root.join(&killed).is_dir(),
        "nothing left to clean: the test proves nothing"
    );
    agent.reap_orphans();
    agent.start(
        &[c.ctl.agents],
        &AgentOpts {
            netns: Some(fleet.dc("fra1").netns.clone()),
            host_key_checking: true,
            ..AgentOpts::default()
        },
    );
    wait_for(
        "the restarted agent to remove the secrets",
        MINUTE,
        || async { (!root.join(&killed).exists()).then_some(()) },
    )
    .await;
    assert_eq!(job_ended(&api, &killed).await["status"], "failed");

    // Nowhere else either: API answers, audit trail, both daemons' logs, the database.
    let mut answers = String::new();
    for path in [
        "/api/v1/credentials".to_owned(),
        format!("/api/v1/credentials/{}", ssh["id"]),
        format!("/api/v1/servers/{}", server["id"]),
        format!("/api/v1/projects/{pid}"),
        format!("/api/v1/jobs/{id}"),
        "/api/v1/audit?limit=1000".to_owned(),
    ] {
        let v: Value = api
            .get(&path)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        answers.push_str(&v.to_string());
    }
    assert!(answers.contains("dc-key") && answers.contains("team-vault"));
    assert_clean(
        "the API's answers (the audit trail among them)",
        &answers,
        &secrets,
    );
    assert_clean("the controller's log", &c.ctl.log(), &secrets);
    assert_clean("the agent's log", &agent.log(), &secrets);
    let pool = sqlx::MySqlPool::connect(&c.db.url).await.expect("db");
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT key_id, secret FROM credentials")
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(rows.len(), 3);
    for (key_id, bytes) in &rows {
        assert_eq!(key_id.len(), 16);
        let text = String::from_utf8_lossy(bytes);
        assert_clean("a credentials row", &text, &secrets);
        assert!(!text.contains("OPENSSH"));
    }
    pool.close().await;
}

/// Runs `outpost-controller ARGS --data-dir DATA` against `url`; its output, stdout and
/// stderr together.
fn controller(data: &Path, url: &str, args: &[&str]) -> std::process::Output {
    outpost_tests::output_within(
        Command::new(bin("outpost-controller"))
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .env("OUTPOST_DATABASE_URL", url)
            .env("OUTPOST_LOG", "warn"),
        MINUTE,
        "outpost-controller",
    )
}

/// `serve` on port 0, which the start-up checks must refuse: its output.
fn serve_refused(data: &Path, url: &str) -> String {
    let out = controller(
        data,
        url,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--enroll-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(
        !out.status.success(),
        "serve started: {}",
        output_text(&out)
    );
    output_text(&out)
}

fn key_files(pki: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pki)
        .expect("pki")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("credentials"))
        .collect();
    names.sort();
    names
}

async fn rows(url: &str) -> Vec<(i32, String, Vec<u8>)> {
    let pool = sqlx::MySqlPool::connect(url).await.expect("db");
    let rows = sqlx::query_as("SELECT id, key_id, secret FROM credentials ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("rows");
    pool.close().await;
    rows
}

/// A data directory whose PKI directory holds only `key` as the current credentials key.
fn data_with_key(key: &Path) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("data");
    let pki = d.path().join("pki");
    std::fs::create_dir_all(&pki).expect("pki");
    std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o700)).expect("mode");
    let dst = pki.join("credentials.key");
    std::fs::copy(key, &dst).expect("key");
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).expect("mode");
    d
}

fn mysql(args: &[&str], stdin: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(args[0]);
    cmd.args(["-uroot", "-h127.0.0.1"]).args(&args[1..]);
    if let Some(f) = stdin {
        cmd.stdin(std::fs::File::open(f).expect("dump"));
    }
    let out = cmd
        .output()
        .expect("mariadb client (apt-get install mariadb-client)");
    assert!(out.status.success(), "{}", output_text(&out));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_key_is_checked_at_start_up_rotated_and_old_backups_still_open() {
    let mut c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let _agent = c.agent("local-agent", &[], &AgentOpts::default());
    let _server = c.world.local_server("local1", json!({}), "dev").await;
    let api = login(&c.ctl, "ops", PASSWORD).await;
    let vault_password = secret("vault");
    let answer = secret("answer");
    for body in [
        json!({"name": "local-vault", "kind": "vault_password", "secret": vault_password}),
        json!({"name": "spare-become", "kind": "become_password", "secret": secret("sudo")}),
    ] {
        let _: Value = api.post("/api/v1/credentials", &body).await.expect("store");
    }
    // A playbook with an inline vaulted variable, opened by its project's vault credential.
    let work = tempfile::tempdir().expect("work");
    let vaulted = vault(
        &["encrypt_string", "--name", "answer", &answer],
        "default",
        &vault_password,
        work.path(),
    );
    let indented: String = vaulted.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = format!(
        "- hosts: all\n  gather_facts: false\n  vars:\n{indented}  tasks:\n    - debug:\n        msg: \"the answer is {{{{ answer }}}}\"\n"
    );
    let _: Value = api
        .post(
            "/api/v1/playbooks",
            &json!({"name": "inline", "content": yaml}),
        )
        .await
        .expect("upload the playbook");
    let _: Value = api
        .patch(
            "/api/v1/projects/inline",
            &json!({"vault_credentials": ["local-vault"]}),
        )
        .await
        .expect("attach the vault credential");
    let run = |api: outpost_api::client::Client, answer: String| async move {
        let launched: Value = api
            .post(
                "/api/v1/jobs",
                &json!({"playbook": "inline", "servers": ["local1"]}),
            )
            .await
            .expect("launch");
        let id = launched["jobs"][0]["id"].as_str().expect("job").to_owned();
        let job = job_ended(&api, &id).await;
        let log = stored_log(&api, &id).await;
        assert_eq!(job["status"], "success", "{job}\n{log}");
        assert!(log.contains(&format!("the answer is {answer}")), "{log}");
    };
    run(api.clone(), answer.clone()).await;

    let before = rows(&c.db.url).await;
    assert_eq!(before.len(), 2);
    for (_, _, bytes) in &before {
        assert!(!String::from_utf8_lossy(bytes).contains(&vault_password));
    }
    let old_key = before[0].1.clone();
    let db_name = c.db.mysql_name().expect("a MariaDB database").to_owned();
    let dump = work.path().join("backup.sql");
    let out = mysql(&["mariadb-dump", "--single-transaction", &db_name], None);
    std::fs::write(&dump, &out.stdout).expect("backup");

    // Rotation: every row sealed again with a new key; the old key file stays beside it.
    c.ctl.stop();
    let data = c.data.path().to_owned();
    let out = controller(&data, &c.db.url, &["credentials", "rotate-key"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("2 credential(s)"),
        "{}",
        output_text(&out)
    );
    let after = rows(&c.db.url).await;
    let new_key = after[0].1.clone();
    assert_ne!(new_key, old_key);
    for ((id, k0, b0), (id1, k1, b1)) in before.iter().zip(&after) {
        assert_eq!(id, id1);
        assert_eq!(k1, &new_key);
        assert_ne!((k0, b0), (k1, b1), "row {id} was not sealed again");
    }
    let pki = data.join("pki");
    assert_eq!(
        key_files(&pki),
        [
            format!("credentials-{old_key}.key"),
            "credentials.key".to_owned()
        ]
    );
    c.ctl.restart();
    run(api.clone(), answer.clone()).await;
    c.ctl.stop();

    // A missing key file, then a wrong one: the controller refuses to start and says why.
    let aside = tempfile::tempdir().expect("aside");
    for name in key_files(&pki) {
        std::fs::rename(pki.join(&name), aside.path().join(&name)).expect("move the key");
    }
    let said = serve_refused(&data, &c.db.url);
    assert!(
        said.contains("no credentials key") && said.contains(&new_key),
        "{said}"
    );
    let other = tempfile::tempdir().expect("other");
    let sqlite = format!("sqlite:{}?mode=rwc", other.path().join("o.db").display());
    for args in [&["migrate"][..], &["credentials", "check"][..]] {
        let out = controller(other.path(), &sqlite, args);
        assert!(out.status.success(), "{}", output_text(&out));
    }
    let wrong = other.path().join("pki").join("credentials.key");
    std::fs::copy(&wrong, pki.join("credentials.key")).expect("wrong key");
    std::fs::set_permissions(
        pki.join("credentials.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("mode");
    let said = serve_refused(&data, &c.db.url);
    assert!(
        said.contains("cannot be opened") && said.contains(&new_key),
        "{said}"
    );
    for name in key_files(aside.path()) {
        std::fs::rename(aside.path().join(&name), pki.join(&name)).expect("key back");
    }

    // The backup from before the rotation, restored: the old key file opens it, the new one
    // alone does not (and says which key it needs).
    let restored = TestDb::mariadb().await;
    let restored_name = restored.mysql_name().expect("name").to_owned();
    mysql(&["mariadb", &restored_name], Some(&dump));
    let with_old = data_with_key(&pki.join(format!("credentials-{old_key}.key")));
    let out = controller(with_old.path(), &restored.url, &["credentials", "check"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("2 credential(s) open"),
        "{}",
        output_text(&out)
    );
    let with_new = data_with_key(&pki.join("credentials.key"));
    let out = controller(with_new.path(), &restored.url, &["credentials", "check"]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains(&old_key),
        "{}",
        output_text(&out)
    );
}

/// An sshd on a free loopback port of the host, letting root in with the keys of
/// `authorized_keys` only; stopped when dropped.
struct LoopbackSshd {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl LoopbackSshd {
    fn start(dir: &Path, authorized_keys: &Path) -> LoopbackSshd {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let host_key = dir.join("ssh_host_ed25519_key");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&host_key),
            "ssh-keygen",
        );
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                authorized_keys.display(),
            ),
        )
        .expect("sshd_config");
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = dir.join("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log"),
            )
            .spawn()
            .expect("sshd (install openssh-server)");
        let s = LoopbackSshd { child, port, log };
        outpost_tests::wait_blocking("sshd listening", Duration::from_secs(20), || {
            s.log().contains("Server listening")
        });
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LoopbackSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_project_is_fetched_over_ssh_with_a_passphrase_protected_key_credential() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let api = login(&c.ctl, "ops", PASSWORD).await;
    let dir = tempfile::tempdir().expect("dir");
    let passphrase = secret("phrase");
    let key_file = dir.path().join("deploy");
    run_ok(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-C",
                "deploy",
                "-N",
                &passphrase,
                "-f",
            ])
            .arg(&key_file),
        "ssh-keygen",
    );
    let key = std::fs::read_to_string(&key_file).expect("key");
    std::fs::remove_file(&key_file).expect("remove the key file");
    let authorized = dir.path().join("authorized_keys");
    std::fs::copy(key_file.with_extension("pub"), &authorized).expect("authorized_keys");
    let sshd = LoopbackSshd::start(dir.path(), &authorized);

    let bare = dir.path().join("ops.git");
    let work = dir.path().join("work");
    run_ok(
        outpost_tests::repo::git(dir.path())
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(&bare),
        "git init",
    );
    run_ok(
        outpost_tests::repo::git(dir.path())
            .args(["clone", "-q"])
            .arg(&bare)
            .arg(&work),
        "git clone",
    );
    std::fs::write(work.join("site.yml"), "- hosts: all\n  tasks: []\n").expect("playbook");
    run_ok(
        outpost_tests::repo::git(&work).args(["add", "-A"]),
        "git add",
    );
    run_ok(
        outpost_tests::repo::git(&work).args(["commit", "-q", "-m", "first"]),
        "git commit",
    );
    run_ok(
        outpost_tests::repo::git(&work).args(["push", "-q", "origin", "HEAD:main"]),
        "git push",
    );

    let cred: Value = api
        .post(
            "/api/v1/credentials",
            &json!({"name": "deploy", "kind": "ssh_key", "secret": key, "passphrase": passphrase}),
        )
        .await
        .expect("store the deploy key");
    // Not a key: refused, and the refusal does not quote it.
    let refused = api
        .post::<_, Value>(
            "/api/v1/credentials",
            &json!({"name": "bad", "kind": "ssh_key", "secret": format!("not a key {passphrase}")}),
        )
        .await
        .expect_err("a non-key is refused");
    assert!(!refused.to_string().contains(&passphrase), "{refused}");
    // A password in the clear is refused wherever it could be stored: host vars, a playbook's
    // defaults, launch values.
    for (path, body) in [
        (
            "/api/v1/servers",
            json!({"hostname": "h1", "ip_address": "10.0.0.1", "os_type": "linux",
                   "host_vars": {"ansible_become_pass": passphrase}}),
        ),
        (
            "/api/v1/playbooks",
            json!({"name": "p1", "content": "- hosts: all\n  tasks: []\n",
                   "variables": {"ansible_winrm_password": passphrase}}),
        ),
        (
            "/api/v1/jobs",
            json!({"playbook": "nope", "servers": ["h1"],
                   "extra_vars": {"ansible_ssh_pass": passphrase}}),
        ),
    ] {
        let e = api
            .post::<_, Value>(path, &body)
            .await
            .expect_err("a clear-text password is refused");
        let said = e.to_string();
        assert!(
            said.contains("credential") && !said.contains(&passphrase),
            "{path}: {said}"
        );
    }
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, bare.display());
    let project: Value = api
        .post(
            "/api/v1/projects",
            &json!({"name": "ops", "kind": "git", "git_url": url, "git_ref": "main", "git_credential": "deploy"}),
        )
        .await
        .expect("create the project");
    assert_eq!(project["git_credential"]["name"], "deploy", "{project}");
    let synced: Value = wait_for("the sync", 2 * MINUTE, || async {
        let p: Value = api.get("/api/v1/projects/ops").await.ok()?;
        matches!(p["sync_state"].as_str(), Some("ok" | "failed")).then_some(p)
    })
    .await;
    assert_eq!(synced["sync_state"], "ok", "{synced}\n{}", sshd.log());
    let fp = cred["public_info"]
        .as_str()
        .and_then(|i| i.split_whitespace().nth(1))
        .expect("fp");
    assert!(
        sshd.log().contains("Accepted publickey for root") && sshd.log().contains(fp),
        "{}",
        sshd.log()
    );
    // The opened key lived in a private directory for the fetch only.
    let tmp = c.data.path().join("tmp");
    let left: Vec<_> = walk(&tmp)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "id"))
        .collect();
    assert!(left.is_empty(), "the git key is left on disk: {left:?}");
    // In use: it cannot be deleted; detached, it can.
    let e = api
        .credentials()
        .delete(cred["id"].as_i64().expect("id") as i32)
        .await
        .expect_err("in use");
    assert!(
        e.to_string().contains("ops") || e.to_string().contains("attach"),
        "{e}"
    );
    let _: Value = api
        .patch("/api/v1/projects/ops", &json!({"git_credential": ""}))
        .await
        .expect("detach");
    api.credentials()
        .delete(cred["id"].as_i64().expect("id") as i32)
        .await
        .expect("delete once detached");
    assert_clean("the controller's log", &c.ctl.log(), &[passphrase.as_str()]);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
