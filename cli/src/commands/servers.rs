//! The inventory: servers by hand and from Ansible inventories.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use outpost_api::client::Client;
use outpost_api::*;
use serde_json::{json, Value};

use super::{client, pairs};
use crate::output::{cell, labels, Output};
use crate::terminal;
use crate::{inventory, ServerCmd};

/// A server named by hostname or id.
async fn server_by(c: &Client, s: &str) -> anyhow::Result<ServerView> {
    if let Ok(id) = s.parse::<i32>() {
        return Ok(c.servers().get(id).await?);
    }
    let mut query = ServerQuery {
        limit: Some(1000),
        ..Default::default()
    };
    let mut page = c.servers().list(&query).await?;
    let mut offset = 0;
    loop {
        if let Some(found) = page.items.iter().find(|x| x.hostname == s) {
            return Ok(found.clone());
        }
        offset += page.items.len() as i64;
        if offset >= page.total || page.items.is_empty() {
            bail!("no server named {s}");
        }
        query.offset = Some(offset);
        page = c.servers().list(&query).await?;
    }
}

fn server_rows(out: &Output, items: &[ServerView]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|s| {
            let mut row = vec![
                s.id.to_string(),
                s.hostname.clone(),
                s.ip_address.clone(),
                cell(&s.environment),
                labels(&s.tags),
                String::from(if s.is_active { "active" } else { "inactive" }),
            ];
            if out.wide {
                row.push(format!("{}@:{}", s.ssh_user, s.ssh_port));
                row.push(cell(&s.ssh_key_path));
            }
            row
        })
        .collect()
}

pub async fn servers(ctx: Option<&str>, cmd: ServerCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let header: &[&str] = if out.wide {
        &["id", "hostname", "ip", "env", "tags", "state", "ssh", "key"]
    } else {
        &["id", "hostname", "ip", "env", "tags", "state"]
    };
    match cmd {
        ServerCmd::Add(f) => {
            let tags = pairs(&f.tags, "tag")?;
            let s = c
                .servers()
                .create(&NewServerRequest {
                    hostname: f.hostname,
                    ip_address: f.ip,
                    os_type: f.os,
                    os_version: None,
                    ssh_port: f.port,
                    ssh_user: f.user,
                    ssh_key_path: f.key,
                    tags: (!tags.is_empty()).then_some(tags),
                    environment: f.env,
                    description: f.description,
                    host_vars: None,
                })
                .await?;
            if !out.json(&s) {
                out.table(header, server_rows(&out, &[s]));
            }
        }
        ServerCmd::List { env, selector, all } => {
            let query = ServerQuery {
                environment: env,
                tag: selector,
                active: (!all).then_some(true),
                limit: Some(1000),
                offset: None,
            };
            let page = c.servers().list(&query).await?;
            if !out.json(&page) {
                out.table(header, server_rows(&out, &page.items));
            }
        }
        ServerCmd::Show { server } => {
            let s = server_by(&c, &server).await?;
            if !out.json(&s) {
                let text = serde_json::to_string_pretty(&s)?;
                println!("{}", terminal::json(&text));
            }
        }
        ServerCmd::Update { server, fields } => {
            let s = server_by(&c, &server).await?;
            let tags = pairs(&fields.tags, "tag")?;
            let patch = ServerPatchRequest {
                ip_address: fields.ip,
                ssh_port: fields.port,
                ssh_user: fields.user,
                ssh_key_path: fields.key,
                environment: fields.env,
                tags: (!tags.is_empty()).then_some(tags),
                description: fields.description,
                ..Default::default()
            };
            let s = c.servers().update(s.id, &patch).await?;
            if !out.json(&s) {
                out.table(header, server_rows(&out, &[s]));
            }
        }
        ServerCmd::Deactivate { server } => {
            let s = server_by(&c, &server).await?;
            let patch = ServerPatchRequest {
                is_active: Some(false),
                ..Default::default()
            };
            let s = c.servers().update(s.id, &patch).await?;
            if !out.json(&s) {
                println!("server {} deactivated", terminal::escape(&s.hostname));
            }
        }
        ServerCmd::Import { file, dry_run } => import(&c, &file, dry_run, out).await?,
    }
    Ok(())
}

async fn import(
    c: &Client,
    file: &std::path::Path,
    dry_run: bool,
    out: Output,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let hosts = inventory::parse(&file.display().to_string(), &text)
        .with_context(|| file.display().to_string())?;
    let mut records = Vec::new();
    for h in &hosts {
        records.push(inventory::to_server(h)?);
    }
    let known = c
        .servers()
        .list(&ServerQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await?;
    let by_name: BTreeMap<&str, &ServerView> = known
        .items
        .iter()
        .map(|s| (s.hostname.as_str(), s))
        .collect();
    let mut report = Vec::new();
    for r in records {
        let action = if by_name.contains_key(r.hostname.as_str()) {
            "update"
        } else {
            "add"
        };
        if !dry_run {
            match by_name.get(r.hostname.as_str()) {
                Some(s) => {
                    let patch = ServerPatchRequest {
                        ip_address: Some(r.ip_address.clone()),
                        os_type: Some(r.os_type.clone()),
                        ssh_port: r.ssh_port,
                        ssh_user: r.ssh_user.clone(),
                        ssh_key_path: r.ssh_key_path.clone(),
                        tags: r.tags.clone(),
                        environment: r.environment.clone(),
                        host_vars: r.host_vars.clone(),
                        ..Default::default()
                    };
                    c.servers().update(s.id, &patch).await?;
                }
                None => {
                    c.servers().create(&r).await?;
                }
            }
        }
        report.push((action, r));
    }
    if out.json {
        let v: Vec<Value> = report
            .iter()
            .map(|(a, r)| json!({"action": a, "server": r}))
            .collect();
        out.json(&json!({"dry_run": dry_run, "servers": v}));
        return Ok(());
    }
    let rows = report
        .iter()
        .map(|(a, r)| {
            vec![
                match (dry_run, *a) {
                    (true, a) => format!("would {a}"),
                    (false, "add") => "added".into(),
                    (false, _) => "updated".into(),
                },
                r.hostname.clone(),
                r.ip_address.clone(),
                cell(&r.environment),
                labels(&r.tags),
                labels(&r.host_vars),
            ]
        })
        .collect();
    out.table(
        &["action", "hostname", "ip", "env", "tags", "host vars"],
        rows,
    );
    Ok(())
}
