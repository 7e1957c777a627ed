//! Schedules (a job template run by a cron expression in a time zone):
//! `outpost schedule list|show|create|update|enable|disable|rm|runs|preview`. `create` shows
//! the next five runs it will make; `preview` shows them without saving anything.

use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use outpost_api::*;

use super::{client, pairs, ALL};
use crate::output::{cell, time, Output};
use crate::terminal::escape;

#[derive(Clone, Copy, ValueEnum)]
pub enum OverlapArg {
    /// Skip a slot while the previous run's jobs are still pending or running (recorded).
    Skip,
    /// Launch anyway, queued behind them.
    Queue,
}

impl From<OverlapArg> for OverlapRule {
    fn from(o: OverlapArg) -> OverlapRule {
        match o {
            OverlapArg::Skip => OverlapRule::Skip,
            OverlapArg::Queue => OverlapRule::Queue,
        }
    }
}

#[derive(Subcommand)]
pub enum ScheduleCmd {
    /// The schedules, with their next run.
    List,
    /// One schedule (by name or id) and its next five runs.
    Show { schedule: String },
    /// Schedule a job template (admins). Prints the next five runs.
    ///
    /// Example: outpost schedule create nightly-patch --template patch --cron "30 2 * * *"
    /// --timezone Europe/Berlin -a reboot=no
    Create {
        name: String,
        /// The job template to run (name or id).
        #[arg(long)]
        template: String,
        /// 5 fields (minute hour day month weekday), or 6 with seconds first.
        #[arg(long)]
        cron: String,
        /// An IANA time zone name.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// A survey answer (repeatable): NAME=VALUE. Secret questions cannot be scheduled.
        #[arg(short = 'a', long = "answer", value_name = "NAME=VALUE")]
        answers: Vec<String>,
        /// What to do when the previous run is still going.
        #[arg(long, value_enum, default_value = "skip")]
        overlap: OverlapArg,
        /// No run after this instant (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        ends_at: Option<DateTime<Utc>>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Change a schedule (admins); what is not given stays.
    Update {
        schedule: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        cron: Option<String>,
        #[arg(long)]
        timezone: Option<String>,
        #[arg(long, value_enum)]
        overlap: Option<OverlapArg>,
        #[arg(long, conflicts_with = "no_end")]
        ends_at: Option<DateTime<Utc>>,
        /// Remove the end date.
        #[arg(long)]
        no_end: bool,
    },
    /// Enable a schedule (admins): its next run is computed from now.
    Enable { schedule: String },
    /// Disable a schedule (admins).
    Disable { schedule: String },
    /// Delete a schedule (admins); its jobs are kept.
    Rm { schedule: String },
    /// What became of each slot: fired, skipped (and why), failed (and why).
    Runs { schedule: String },
    /// The next five runs of a cron expression, without saving anything.
    Preview {
        cron: String,
        #[arg(long, default_value = "UTC")]
        timezone: String,
    },
}

fn print_runs(p: &PreviewResponse) {
    println!("next runs ({}):", escape(&p.timezone));
    for (utc, local) in p.runs.iter().zip(&p.local) {
        println!(
            "  {}   {} UTC",
            escape(local),
            utc.format("%Y-%m-%d %H:%M:%S")
        );
    }
}

fn show(v: &ScheduleView) {
    println!(
        "{} ({})",
        escape(&v.name),
        if v.enabled { "enabled" } else { "disabled" }
    );
    println!("  template:  {}", escape(&v.template.name));
    println!("  cron:      {} ({})", escape(&v.cron), escape(&v.timezone));
    println!("  overlap:   {}", v.overlap);
    println!("  ends:      {}", time(&v.ends_at));
    println!("  next run:  {}", time(&v.next_run_at));
    if !v.answers.is_empty() {
        println!(
            "  answers:   {}",
            escape(&serde_json::Value::Object(v.answers.clone()).to_string())
        );
    }
}

pub async fn schedules(ctx: Option<&str>, cmd: ScheduleCmd, out: Output) -> anyhow::Result<()> {
    let c = client(ctx)?;
    let api = c.schedules();
    let preview = |cron: String, timezone: String| PreviewRequest { cron, timezone };
    match cmd {
        ScheduleCmd::List => {
            let page = api.list(&ALL).await?;
            if !out.json(&page) {
                out.table(
                    &[
                        "id",
                        "name",
                        "template",
                        "cron",
                        "timezone",
                        "enabled",
                        "next run (UTC)",
                    ],
                    page.items
                        .iter()
                        .map(|s| {
                            vec![
                                s.id.to_string(),
                                s.name.clone(),
                                s.template.name.clone(),
                                s.cron.clone(),
                                s.timezone.clone(),
                                s.enabled.to_string(),
                                time(&s.next_run_at),
                            ]
                        })
                        .collect(),
                );
            }
        }
        ScheduleCmd::Show { schedule } => {
            let v = api.get(&schedule).await?;
            let p = api
                .preview(&preview(v.cron.clone(), v.timezone.clone()))
                .await?;
            if !out.json(&v) {
                show(&v);
                print_runs(&p);
            }
        }
        ScheduleCmd::Create {
            name,
            template,
            cron,
            timezone,
            answers,
            overlap,
            ends_at,
            disabled,
        } => {
            // The same check the controller makes, first, so a typo is shown before anything.
            let p = api
                .preview(&preview(cron.clone(), timezone.clone()))
                .await?;
            let template = match template.parse::<i64>() {
                Ok(id) => IdOrName::Id(id),
                Err(_) => IdOrName::Name(template),
            };
            let v = api
                .create(&NewScheduleRequest {
                    name,
                    template,
                    cron,
                    timezone,
                    enabled: !disabled,
                    ends_at,
                    answers: Some(pairs(&answers, "answer")?),
                    overlap: Some(overlap.into()),
                })
                .await?;
            if !out.json(&v) {
                println!("schedule {} created", escape(&v.name));
                print_runs(&p);
            }
        }
        ScheduleCmd::Update {
            schedule,
            name,
            cron,
            timezone,
            overlap,
            ends_at,
            no_end,
        } => {
            let v = api
                .update(
                    &schedule,
                    &SchedulePatchRequest {
                        name,
                        cron,
                        timezone,
                        overlap: overlap.map(Into::into),
                        ends_at,
                        clear_ends_at: no_end,
                        ..Default::default()
                    },
                )
                .await?;
            if !out.json(&v) {
                show(&v);
            }
        }
        ScheduleCmd::Enable { schedule } => enable(&api, &schedule, true, out).await?,
        ScheduleCmd::Disable { schedule } => enable(&api, &schedule, false, out).await?,
        ScheduleCmd::Rm { schedule } => {
            let r = api.delete(&schedule).await?;
            if !out.json(&r) {
                println!("{}", escape(&r.message));
            }
        }
        ScheduleCmd::Runs { schedule } => {
            let page = api.runs(&schedule, &ALL).await?;
            if !out.json(&page) {
                out.table(
                    &["slot (UTC)", "status", "jobs", "reason"],
                    page.items
                        .iter()
                        .map(|r| {
                            vec![
                                time(&Some(r.slot_at)),
                                r.status.to_string(),
                                r.jobs.to_string(),
                                cell(&r.reason),
                            ]
                        })
                        .collect(),
                );
            }
        }
        ScheduleCmd::Preview { cron, timezone } => {
            let p = api.preview(&preview(cron, timezone)).await?;
            if !out.json(&p) {
                print_runs(&p);
            }
        }
    }
    Ok(())
}

async fn enable(
    api: &outpost_api::client::Schedules<'_>,
    schedule: &str,
    enabled: bool,
    out: Output,
) -> anyhow::Result<()> {
    let v = api
        .update(
            schedule,
            &SchedulePatchRequest {
                enabled: Some(enabled),
                ..Default::default()
            },
        )
        .await?;
    if !out.json(&v) {
        println!(
            "schedule {} {}; next run {}",
            escape(&v.name),
            if enabled { "enabled" } else { "disabled" },
            time(&v.next_run_at)
        );
    }
    Ok(())
}
