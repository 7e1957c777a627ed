//! Packing is canonical and round-trips; unpacking refuses every way out of its directory and
//! every limit, before writing.

use super::*;
use std::io::Cursor;
use std::os::unix::fs::symlink;

fn small() -> Limits {
    Limits {
        max_bytes: 1 << 20,
        max_entries: 100,
        max_depth: 8,
        max_path_bytes: 200,
    }
}

fn write(path: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

fn pack(dir: &Path) -> (Packed, Vec<u8>) {
    let mut out = Vec::new();
    let packed = pack_dir(dir, &mut out, &Limits::REVISION).unwrap();
    (packed, out)
}

/// A tar written header by header, so that it can say what no honest builder would.
struct RawTar(Vec<u8>);

impl RawTar {
    fn new() -> Self {
        RawTar(Vec::new())
    }
    fn entry(mut self, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) -> Self {
        self.header(name, kind, data.len() as u64, link);
        self.0.extend_from_slice(data);
        self.pad();
        self
    }
    /// A header declaring `size` bytes, with no data after it.
    fn header(&mut self, name: &[u8], kind: tar::EntryType, size: u64, link: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
        h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
    }
    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name.as_bytes(), tar::EntryType::Regular, data, b"")
    }
    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(512) {
            self.0.push(0);
        }
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        self.0
    }
}

fn unpack_err(tar: &[u8], limits: &Limits) -> (TreeError, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("t");
    let err = unpack_into(Cursor::new(tar), &dest, limits, Modes::Writable).unwrap_err();
    (err, tmp)
}

fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(base).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            out.push(rel);
            if ft.is_dir() {
                walk(base, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

#[test]
fn same_tree_made_in_another_order_packs_to_the_same_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    // One tree written a-to-z, files 0644; the other z-to-a, later, with other permissions
    // that mean the same (no execute bit, or some execute bit).
    write(&a.path().join("site.yml"), b"- hosts: all\n", 0o644);
    write(
        &a.path().join("roles/common/tasks/main.yml"),
        b"- ping:\n",
        0o644,
    );
    write(
        &a.path().join("roles/common/files/run.sh"),
        b"#!/bin/sh\n",
        0o755,
    );
    write(&a.path().join("roles-x"), b"x", 0o644);
    fs::create_dir_all(a.path().join("empty")).unwrap();
    symlink("common", a.path().join("roles/alias")).unwrap();

    std::thread::sleep(std::time::Duration::from_millis(1100));
    symlink("common", b.path().join("roles-tmp")).unwrap_or(());
    fs::remove_file(b.path().join("roles-tmp")).unwrap();
    fs::create_dir_all(b.path().join("empty")).unwrap();
    write(&b.path().join("roles-x"), b"x", 0o600);
    write(
        &b.path().join("roles/common/files/run.sh"),
        b"#!/bin/sh\n",
        0o700,
    );
    write(
        &b.path().join("roles/common/tasks/main.yml"),
        b"- ping:\n",
        0o664,
    );
    symlink("common", b.path().join("roles/alias")).unwrap();
    write(&b.path().join("site.yml"), b"- hosts: all\n", 0o400);
    // .git never counts.
    write(
        &b.path().join(".git/HEAD"),
        b"ref: refs/heads/main\n",
        0o644,
    );

    let (pa, ta) = pack(a.path());
    let (pb, tb) = pack(b.path());
    assert_eq!(pa, pb);
    assert_eq!(ta, tb);
    assert_eq!(pa.size, ta.len() as u64);
    assert_eq!(pa.digest, hex::encode(Sha256::digest(&ta)));
    assert!(is_digest(&pa.digest));
    // empty, roles, roles/alias, roles/common, .../files, .../run.sh, .../tasks, .../main.yml,
    // roles-x, site.yml
    assert_eq!(pa.entries, 10);

    // Sorted by path bytes, everything owned by 0:0 at time 0 with the canonical modes.
    let mut ar = tar::Archive::new(Cursor::new(&ta));
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        let path = e.path().unwrap().display().to_string();
        let mode = h.mode().unwrap();
        match path.as_str() {
            "roles/common/files/run.sh" => assert_eq!(mode, 0o755),
            "site.yml" | "roles-x" | "roles/common/tasks/main.yml" => assert_eq!(mode, 0o644),
            "roles/alias" => assert!(h.entry_type().is_symlink()),
            _ => {
                assert!(h.entry_type().is_dir(), "{path}");
                assert_eq!(mode, 0o755);
            }
        }
        seen.push(path);
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert!(!seen.iter().any(|p| p.contains(".git")));
}

#[test]
fn a_different_tree_has_a_different_digest() {
    let a = tempfile::tempdir().unwrap();
    write(&a.path().join("site.yml"), b"- hosts: all\n", 0o644);
    let (one, _) = pack(a.path());
    write(&a.path().join("site.yml"), b"- hosts: web\n", 0o644);
    let (two, _) = pack(a.path());
    fs::set_permissions(a.path().join("site.yml"), Permissions::from_mode(0o755)).unwrap();
    let (three, _) = pack(a.path());
    assert_ne!(one.digest, two.digest);
    assert_ne!(two.digest, three.digest);
}

#[test]
fn a_packed_tree_unpacks_read_only_and_whole() {
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("site.yml"), b"- hosts: all\n", 0o644);
    write(&src.path().join("bin/tool"), b"#!/bin/sh\n", 0o755);
    let long = "d".repeat(120);
    write(
        &src.path().join(format!("{long}/{long}.yml")),
        b"long",
        0o644,
    );
    symlink("../site.yml", src.path().join("bin/site.yml")).unwrap();
    let (packed, tar) = pack(src.path());

    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rev");
    let got = unpack(Cursor::new(&tar), &dest, &Limits::REVISION).unwrap();
    assert_eq!(got.entries, packed.entries);
    assert_eq!(got.file_bytes, 13 + 10 + 4);
    assert_eq!(fs::read(dest.join("site.yml")).unwrap(), b"- hosts: all\n");
    assert_eq!(
        fs::read(dest.join("bin/site.yml")).unwrap(),
        b"- hosts: all\n"
    );
    assert_eq!(
        fs::read(dest.join(format!("{long}/{long}.yml"))).unwrap(),
        b"long"
    );
    let mode = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("site.yml"), 0o444);
    assert_eq!(mode("bin/tool"), 0o555);
    assert_eq!(mode("bin"), 0o555);
    assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o555);

    // And it packs back to the same revision.
    let (again, _) = pack(&dest);
    assert_eq!(again.digest, packed.digest);

    remove_tree(&dest).unwrap();
    assert!(!dest.exists());
}

#[test]
fn pack_refuses_links_that_leave_the_tree() {
    for (link, target) in [
        ("out", "../outside"),
        ("abs", "/etc/passwd"),
        ("a/climb", "../../x"),
        ("a/sneaky", "b/../../.."),
        ("a/through", "s/../x"),
    ] {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("a")).unwrap();
        symlink(target, src.path().join(link)).unwrap();
        let mut out = Vec::new();
        let err = pack_dir(src.path(), &mut out, &Limits::REVISION).unwrap_err();
        assert!(
            matches!(&err, TreeError::LinkLeavesTree { path, .. } if path == link),
            "{link} -> {target}: {err}"
        );
        assert!(err.to_string().contains(target), "{err}");
        assert!(out.is_empty(), "nothing is written for a refused tree");
    }
    // Climbing within the tree is fine.
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("x"), b"x", 0o644);
    fs::create_dir_all(src.path().join("a/b")).unwrap();
    symlink("../../x", src.path().join("a/b/up")).unwrap();
    symlink("./b/./up", src.path().join("a/here")).unwrap();
    pack(src.path());
}

#[test]
fn pack_refuses_a_fifo_and_names_it() {
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("site.yml"), b"x", 0o644);
    let fifo = src.path().join("roles/pipe");
    fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let err = pack_dir(src.path(), &mut Vec::new(), &Limits::REVISION).unwrap_err();
    assert!(
        matches!(&err, TreeError::Unsupported { path, kind } if path == "roles/pipe" && kind == "fifo"),
        "{err}"
    );
}

#[test]
fn pack_checks_its_limits_before_reading() {
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("big"), &vec![b'x'; 2000], 0o644);
    let limits = Limits {
        max_bytes: 1000,
        ..small()
    };
    let err = pack_dir(src.path(), &mut Vec::new(), &limits).unwrap_err();
    assert!(matches!(err, TreeError::TooLarge { ref path, limit: 1000 } if path == "big"));

    let src = tempfile::tempdir().unwrap();
    for i in 0..5 {
        write(&src.path().join(format!("f{i}")), b"", 0o644);
    }
    let limits = Limits {
        max_entries: 4,
        ..small()
    };
    assert!(matches!(
        pack_dir(src.path(), &mut Vec::new(), &limits),
        Err(TreeError::TooManyEntries { limit: 4, .. })
    ));

    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("a/b/c/d"), b"", 0o644);
    let limits = Limits {
        max_depth: 3,
        ..small()
    };
    assert!(matches!(
        pack_dir(src.path(), &mut Vec::new(), &limits),
        Err(TreeError::TooDeep { ref path, .. }) if path == "a/b/c/d"
    ));
}

#[test]
fn unpack_refuses_climbing_and_absolute_paths_without_writing() {
    let tar = RawTar::new()
        .file("fine.yml", b"ok")
        .file("../evil", b"x")
        .finish();
    let (err, tmp) = unpack_err(&tar, &small());
    assert!(
        matches!(&err, TreeError::ParentDir { path } if path == "../evil"),
        "{err}"
    );
    assert!(!tmp.path().join("evil").exists());

    let tar = RawTar::new().file("a/../../evil", b"x").finish();
    let (err, tmp) = unpack_err(&tar, &small());
    assert!(matches!(err, TreeError::ParentDir { .. }), "{err}");
    assert!(!tmp.path().join("evil").exists());

    let tar = RawTar::new().file("/tmp/outpost-evil", b"x").finish();
    let (err, _tmp) = unpack_err(&tar, &small());
    assert!(
        matches!(&err, TreeError::AbsolutePath { path } if path == "/tmp/outpost-evil"),
        "{err}"
    );
    assert!(!Path::new("/tmp/outpost-evil").exists());
}

#[test]
fn unpack_refuses_links_out_and_writing_through_links() {
    let link = tar::EntryType::Symlink;
    for target in [&b"../.."[..], b"/etc", b"a/../../x", b""] {
        let tar = RawTar::new().entry(b"l", link, b"", target).finish();
        let (err, _tmp) = unpack_err(&tar, &small());
        assert!(matches!(err, TreeError::LinkLeavesTree { .. }), "{err}");
    }
    // A link inside the tree, then a file "beneath" it: refused, though it would land inside.
    let tar = RawTar::new()
        .entry(b"d/", tar::EntryType::Directory, b"", b"")
        .entry(b"l", link, b"", b"d")
        .file("l/x", b"x")
        .finish();
    let (err, tmp) = unpack_err(&tar, &small());
    assert!(
        matches!(&err, TreeError::NotBeneathDirectory { path, parent } if path == "l/x" && parent == "l"),
        "{err}"
    );
    assert!(!tmp.path().join("t/d/x").exists());

    // The same path twice: the second would replace (or write through) the first.
    let tar = RawTar::new().file("a", b"1").file("a", b"2").finish();
    let (err, tmp) = unpack_err(&tar, &small());
    assert!(matches!(err, TreeError::Duplicate { .. }), "{err}");
    assert_eq!(fs::read(tmp.path().join("t/a")).unwrap(), b"1");
}

#[test]
fn unpack_refuses_devices_fifos_and_hard_links() {
    for (kind, name) in [
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
        (tar::EntryType::Fifo, "fifo"),
        (tar::EntryType::Link, "hard link"),
    ] {
        let tar = RawTar::new()
            .entry(b"dev/null", kind, b"", b"site.yml")
            .finish();
        let (err, tmp) = unpack_err(&tar, &small());
        assert!(
            matches!(&err, TreeError::Unsupported { path, kind } if path == "dev/null" && kind == name),
            "{err}"
        );
        assert!(!tmp.path().join("t/dev/null").exists());
    }
}

#[test]
fn a_tar_bomb_is_refused_before_it_is_written() {
    // A header that declares 2 GiB, with none of it there: refused on the header alone.
    let mut raw = RawTar::new().file("ok", b"ok");
    raw.header(b"bomb", tar::EntryType::Regular, 2 << 30, b"");
    let (err, tmp) = unpack_err(&raw.0, &Limits::REVISION);
    assert!(
        matches!(&err, TreeError::TooLarge { path, .. } if path == "bomb"),
        "{err}"
    );
    assert!(!tmp.path().join("t/bomb").exists());

    // A gzip of 8 MiB of zeros (a few KiB compressed) against a 1 MiB limit.
    let zeros = vec![0u8; 8 << 20];
    let tar = RawTar::new().file("zeros", &zeros).finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 64 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let err = unpack_upload(Cursor::new(gz), &tmp.path().join("t"), &small()).unwrap_err();
    assert!(matches!(err, TreeError::TooLarge { .. }), "{err}");
    assert!(!tmp.path().join("t/zeros").exists());

    // A directory "carrying" data is no way around it.
    let mut raw = RawTar::new();
    raw.header(b"d/", tar::EntryType::Directory, 4096, b"");
    raw.0.extend_from_slice(&[0; 4096]);
    let (err, _tmp) = unpack_err(&raw.finish(), &small());
    assert!(matches!(err, TreeError::UnexpectedData { .. }), "{err}");

    // Many small entries.
    let mut raw = RawTar::new();
    for i in 0..101 {
        raw = raw.file(&format!("f{i}"), b"");
    }
    let (err, _tmp) = unpack_err(&raw.finish(), &small());
    assert!(
        matches!(err, TreeError::TooManyEntries { limit: 100, .. }),
        "{err}"
    );

    // Deep, and long (through a GNU long name the header itself cannot hold).
    let deep = ["d"; 9].join("/");
    let (err, _tmp) = unpack_err(&RawTar::new().file(&deep, b"").finish(), &small());
    assert!(matches!(err, TreeError::TooDeep { .. }), "{err}");
    let mut long = Vec::new();
    let mut b = tar::Builder::new(&mut long);
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    b.append_data(&mut h, "x".repeat(300), io::empty()).unwrap();
    b.finish().unwrap();
    drop(b);
    let (err, _tmp) = unpack_err(&long, &small());
    assert!(
        matches!(err, TreeError::PathTooLong { limit: 200, .. }),
        "{err}"
    );
}

#[test]
fn unpack_wants_an_empty_destination() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("t/old"), b"x", 0o644);
    let tar = RawTar::new().file("a", b"1").finish();
    let err = unpack(Cursor::new(tar), &tmp.path().join("t"), &small()).unwrap_err();
    assert!(
        matches!(err, TreeError::DestinationNotEmpty { .. }),
        "{err}"
    );
}

#[test]
fn an_upload_made_by_tar_unpacks_writable_with_its_parents() {
    // As an admin would make it: `tar czf` of a checkout, with `./` prefixes, pax headers
    // (long names, and a link), and no directory entries for some files.
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("site.yml"), b"- hosts: all\n", 0o644);
    let long = "r".repeat(150);
    write(
        &src.path().join(format!("roles/{long}/tasks/main.yml")),
        b"- ping:\n",
        0o644,
    );
    symlink("site.yml", src.path().join("main.yml")).unwrap();
    let out = tempfile::tempdir().unwrap();
    for (format, file) in [("gnu", "p.tar.gz"), ("pax", "p.tgz"), ("ustar", "p.tar")] {
        let archive = out.path().join(file);
        let mut cmd = std::process::Command::new("tar");
        cmd.arg(format!("--format={format}"));
        if file.ends_with("gz") {
            cmd.arg("-czf");
        } else {
            cmd.arg("-cf");
        }
        if format == "ustar" {
            // ustar cannot hold the long name; an archive of the short paths, listed file by
            // file (no directory entries).
            cmd.arg(&archive)
                .arg("-C")
                .arg(src.path())
                .arg("site.yml")
                .arg("main.yml");
        } else {
            cmd.arg(&archive).arg("-C").arg(src.path()).arg(".");
        }
        assert!(cmd.status().unwrap().success(), "{format}");

        let dest = out.path().join(format!("t-{format}"));
        let got = unpack_upload(File::open(&archive).unwrap(), &dest, &Limits::REVISION)
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(fs::read(dest.join("main.yml")).unwrap(), b"- hosts: all\n");
        assert!(fs::symlink_metadata(dest.join("main.yml"))
            .unwrap()
            .file_type()
            .is_symlink());
        let mode = fs::metadata(dest.join("site.yml")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o644, "{format}");
        if format != "ustar" {
            assert_eq!(
                fs::read(dest.join(format!("roles/{long}/tasks/main.yml"))).unwrap(),
                b"- ping:\n"
            );
            // site.yml, main.yml, roles, roles/<long>, .../tasks, .../main.yml
            assert_eq!(got.entries, 6, "{format}: {:?}", listing(&dest));
        }
        // Writable: the controller installs collections into it.
        fs::write(dest.join("added"), b"x").unwrap();
    }
}

#[test]
fn an_upload_in_another_format_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = unpack_upload(
        Cursor::new(b"PK\x03\x04rest".to_vec()),
        &tmp.path().join("t"),
        &small(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("zip"), "{err}");
    let err = unpack_upload(
        Cursor::new(vec![b'x'; 600]),
        &tmp.path().join("u"),
        &small(),
    )
    .unwrap_err();
    assert!(matches!(err, TreeError::Archive { .. }), "{err}");
}

#[test]
fn digests_are_64_lower_hex() {
    assert!(is_digest(&"a".repeat(64)));
    assert!(!is_digest(&"A".repeat(64)));
    assert!(!is_digest(&"a".repeat(63)));
    assert!(!is_digest(&format!("../{}", "a".repeat(61))));
}
