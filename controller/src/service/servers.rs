//! The inventory. Deleting a server that jobs refer to deactivates it instead (the seed's
//! RESTRICT rule), and the answer says so.

use outpost_api::{
    DeleteResult, NewServerRequest, Page, ServerPatchRequest, ServerQuery, ServerView,
};

use super::{credentials, paging, views, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::{CredentialKind, ServerId};
use crate::store::servers::{NewServer, ServerFilter};
use crate::store::StoreError;

/// `key=value` pairs of a tag filter.
pub fn parse_tag(tag: &str) -> Result<(String, String)> {
    match tag.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(ServiceError::bad_request(format!(
            "tag filter '{tag}' is not key=value"
        ))),
    }
}

pub async fn list(core: &Core, q: &ServerQuery) -> Result<Page<ServerView>> {
    let f = ServerFilter {
        active: q.active,
        environment: q.environment.clone(),
        tags: q
            .tag
            .as_deref()
            .map(parse_tag)
            .transpose()?
            .into_iter()
            .collect(),
    };
    let page = core
        .store
        .list_servers(&f, paging(q.limit, q.offset))
        .await?;
    let names = credentials::names(core).await?;
    Ok(views::page(page, |s| views::server(s, &names)))
}

/// The server's view, with its credentials' names.
async fn view(core: &Core, server: &crate::model::Server) -> Result<ServerView> {
    let names = credentials::names(core).await?;
    Ok(views::server(server, &names))
}

/// Refuses host variables that would store a secret in the clear.
pub fn check_host_vars(vars: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<()> {
    if let Some(found) =
        vars.and_then(|v| v.keys().find(|k| outpost_api::inventory::is_secret_var(k)))
    {
        return Err(ServiceError::unprocessable(format!(
            "host_vars: {found} would keep a secret in the clear; store it as a credential (`outpost credential add`) and attach it to the server (ssh_credential, become_credential)"
        )));
    }
    Ok(())
}

pub async fn create(core: &Core, caller: &Caller, r: NewServerRequest) -> Result<ServerView> {
    let mut new = NewServer::new(&r.hostname, &r.ip_address, &r.os_type);
    new.os_version = r.os_version;
    new.ssh_port = r.ssh_port.unwrap_or(22);
    if let Some(u) = r.ssh_user {
        new.ssh_user = u;
    }
    new.ssh_key_path = r.ssh_key_path;
    new.tags = r.tags.map(serde_json::Value::Object);
    new.environment = r.environment;
    new.description = r.description;
    check_host_vars(r.host_vars.as_ref())?;
    new.host_vars = r.host_vars.map(serde_json::Value::Object);
    new.inventory_groups = r.inventory_groups;
    new.ssh_credential_id = credentials::attach(
        core,
        r.ssh_credential.as_deref().filter(|n| !n.is_empty()),
        None,
        CredentialKind::SshKey,
        "ssh_credential",
    )
    .await?;
    new.become_credential_id = credentials::attach(
        core,
        r.become_credential.as_deref().filter(|n| !n.is_empty()),
        None,
        CredentialKind::BecomePassword,
        "become_credential",
    )
    .await?;
    let server = core.store.create_server(&new, &caller.actor()).await?;
    view(core, &server).await
}

pub async fn get(core: &Core, id: ServerId) -> Result<ServerView> {
    view(core, &core.store.get_server(id).await?).await
}

pub async fn update(
    core: &Core,
    caller: &Caller,
    id: ServerId,
    r: ServerPatchRequest,
) -> Result<ServerView> {
    let old = core.store.get_server(id).await?;
    let actor = caller.actor();
    let attributes_changed = r.hostname.is_some()
        || r.ip_address.is_some()
        || r.os_type.is_some()
        || r.os_version.is_some()
        || r.ssh_port.is_some()
        || r.ssh_user.is_some()
        || r.ssh_key_path.is_some()
        || r.tags.is_some()
        || r.environment.is_some()
        || r.description.is_some()
        || r.host_vars.is_some()
        || r.inventory_groups.is_some()
        || r.ssh_credential.is_some()
        || r.become_credential.is_some();
    // Checked on every change, so a row stored before the rule cannot be carried along.
    check_host_vars(
        r.host_vars
            .as_ref()
            .or(old.host_vars.as_ref().map(|h| &h.0)),
    )?;
    if attributes_changed {
        let ssh_credential_id = credentials::attach(
            core,
            r.ssh_credential.as_deref(),
            old.ssh_credential_id,
            CredentialKind::SshKey,
            "ssh_credential",
        )
        .await?;
        let become_credential_id = credentials::attach(
            core,
            r.become_credential.as_deref(),
            old.become_credential_id,
            CredentialKind::BecomePassword,
            "become_credential",
        )
        .await?;
        let new = NewServer {
            hostname: r.hostname.unwrap_or(old.hostname),
            ip_address: r.ip_address.unwrap_or(old.ip_address),
            os_type: r.os_type.unwrap_or(old.os_type),
            os_version: r.os_version.or(old.os_version),
            ssh_port: r.ssh_port.unwrap_or(old.ssh_port),
            ssh_user: r.ssh_user.unwrap_or(old.ssh_user),
            ssh_key_path: r.ssh_key_path.or(old.ssh_key_path),
            tags: r
                .tags
                .or(old.tags.map(|t| t.0))
                .map(serde_json::Value::Object),
            environment: r.environment.or(old.environment),
            description: r.description.or(old.description),
            host_vars: r
                .host_vars
                .or(old.host_vars.map(|t| t.0))
                .map(serde_json::Value::Object),
            inventory_groups: r.inventory_groups.or(old.inventory_groups.map(|g| g.0)),
            ssh_credential_id,
            become_credential_id,
        };
        core.store.update_server(id, &new, &actor).await?;
    }
    if let Some(active) = r.is_active {
        core.store.set_server_active(id, active, &actor).await?;
    }
    view(core, &core.store.get_server(id).await?).await
}

pub async fn delete(core: &Core, caller: &Caller, id: ServerId) -> Result<DeleteResult> {
    let actor = caller.actor();
    delete_or_deactivate("server", core.store.delete_server(id, &actor), || async {
        Ok(core
            .store
            .set_server_active(id, false, &actor)
            .await?
            .hostname)
    })
    .await
}

/// Deletes a row nothing refers to; one that jobs refer to is deactivated instead (the seed's
/// RESTRICT rule), and the answer says which happened. `deactivate` returns the row's name.
pub(super) async fn delete_or_deactivate<D, A, F>(
    what: &str,
    delete: D,
    deactivate: A,
) -> Result<DeleteResult>
where
    D: std::future::Future<Output = Result<(), StoreError>>,
    A: FnOnce() -> F,
    F: std::future::Future<Output = Result<String, StoreError>>,
{
    match delete.await {
        Ok(()) => Ok(DeleteResult {
            outcome: "deleted".into(),
            message: format!("the {what} is deleted"),
        }),
        Err(StoreError::InUse { count, .. }) => {
            let name = deactivate().await?;
            Ok(DeleteResult {
                outcome: "deactivated".into(),
                message: format!(
                    "{what} {name} has {count} jobs, so it was deactivated instead of deleted"
                ),
            })
        }
        Err(e) => Err(e.into()),
    }
}
