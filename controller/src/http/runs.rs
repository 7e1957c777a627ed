//! `/api/v1/runs`: runs (one launch's jobs as a whole) — list, read with counts per datacenter
//! and wave, cancel, approve the next wave, relaunch for the failed servers (the rules are
//! [`service::runs`]'s).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{Page, RelaunchRequest, RunActionResponse, RunDetail, RunQuery, RunView};

use super::error::{ApiResult, Json, Path, Query};
use super::WebState;
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunQuery),
    responses((status = 200, body = Page<RunView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<RunQuery>,
) -> ApiResult<Json<Page<RunView>>> {
    Ok(Json(service::runs::list(&st.core, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}", tag = "runs", params(("run_id" = String, Path)),
    responses((status = 200, body = RunDetail)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    Ok(Json(service::runs::get(&st.core, &run_id).await?))
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/cancel", tag = "runs", params(("run_id" = String, Path)),
    responses((status = 200, body = RunActionResponse), (status = 409, body = outpost_api::ErrorBody)))]
pub async fn cancel(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunActionResponse>> {
    Ok(Json(
        service::runs::cancel(&st.core, &caller, &run_id).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/approve", tag = "runs", params(("run_id" = String, Path)),
    responses((status = 200, body = RunActionResponse), (status = 409, body = outpost_api::ErrorBody)))]
pub async fn approve(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunActionResponse>> {
    Ok(Json(
        service::runs::approve(&st.core, &caller, &run_id).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/relaunch", tag = "runs", params(("run_id" = String, Path)),
    request_body = RelaunchRequest,
    responses((status = 201, body = RunView), (status = 409, body = outpost_api::ErrorBody)))]
pub async fn relaunch(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
    Json(req): Json<RelaunchRequest>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::runs::relaunch(&st.core, &caller, &run_id, &req).await?),
    ))
}
