//! `/api/v1/servers`: the inventory (the rules are [`service::servers`]'s).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{
    DeleteResult, NewServerRequest, Page, ServerPatchRequest, ServerQuery, ServerView,
};

use super::error::{ApiResult, Json, Path, Query};
use super::WebState;
use crate::model::ServerId;
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/servers", tag = "servers", params(ServerQuery),
    responses((status = 200, body = Page<ServerView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<ServerQuery>,
) -> ApiResult<Json<Page<ServerView>>> {
    Ok(Json(service::servers::list(&st.core, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/servers", tag = "servers", request_body = NewServerRequest,
    responses((status = 201, body = ServerView), (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewServerRequest>,
) -> ApiResult<(StatusCode, Json<ServerView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::servers::create(&st.core, &caller, r).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/servers/{id}", tag = "servers", params(("id" = i32, Path)),
    responses((status = 200, body = ServerView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(id): Path<ServerId>,
) -> ApiResult<Json<ServerView>> {
    Ok(Json(service::servers::get(&st.core, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/servers/{id}", tag = "servers", params(("id" = i32, Path)),
    request_body = ServerPatchRequest,
    responses((status = 200, body = ServerView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, description = "Another server has that hostname", body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<ServerId>,
    Json(r): Json<ServerPatchRequest>,
) -> ApiResult<Json<ServerView>> {
    Ok(Json(
        service::servers::update(&st.core, &caller, id, r).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/servers/{id}", tag = "servers", params(("id" = i32, Path)),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<ServerId>,
) -> ApiResult<Json<DeleteResult>> {
    Ok(Json(service::servers::delete(&st.core, &caller, id).await?))
}
