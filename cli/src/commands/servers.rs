//! The inventory: servers by hand and from Ansible inventories (read by `ansible-inventory`,
//! or by Outpost's own reader when ansible is not installed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use outpost_api::client::Client;
use outpost_api::inventory as inventory_api;
use outpost_api::*;
use serde_json::{json, Value};

use super::{client, detach_or, pairs};
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
                row.push(match &s.ssh_credential {
                    Some(c) => format!("credential {}", c.name),
                    None => cell(&s.ssh_key_path),
                });
                row.push(
                    s.become_credential
                        .as_ref()
                        .map(|c| c.name.clone())
                        .unwrap_or_else(|| "-".into()),
                );
            }
            row
        })
        .collect()
}

pub async fn servers(ctx: Option<&str>, cmd: ServerCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let header: &[&str] = if out.wide {
        &[
            "id", "hostname", "ip", "env", "tags", "state", "ssh", "key", "become",
        ]
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
                    inventory_groups: None,
                    ssh_credential: f.ssh_credential,
                    become_credential: f.become_credential,
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
                // `""` detaches: what the API reads as "none any more".
                ssh_credential: detach_or(fields.ssh_credential, fields.no_ssh_credential),
                become_credential: detach_or(fields.become_credential, fields.no_become_credential),
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
        ServerCmd::Import {
            file,
            dry_run,
            ansible_inventory,
            timeout,
        } => {
            let how = Reader {
                program: ansible_inventory,
                time_limit: Duration::from_secs(timeout.max(1)),
            };
            import(&c, &file, &how, dry_run, out).await?
        }
    }
    Ok(())
}

/// How `server import` reads an inventory.
struct Reader {
    /// `--ansible-inventory`: run this and never fall back.
    program: Option<PathBuf>,
    time_limit: Duration,
}

/// The most of ansible-inventory's stderr kept to show.
const MAX_STDERR_SHOWN: u64 = 64 * 1024;
/// The largest inventory file Outpost's own reader reads.
const MAX_FALLBACK_FILE_BYTES: u64 = 16 << 20;

/// The hosts of `file` as `ansible-inventory --list` lists them; `None` when the program is not
/// installed (and was not named).
async fn ansible_inventory(
    file: &Path,
    how: &Reader,
) -> anyhow::Result<Option<Vec<inventory_api::Host>>> {
    use tokio::io::AsyncReadExt as _;
    let program = how
        .program
        .clone()
        .unwrap_or_else(|| PathBuf::from("ansible-inventory"));
    // An absolute path: one argument that ansible cannot take for an option or a host list.
    let path =
        std::fs::canonicalize(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg("-i")
        .arg(&path)
        .arg("--list")
        // An inventory ansible cannot parse is a failure, not an empty listing with a warning.
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True")
        .env("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", "True")
        .env("ANSIBLE_NOCOLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && how.program.is_none() => {
            return Ok(None)
        }
        Err(e) => bail!("cannot run {}: {e}", program.display()),
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        bail!("cannot read the output of {}", program.display());
    };
    let cap = outpost_api::inventory::MAX_LIST_BYTES as u64;
    let run = async {
        let mut listing = Vec::new();
        let mut messages = Vec::new();
        let (mut stdout, mut stderr) = (stdout, stderr);
        // Each pipe is kept up to a bound, then drained so ansible never blocks on a full one.
        let (read, _) = tokio::join!(
            async {
                let read = (&mut stdout).take(cap + 1).read_to_end(&mut listing).await;
                let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
                read
            },
            async {
                let kept = (&mut stderr)
                    .take(MAX_STDERR_SHOWN)
                    .read_to_end(&mut messages)
                    .await;
                let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
                kept
            }
        );
        read?;
        if listing.len() as u64 > cap {
            return Ok((None, messages, listing));
        }
        Ok::<_, std::io::Error>((Some(child.wait().await?), messages, listing))
    };
    let (status, messages, listing) = tokio::time::timeout(how.time_limit, run)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{} took more than {} s to list {}; give it more with --timeout",
                program.display(),
                how.time_limit.as_secs(),
                file.display()
            )
        })?
        .with_context(|| format!("cannot read the output of {}", program.display()))?;
    let messages = String::from_utf8_lossy(&messages);
    let Some(status) = status else {
        bail!(
            "{} printed more than {} bytes for {}",
            program.display(),
            outpost_api::inventory::MAX_LIST_BYTES,
            file.display()
        );
    };
    if !status.success() {
        eprint!("{}", terminal::escape_text(&messages));
        bail!(
            "{} cannot read {} ({status}); its messages are above",
            program.display(),
            file.display()
        );
    }
    let hosts =
        outpost_api::inventory::parse_list(&listing).with_context(|| file.display().to_string())?;
    Ok(Some(hosts))
}

/// The hosts of `file` as Outpost's own INI/YAML reader reads them.
fn own_reader(file: &Path) -> anyhow::Result<Vec<inventory_api::Host>> {
    use std::io::Read as _;
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut text = String::new();
    f.take(MAX_FALLBACK_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", file.display()))?;
    if text.len() as u64 > MAX_FALLBACK_FILE_BYTES {
        bail!(
            "{} is larger than {MAX_FALLBACK_FILE_BYTES} bytes",
            file.display()
        );
    }
    inventory::parse(&file.display().to_string(), &text).with_context(|| file.display().to_string())
}

/// Every server, page by page (an upsert by hostname must see them all).
async fn all_servers(c: &Client) -> anyhow::Result<Vec<ServerView>> {
    let mut query = ServerQuery {
        limit: Some(1000),
        ..Default::default()
    };
    let mut all = Vec::new();
    loop {
        let page = c.servers().list(&query).await?;
        let n = page.items.len();
        all.extend(page.items);
        if n == 0 || all.len() as i64 >= page.total {
            return Ok(all);
        }
        query.offset = Some(all.len() as i64);
    }
}

async fn import(
    c: &Client,
    file: &Path,
    how: &Reader,
    dry_run: bool,
    out: Output,
) -> anyhow::Result<()> {
    let hosts = match ansible_inventory(file, how).await? {
        Some(hosts) => hosts,
        None => {
            eprintln!(
                "note: ansible-inventory not found; reading {} with Outpost's own INI/YAML reader: ranges, group_vars/ and host_vars/ directories and plugins are not supported",
                terminal::escape(&file.display().to_string())
            );
            own_reader(file)?
        }
    };
    // Names are looked up with this machine's resolver, which blocks.
    let records = tokio::task::spawn_blocking(move || {
        hosts
            .iter()
            .map(|h| inventory_api::to_server(h, inventory_api::resolve_system))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    let known = all_servers(c).await?;
    let by_name: BTreeMap<&str, &ServerView> =
        known.iter().map(|s| (s.hostname.as_str(), s)).collect();
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
                        // The inventory is the source of the groups: none there clears them.
                        inventory_groups: Some(r.inventory_groups.clone().unwrap_or_default()),
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
