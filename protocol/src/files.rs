//! How Outpost writes the files it keeps (keys, certificates, the agent's settings, status and
//! spools): whole or not at all, with the mode it means, and never through a link.
//!
//! These files live in directories that another account may write to (the agent's state
//! directory belongs to the agent's user, while root runs `enroll` or `doctor` there), so a
//! plain `std::fs::write` could be pointed by a planted symlink at any file its caller may
//! write. Here the new contents go to a fresh temporary file, created with `O_EXCL` (which
//! never follows a link), that is then renamed over the path: `rename` replaces a link at the
//! path, it does not write through it.

use std::ffi::OsString;
use std::fs::{OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `contents` to `path` with permissions `mode`, replacing whatever was there (a file,
/// or a link, which is replaced and not followed). Readers see the old contents or the new,
/// never a part.
pub fn write_replacing(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temporary_name(path)?;
    // A leftover of a crash (or something planted there): create_new needs the name free.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open(2) is narrowed by the umask; this one is not.
        f.set_permissions(Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `.<name>.tmp` beside `path`: hidden, and distinct for every file of a directory (an
/// extension swap would give `agent.key` and `agent.pem` the same one).
fn temporary_name(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(".tmp");
    Ok(path.with_file_name(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_planted_link_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("someone-elses");
        std::fs::write(&other, "theirs").unwrap();
        std::fs::set_permissions(&other, Permissions::from_mode(0o640)).unwrap();
        let path = dir.path().join("status");
        symlink(&other, &path).unwrap();

        write_replacing(&path, b"ours", 0o644).unwrap();

        assert_eq!(std::fs::read_to_string(&other).unwrap(), "theirs");
        assert_eq!(mode(&other), 0o640, "the link's target keeps its mode");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "a regular file, not the link");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ours");
        assert_eq!(mode(&path), 0o644);
    }

    #[test]
    fn a_planted_link_at_the_temporary_name_is_not_followed_either() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("someone-elses");
        std::fs::write(&other, "theirs").unwrap();
        let path = dir.path().join("agent.pem");
        symlink(&other, temporary_name(&path).unwrap()).unwrap();

        write_replacing(&path, b"cert", 0o644).unwrap();

        assert_eq!(std::fs::read_to_string(&other).unwrap(), "theirs");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "cert");
        assert!(!temporary_name(&path).unwrap().exists(), "no leftover");
    }

    #[test]
    fn the_mode_is_the_one_asked_for_whatever_the_umask_and_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.key");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        write_replacing(&path, b"secret", 0o600).unwrap();
        assert_eq!(mode(&path), 0o600);
        // Wider than a usual umask (022) lets through.
        write_replacing(&path, b"shared", 0o664).unwrap();
        assert_eq!(mode(&path), 0o664);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "shared");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        // rename(2) cannot put a file over a non-empty directory.
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "x").unwrap();
        assert!(write_replacing(&path, b"new", 0o644).is_err());
        assert!(path.join("inside").exists());
        assert!(!temporary_name(&path).unwrap().exists());
    }
}
