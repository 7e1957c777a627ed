//! `/api/v1/jobs`: launch a playbook on servers, list and read jobs, cancel them (the rules are
//! [`service::jobs`]'s), and read a job's per-task results and a run's aggregate of them ([`service::results`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{CancelResponse, JobQuery, JobView, LaunchRequest, LaunchResponse, Page};

use super::error::{ApiResult, Json, Path, Query};
use super::WebState;
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobQuery),
    description = "Newest first. Page on with `after` set to the previous page's `next` \
        (`offset` still works, but reads every row it skips). `total` counts at most 10,000 \
        matches: `total_exact` says whether it is the count or a lower bound.",
    responses((status = 200, body = Page<JobView>),
              (status = 422, description = "a malformed `after`, or `after` with `offset`", body = outpost_api::ErrorBody)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<JobQuery>,
) -> ApiResult<Json<Page<JobView>>> {
    Ok(Json(service::jobs::list(&st.core, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "jobs", params(("job_id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(job_id): Path<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(service::jobs::get(&st.core, &job_id).await?))
}

#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = LaunchRequest,
    responses((status = 201, body = LaunchResponse), (status = 404, body = outpost_api::ErrorBody),
              (status = 413, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn launch(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<LaunchRequest>,
) -> ApiResult<(StatusCode, Json<LaunchResponse>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::jobs::launch(&st.core, &caller, req).await?),
    ))
}

#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/cancel", tag = "jobs", params(("job_id" = String, Path)),
    responses((status = 200, body = CancelResponse), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, body = outpost_api::ErrorBody)))]
pub async fn cancel(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
) -> ApiResult<Json<CancelResponse>> {
    Ok(Json(
        service::jobs::cancel(&st.core, &caller, &job_id).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/results", tag = "jobs",
    params(("job_id" = String, Path), outpost_api::ResultsQuery),
    responses((status = 200, body = outpost_api::JobResults), (status = 404, body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn results(
    State(st): State<Arc<WebState>>,
    Path(job_id): Path<String>,
    Query(q): Query<outpost_api::ResultsQuery>,
) -> ApiResult<Json<outpost_api::JobResults>> {
    Ok(Json(
        service::results::job_results(&st.core, &job_id, &q).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}/results", tag = "runs",
    params(("run_id" = String, Path), outpost_api::ResultsQuery),
    responses((status = 200, body = outpost_api::RunResults), (status = 404, body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn run_results(
    State(st): State<Arc<WebState>>,
    Path(run_id): Path<String>,
    Query(q): Query<outpost_api::ResultsQuery>,
) -> ApiResult<Json<outpost_api::RunResults>> {
    Ok(Json(
        service::results::run_results(&st.core, &run_id, &q).await?,
    ))
}
