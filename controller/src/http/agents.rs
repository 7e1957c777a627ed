//! `/api/v1/agents` and `/api/v1/enrollment-tokens`: the fleet, revocation, and one-time tokens
//! for new agents (the token's text is shown once; only its hash is kept).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{
    AgentView, EnrollmentTokenCreated, EnrollmentTokenView, NewEnrollmentTokenRequest, Page,
    PageQuery,
};
use outpost_protocol::token::EnrollToken;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, Json, Path, Query};
use super::users::paging;
use super::{views, ApiState};
use crate::model::AgentId;
use crate::store::agents::NewEnrollmentToken;

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(PageQuery),
    responses((status = 200, body = Page<AgentView>)))]
pub async fn list(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<AgentView>>> {
    let page = st.store.list_agents(paging(q.limit, q.offset)).await?;
    Ok(Json(views::page(page, views::agent)))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = i32, Path)),
    responses((status = 200, body = AgentView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<i32>,
) -> ApiResult<Json<AgentView>> {
    Ok(Json(views::agent(&st.store.get_agent(AgentId(id)).await?)))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", params(("id" = i32, Path)),
    responses((status = 200, body = AgentView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn revoke(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i32>,
) -> ApiResult<Json<AgentView>> {
    let agent = st.store.revoke_agent(AgentId(id), &caller.actor()).await?;
    Ok(Json(views::agent(&agent)))
}

#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "agents", params(PageQuery),
    responses((status = 200, body = Page<EnrollmentTokenView>)))]
pub async fn list_tokens(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<EnrollmentTokenView>>> {
    let page = st
        .store
        .list_enrollment_tokens(paging(q.limit, q.offset))
        .await?;
    Ok(Json(views::page(page, views::enrollment_token)))
}

#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "agents", request_body = NewEnrollmentTokenRequest,
    responses((status = 201, body = EnrollmentTokenCreated), (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create_token(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewEnrollmentTokenRequest>,
) -> ApiResult<(StatusCode, Json<EnrollmentTokenCreated>)> {
    let ttl = r.ttl_hours.unwrap_or(24);
    if !(1..=24 * 30).contains(&ttl) {
        return Err(ApiError::unprocessable("ttl_hours must be 1 to 720"));
    }
    for (k, v) in &r.labels {
        outpost_protocol::message::parse_label(&format!("{k}={v}"))
            .map_err(|e| ApiError::unprocessable(format!("label {k}={v}: {e}")))?;
    }
    let token = EnrollToken::generate(&st.ca_fingerprint);
    let labels: serde_json::Map<String, serde_json::Value> = r
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let record = st
        .store
        .create_enrollment_token(
            &NewEnrollmentToken {
                secret_hash: EnrollToken::secret_hash(&token.secret),
                name: r.name,
                labels: serde_json::Value::Object(labels),
                expires_at: chrono::Utc::now() + chrono::Duration::hours(i64::from(ttl)),
            },
            &caller.actor(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentTokenCreated {
            token: token.encode(),
            record: views::enrollment_token(&record),
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "agents", params(("id" = i32, Path)),
    responses((status = 204), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete_token(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i32>,
) -> ApiResult<StatusCode> {
    st.store
        .delete_enrollment_token(id, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
