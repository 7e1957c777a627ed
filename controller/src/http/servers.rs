//! `/api/v1/servers`: the inventory. Deleting a server that jobs refer to deactivates it
//! instead (the seed's RESTRICT rule), and the answer says so.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{
    DeleteResult, NewServerRequest, Page, ServerPatchRequest, ServerQuery, ServerView,
};

use super::auth::Caller;
use super::error::{ApiError, ApiResult, Json, Path, Query};
use super::users::paging;
use super::{views, ApiState};
use crate::model::ServerId;
use crate::store::servers::{NewServer, ServerFilter};
use crate::store::StoreError;

/// `key=value` pairs of a tag filter.
pub fn parse_tag(tag: &str) -> Result<(String, String), ApiError> {
    match tag.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(ApiError::bad_request(format!(
            "tag filter '{tag}' is not key=value"
        ))),
    }
}

#[utoipa::path(get, path = "/api/v1/servers", tag = "servers", params(ServerQuery),
    responses((status = 200, body = Page<ServerView>)))]
pub async fn list(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<ServerQuery>,
) -> ApiResult<Json<Page<ServerView>>> {
    let f = ServerFilter {
        active: q.active,
        environment: q.environment,
        tags: q
            .tag
            .as_deref()
            .map(parse_tag)
            .transpose()?
            .into_iter()
            .collect(),
    };
    let page = st.store.list_servers(&f, paging(q.limit, q.offset)).await?;
    Ok(Json(views::page(page, views::server)))
}

#[utoipa::path(post, path = "/api/v1/servers", tag = "servers", request_body = NewServerRequest,
    responses((status = 201, body = ServerView), (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewServerRequest>,
) -> ApiResult<(StatusCode, Json<ServerView>)> {
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
    let server = st.store.create_server(&new, &caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(views::server(&server))))
}

#[utoipa::path(get, path = "/api/v1/servers/{id}", tag = "servers", params(("id" = i32, Path)),
    responses((status = 200, body = ServerView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<i32>,
) -> ApiResult<Json<ServerView>> {
    Ok(Json(views::server(
        &st.store.get_server(ServerId(id)).await?,
    )))
}

#[utoipa::path(patch, path = "/api/v1/servers/{id}", tag = "servers", params(("id" = i32, Path)),
    request_body = ServerPatchRequest,
    responses((status = 200, body = ServerView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, description = "Another server has that hostname", body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i32>,
    Json(r): Json<ServerPatchRequest>,
) -> ApiResult<Json<ServerView>> {
    let id = ServerId(id);
    let old = st.store.get_server(id).await?;
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
        || r.host_vars.is_some();
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
        };
        st.store.update_server(id, &new, &actor).await?;
    }
    if let Some(active) = r.is_active {
        st.store.set_server_active(id, active, &actor).await?;
    }
    Ok(Json(views::server(&st.store.get_server(id).await?)))
}

#[utoipa::path(delete, path = "/api/v1/servers/{id}", tag = "servers", params(("id" = i32, Path)),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i32>,
) -> ApiResult<Json<DeleteResult>> {
    let id = ServerId(id);
    let actor = caller.actor();
    delete_or_deactivate("server", st.store.delete_server(id, &actor), || async {
        Ok(st
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
) -> ApiResult<Json<DeleteResult>>
where
    D: std::future::Future<Output = Result<(), StoreError>>,
    A: FnOnce() -> F,
    F: std::future::Future<Output = Result<String, StoreError>>,
{
    match delete.await {
        Ok(()) => Ok(Json(DeleteResult {
            outcome: "deleted".into(),
            message: format!("the {what} is deleted"),
        })),
        Err(StoreError::InUse { count, .. }) => {
            let name = deactivate().await?;
            Ok(Json(DeleteResult {
                outcome: "deactivated".into(),
                message: format!(
                    "{what} {name} has {count} jobs, so it was deactivated instead of deleted"
                ),
            }))
        }
        Err(e) => Err(e.into()),
    }
}
