//! The `outpost` CLI against a real controller process and a real agent: logging in (pinned by
//! fingerprint; a wrong password; an expired token), servers and inventory imports, playbooks,
//! `job run --follow` printing exactly the stored log with the exit code of the outcome, a
//! follow that survives a controller restart, templates launched with answers (a secret one
//! from standard input), tickets, `--json`, and one-line errors. A host's
//! terminal escape sequences reach the admin's terminal escaped (verbatim only with `--raw`),
//! and the audit trail knows the CLI by its user agent.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use outpost_controller::model::JobStatus;
use outpost_tests::api::{login, PASSWORD};
use outpost_tests::cluster::Cluster;
use outpost_tests::procs::{bin, AgentOpts, ControllerOpts};
use outpost_tests::world::sleeping_playbook;
use outpost_tests::{
    output_within, unique_mark, wait_child, wait_for, wait_no_process, wait_process, Backend,
};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn outpost(config: &Path, args: &[&str]) -> Output {
    output_within(
        Command::new(bin("outpost"))
            .args(args)
            .env("OUTPOST_CONFIG_DIR", config)
            .env("OUTPOST_PASSWORD", PASSWORD)
            .env_remove("OUTPOST_CONTEXT"),
        2 * MINUTE,
        &format!("outpost {}", args.join(" ")),
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails unless the command succeeded; returns its stdout.
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}): {}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A refusal: exit code 3 and one line on stderr containing `needle`.
fn one_line_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(o), stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_inventory_playbooks_and_jobs_from_the_terminal() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let cfg = tempfile::tempdir().unwrap();
    let cfg = cfg.path();
    let url = c.ctl.api_url();

    // A wrong password, then a login pinned by the CA's fingerprint.
    let wrong = output_within(
        Command::new(bin("outpost"))
            .args([
                "login",
                &url,
                "-u",
                "ops",
                "--ca-fingerprint",
                &c.ctl.ca_fingerprint(),
            ])
            .env("OUTPOST_CONFIG_DIR", cfg)
            .env("OUTPOST_PASSWORD", "not the password"),
        MINUTE,
        "outpost login with a wrong password",
    );
    one_line_error(&wrong, "wrong username, email or password");
    let bad_pin = outpost(
        cfg,
        &[
            "login",
            &url,
            "-u",
            "ops",
            "--ca-fingerprint",
            &"ab".repeat(32),
        ],
    );
    one_line_error(&bad_pin, "cannot reach");
    ok(outpost(
        cfg,
        &[
            "login",
            &url,
            "-u",
            "ops",
            "--ca-fingerprint",
            &c.ctl.ca_fingerprint(),
            "--name",
            "lab",
        ],
    ));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cfg.join("contexts.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(ok(outpost(cfg, &["whoami"])).contains("ops (admin)"));
    assert!(ok(outpost(cfg, &["context", "list"])).contains("lab"));

    // Servers by hand and from inventories, with a dry run first.
    ok(outpost(
        cfg,
        &[
            "server",
            "add",
            "db1",
            "--ip",
            "127.0.0.1",
            "--env",
            "production",
            "--tag",
            "dc=fra1",
        ],
    ));
    one_line_error(
        &outpost(cfg, &["server", "add", "bad", "--ip", "not-an-ip"]),
        "not an IPv4 or IPv6 address",
    );
    let ini = cfg.join("hosts.ini");
    std::fs::write(
        &ini,
        "[web]\nweb1 ansible_host=127.0.0.1 ansible_port=2222 ansible_user=deploy\nweb2 ansible_host=127.0.0.2\n\n[web:vars]\ndc=fra1\nenvironment=staging\n",
    )
    .unwrap();
    let dry = ok(outpost(
        cfg,
        &["server", "import", ini.to_str().unwrap(), "--dry-run"],
    ));
    assert!(dry.contains("would add") && dry.contains("web1"), "{dry}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(outpost(cfg, &["server", "list", "--json"]))).unwrap();
    assert_eq!(listed["total"], 1, "a dry run changes nothing");
    ok(outpost(cfg, &["server", "import", ini.to_str().unwrap()]));
    let yaml = cfg.join("hosts.yml");
    std::fs::write(
        &yaml,
        "all:\n  children:\n    nyc1:\n      vars:\n        dc: nyc1\n      hosts:\n        app1:\n          ansible_host: 127.0.0.3\n        web1:\n          ansible_host: 127.0.0.1\n          ansible_port: 2200\n",
    )
    .unwrap();
    let imported = ok(outpost(cfg, &["server", "import", yaml.to_str().unwrap()]));
    assert!(
        imported.contains("added") && imported.contains("updated"),
        "{imported}"
    );
    let web1: serde_json::Value =
        serde_json::from_str(&ok(outpost(cfg, &["server", "show", "web1", "--json"]))).unwrap();
    assert_eq!(web1["ssh_port"], 2200);
    assert_eq!(web1["ssh_user"], "deploy");
    let fra1: serde_json::Value = serde_json::from_str(&ok(outpost(
        cfg,
        &["server", "list", "-l", "dc=fra1", "--json"],
    )))
    .unwrap();
    assert_eq!(fra1["total"], 2, "db1 and web2 ({})", fra1);

    // This host, reached locally (host vars need an admin: the test sets them through the API).
    let w = &c.world;
    w.local_server("local", json!({}), "dev").await;
    let pb = cfg.join("hello.yml");
    std::fs::write(
        &pb,
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: \"hello {{ who }}\"\n",
    )
    .unwrap();
    ok(outpost(cfg, &["playbook", "add", pb.to_str().unwrap()]));
    assert!(ok(outpost(cfg, &["playbook", "show", "hello"])).contains("hello {{ who }}"));
    let fail = cfg.join("fail.yml");
    std::fs::write(&fail, "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: /bin/false\n").unwrap();
    ok(outpost(
        cfg,
        &[
            "playbook",
            "add",
            fail.to_str().unwrap(),
            "--name",
            "broken",
        ],
    ));

    // job run --follow prints exactly the stored log and exits with the outcome.
    let run = outpost(
        cfg,
        &[
            "job",
            "run",
            "hello",
            "--server",
            "local",
            "-e",
            "who=world",
            "--follow",
        ],
    );
    let printed = ok(run);
    assert!(printed.contains("hello world"), "{printed}");
    let jobs: serde_json::Value =
        serde_json::from_str(&ok(outpost(cfg, &["job", "list", "--json"]))).unwrap();
    let job_id = jobs["items"][0]["id"].as_str().unwrap().to_owned();
    let job = w
        .store
        .get_job_by_uuid(job_id.parse().expect("a job uuid"))
        .await
        .unwrap();
    let stored: Vec<String> = w.lines(&job).await.into_iter().map(|l| l.content).collect();
    let printed_lines: Vec<&str> = printed.lines().collect();
    assert_eq!(printed_lines, stored, "printed = stored, line for line");
    assert_eq!(
        ok(outpost(cfg, &["job", "logs", &job_id])).lines().count(),
        stored.len()
    );

    // Templates: an admin writes one from a file; a launch with answers follows to the end; a
    // bad answer is a one-line refusal naming the field; a secret answer is never an argument
    // (here it comes from standard input).
    let greet = cfg.join("greet.yaml");
    std::fs::write(
        &greet,
        "name: greet\nplaybook: hello\nservers: [local]\nsurvey:\n  - name: who\n    type: choice\n    choices: [world, moon]\n    required: true\n  - name: pin\n    type: secret\n",
    )
    .unwrap();
    ok(outpost(
        cfg,
        &["template", "create", "--file", greet.to_str().unwrap()],
    ));
    assert!(ok(outpost(cfg, &["template", "list"])).contains("greet"));
    let printed = ok(outpost(
        cfg,
        &["template", "launch", "greet", "-a", "who=moon", "--follow"],
    ));
    assert!(printed.contains("hello moon"), "{printed}");
    one_line_error(
        &outpost(cfg, &["template", "launch", "greet", "-a", "who=mars"]),
        "who: must be one of: world, moon",
    );
    one_line_error(
        &outpost(
            cfg,
            &[
                "template", "launch", "greet", "-a", "who=moon", "-a", "pin=1234",
            ],
        ),
        "--secret-answer pin",
    );
    let launched: serde_json::Value = serde_json::from_str(&ok(outpost_with_stdin(
        cfg,
        &[
            "template",
            "launch",
            "greet",
            "-a",
            "who=world",
            "--secret-answer",
            "pin=-",
            "--json",
        ],
        "9876\n",
    )))
    .unwrap();
    assert_eq!(launched["jobs"][0]["template"]["name"], "greet");
    let id = launched["jobs"][0]["id"].as_str().unwrap().to_owned();
    let shown = ok(outpost(cfg, &["job", "show", &id, "--json"]));
    assert!(
        shown.contains("\"pin\": \"********\"") && !shown.contains("9876"),
        "{shown}"
    );

    let failed = outpost(
        cfg,
        &["job", "run", "broken", "--server", "local", "--follow"],
    );
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    // The failure opened a ticket; resolve it from the terminal.
    let tickets: serde_json::Value = serde_json::from_str(&ok(outpost(
        cfg,
        &["ticket", "list", "--status", "open", "--json"],
    )))
    .unwrap();
    let ticket = tickets["items"][0]["id"].as_str().unwrap().to_owned();
    assert!(ok(outpost(cfg, &["ticket", "resolve", &ticket])).contains("resolved"));

    // A cancelled job: exit code 2.
    let mark = unique_mark();
    w.playbook("sleep", &sleeping_playbook(&mark)).await;
    let follow = Command::new(bin("outpost"))
        .args(["job", "run", "sleep", "--server", "local", "--follow"])
        .env("OUTPOST_CONFIG_DIR", cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sleeping = wait_for("the sleep job to run", MINUTE, || async {
        let page = w
            .store
            .list_jobs(
                &Default::default(),
                outpost_controller::model::Paging::new(1, 0),
            )
            .await
            .ok()?;
        page.items
            .into_iter()
            .find(|j| j.status == JobStatus::Running)
    })
    .await;
    // Cancelled while its sleep runs, so that the sleep's end below is the cancel's doing.
    wait_process(&mark, MINUTE).await;
    ok(outpost(
        cfg,
        &["job", "cancel", &sleeping.job_id.to_string()],
    ));
    let status = tokio::task::spawn_blocking(move || {
        let mut follow = follow;
        wait_child(
            &mut follow,
            MINUTE,
            "outpost job run --follow after the cancel",
        )
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(2));
    wait_no_process(&mark, Duration::from_secs(10)).await;

    // Usage errors are exit 3 too, with one line; an expired token says to log in again.
    one_line_error(&outpost(cfg, &["job", "run", "hello"]), "which servers?");
    one_line_error(
        &outpost(
            cfg,
            &["job", "show", "00000000-0000-4000-8000-000000000000"],
        ),
        "not found",
    );
    // An id is one path segment whatever it holds: this one reaches the job route, which
    // quotes it back, rather than a route its `/`, `..`, `?` or `#` would lead elsewhere.
    let odd = "a/../../servers?x=1#y %2F é";
    one_line_error(
        &outpost(cfg, &["job", "show", odd]),
        &format!("job {odd}: not a job id"),
    );
    one_line_error(
        &outpost(cfg, &["ticket", "show", ".."]),
        "'..' is not an id or name the API can be asked about",
    );
    let admin = login(&c.ctl, "ops", PASSWORD).await;
    let _: serde_json::Value = admin.get("/api/v1/auth/whoami").await.unwrap();
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&c.db.url).await.unwrap();
        sqlx::query("UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    one_line_error(&outpost(cfg, &["server", "list"]), "sign in again");
    ok(outpost(cfg, &["login"]));
    ok(outpost(cfg, &["logout"]));
    one_line_error(&outpost(cfg, &["server", "list"]), "outpost login");
    assert!(ok(outpost(cfg, &["completions", "bash"])).contains("outpost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_survives_a_controller_restart() {
    let mut c = Cluster::start(Backend::MariaDb, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let w = &c.world;
    w.local_server("local", json!({}), "dev").await;
    let mut y = String::from("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: seq -f \"n%06g\" 1 2000\n      register: nums\n");
    for _ in 0..6 {
        y.push_str("    - ansible.builtin.debug:\n        var: nums.stdout_lines\n    - ansible.builtin.command: sleep 1\n");
    }
    w.playbook("bursts", &y).await;
    let cfg = tempfile::tempdir().unwrap();
    let cfg = cfg.path().to_path_buf();
    let ca = cfg.join("ca.pem");
    std::fs::write(&ca, c.ctl.ca_pem()).unwrap();
    ok(outpost(
        &cfg,
        &[
            "login",
            &c.ctl.api_url(),
            "-u",
            "ops",
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    ));
    let cfg2 = cfg.clone();
    let follow = std::thread::spawn(move || {
        outpost(
            &cfg2,
            &["job", "run", "bursts", "--server", "local", "--follow"],
        )
    });
    let job = wait_for("lines flowing", MINUTE, || async {
        let page = w
            .store
            .list_jobs(
                &Default::default(),
                outpost_controller::model::Paging::new(1, 0),
            )
            .await
            .ok()?;
        let j = page.items.into_iter().next()?;
        (w.store.log_extent(j.id).await.ok()?.1 >= 2000).then_some(j)
    })
    .await;
    c.ctl.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.ctl.restart();
    let out = tokio::task::spawn_blocking(move || follow.join().unwrap())
        .await
        .unwrap();
    let printed = ok(out);
    let w = &c.world;
    let done = w.wait_status(&job, JobStatus::Success, 2 * MINUTE).await;
    let stored: Vec<String> = w
        .lines(&done)
        .await
        .into_iter()
        .map(|l| l.content)
        .collect();
    let printed: Vec<&str> = printed.lines().collect();
    assert_eq!(
        printed.len(),
        stored.len(),
        "every line once, despite the restart"
    );
    assert_eq!(printed, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_from_hosts_are_shown_escaped_and_the_cli_names_itself() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let _agent = c.agent("bastion", &[], &AgentOpts::default());
    let cfg = tempfile::tempdir().unwrap();
    let cfg = cfg.path();
    ok(outpost(
        cfg,
        &[
            "login",
            &c.ctl.api_url(),
            "-u",
            "ops",
            "--ca-fingerprint",
            &c.ctl.ca_fingerprint(),
        ],
    ));
    let w = &c.world;
    w.local_server("local", json!({}), "dev").await;
    // ansible prints a task's name as it is (results are JSON-escaped): a way for what a play
    // says to put raw escapes into the log. YAML's "\e" is ESC and "\a" BEL; OSC 0 sets the
    // terminal's title, CSI 2J clears the screen.
    let pb = cfg.join("hostile.yml");
    std::fs::write(
        &pb,
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: \"title \\e]0;pwned\\a clear \\e[2J\"\n      ansible.builtin.debug:\n        msg: hi\n",
    )
    .unwrap();
    ok(outpost(cfg, &["playbook", "add", pb.to_str().unwrap()]));
    let followed = ok(outpost(
        cfg,
        &["job", "run", "hostile", "--server", "local", "--follow"],
    ));
    let raw_osc = "\u{1b}]0;pwned\u{7}";
    let shown_osc = "\\x1b]0;pwned\\x07";

    // The stored log has the raw bytes: the host's output is kept as it was.
    let jobs: serde_json::Value =
        serde_json::from_str(&ok(outpost(cfg, &["job", "list", "--json"]))).unwrap();
    let job_id = jobs["items"][0]["id"].as_str().unwrap().to_owned();
    let job = w
        .store
        .get_job_by_uuid(job_id.parse().expect("a job uuid"))
        .await
        .unwrap();
    let stored: Vec<String> = w.lines(&job).await.into_iter().map(|l| l.content).collect();
    assert!(
        stored.iter().any(|l| l.contains(raw_osc)),
        "the escape reached the log: {stored:?}"
    );

    // Followed live, and read back: escaped, line for line, nothing raw.
    for (how, printed) in [
        ("job run --follow", followed),
        ("job logs", ok(outpost(cfg, &["job", "logs", &job_id]))),
        (
            "job logs --follow",
            ok(outpost(cfg, &["job", "logs", &job_id, "--follow"])),
        ),
    ] {
        assert!(
            !printed.contains('\u{1b}'),
            "{how} printed a raw ESC: {printed:?}"
        );
        assert!(
            printed.contains(&format!("TASK [title {shown_osc} clear \\x1b[2J]")),
            "{how}: {printed}"
        );
        assert_eq!(printed.lines().count(), stored.len(), "{how}: {printed}");
    }
    // --raw: as the host wrote it.
    let raw = ok(outpost(cfg, &["job", "logs", &job_id, "--raw"]));
    let raw_lines: Vec<&str> = raw.lines().collect();
    assert_eq!(raw_lines, stored);
    assert!(
        raw.contains(&format!("{raw_osc} clear \u{1b}[2J")),
        "{raw:?}"
    );
    let raw_follow = ok(outpost(cfg, &["job", "logs", &job_id, "--follow", "--raw"]));
    assert_eq!(raw_follow, raw);

    // The audit trail names the CLI, for the login and the launch alike.
    let agent = format!("outpost/{}", env!("CARGO_PKG_VERSION"));
    for action in ["LOGIN", "LAUNCH"] {
        let audit: serde_json::Value = serde_json::from_str(&ok(outpost(
            cfg,
            &["audit", "list", "--action", action, "--json"],
        )))
        .unwrap();
        assert_eq!(
            audit["items"][0]["user_agent"].as_str(),
            Some(agent.as_str()),
            "{action}: {audit}"
        );
    }

    // A full page ends with the command for the next one, which reads on past it.
    let first = outpost(cfg, &["audit", "list", "--limit", "1"]);
    let told = stderr(&first);
    ok(first);
    let cursor = told
        .lines()
        .find_map(|l| l.strip_prefix("next page: outpost audit list --limit 1 --after "))
        .unwrap_or_else(|| panic!("no next page named: {told}"))
        .to_owned();
    assert!(told.contains("1 shown of "), "{told}");
    let head: serde_json::Value = serde_json::from_str(&ok(outpost(
        cfg,
        &["audit", "list", "--limit", "2", "--json"],
    )))
    .unwrap();
    let next: serde_json::Value = serde_json::from_str(&ok(outpost(
        cfg,
        &[
            "audit", "list", "--limit", "1", "--after", &cursor, "--json",
        ],
    )))
    .unwrap();
    assert_eq!(next["items"][0]["id"], head["items"][1]["id"], "{next}");
    let bad = outpost(cfg, &["job", "list", "--after", "nonsense"]);
    one_line_error(&bad, "after");
}

/// Runs `outpost` with the secret written to its standard input, after checking that the
/// running process's argv and environment do not hold it.
fn outpost_with_stdin(config: &Path, args: &[&str], secret: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(bin("outpost"))
        .args(args)
        .env("OUTPOST_CONFIG_DIR", config)
        .env_remove("OUTPOST_PASSWORD")
        .env_remove("OUTPOST_CONTEXT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run outpost");
    let proc_file = |name: &str| std::fs::read(format!("/proc/{}/{name}", child.id()));
    // Until exec, /proc shows the test's own argv: wait for outpost's.
    outpost_tests::wait_blocking("outpost to start", MINUTE, || {
        proc_file("cmdline").is_ok_and(|c| String::from_utf8_lossy(&c).contains(args[0]))
    });
    for name in ["cmdline", "environ"] {
        let seen = proc_file(name).expect("read /proc");
        assert!(
            !String::from_utf8_lossy(&seen).contains(secret),
            "the secret is in the process's {name}"
        );
    }
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(secret.as_bytes())
        .expect("write the secret");
    drop(stdin);
    let mut out = None;
    let waited = std::thread::scope(|s| {
        let h = s.spawn(|| child.wait_with_output());
        let deadline = std::time::Instant::now() + 2 * MINUTE;
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if h.is_finished() {
            out = h.join().ok();
        }
        out.is_some()
    });
    assert!(waited, "outpost {} did not finish", args.join(" "));
    out.expect("output").expect("outpost's output")
}

/// Credentials from the terminal: a become password and an SSH key (with its passphrase) read
/// from files, a vault password from standard input; listed and shown (the key's public
/// fingerprint, never a secret), attached to a server, a project and a launch, refused deletion
/// while attached (saying where), detached, renamed, replaced and deleted. No secret is ever in
/// the CLI's output, its argv or its environment, nor in the audit trail; a secret given as an
/// argument is not even parsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_files_and_stdin_never_in_output() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path();
    ok(outpost(
        cfg,
        &[
            "login",
            &c.ctl.api_url(),
            "-u",
            "ops",
            "--ca-fingerprint",
            &c.ctl.ca_fingerprint(),
        ],
    ));
    let mark = || uuid::Uuid::new_v4().simple().to_string();
    let (become_pw, vault_pw, new_pw, passphrase) = (
        format!("become-{}", mark()),
        format!("vault-{}", mark()),
        format!("new-{}", mark()),
        format!("pass-{}", mark()),
    );
    let key = cfg.join("id_deploy");
    outpost_tests::run_ok(
        Command::new("ssh-keygen").args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            &passphrase,
            "-C",
            "deploy",
            "-f",
            key.to_str().unwrap(),
        ]),
        "ssh-keygen",
    );
    let key_text = std::fs::read_to_string(&key).unwrap();
    // What the key shows in any output of ours would be a line of its body.
    let key_line = key_text.lines().nth(1).unwrap().to_owned();
    let fingerprint = String::from_utf8(
        outpost_tests::run_ok(
            Command::new("ssh-keygen").args(["-l", "-f", key.to_str().unwrap()]),
            "ssh-keygen -l",
        )
        .stdout,
    )
    .unwrap()
    .split_whitespace()
    .nth(1)
    .unwrap()
    .to_owned();
    let file = |name: &str, text: &str| {
        let p = cfg.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let become_file = file("become", &format!("{become_pw}\n"));
    let pass_file = file("passphrase", &format!("{passphrase}\n"));
    let new_file = file("new", &new_pw);
    // Everything the CLI printed, to look for secrets in at the end.
    let said = std::cell::RefCell::new(String::new());
    let keep = |o: Output| {
        said.borrow_mut().push_str(&stdout(&o));
        said.borrow_mut().push_str(&stderr(&o));
        o
    };
    let run = |args: &[&str]| keep(outpost(cfg, args));

    // A secret on the command line is no option at all; nor is a prompt without a terminal.
    let o = run(&[
        "credential",
        "add",
        "x",
        "--kind",
        "become-password",
        "--secret",
        &become_pw,
    ]);
    assert!(!o.status.success() && stderr(&o).contains("unexpected argument"));
    one_line_error(
        &run(&["credential", "add", "x", "--kind", "become-password"]),
        "--secret-file",
    );

    ok(run(&[
        "credential",
        "add",
        "sudo",
        "--kind",
        "become-password",
        "--secret-file",
        &become_file,
        "--description",
        "sudo on web",
    ]));
    // A wrong passphrase is refused now, not at the first job.
    let wrong = file("wrong", "not the passphrase\n");
    one_line_error(
        &run(&[
            "credential",
            "add",
            "deploy",
            "--kind",
            "ssh-key",
            "--secret-file",
            key.to_str().unwrap(),
            "--passphrase-file",
            &wrong,
        ]),
        "passphrase",
    );
    ok(run(&[
        "credential",
        "add",
        "deploy",
        "--kind",
        "ssh-key",
        "--secret-file",
        key.to_str().unwrap(),
        "--passphrase-file",
        &pass_file,
    ]));
    ok(keep(outpost_with_stdin(
        cfg,
        &[
            "credentials",
            "add",
            "vault",
            "--kind",
            "vault-password",
            "--vault-id",
            "prod",
            "--secret-file",
            "-",
        ],
        &vault_pw,
    )));

    let listed = ok(run(&["credential", "list"]));
    for want in [
        "sudo",
        "become_password",
        "deploy",
        "vault",
        "prod",
        &fingerprint,
    ] {
        assert!(listed.contains(want), "{want} in {listed}");
    }
    let listed: serde_json::Value =
        serde_json::from_str(&ok(run(&["credential", "list", "--json"]))).unwrap();
    assert_eq!(listed["total"], 3);

    // Attached to a server, a project and a launch; shown with where it is used.
    ok(run(&[
        "server",
        "add",
        "web1",
        "--ip",
        "127.0.0.1",
        "--ssh-credential",
        "deploy",
        "--become-credential",
        "sudo",
    ]));
    let web1: serde_json::Value =
        serde_json::from_str(&ok(run(&["server", "show", "web1", "--json"]))).unwrap();
    assert_eq!(web1["ssh_credential"]["name"], "deploy");
    assert_eq!(web1["become_credential"]["name"], "sudo");
    ok(run(&[
        "project",
        "add",
        "site",
        "--vault-credential",
        "vault",
    ]));
    assert!(ok(run(&["project", "show", "site"])).contains("vault credentials: vault"));
    let pb = file(
        "hello.yml",
        "- hosts: all\n  gather_facts: false\n  tasks: []\n",
    );
    ok(run(&["playbook", "add", &pb]));
    // No agent serves the server: the job waits, naming the credential.
    let launched: serde_json::Value = serde_json::from_str(&ok(run(&[
        "job",
        "run",
        "hello",
        "--server",
        "web1",
        "--credential",
        "deploy",
        "--json",
    ])))
    .unwrap();
    let job = launched["jobs"][0]["id"].as_str().unwrap().to_owned();
    let shown: serde_json::Value =
        serde_json::from_str(&ok(run(&["job", "show", &job, "--json"]))).unwrap();
    assert_eq!(shown["credentials"][0]["name"], "deploy", "{shown}");
    let show = ok(run(&["credential", "show", "deploy"]));
    assert!(
        show.contains("server web1 (ssh)") && show.contains("1 pending or running job"),
        "{show}"
    );
    let show: serde_json::Value =
        serde_json::from_str(&ok(run(&["credential", "show", "sudo", "--json"]))).unwrap();
    assert_eq!(show["usage"]["become_servers"][0]["name"], "web1");

    // Deleting what is attached is refused, saying where.
    let refused = run(&["credential", "rm", "sudo"]);
    one_line_error(&refused, "409");
    assert!(
        stderr(&refused).contains("server web1 (become)"),
        "{}",
        stderr(&refused)
    );
    one_line_error(&run(&["credential", "rm", "vault"]), "project site (vault)");
    ok(run(&["server", "update", "web1", "--no-become-credential"]));
    let web1: serde_json::Value =
        serde_json::from_str(&ok(run(&["server", "show", "web1", "--json"]))).unwrap();
    assert!(web1["become_credential"].is_null(), "{web1}");
    assert_eq!(web1["ssh_credential"]["name"], "deploy", "the other stays");
    ok(run(&[
        "project",
        "update",
        "site",
        "--no-vault-credentials",
    ]));
    assert!(!ok(run(&["project", "show", "site"])).contains("vault credentials"));

    // Replaced, renamed, deleted.
    let before: serde_json::Value =
        serde_json::from_str(&ok(run(&["credential", "show", "sudo", "--json"]))).unwrap();
    ok(run(&[
        "credential",
        "replace",
        "sudo",
        "--secret-file",
        &new_file,
    ]));
    let after: serde_json::Value =
        serde_json::from_str(&ok(run(&["credential", "show", "sudo", "--json"]))).unwrap();
    assert_ne!(before["updated_at"], after["updated_at"]);
    ok(run(&["credential", "rename", "vault", "vault-prod"]));
    ok(run(&["credential", "rm", "sudo"]));
    ok(run(&["credential", "rm", "vault-prod"]));
    let left = ok(run(&["credential", "list"]));
    assert!(!left.contains("sudo") && !left.contains("vault"), "{left}");
    let audit = ok(run(&["audit", "list", "--json", "--limit", "500"]));
    assert!(
        audit.contains("credential"),
        "the audit trail records credentials"
    );

    let said = said.into_inner();
    for s in [&become_pw, &vault_pw, &new_pw, &passphrase, &key_line] {
        assert!(!said.contains(s.as_str()), "a secret was printed");
    }
}

/// `outpost notify`: a webhook channel whose URL comes from a file and signing secret from
/// standard input, an email channel, a rule, a test through the outbox and the delivery log;
/// neither the secret nor the URL's path is ever printed, and a secret cannot be an argument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_channels_rules_and_the_log_from_the_terminal() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path();
    ok(outpost(
        cfg,
        &[
            "login",
            &c.ctl.api_url(),
            "-u",
            "ops",
            "--ca-fingerprint",
            &c.ctl.ca_fingerprint(),
        ],
    ));
    let secret = format!("sign-{}", uuid::Uuid::new_v4().simple());
    let url_file = cfg.join("url");
    std::fs::write(&url_file, "http://127.0.0.1:1/hooks/URLTOKEN77\n").unwrap();
    let url_arg = url_file.to_str().unwrap();
    let mut said = String::new();

    let refused = outpost(
        cfg,
        &[
            "notify", "channel", "add", "x", "--kind", "webhook", "--secret", &secret,
        ],
    );
    assert!(!refused.status.success(), "a secret was taken from argv");
    let o = outpost_with_stdin(
        cfg,
        &[
            "notify",
            "channel",
            "add",
            "pager",
            "--kind",
            "webhook",
            "--on-call",
            "--url-file",
            url_arg,
            "--secret-file",
            "-",
        ],
        &secret,
    );
    said.push_str(&ok(o));
    said.push_str(&ok(outpost(
        cfg,
        &[
            "notify",
            "channel",
            "add",
            "mail",
            "--kind",
            "email",
            "--digest",
            "--smtp-host",
            "127.0.0.1",
            "--from",
            "outpost@example.com",
            "--to",
            "ops@example.com",
        ],
    )));
    let list = ok(outpost(cfg, &["--json", "notify", "channel", "list"]));
    said.push_str(&list);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    let show = ok(outpost(cfg, &["notify", "channel", "show", "pager"]));
    said.push_str(&show);
    assert!(
        show.contains("secret:  set") && show.contains("http://127.0.0.1:1/"),
        "{show}"
    );
    let bad = outpost(
        cfg,
        &[
            "notify",
            "rule",
            "add",
            "--event",
            "job_explodes",
            "--channel",
            "pager",
        ],
    );
    assert!(
        !bad.status.success() && stderr(&bad).contains("job_explodes"),
        "{}",
        stderr(&bad)
    );
    said.push_str(&ok(outpost(
        cfg,
        &[
            "notify",
            "rule",
            "add",
            "--event",
            "job_failed",
            "--channel",
            "pager",
            "--min-priority",
            "high",
            "--label",
            "dc=fra1",
        ],
    )));
    let rules = ok(outpost(cfg, &["notify", "rule", "list"]));
    assert!(
        rules.contains("dc=fra1") && rules.contains("pager") && rules.contains("high"),
        "{rules}"
    );
    let test = ok(outpost(cfg, &["notify", "channel", "test", "pager"]));
    said.push_str(&test);
    let id = test
        .rsplit("delivery ")
        .next()
        .unwrap()
        .trim()
        .trim_end_matches([')', '\n'])
        .to_owned();
    let log = ok(outpost(
        cfg,
        &["notify", "deliveries", "--channel", "pager"],
    ));
    said.push_str(&log);
    assert!(log.contains(&id), "{log}");
    said.push_str(&ok(outpost(cfg, &["notify", "channel", "rm", "mail"])));
    // A change that names no new secret keeps the sealed one; a bad URL is refused by name.
    let api = login(&c.ctl, "ops", PASSWORD).await;
    let pager = api
        .notifications()
        .channels()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "pager")
        .unwrap();
    let mut patch = outpost_api::ChannelPatchRequest::default();
    patch.digest = Some(true);
    let v = api
        .notifications()
        .update_channel(pager.id, &patch)
        .await
        .expect("patch");
    assert!(v.digest && v.on_call && v.secret_set, "{v:?}");
    let mut patch = outpost_api::ChannelPatchRequest::default();
    patch.url = Some("ftp://example.com/x".into());
    let e = api
        .notifications()
        .update_channel(pager.id, &patch)
        .await
        .expect_err("ftp URL");
    assert!(e.to_string().contains("url"), "{e}");
    assert!(
        !said.contains(&secret) && !said.contains("URLTOKEN77"),
        "a secret was printed: {said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_preview_create_and_blackouts_from_the_terminal() {
    let c = Cluster::start(Backend::Sqlite, ControllerOpts::default()).await;
    let w = &c.world;
    w.local_server("cron-1", json!({}), "production").await;
    let pb = w.playbook("cron", "- hosts: all\n  tasks: []\n").await;
    w.store
        .create_template(
            &outpost_controller::store::templates::NewTemplate::of_playbook(
                "cron",
                pb.id,
                &["cron-1"],
            ),
            &outpost_controller::store::audit::Actor::user(w.admin.id),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path();
    ok(outpost(
        cfg,
        &[
            "login",
            &c.ctl.api_url(),
            "-u",
            "ops",
            "--ca-fingerprint",
            &c.ctl.ca_fingerprint(),
        ],
    ));
    // The preview saves nothing and shows five wall-clock times in the zone.
    let shown = ok(outpost(
        cfg,
        &[
            "schedule",
            "preview",
            "30 2 * * *",
            "--timezone",
            "Europe/Berlin",
        ],
    ));
    assert!(shown.starts_with("next runs (Europe/Berlin):"), "{shown}");
    let times: Vec<&str> = shown.lines().skip(1).collect();
    assert_eq!(times.len(), 5, "{shown}");
    assert!(times.iter().all(|l| l.contains("02:30:00 CE")), "{shown}");
    assert!(ok(outpost(cfg, &["schedule", "list"])).lines().count() <= 1);
    one_line_error(
        &outpost(cfg, &["schedule", "preview", "0 0 30 2 *"]),
        "never fires",
    );
    let created = ok(outpost(
        cfg,
        &[
            "schedule",
            "create",
            "nightly",
            "--template",
            "cron",
            "--cron",
            "30 2 * * *",
            "--timezone",
            "Europe/Berlin",
        ],
    ));
    assert!(created.starts_with("schedule nightly created"), "{created}");
    assert_eq!(
        created.lines().filter(|l| l.contains("02:30:00")).count(),
        5,
        "{created}"
    );
    assert!(ok(outpost(cfg, &["schedule", "list"])).contains("nightly"));
    ok(outpost(cfg, &["schedule", "disable", "nightly"]));
    let shown: serde_json::Value = serde_json::from_str(&ok(outpost(
        cfg,
        &["--json", "schedule", "show", "nightly"],
    )))
    .unwrap();
    assert_eq!(shown["enabled"], false, "{shown}");
    assert!(shown["next_run_at"].is_null(), "{shown}");
    let runs = ok(outpost(cfg, &["schedule", "runs", "nightly"]));
    assert!(
        !runs.contains("fired"),
        "disabled before its first slot: {runs}"
    );

    let made = ok(outpost(
        cfg,
        &[
            "blackout",
            "create",
            "freeze",
            "--environment",
            "production",
            "--from",
            "Fri 16:00",
            "--to",
            "Mon 08:00",
            "--timezone",
            "Europe/Berlin",
            "--manual",
        ],
    ));
    assert!(made.starts_with("blackout freeze created"), "{made}");
    let listed = ok(outpost(cfg, &["blackout", "list"]));
    assert!(
        listed.contains("Fri 16:00 - Mon 08:00 Europe/Berlin"),
        "{listed}"
    );
    one_line_error(
        &outpost(
            cfg,
            &[
                "blackout",
                "create",
                "bad",
                "--from",
                "Fry 16:00",
                "--to",
                "Mon 08:00",
            ],
        ),
        "weekly_start",
    );
    ok(outpost(cfg, &["blackout", "rm", "freeze"]));
    ok(outpost(cfg, &["schedule", "rm", "nightly"]));
    assert!(!ok(outpost(cfg, &["schedule", "list"])).contains("nightly"));
}
