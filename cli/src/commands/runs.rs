//! Runs: list, show (counts per datacenter and wave, the budget), cancel, approve the next
//! wave, relaunch for the failed servers; and following a run as one progress line per
//! datacenter.

use std::time::Duration;

use outpost_api::client::Client;
use outpost_api::*;

use super::client;
use crate::output::{time, Output};
use crate::{terminal, RunCmd};

fn counts_text(c: &RunCounts) -> String {
    let done = c.success + c.failed + c.unreachable + c.cancelled;
    let mut s = format!(
        "{done}/{} done: {} ok, {} failed",
        c.total, c.success, c.failed
    );
    if c.unreachable > 0 {
        s.push_str(&format!(", {} unreachable", c.unreachable));
    }
    if c.cancelled > 0 {
        s.push_str(&format!(", {} cancelled", c.cancelled));
    }
    if c.running > 0 {
        s.push_str(&format!(", {} running", c.running));
    }
    s
}

fn run_row(r: &RunView) -> Vec<String> {
    vec![
        r.id.clone(),
        r.status.to_string(),
        r.playbook.name.clone(),
        r.user.name.clone(),
        format!("{}/{}", r.current_wave, r.waves),
        counts_text(&r.counts),
        time(&Some(r.created_at)),
    ]
}

const HEADER: &[&str] = &[
    "run", "status", "playbook", "user", "wave", "progress", "created",
];

/// The exit code a run's end gives: 0 succeeded, 2 cancelled, 1 otherwise.
pub fn exit_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Succeeded => 0,
        RunStatus::Cancelled => 2,
        _ => 1,
    }
}

fn print_detail(d: &RunDetail) {
    let r = &d.run;
    println!(
        "run {}  {}  playbook {}  by {}",
        terminal::escape(&r.id),
        r.status,
        terminal::escape(&r.playbook.name),
        terminal::escape(&r.user.name)
    );
    println!(
        "wave {}/{}{}",
        r.current_wave,
        r.waves,
        if r.awaiting_approval {
            "  (the next wave waits for approval: outpost run approve)"
        } else {
            ""
        }
    );
    let b = &d.budget;
    if let Some(max) = b.max_failures {
        println!("failure budget: {} of {max} used", b.failed);
    }
    if let Some(max) = b.max_unreachable {
        println!("unreachable budget: {} of {max} used", b.unreachable);
    }
    if let Some(reason) = &r.stop_reason {
        println!("stopped: {}", terminal::escape(reason));
    }
    println!("total: {}", counts_text(&r.counts));
    for g in &d.datacenters {
        println!(
            "  dc {}: {}",
            terminal::escape(&g.name),
            counts_text(&g.counts)
        );
    }
    if d.waves.len() > 1 {
        for g in &d.waves {
            println!("  wave {}: {}", g.name, counts_text(&g.counts));
        }
    }
    for t in &d.tickets {
        println!("ticket {}", terminal::escape(t));
    }
    for j in &d.jobs {
        println!(
            "  {} {} wave {} {}{}",
            terminal::escape(&j.job.id),
            terminal::escape(&j.job.server.name),
            j.wave,
            j.job.status,
            j.job
                .pending_reason
                .as_deref()
                .or(j.job.error_message.as_deref())
                .map(|r| format!(" ({})", terminal::escape(r)))
                .unwrap_or_default()
        );
    }
}

/// Prints one line per datacenter each time the run's progress changes, until it ends;
/// returns its end status.
pub async fn follow(c: &Client, run: &str, out: &Output) -> anyhow::Result<RunStatus> {
    let mut last: Vec<String> = Vec::new();
    loop {
        let d = c.runs().get(run).await?;
        let mut lines: Vec<String> = d
            .datacenters
            .iter()
            .map(|g| format!("{}: {}", terminal::escape(&g.name), counts_text(&g.counts)))
            .collect();
        let r = &d.run;
        let mut head = format!("run {}: wave {}/{}", r.status, r.current_wave, r.waves);
        if r.awaiting_approval {
            head.push_str(", waiting for approval");
        }
        if let Some(reason) = &r.stop_reason {
            head.push_str(&format!(", {}", terminal::escape(reason)));
        }
        lines.insert(0, head);
        if lines != last && !out.json {
            for l in &lines {
                eprintln!("{l}");
            }
            last = lines;
        }
        if r.status != RunStatus::Running {
            out.json(&d);
            return Ok(r.status);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn runs(ctx: Option<&str>, cmd: RunCmd, out: Output) -> anyhow::Result<u8> {
    let c = client(ctx)?;
    match cmd {
        RunCmd::List { status, limit } => {
            let query = RunQuery {
                status: status.map(|s| s.parse()).transpose()?,
                limit: Some(limit),
                ..Default::default()
            };
            let page = c.runs().list(&query).await?;
            if !out.json(&page) {
                out.table(HEADER, page.items.iter().map(run_row).collect());
            }
        }
        RunCmd::Show { run, follow: true } => {
            let status = follow(&c, &run, &out).await?;
            return Ok(exit_code(status));
        }
        RunCmd::Show { run, follow: false } => {
            let d = c.runs().get(&run).await?;
            if !out.json(&d) {
                print_detail(&d);
            }
        }
        RunCmd::Cancel { run } => {
            let r = c.runs().cancel(&run).await?;
            if !out.json(&r) {
                println!(
                    "run {}: {}",
                    terminal::escape(&r.run.id),
                    if r.outcome == "cancelled" {
                        "cancelled"
                    } else {
                        "cancelled; its running jobs are being stopped"
                    }
                );
            }
        }
        RunCmd::Approve { run } => {
            let r = c.runs().approve(&run).await?;
            if !out.json(&r) {
                println!(
                    "run {}: {}",
                    terminal::escape(&r.run.id),
                    terminal::escape(&r.outcome)
                );
            }
        }
        RunCmd::Relaunch {
            run,
            unreachable,
            follow: f,
        } => {
            let req = RelaunchRequest {
                only: if unreachable {
                    RelaunchOnly::FailedOrUnreachable
                } else {
                    RelaunchOnly::Failed
                },
            };
            let r = c.runs().relaunch(&run, &req).await?;
            if f {
                if !out.json {
                    eprintln!("run {} launched", terminal::escape(&r.id));
                }
                let status = follow(&c, &r.id, &out).await?;
                return Ok(exit_code(status));
            }
            if !out.json(&r) {
                out.table(HEADER, vec![run_row(&r)]);
            }
        }
    }
    Ok(0)
}
