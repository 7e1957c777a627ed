//! One function per subcommand, each a few API calls and a table (or JSON): [`session`]
//! (login, logout, contexts), [`servers`] (and inventory imports), [`playbooks`], [`projects`],
//! [`credentials`] (secrets read from files or prompts), [`templates`] (surveys answered),
//! [`jobs`] (launches and live logs), [`runs`] (rollouts, budgets, relaunch), [`schedules`], [`blackouts`] (windows when jobs do not start),
//! [`admin`] (tickets, agents, users, audit).

mod admin;
pub mod blackouts;
mod credentials;
mod jobs;
pub(crate) mod notify;
mod playbooks;
mod projects;
pub(crate) mod runs;
pub mod schedules;
mod servers;
mod session;
mod templates;

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
        Command::Credential(c) => credentials::credentials(ctx, c, out).await.map(|_| 0),
        Command::Schedule(c) => schedules::schedules(ctx, c, out).await.map(|_| 0),
        Command::Blackout(c) => blackouts::blackouts(ctx, c, out).await.map(|_| 0),
        Command::Template(c) => templates::templates(ctx, c, out).await,
        Command::Notify(c) => notify::notify(ctx, c, out).await.map(|_| 0),
        Command::Job(c) => jobs::jobs(ctx, c, out).await,
        Command::Run(c) => runs::runs(ctx, c, out).await,
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

/// A user's password: `OUTPOST_PASSWORD`, else asked for on the terminal.
pub(crate) fn password_from_user(prompt: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("OUTPOST_PASSWORD") {
        return Ok(p);
    }
    prompt_hidden(prompt, "set OUTPOST_PASSWORD")
}

/// Asks on the terminal without echoing what is typed; without a terminal, refuses and says
/// what to do instead (`otherwise`).
pub(crate) fn prompt_hidden(prompt: &str, otherwise: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask on: {otherwise}");
    }
    Ok(rpassword::prompt_password(prompt)?)
}

/// An attachment's change in a patch: a name attaches that credential, `detach` sends `""`
/// (which the API reads as "none any more"), neither leaves it as it is.
pub(crate) fn detach_or(name: Option<String>, detach: bool) -> Option<String> {
    if detach {
        Some(String::new())
    } else {
        name
    }
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
