//! The inventory. Deleting a server that jobs refer to deactivates it instead (the seed's
//! RESTRICT rule), and the answer says so.

use outpost_api::{
    DeleteResult, NewServerRequest, Page, ServerPatchRequest, ServerQuery, ServerView,
};

use super::{paging, views, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::ServerId;
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
    Ok(views::page(page, views::server))
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
    new.host_vars = r.host_vars.map(serde_json::Value::Object);
    new.inventory_groups = r.inventory_groups;
    let server = core.store.create_server(&new, &caller.actor()).await?;
    Ok(views::server(&server))
}

pub async fn get(core: &Core, id: ServerId) -> Result<ServerView> {
    Ok(views::server(&core.store.get_server(id).await?))
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
        || r.inventory_groups.is_some();
    if attributes_changed {
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
        };
        core.store.update_server(id, &new, &actor).await?;
    }
    if let Some(active) = r.is_active {
        core.store.set_server_active(id, active, &actor).await?;
    }
    Ok(views::server(&core.store.get_server(id).await?))
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
