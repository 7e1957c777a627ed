//! `/api/v1/schedules` and `/api/v1/blackouts`: schedules of job templates, their runs, the
//! preview of a cron expression, and blackout windows (the rules are
//! [`service::schedules`]'s and [`service::blackouts`]'s). Admins write; everyone reads.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{
    BlackoutView, DeleteResult, NewBlackoutRequest, NewScheduleRequest, Page, PageQuery,
    PreviewRequest, PreviewResponse, SchedulePatchRequest, ScheduleRunView, ScheduleView,
};

use super::error::{ApiResult, Json, Path, Query};
use super::WebState;
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules", params(PageQuery),
    responses((status = 200, body = Page<ScheduleView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<ScheduleView>>> {
    Ok(Json(service::schedules::list(&st.core, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/schedules", tag = "schedules", request_body = NewScheduleRequest,
    responses((status = 201, body = ScheduleView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewScheduleRequest>,
) -> ApiResult<(StatusCode, Json<ScheduleView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::schedules::create(&st.core, &caller, r).await?),
    ))
}

#[utoipa::path(post, path = "/api/v1/schedules/preview", tag = "schedules", request_body = PreviewRequest,
    responses((status = 200, description = "The next five runs", body = PreviewResponse),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn preview(Json(r): Json<PreviewRequest>) -> ApiResult<Json<PreviewResponse>> {
    Ok(Json(service::schedules::preview(&r).await?))
}

#[utoipa::path(get, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id or name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(service::schedules::get(&st.core, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id or name")),
    request_body = SchedulePatchRequest,
    responses((status = 200, body = ScheduleView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(r): Json<SchedulePatchRequest>,
) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(
        service::schedules::update(&st.core, &caller, &id, r).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id or name")),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeleteResult>> {
    Ok(Json(
        service::schedules::delete(&st.core, &caller, &id).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/schedules/{id}/runs", tag = "schedules",
    params(("id" = String, Path, description = "The schedule's id or name"), PageQuery),
    responses((status = 200, description = "Newest slot first", body = Page<ScheduleRunView>),
              (status = 404, body = outpost_api::ErrorBody)))]
pub async fn runs(
    State(st): State<Arc<WebState>>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<ScheduleRunView>>> {
    Ok(Json(service::schedules::runs(&st.core, &id, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/blackouts", tag = "blackouts", params(PageQuery),
    responses((status = 200, body = Page<BlackoutView>)))]
pub async fn list_blackouts(
    State(st): State<Arc<WebState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<BlackoutView>>> {
    Ok(Json(service::blackouts::list(&st.core, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/blackouts", tag = "blackouts", request_body = NewBlackoutRequest,
    responses((status = 201, body = BlackoutView), (status = 409, body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create_blackout(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewBlackoutRequest>,
) -> ApiResult<(StatusCode, Json<BlackoutView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::blackouts::create(&st.core, &caller, r).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/blackouts/{id}", tag = "blackouts",
    params(("id" = String, Path, description = "The blackout's id or name")),
    responses((status = 200, body = BlackoutView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get_blackout(
    State(st): State<Arc<WebState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<BlackoutView>> {
    Ok(Json(service::blackouts::get(&st.core, &id).await?))
}

#[utoipa::path(delete, path = "/api/v1/blackouts/{id}", tag = "blackouts",
    params(("id" = String, Path, description = "The blackout's id or name")),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete_blackout(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeleteResult>> {
    Ok(Json(
        service::blackouts::delete(&st.core, &caller, &id).await?,
    ))
}
