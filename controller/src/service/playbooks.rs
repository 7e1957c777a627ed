//! Playbooks: YAML checked to be a list of plays and kept under the data directory by its
//! SHA-256 — new content, new file, new hash; the content of a version that jobs ran is never
//! overwritten.

use outpost_api::{
    DeleteResult, NewPlaybookRequest, Page, PageQuery, PlaybookPatchRequest, PlaybookView,
};
use sha2::{Digest, Sha256};

use super::{paging, views, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::PlaybookId;
use crate::store::playbooks::NewPlaybook;

pub use crate::project::playbook::{check_playbook, NotAPlaybook};

/// Writes content under its hash (once), returning (path, hash).
async fn store_content(core: &Core, content: &str) -> Result<(String, String)> {
    // Up to 5 MiB of YAML: bounded, but CPU work, so off the async workers.
    let text = content.to_owned();
    tokio::task::spawn_blocking(move || check_playbook(&text))
        .await
        .map_err(|e| ServiceError::internal(format!("cannot check the playbook: {e}")))?
        .map_err(|e| ServiceError::unprocessable(format!("content: {e}")))?;
    let hash = hex::encode(Sha256::digest(content.as_bytes()));
    let path = core.playbook_dir().join(format!("{hash}.yml"));
    if !path.exists() {
        let dir = core.playbook_dir();
        let (target, body) = (path.clone(), content.to_owned());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            outpost_protocol::files::write_replacing(&target, body.as_bytes(), 0o640)
        })
        .await
        .map_err(|e| ServiceError::internal(format!("cannot store the playbook: {e}")))?
        .map_err(|e| {
            tracing::error!(error = %e, path = %path.display(), "cannot store a playbook");
            ServiceError::internal("cannot store the playbook file; see the controller's log")
        })?;
    }
    Ok((path.display().to_string(), hash))
}

pub async fn list(core: &Core, q: &PageQuery) -> Result<Page<PlaybookView>> {
    let page = core
        .store
        .list_playbooks(None, paging(q.limit, q.offset))
        .await?;
    Ok(views::page(page, |p| views::playbook(p, None)))
}

/// A new playbook: its content checked and stored, its record written.
pub async fn create(core: &Core, caller: &Caller, req: NewPlaybookRequest) -> Result<PlaybookView> {
    let (file_path, file_hash) = store_content(core, &req.content).await?;
    let pb = core
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
    Ok(views::playbook(&pb, Some(req.content)))
}

pub async fn get(core: &Core, id: PlaybookId) -> Result<PlaybookView> {
    let pb = core.store.get_playbook(id).await?;
    let content = tokio::fs::read_to_string(&pb.file_path).await.ok();
    Ok(views::playbook(&pb, content))
}

/// Changes a playbook: new content is a new file under its own hash.
pub async fn update(
    core: &Core,
    caller: &Caller,
    id: PlaybookId,
    r: PlaybookPatchRequest,
) -> Result<PlaybookView> {
    let old = core.store.get_playbook(id).await?;
    let actor = caller.actor();
    let (file_path, file_hash) = match &r.content {
        Some(c) => store_content(core, c).await?,
        None => (old.file_path.clone(), old.file_hash.clone()),
    };
    let changed = r.name.is_some()
        || r.content.is_some()
        || r.description.is_some()
        || r.tags.is_some()
        || r.variables.is_some();
    if changed {
        core.store
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
        core.store.set_playbook_active(id, active, &actor).await?;
    }
    let pb = core.store.get_playbook(id).await?;
    let content = tokio::fs::read_to_string(&pb.file_path).await.ok();
    Ok(views::playbook(&pb, content))
}

pub async fn delete(core: &Core, caller: &Caller, id: PlaybookId) -> Result<DeleteResult> {
    let actor = caller.actor();
    super::servers::delete_or_deactivate(
        "playbook",
        core.store.delete_playbook(id, &actor),
        || async {
            Ok(core
                .store
                .set_playbook_active(id, false, &actor)
                .await?
                .name)
        },
    )
    .await
}
