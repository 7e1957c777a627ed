//! Signing in and out, and the named contexts.

use anyhow::{bail, Context as _};
use outpost_api::client::ApiError;
use outpost_api::*;
use serde_json::{json, Value};

use super::{anonymous, client, password_from_user};
use crate::contexts::{Context, Contexts};
use crate::output::{cell, time, Output};
use crate::{trust, ContextCmd, LoginArgs};

pub async fn login(ctx_name: Option<&str>, a: LoginArgs, out: Output) -> anyhow::Result<()> {
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
    let anon = anonymous(&url, &ca_pem)?;
    let resp = anon
        .auth()
        .login(&LoginRequest {
            username: Some(username.clone()),
            email: None,
            password,
        })
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

pub async fn logout(ctx_name: Option<&str>) -> anyhow::Result<()> {
    let mut all = Contexts::load()?;
    let (name, c) = all.pick(ctx_name)?;
    if let Ok(client) = client(Some(&name)) {
        // A refusal (the token had already expired, say) needs no warning: the token is over
        // either way. Only a controller that never heard of it does.
        if let Err(ApiError::Unreachable { detail, .. }) = client.auth().logout().await {
            let e = crate::terminal::escape(&detail).into_owned();
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

pub fn contexts(c: ContextCmd, out: Output) -> anyhow::Result<()> {
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
