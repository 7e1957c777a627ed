//! `outpost notify` (admins): notification channels, routing rules and the delivery log.
//! A channel's URL (a chat webhook's URL is its credential) and secret are read from a file,
//! standard input or an unechoed prompt — never from an argument — and never shown back.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use outpost_api::client::Client;
use outpost_api::*;
use zeroize::Zeroizing;

use super::credentials::{read_limited, without_final_newline};
use super::{client, prompt_hidden};
use crate::output::{cell, time, Output};
use crate::terminal::escape;

#[derive(Subcommand)]
pub enum NotifyCmd {
    /// Where notifications go: signed webhooks, Slack/Mattermost chat webhooks, email.
    #[command(subcommand)]
    Channel(ChannelCmd),
    /// Which events go to which channels. With no rules, critical and high priority events go
    /// to the channels marked --on-call, the others to those marked --digest.
    #[command(subcommand)]
    Rule(RuleCmd),
    /// The delivery log: every notification, its attempts, status and last error.
    Deliveries {
        /// Only this channel's (name or id).
        #[arg(long)]
        channel: Option<String>,
        /// pending, digest, batched, sent or dead.
        #[arg(long)]
        status: Option<DeliveryStatus>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Subcommand)]
pub enum ChannelCmd {
    /// Add a channel. Its URL and secret come from files (`-` for standard input) or a prompt.
    Add {
        name: String,
        /// webhook, chat or email.
        #[arg(long)]
        kind: ChannelKind,
        /// Gets critical and high priority events when no rules are configured.
        #[arg(long)]
        on_call: bool,
        /// Gets the other events, batched, when no rules are configured.
        #[arg(long)]
        digest: bool,
        #[command(flatten)]
        secrets: ChannelSecretArgs,
        #[command(flatten)]
        email: EmailArgs,
    },
    /// The channels.
    List,
    /// One channel (name or id).
    Show { channel: String },
    /// Delete a channel with its rules and its delivery log.
    #[command(visible_alias = "delete")]
    Rm { channel: String },
    /// Send a test notification through the outbox (see `outpost notify deliveries`).
    Test { channel: String },
}

/// Where a channel's URL and secret come from: files or the terminal, never an argument.
#[derive(Args)]
pub struct ChannelSecretArgs {
    /// Read the webhook URL from this file (`-`: standard input) [default: ask].
    #[arg(long, value_name = "PATH")]
    url_file: Option<PathBuf>,
    /// Read the secret (a webhook's signing secret, the SMTP password) from this file (`-`:
    /// standard input) [webhook default: ask].
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct EmailArgs {
    /// email: the SMTP server (STARTTLS is required).
    #[arg(long, value_name = "HOST")]
    smtp_host: Option<String>,
    #[arg(long, value_name = "PORT", default_value_t = 587)]
    smtp_port: u16,
    /// email: the SMTP login (its password from --secret-file or a prompt).
    #[arg(long, value_name = "USER")]
    smtp_user: Option<String>,
    /// email: the sender address.
    #[arg(long)]
    from: Option<String>,
    /// email: a recipient (repeatable).
    #[arg(long)]
    to: Vec<String>,
    /// email: a PEM file of CA certificates (on the controller) to trust for the SMTP server.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<String>,
}

#[derive(Subcommand)]
pub enum RuleCmd {
    /// Route an event to a channel.
    Add {
        /// job_failed, job_recovered, ticket_opened, ticket_sla, agent_offline,
        /// certificate_expiring.
        #[arg(long)]
        event: NotificationEvent,
        /// The channel (by name).
        #[arg(long)]
        channel: String,
        /// Only events of this server environment.
        #[arg(long)]
        environment: Option<String>,
        /// Only events of at least this priority (low, medium, high, critical).
        #[arg(long)]
        min_priority: Option<TicketPriority>,
        /// Only events of servers tagged (agents labelled) key=value.
        #[arg(long, value_name = "KEY=VALUE")]
        label: Option<String>,
        /// immediate or digest.
        #[arg(long, default_value = "immediate")]
        mode: DeliveryMode,
    },
    /// The rules.
    List,
    /// Delete a rule (by id).
    #[command(visible_alias = "delete")]
    Rm { id: i32 },
}

async fn channel_by(c: &Client, s: &str) -> anyhow::Result<ChannelView> {
    let all = c.notifications().channels().await?;
    all.iter()
        .find(|x| x.name == s)
        .or_else(|| {
            s.parse::<i32>()
                .ok()
                .and_then(|id| all.iter().find(|x| x.id == id))
        })
        .cloned()
        .with_context(|| format!("no channel named {}", escape(s)))
}

/// A channel's URL and secret as read, wiped from memory when dropped.
type UrlAndSecret = (Option<Zeroizing<String>>, Option<Zeroizing<String>>);

fn read(path: &Path, limit: usize) -> anyhow::Result<Zeroizing<String>> {
    Ok(without_final_newline(read_limited(path, limit)?))
}

fn secrets(kind: ChannelKind, a: &ChannelSecretArgs, name: &str) -> anyhow::Result<UrlAndSecret> {
    let stdin = |p: &Option<PathBuf>| p.as_deref() == Some(Path::new("-"));
    if stdin(&a.url_file) && stdin(&a.secret_file) {
        bail!("standard input can give the URL or the secret, not both: put one in a file");
    }
    let otherwise = "give --url-file/--secret-file PATH (or - for standard input)";
    let url = match (kind, &a.url_file) {
        (ChannelKind::Email, Some(_)) => bail!("email channels have no URL"),
        (ChannelKind::Email, None) => None,
        (_, Some(p)) => Some(read(p, MAX_URL_BYTES)?),
        (_, None) => Some(Zeroizing::new(prompt_hidden(
            &format!("URL of channel {name}: "),
            otherwise,
        )?)),
    };
    let secret = match (kind, &a.secret_file) {
        (_, Some(p)) => Some(read(p, MAX_CHANNEL_SECRET_BYTES)?),
        (ChannelKind::Webhook, None) => Some(Zeroizing::new(prompt_hidden(
            &format!("Signing secret of channel {name}: "),
            otherwise,
        )?)),
        _ => None,
    };
    Ok((url, secret))
}

const HEADER: [&str; 6] = ["id", "name", "kind", "on-call", "digest", "target"];

fn row(v: &ChannelView) -> Vec<String> {
    let target = match &v.email {
        Some(e) => format!("{} via {}:{}", e.to.join(", "), e.host, e.port),
        None => cell(&v.url),
    };
    vec![
        v.id.to_string(),
        v.name.clone(),
        v.kind.to_string(),
        v.on_call.to_string(),
        v.digest.to_string(),
        target,
    ]
}

pub async fn notify(ctx: Option<&str>, cmd: NotifyCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    match cmd {
        NotifyCmd::Channel(ChannelCmd::Add {
            name,
            kind,
            on_call,
            digest,
            secrets: s,
            email,
        }) => {
            let (mut url, mut secret) = secrets(kind, &s, &name)?;
            let email = match (kind, email.smtp_host) {
                (ChannelKind::Email, Some(host)) => Some(EmailSettings {
                    host,
                    port: email.smtp_port,
                    from: email.from.context("an email channel needs --from")?,
                    to: email.to,
                    username: email.smtp_user,
                    ca_file: email.ca_file,
                }),
                (ChannelKind::Email, None) => bail!("an email channel needs --smtp-host"),
                (_, Some(_)) => bail!("--smtp-host is for email channels"),
                (_, None) => None,
            };
            let req = NewChannelRequest {
                name,
                kind,
                url: url.as_mut().map(|u| std::mem::take(&mut **u)),
                email,
                on_call,
                digest,
                secret: secret.as_mut().map(|s| std::mem::take(&mut **s)),
            };
            let v = c.notifications().create_channel(&req).await?;
            if !out.json(&v) {
                out.table(&HEADER, vec![row(&v)]);
            }
        }
        NotifyCmd::Channel(ChannelCmd::List) => {
            let all = c.notifications().channels().await?;
            if !out.json(&all) {
                out.table(&HEADER, all.iter().map(row).collect());
            }
        }
        NotifyCmd::Channel(ChannelCmd::Show { channel }) => {
            let v = channel_by(&c, &channel).await?;
            if !out.json(&v) {
                println!("{} ({})", escape(&v.name), v.kind);
                println!("  on-call: {}  digest: {}", v.on_call, v.digest);
                if let Some(u) = &v.url {
                    println!("  url:     {}", escape(u));
                }
                if let Some(e) = &v.email {
                    println!(
                        "  smtp:    {}:{} (STARTTLS){}",
                        escape(&e.host),
                        e.port,
                        e.username
                            .as_ref()
                            .map(|u| format!(" as {}", escape(u)))
                            .unwrap_or_default()
                    );
                    println!("  from:    {}", escape(&e.from));
                    println!("  to:      {}", escape(&e.to.join(", ")));
                }
                println!("  secret:  {}", if v.secret_set { "set" } else { "none" });
                println!("  updated: {}", time(&Some(v.updated_at)));
            }
        }
        NotifyCmd::Channel(ChannelCmd::Rm { channel }) => {
            let v = channel_by(&c, &channel).await?;
            let r = c.notifications().delete_channel(v.id).await?;
            if !out.json(&r) {
                println!("channel {} deleted", escape(&v.name));
            }
        }
        NotifyCmd::Channel(ChannelCmd::Test { channel }) => {
            let v = channel_by(&c, &channel).await?;
            let r = c.notifications().test_channel(v.id).await?;
            if !out.json(&r) {
                println!("{} (delivery {})", escape(&r.message), r.delivery_id);
            }
        }
        NotifyCmd::Rule(RuleCmd::Add {
            event,
            channel,
            environment,
            min_priority,
            label,
            mode,
        }) => {
            let req = NewRuleRequest {
                event,
                environment,
                min_priority,
                routing_label: label,
                channel,
                mode,
            };
            let r = c.notifications().create_rule(&req).await?;
            if !out.json(&r) {
                println!(
                    "rule {} added: {} → {} ({})",
                    r.id,
                    r.event,
                    escape(&r.channel),
                    r.mode
                );
            }
        }
        NotifyCmd::Rule(RuleCmd::List) => {
            let rules = c.notifications().rules().await?;
            if !out.json(&rules) {
                let rows = rules
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            r.event.to_string(),
                            cell(&r.environment),
                            cell(&r.min_priority),
                            cell(&r.routing_label),
                            r.channel.clone(),
                            r.mode.to_string(),
                        ]
                    })
                    .collect();
                out.table(
                    &[
                        "id",
                        "event",
                        "environment",
                        "min priority",
                        "label",
                        "channel",
                        "mode",
                    ],
                    rows,
                );
            }
        }
        NotifyCmd::Rule(RuleCmd::Rm { id }) => {
            let r = c.notifications().delete_rule(id).await?;
            if !out.json(&r) {
                println!("rule {id} deleted");
            }
        }
        NotifyCmd::Deliveries {
            channel,
            status,
            limit,
        } => {
            let channel_id = match channel {
                Some(ch) => Some(channel_by(&c, &ch).await?.id),
                None => None,
            };
            let q = DeliveryQuery {
                channel_id,
                status,
                limit: Some(limit),
                offset: None,
            };
            let page = c.notifications().deliveries(&q).await?;
            if !out.json(&page) {
                let rows = page
                    .items
                    .iter()
                    .map(|d| {
                        vec![
                            d.delivery_id.clone(),
                            d.channel.clone(),
                            d.event.to_string(),
                            d.status.to_string(),
                            d.attempts.to_string(),
                            time(&Some(d.created_at)),
                            d.summary.clone(),
                            cell(&d.last_error),
                        ]
                    })
                    .collect();
                out.table(
                    &[
                        "delivery",
                        "channel",
                        "event",
                        "status",
                        "attempts",
                        "created",
                        "summary",
                        "last error",
                    ],
                    rows,
                );
            }
        }
    }
    Ok(())
}
