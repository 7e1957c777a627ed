//! A team's Ansible repository, made by the test as a team would keep it: a playbook using a
//! role with a template and a static file, `group_vars/`, and a collection that
//! `collections/requirements.yml` installs from a local tarball (so nothing needs the
//! internet). It lives in a git repository served by a real `git daemon` on loopback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{run_ok, wait_blocking};

/// `git` with an identity and no user or system configuration of the machine's.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Outpost Test")
        .env("GIT_AUTHOR_EMAIL", "test@outpost.invalid")
        .env("GIT_COMMITTER_NAME", "Outpost Test")
        .env("GIT_COMMITTER_EMAIL", "test@outpost.invalid");
    c
}

/// The repository: a working checkout the test edits and commits in, and the bare repository
/// `git daemon` serves, which every commit is pushed to.
pub struct TeamRepo {
    dir: tempfile::TempDir,
    /// The working checkout.
    pub work: PathBuf,
    /// The collection tarball `collections/requirements.yml` names.
    pub collection: PathBuf,
}

/// The playbook of the repository: the role on the `web` group, then a filter of the
/// collection on a variable of `group_vars/web.yml`.
pub const SITE_YML: &str = "\
- hosts: web
  gather_facts: false
  roles:
    - common
  tasks:
    - name: shout the greeting through the collection's filter
      ansible.builtin.debug:
        msg: \"{{ greeting | outpost_test.tools.shout }}\"
";

impl TeamRepo {
    /// Makes the repository with its first commit; `out_dir` is where the role writes on the
    /// target (a group variable, so it also shows that `group_vars/` applies).
    pub fn create(out_dir: &str) -> TeamRepo {
        let dir = tempfile::tempdir().expect("repository dir");
        let collection = build_collection(dir.path());
        let work = dir.path().join("work");
        let files: &[(&str, String)] = &[
            ("site.yml", SITE_YML.to_owned()),
            (
                "roles/common/tasks/main.yml",
                "\
- name: render the motd from the role's template
  ansible.builtin.template:
    src: motd.j2
    dest: \"{{ out_dir }}/motd\"
    mode: \"0644\"
- name: copy the role's static banner
  ansible.builtin.copy:
    src: banner.txt
    dest: \"{{ out_dir }}/banner.txt\"
    mode: \"0644\"
"
                .to_owned(),
            ),
            (
                "roles/common/templates/motd.j2",
                "Welcome to {{ inventory_hostname }} in {{ dc_name }}\n".to_owned(),
            ),
            (
                "roles/common/files/banner.txt",
                "a static banner from the role\n".to_owned(),
            ),
            (
                "group_vars/web.yml",
                format!("greeting: hello from group_vars\ndc_name: fra1\nout_dir: {out_dir}\n"),
            ),
            (
                "collections/requirements.yml",
                format!(
                    "collections:\n  - name: {}\n    type: file\n",
                    collection.display()
                ),
            ),
        ];
        for (path, content) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
            std::fs::write(&p, content).expect("repository file");
        }
        // A vendored binary, as teams keep: it makes the tree larger than what an assignment
        // carries inline, so the revision travels on a fetch stream of its own.
        let blob: Vec<u8> = (0..16 * 1024)
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .collect();
        std::fs::write(work.join("roles/common/files/vendor-1.0.bin"), blob).expect("blob");
        run_ok(git(&work).args(["init", "-q", "-b", "main"]), "git init");
        let repo = TeamRepo {
            dir,
            work,
            collection,
        };
        run_ok(
            git(repo.dir.path()).args(["init", "-q", "--bare", "-b", "main", "team.git"]),
            "git init --bare",
        );
        run_ok(
            git(&repo.work)
                .args(["remote", "add", "origin"])
                .arg(repo.bare()),
            "git remote add",
        );
        repo.commit_all("a role, a template, a file, group_vars and a collection");
        repo
    }

    /// The bare repository (served by [`GitDaemon`], or cloned by path).
    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("team.git")
    }

    /// The directory [`GitDaemon::serve`] exports: `git://…/team.git` is [`bare`](Self::bare).
    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` at `path` in the checkout, commits and pushes; the new commit's id.
    pub fn commit(&self, path: &str, content: &str, message: &str) -> String {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(&p, content).expect("repository file");
        self.commit_all(message)
    }

    fn commit_all(&self, message: &str) -> String {
        run_ok(git(&self.work).args(["add", "-A"]), "git add");
        run_ok(
            git(&self.work).args(["commit", "-q", "-m", message]),
            "git commit",
        );
        run_ok(
            git(&self.work).args(["push", "-q", "origin", "main"]),
            "git push",
        );
        self.head()
    }

    /// The commit id of `main`.
    pub fn head(&self) -> String {
        let out = run_ok(git(&self.work).args(["rev-parse", "HEAD"]), "git rev-parse");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A fresh checkout of `commit` with its collections installed as the requirements file
    /// says: what an operator runs `ansible-playbook` from by hand.
    pub fn checkout(&self, commit: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("checkout dir");
        run_ok(
            git(dir.path())
                .args(["clone", "-q"])
                .arg(self.bare())
                .arg("."),
            "git clone",
        );
        run_ok(
            git(dir.path()).args(["checkout", "-q", commit]),
            "git checkout",
        );
        run_ok(
            Command::new("ansible-galaxy")
                .current_dir(dir.path())
                .args([
                    "collection",
                    "install",
                    "-r",
                    "collections/requirements.yml",
                    "-p",
                    "collections",
                ]),
            "ansible-galaxy collection install",
        );
        dir
    }
}

/// Builds the collection `outpost_test.tools` (one filter, `shout`) into a tarball with
/// `ansible-galaxy collection build`, as a team publishing its own collection would.
fn build_collection(base: &Path) -> PathBuf {
    let src = base.join("collection-src");
    let plugins = src.join("plugins").join("filter");
    std::fs::create_dir_all(&plugins).expect("collection dirs");
    std::fs::write(
        src.join("galaxy.yml"),
        "namespace: outpost_test\nname: tools\nversion: 1.0.0\nreadme: README.md\nauthors: [Outpost Test]\n",
    )
    .expect("galaxy.yml");
    std::fs::write(src.join("README.md"), "A test collection.\n").expect("README");
    std::fs::create_dir_all(src.join("meta")).expect("meta");
    std::fs::write(
        src.join("meta").join("runtime.yml"),
        "requires_ansible: '>=2.14'\n",
    )
    .expect("runtime.yml");
    std::fs::write(
        plugins.join("shout.py"),
        "class FilterModule:\n    def filters(self):\n        return {'shout': lambda s: str(s).upper() + '!'}\n",
    )
    .expect("filter plugin");
    let out_dir = base.join("dist");
    run_ok(
        Command::new("ansible-galaxy")
            .current_dir(&src)
            .args(["collection", "build", "--output-path"])
            .arg(&out_dir),
        "ansible-galaxy collection build (install ansible-core: python3 -m pip install ansible-core)",
    );
    out_dir.join("outpost_test-tools-1.0.0.tar.gz")
}

/// A git repository of `mb` files of 1 MiB of random bytes (nothing for compression to win)
/// and a do-nothing `site.yml`, served by a git daemon of its own as `big.git`.
pub fn random_repository(mb: usize) -> (tempfile::TempDir, GitDaemon) {
    let dir = tempfile::tempdir().expect("repo dir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("data")).expect("data dir");
    std::fs::write(
        work.join("site.yml"),
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug:\n        msg: delivered\n",
    )
    .expect("playbook");
    let mut block = vec![0u8; 1 << 20];
    for i in 0..mb {
        for chunk in block.chunks_mut(16) {
            chunk.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        std::fs::File::create(work.join("data").join(format!("blob-{i:03}.bin")))
            .and_then(|mut f| f.write_all(&block))
            .expect("blob");
    }
    run_ok(git(&work).args(["init", "-q", "-b", "main"]), "git init");
    run_ok(git(&work).args(["add", "-A"]), "git add");
    run_ok(git(&work).args(["commit", "-q", "-m", "big"]), "git commit");
    run_ok(
        git(dir.path()).args(["clone", "-q", "--bare", "work", "big.git"]),
        "git clone --bare",
    );
    let daemon = GitDaemon::serve(dir.path());
    (dir, daemon)
}

/// `git daemon` exporting one directory read-only, on port 9418 of a loopback address of its
/// own (so tests side by side never race for a port).
pub struct GitDaemon {
    child: Child,
    host: std::net::Ipv4Addr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl GitDaemon {
    pub fn serve(base: &Path) -> GitDaemon {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("daemon dir");
            let log = dir.path().join("daemon.log");
            let host = crate::mariadb::own_loopback();
            let child = Command::new(daemon_program())
                .arg("--reuseaddr")
                .arg("--verbose")
                .arg("--export-all")
                .arg(format!("--listen={host}"))
                .arg("--port=9418")
                .arg(format!("--base-path={}", base.display()))
                .arg(base)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("daemon log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run git daemon (apt-get install git): {e}"));
            let mut d = GitDaemon {
                child,
                host,
                log,
                _dir: dir,
            };
            let mut ready = false;
            wait_blocking("git daemon to start", Duration::from_secs(20), || {
                let log = d.log();
                ready = log.contains("Ready to rumble");
                ready || log.contains("unable to allocate") || !d.alive()
            });
            if ready {
                return d;
            }
            let _ = d.child.kill();
        }
        panic!("git daemon did not start on five loopback addresses");
    }

    /// The URL of `name` (a repository under the served directory).
    pub fn url(&self, name: &str) -> String {
        format!("git://{}/{name}", self.host)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// `git daemon` runs the daemon as a child of `git`, so killing the process spawned would
/// leave the daemon serving after the test; the daemon itself is run, from git's exec path.
fn daemon_program() -> PathBuf {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .unwrap_or_else(|e| panic!("cannot run git (apt-get install git): {e}"));
    assert!(out.status.success(), "git --exec-path failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("git-daemon")
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
