//! `/api/v1/agents`, `/api/v1/enrollment-tokens` and `/api/v1/agent-bundles`: the fleet,
//! revocation, one-time tokens for new agents (the token's text is shown once; only its hash
//! is kept), and install bundles that carry such a token.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Extension;
use outpost_api::{
    AgentView, EnrollmentTokenCreated, EnrollmentTokenView, NewAgentBundleRequest,
    NewEnrollmentTokenRequest, Page, PageQuery,
};
use tokio_util::io::ReaderStream;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, Json, Path, Query};
use super::users::paging;
use super::{views, ApiState};
use crate::bundle::{self, BundleError, BundleRequest};
use crate::model::AgentId;

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
    let ttl = ttl_of(r.ttl_hours)?;
    let labels = labels_of(&r.labels)?;
    let issued = crate::enroll::issue_token(
        &st.store,
        &st.ca_fingerprint,
        &r.name,
        &labels,
        ttl,
        &caller.actor(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentTokenCreated {
            token: issued.token.encode(),
            record: views::enrollment_token(&issued.record),
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

#[utoipa::path(post, path = "/api/v1/agent-bundles", tag = "agents", request_body = NewAgentBundleRequest,
    responses(
        (status = 201, description = "The bundle: a tar.gz named by Content-Disposition. It holds a one-time token: keep it private.", content_type = "application/gzip", body = Vec<u8>),
        (status = 409, body = outpost_api::ErrorBody),
        (status = 422, body = outpost_api::ErrorBody),
        (status = 503, description = "The controller has no agent binary to bundle", body = outpost_api::ErrorBody)))]
pub async fn create_bundle(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewAgentBundleRequest>,
) -> ApiResult<Response> {
    let req = BundleRequest {
        ttl: ttl_of(r.ttl_hours)?,
        labels: labels_of(&r.labels)?,
        name: r.name,
        hosts: r.addresses,
    };
    let bundle = bundle::prepare(&st.store, &st.bundle_origin, req, &caller.actor())
        .await
        .map_err(bundle_error)?;
    let (token_id, file_name, summary) = (bundle.token_id, bundle.file_name(), bundle.summary());
    // Written whole before the first byte is sent: a failure is an error response, not a
    // truncated download. The file has no name and is gone when the response is.
    let written = tokio::task::spawn_blocking(move || -> Result<std::fs::File, BundleError> {
        let mut f = bundle.write(tempfile::tempfile()?)?;
        f.seek(SeekFrom::Start(0))?;
        Ok(f)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the bundle's writer failed: {e}")))
    .and_then(|r| r.map_err(bundle_error));
    let file = match written {
        Ok(f) => f,
        Err(e) => {
            let _ = st
                .store
                .delete_enrollment_token(token_id, &caller.actor())
                .await;
            return Err(e);
        }
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    tracing::info!(user = %caller.user.username, %len, "{summary}");
    let body = Body::from_stream(ReaderStream::new(tokio::fs::File::from_std(file)));
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::CONTENT_TYPE, "application/gzip")
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file_name}\""),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn bundle_error(e: BundleError) -> ApiError {
    match e {
        BundleError::Name(_) | BundleError::NoAddress | BundleError::NotInCertificate { .. } => {
            ApiError::unprocessable(e.to_string())
        }
        BundleError::AgentBinary { .. } | BundleError::NoAgentBinary { .. } => {
            ApiError::unavailable(e.to_string())
        }
        BundleError::Store(s) => s.into(),
        BundleError::Write(_) => {
            tracing::error!(error = %e, "cannot write an install bundle");
            ApiError::internal("the controller could not write the bundle")
        }
    }
}

/// A token's lifetime: 1 hour to 30 days, 24 hours unless asked.
fn ttl_of(hours: Option<u32>) -> ApiResult<chrono::Duration> {
    let h = hours.unwrap_or(24);
    if !(1..=24 * 30).contains(&h) {
        return Err(ApiError::unprocessable("ttl_hours must be 1 to 720"));
    }
    Ok(chrono::Duration::hours(i64::from(h)))
}

/// A request's labels, each checked as an agent's label must be.
pub(crate) fn labels_of(labels: &BTreeMap<String, String>) -> ApiResult<Vec<(String, String)>> {
    labels
        .iter()
        .map(|(k, v)| {
            outpost_protocol::message::parse_label(&format!("{k}={v}"))
                .map_err(|e| ApiError::unprocessable(format!("label {k}={v}: {e}")))
        })
        .collect()
}
