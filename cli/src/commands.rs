//! One function per subcommand, each a few API calls and a table (or JSON).

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::{bail, Context as _};
use outpost_api::client::Client;
use outpost_api::*;
use serde_json::{json, Value};

use crate::contexts::{Context, Contexts};
use crate::output::{cell, labels, time, Output};
use crate::{
    follow, inventory, trust, AgentCmd, AuditCmd, Cli, Command, ContextCmd, JobCmd, LoginArgs,
    PlaybookCmd, RunArgs, ServerCmd, TicketCmd, UserCmd,
};

/// Runs a parsed command; the exit code on success.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let out = Output::new(cli.json, cli.output.as_deref() == Some("wide"));
    let ctx = cli.context.as_deref();
    match cli.command {
        Command::Login(a) => login(ctx, a, out).await.map(|_| 0),
        Command::Logout => logout(ctx).await.map(|_| 0),
        Command::Whoami => {
            let me: Whoami = client(ctx)?.get("/api/v1/auth/whoami").await?;
            if !out.json(&me) {
                println!(
                    "{} ({}), token valid until {}",
                    me.user.username,
                    me.user.role,
                    me.token_expires_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
            Ok(0)
        }
        Command::Context(c) => contexts(c, out).map(|_| 0),
        Command::Server(c) => servers(ctx, c, out).await.map(|_| 0),
        Command::Playbook(c) => playbooks(ctx, c, out).await.map(|_| 0),
        Command::Job(c) => jobs(ctx, c, out).await,
        Command::Ticket(c) => tickets(ctx, c, out).await.map(|_| 0),
        Command::Agent(c) => agents(ctx, c, out).await.map(|_| 0),
        Command::User(c) => users(ctx, c, out).await.map(|_| 0),
        Command::Audit(c) => audit(ctx, c, out).await.map(|_| 0),
        Command::Completions { .. } => Ok(0),
    }
}

/// A client of the chosen context, with its token.
fn client(name: Option<&str>) -> anyhow::Result<Client> {
    let (name, c) = Contexts::load()?.pick(name)?;
    let token = c
        .token
        .clone()
        .with_context(|| format!("context '{name}' has no token: run `outpost login`"))?;
    Ok(Client::new(&c.url, &c.ca_pem)?.with_token(token))
}

fn password_from_user(prompt: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("OUTPOST_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask the password on: set OUTPOST_PASSWORD");
    }
    Ok(rpassword::prompt_password(prompt)?)
}

async fn login(ctx_name: Option<&str>, a: LoginArgs, out: Output) -> anyhow::Result<()> {
    let mut all = Contexts::load()?;
    let existing = ctx_name
        .or(a.name.as_deref())
        .or(all.current.as_deref())
        .and_then(|n| all.contexts.get(n).cloned());
    let url = match (&a.url, &existing) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, Some(c)) => c.url.clone(),
        (None, None) => bail!("name the controller: outpost login https://ctl.example.com:8443 --ca-fingerprint <sha256>"),
    };
    if !url.starts_with("https://") {
        bail!("the controller's address must start with https:// (got {url})");
    }
    let ca_pem = match (&a.ca_file, &a.ca_fingerprint, &existing) {
        (Some(f), _, _) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the CA file {}", f.display()))?,
        (None, Some(fp), _) => trust::fetch_pinned_ca(&url, fp).await?,
        (None, None, Some(c)) if c.url == url => c.ca_pem.clone(),
        _ => bail!("how should the controller be trusted? give --ca-fingerprint <sha256> (printed by outpost-controller init) or --ca-file ca.pem"),
    };
    let username = a
        .username
        .clone()
        .or_else(|| existing.as_ref().and_then(|c| c.username.clone()))
        .unwrap_or_else(|| "admin".into());
    let password = password_from_user(&format!("Password for {username}: "))?;
    let anon = Client::new(&url, &ca_pem)?;
    let resp: LoginResponse = anon
        .post(
            "/api/v1/auth/login",
            &json!({"username": username, "password": password}),
        )
        .await?;
    let name = ctx_name
        .map(str::to_owned)
        .or(a.name.clone())
        .unwrap_or_else(|| {
            url.trim_start_matches("https://")
                .split([':', '/'])
                .next()
                .unwrap_or("default")
                .to_owned()
        });
    all.contexts.insert(
        name.clone(),
        Context {
            url,
            ca_pem,
            username: Some(username.clone()),
            token: Some(resp.token.clone()),
            token_expires_at: Some(resp.expires_at),
        },
    );
    all.current = Some(name.clone());
    all.save()?;
    if !out.json(&resp.user) {
        println!(
            "logged in to '{name}' as {username} ({}); token kept in {}",
            resp.user.role,
            Contexts::path()?.display()
        );
        if resp.user.must_change_password {
            println!("your password must be changed first: outpost user passwd");
        }
    }
    Ok(())
}

async fn logout(ctx_name: Option<&str>) -> anyhow::Result<()> {
    let mut all = Contexts::load()?;
    let (name, c) = all.pick(ctx_name)?;
    if let Ok(client) = client(Some(&name)) {
        let resp = client
            .request(reqwest::Method::POST, "/api/v1/auth/logout")
            .send()
            .await;
        if let Err(e) = resp {
            eprintln!("warning: the controller was not told ({e}); the token is forgotten here");
        }
    }
    all.contexts.insert(
        name.clone(),
        Context {
            token: None,
            token_expires_at: None,
            ..c
        },
    );
    all.save()?;
    println!("logged out of '{name}'");
    Ok(())
}

fn contexts(c: ContextCmd, out: Output) -> anyhow::Result<()> {
    let mut all = Contexts::load()?;
    match c {
        ContextCmd::List => {
            if out.json {
                let list: Vec<Value> = all
                    .contexts
                    .iter()
                    .map(|(n, c)| json!({"name": n, "url": c.url, "username": c.username, "current": all.current.as_deref() == Some(n), "logged_in": c.token.is_some()}))
                    .collect();
                out.json(&list);
                return Ok(());
            }
            let rows = all
                .contexts
                .iter()
                .map(|(n, c)| {
                    vec![
                        if all.current.as_deref() == Some(n) {
                            "*".into()
                        } else {
                            String::new()
                        },
                        n.clone(),
                        c.url.clone(),
                        cell(&c.username),
                        if c.token.is_some() {
                            time(&c.token_expires_at)
                        } else {
                            "logged out".into()
                        },
                    ]
                })
                .collect();
            out.table(&["", "name", "url", "user", "token until"], rows);
        }
        ContextCmd::Use { name } => {
            if !all.contexts.contains_key(&name) {
                bail!("no context named '{name}': `outpost context list` shows them");
            }
            all.current = Some(name.clone());
            all.save()?;
            println!("using '{name}'");
        }
    }
    Ok(())
}

fn pairs(items: &[String], what: &str) -> anyhow::Result<JsonObject> {
    let mut m = JsonObject::new();
    for i in items {
        let (k, v) = i
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("{what} '{i}' is not key=value"))?;
        m.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(m)
}

/// A server named by hostname or id.
async fn server_by(c: &Client, s: &str) -> anyhow::Result<ServerView> {
    if let Ok(id) = s.parse::<i64>() {
        return Ok(c.get(&format!("/api/v1/servers/{id}")).await?);
    }
    let page: Page<ServerView> = c.get("/api/v1/servers?limit=1000").await?;
    let mut offset = 0;
    let mut page = page;
    loop {
        if let Some(found) = page.items.iter().find(|x| x.hostname == s) {
            return Ok(found.clone());
        }
        offset += page.items.len() as i64;
        if offset >= page.total || page.items.is_empty() {
            bail!("no server named {s}");
        }
        page = c
            .get(&format!("/api/v1/servers?limit=1000&offset={offset}"))
            .await?;
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
                out.status(if s.is_active { "active" } else { "inactive" }),
            ];
            if out.wide {
                row.push(format!("{}@:{}", s.ssh_user, s.ssh_port));
                row.push(cell(&s.ssh_key_path));
            }
            row
        })
        .collect()
}

async fn servers(ctx: Option<&str>, cmd: ServerCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let header: &[&str] = if out.wide {
        &["id", "hostname", "ip", "env", "tags", "state", "ssh", "key"]
    } else {
        &["id", "hostname", "ip", "env", "tags", "state"]
    };
    match cmd {
        ServerCmd::Add(f) => {
            let tags = pairs(&f.tags, "tag")?;
            let s: ServerView = c
                .post(
                    "/api/v1/servers",
                    &NewServerRequest {
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
                    },
                )
                .await?;
            if !out.json(&s) {
                out.table(header, server_rows(&out, &[s]));
            }
        }
        ServerCmd::List { env, selector, all } => {
            let mut q = vec!["limit=1000".to_owned()];
            if let Some(e) = env {
                q.push(format!("environment={}", urlencode(&e)));
            }
            if let Some(s) = selector {
                q.push(format!("tag={}", urlencode(&s)));
            }
            if !all {
                q.push("active=true".into());
            }
            let page: Page<ServerView> = c.get(&format!("/api/v1/servers?{}", q.join("&"))).await?;
            if !out.json(&page) {
                out.table(header, server_rows(&out, &page.items));
            }
        }
        ServerCmd::Show { server } => {
            let s = server_by(&c, &server).await?;
            if !out.json(&s) {
                println!("{}", serde_json::to_string_pretty(&s)?);
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
            let s: ServerView = c
                .patch(&format!("/api/v1/servers/{}", s.id), &patch)
                .await?;
            if !out.json(&s) {
                out.table(header, server_rows(&out, &[s]));
            }
        }
        ServerCmd::Deactivate { server } => {
            let s = server_by(&c, &server).await?;
            let s: ServerView = c
                .patch(
                    &format!("/api/v1/servers/{}", s.id),
                    &json!({"is_active": false}),
                )
                .await?;
            if !out.json(&s) {
                println!("server {} deactivated", s.hostname);
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
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let mut records = Vec::new();
    for h in &hosts {
        records.push(inventory::to_server(h).map_err(|e| anyhow::anyhow!(e))?);
    }
    let known: Page<ServerView> = c.get("/api/v1/servers?limit=1000").await?;
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
                    let _: ServerView = c
                        .patch(&format!("/api/v1/servers/{}", s.id), &patch)
                        .await?;
                }
                None => {
                    let _: ServerView = c.post("/api/v1/servers", &r).await?;
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

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn playbook_by(c: &Client, p: &str) -> anyhow::Result<PlaybookView> {
    if let Ok(id) = p.parse::<i64>() {
        return Ok(c.get(&format!("/api/v1/playbooks/{id}")).await?);
    }
    let page: Page<PlaybookView> = c.get("/api/v1/playbooks?limit=1000").await?;
    let found = page
        .items
        .into_iter()
        .find(|x| x.name == p)
        .with_context(|| format!("no playbook named {p}"))?;
    Ok(c.get(&format!("/api/v1/playbooks/{}", found.id)).await?)
}

async fn playbooks(ctx: Option<&str>, cmd: PlaybookCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let show = |p: &PlaybookView| {
        vec![
            p.id.to_string(),
            p.name.clone(),
            p.file_hash[..12.min(p.file_hash.len())].to_owned(),
            out.status(if p.is_active { "active" } else { "inactive" }),
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
            let p: PlaybookView = c
                .post(
                    "/api/v1/playbooks",
                    &NewPlaybookRequest {
                        name,
                        content,
                        description,
                        tags: None,
                        variables: None,
                    },
                )
                .await?;
            if !out.json(&p) {
                out.table(&header, vec![show(&p)]);
            }
        }
        PlaybookCmd::Update { playbook, file } => {
            let p = playbook_by(&c, &playbook).await?;
            let content = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let p: PlaybookView = c
                .patch(
                    &format!("/api/v1/playbooks/{}", p.id),
                    &json!({"content": content}),
                )
                .await?;
            if !out.json(&p) {
                out.table(&header, vec![show(&p)]);
            }
        }
        PlaybookCmd::List => {
            let page: Page<PlaybookView> = c.get("/api/v1/playbooks?limit=1000").await?;
            if !out.json(&page) {
                out.table(&header, page.items.iter().map(show).collect());
            }
        }
        PlaybookCmd::Show { playbook } => {
            let p = playbook_by(&c, &playbook).await?;
            if !out.json(&p) {
                println!("# {} (sha256 {})", p.name, p.file_hash);
                print!("{}", p.content.clone().unwrap_or_default());
            }
        }
    }
    Ok(())
}

fn extra_vars(items: &[String]) -> anyhow::Result<Option<JsonObject>> {
    let mut vars = JsonObject::new();
    for item in items {
        if let Some(path) = item.strip_prefix('@') {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            let value: Value = if path.ends_with(".json") {
                serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?
            } else {
                inventory::yaml_document(&text).map_err(|e| anyhow::anyhow!("{path}: {e}"))?
            };
            match value {
                Value::Object(m) => vars.extend(m),
                _ => bail!("{path} must hold a mapping of variables"),
            }
        } else {
            let (k, v) = item
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("extra var '{item}' is not key=value or @file"))?;
            vars.insert(k.to_owned(), Value::String(v.to_owned()));
        }
    }
    Ok((!vars.is_empty()).then_some(vars))
}

fn split_tags(t: &Option<String>) -> Vec<String> {
    t.as_deref()
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn job_rows(out: &Output, jobs: &[JobView]) -> Vec<Vec<String>> {
    jobs.iter()
        .map(|j| {
            let mut row = vec![
                j.id.clone(),
                out.status(j.status.as_str()),
                j.playbook.name.clone(),
                j.server.name.clone(),
                time(&Some(j.created_at)),
            ];
            if out.wide {
                row.push(
                    j.agent
                        .as_ref()
                        .map(|a| a.name.clone())
                        .unwrap_or_else(|| "-".into()),
                );
                row.push(cell(&j.exit_code));
                row.push(
                    j.pending_reason
                        .clone()
                        .or_else(|| j.error_message.clone())
                        .unwrap_or_else(|| "-".into()),
                );
            }
            row
        })
        .collect()
}

async fn jobs(ctx: Option<&str>, cmd: JobCmd, out: Output) -> anyhow::Result<u8> {
    let c = client(ctx)?;
    let header: &[&str] = if out.wide {
        &[
            "job", "status", "playbook", "server", "created", "agent", "exit", "reason",
        ]
    } else {
        &["job", "status", "playbook", "server", "created"]
    };
    match cmd {
        JobCmd::Run(a) => return run_job(&c, a, out).await,
        JobCmd::List { status, limit } => {
            let mut path = format!("/api/v1/jobs?limit={limit}");
            if let Some(s) = status {
                path.push_str(&format!("&status={}", urlencode(&s)));
            }
            let page: Page<JobView> = c.get(&path).await?;
            if !out.json(&page) {
                out.table(header, job_rows(&out, &page.items));
            }
        }
        JobCmd::Show { job } => {
            let j: JobView = c.get(&format!("/api/v1/jobs/{job}")).await?;
            if !out.json(&j) {
                println!("{}", serde_json::to_string_pretty(&j)?);
            }
        }
        JobCmd::Logs {
            job,
            follow: true,
            since_line,
        } => {
            let end = follow::follow(&c, &job, since_line, None).await?;
            return Ok(follow::exit_code(&[end.status]));
        }
        JobCmd::Logs {
            job,
            follow: false,
            since_line,
        } => {
            let mut after = since_line;
            loop {
                let page: LogPage = c
                    .get(&format!("/api/v1/jobs/{job}/logs?after={after}&limit=5000"))
                    .await?;
                for l in &page.lines {
                    if out.json {
                        println!("{}", serde_json::to_string(l)?);
                    } else {
                        println!("{}", l.content);
                    }
                }
                if page.lines.is_empty() {
                    break;
                }
                after = page.next_after;
            }
        }
        JobCmd::Cancel { job } => {
            let r: CancelResponse = c
                .post(&format!("/api/v1/jobs/{job}/cancel"), &json!({}))
                .await?;
            if !out.json(&r) {
                println!(
                    "job {}: {}",
                    r.job.id,
                    if r.outcome == "cancelled" {
                        "cancelled"
                    } else {
                        "cancel requested; the agent stops it"
                    }
                );
            }
        }
    }
    Ok(0)
}

async fn run_job(c: &Client, a: RunArgs, out: Output) -> anyhow::Result<u8> {
    let playbook = match a.playbook.parse::<i64>() {
        Ok(id) => IdOrName::Id(id),
        Err(_) => IdOrName::Name(a.playbook.clone()),
    };
    let (servers, filter) = match (
        a.servers.is_empty(),
        a.env.is_some() || !a.selector.is_empty(),
    ) {
        (false, false) => (
            Some(
                a.servers
                    .iter()
                    .map(|s| match s.parse::<i64>() {
                        Ok(id) => IdOrName::Id(id),
                        Err(_) => IdOrName::Name(s.clone()),
                    })
                    .collect(),
            ),
            None,
        ),
        (true, true) => {
            let tags = pairs(&a.selector, "selector")?
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                .collect();
            (
                None,
                Some(ServerSelector {
                    environment: a.env.clone(),
                    tags,
                }),
            )
        }
        (false, true) => {
            bail!("choose servers either by --server or by --env/--selector, not both")
        }
        (true, false) => bail!("which servers? give --server NAME, --env ENV or -l key=value"),
    };
    let req = LaunchRequest {
        playbook,
        servers,
        filter,
        extra_vars: extra_vars(&a.extra_vars)?,
        tags: split_tags(&a.tags),
        skip_tags: split_tags(&a.skip_tags),
        check: a.check,
        diff: a.diff,
        verbosity: a.verbose,
    };
    let launched: LaunchResponse = c.post("/api/v1/jobs", &req).await?;
    if !a.follow {
        if !out.json(&launched) {
            let header: &[&str] = &["job", "status", "playbook", "server", "created"];
            out.table(header, job_rows(&out, &launched.jobs));
        }
        return Ok(0);
    }
    let several = launched.jobs.len() > 1;
    let mut tasks = Vec::new();
    for j in &launched.jobs {
        let (c, id, server) = (c.clone(), j.id.clone(), j.server.name.clone());
        tasks.push(tokio::spawn(async move {
            let prefix = several.then_some(server.as_str());
            follow::follow(&c, &id, 0, prefix)
                .await
                .map(|e| (server, e))
        }));
    }
    let mut statuses = Vec::new();
    let mut summary = Vec::new();
    for t in tasks {
        let (server, end) = t.await.context("a follower stopped")??;
        statuses.push(end.status);
        summary.push((server, end));
    }
    if several || out.json {
        if out.json {
            out.json(
                &summary
                    .iter()
                    .map(|(s, e)| json!({"server": s, "end": e}))
                    .collect::<Vec<_>>(),
            );
        } else {
            for (s, e) in &summary {
                eprintln!(
                    "{s}: {}{}",
                    e.status,
                    e.exit_code
                        .map(|c| format!(" (exit {c})"))
                        .unwrap_or_default()
                );
            }
        }
    } else if let Some((_, e)) = summary.first() {
        eprintln!("job {}: {}", launched.jobs[0].id, e.status);
    }
    Ok(follow::exit_code(&statuses))
}

async fn tickets(ctx: Option<&str>, cmd: TicketCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let rows = |ts: &[TicketView]| -> Vec<Vec<String>> {
        ts.iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    out.status(t.status.as_str()),
                    out.status(t.priority.as_str()),
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
            let mut q = vec!["limit=1000".to_owned()];
            if let Some(s) = status {
                q.push(format!("status={}", urlencode(&s)));
            }
            if let Some(p) = priority {
                q.push(format!("priority={}", urlencode(&p)));
            }
            let page: Page<TicketView> = c.get(&format!("/api/v1/tickets?{}", q.join("&"))).await?;
            if !out.json(&page) {
                out.table(&header, rows(&page.items));
            }
        }
        TicketCmd::Show { ticket } => {
            let t: TicketView = c.get(&format!("/api/v1/tickets/{ticket}")).await?;
            if !out.json(&t) {
                println!(
                    "{} [{} / {}] {}\njob {}\n\n{}",
                    t.id,
                    t.status,
                    t.priority,
                    t.title,
                    t.job_id,
                    t.description.clone().unwrap_or_default()
                );
            }
        }
        TicketCmd::Update {
            ticket,
            status,
            priority,
            title,
        } => {
            let t: TicketView = c
                .patch(
                    &format!("/api/v1/tickets/{ticket}"),
                    &patch(status, priority, title)?,
                )
                .await?;
            if !out.json(&t) {
                out.table(&header, rows(&[t]));
            }
        }
        TicketCmd::Resolve { ticket } => {
            let t: TicketView = c
                .patch(
                    &format!("/api/v1/tickets/{ticket}"),
                    &json!({"status": "resolved"}),
                )
                .await?;
            if !out.json(&t) {
                println!("ticket {} resolved", t.id);
            }
        }
    }
    Ok(())
}

async fn agents(ctx: Option<&str>, cmd: AgentCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    match cmd {
        AgentCmd::List => {
            let page: Page<AgentView> = c.get("/api/v1/agents?limit=1000").await?;
            if !out.json(&page) {
                let rows = page
                    .items
                    .iter()
                    .map(|a| {
                        vec![
                            a.id.to_string(),
                            a.name.clone(),
                            out.status(if a.revoked {
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
            let id = match agent.parse::<i64>() {
                Ok(id) => id,
                Err(_) => {
                    let page: Page<AgentView> = c.get("/api/v1/agents?limit=1000").await?;
                    page.items
                        .iter()
                        .find(|a| a.name == agent || a.uuid == agent)
                        .map(|a| i64::from(a.id))
                        .with_context(|| format!("no agent named {agent}"))?
                }
            };
            let a: AgentView = c
                .post(&format!("/api/v1/agents/{id}/revoke"), &json!({}))
                .await?;
            if !out.json(&a) {
                println!(
                    "agent {} revoked: its sessions are dropped and it cannot connect again",
                    a.name
                );
            }
        }
        AgentCmd::Token {
            name,
            labels,
            ttl_hours,
        } => {
            let labels = pairs(&labels, "label")?
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let t: EnrollmentTokenCreated = c
                .post(
                    "/api/v1/enrollment-tokens",
                    &NewEnrollmentTokenRequest {
                        name,
                        labels,
                        ttl_hours: Some(ttl_hours),
                    },
                )
                .await?;
            if !out.json(&t) {
                println!("{}", t.token);
                eprintln!(
                    "one-time token for agent '{}', valid until {}; on the bastion:\n  outpost-agent enroll --controller HOST:7444 --token '<token>'",
                    t.record.name,
                    t.record.expires_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
    }
    Ok(())
}

async fn user_by(c: &Client, u: &str) -> anyhow::Result<UserView> {
    if let Ok(id) = u.parse::<i64>() {
        return Ok(c.get(&format!("/api/v1/users/{id}")).await?);
    }
    let page: Page<UserView> = c.get("/api/v1/users?limit=1000").await?;
    page.items
        .into_iter()
        .find(|x| x.username == u)
        .with_context(|| format!("no user named {u}"))
}

async fn users(ctx: Option<&str>, cmd: UserCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let rows = |us: &[UserView]| -> Vec<Vec<String>> {
        us.iter()
            .map(|u| {
                vec![
                    u.id.to_string(),
                    u.username.clone(),
                    u.email.clone(),
                    u.role.to_string(),
                    out.status(if u.is_active { "active" } else { "inactive" }),
                    time(&u.last_login),
                ]
            })
            .collect()
    };
    let header = ["id", "username", "email", "role", "state", "last login"];
    match cmd {
        UserCmd::List => {
            let page: Page<UserView> = c.get("/api/v1/users?limit=1000").await?;
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
            let u: UserView = c
                .post(
                    "/api/v1/users",
                    &NewUserRequest {
                        username,
                        email,
                        password,
                        role: Some(role.parse()?),
                    },
                )
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
            let u: UserView = c.patch(&format!("/api/v1/users/{}", u.id), &patch).await?;
            if !out.json(&u) {
                out.table(&header, rows(&[u]));
            }
        }
        UserCmd::Passwd { user } => {
            let me: Whoami = c.get("/api/v1/auth/whoami").await?;
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
            let u: UserView = c
                .post(
                    &format!("/api/v1/users/{}/password", target.id),
                    &PasswordChangeRequest {
                        current_password: current,
                        new_password,
                    },
                )
                .await?;
            if !out.json(&u) {
                println!("password of {} changed", u.username);
            }
        }
    }
    Ok(())
}

async fn audit(ctx: Option<&str>, cmd: AuditCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let AuditCmd::List {
        action,
        resource_type,
        limit,
    } = cmd;
    let mut q = vec![format!("limit={limit}")];
    if let Some(a) = action {
        q.push(format!("action={}", urlencode(&a)));
    }
    if let Some(r) = resource_type {
        q.push(format!("resource_type={}", urlencode(&r)));
    }
    let page: Page<AuditView> = c.get(&format!("/api/v1/audit?{}", q.join("&"))).await?;
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
    }
    Ok(())
}
