//! The Debian packages: `scripts/package` builds them (here from the debug build the test
//! command made), they hold what an operator expects where Debian puts it, their maintainer
//! scripts are valid shell, and lintian finds no error in them.

use std::path::Path;
use std::process::Command;

use outpost_tests::{output_text, run_ok, workspace_root};

fn run(cmd: &mut Command, what: &str) -> String {
    output_text(&run_ok(cmd, what))
}

fn contents(deb: &Path) -> String {
    run(
        Command::new("dpkg-deb").arg("--contents").arg(deb),
        "dpkg-deb --contents",
    )
}

fn control_file(deb: &Path, name: &str) -> String {
    run(
        Command::new("dpkg-deb").args(["--info"]).arg(deb).arg(name),
        &format!("dpkg-deb --info {name}"),
    )
}

#[test]
fn the_packages_build_hold_what_they_should_and_pass_lintian() {
    assert!(
        Command::new("lintian").arg("--version").output().is_ok(),
        "lintian is missing: apt-get install lintian (bash scripts/test does)"
    );
    let out = tempfile::tempdir().expect("out dir");
    let built = run(
        Command::new("bash")
            .arg(workspace_root().join("scripts/package"))
            .env("PROFILE", "debug")
            .env("OUT_DIR", out.path()),
        "scripts/package",
    );
    let debs: Vec<&Path> = built
        .lines()
        .map(Path::new)
        .filter(|p| p.exists())
        .collect();
    assert_eq!(debs.len(), 2, "two packages: {built}");
    let agent = debs
        .iter()
        .find(|p| p.display().to_string().contains("outpost-agent_"))
        .expect("agent package");
    let controller = debs
        .iter()
        .find(|p| p.display().to_string().contains("outpost-controller_"))
        .expect("controller package");

    let a = contents(agent);
    for want in [
        "./usr/bin/outpost-agent",
        "./lib/systemd/system/outpost-agent.service",
        "./usr/share/doc/outpost-agent/copyright",
    ] {
        assert!(
            a.contains(want),
            "{want} missing from the agent package:\n{a}"
        );
    }
    let unit = control_file(agent, "postinst");
    assert!(
        unit.contains("adduser --system") && unit.contains("-m 0700"),
        "{unit}"
    );
    // It may tell the operator to start it; it must not start it itself.
    let starts = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("echo"))
        .any(|l| l.contains("systemctl start") || l.contains("deb-systemd-invoke start"));
    assert!(
        !starts,
        "the agent must not start before it is enrolled:\n{unit}"
    );
    let c = contents(controller);
    for want in [
        "./usr/bin/outpost-controller",
        "./lib/systemd/system/outpost-controller.service",
        "./etc/outpost/controller.toml",
        // What `outpost-controller bundle` packs for new agents.
        "./usr/lib/outpost/outpost-agent",
    ] {
        assert!(
            c.contains(want),
            "{want} missing from the controller package:\n{c}"
        );
    }
    assert!(control_file(controller, "conffiles").contains("/etc/outpost/controller.toml"));

    // The packaged unit runs the packaged binary, and the agent's waits for enrolment.
    let dir = tempfile::tempdir().expect("extract");
    run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(agent)
            .arg(dir.path()),
        "dpkg-deb -x",
    );
    let unit = std::fs::read_to_string(dir.path().join("lib/systemd/system/outpost-agent.service"))
        .expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/outpost-agent run"),
        "{unit}"
    );
    assert!(
        unit.contains("ConditionPathExists=/var/lib/outpost-agent/agent.pem"),
        "{unit}"
    );
    assert!(unit.contains("User=outpost-agent"), "{unit}");
    let version = run(
        Command::new(dir.path().join("usr/bin/outpost-agent")).arg("--version"),
        "the packaged agent",
    );
    assert!(version.starts_with("outpost-agent "), "{version}");

    // Maintainer scripts parse.
    for deb in [agent, controller] {
        for script in ["postinst", "prerm", "postrm"] {
            let text = control_file(deb, script);
            let f = tempfile::NamedTempFile::new().expect("script");
            std::fs::write(f.path(), text).expect("write");
            run(
                Command::new("sh").arg("-n").arg(f.path()),
                &format!("sh -n {script}"),
            );
        }
    }

    // lintian's own verdict: it exits 0 when it found no error nor warning (bar the tolerated
    // ones), 2 when it did (`--fail-on`), 1 when it could not check at all — all but 0 fail
    // here, so a lintian that crashed or could not read the package is no clean report.
    for deb in [agent, controller] {
        let mut cmd = Command::new("lintian");
        cmd.args(["--fail-on", "error,warning", "--tag-display-limit", "0"]);
        if !TOLERATED_WARNINGS.is_empty() {
            cmd.args(["--suppress-tags", &TOLERATED_WARNINGS.join(",")]);
        }
        let report = outpost_tests::output_within(
            cmd.arg(deb),
            std::time::Duration::from_secs(5 * 60),
            "lintian",
        );
        let text = output_text(&report);
        assert!(
            report.status.success(),
            "lintian ({}) on {}:\n{text}",
            report.status,
            deb.display()
        );
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
        assert!(
            errors.is_empty(),
            "lintian errors in {}:\n{text}",
            deb.display()
        );
    }
}

/// lintian warnings the packages are allowed, each with its reason (none is an error: errors
/// are never tolerated).
const TOLERATED_WARNINGS: &[&str] = &[
    // The binaries ship no man pages yet: each documents itself with --help, and the README
    // and docs/ are the manual. (lintian 2.116 says this of both packages' binaries.)
    "no-manual-page",
];
