//! Projects against a real store (SQLite and MariaDB), real git and real ansible-galaxy: a git
//! repository made here syncs into a revision with its playbook rows, a new commit makes a new
//! revision, a failing requirements.yml keeps the previous one and says why, an uploaded archive
//! syncs, a second sync is refused while one runs, rows made before projects are adopted once,
//! and the attacks (a link out of the repository, a ref that is an option, a tarball with `../`)
//! are refused with the path named.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use outpost_controller::model::{ProjectKind, SyncState};
use outpost_controller::project::{self, Source, SyncSettings};
use outpost_controller::store::audit::Actor;
use outpost_controller::store::playbooks::NewPlaybook;
use outpost_controller::store::projects::NewProject;
use outpost_controller::store::Store;
use outpost_tests::world::World;
use outpost_tests::{Backend, TestDb};
use sha2::{Digest, Sha256};

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn commit(repo: &Path, message: &str) {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
}

fn settings(w: &World) -> SyncSettings {
    SyncSettings {
        data_dir: w.dir.path().to_owned(),
        time_limit: Duration::from_secs(120),
        git_key: None,
    }
}

async fn git_project(store: &Store, name: &str, url: &str, git_ref: Option<&str>) -> i32 {
    store
        .create_project(
            &NewProject {
                name: name.into(),
                description: None,
                kind: ProjectKind::Git,
                git_url: Some(url.into()),
                git_ref: git_ref.map(str::to_owned),
                git_key_path: None,
                git_credential_id: None,
                inventory_path: Some("inventory/hosts.yml".into()),
            },
            &Actor::system(),
        )
        .await
        .unwrap()
        .id
        .0
}

async fn sync(w: &World, id: i32, source: Source) -> Result<(), String> {
    let p = w
        .store
        .get_project(outpost_controller::model::ProjectId(id))
        .await
        .unwrap();
    assert!(w
        .store
        .claim_sync(p.id, Duration::from_secs(120))
        .await
        .unwrap());
    project::sync(&w.store, &settings(w), &p, source, &Actor::system())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A local collection tarball built with ansible-galaxy, for requirements.yml.
fn collection_tarball(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("coll-src");
    let ok = Command::new("ansible-galaxy")
        .args(["collection", "init", "outpost_test.tools", "--init-path"])
        .arg(&src)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = dir.join("coll-out");
    let ok = Command::new("ansible-galaxy")
        .args(["collection", "build", "--output-path"])
        .arg(&out)
        .arg(src.join("outpost_test/tools"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    out.join("outpost_test-tools-1.0.0.tar.gz")
}

async fn git_sync_revisions_and_failures(backend: Backend) {
    let db = TestDb::new(backend).await;
    let w = World::new(&db.url).await;
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo, "site.yml", "- hosts: web\n  roles: [common]\n");
    write(&repo, "playbooks/db.yml", "- hosts: db\n  tasks: []\n");
    write(
        &repo,
        "roles/common/tasks/main.yml",
        "- ansible.builtin.template: {src: motd.j2, dest: /tmp/motd}\n",
    );
    write(
        &repo,
        "roles/common/templates/motd.j2",
        "hello {{ inventory_hostname }}\n",
    );
    write(&repo, "group_vars/web.yml", "greeting: hi\n");
    write(
        &repo,
        "inventory/hosts.yml",
        "all:\n  children:\n    web:\n      hosts: {web1: {ansible_host: 10.30.0.1}}\n",
    );
    let tarball = collection_tarball(t.path());
    write(
        &repo,
        "collections/requirements.yml",
        &format!(
            "collections:\n  - name: {}\n    type: file\n",
            tarball.display()
        ),
    );
    commit(&repo, "one");

    let id = git_project(&w.store, "ops", repo.to_str().unwrap(), Some("main")).await;
    sync(&w, id, Source::Git).await.expect("first sync");
    let p = w
        .store
        .get_project(outpost_controller::model::ProjectId(id))
        .await
        .unwrap();
    assert_eq!(p.sync_state, SyncState::Ok);
    let first = w
        .store
        .get_revision(p.current_revision_id.unwrap())
        .await
        .unwrap();
    assert_eq!(first.git_commit.as_deref().map(str::len), Some(40));
    let file = project::revision_path(w.dir.path(), &first.digest);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), first.digest);
    // The collection was installed into the revision at sync.
    let files = project::list_files(&file).unwrap();
    assert!(
        files.iter().any(|f| f
            .path
            .starts_with("collections/ansible_collections/outpost_test/tools")),
        "{files:?}"
    );
    let pbs = w.store.project_playbooks(p.id).await.unwrap();
    let paths: Vec<_> = pbs
        .iter()
        .map(|p| (p.file_path.as_str(), p.name.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("playbooks/db.yml", "ops/playbooks/db.yml"),
            ("site.yml", "ops/site.yml")
        ]
    );

    // A new commit: a new revision; a removed playbook is deactivated, not deleted.
    std::fs::remove_file(repo.join("playbooks/db.yml")).unwrap();
    write(
        &repo,
        "site.yml",
        "- hosts: web\n  roles: [common]\n  become: true\n",
    );
    commit(&repo, "two");
    sync(&w, id, Source::Git).await.expect("second sync");
    let p = w.store.get_project(p.id).await.unwrap();
    let second = w
        .store
        .get_revision(p.current_revision_id.unwrap())
        .await
        .unwrap();
    assert_ne!(first.digest, second.digest);
    assert_ne!(first.git_commit, second.git_commit);
    let pbs = w.store.project_playbooks(p.id).await.unwrap();
    assert!(
        !pbs.iter()
            .find(|p| p.file_path == "playbooks/db.yml")
            .unwrap()
            .is_active
    );
    let site = pbs.iter().find(|p| p.file_path == "site.yml").unwrap();
    assert_eq!(
        site.file_hash,
        hex::encode(Sha256::digest(
            b"- hosts: web\n  roles: [common]\n  become: true\n"
        ))
    );

    // A requirements file galaxy cannot satisfy: failed, with galaxy's words; the revision stays.
    write(
        &repo,
        "collections/requirements.yml",
        "collections:\n  - name: /nonexistent/outpost-missing.tar.gz\n    type: file\n",
    );
    commit(&repo, "three");
    let err = sync(&w, id, Source::Git).await.unwrap_err();
    assert!(err.contains("ansible-galaxy collection install"), "{err}");
    let p = w.store.get_project(p.id).await.unwrap();
    assert_eq!(p.sync_state, SyncState::Failed);
    assert!(
        p.sync_error
            .as_deref()
            .unwrap_or("")
            .contains("outpost-missing"),
        "{:?}",
        p.sync_error
    );
    assert_eq!(p.current_revision_id, Some(second.id));

    // A link out of the repository refuses the sync, naming it.
    std::fs::remove_file(repo.join("collections/requirements.yml")).unwrap();
    std::os::unix::fs::symlink("../../../etc/passwd", repo.join("roles/passwd")).unwrap();
    commit(&repo, "four");
    let err = sync(&w, id, Source::Git).await.unwrap_err();
    assert!(err.contains("roles/passwd"), "{err}");
    let p = w.store.get_project(p.id).await.unwrap();
    assert_eq!(p.current_revision_id, Some(second.id));

    // A ref that is an option never reaches git.
    let bad = git_project(
        &w.store,
        "bad-ref",
        repo.to_str().unwrap(),
        Some("--upload-pack=touch /tmp/outpost-pwned"),
    )
    .await;
    let err = sync(&w, bad, Source::Git).await.unwrap_err();
    assert!(err.contains("git ref"), "{err}");
    assert!(!Path::new("/tmp/outpost-pwned").exists());
    // Nor does a transport helper.
    let ext = git_project(&w.store, "ext", "ext::touch%S/tmp/outpost-pwned2", None).await;
    let err = sync(&w, ext, Source::Git).await.unwrap_err();
    assert!(err.contains("transport helpers"), "{err}");
    assert!(!Path::new("/tmp/outpost-pwned2").exists());

    // One sync at a time: a second claim is refused while the first holds.
    let pid = outpost_controller::model::ProjectId(id);
    assert!(w
        .store
        .claim_sync(pid, Duration::from_secs(120))
        .await
        .unwrap());
    assert!(!w
        .store
        .claim_sync(pid, Duration::from_secs(120))
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_git_sync_revisions_and_failures() {
    git_sync_revisions_and_failures(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_git_sync_revisions_and_failures() {
    git_sync_revisions_and_failures(Backend::MariaDb).await;
}

async fn archives_and_adoption(backend: Backend) {
    let db = TestDb::new(backend).await;
    let w = World::new(&db.url).await;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write(&src, "site.yml", "- hosts: all\n  tasks: []\n");
    let archive = t.path().join("p.tar.gz");
    assert!(Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let p = w
        .store
        .create_project(
            &NewProject {
                name: "airgap".into(),
                description: None,
                kind: ProjectKind::Archive,
                git_url: None,
                git_ref: None,
                git_key_path: None,
                git_credential_id: None,
                inventory_path: None,
            },
            &Actor::system(),
        )
        .await
        .unwrap();
    let work = project::work_dir(w.dir.path()).unwrap();
    outpost_protocol::tree::unpack_upload(
        std::fs::File::open(&archive).unwrap(),
        work.path(),
        &outpost_protocol::tree::Limits::REVISION,
    )
    .unwrap();
    sync(&w, p.id.0, Source::Tree(work))
        .await
        .expect("archive sync");
    let pbs = w.store.project_playbooks(p.id).await.unwrap();
    assert_eq!(pbs.len(), 1);
    assert_eq!(pbs[0].name, "airgap/site.yml");

    // A tarball that climbs out is refused before anything is written outside.
    let mut evil = Vec::new();
    let mut h = tar_header(b"../outpost-evil.yml", 3);
    evil.extend_from_slice(&h);
    evil.extend_from_slice(b"x\n\n");
    evil.resize(1024, 0);
    evil.extend_from_slice(&[0; 1024]);
    h.fill(0);
    let dest = project::work_dir(w.dir.path()).unwrap();
    let err = outpost_protocol::tree::unpack_upload(
        evil.as_slice(),
        dest.path(),
        &outpost_protocol::tree::Limits::REVISION,
    )
    .unwrap_err();
    assert!(err.to_string().contains("../outpost-evil.yml"), "{err}");
    assert!(!dest
        .path()
        .parent()
        .unwrap()
        .join("outpost-evil.yml")
        .exists());

    // A row made the old way (an absolute file under the data dir) is adopted once.
    let content = "- hosts: all\n  gather_facts: false\n";
    let old = w.dir.path().join("playbooks").join("old.yml");
    write(old.parent().unwrap(), "old.yml", content);
    let row = w
        .store
        .create_playbook(
            &NewPlaybook {
                name: "legacy".into(),
                description: Some("made before projects".into()),
                file_path: old.display().to_string(),
                file_hash: hex::encode(Sha256::digest(content.as_bytes())),
                tags: None,
                variables: None,
            },
            &Actor::system(),
        )
        .await
        .unwrap();
    // …and one whose file is gone is left alone.
    let gone = w
        .store
        .create_playbook(
            &NewPlaybook {
                name: "gone".into(),
                description: None,
                file_path: "/nonexistent/gone.yml".into(),
                file_hash: "a".repeat(64),
                tags: None,
                variables: None,
            },
            &Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(
        project::adopt_unadopted(&w.store, w.dir.path())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        project::adopt_unadopted(&w.store, w.dir.path())
            .await
            .unwrap(),
        0
    );
    let adopted = w.store.get_playbook(row.id).await.unwrap();
    assert_eq!(adopted.file_path, "playbook.yml");
    let proj = w
        .store
        .get_project(adopted.project_id.unwrap())
        .await
        .unwrap();
    assert_eq!(
        (proj.name.as_str(), proj.kind),
        ("legacy", ProjectKind::File)
    );
    let rev = w
        .store
        .get_revision(proj.current_revision_id.unwrap())
        .await
        .unwrap();
    let path = project::revision_path(w.dir.path(), &rev.digest);
    assert_eq!(
        project::read_file(&path, "playbook.yml", 1 << 20)
            .unwrap()
            .unwrap(),
        content.as_bytes()
    );
    assert!(w
        .store
        .get_playbook(gone.id)
        .await
        .unwrap()
        .project_id
        .is_none());
}

/// A GNU header naming `name` (written raw: no builder would write `..`).
fn tar_header(name: &[u8], size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    let s = format!("{size:011o}\0");
    h[124..136].copy_from_slice(s.as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let c = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(c.as_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_archives_and_adoption() {
    archives_and_adoption(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_archives_and_adoption() {
    archives_and_adoption(Backend::MariaDb).await;
}
