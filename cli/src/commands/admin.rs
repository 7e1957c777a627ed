//! Tickets, agents and enrolment tokens, users, and the audit trail.

use anyhow::Context as _;
use outpost_api::client::Client;
use outpost_api::*;
use serde_json::json;

use super::{client, pairs, password_from_user, ALL};
use crate::output::{cell, labels, time, Output};
use crate::terminal::{escape, escape_text};
use crate::{AgentCmd, AuditCmd, TicketCmd, UserCmd};

pub async fn tickets(ctx: Option<&str>, cmd: TicketCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let rows = |ts: &[TicketView]| -> Vec<Vec<String>> {
        ts.iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    String::from(t.status.as_str()),
                    String::from(t.priority.as_str()),
                    t.title.clone(),
                    time(&Some(t.created_at)),
                ]
            })
            .collect()
    };
    let header = ["ticket", "status", "priority", "title", "created"];
    let patch = |status: Option<String>,
                 priority: Option<String>,
                 title: Option<String>|
     -> anyhow::Result<TicketPatchRequest> {
        Ok(TicketPatchRequest {
            status: status.map(|s| s.parse()).transpose()?,
            priority: priority.map(|s| s.parse()).transpose()?,
            title,
            description: None,
        })
    };
    match cmd {
        TicketCmd::List { status, priority } => {
            let query = TicketQuery {
                status: status.map(|s| s.parse()).transpose()?,
                priority: priority.map(|p| p.parse()).transpose()?,
                limit: Some(1000),
                offset: None,
            };
            let page = c.tickets().list(&query).await?;
            if !out.json(&page) {
                out.table(&header, rows(&page.items));
            }
        }
        TicketCmd::Show { ticket } => {
            let t = c.tickets().get(&ticket).await?;
            if !out.json(&t) {
                // Titles and descriptions are written by people and by failed jobs' output.
                println!(
                    "{} [{} / {}] {}\njob {}\n\n{}",
                    escape(&t.id),
                    t.status,
                    t.priority,
                    escape(&t.title),
                    escape(&t.job_id),
                    escape_text(t.description.as_deref().unwrap_or_default())
                );
            }
        }
        TicketCmd::Update {
            ticket,
            status,
            priority,
            title,
        } => {
            let t = c
                .tickets()
                .update(&ticket, &patch(status, priority, title)?)
                .await?;
            if !out.json(&t) {
                out.table(&header, rows(&[t]));
            }
        }
        TicketCmd::Resolve { ticket } => {
            let resolved = TicketPatchRequest {
                status: Some(TicketStatus::Resolved),
                ..Default::default()
            };
            let t = c.tickets().update(&ticket, &resolved).await?;
            if !out.json(&t) {
                println!("ticket {} resolved", escape(&t.id));
            }
        }
    }
    Ok(())
}

pub async fn agents(ctx: Option<&str>, cmd: AgentCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    match cmd {
        AgentCmd::List => {
            let page = c.agents().list(&ALL).await?;
            if !out.json(&page) {
                let rows = page
                    .items
                    .iter()
                    .map(|a| {
                        vec![
                            a.id.to_string(),
                            a.name.clone(),
                            String::from(if a.revoked {
                                "revoked"
                            } else if a.online {
                                "online"
                            } else {
                                "offline"
                            }),
                            labels(&a.labels),
                            cell(&a.version),
                            time(&a.cert_expires_at),
                            time(&a.last_seen),
                        ]
                    })
                    .collect();
                out.table(
                    &[
                        "id",
                        "name",
                        "state",
                        "labels",
                        "version",
                        "cert until",
                        "last seen",
                    ],
                    rows,
                );
            }
        }
        AgentCmd::Revoke { agent } => {
            let id = match agent.parse::<i32>() {
                Ok(id) => id,
                Err(_) => {
                    let page = c.agents().list(&ALL).await?;
                    page.items
                        .iter()
                        .find(|a| a.name == agent || a.uuid == agent)
                        .map(|a| a.id)
                        .with_context(|| format!("no agent named {agent}"))?
                }
            };
            let a = c.agents().revoke(id).await?;
            if !out.json(&a) {
                println!(
                    "agent {} revoked: its sessions are dropped and it cannot connect again",
                    escape(&a.name)
                );
            }
        }
        AgentCmd::Token {
            name,
            labels,
            ttl_hours,
        } => {
            let labels = agent_labels(&labels)?;
            let t = c
                .enrollment_tokens()
                .create(&NewEnrollmentTokenRequest {
                    name,
                    labels,
                    ttl_hours: Some(ttl_hours),
                })
                .await?;
            if !out.json(&t) {
                println!("{}", escape(&t.token));
                eprintln!(
                    "one-time token for agent '{}', valid until {}; on the bastion:\n  outpost-agent enroll --controller HOST:7444 --token '<token>'",
                    escape(&t.record.name),
                    t.record.expires_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
        AgentCmd::Bundle {
            name,
            labels,
            addresses,
            ttl_hours,
            output,
        } => {
            let labels = agent_labels(&labels)?;
            let path = output.unwrap_or_else(|| format!("outpost-agent-{name}.tar.gz").into());
            let file = create_private(&path)?;
            let request = NewAgentBundleRequest {
                name: name.clone(),
                labels,
                ttl_hours: Some(ttl_hours),
                addresses,
            };
            let saved = match c.agent_bundles().create(&request).await {
                Ok(resp) => save(resp, file).await,
                Err(e) => Err(e.into()),
            };
            match saved {
                Ok(bytes) => {
                    if !out.json(&json!({"file": path, "bytes": bytes})) {
                        eprintln!(
                            "wrote {} ({bytes} bytes, mode 0600: it holds a one-time token). On a machine with SSH to the bastion:\n  tar xzf {} && cd outpost-agent-{name} && ansible-playbook -i BASTION, install.yml",
                            path.display(),
                            path.display()
                        );
                    }
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// `key=value` arguments as an agent's labels.
fn agent_labels(args: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    Ok(pairs(args, "label")?
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
        .collect())
}

/// A new file only the user can read; an existing one is left alone.
fn create_private(path: &std::path::Path) -> anyhow::Result<tokio::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    Ok(tokio::fs::File::from_std(f))
}

/// Streams a download into `file`; the byte count.
async fn save(resp: reqwest::Response, mut file: tokio::fs::File) -> anyhow::Result<u64> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut body = resp.bytes_stream();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download broke off")?;
        file.write_all(&chunk).await?;
        n += chunk.len() as u64;
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok(n)
}

/// Every user, as far as one page goes.
const ALL_USERS: UserQuery = UserQuery {
    role: None,
    active: None,
    limit: Some(1000),
    offset: None,
};

async fn user_by(c: &Client, u: &str) -> anyhow::Result<UserView> {
    if let Ok(id) = u.parse::<i32>() {
        return Ok(c.users().get(id).await?);
    }
    let page = c.users().list(&ALL_USERS).await?;
    page.items
        .into_iter()
        .find(|x| x.username == u)
        .with_context(|| format!("no user named {u}"))
}

pub async fn users(ctx: Option<&str>, cmd: UserCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let rows = |us: &[UserView]| -> Vec<Vec<String>> {
        us.iter()
            .map(|u| {
                vec![
                    u.id.to_string(),
                    u.username.clone(),
                    u.email.clone(),
                    u.role.to_string(),
                    String::from(if u.is_active { "active" } else { "inactive" }),
                    time(&u.last_login),
                ]
            })
            .collect()
    };
    let header = ["id", "username", "email", "role", "state", "last login"];
    match cmd {
        UserCmd::List => {
            let page = c.users().list(&ALL_USERS).await?;
            if !out.json(&page) {
                out.table(&header, rows(&page.items));
            }
        }
        UserCmd::Add {
            username,
            email,
            role,
        } => {
            let password = password_from_user(&format!("Initial password for {username}: "))?;
            let u = c
                .users()
                .create(&NewUserRequest {
                    username,
                    email,
                    password,
                    role: Some(role.parse()?),
                })
                .await?;
            if !out.json(&u) {
                out.table(&header, rows(&[u]));
            }
        }
        UserCmd::Update {
            user,
            role,
            email,
            active,
        } => {
            let u = user_by(&c, &user).await?;
            let patch = UserPatchRequest {
                role: role.map(|r| r.parse()).transpose()?,
                email,
                is_active: active,
            };
            let u = c.users().update(u.id, &patch).await?;
            if !out.json(&u) {
                out.table(&header, rows(&[u]));
            }
        }
        UserCmd::Passwd { user } => {
            let me = c.auth().whoami().await?;
            let target = match user {
                Some(u) => user_by(&c, &u).await?,
                None => me.user.clone(),
            };
            let own = target.id == me.user.id;
            let current = if own {
                Some(password_from_user("Current password: ")?)
            } else {
                None
            };
            let new_password = match std::env::var("OUTPOST_NEW_PASSWORD") {
                Ok(p) => p,
                Err(_) => password_from_user(&format!("New password for {}: ", target.username))?,
            };
            let change = PasswordChangeRequest {
                current_password: current,
                new_password,
            };
            let u = c.users().set_password(target.id, &change).await?;
            if !out.json(&u) {
                println!("password of {} changed", escape(&u.username));
            }
        }
    }
    Ok(())
}

pub async fn audit(ctx: Option<&str>, cmd: AuditCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let AuditCmd::List {
        action,
        resource_type,
        limit,
        after,
    } = cmd;
    let mut command = format!("outpost audit list --limit {limit}");
    if let Some(a) = &action {
        command.push_str(&format!(" --action {}", escape(a)));
    }
    if let Some(r) = &resource_type {
        command.push_str(&format!(" --resource-type {}", escape(r)));
    }
    let query = AuditQuery {
        action,
        resource_type,
        limit: Some(limit),
        after,
        ..Default::default()
    };
    let page = c.audit().list(&query).await?;
    if !out.json(&page) {
        let rows = page
            .items
            .iter()
            .map(|e| {
                vec![
                    time(&Some(e.timestamp)),
                    cell(&e.user_id),
                    e.action.clone(),
                    format!("{} {}", e.resource_type, cell(&e.resource_id)),
                    cell(&e.ip_address),
                    e.details
                        .as_ref()
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        out.table(
            &["time", "user", "action", "resource", "from", "details"],
            rows,
        );
        out.next_page(&page, &command);
    }
    Ok(())
}
