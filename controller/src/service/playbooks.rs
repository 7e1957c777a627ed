//! Playbooks: YAML checked to be a list of plays. An uploaded one is a one-file project (kind
//! `file`): new content is a new revision, and the revision a job ran is never overwritten.

use outpost_api::{
    DeleteResult, NewPlaybookRequest, Page, PageQuery, PlaybookPatchRequest, PlaybookView,
};
use sha2::{Digest, Sha256};

use super::{paging, views, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::{Playbook, PlaybookId, Project, ProjectKind};
use crate::project::{ProjectError, Source};
use crate::store::playbooks::NewPlaybook;
use crate::store::projects::NewProject;

pub use crate::project::playbook::{check_playbook, NotAPlaybook};

/// Writes content under its hash (once), returning (path, hash): for a row outside any
/// project (made before projects, its file not adopted).
async fn store_content(core: &Core, content: &str) -> Result<(String, String)> {
    check_content(content).await?;
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

/// Checks that `content` is a playbook (up to 5 MiB of YAML: bounded, but CPU work, so off
/// the async workers).
async fn check_content(content: &str) -> Result<()> {
    let text = content.to_owned();
    tokio::task::spawn_blocking(move || check_playbook(&text))
        .await
        .map_err(|e| ServiceError::internal(format!("cannot check the playbook: {e}")))?
        .map_err(|e| ServiceError::unprocessable(format!("content: {e}")))
}

/// Makes a new revision of a one-file project from `content`, its playbook row updated.
async fn sync_single(core: &Core, caller: &Caller, project: &Project, content: &str) -> Result<()> {
    if !core
        .store
        .claim_sync(project.id, core.settings.project_sync_time_limit)
        .await?
    {
        return Err(ServiceError::conflict(format!(
            "playbook {} is being changed by another request; try again",
            project.name
        )));
    }
    let dir = core.settings.data_dir.clone();
    let body = content.as_bytes().to_vec();
    let made = tokio::task::spawn_blocking(move || crate::project::single_file_tree(&dir, &body))
        .await
        .map_err(|e| ServiceError::internal(format!("cannot store the playbook: {e}")))?;
    let actor = caller.actor();
    let tree = match made {
        Ok(t) => t,
        Err(e) => {
            core.store
                .fail_sync(project.id, &e.to_string(), &actor)
                .await?;
            tracing::error!(error = %e, "cannot store a playbook");
            return Err(ServiceError::internal(
                "cannot store the playbook file; see the controller's log",
            ));
        }
    };
    let settings = super::projects::sync_settings(core);
    crate::project::sync(&core.store, &settings, project, Source::Tree(tree), &actor)
        .await
        .map_err(|e| match e {
            ProjectError::Store(se) => ServiceError::from(se),
            other => ServiceError::unprocessable(other.to_string()),
        })?;
    Ok(())
}

/// The YAML of a playbook: from its project's current revision, or (a row outside any
/// project) its own file.
async fn content_of(core: &Core, pb: &Playbook) -> Option<String> {
    let Some(project) = pb.project_id else {
        return tokio::fs::read_to_string(&pb.file_path).await.ok();
    };
    let project = core.store.get_project(project).await.ok()?;
    let rev = core
        .store
        .get_revision(project.current_revision_id?)
        .await
        .ok()?;
    if !outpost_protocol::tree::is_digest(&rev.digest) {
        return None;
    }
    let path = crate::project::revision_path(&core.settings.data_dir, &rev.digest);
    let file = pb.file_path.clone();
    let max = outpost_api::yaml::Limits::FILE.max_bytes as u64;
    let bytes = tokio::task::spawn_blocking(move || crate::project::read_file(&path, &file, max))
        .await
        .ok()?
        .ok()??;
    String::from_utf8(bytes).ok()
}

/// A new playbook: a one-file project (kind `file`) of the same name, whose revision holds the
/// content as `playbook.yml`, and the playbook row its sync makes, with the given metadata.
/// A playbook's default variables never hold a secret in the clear (they are shown to every
/// reader of the playbook): secrets are credentials.
fn check_variables(vars: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<()> {
    match vars.and_then(|v| v.keys().find(|k| outpost_api::inventory::is_secret_var(k))) {
        Some(name) => Err(ServiceError::unprocessable(format!(
            "variables: {name} would keep a secret in the clear; store it as a credential and attach it to the servers or the project"
        ))),
        None => Ok(()),
    }
}

pub async fn create(core: &Core, caller: &Caller, req: NewPlaybookRequest) -> Result<PlaybookView> {
    check_variables(req.variables.as_ref())?;
    check_content(&req.content).await?;
    if core.store.get_playbook_by_name(&req.name).await.is_ok() {
        return Err(ServiceError::conflict(format!(
            "playbook '{}' already exists",
            req.name
        )));
    }
    let actor = caller.actor();
    let project = core
        .store
        .create_project(
            &NewProject {
                name: req.name.clone(),
                description: req.description.clone(),
                kind: ProjectKind::File,
                git_url: None,
                git_ref: None,
                git_key_path: None,
                git_credential_id: None,
                inventory_path: None,
            },
            &actor,
        )
        .await?;
    if let Err(e) = sync_single(core, caller, &project, &req.content).await {
        if let Err(de) = core.store.delete_project(project.id, &actor).await {
            tracing::warn!(project = %project.name, error = %de, "cannot remove a project whose first sync failed");
        }
        return Err(e);
    }
    let pb = core
        .store
        .project_playbook(project.id, crate::project::SINGLE_PLAYBOOK)
        .await?;
    let pb = if req.tags.is_some() || req.variables.is_some() || req.description.is_some() {
        core.store
            .update_playbook(
                pb.id,
                &NewPlaybook {
                    name: pb.name.clone(),
                    description: req.description,
                    file_path: pb.file_path.clone(),
                    file_hash: pb.file_hash.clone(),
                    tags: req.tags.map(serde_json::Value::Object),
                    variables: req.variables.map(serde_json::Value::Object),
                },
                &actor,
            )
            .await?
    } else {
        pb
    };
    Ok(views::playbook(&pb, Some(req.content)))
}

pub async fn get(core: &Core, id: PlaybookId) -> Result<PlaybookView> {
    let pb = core.store.get_playbook(id).await?;
    let content = content_of(core, &pb).await;
    Ok(views::playbook(&pb, content))
}

/// Changes a playbook. New content is a new revision of its one-file project (a playbook of
/// a git or archive project changes in its repository or archive).
pub async fn update(
    core: &Core,
    caller: &Caller,
    id: PlaybookId,
    r: PlaybookPatchRequest,
) -> Result<PlaybookView> {
    check_variables(r.variables.as_ref())?;
    let old = core.store.get_playbook(id).await?;
    let actor = caller.actor();
    let (file_path, file_hash) = match (&r.content, old.project_id) {
        (None, _) => (old.file_path.clone(), old.file_hash.clone()),
        (Some(c), Some(project)) => {
            let project = core.store.get_project(project).await?;
            if project.kind != ProjectKind::File {
                return Err(ServiceError::unprocessable(format!(
                    "playbook {} is a file of project {}: change it there, then sync the project",
                    old.name, project.name
                )));
            }
            check_content(c).await?;
            sync_single(core, caller, &project, c).await?;
            let now = core.store.get_playbook(id).await?;
            (now.file_path, now.file_hash)
        }
        (Some(c), None) => store_content(core, c).await?,
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
    let content = content_of(core, &pb).await;
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
