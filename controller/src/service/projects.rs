//! Projects: create, change and delete them, sync them (in the background: the caller is
//! answered at once, the project showing `syncing`), upload archives, and read their
//! revisions and files.

use std::sync::Arc;

use outpost_api::{
    DeleteResult, IdOrName, NameRef, NewProjectRequest, Page, PageQuery, ProjectFileView,
    ProjectFilesQuery, ProjectFilesView, ProjectKind, ProjectPatchRequest, ProjectView,
    RevisionView,
};

use super::{credentials, paging, views, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::{CredentialId, CredentialKind, Project, ProjectId};
use crate::project::{self, Source, SyncSettings};
use crate::store::projects::NewProject;
use crate::store::{Store, StoreError};

/// The project named in a path: its id, or its name.
pub async fn by_ref(store: &Store, id_or_name: &str) -> Result<Project> {
    Ok(match id_or_name.parse::<i32>() {
        Ok(id) => store.get_project(ProjectId(id)).await?,
        Err(_) => store.get_project_by_name(id_or_name).await?,
    })
}

/// The project a request body names.
pub async fn by_id_or_name(store: &Store, r: &IdOrName) -> Result<Project> {
    Ok(match r {
        IdOrName::Id(id) => {
            store
                .get_project(ProjectId(
                    i32::try_from(*id)
                        .map_err(|_| ServiceError::not_found(format!("project {id}")))?,
                ))
                .await?
        }
        IdOrName::Name(n) => store.get_project_by_name(n).await?,
    })
}

pub fn sync_settings(core: &Core) -> SyncSettings {
    SyncSettings {
        data_dir: core.settings.data_dir.clone(),
        time_limit: core.settings.project_sync_time_limit,
        git_key: None,
    }
}

/// The project's git credential, opened for a fetch.
async fn git_key(core: &Core, p: &Project) -> Result<Option<Arc<zeroize::Zeroizing<String>>>> {
    let Some(id) = p.git_credential_id else {
        return Ok(None);
    };
    let c = core.store.get_credential(id).await?;
    let m = crate::credential::open(&core.keyring, &c)?;
    let key = tokio::task::spawn_blocking(move || crate::credential::opened_ssh_key(&m))
        .await
        .map_err(|_| ServiceError::internal("opening the git credential failed"))??;
    Ok(Some(Arc::new(key)))
}

/// A project's name (git and archive projects): it prefixes its playbooks' names
/// (`<project>/<path>`) and is typed on command lines, so it is a plain word.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::unprocessable(format!(
            "name {name:?}: 1 to 100 letters, digits and . _ - (not starting with . or -)"
        )))
    }
}

fn check_settings(p: &NewProject) -> Result<()> {
    if let Some(url) = &p.git_url {
        project::git::check_url(url).map_err(ServiceError::unprocessable)?;
    }
    if let Some(r) = &p.git_ref {
        project::git::check_ref(r).map_err(ServiceError::unprocessable)?;
    }
    if let Some(k) = &p.git_key_path {
        project::git::check_key_path(std::path::Path::new(k))
            .map_err(ServiceError::unprocessable)?;
    }
    if let Some(inv) = &p.inventory_path {
        if project::relative_path(inv).is_none() {
            return Err(ServiceError::unprocessable(format!(
                "inventory_path {inv:?}: a relative path inside the project"
            )));
        }
    }
    Ok(())
}

async fn view(core: &Core, p: &Project, with_playbooks: bool) -> Result<ProjectView> {
    let current = match p.current_revision_id {
        Some(r) => Some(core.store.get_revision(r).await?),
        None => None,
    };
    let playbooks = if with_playbooks {
        Some(core.store.project_playbooks(p.id).await?)
    } else {
        None
    };
    let creds = views::ProjectCredentials {
        git: match p.git_credential_id {
            Some(id) => {
                let c = core.store.get_credential(id).await?;
                Some(NameRef {
                    id: c.id.0,
                    name: c.name,
                })
            }
            None => None,
        },
        vault: core
            .store
            .project_vault_credentials(p.id)
            .await?
            .into_iter()
            .map(|c| NameRef {
                id: c.id.0,
                name: c.name.clone(),
            })
            .collect(),
    };
    Ok(views::project(
        p,
        current.as_ref(),
        playbooks.as_deref(),
        creds,
    ))
}

/// The vault credentials a request names: vault passwords, at most one per vault id.
async fn vault_credentials(core: &Core, names: &[String]) -> Result<Vec<CredentialId>> {
    let mut found = Vec::with_capacity(names.len());
    for n in names {
        found.push(
            credentials::resolve(core, n, CredentialKind::VaultPassword, "vault_credentials")
                .await?,
        );
    }
    let mut ids = std::collections::HashSet::new();
    for c in &found {
        let id = c
            .vault_id
            .as_deref()
            .unwrap_or(crate::credential::DEFAULT_VAULT_ID);
        if !ids.insert(id) {
            return Err(ServiceError::unprocessable(format!(
                "vault_credentials: two credentials open vault id {id}; attach one"
            )));
        }
    }
    let mut out: Vec<CredentialId> = found.iter().map(|c| c.id).collect();
    out.dedup();
    Ok(out)
}

pub async fn list(core: &Core, q: &PageQuery) -> Result<Page<ProjectView>> {
    let page = core
        .store
        .list_projects(None, paging(q.limit, q.offset))
        .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for p in &page.items {
        items.push(view(core, p, false).await?);
    }
    Ok(Page {
        items,
        total: page.total,
        total_exact: page.total_exact,
        limit: page.limit,
        offset: page.offset,
        next: None,
    })
}

pub async fn get(core: &Core, id: &str) -> Result<ProjectView> {
    let p = by_ref(&core.store, id).await?;
    view(core, &p, true).await
}

/// A new git or archive project; a git project's first sync starts at once (unless the
/// request says not to).
pub async fn create(
    core: &Arc<Core>,
    caller: &Caller,
    req: NewProjectRequest,
) -> Result<ProjectView> {
    check_name(&req.name)?;
    if req.kind == ProjectKind::File {
        return Err(ServiceError::unprocessable(
            "a one-file project is made by uploading a playbook (POST /api/v1/playbooks)",
        ));
    }
    if req.kind != ProjectKind::Git && req.git_credential.is_some() {
        return Err(ServiceError::unprocessable(
            "git_credential: only a git project fetches with one",
        ));
    }
    let git_credential_id = credentials::attach(
        core,
        req.git_credential.as_deref().filter(|n| !n.is_empty()),
        None,
        CredentialKind::SshKey,
        "git_credential",
    )
    .await?;
    let vault =
        vault_credentials(core, req.vault_credentials.as_deref().unwrap_or_default()).await?;
    let new = NewProject {
        name: req.name,
        description: req.description,
        kind: req.kind,
        git_url: req.git_url,
        git_ref: req.git_ref,
        git_key_path: req.git_key_path,
        git_credential_id,
        inventory_path: req.inventory_path,
    };
    if req.kind == ProjectKind::Git && new.git_url.is_none() {
        return Err(ServiceError::unprocessable(
            "a git project needs git_url (https://…, ssh://…, git://…, user@host:path or a path)",
        ));
    }
    if req.kind == ProjectKind::Archive
        && (new.git_url.is_some() || new.git_ref.is_some() || new.git_key_path.is_some())
    {
        return Err(ServiceError::unprocessable(
            "an archive project has no git settings: its tree comes with an upload",
        ));
    }
    check_settings(&new)?;
    let p = core.store.create_project(&new, &caller.actor()).await?;
    if !vault.is_empty() {
        core.store
            .set_project_vault_credentials(p.id, &vault, &caller.actor())
            .await?;
    }
    if p.kind == ProjectKind::Git && req.sync.unwrap_or(true) {
        start_sync(core, caller, &p).await?;
    }
    let p = core.store.get_project(p.id).await?;
    view(core, &p, true).await
}

pub async fn update(
    core: &Core,
    caller: &Caller,
    id: &str,
    r: ProjectPatchRequest,
) -> Result<ProjectView> {
    let old = by_ref(&core.store, id).await?;
    if let Some(n) = &r.name {
        if old.kind != ProjectKind::File {
            check_name(n)?;
        }
    }
    let git = old.kind == ProjectKind::Git;
    if !git
        && (r.git_url.is_some()
            || r.git_ref.is_some()
            || r.git_key_path.is_some()
            || r.git_credential.as_deref().is_some_and(|c| !c.is_empty()))
    {
        return Err(ServiceError::unprocessable(format!(
            "project {} is not a git project: it has no git settings",
            old.name
        )));
    }
    // An empty text clears an optional setting.
    let clear = |v: Option<String>, old: Option<String>| match v {
        Some(s) if s.is_empty() => None,
        Some(s) => Some(s),
        None => old,
    };
    let new = NewProject {
        name: r.name.unwrap_or(old.name.clone()),
        description: clear(r.description, old.description.clone()),
        kind: old.kind,
        git_url: r.git_url.or(old.git_url.clone()),
        git_ref: clear(r.git_ref, old.git_ref.clone()),
        git_key_path: clear(r.git_key_path, old.git_key_path.clone()),
        git_credential_id: credentials::attach(
            core,
            r.git_credential.as_deref(),
            old.git_credential_id,
            CredentialKind::SshKey,
            "git_credential",
        )
        .await?,
        inventory_path: clear(r.inventory_path, old.inventory_path.clone()),
    };
    check_settings(&new)?;
    if let Some(names) = &r.vault_credentials {
        let vault = vault_credentials(core, names).await?;
        core.store
            .set_project_vault_credentials(old.id, &vault, &caller.actor())
            .await?;
    }
    let p = core
        .store
        .update_project(
            old.id,
            &new,
            r.is_active.unwrap_or(old.is_active),
            &caller.actor(),
        )
        .await?;
    view(core, &p, true).await
}

/// Deletes a project no job ran (its revision files too, unless another project has the
/// same); one that jobs ran is deactivated instead.
pub async fn delete(core: &Core, caller: &Caller, id: &str) -> Result<DeleteResult> {
    let p = by_ref(&core.store, id).await?;
    let actor = caller.actor();
    match core.store.delete_project(p.id, &actor).await {
        Ok(orphans) => {
            for d in orphans {
                let path = project::revision_path(&core.settings.data_dir, &d);
                if let Err(e) = tokio::fs::remove_file(&path).await {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a revision file");
                }
            }
            let cache = core
                .settings
                .data_dir
                .join("projects")
                .join(p.id.to_string());
            let _ = tokio::fs::remove_dir_all(cache).await;
            Ok(DeleteResult {
                outcome: "deleted".into(),
                message: format!("project {} deleted", p.name),
            })
        }
        Err(StoreError::InUse { .. }) => {
            let new = NewProject {
                name: p.name.clone(),
                description: p.description.clone(),
                kind: p.kind,
                git_url: p.git_url.clone(),
                git_ref: p.git_ref.clone(),
                git_key_path: p.git_key_path.clone(),
                git_credential_id: p.git_credential_id,
                inventory_path: p.inventory_path.clone(),
            };
            core.store.update_project(p.id, &new, false, &actor).await?;
            Ok(DeleteResult {
                outcome: "deactivated".into(),
                message: format!(
                    "project {} has jobs, so it was deactivated instead of deleted",
                    p.name
                ),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Claims the project's sync and runs it in the background.
async fn start_sync(core: &Arc<Core>, caller: &Caller, p: &Project) -> Result<()> {
    let key = git_key(core, p).await?;
    claim(core, p).await?;
    let core = core.clone();
    let project = p.clone();
    let caller = caller.clone();
    tokio::spawn(async move {
        let settings = SyncSettings {
            git_key: key,
            ..sync_settings(&core)
        };
        if let Ok(synced) = project::sync(
            &core.store,
            &settings,
            &project,
            Source::Git,
            &caller.actor(),
        )
        .await
        {
            record_servers(&core, &caller, &project, synced.servers).await;
        }
    });
    Ok(())
}

/// Records the servers of a project's inventory source: a new hostname is created, a known one
/// updated from the inventory, which is its source from then on. A server that cannot be
/// recorded is named in the project's sync error (the revision itself stands).
async fn record_servers(
    core: &Core,
    caller: &Caller,
    project: &Project,
    servers: Vec<outpost_api::NewServerRequest>,
) {
    let (mut created, mut updated, mut refused) = (0usize, 0usize, Vec::new());
    for r in servers {
        let host = r.hostname.clone();
        let done = match core.store.get_server_by_hostname(&r.hostname).await {
            Ok(old) => {
                let patch = outpost_api::ServerPatchRequest {
                    ip_address: Some(r.ip_address),
                    os_type: Some(r.os_type),
                    os_version: r.os_version,
                    ssh_port: r.ssh_port,
                    ssh_user: r.ssh_user,
                    ssh_key_path: r.ssh_key_path,
                    tags: r.tags,
                    environment: r.environment,
                    description: r.description,
                    host_vars: r.host_vars,
                    inventory_groups: Some(r.inventory_groups.unwrap_or_default()),
                    ..Default::default()
                };
                super::servers::update(core, caller, old.id, patch)
                    .await
                    .map(|_| updated += 1)
            }
            Err(StoreError::NotFound(_)) => super::servers::create(core, caller, r)
                .await
                .map(|_| created += 1),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = done {
            refused.push(format!("{host}: {}", e.message));
        }
    }
    tracing::info!(project = %project.name, created, updated, refused = refused.len(), "inventory source recorded");
    if !refused.is_empty() {
        let why = format!(
            "the revision was made, but {} of the inventory's servers were not recorded: {}",
            refused.len(),
            refused.join("; ")
        );
        if let Err(e) = core
            .store
            .fail_sync(project.id, &why, &caller.actor())
            .await
        {
            tracing::error!(project = %project.name, error = %e, "cannot record the inventory's refusals");
        }
    }
}

async fn claim(core: &Core, p: &Project) -> Result<()> {
    if !core
        .store
        .claim_sync(p.id, core.settings.project_sync_time_limit)
        .await?
    {
        return Err(ServiceError::conflict(format!(
            "project {} is syncing already; wait for that sync to end",
            p.name
        )));
    }
    Ok(())
}

/// Starts a sync of a git project; the answer is the project, syncing.
pub async fn sync(core: &Arc<Core>, caller: &Caller, id: &str) -> Result<ProjectView> {
    let p = by_ref(&core.store, id).await?;
    match p.kind {
        ProjectKind::Git => {}
        ProjectKind::Archive => {
            return Err(ServiceError::unprocessable(format!(
                "project {} is an archive project: upload a new archive (POST /api/v1/projects/{}/archive)",
                p.name, p.id
            )))
        }
        ProjectKind::File => {
            return Err(ServiceError::unprocessable(format!(
                "project {} is one uploaded playbook: change the playbook to make a new revision",
                p.name
            )))
        }
    }
    start_sync(core, caller, &p).await?;
    let p = core.store.get_project(p.id).await?;
    view(core, &p, false).await
}

/// Syncs an archive project from an uploaded `.tar.gz` or `.tar` (already on disk, within the
/// size limit); the answer comes when the sync has ended.
pub async fn upload(
    core: &Core,
    caller: &Caller,
    id: &str,
    archive: tempfile::NamedTempFile,
) -> Result<ProjectView> {
    let p = by_ref(&core.store, id).await?;
    if p.kind != ProjectKind::Archive {
        return Err(ServiceError::unprocessable(format!(
            "project {} is a {} project: only archive projects take uploads",
            p.name, p.kind
        )));
    }
    claim(core, &p).await?;
    let actor = caller.actor();
    let data_dir = core.settings.data_dir.clone();
    let unpacked = tokio::task::spawn_blocking(move || {
        let work = project::work_dir(&data_dir)?;
        let file = archive
            .reopen()
            .map_err(|source| project::ProjectError::Io {
                what: "the uploaded archive".into(),
                source,
            })?;
        outpost_protocol::tree::unpack_upload(
            std::io::BufReader::new(file),
            work.path(),
            &outpost_protocol::tree::Limits::REVISION,
        )?;
        Ok::<_, project::ProjectError>(work)
    })
    .await
    .map_err(|e| ServiceError::internal(format!("the upload stopped: {e}")))?;
    let settings = sync_settings(core);
    match unpacked {
        Ok(work) => {
            // A failed sync is recorded on the project, which the answer shows.
            if let Ok(synced) =
                project::sync(&core.store, &settings, &p, Source::Tree(work), &actor).await
            {
                record_servers(core, caller, &p, synced.servers).await;
            }
        }
        Err(e) => {
            core.store.fail_sync(p.id, &e.to_string(), &actor).await?;
            return Err(ServiceError::unprocessable(format!(
                "the archive was refused: {e}"
            )));
        }
    }
    let p = core.store.get_project(p.id).await?;
    view(core, &p, true).await
}

pub async fn revisions(core: &Core, id: &str, q: &PageQuery) -> Result<Page<RevisionView>> {
    let p = by_ref(&core.store, id).await?;
    let page = core
        .store
        .list_revisions(p.id, paging(q.limit, q.offset))
        .await?;
    Ok(views::page(page, |r| views::revision(r, &p)))
}

/// The entries of a revision (the current one by default), each marked when it is one of the
/// project's playbooks.
pub async fn files(core: &Core, id: &str, q: &ProjectFilesQuery) -> Result<ProjectFilesView> {
    let p = by_ref(&core.store, id).await?;
    let rev = match &q.revision {
        Some(d) => core.store.get_revision_by_digest(p.id, d).await?,
        None => {
            let r = p.current_revision_id.ok_or_else(|| {
                ServiceError::not_found(format!("project {} has no revision yet", p.name))
            })?;
            core.store.get_revision(r).await?
        }
    };
    if !outpost_protocol::tree::is_digest(&rev.digest) {
        return Err(ServiceError::internal("a revision's digest is malformed"));
    }
    let path = project::revision_path(&core.settings.data_dir, &rev.digest);
    let entries = tokio::task::spawn_blocking(move || project::list_files(&path))
        .await
        .map_err(|e| ServiceError::internal(format!("cannot list the revision: {e}")))?
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read a revision file");
            ServiceError::internal("cannot read the revision's file; see the controller's log")
        })?;
    let playbooks = core.store.project_playbooks(p.id).await?;
    let files = entries
        .into_iter()
        .map(|e| ProjectFileView {
            playbook: e.kind == "file" && playbooks.iter().any(|pb| pb.file_path == e.path),
            path: e.path,
            kind: e.kind.into(),
            size: e.size,
        })
        .collect();
    Ok(ProjectFilesView {
        revision: views::revision(&rev, &p),
        files,
    })
}
