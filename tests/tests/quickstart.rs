//! The README's first command: `outpost-controller dev` runs the whole path end to end.

use std::process::Command;
use std::time::Duration;

use outpost_tests::procs::bin;
use outpost_tests::{output_within, wait_child};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn the_dev_quick_start_runs_a_playbook_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = output_within(
        Command::new(bin("outpost-controller"))
            .args(["dev", "--once", "--api-listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path().join("dev"))
            .current_dir(outpost_tests::workspace_root()),
        5 * MINUTE,
        "outpost-controller dev --once",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dev failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("agent enrolled as 'local-agent'"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Hello from localhost via Outpost"),
        "{stdout}"
    );
    assert!(stdout.contains("PLAY RECAP"), "{stdout}");
    assert!(stdout.contains("==> job succeeded"), "{stdout}");
    // It leaves a store one can look at, and an agent state with nothing left to deliver.
    assert!(dir.path().join("dev/outpost.db").exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("dev/agent/spool"))
            .unwrap()
            .count(),
        0
    );
    // A second run reuses the directory: the same admin, the same agent, no new enrolment.
    let password = std::fs::read_to_string(dir.path().join("dev/admin-password")).unwrap();
    let again = output_within(
        Command::new(bin("outpost-controller"))
            .args(["dev", "--once", "--api-listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path().join("dev"))
            .current_dir(outpost_tests::workspace_root()),
        5 * MINUTE,
        "outpost-controller dev --once, again",
    );
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "second dev failed:\n{stdout}");
    assert!(stdout.contains("reused"), "{stdout}");
    assert!(!stdout.contains("agent enrolled"), "{stdout}");
    assert!(stdout.contains("==> job succeeded"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dev/admin-password")).unwrap(),
        password
    );
    // A directory it did not make is never cleared.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), "keep me").unwrap();
    let refused = output_within(
        Command::new(bin("outpost-controller"))
            .args(["dev", "--once", "--fresh", "--dir"])
            .arg(&foreign),
        MINUTE,
        "outpost-controller dev on a foreign directory",
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("was not made by"));
    assert!(foreign.join("precious.txt").exists());
}

/// `dev` without --once stays up, prints how to log in, and the CLI can use it.
#[test]
fn dev_stays_up_for_the_cli_until_stopped() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("outpost-controller"))
        .args(["dev", "--api-listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path().join("dev"))
        .current_dir(outpost_tests::workspace_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run dev");
    // Its output is read on a thread, so that a `dev` that never prints the line fails the
    // test at the deadline instead of blocking it.
    let stdout = child.stdout.take().expect("dev's stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + 5 * MINUTE;
    let login = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("outpost login https://") => break line,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "dev did not print the login command within {:?} ({e})",
                    5 * MINUTE
                )
            }
        }
    };
    let words: Vec<&str> = login.split_whitespace().collect();
    let url = words
        .iter()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .to_string();
    let password = words[0]
        .trim_start_matches("OUTPOST_PASSWORD='")
        .trim_end_matches('\'')
        .to_owned();
    let config = dir.path().join("cli");
    let out = output_within(
        Command::new(bin("outpost"))
            .args(["login", &url, "--ca-file"])
            .arg(dir.path().join("dev/pki/ca.pem"))
            .args(["-u", "admin"])
            .env("OUTPOST_PASSWORD", &password)
            .env("OUTPOST_CONFIG_DIR", &config),
        MINUTE,
        "outpost login",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output_within(
        Command::new(bin("outpost"))
            .args(["job", "list", "--json"])
            .env("OUTPOST_CONFIG_DIR", &config),
        MINUTE,
        "outpost job list",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["items"][0]["status"], "success");
    // SIGTERM stops it cleanly.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut child, MINUTE, "dev after SIGTERM");
    assert!(status.success(), "{status}");
}
