//! `/api/v1/users`: accounts, roles and passwords (the rules are [`service::users`]'s).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{
    NewUserRequest, Page, PasswordChangeRequest, UserPatchRequest, UserQuery, UserView,
};

use super::error::{ApiResult, Json, Path, Query};
use super::WebState;
use crate::model::UserId;
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserQuery),
    responses((status = 200, body = Page<UserView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<Page<UserView>>> {
    Ok(Json(service::users::list(&st.core, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUserRequest,
    responses((status = 201, body = UserView), (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<NewUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::users::create(&st.core, &caller, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = i32, Path)),
    responses((status = 200, body = UserView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(id): Path<UserId>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(service::users::get(&st.core, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = i32, Path)),
    request_body = UserPatchRequest,
    responses((status = 200, body = UserView), (status = 404, body = outpost_api::ErrorBody), (status = 409, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<UserId>,
    Json(req): Json<UserPatchRequest>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(
        service::users::update(&st.core, &caller, id, req).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/users/{id}/password", tag = "users", params(("id" = i32, Path)),
    request_body = PasswordChangeRequest,
    responses((status = 200, body = UserView), (status = 403, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody),
              (status = 429, body = outpost_api::ErrorBody)))]
pub async fn password(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<UserId>,
    Json(req): Json<PasswordChangeRequest>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(
        service::users::set_password(&st.core, &caller, id, &req).await?,
    ))
}
