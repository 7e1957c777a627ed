//! The Debian packages, built once by `scripts/package` (here from the debug build the test
//! command made; stripping makes it minutes of CPU, hence one test): they hold what an
//! operator expects where Debian puts it, their maintainer scripts are valid shell, lintian
//! finds no error in them; and then they are really installed, used, removed and purged with
//! dpkg, the way an operator would on a host without systemd running, inside a throw-away
//! root: an overlay of this machine's `/` in a private mount namespace, so that the users,
//! files and dpkg database the packages change are the overlay's, never this machine's.

use std::path::{Path, PathBuf};
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

/// A copy-on-write root: this machine's `/` seen through an overlay whose changes land in
/// `upper`. Each command mounts it afresh in its own mount namespace (gone when it exits), so
/// nothing is left mounted whatever happens to the test.
struct Overlay {
    dir: tempfile::TempDir,
}

impl Overlay {
    fn new() -> Overlay {
        let dir = tempfile::tempdir().expect("overlay dir");
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(d)).expect("overlay subdir");
        }
        Overlay { dir }
    }

    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    /// Runs `script` with `sh -e` as root inside the overlay; its output, whatever happens.
    fn sh(&self, script: &str) -> std::process::Output {
        let d = self.dir.path().display();
        let setup = format!(
            "set -e; mount -t overlay overlay -o lowerdir=/,upperdir={d}/upper,workdir={d}/work {d}/merged; \
             mount -t proc proc {d}/merged/proc; mount --rbind /dev {d}/merged/dev; exec chroot {d}/merged /bin/sh -ec \"$0\""
        );
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &setup,
                script,
            ])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run unshare ({e}): this test needs root and util-linux")
            })
    }

    /// [`Overlay::sh`] that must succeed; its output.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the overlay root, `{script}` failed:\n{}",
            output_text(&out)
        );
        output_text(&out)
    }

    /// Whether `path` exists inside the overlay root.
    fn exists(&self, path: &str) -> bool {
        self.sh(&format!("test -e {path}")).status.success()
    }
}

#[test]
fn the_packages_build_pass_lintian_install_run_remove_and_purge_cleanly() {
    assert!(
        Command::new("lintian").arg("--version").output().is_ok(),
        "lintian is missing: apt-get install lintian (bash scripts/test does)"
    );
    let host_passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let out = tempfile::tempdir().expect("out dir");
    let (agent, controller) = build(out.path());
    hold_what_they_should_and_pass_lintian(&agent, &controller);
    install_run_remove_and_purge_cleanly(&agent, &controller, &host_passwd);
}

/// Runs `scripts/package` into `out`: the agent's package and the controller's.
fn build(out: &Path) -> (PathBuf, PathBuf) {
    let built = run(
        Command::new("bash")
            .arg(workspace_root().join("scripts/package"))
            .env("PROFILE", "debug")
            .env("OUT_DIR", out),
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
    (agent.to_path_buf(), controller.to_path_buf())
}

/// What the packages hold, their maintainer scripts, and lintian's verdict.
fn hold_what_they_should_and_pass_lintian(agent: &Path, controller: &Path) {
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

/// dpkg -i, the services' accounts and files, a first `init`, then dpkg -r and --purge, all
/// in an overlay root; `host_passwd` is this machine's /etc/passwd from before, to show the
/// install never reached it.
fn install_run_remove_and_purge_cleanly(agent: &Path, controller: &Path, host_passwd: &str) {
    let root = Overlay::new();
    assert!(
        root.sh("true").status.success(),
        "an overlay of / in a mount namespace is needed (root, overlayfs): {}",
        output_text(&root.sh("true"))
    );
    // The packages go into the overlay's own /root, where dpkg inside can read them.
    let inside = root.upper().join("root/outpost-debs");
    std::fs::create_dir_all(&inside).unwrap();
    for deb in [agent, controller] {
        std::fs::copy(deb, inside.join(deb.file_name().unwrap())).unwrap();
    }
    for path in ["/usr/bin/outpost-controller", "/usr/bin/outpost-agent"] {
        assert!(
            !root.exists(path),
            "{path} exists before the install: this machine has Outpost installed already"
        );
    }

    // Install: no systemd runs here, so nothing is enabled or started; the operator is told
    // what to do next.
    let said = root.ok("dpkg -i /root/outpost-debs/*.deb");
    assert!(
        said.contains("outpost-agent: enrol it, then start it"),
        "{said}"
    );
    assert!(
        said.contains("outpost-controller: edit /etc/outpost/controller.toml"),
        "{said}"
    );
    for pkg in ["outpost-agent", "outpost-controller"] {
        let status = root.ok(&format!("dpkg-query -W -f '${{Status}}' {pkg}"));
        assert_eq!(status.trim(), "install ok installed", "{pkg}");
    }
    // Each service has its own system account that cannot log in, and a private home.
    for (user, home) in [
        ("outpost", "/var/lib/outpost"),
        ("outpost-agent", "/var/lib/outpost-agent"),
    ] {
        let entry = root.ok(&format!("getent passwd {user}"));
        let fields: Vec<&str> = entry.trim().split(':').collect();
        assert_eq!(fields.len(), 7, "{entry}");
        let uid: u32 = fields[2].parse().expect("uid");
        assert!(uid < 1000, "{user} is a system account: {entry}");
        assert_eq!(
            (fields[5], fields[6]),
            (home, "/usr/sbin/nologin"),
            "{entry}"
        );
        let mode = root.ok(&format!("stat -c '%a %U %G' {home}"));
        assert_eq!(mode.trim(), format!("700 {user} {user}"), "{home}");
    }
    let conf = root.ok("stat -c '%a %U %G' /etc/outpost/controller.toml");
    assert_eq!(
        conf.trim(),
        "640 root outpost",
        "the configuration holds a password"
    );
    for bin in ["outpost-controller", "outpost-agent"] {
        let v = root.ok(&format!("/usr/bin/{bin} --version"));
        assert!(v.starts_with(&format!("{bin} ")), "{v}");
    }

    // The controller's account can make its state where the package put its home.
    let init = root.ok(
        "OUTPOST_ADMIN_PASSWORD='first admin pass 1' runuser -u outpost -- \
         outpost-controller init --data-dir /var/lib/outpost",
    );
    assert!(root.exists("/var/lib/outpost/pki/ca.pem"), "{init}");
    let owner = root.ok("stat -c '%U' /var/lib/outpost/pki/ca.pem");
    assert_eq!(owner.trim(), "outpost");

    // Remove keeps the state and the configuration; purge takes them too.
    root.ok("dpkg -r outpost-agent outpost-controller");
    for gone in [
        "/usr/bin/outpost-controller",
        "/usr/bin/outpost-agent",
        "/usr/lib/outpost/outpost-agent",
    ] {
        assert!(!root.exists(gone), "{gone} after remove");
    }
    for kept in [
        "/var/lib/outpost/pki/ca.pem",
        "/etc/outpost/controller.toml",
    ] {
        assert!(root.exists(kept), "{kept} is kept by remove");
    }
    let status = root.ok("dpkg-query -W -f '${Status}' outpost-controller");
    assert_eq!(status.trim(), "deinstall ok config-files");

    root.ok("dpkg --purge outpost-agent outpost-controller");
    for gone in [
        "/var/lib/outpost",
        "/var/lib/outpost-agent",
        "/etc/outpost/controller.toml",
        "/lib/systemd/system/outpost-controller.service",
    ] {
        assert!(!root.exists(gone), "{gone} after purge");
    }
    let left = root.sh("dpkg-query -W -f '${Status}' outpost-controller outpost-agent");
    let text = output_text(&left);
    assert!(
        !text.contains("ok installed") && !text.contains("config-files"),
        "dpkg still knows the packages after purge: {text}"
    );

    // And this machine saw none of it.
    assert!(!Path::new("/usr/bin/outpost-controller").exists());
    assert_eq!(
        std::fs::read_to_string("/etc/passwd").expect("/etc/passwd"),
        host_passwd,
        "the install changed this machine's users"
    );
}
