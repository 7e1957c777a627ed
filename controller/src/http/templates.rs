//! `/api/v1/templates`: job templates — admins write them, operators launch them with answers
//! to their survey, everyone reads them (the rules are [`service::templates`]'s). A template
//! is named in the path by its id or its name.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{
    DeleteResult, LaunchResponse, Page, PageQuery, TemplateLaunchRequest, TemplateSpec,
    TemplateView,
};

use super::error::{ApiResult, Json, Path, Query};
use super::WebState;
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/templates", tag = "templates", params(PageQuery),
    responses((status = 200, body = Page<TemplateView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<TemplateView>>> {
    Ok(Json(service::templates::list(&st.core, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/templates", tag = "templates", request_body = TemplateSpec,
    responses((status = 201, body = TemplateView),
              (status = 404, description = "The playbook or project the template names does not exist", body = outpost_api::ErrorBody),
              (status = 409, body = outpost_api::ErrorBody),
              (status = 422, description = "Each refused field is named in `fields`", body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(spec): Json<TemplateSpec>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::templates::create(&st.core, &caller, spec).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/templates/{id_or_name}", tag = "templates",
    params(("id_or_name" = String, Path)),
    responses((status = 200, body = TemplateView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(key): Path<String>,
) -> ApiResult<Json<TemplateView>> {
    Ok(Json(service::templates::get(&st.core, &key).await?))
}

#[utoipa::path(put, path = "/api/v1/templates/{id_or_name}", tag = "templates",
    params(("id_or_name" = String, Path)), request_body = TemplateSpec,
    responses((status = 200, body = TemplateView),
              (status = 404, description = "No template has this id or name, or the playbook or project it names does not exist", body = outpost_api::ErrorBody),
              (status = 409, body = outpost_api::ErrorBody),
              (status = 422, description = "Each refused field is named in `fields`", body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    Json(spec): Json<TemplateSpec>,
) -> ApiResult<Json<TemplateView>> {
    Ok(Json(
        service::templates::update(&st.core, &caller, &key, spec).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/templates/{id_or_name}", tag = "templates",
    params(("id_or_name" = String, Path)),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> ApiResult<Json<DeleteResult>> {
    Ok(Json(
        service::templates::delete(&st.core, &caller, &key).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/templates/{id_or_name}/launch", tag = "templates",
    params(("id_or_name" = String, Path)), request_body = TemplateLaunchRequest,
    responses((status = 201, body = LaunchResponse), (status = 404, body = outpost_api::ErrorBody),
              (status = 422, description = "Each bad answer is named in `fields`", body = outpost_api::ErrorBody)))]
pub async fn launch(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    Json(req): Json<TemplateLaunchRequest>,
) -> ApiResult<(StatusCode, Json<LaunchResponse>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::templates::launch(&st.core, &caller, &key, &req).await?),
    ))
}
