//! A project's git repository, through the `git` CLI: fetched into a bare cache per project,
//! the commit's tree exported with `git archive` and unpacked with the tree module's checks (a
//! link out of the repository refuses the sync).
//!
//! The URL, the ref and the key path are an admin's text, so they are data: each is checked
//! (only `https://`, `ssh://`, `git://`, scp-like `user@host:path`, `file://` and absolute
//! paths; ref names as git allows them, never starting with `-`), passed as its own argument
//! after `--`, and git itself is told which transports it may use (`GIT_ALLOW_PROTOCOL`), so
//! `ext::` and other helpers that run commands are refused twice over.

use std::io::Read;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::command;
use super::ProjectError;
use outpost_protocol::tree::{self, Limits};

/// The transports git may use for a project (and any submodule or redirect it meets).
const ALLOWED_PROTOCOLS: &str = "https:ssh:git:file";

/// The private ref each fetch writes (a bare cache has no branches of its own).
const FETCHED: &str = "refs/outpost/fetched";

/// A checked remote: where to fetch, what, and with which key.
#[derive(Debug, Clone)]
pub struct Remote {
    url: String,
    git_ref: String,
    key: Option<PathBuf>,
    known_hosts: PathBuf,
}

impl Remote {
    /// Checks the project's settings; `git_ref` `None` is the remote's default branch.
    pub fn new(
        url: &str,
        git_ref: Option<&str>,
        key: Option<&Path>,
        known_hosts: &Path,
    ) -> Result<Remote, ProjectError> {
        check_url(url).map_err(ProjectError::Refused)?;
        let git_ref = match git_ref {
            Some(r) => {
                check_ref(r).map_err(ProjectError::Refused)?;
                r.to_owned()
            }
            None => "HEAD".to_owned(),
        };
        if let Some(k) = key {
            check_key_path(k).map_err(ProjectError::Refused)?;
        }
        Ok(Remote {
            url: url.to_owned(),
            git_ref,
            key: key.map(Path::to_owned),
            known_hosts: known_hosts.to_owned(),
        })
    }

    fn git(&self, cache: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.arg(format!("--git-dir={}", cache.display()));
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
        ] {
            cmd.env_remove(var);
        }
        // Never wait for a password on a terminal nobody watches.
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("LC_ALL", "C");
        // GIT_SSH_COMMAND is read by a shell: the key path was checked to hold no character a
        // shell treats specially, and is quoted besides.
        let mut ssh = format!(
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={}",
            shell_quote(&self.known_hosts.display().to_string())
        );
        if let Some(key) = &self.key {
            ssh.push_str(&format!(
                " -o IdentitiesOnly=yes -i {}",
                shell_quote(&key.display().to_string())
            ));
        }
        cmd.env("GIT_SSH_COMMAND", ssh);
        cmd
    }

    /// Fetches the ref into the project's cache (made on first use) and returns its commit.
    pub async fn fetch(&self, cache: &Path) -> Result<String, ProjectError> {
        if !cache.join("HEAD").exists() {
            std::fs::create_dir_all(cache).map_err(ProjectError::io(format!(
                "the git cache {}",
                cache.display()
            )))?;
            let mut init = Command::new("git");
            init.arg("init").arg("--bare").arg("--quiet").arg(cache);
            let ran = run(init).await?;
            if !ran.success {
                return Err(ProjectError::Git {
                    step: "init",
                    output: ran.output,
                });
            }
        }
        if let Some(parent) = self.known_hosts.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let mut fetch = self.git(cache);
        fetch
            .args(["fetch", "--quiet", "--no-tags", "--force", "--"])
            .arg(&self.url)
            .arg(format!("+{}:{FETCHED}", self.git_ref));
        let ran = run(fetch).await?;
        if !ran.success {
            return Err(ProjectError::Git {
                step: "fetch",
                output: ran.output,
            });
        }
        let mut parse = self.git(cache);
        parse
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(format!("{FETCHED}^{{commit}}"));
        let ran = run(parse).await?;
        let commit = ran.stdout.trim().to_owned();
        if !ran.success || !is_object_id(&commit) {
            return Err(ProjectError::Git {
                step: "rev-parse",
                output: format!("{} does not name a commit: {}", self.git_ref, ran.output),
            });
        }
        Ok(commit)
    }
}

async fn run(cmd: Command) -> Result<command::Ran, ProjectError> {
    command::run(cmd)
        .await
        .map_err(|source| ProjectError::Missing {
            program: "git",
            source,
        })
}

/// Exports `commit` of the cache into `dest` (an empty directory), through `git archive` and
/// the tree module's checks. Blocking.
pub fn export(cache: &Path, commit: &str, dest: &Path) -> Result<(), ProjectError> {
    if !is_object_id(commit) {
        return Err(ProjectError::Refused(format!(
            "{commit} is not a commit id"
        )));
    }
    let mut child = std::process::Command::new("git")
        .arg(format!("--git-dir={}", cache.display()))
        .args(["archive", "--format=tar", commit])
        .env_remove("GIT_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| ProjectError::Missing {
            program: "git",
            source,
        })?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| ProjectError::Refused("git archive gave no output".into()))?;
    let unpacked = tree::unpack_upload(&mut stdout, dest, &Limits::REVISION);
    if unpacked.is_err() {
        // Stop git writing into a pipe nobody reads.
        let _ = child.kill();
    } else {
        // The tar's end marker comes before git's padding to a whole record (10 KiB): read
        // the rest, or git dies of SIGPIPE writing it and the sync fails for nothing.
        let _ = std::io::copy(&mut (&mut stdout).take(1 << 20), &mut std::io::sink());
    }
    drop(stdout);
    let out = child
        .wait_with_output()
        .map_err(ProjectError::io("git archive"))?;
    unpacked?;
    if !out.status.success() {
        return Err(ProjectError::Git {
            step: "archive",
            output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// A full commit id (SHA-1 or SHA-256), lower-case hex.
fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Accepts `https://`, `ssh://`, `git://`, `file://` URLs, absolute local paths and scp-like
/// `user@host:path`; refuses everything else, including `transport::address` helpers
/// (`ext::sh -c …`), `http://` (a deploy would fetch its code in the clear) and anything that
/// could be read as an option.
pub fn check_url(url: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("git URL {url:?}: {why}"));
    if url.is_empty() || url.len() > 1000 {
        return refuse("must be 1 to 1000 characters");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return refuse("holds spaces or control characters");
    }
    if url.starts_with('-') {
        return refuse("starts with '-'");
    }
    if url.contains("::") {
        return refuse("git's transport helpers (`ext::`, `fd::`…) are not allowed");
    }
    let lower = url.to_ascii_lowercase();
    for scheme in ["https://", "ssh://", "git://", "file://"] {
        if lower.starts_with(scheme) {
            return if url.len() > scheme.len() {
                Ok(())
            } else {
                refuse("names no repository")
            };
        }
    }
    if url.starts_with('/') {
        return Ok(());
    }
    if lower.contains("://") {
        return refuse(
            "only https://, ssh://, git://, file://, user@host:path and absolute paths are allowed",
        );
    }
    // scp-like: [user@]host:path, where the host has no '/' (else git reads a local path).
    if let Some((host, path)) = url.split_once(':') {
        let host_part = host.rsplit('@').next().unwrap_or(host);
        let host_ok = !host_part.is_empty()
            && host_part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            && host.contains('@');
        if host_ok && !path.is_empty() {
            return Ok(());
        }
    }
    refuse("only https://, ssh://, git://, file://, user@host:path and absolute paths are allowed")
}

/// A ref as git would accept it for a branch, tag or commit: letters, digits and `._/-`, no
/// `..`, `//`, `@{`, no leading `-` or `/`, no trailing `/`, `.` or `.lock`.
pub fn check_ref(r: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("git ref {r:?}: {why}"));
    if r.is_empty() || r.len() > 255 {
        return refuse("must be 1 to 255 characters");
    }
    if !r
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
    {
        return refuse("may hold only letters, digits and . _ / -");
    }
    if r.starts_with('-') || r.starts_with('/') || r.starts_with('.') {
        return refuse("may not start with '-', '/' or '.'");
    }
    if r.contains("..") || r.contains("//") || r.contains("/.") {
        return refuse("may not hold '..', '//' or a component starting with '.'");
    }
    if r.ends_with('/') || r.ends_with('.') || r.ends_with(".lock") {
        return refuse("may not end with '/', '.' or '.lock'");
    }
    Ok(())
}

/// A deploy key file: an absolute path of plain characters (it is named inside
/// `GIT_SSH_COMMAND`, which a shell reads).
pub fn check_key_path(p: &Path) -> Result<(), String> {
    let s = p.to_str().unwrap_or("");
    let plain = !s.is_empty()
        && s.starts_with('/')
        && s.len() <= 500
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-' | b'@' | b'+')
        });
    if !plain || s.split('/').any(|c| c == "..") {
        return Err(format!(
            "deploy key path {:?}: must be an absolute path of letters, digits and . _ / - @ +",
            p.display()
        ));
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_transports_are_allowed() {
        for ok in [
            "https://git.example.com/ops/site.git",
            "ssh://git@git.example.com:2222/ops/site.git",
            "git://git.example.com/site",
            "git@github.com:ops/site.git",
            "file:///srv/git/site.git",
            "/srv/git/site.git",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "fd::17",
            "--upload-pack=touch /tmp/x",
            "-oProxyCommand=x",
            "http://git.example.com/site.git",
            "ftp://x/y",
            "relative/path",
            "host:path",
            "git@host:",
            "https://",
            "https://x/\ny",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs_cannot_be_options_or_climb() {
        for ok in ["main", "release/1.2", "v1.0.0", "feature_x-y", "0123abcd"] {
            assert!(check_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "--upload-pack=touch /tmp/x",
            "-b",
            "a..b",
            "a//b",
            "/main",
            "main/",
            "main.lock",
            "refs/heads/.x",
            "ma in",
            "main@{1}",
            "x:y",
            "",
        ] {
            assert!(check_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_paths_are_plain_and_absolute() {
        assert!(check_key_path(Path::new("/etc/outpost/keys/deploy_ed25519")).is_ok());
        for bad in [
            "keys/id",
            "/etc/x y",
            "/etc/$(id)",
            "/etc/'x",
            "/a/../b",
            "",
        ] {
            assert!(check_key_path(Path::new(bad)).is_err(), "{bad}");
        }
        assert_eq!(shell_quote("/a/b"), "'/a/b'");
    }
}
