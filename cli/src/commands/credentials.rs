//! Credentials (admins): stored from a file or an unechoed prompt — never from an argument or
//! the environment, where other users and shell histories could read them — listed, shown with
//! where they are used, replaced, renamed and deleted. The controller never shows a secret
//! back, so nothing here prints one.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context as _};
use outpost_api::client::{ApiError, Client};
use outpost_api::*;
use zeroize::Zeroizing;

use super::{client, prompt_hidden, ALL};
use crate::output::{cell, time, Output};
use crate::terminal::escape;
use crate::{CredentialCmd, CredentialKindArg, SecretArgs};

impl From<CredentialKindArg> for CredentialKind {
    fn from(k: CredentialKindArg) -> CredentialKind {
        match k {
            CredentialKindArg::SshKey => CredentialKind::SshKey,
            CredentialKindArg::BecomePassword => CredentialKind::BecomePassword,
            CredentialKindArg::VaultPassword => CredentialKind::VaultPassword,
        }
    }
}

/// A credential named by name (or, failing that, by id), with where it is used.
async fn credential_by(c: &Client, s: &str) -> anyhow::Result<CredentialView> {
    let page = c.credentials().list(&ALL).await?;
    let id = match page.items.iter().find(|x| x.name == s) {
        Some(found) => found.id,
        None => s
            .parse::<i32>()
            .ok()
            .with_context(|| format!("no credential named {s}"))?,
    };
    Ok(c.credentials().get(id).await?)
}

const HEADER: [&str; 6] = ["id", "name", "kind", "vault id", "public info", "updated"];

fn row(v: &CredentialView) -> Vec<String> {
    vec![
        v.id.to_string(),
        v.name.clone(),
        v.kind.to_string(),
        cell(&v.vault_id),
        cell(&v.public_info),
        time(&Some(v.updated_at)),
    ]
}

/// Where a credential is attached, one use per item (`server web1 (ssh)`).
fn attachments(u: &CredentialUsage) -> Vec<String> {
    let named = |refs: &[NameRef], what: &str, how: &str| {
        refs.iter()
            .map(|r| format!("{what} {} ({how})", r.name))
            .collect::<Vec<_>>()
    };
    let mut all = named(&u.ssh_servers, "server", "ssh");
    all.extend(named(&u.become_servers, "server", "become"));
    all.extend(named(&u.git_projects, "project", "git"));
    all.extend(named(&u.vault_projects, "project", "vault"));
    if u.active_jobs > 0 {
        all.push(format!("{} pending or running job(s)", u.active_jobs));
    }
    all
}

fn show(v: &CredentialView) {
    println!("{} ({})", escape(&v.name), v.kind);
    if let Some(d) = &v.description {
        println!("  description: {}", escape(d));
    }
    if let Some(id) = &v.vault_id {
        println!("  vault id:    {}", escape(id));
    }
    if let Some(p) = &v.public_info {
        println!("  public key:  {}", escape(p));
    }
    println!(
        "  created:     {}{}",
        time(&Some(v.created_at)),
        v.created_by
            .map(|u| format!(" by user {u}"))
            .unwrap_or_default()
    );
    println!("  updated:     {}", time(&Some(v.updated_at)));
    let used = v.usage.as_ref().map(attachments).unwrap_or_default();
    if used.is_empty() {
        println!("  used by:     nothing");
    }
    for (i, u) in used.iter().enumerate() {
        let label = if i == 0 { "used by:" } else { "" };
        println!("  {label:<12} {}", escape(u));
    }
}

pub async fn credentials(ctx: Option<&str>, cmd: CredentialCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    match cmd {
        CredentialCmd::Add {
            name,
            kind,
            vault_id,
            description,
            secret,
        } => {
            let kind = CredentialKind::from(kind);
            let (mut secret_text, mut passphrase) = read_secret(&secret, kind, &name)?;
            let req = NewCredentialRequest {
                name,
                kind,
                description,
                vault_id,
                secret: std::mem::take(&mut *secret_text),
                passphrase: passphrase.as_mut().map(|p| std::mem::take(&mut **p)),
            };
            let v = c.credentials().create(&req).await?;
            if !out.json(&v) {
                out.table(&HEADER, vec![row(&v)]);
            }
        }
        CredentialCmd::List => {
            let page = c.credentials().list(&ALL).await?;
            if !out.json(&page) {
                out.table(&HEADER, page.items.iter().map(row).collect());
            }
        }
        CredentialCmd::Show { credential } => {
            let v = credential_by(&c, &credential).await?;
            if !out.json(&v) {
                show(&v);
            }
        }
        CredentialCmd::Replace {
            credential,
            vault_id,
            secret,
        } => {
            let old = credential_by(&c, &credential).await?;
            let (mut secret_text, mut passphrase) = read_secret(&secret, old.kind, &old.name)?;
            // The request wipes its secret when dropped, so it is filled in, not built with `..`.
            let mut req = CredentialPatchRequest::default();
            req.vault_id = vault_id;
            req.secret = Some(std::mem::take(&mut *secret_text));
            req.passphrase = passphrase.as_mut().map(|p| std::mem::take(&mut **p));
            let v = c.credentials().update(old.id, &req).await?;
            if !out.json(&v) {
                println!(
                    "the secret of credential {} is replaced; jobs launched from now on use it",
                    escape(&v.name)
                );
            }
        }
        CredentialCmd::Rename {
            credential,
            new_name,
        } => {
            let old = credential_by(&c, &credential).await?;
            let mut req = CredentialPatchRequest::default();
            req.name = Some(new_name);
            let v = c.credentials().update(old.id, &req).await?;
            if !out.json(&v) {
                println!(
                    "credential {} is now {}",
                    escape(&old.name),
                    escape(&v.name)
                );
            }
        }
        CredentialCmd::Rm { credential } => {
            let old = credential_by(&c, &credential).await?;
            match c.credentials().delete(old.id).await {
                Ok(r) => {
                    if !out.json(&r) {
                        println!("credential {} deleted", escape(&old.name));
                    }
                }
                Err(e @ ApiError::Refused { status: 409, .. }) => {
                    // The refusal says the credential is in use; where, the usage says.
                    let used = match c.credentials().get(old.id).await {
                        Ok(v) => v.usage.as_ref().map(attachments).unwrap_or_default(),
                        Err(_) => Vec::new(),
                    };
                    if used.is_empty() {
                        return Err(e.into());
                    }
                    bail!("{e}; it is used by: {}", used.join(", "));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// A secret and an SSH key's passphrase, wiped from memory when dropped.
type Secret = (Zeroizing<String>, Option<Zeroizing<String>>);

/// The secret of a credential of `kind` as `args` say to read it: from a file (or standard
/// input), else, for a password, from an unechoed prompt typed twice.
fn read_secret(args: &SecretArgs, kind: CredentialKind, name: &str) -> anyhow::Result<Secret> {
    let key = kind == CredentialKind::SshKey;
    if !key && (args.passphrase_file.is_some() || args.ask_passphrase) {
        bail!("only ssh-key credentials have a passphrase");
    }
    let stdin = |p: &Option<std::path::PathBuf>| p.as_deref() == Some(Path::new("-"));
    if stdin(&args.secret_file) && stdin(&args.passphrase_file) {
        bail!("standard input can give the secret or the passphrase, not both: put one in a file");
    }
    let limit = if key {
        MAX_SSH_KEY_BYTES
    } else {
        MAX_PASSWORD_BYTES
    };
    let secret = match &args.secret_file {
        Some(path) => {
            let text = read_limited(path, limit)?;
            if key {
                text
            } else {
                without_final_newline(text)
            }
        }
        None if key => bail!(
            "an SSH key is read from a file: give --secret-file PATH (or --secret-file - for standard input)"
        ),
        None => ask_twice(&format!("Password for credential {name}: "))?,
    };
    let passphrase = match (&args.passphrase_file, args.ask_passphrase) {
        (Some(path), _) => Some(without_final_newline(read_limited(
            path,
            MAX_PASSWORD_BYTES,
        )?)),
        (None, true) => Some(Zeroizing::new(prompt_hidden(
            &format!("Passphrase of the key {name}: "),
            "give --passphrase-file PATH",
        )?)),
        (None, false) => None,
    };
    Ok((secret, passphrase))
}

/// A password typed twice on the terminal (nothing else would catch a typo in it).
fn ask_twice(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let otherwise = "give --secret-file PATH (or --secret-file - for standard input)";
    let first = Zeroizing::new(prompt_hidden(prompt, otherwise)?);
    let again = Zeroizing::new(prompt_hidden("Again: ", otherwise)?);
    if *first != *again {
        bail!("the two entries differ; nothing was stored");
    }
    Ok(first)
}

/// The text of `path` (`-`: standard input), refused when longer than `limit` bytes (and one
/// line break) so that a wrong file is not read whole. Errors name the file, never its content.
pub(crate) fn read_limited(path: &Path, limit: usize) -> anyhow::Result<Zeroizing<String>> {
    let shown = path.display().to_string();
    let mut bytes = Zeroizing::new(Vec::new());
    // One line break more than a secret may hold, and one byte more to know it is too long.
    let take = (limit + 3) as u64;
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(take)
            .read_to_end(&mut bytes)
            .context("cannot read the secret from standard input")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(take).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {shown}"))?;
    }
    if bytes.len() > limit + 2 {
        bail!("{shown} holds more than {limit} bytes: not a secret of this kind");
    }
    if bytes.is_empty() {
        bail!("{shown} is empty");
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(_) => bail!("{shown} is not UTF-8 text"),
    }
}

/// A password file ends its line the way editors and `echo` do; the password is what comes
/// before that one line break.
pub(crate) fn without_final_newline(mut text: Zeroizing<String>) -> Zeroizing<String> {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(secret: Option<&Path>, passphrase: Option<&Path>, ask: bool) -> SecretArgs {
        SecretArgs {
            secret_file: secret.map(Path::to_path_buf),
            passphrase_file: passphrase.map(Path::to_path_buf),
            ask_passphrase: ask,
        }
    }

    #[test]
    fn a_password_file_loses_its_final_line_break_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret pass\r\n").unwrap();
        let (s, p) = read_secret(
            &args(Some(&f), None, false),
            CredentialKind::BecomePassword,
            "x",
        )
        .unwrap();
        assert_eq!(s.as_str(), "s3cret pass");
        assert!(p.is_none());
        // Two line breaks: the second is the password's, for the controller to refuse.
        std::fs::write(&f, "pw\n\n").unwrap();
        let (s, _) = read_secret(
            &args(Some(&f), None, false),
            CredentialKind::VaultPassword,
            "x",
        )
        .unwrap();
        assert_eq!(s.as_str(), "pw\n");
    }

    #[test]
    fn a_key_is_kept_whole_with_its_passphrase_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let (k, pp) = (dir.path().join("key"), dir.path().join("pp"));
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n";
        std::fs::write(&k, key).unwrap();
        std::fs::write(&pp, "open sesame\n").unwrap();
        let (s, p) = read_secret(
            &args(Some(&k), Some(&pp), false),
            CredentialKind::SshKey,
            "x",
        )
        .unwrap();
        assert_eq!(s.as_str(), key);
        assert_eq!(p.as_deref().map(String::as_str), Some("open sesame"));
    }

    #[test]
    fn refusals_never_quote_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        let secret = "TOPSECRET".repeat(200);
        std::fs::write(&f, &secret).unwrap();
        let e = read_secret(
            &args(Some(&f), None, false),
            CredentialKind::BecomePassword,
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("more than 1024 bytes"), "{e}");
        assert!(!e.contains("TOPSECRET"), "{e}");
        std::fs::write(&f, b"\xffTOPSECRET").unwrap();
        let e = read_secret(
            &args(Some(&f), None, false),
            CredentialKind::BecomePassword,
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not UTF-8") && !e.contains("TOPSECRET"), "{e}");
    }

    #[test]
    fn what_cannot_work_is_refused_before_reading() {
        let dash = Path::new("-");
        let both = read_secret(
            &args(Some(dash), Some(dash), false),
            CredentialKind::SshKey,
            "x",
        )
        .unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let pass = read_secret(
            &args(Some(dash), None, true),
            CredentialKind::VaultPassword,
            "x",
        )
        .unwrap_err();
        assert!(pass.to_string().contains("only ssh-key"), "{pass}");
        let no_file =
            read_secret(&args(None, None, false), CredentialKind::SshKey, "x").unwrap_err();
        assert!(no_file.to_string().contains("--secret-file"), "{no_file}");
    }
}
