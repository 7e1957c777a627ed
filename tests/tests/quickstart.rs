//! The README's first command: `outpost-controller dev` runs the whole path end to end.

use std::process::Command;

use outpost_tests::procs::bin;

#[test]
fn the_dev_quick_start_runs_a_playbook_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("outpost-controller"))
        .args(["dev", "--dir"])
        .arg(dir.path().join("dev"))
        .current_dir(outpost_tests::workspace_root())
        .output()
        .expect("run dev");
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
}
