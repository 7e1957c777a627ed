//! Projects: create, change (credentials included), upload archives, sync (and wait), list,
//! show, revisions and files.

use std::time::Duration;

use anyhow::Context as _;
use outpost_api::client::Client;
use outpost_api::*;

use super::{client, detach_or, ALL};
use crate::output::{cell, time, Output};
use crate::terminal;
use crate::ProjectCmd;

async fn project_by(c: &Client, p: &str) -> anyhow::Result<ProjectView> {
    if let Ok(id) = p.parse::<i32>() {
        return Ok(c.projects().get(id).await?);
    }
    let page = c.projects().list(&ALL).await?;
    let found = page
        .items
        .into_iter()
        .find(|x| x.name == p)
        .with_context(|| format!("no project named {p}"))?;
    Ok(c.projects().get(found.id).await?)
}

fn short(digest: &str) -> String {
    digest[..12.min(digest.len())].to_owned()
}

fn row(p: &ProjectView) -> Vec<String> {
    vec![
        p.id.to_string(),
        p.name.clone(),
        p.kind.to_string(),
        p.sync_state.to_string(),
        p.current_revision
            .as_ref()
            .map(|r| short(&r.digest))
            .unwrap_or_default(),
        p.current_revision
            .as_ref()
            .and_then(|r| r.commit.as_deref().map(short))
            .unwrap_or_default(),
        time(&p.synced_at),
        p.sync_error
            .as_deref()
            .map(|e| e.lines().next().unwrap_or_default().to_owned())
            .unwrap_or_default(),
    ]
}

const HEADER: [&str; 8] = [
    "id", "name", "kind", "sync", "revision", "commit", "synced", "error",
];

fn show(p: &ProjectView) {
    println!(
        "{} ({}, {})",
        terminal::escape(&p.name),
        p.kind,
        p.sync_state
    );
    if let Some(url) = &p.git_url {
        println!(
            "  git:       {} {}",
            terminal::escape(url),
            terminal::escape(p.git_ref.as_deref().unwrap_or("(default branch)"))
        );
    }
    if let Some(c) = &p.git_credential {
        println!("  git credential:    {}", terminal::escape(&c.name));
    }
    if !p.vault_credentials.is_empty() {
        let names: Vec<&str> = p
            .vault_credentials
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        println!(
            "  vault credentials: {}",
            terminal::escape(&names.join(", "))
        );
    }
    if let Some(r) = &p.current_revision {
        println!(
            "  revision:  {} commit {} ({} bytes, {} entries)",
            r.digest,
            cell(&r.commit),
            r.size_bytes,
            r.entries
        );
    }
    if let Some(e) = &p.sync_error {
        println!("  last sync failed: {}", terminal::escape_text(e));
    }
    for pb in p.playbooks.iter().flatten() {
        println!(
            "  playbook:  {}{}",
            terminal::escape(&pb.file_path),
            if pb.is_active { "" } else { " (gone)" }
        );
    }
}

pub async fn projects(ctx: Option<&str>, cmd: ProjectCmd, out: Output) -> anyhow::Result<u8> {
    let c = client(ctx)?;
    match cmd {
        ProjectCmd::Create {
            name,
            git,
            git_ref,
            deploy_key,
            inventory,
            description,
            credentials,
        } => {
            let kind = if git.is_some() {
                ProjectKind::Git
            } else {
                ProjectKind::Archive
            };
            let p = c
                .projects()
                .create(&NewProjectRequest {
                    name,
                    description,
                    kind,
                    git_url: git,
                    git_ref,
                    git_key_path: deploy_key,
                    inventory_path: inventory,
                    sync: None,
                    git_credential: credentials.git_credential,
                    vault_credentials: (!credentials.vault_credentials.is_empty())
                        .then_some(credentials.vault_credentials),
                })
                .await?;
            if !out.json(&p) {
                out.table(&HEADER, vec![row(&p)]);
            }
        }
        ProjectCmd::Update {
            project,
            name,
            git,
            git_ref,
            deploy_key,
            inventory,
            description,
            credentials,
            no_git_credential,
            no_vault_credentials,
        } => {
            let p = project_by(&c, &project).await?;
            let vault_credentials = if no_vault_credentials {
                Some(Vec::new())
            } else {
                (!credentials.vault_credentials.is_empty()).then_some(credentials.vault_credentials)
            };
            let patch = ProjectPatchRequest {
                name,
                description,
                git_url: git,
                git_ref,
                git_key_path: deploy_key,
                git_credential: detach_or(credentials.git_credential, no_git_credential),
                vault_credentials,
                inventory_path: inventory,
                is_active: None,
            };
            let p = c.projects().update(p.id, &patch).await?;
            if !out.json(&p) {
                show(&p);
            }
        }
        ProjectCmd::Upload { name, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let p = match project_by(&c, &name).await {
                Ok(p) => p,
                Err(_) => {
                    c.projects()
                        .create(&NewProjectRequest {
                            name: name.clone(),
                            description: None,
                            kind: ProjectKind::Archive,
                            git_url: None,
                            git_ref: None,
                            git_key_path: None,
                            inventory_path: None,
                            sync: None,
                            git_credential: None,
                            vault_credentials: None,
                        })
                        .await?
                }
            };
            let p = c.projects().upload(p.id, bytes).await?;
            if !out.json(&p) {
                show(&p);
            }
            return Ok(if p.sync_state == SyncState::Failed {
                1
            } else {
                0
            });
        }
        ProjectCmd::List => {
            let page = c.projects().list(&ALL).await?;
            if !out.json(&page) {
                out.table(&HEADER, page.items.iter().map(row).collect());
            }
        }
        ProjectCmd::Show { project } => {
            let p = project_by(&c, &project).await?;
            if !out.json(&p) {
                show(&p);
            }
        }
        ProjectCmd::Sync { project, wait } => {
            let p = project_by(&c, &project).await?;
            let mut p = c.projects().sync(p.id).await?;
            while wait && p.sync_state == SyncState::Syncing {
                tokio::time::sleep(Duration::from_millis(500)).await;
                p = c.projects().get(p.id).await?;
            }
            if !out.json(&p) {
                show(&p);
            }
            return Ok(if p.sync_state == SyncState::Failed {
                1
            } else {
                0
            });
        }
        ProjectCmd::Revisions { project } => {
            let p = project_by(&c, &project).await?;
            let page = c.projects().revisions(p.id, &ALL).await?;
            if !out.json(&page) {
                out.table(
                    &["digest", "commit", "bytes", "entries", "created"],
                    page.items
                        .iter()
                        .map(|r| {
                            vec![
                                r.digest.clone(),
                                cell(&r.commit),
                                r.size_bytes.to_string(),
                                r.entries.to_string(),
                                time(&Some(r.created_at)),
                            ]
                        })
                        .collect(),
                );
            }
        }
        ProjectCmd::Files { project, revision } => {
            let p = project_by(&c, &project).await?;
            let files = c
                .projects()
                .files(p.id, &ProjectFilesQuery { revision })
                .await?;
            if !out.json(&files) {
                out.table(
                    &["path", "kind", "bytes", "playbook"],
                    files
                        .files
                        .iter()
                        .map(|f| {
                            vec![
                                f.path.clone(),
                                f.kind.clone(),
                                f.size.to_string(),
                                String::from(if f.playbook { "yes" } else { "" }),
                            ]
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(0)
}
