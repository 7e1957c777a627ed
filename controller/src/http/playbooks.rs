//! `/api/v1/playbooks`: playbooks are uploaded as YAML (a JSON field, or the raw body with a
//! YAML content type and `?name=`); what is checked and how they are kept is
//! [`service::playbooks`]'s.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Extension;
use outpost_api::{
    DeleteResult, NewPlaybookRequest, ObjectOnly, Page, PageQuery, PlaybookPatchRequest,
    PlaybookView,
};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ApiResult, Json, Path, Query};
use super::WebState;
use crate::model::PlaybookId;
use crate::service::{self, Caller};

/// For a raw YAML upload: the playbook's name and description.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    pub name: Option<String>,
    pub description: Option<String>,
}

fn body_error(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "a playbook upload is at most {} MiB",
                super::MAX_PLAYBOOK_BODY / 1024 / 1024
            ),
        )
    } else {
        ApiError::bad_request(r.body_text())
    }
}

fn json_error(e: serde_json::Error) -> ApiError {
    match e.classify() {
        serde_json::error::Category::Data => ApiError::unprocessable(e.to_string()),
        _ => ApiError::bad_request(format!("the body is not valid JSON: {e}")),
    }
}

#[utoipa::path(get, path = "/api/v1/playbooks", tag = "playbooks", params(PageQuery),
    responses((status = 200, body = Page<PlaybookView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<PlaybookView>>> {
    Ok(Json(service::playbooks::list(&st.core, &q).await?))
}

/// POST: JSON (`{"name", "content", …}`) or raw YAML (`Content-Type: application/yaml`, `?name=`).
#[utoipa::path(post, path = "/api/v1/playbooks", tag = "playbooks", params(UploadQuery),
    request_body = NewPlaybookRequest,
    responses((status = 201, body = PlaybookView), (status = 409, body = outpost_api::ErrorBody),
              (status = 413, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<PlaybookView>)> {
    let body = body.map_err(body_error)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let req = if content_type.contains("yaml") {
        let content = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
        NewPlaybookRequest {
            name: q
                .name
                .ok_or_else(|| ApiError::unprocessable("name the playbook: ?name=…"))?,
            content,
            description: q.description,
            tags: None,
            variables: None,
        }
    } else if content_type.starts_with("application/json") {
        serde_json::from_slice::<ObjectOnly<NewPlaybookRequest>>(&body)
            .map_err(json_error)?
            .0
    } else {
        return Err(ApiError::unsupported_media_type(
            "send JSON (application/json) or the YAML itself (application/yaml)",
        ));
    };
    Ok((
        StatusCode::CREATED,
        Json(service::playbooks::create(&st.core, &caller, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/playbooks/{id}", tag = "playbooks", params(("id" = i32, Path)),
    responses((status = 200, body = PlaybookView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(id): Path<PlaybookId>,
) -> ApiResult<Json<PlaybookView>> {
    Ok(Json(service::playbooks::get(&st.core, id).await?))
}

#[utoipa::path(patch, path = "/api/v1/playbooks/{id}", tag = "playbooks", params(("id" = i32, Path)),
    request_body = PlaybookPatchRequest,
    responses((status = 200, body = PlaybookView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, description = "Another playbook has that name", body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<PlaybookId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PlaybookView>> {
    let body = body.map_err(body_error)?;
    // As every other JSON route answers (error::Json): a body of another type is refused.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return Err(ApiError::unsupported_media_type(
            "send the changes as JSON (Content-Type: application/json)",
        ));
    }
    let ObjectOnly(r) =
        serde_json::from_slice::<ObjectOnly<PlaybookPatchRequest>>(&body).map_err(json_error)?;
    Ok(Json(
        service::playbooks::update(&st.core, &caller, id, r).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/playbooks/{id}", tag = "playbooks", params(("id" = i32, Path)),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<PlaybookId>,
) -> ApiResult<Json<DeleteResult>> {
    Ok(Json(
        service::playbooks::delete(&st.core, &caller, id).await?,
    ))
}
