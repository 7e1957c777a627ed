//! Playbook discovery, packing into the revisions directory, and a git export that refuses a
//! link out of the repository.

use super::*;
use std::process::Command as StdCommand;

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

#[test]
fn playbooks_are_lists_of_plays_outside_roles_and_vars() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    write(root, "site.yml", "- hosts: all\n  roles: [common]\n");
    write(root, "playbooks/db.yaml", "- hosts: db\n  tasks: []\n");
    write(root, "all.yml", "- import_playbook: site.yml\n");
    write(root, "roles/common/tasks/main.yml", "- hosts: all\n");
    write(root, "group_vars/web.yml", "- hosts: all\n");
    write(root, "templates/x.yml", "- hosts: all\n");
    write(root, ".github/workflows/ci.yml", "- hosts: all\n");
    write(root, "requirements.yml", "- src: geerlingguy.java\n");
    write(root, "vars.yml", "user: app\n");
    write(root, "broken.yml", "- hosts: [\n");
    write(root, "notes.txt", "- hosts: all\n");
    let found = find_playbooks(root, ProjectKind::Git, "ops").unwrap();
    let paths: Vec<_> = found.iter().map(|p| p.file_path.as_str()).collect();
    assert_eq!(paths, ["all.yml", "playbooks/db.yaml", "site.yml"]);
    assert_eq!(found[2].name, "ops/site.yml");
    assert_eq!(
        found[2].file_hash,
        hex::encode(Sha256::digest(b"- hosts: all\n  roles: [common]\n"))
    );
    // One uploaded file: named as the project, whatever its plays say.
    write(
        root,
        "playbook.yml",
        "- name: no hosts named\n  tasks: []\n",
    );
    let one = find_playbooks(root, ProjectKind::File, "ping").unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0].name.as_str(), one[0].file_path.as_str()),
        ("ping", "playbook.yml")
    );
}

#[test]
fn a_revision_is_written_once_under_its_digest() {
    let data = tempfile::tempdir().unwrap();
    let tree = single_file_tree(data.path(), b"- hosts: all\n").unwrap();
    let a = pack_revision(tree.path(), data.path()).unwrap();
    let path = revision_path(data.path(), &a.digest);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), a.digest);
    let b = pack_revision(tree.path(), data.path()).unwrap();
    assert_eq!(a, b);
    let listed = list_files(&path).unwrap();
    assert_eq!(
        listed,
        [FileEntry {
            path: "playbook.yml".into(),
            size: 13,
            kind: "file"
        }]
    );
    // No temporary files left beside it.
    let names: Vec<_> = std::fs::read_dir(data.path().join("revisions"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn relative_paths_stay_inside() {
    assert!(relative_path("inventory/hosts.yml").is_some());
    assert!(relative_path("./hosts").is_some());
    assert!(relative_path("../hosts").is_none());
    assert!(relative_path("/etc/hosts").is_none());
    assert!(relative_path("").is_none());
}

fn git(dir: &Path, args: &[&str]) {
    let ok = StdCommand::new("git")
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

#[tokio::test]
async fn a_git_ref_is_fetched_and_exported_and_a_link_out_refused() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo, "site.yml", "- hosts: all\n");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);

    let remote = git::Remote::new(
        repo.to_str().unwrap(),
        Some("main"),
        None,
        &t.path().join("known_hosts"),
    )
    .unwrap();
    let cache = t.path().join("cache");
    let commit = remote.fetch(&cache).await.unwrap();
    assert_eq!(commit.len(), 40);
    let out = t.path().join("out");
    git::export(&cache, &commit, &out).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("site.yml")).unwrap(),
        "- hosts: all\n"
    );

    // A commit that adds a link out of the repository: the export refuses it, naming it.
    std::os::unix::fs::symlink("../../etc/passwd", repo.join("passwd")).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "two"]);
    let commit2 = remote.fetch(&cache).await.unwrap();
    assert_ne!(commit, commit2);
    let err = git::export(&cache, &commit2, &t.path().join("out2")).unwrap_err();
    assert!(err.to_string().contains("passwd"), "{err}");

    // A ref that is not there says so.
    let missing = git::Remote::new(
        repo.to_str().unwrap(),
        Some("nope"),
        None,
        &t.path().join("known_hosts"),
    )
    .unwrap();
    let err = missing.fetch(&cache).await.unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
