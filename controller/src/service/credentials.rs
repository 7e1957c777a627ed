//! Credentials (admins only): stored once, sealed under the keyring's current key, never shown
//! again; listed by name and kind; replaced; deleted when attached nowhere. Also the lookups
//! the other services use to attach them (by name, of the right kind).

use std::collections::HashMap;

use outpost_api::{
    CredentialPatchRequest, CredentialUsage, CredentialView, DeleteResult, NewCredentialRequest,
    Page, PageQuery,
};

use super::{paging, Caller, Result, ServiceError};
use crate::core::Core;
use crate::credential::{self, CredentialError, Material};
use crate::model::{Credential, CredentialId, CredentialKind};
use crate::store::credentials::{CredentialChange, NewCredential};

pub fn view(c: &Credential, usage: Option<CredentialUsage>) -> CredentialView {
    CredentialView {
        id: c.id.0,
        name: c.name.clone(),
        kind: c.kind,
        description: c.description.clone(),
        vault_id: c.vault_id.clone(),
        public_info: c.public_info.clone(),
        created_by: c.created_by.map(|u| u.0),
        created_at: c.created_at,
        updated_at: c.updated_at,
        usage,
    }
}

impl From<CredentialError> for ServiceError {
    fn from(e: CredentialError) -> ServiceError {
        match e {
            CredentialError::Invalid(m) => ServiceError::unprocessable(m),
            CredentialError::Sealing { .. } => {
                tracing::error!(error = %e, "a credential cannot be sealed or opened");
                ServiceError::internal(
                    "the controller cannot seal or open credentials: see its log (its credentials key)",
                )
            }
        }
    }
}

/// Checks the secret for its kind on a blocking thread (opening an SSH key with its
/// passphrase runs bcrypt-pbkdf).
async fn checked(
    kind: CredentialKind,
    vault_id: Option<String>,
    material: Material,
) -> Result<(credential::Checked, Material)> {
    tokio::task::spawn_blocking(move || {
        credential::check(kind, vault_id.as_deref(), &material).map(|c| (c, material))
    })
    .await
    .map_err(|_| ServiceError::internal("checking the credential failed"))?
    .map_err(Into::into)
}

pub async fn create(
    core: &Core,
    caller: &Caller,
    mut r: NewCredentialRequest,
) -> Result<CredentialView> {
    let material = Material {
        secret: std::mem::take(&mut r.secret),
        passphrase: r.passphrase.take(),
    };
    let (checked, material) = checked(r.kind, r.vault_id.clone(), material).await?;
    let uuid = uuid::Uuid::new_v4().to_string();
    let sealed = credential::seal(&core.keyring, &uuid, r.kind, &material).map_err(|source| {
        CredentialError::Sealing {
            name: r.name.clone(),
            source,
        }
    })?;
    let c = core
        .store
        .create_credential(
            &NewCredential {
                uuid,
                name: r.name.clone(),
                kind: r.kind,
                description: r.description.clone(),
                vault_id: checked.vault_id,
                public_info: checked.public_info,
                key_id: sealed.key_id,
                secret: sealed.bytes,
            },
            &caller.actor(),
        )
        .await?;
    Ok(view(&c, Some(CredentialUsage::default())))
}

pub async fn list(core: &Core, q: &PageQuery) -> Result<Page<CredentialView>> {
    let page = core
        .store
        .list_credentials(paging(q.limit, q.offset))
        .await?;
    Ok(super::views::page(page, |c| view(c, None)))
}

pub async fn get(core: &Core, id: CredentialId) -> Result<CredentialView> {
    let c = core.store.get_credential(id).await?;
    let usage = core.store.credential_usage(id).await?;
    Ok(view(&c, Some(usage)))
}

pub async fn update(
    core: &Core,
    caller: &Caller,
    id: CredentialId,
    mut r: CredentialPatchRequest,
) -> Result<CredentialView> {
    let old = core.store.get_credential(id).await?;
    let mut change = CredentialChange {
        name: r.name.take(),
        description: r
            .description
            .take()
            .map(|d| Some(d).filter(|d| !d.is_empty())),
        ..Default::default()
    };
    if r.vault_id.is_some() && r.secret.is_none() {
        // A vault id alone: checked with the stored secret's kind rules.
        if old.kind != CredentialKind::VaultPassword {
            return Err(ServiceError::unprocessable(
                "vault_id: only vault_password credentials have one",
            ));
        }
        let id = r.vault_id.take().unwrap_or_default();
        if !outpost_protocol::message::valid_vault_id(&id) {
            return Err(ServiceError::unprocessable(
                "vault_id: must be 1 to 64 of letters, digits, _ - .",
            ));
        }
        change.vault_id = Some(id);
    }
    if r.passphrase.is_some() && r.secret.is_none() {
        return Err(ServiceError::unprocessable(
            "passphrase: give it with the secret it opens (a passphrase alone changes nothing)",
        ));
    }
    if let Some(secret) = r.secret.take() {
        let vault_id = r.vault_id.take().or(old.vault_id.clone());
        let material = Material {
            secret,
            passphrase: r.passphrase.take(),
        };
        let (checked, material) = checked(old.kind, vault_id, material).await?;
        let sealed =
            credential::seal(&core.keyring, &old.uuid, old.kind, &material).map_err(|source| {
                CredentialError::Sealing {
                    name: old.name.clone(),
                    source,
                }
            })?;
        change.vault_id = checked.vault_id;
        change.public_info = Some(checked.public_info);
        change.sealed = Some((sealed.key_id, sealed.bytes));
    }
    let c = core
        .store
        .update_credential(id, &change, &caller.actor())
        .await?;
    let usage = core.store.credential_usage(id).await?;
    Ok(view(&c, Some(usage)))
}

pub async fn delete(core: &Core, caller: &Caller, id: CredentialId) -> Result<DeleteResult> {
    core.store.delete_credential(id, &caller.actor()).await?;
    Ok(DeleteResult {
        outcome: "deleted".into(),
        message: "the credential is deleted".into(),
    })
}

/// A credential named by a caller, of the kind its use needs; `field` names the use in the
/// refusal.
pub async fn resolve(
    core: &Core,
    name: &str,
    kind: CredentialKind,
    field: &str,
) -> Result<Credential> {
    let c = by_name(core, name, field).await?;
    if c.kind != kind {
        return Err(ServiceError::unprocessable(format!(
            "{field}: credential '{name}' is a {}, not a {}",
            c.kind, kind
        )));
    }
    Ok(c)
}

/// A credential a request names in `field`: an unknown name is the request's fault (422).
pub async fn by_name(core: &Core, name: &str, field: &str) -> Result<Credential> {
    core.store
        .get_credential_by_name(name)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound(_) => {
                ServiceError::unprocessable(format!("{field}: no credential named '{name}'"))
            }
            e => e.into(),
        })
}

/// An attachment's new value from a request: `None` keeps `old`, `""` detaches, a name
/// attaches that credential.
pub async fn attach(
    core: &Core,
    requested: Option<&str>,
    old: Option<CredentialId>,
    kind: CredentialKind,
    field: &str,
) -> Result<Option<CredentialId>> {
    match requested {
        None => Ok(old),
        Some("") => Ok(None),
        Some(name) => Ok(Some(resolve(core, name, kind, field).await?.id)),
    }
}

/// Credential names by id, for views that show attachments.
pub async fn names(core: &Core) -> Result<HashMap<CredentialId, String>> {
    Ok(core.store.credential_names().await?)
}
