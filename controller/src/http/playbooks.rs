//! `/api/v1/playbooks`: playbooks are uploaded as YAML (a JSON field, or the raw body with a
//! YAML content type and `?name=`), checked to be a list of plays, and kept under the data
//! directory by their SHA-256 — new content, new file, new hash; the content of a version that
//! jobs ran is never overwritten.

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
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, Json, Path, Query};
use super::users::paging;
use super::{views, ApiState};
use crate::model::PlaybookId;
use crate::store::playbooks::NewPlaybook;

/// For a raw YAML upload: the playbook's name and description.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// Checks that `content` is a playbook: YAML whose document is a non-empty list of plays
/// (mappings), read within [`Limits::FILE`](outpost_api::yaml::Limits::FILE) so that aliases
/// and nesting cannot blow it up. The error says what is wrong and where.
pub fn check_playbook(content: &str) -> Result<(), String> {
    let docs = outpost_api::yaml::parse(content, outpost_api::yaml::Limits::FILE)
        .map_err(|e| e.to_string())?;
    let [doc] = docs.as_slice() else {
        return Err(format!(
            "a playbook is one YAML document; this has {}",
            docs.len()
        ));
    };
    let plays = doc
        .as_array()
        .ok_or("a playbook is a list of plays (- hosts: …); this document is not a list")?;
    if plays.is_empty() {
        return Err("the playbook has no plays".into());
    }
    for (i, play) in plays.iter().enumerate() {
        if !play.is_object() {
            return Err(format!(
                "play {} is not a mapping (expected keys such as hosts: and tasks:)",
                i + 1
            ));
        }
    }
    Ok(())
}

/// Writes content under its hash (once), returning (path, hash).
async fn store_content(st: &ApiState, content: &str) -> ApiResult<(String, String)> {
    // Up to 5 MiB of YAML: bounded, but CPU work, so off the async workers.
    let text = content.to_owned();
    tokio::task::spawn_blocking(move || check_playbook(&text))
        .await
        .map_err(|e| ApiError::internal(format!("cannot check the playbook: {e}")))?
        .map_err(|e| ApiError::unprocessable(format!("content: {e}")))?;
    let hash = hex::encode(Sha256::digest(content.as_bytes()));
    let path = st.playbook_dir.join(format!("{hash}.yml"));
    if !path.exists() {
        let dir = st.playbook_dir.clone();
        let (target, body) = (path.clone(), content.to_owned());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            outpost_protocol::files::write_replacing(&target, body.as_bytes(), 0o640)
        })
        .await
        .map_err(|e| ApiError::internal(format!("cannot store the playbook: {e}")))?
        .map_err(|e| {
            tracing::error!(error = %e, path = %path.display(), "cannot store a playbook");
            ApiError::internal("cannot store the playbook file; see the controller's log")
        })?;
    }
    Ok((path.display().to_string(), hash))
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
    State(st): State<Arc<ApiState>>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<Page<PlaybookView>>> {
    let page = st
        .store
        .list_playbooks(None, paging(q.limit, q.offset))
        .await?;
    Ok(Json(views::page(page, |p| views::playbook(p, None))))
}

/// POST: JSON (`{"name", "content", …}`) or raw YAML (`Content-Type: application/yaml`, `?name=`).
#[utoipa::path(post, path = "/api/v1/playbooks", tag = "playbooks", params(UploadQuery),
    request_body = NewPlaybookRequest,
    responses((status = 201, body = PlaybookView), (status = 409, body = outpost_api::ErrorBody),
              (status = 413, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<ApiState>>,
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
    let (file_path, file_hash) = store_content(&st, &req.content).await?;
    let pb = st
        .store
        .create_playbook(
            &NewPlaybook {
                name: req.name,
                description: req.description,
                file_path,
                file_hash,
                tags: req.tags.map(serde_json::Value::Object),
                variables: req.variables.map(serde_json::Value::Object),
            },
            &caller.actor(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(views::playbook(&pb, Some(req.content))),
    ))
}

#[utoipa::path(get, path = "/api/v1/playbooks/{id}", tag = "playbooks", params(("id" = i32, Path)),
    responses((status = 200, body = PlaybookView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<i32>,
) -> ApiResult<Json<PlaybookView>> {
    let pb = st.store.get_playbook(PlaybookId(id)).await?;
    let content = tokio::fs::read_to_string(&pb.file_path).await.ok();
    Ok(Json(views::playbook(&pb, content)))
}

#[utoipa::path(patch, path = "/api/v1/playbooks/{id}", tag = "playbooks", params(("id" = i32, Path)),
    request_body = PlaybookPatchRequest,
    responses((status = 200, body = PlaybookView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, description = "Another playbook has that name", body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i32>,
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
    let id = PlaybookId(id);
    let old = st.store.get_playbook(id).await?;
    let actor = caller.actor();
    let (file_path, file_hash) = match &r.content {
        Some(c) => store_content(&st, c).await?,
        None => (old.file_path.clone(), old.file_hash.clone()),
    };
    let changed = r.name.is_some()
        || r.content.is_some()
        || r.description.is_some()
        || r.tags.is_some()
        || r.variables.is_some();
    if changed {
        st.store
            .update_playbook(
                id,
                &NewPlaybook {
                    name: r.name.unwrap_or(old.name),
                    description: r.description.or(old.description),
                    file_path,
                    file_hash,
                    tags: r
                        .tags
                        .or(old.tags.map(|t| t.0))
                        .map(serde_json::Value::Object),
                    variables: r
                        .variables
                        .or(old.variables.map(|t| t.0))
                        .map(serde_json::Value::Object),
                },
                &actor,
            )
            .await?;
    }
    if let Some(active) = r.is_active {
        st.store.set_playbook_active(id, active, &actor).await?;
    }
    let pb = st.store.get_playbook(id).await?;
    let content = tokio::fs::read_to_string(&pb.file_path).await.ok();
    Ok(Json(views::playbook(&pb, content)))
}

#[utoipa::path(delete, path = "/api/v1/playbooks/{id}", tag = "playbooks", params(("id" = i32, Path)),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i32>,
) -> ApiResult<Json<DeleteResult>> {
    let id = PlaybookId(id);
    let actor = caller.actor();
    super::servers::delete_or_deactivate(
        "playbook",
        st.store.delete_playbook(id, &actor),
        || async { Ok(st.store.set_playbook_active(id, false, &actor).await?.name) },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lists_of_plays_are_playbooks() {
        assert!(check_playbook("- hosts: all\n  tasks: []\n").is_ok());
        assert!(check_playbook("hosts: all\n")
            .unwrap_err()
            .contains("not a list"));
        assert!(check_playbook("- just a string\n")
            .unwrap_err()
            .contains("play 1"));
        assert!(check_playbook("[]\n").unwrap_err().contains("no plays"));
        assert!(check_playbook("- hosts: [\n")
            .unwrap_err()
            .contains("not valid YAML"));
        assert!(check_playbook("- hosts: a\n---\n- hosts: b\n").is_err());
    }
}
