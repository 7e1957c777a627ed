//! The Debian packages really installed, used, removed and purged with dpkg, the way an
//! operator would on a host without systemd running, inside a throw-away root: an overlay of
//! this machine's `/` in a private mount namespace, so that the users, files and dpkg database
//! the packages change are the overlay's, never this machine's.

use std::path::{Path, PathBuf};
use std::process::Command;

use outpost_tests::{output_text, run_ok, workspace_root};

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

fn packages(out: &Path) -> (PathBuf, PathBuf) {
    let built = output_text(&run_ok(
        Command::new("bash")
            .arg(workspace_root().join("scripts/package"))
            .env("PROFILE", "debug")
            .env("OUT_DIR", out),
        "scripts/package",
    ));
    let find = |name: &str| {
        built
            .lines()
            .map(PathBuf::from)
            .find(|p| p.exists() && p.display().to_string().contains(name))
            .unwrap_or_else(|| panic!("no {name} package in: {built}"))
    };
    (find("outpost-agent_"), find("outpost-controller_"))
}

#[test]
fn the_packages_install_run_remove_and_purge_cleanly() {
    let host_passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let debs = tempfile::tempdir().expect("debs");
    let (agent, controller) = packages(debs.path());
    let root = Overlay::new();
    assert!(
        root.sh("true").status.success(),
        "an overlay of / in a mount namespace is needed (root, overlayfs): {}",
        output_text(&root.sh("true"))
    );
    // The packages go into the overlay's own /root, where dpkg inside can read them.
    let inside = root.upper().join("root/outpost-debs");
    std::fs::create_dir_all(&inside).unwrap();
    for deb in [&agent, &controller] {
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
