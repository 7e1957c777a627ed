//! `/api/v1/credentials`: stored secrets, admins only (the rules are
//! [`service::credentials`]'s). A secret goes in once and never comes back out.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{
    CredentialPatchRequest, CredentialView, DeleteResult, NewCredentialRequest, Page, PageQuery,
};

use super::error::{ApiResult, Json, Path, Query};
use super::WebState;
use crate::model::CredentialId;
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/credentials", tag = "credentials", params(PageQuery),
    responses((status = 200, body = Page<CredentialView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<CredentialView>>> {
    Ok(Json(service::credentials::list(&st.core, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/credentials", tag = "credentials", request_body = NewCredentialRequest,
    responses((status = 201, body = CredentialView), (status = 409, body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewCredentialRequest>,
) -> ApiResult<(StatusCode, Json<CredentialView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::credentials::create(&st.core, &caller, r).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/credentials/{id}", tag = "credentials", params(("id" = i32, Path)),
    responses((status = 200, body = CredentialView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(id): Path<CredentialId>,
) -> ApiResult<Json<CredentialView>> {
    Ok(Json(service::credentials::get(&st.core, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/credentials/{id}", tag = "credentials", params(("id" = i32, Path)),
    request_body = CredentialPatchRequest,
    responses((status = 200, body = CredentialView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<CredentialId>,
    Json(r): Json<CredentialPatchRequest>,
) -> ApiResult<Json<CredentialView>> {
    Ok(Json(
        service::credentials::update(&st.core, &caller, id, r).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/credentials/{id}", tag = "credentials", params(("id" = i32, Path)),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, description = "Attached to servers, projects or pending jobs", body = outpost_api::ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<CredentialId>,
) -> ApiResult<Json<DeleteResult>> {
    Ok(Json(
        service::credentials::delete(&st.core, &caller, id).await?,
    ))
}
