//! `/api/v1/projects`: git and archive projects, their syncs, revisions and files. A project in
//! a path is its id or its name. What a sync does is [`crate::project`]'s.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Extension;
use futures_util::StreamExt;
use outpost_api::{
    DeleteResult, NewProjectRequest, Page, PageQuery, ProjectFilesQuery, ProjectFilesView,
    ProjectPatchRequest, ProjectView, RevisionView,
};

use super::error::{ApiError, ApiResult, Json, Path, Query};
use super::WebState;
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(PageQuery),
    responses((status = 200, body = Page<ProjectView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<ProjectView>>> {
    Ok(Json(service::projects::list(&st.core, &q).await?))
}

/// A git project starts its first sync at once (`"sync": false` to wait); an archive project
/// gets its tree with `POST /api/v1/projects/{id}/archive`.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = NewProjectRequest,
    responses((status = 201, body = ProjectView), (status = 409, body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<NewProjectRequest>,
) -> ApiResult<(StatusCode, Json<ProjectView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::projects::create(&st.core, &caller, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = String, Path, description = "The project's id or name")),
    responses((status = 200, body = ProjectView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProjectView>> {
    Ok(Json(service::projects::get(&st.core, &id).await?))
}

/// An empty string clears an optional setting.
#[utoipa::path(patch, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = String, Path, description = "The project's id or name")),
    request_body = ProjectPatchRequest,
    responses((status = 200, body = ProjectView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<ProjectPatchRequest>,
) -> ApiResult<Json<ProjectView>> {
    Ok(Json(
        service::projects::update(&st.core, &caller, &id, req).await?,
    ))
}

/// A project that jobs ran is deactivated instead.
#[utoipa::path(delete, path = "/api/v1/projects/{id}", tag = "projects",
    params(("id" = String, Path, description = "The project's id or name")),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeleteResult>> {
    Ok(Json(
        service::projects::delete(&st.core, &caller, &id).await?,
    ))
}

/// Starts a sync of a git project in the background: 202 with the project, `syncing`; its
/// `sync_state` becomes `ok` (a new current revision) or `failed` (`sync_error` says why; the
/// previous revision stays).
#[utoipa::path(post, path = "/api/v1/projects/{id}/sync", tag = "projects",
    params(("id" = String, Path, description = "The project's id or name")),
    responses((status = 202, body = ProjectView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, description = "A sync of the project is running", body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn sync(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<ProjectView>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(service::projects::sync(&st.core, &caller, &id).await?),
    ))
}

/// The body is a `.tar.gz` or `.tar` of the project's tree (any content type); the answer
/// comes when its sync has ended, with the project `ok` or `failed`. Bodies larger than the
/// `project_upload_max_bytes` setting (512 MiB by default) are refused (413) before or while
/// they are read, never held in memory.
#[utoipa::path(post, path = "/api/v1/projects/{id}/archive", tag = "projects",
    params(("id" = String, Path, description = "The project's id or name")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = ProjectView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, body = outpost_api::ErrorBody), (status = 413, body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn upload(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ProjectView>> {
    let max = st.core.settings.project_upload_max_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "a project archive is at most {max} bytes (the project_upload_max_bytes setting)"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    // The project first: a wrong name is said before a large body is read. A small body is
    // read (and dropped) before the refusal, so the client gets the answer rather than a
    // connection closed under a request it is still sending.
    if let Err(e) = service::projects::get(&st.core, &id).await {
        super::error::drain_small_body(body, declared).await;
        return Err(e.into());
    }
    let dir = st.core.settings.data_dir.join("tmp");
    let file = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        tempfile::Builder::new().prefix("upload-").tempfile_in(&dir)
    })
    .await
    .map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?
    .map_err(|e| {
        tracing::error!(error = %e, "cannot make a file for an upload");
        ApiError::internal("cannot store the upload; see the controller's log")
    })?;
    let mut writer = std::io::BufWriter::new(file);
    let mut stream = body.into_data_stream();
    let mut read: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("the upload broke off: {e}")))?;
        read += chunk.len() as u64;
        if read > max {
            return Err(too_large());
        }
        // Small writes into a buffer; the disk absorbs them at its pace.
        writer.write_all(&chunk).map_err(|e| {
            tracing::error!(error = %e, "cannot write an upload");
            ApiError::internal("cannot store the upload; see the controller's log")
        })?;
    }
    let file = writer.into_inner().map_err(|e| {
        tracing::error!(error = %e.error(), "cannot write an upload");
        ApiError::internal("cannot store the upload; see the controller's log")
    })?;
    Ok(Json(
        service::projects::upload(&st.core, &caller, &id, file).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/revisions", tag = "projects",
    params(("id" = String, Path, description = "The project's id or name"), PageQuery),
    responses((status = 200, body = Page<RevisionView>), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn revisions(
    State(st): State<Arc<WebState>>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<RevisionView>>> {
    Ok(Json(service::projects::revisions(&st.core, &id, &q).await?))
}

/// The entries of a revision (the current one unless `?revision=` gives a digest or its first
/// 8+ hex digits), each marked when it is one of the project's playbooks.
#[utoipa::path(get, path = "/api/v1/projects/{id}/files", tag = "projects",
    params(("id" = String, Path, description = "The project's id or name"), ProjectFilesQuery),
    responses((status = 200, body = ProjectFilesView), (status = 404, body = outpost_api::ErrorBody),
              (status = 422, description = "The revision named is not a digest", body = outpost_api::ErrorBody)))]
pub async fn files(
    State(st): State<Arc<WebState>>,
    Path(id): Path<String>,
    Query(q): Query<ProjectFilesQuery>,
) -> ApiResult<Json<ProjectFilesView>> {
    Ok(Json(service::projects::files(&st.core, &id, &q).await?))
}
