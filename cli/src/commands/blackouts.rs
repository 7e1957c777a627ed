//! Blackout windows, when jobs of an environment must not start: `outpost blackout
//! list|create|rm`.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use outpost_api::*;

use super::{client, ALL};
use crate::output::{time, Output};
use crate::terminal::escape;

#[derive(Subcommand)]
pub enum BlackoutCmd {
    /// The blackout windows, and whether each is in force now.
    List,
    /// Create a blackout window (admins): weekly (--from "Fri 16:00" --to "Mon 08:00"), one-off
    /// (--starts-at, --ends-at), or both.
    ///
    /// Example: outpost blackout create weekend-freeze --environment production
    /// --from "Fri 16:00" --to "Mon 08:00" --timezone Europe/Berlin --manual
    Create {
        name: String,
        /// Only servers of this environment [default: every environment].
        #[arg(long)]
        environment: Option<String>,
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Weekly start: a weekday and a time, e.g. "Fri 16:00".
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// Weekly end, e.g. "Mon 08:00".
        #[arg(long, requires = "from")]
        to: Option<String>,
        #[arg(long, requires = "ends_at")]
        starts_at: Option<DateTime<Utc>>,
        #[arg(long, requires = "starts_at")]
        ends_at: Option<DateTime<Utc>>,
        /// Also hold manual launches by operators (admins are never held).
        #[arg(long)]
        manual: bool,
    },
    /// Delete a blackout window (admins).
    Rm { blackout: String },
}

pub async fn blackouts(ctx: Option<&str>, cmd: BlackoutCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let api = c.blackouts();
    match cmd {
        BlackoutCmd::List => {
            let page = api.list(&ALL).await?;
            if !out.json(&page) {
                out.table(
                    &[
                        "id",
                        "name",
                        "environment",
                        "weekly",
                        "one-off",
                        "manual",
                        "in force until",
                    ],
                    page.items
                        .iter()
                        .map(|b| {
                            let weekly = match (&b.weekly_start, &b.weekly_end) {
                                (Some(s), Some(e)) => format!("{s} - {e} {}", b.timezone),
                                _ => "-".into(),
                            };
                            let once = match (b.starts_at, b.ends_at) {
                                (Some(s), Some(e)) => {
                                    format!("{} - {}", time(&Some(s)), time(&Some(e)))
                                }
                                _ => "-".into(),
                            };
                            vec![
                                b.id.to_string(),
                                b.name.clone(),
                                b.environment.clone().unwrap_or_else(|| "(all)".into()),
                                weekly,
                                once,
                                b.applies_to_manual.to_string(),
                                time(&b.active_until),
                            ]
                        })
                        .collect(),
                );
            }
        }
        BlackoutCmd::Create {
            name,
            environment,
            timezone,
            from,
            to,
            starts_at,
            ends_at,
            manual,
        } => {
            let b = api
                .create(&NewBlackoutRequest {
                    name,
                    environment,
                    timezone,
                    weekly_start: from,
                    weekly_end: to,
                    starts_at,
                    ends_at,
                    applies_to_manual: manual,
                    enabled: true,
                })
                .await?;
            if !out.json(&b) {
                println!(
                    "blackout {} created{}",
                    escape(&b.name),
                    b.active_until
                        .map(|t| format!(", in force now until {}", t.format("%Y-%m-%d %H:%M UTC")))
                        .unwrap_or_default()
                );
            }
        }
        BlackoutCmd::Rm { blackout } => {
            let r = api.delete(&blackout).await?;
            if !out.json(&r) {
                println!("{}", escape(&r.message));
            }
        }
    }
    Ok(())
}
