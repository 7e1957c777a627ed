//! One function per subcommand, each a few API calls and a table (or JSON): [`session`]
//! (login, logout, contexts), [`servers`] (and inventory imports), [`playbooks`], [`projects`], [`jobs`]
//! (runs and live logs), [`admin`] (tickets, agents, users, audit).

mod admin;
mod jobs;
mod playbooks;
mod projects;
mod servers;
mod session;

use std::io::IsTerminal;

use anyhow::{bail, Context as _};
use outpost_api::client::Client;
use outpost_api::*;
use serde_json::Value;

use crate::contexts::Contexts;
use crate::output::Output;
use crate::terminal;
use crate::{Cli, Command};

/// Runs a parsed command; the exit code on success.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let out = Output::new(cli.json, cli.output.as_deref() == Some("wide"));
    let ctx = cli.context.as_deref();
    match cli.command {
        Command::Login(a) => session::login(ctx, a, out).await.map(|_| 0),
        Command::Logout => session::logout(ctx).await.map(|_| 0),
        Command::Whoami => {
            let me = client(ctx)?.auth().whoami().await?;
            if !out.json(&me) {
                println!(
                    "{} ({}), token valid until {}",
                    terminal::escape(&me.user.username),
                    me.user.role,
                    me.token_expires_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
            Ok(0)
        }
        Command::Context(c) => session::contexts(c, out).map(|_| 0),
        Command::Server(c) => servers::servers(ctx, c, out).await.map(|_| 0),
        Command::Playbook(c) => playbooks::playbooks(ctx, c, out).await.map(|_| 0),
        Command::Project(c) => projects::projects(ctx, c, out).await,
        Command::Job(c) => jobs::jobs(ctx, c, out).await,
        Command::Ticket(c) => admin::tickets(ctx, c, out).await.map(|_| 0),
        Command::Agent(c) => admin::agents(ctx, c, out).await.map(|_| 0),
        Command::User(c) => admin::users(ctx, c, out).await.map(|_| 0),
        Command::Audit(c) => admin::audit(ctx, c, out).await.map(|_| 0),
        Command::Completions { .. } => Ok(0),
    }
}

/// One page of everything a listing holds, as far as the API pages go (it caps `limit` there).
pub(crate) const ALL: PageQuery = PageQuery {
    limit: Some(1000),
    offset: None,
};

/// A client of the chosen context, with its token.
pub(crate) fn client(name: Option<&str>) -> anyhow::Result<Client> {
    let (name, c) = Contexts::load()?.pick(name)?;
    let token = c
        .token
        .clone()
        .with_context(|| format!("context '{name}' has no token: run `outpost login`"))?;
    Ok(anonymous(&c.url, &c.ca_pem)?.with_token(token))
}

/// A client of `url` trusting `ca_pem`, without a token; it names itself [`crate::USER_AGENT`].
pub(crate) fn anonymous(url: &str, ca_pem: &str) -> anyhow::Result<Client> {
    Ok(Client::new(url, ca_pem)?.with_user_agent(crate::USER_AGENT))
}

pub(crate) fn password_from_user(prompt: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("OUTPOST_PASSWORD") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask the password on: set OUTPOST_PASSWORD");
    }
    Ok(rpassword::prompt_password(prompt)?)
}

pub(crate) fn pairs(items: &[String], what: &str) -> anyhow::Result<JsonObject> {
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
