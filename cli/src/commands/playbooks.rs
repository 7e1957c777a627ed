//! Playbooks: upload, new versions, listing, showing.

use anyhow::Context as _;
use outpost_api::client::Client;
use outpost_api::*;

use super::{client, ALL};
use crate::output::{time, Output};
use crate::terminal;
use crate::PlaybookCmd;

async fn playbook_by(c: &Client, p: &str) -> anyhow::Result<PlaybookView> {
    if let Ok(id) = p.parse::<i32>() {
        return Ok(c.playbooks().get(id).await?);
    }
    let page = c.playbooks().list(&ALL).await?;
    let found = page
        .items
        .into_iter()
        .find(|x| x.name == p)
        .with_context(|| format!("no playbook named {p}"))?;
    Ok(c.playbooks().get(found.id).await?)
}

pub async fn playbooks(ctx: Option<&str>, cmd: PlaybookCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let show = |p: &PlaybookView| {
        vec![
            p.id.to_string(),
            p.name.clone(),
            p.file_hash[..12.min(p.file_hash.len())].to_owned(),
            String::from(if p.is_active { "active" } else { "inactive" }),
            time(&Some(p.updated_at)),
        ]
    };
    let header = ["id", "name", "sha256", "state", "updated"];
    match cmd {
        PlaybookCmd::Add {
            file,
            name,
            description,
        } => {
            let content = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let name = name.unwrap_or_else(|| {
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "playbook".into())
            });
            let p = c
                .playbooks()
                .create(&NewPlaybookRequest {
                    name,
                    content,
                    description,
                    tags: None,
                    variables: None,
                })
                .await?;
            if !out.json(&p) {
                out.table(&header, vec![show(&p)]);
            }
        }
        PlaybookCmd::Update { playbook, file } => {
            let p = playbook_by(&c, &playbook).await?;
            let content = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let patch = PlaybookPatchRequest {
                content: Some(content),
                ..Default::default()
            };
            let p = c.playbooks().update(p.id, &patch).await?;
            if !out.json(&p) {
                out.table(&header, vec![show(&p)]);
            }
        }
        PlaybookCmd::List => {
            let page = c.playbooks().list(&ALL).await?;
            if !out.json(&page) {
                out.table(&header, page.items.iter().map(show).collect());
            }
        }
        PlaybookCmd::Show { playbook } => {
            let p = playbook_by(&c, &playbook).await?;
            if !out.json(&p) {
                println!(
                    "# {} (sha256 {})",
                    terminal::escape(&p.name),
                    terminal::escape(&p.file_hash)
                );
                print!(
                    "{}",
                    terminal::escape_text(p.content.as_deref().unwrap_or_default())
                );
            }
        }
    }
    Ok(())
}
