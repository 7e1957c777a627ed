use super::*;
use crate::model::{CredentialId, CredentialKind};

fn material(secret: &str, passphrase: Option<&str>) -> Material {
    Material {
        secret: secret.into(),
        passphrase: passphrase.map(Into::into),
    }
}

/// A real key from ssh-keygen (on every machine that runs ansible over SSH).
fn keygen(passphrase: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", "test", "-N", passphrase, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen is needed: apt-get install openssh-client");
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn ssh_keys_are_opened_with_their_passphrase_and_shown_by_fingerprint() {
    let plain = keygen("");
    let checked = check(CredentialKind::SshKey, None, &material(&plain, None)).unwrap();
    let info = checked.public_info.unwrap();
    assert!(info.starts_with("ssh-ed25519 SHA256:"), "{info}");

    let locked = keygen("correct horse");
    assert!(check(
        CredentialKind::SshKey,
        None,
        &material(&locked, Some("correct horse"))
    )
    .is_ok());
    for (pass, why) in [(None, "encrypted"), (Some("wrong"), "does not open")] {
        let e = check(CredentialKind::SshKey, None, &material(&locked, pass))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
        assert!(
            !e.contains("wrong") && !e.contains("BEGIN"),
            "the error quotes the secret: {e}"
        );
    }
    let e = check(CredentialKind::SshKey, None, &material(&plain, Some("x"))).unwrap_err();
    assert!(e.to_string().contains("not encrypted"), "{e}");

    let pem = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nabc\n-----END RSA PRIVATE KEY-----\n";
    let e = check(CredentialKind::SshKey, None, &material(pem, Some("p"))).unwrap_err();
    assert!(e.to_string().contains("ssh-keygen -p"), "{e}");
    let e = check(CredentialKind::SshKey, None, &material("hunter2", None)).unwrap_err();
    assert!(e.to_string().contains("not an SSH private key") && !e.to_string().contains("hunter2"));
}

#[test]
fn passwords_are_what_ansible_will_read_back() {
    for ok in ["s3cret", "with inner space", "ünïcödé"] {
        assert!(
            check(CredentialKind::BecomePassword, None, &material(ok, None)).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        "",
        " lead",
        "trail ",
        "two\nlines",
        "nul\0",
        &"x".repeat(2000),
    ] {
        assert!(
            check(CredentialKind::BecomePassword, None, &material(bad, None)).is_err(),
            "{bad:?}"
        );
    }
    let v = check(CredentialKind::VaultPassword, None, &material("v", None)).unwrap();
    assert_eq!(v.vault_id.as_deref(), Some("default"));
    let v = check(
        CredentialKind::VaultPassword,
        Some("prod"),
        &material("v", None),
    )
    .unwrap();
    assert_eq!(v.vault_id.as_deref(), Some("prod"));
    assert!(check(
        CredentialKind::VaultPassword,
        Some("a@b"),
        &material("v", None)
    )
    .is_err());
    assert!(check(
        CredentialKind::BecomePassword,
        Some("prod"),
        &material("v", None)
    )
    .is_err());
    assert!(check(
        CredentialKind::BecomePassword,
        None,
        &material("v", Some("p"))
    )
    .is_err());
}

fn row(
    keyring: &Keyring,
    id: i32,
    kind: CredentialKind,
    vault_id: Option<&str>,
    secret: &str,
) -> Credential {
    let uuid = uuid::Uuid::new_v4().to_string();
    let sealed = seal(keyring, &uuid, kind, &material(secret, None)).unwrap();
    Credential {
        id: CredentialId(id),
        uuid,
        name: format!("c{id}"),
        kind,
        description: None,
        vault_id: vault_id.map(Into::into),
        public_info: None,
        key_id: sealed.key_id,
        secret: sealed.bytes,
        created_by: None,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    }
}

#[test]
fn a_sealed_secret_opens_only_in_its_own_row() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::load_or_create(dir.path()).unwrap();
    let a = row(&keyring, 1, CredentialKind::BecomePassword, None, "pw-a");
    assert_eq!(open(&keyring, &a).unwrap().secret, "pw-a");
    // The same bytes in another row (another uuid), or the row's kind changed: refused.
    let mut b = row(&keyring, 2, CredentialKind::BecomePassword, None, "pw-b");
    b.secret = a.secret.clone();
    assert!(open(&keyring, &b).is_err());
    let mut c = a.clone();
    c.kind = CredentialKind::VaultPassword;
    assert!(open(&keyring, &c).is_err());
}

#[test]
fn a_launch_credential_wins_over_the_servers_and_projects_of_its_use() {
    let dir = tempfile::tempdir().unwrap();
    let k = Keyring::load_or_create(dir.path()).unwrap();
    let server_become = row(&k, 1, CredentialKind::BecomePassword, None, "server-become");
    let vault_default = row(
        &k,
        2,
        CredentialKind::VaultPassword,
        Some("default"),
        "proj-default",
    );
    let vault_prod = row(
        &k,
        3,
        CredentialKind::VaultPassword,
        Some("prod"),
        "proj-prod",
    );
    let launch_prod = row(
        &k,
        4,
        CredentialKind::VaultPassword,
        Some("prod"),
        "launch-prod",
    );
    let launch_become = row(&k, 5, CredentialKind::BecomePassword, None, "launch-become");
    let o = |c: &Credential| open(&k, c).unwrap();
    let secrets = job_secrets(JobCredentials {
        server_ssh: None,
        server_become: Some((&server_become, o(&server_become))),
        project_vault: vec![
            (&vault_default, o(&vault_default)),
            (&vault_prod, o(&vault_prod)),
        ],
        launch: vec![
            (&launch_prod, o(&launch_prod)),
            (&launch_become, o(&launch_become)),
        ],
    });
    assert!(secrets.ssh_key.is_none());
    assert_eq!(secrets.become_password.as_deref(), Some("launch-become"));
    let vault: Vec<(&str, &str)> = secrets
        .vault
        .iter()
        .map(|v| (v.id.as_str(), v.password.as_str()))
        .collect();
    assert_eq!(
        vault,
        [("default", "proj-default"), ("prod", "launch-prod")]
    );

    assert!(check_launch_set(&[vault_prod.clone(), launch_prod.clone()]).is_err());
    assert!(check_launch_set(&[vault_default, vault_prod, launch_become]).is_ok());
}
