//! `/api/v1/agents`, `/api/v1/enrollment-tokens` and `/api/v1/agent-bundles`: the fleet,
//! revocation, one-time tokens for new agents, and install bundles (the rules are
//! [`service::agents`]'s); a bundle is sent as a download.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use outpost_api::{
    AgentView, EnrollmentTokenCreated, EnrollmentTokenView, NewAgentBundleRequest,
    NewEnrollmentTokenRequest, Page, PageQuery,
};

use super::error::{ApiResult, Json, Path, Query};
use super::WebState;
use crate::model::AgentId;
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(PageQuery),
    responses((status = 200, body = Page<AgentView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<AgentView>>> {
    Ok(Json(service::agents::list(&st.core, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = i32, Path)),
    responses((status = 200, body = AgentView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(id): Path<AgentId>,
) -> ApiResult<Json<AgentView>> {
    Ok(Json(service::agents::get(&st.core, id).await?))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", params(("id" = i32, Path)),
    responses((status = 200, body = AgentView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn revoke(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<AgentId>,
) -> ApiResult<Json<AgentView>> {
    Ok(Json(service::agents::revoke(&st.core, &caller, id).await?))
}

#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "agents", params(PageQuery),
    responses((status = 200, body = Page<EnrollmentTokenView>)))]
pub async fn list_tokens(
    State(st): State<Arc<WebState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<EnrollmentTokenView>>> {
    Ok(Json(service::agents::list_tokens(&st.core, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "agents", request_body = NewEnrollmentTokenRequest,
    responses((status = 201, body = EnrollmentTokenCreated), (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create_token(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewEnrollmentTokenRequest>,
) -> ApiResult<(StatusCode, Json<EnrollmentTokenCreated>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::agents::create_token(&st.core, &caller, r).await?),
    ))
}

#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "agents", params(("id" = i32, Path)),
    responses((status = 204), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete_token(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i32>,
) -> ApiResult<StatusCode> {
    service::agents::delete_token(&st.core, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/agent-bundles", tag = "agents", request_body = NewAgentBundleRequest,
    responses(
        (status = 201, description = "The bundle: a tar.gz named by Content-Disposition. It holds a one-time token: keep it private.", content_type = "application/gzip", body = Vec<u8>),
        (status = 409, body = outpost_api::ErrorBody),
        (status = 422, body = outpost_api::ErrorBody),
        (status = 503, description = "The controller has no agent binary to bundle", body = outpost_api::ErrorBody)))]
pub async fn create_bundle(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewAgentBundleRequest>,
) -> ApiResult<Response> {
    let bundle = service::agents::create_bundle(&st.core, &caller, r).await?;
    super::download::bundle(bundle)
}
