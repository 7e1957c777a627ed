//! Jobs: launching with ansible-playbook's options, following, listing, cancelling.

use anyhow::{bail, Context as _};
use outpost_api::client::Client;
use outpost_api::*;
use serde_json::{json, Value};

use super::{client, pairs};
use crate::output::{cell, time, Output};
use crate::{follow, inventory, terminal, JobCmd, RunArgs};

fn extra_vars(items: &[String]) -> anyhow::Result<Option<JsonObject>> {
    let mut vars = JsonObject::new();
    for item in items {
        if let Some(path) = item.strip_prefix('@') {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
            let value: Value = if path.ends_with(".json") {
                serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?
            } else {
                inventory::yaml_document(&text).with_context(|| path.to_owned())?
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
                String::from(j.status.as_str()),
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

pub async fn jobs(ctx: Option<&str>, cmd: JobCmd, out: Output) -> anyhow::Result<u8> {
    let c = client(ctx)?;
    let header: &[&str] = if out.wide {
        &[
            "job", "status", "playbook", "server", "created", "agent", "exit", "reason",
        ]
    } else {
        &["job", "status", "playbook", "server", "created"]
    };
    match cmd {
        JobCmd::Run(a) => return run_job(&c, *a, out).await,
        JobCmd::List {
            status,
            limit,
            after,
        } => {
            let mut command = format!("outpost job list --limit {limit}");
            if let Some(s) = &status {
                command.push_str(&format!(" --status {}", terminal::escape(s)));
            }
            let query = JobQuery {
                status: status.map(|s| s.parse()).transpose()?,
                limit: Some(limit),
                after,
                ..Default::default()
            };
            let page = c.jobs().list(&query).await?;
            if !out.json(&page) {
                out.table(header, job_rows(&out, &page.items));
                out.next_page(&page, &command);
            }
        }
        JobCmd::Show { job } => {
            let j = c.jobs().get(&job).await?;
            if !out.json(&j) {
                let text = serde_json::to_string_pretty(&j)?;
                println!("{}", terminal::json(&text));
                let query = ResultsQuery {
                    limit: Some(5000),
                    ..Default::default()
                };
                match c.jobs().results(&j.id, &query).await {
                    Ok(r) => print!("{}", results_summary(&r)),
                    Err(e) => eprintln!("(task results unavailable: {e})"),
                }
            }
        }
        JobCmd::Logs {
            job,
            follow: true,
            since_line,
            raw,
        } => {
            let end = follow::follow(&c, &job, since_line, None, raw).await?;
            return Ok(follow::exit_code(&[end.status]));
        }
        JobCmd::Logs {
            job,
            follow: false,
            since_line,
            raw,
        } => {
            let mut after = since_line;
            let mut told = false;
            loop {
                let query = LogQuery {
                    after: Some(after),
                    limit: Some(5000),
                    ..Default::default()
                };
                let page = c.jobs().logs(&job, &query).await?;
                // On stderr, so that the lines on stdout stay exactly the log.
                if page.archived && !told {
                    eprintln!(
                        "(job {}: past the retention, read from its archive)",
                        terminal::escape(&job)
                    );
                    told = true;
                }
                for l in &page.lines {
                    if out.json {
                        let text = serde_json::to_string(l)?;
                        println!("{}", terminal::json(&text));
                    } else if raw {
                        println!("{}", l.content);
                    } else {
                        println!("{}", terminal::escape(&l.content));
                    }
                }
                if page.lines.is_empty() {
                    break;
                }
                after = page.next_after;
            }
        }
        JobCmd::Cancel { job } => {
            let r = c.jobs().cancel(&job).await?;
            if !out.json(&r) {
                println!(
                    "job {}: {}",
                    terminal::escape(&r.job.id),
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

/// The rollout the flags ask for, if any.
fn rollout(a: &RunArgs) -> Option<Rollout> {
    let r = Rollout {
        canary: a.canary,
        canary_datacenter: a.canary_dc.clone(),
        batch: a.batch.clone(),
        batch_per_datacenter: a.per_dc,
        pause: a.pause,
        max_failures: a.max_failures.clone(),
        max_unreachable: a.max_unreachable.clone(),
    };
    (r != Rollout::default()).then_some(r)
}

async fn run_job(c: &Client, a: RunArgs, out: Output) -> anyhow::Result<u8> {
    let id_or_name = |s: &str| match s.parse::<i64>() {
        Ok(id) => IdOrName::Id(id),
        Err(_) => IdOrName::Name(s.to_owned()),
    };
    let playbook = a.playbook.as_deref().map(id_or_name);
    let project = a.project.as_deref().map(id_or_name);
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
        project,
        playbook_path: a.playbook_path.clone(),
        servers,
        filter,
        extra_vars: extra_vars(&a.extra_vars)?,
        tags: split_tags(&a.tags),
        skip_tags: split_tags(&a.skip_tags),
        check: a.check,
        diff: a.diff,
        verbosity: a.verbose,
        credentials: a.credentials.clone(),
        rollout: rollout(&a),
    };
    let launched = c.jobs().launch(&req).await?;
    // A rollout is followed as a progress line per datacenter: its later waves have no log yet.
    if let (Some(_), Some(run), true) = (&req.rollout, &launched.run, a.follow) {
        if !out.json {
            eprintln!(
                "run {}: {} jobs",
                terminal::escape(run),
                launched.jobs.len()
            );
        }
        let status = super::runs::follow(c, run, &out).await?;
        return Ok(super::runs::exit_code(status));
    }
    launched_jobs(c, &launched, a.follow, a.raw, out).await
}

/// Shows what a launch made, or with `follow` streams every job's log to its end; the exit
/// code says how they ended.
pub(crate) async fn launched_jobs(
    c: &Client,
    launched: &LaunchResponse,
    follow: bool,
    raw: bool,
    out: Output,
) -> anyhow::Result<u8> {
    if !follow {
        if !out.json(launched) {
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
            follow::follow(&c, &id, 0, prefix, raw)
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
                    "{}: {}{}",
                    terminal::escape(s),
                    e.status,
                    e.exit_code
                        .map(|c| format!(" (exit {c})"))
                        .unwrap_or_default()
                );
            }
        }
    } else if let Some((_, e)) = summary.first() {
        eprintln!(
            "job {}: {}",
            terminal::escape(&launched.jobs[0].id),
            e.status
        );
    }
    Ok(follow::exit_code(&statuses))
}

/// The recap and the tasks that did not go well, for `job show`. Names and messages come from
/// the managed host: escaped for the terminal.
fn results_summary(r: &JobResults) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(c) = &r.recap {
        let _ = writeln!(
            out,
            "recap: ok={} changed={} unreachable={} failed={} skipped={} rescued={} ignored={}",
            c.ok, c.changed, c.unreachable, c.failed, c.skipped, c.rescued, c.ignored
        );
    }
    if r.unreachable {
        let _ = writeln!(out, "unreachable: the server could not be reached");
    }
    let bad: Vec<&TaskResultView> = r
        .results
        .iter()
        .filter(|t| {
            matches!(
                t.status,
                TaskStatus::Failed | TaskStatus::Unreachable | TaskStatus::Rescued
            )
        })
        .collect();
    if !bad.is_empty() {
        let _ = writeln!(out, "failed tasks:");
        for t in bad {
            let _ = writeln!(
                out,
                "  {} [{}] {}: {}",
                t.status,
                terminal::escape(&t.host),
                terminal::escape(&t.task),
                terminal::escape(t.message.as_deref().unwrap_or("")),
            );
        }
    }
    out
}

#[cfg(test)]
mod results_tests {
    use super::*;

    #[test]
    fn the_summary_names_failed_tasks_and_defuses_escapes() {
        let row = |task: &str, status, message: Option<&str>| TaskResultView {
            seq: 1,
            host: "web1".into(),
            play: "site".into(),
            task: task.into(),
            action: "command".into(),
            status,
            started_at: chrono::Utc::now(),
            duration_ms: 3,
            message: message.map(Into::into),
        };
        let r = JobResults {
            job_id: "j".into(),
            recap: Some(JobRecap {
                ok: 2,
                failed: 1,
                ..Default::default()
            }),
            unreachable: false,
            results: vec![
                row("fine", TaskStatus::Ok, None),
                row("boom\u{1b}[2J", TaskStatus::Failed, Some("no such file")),
            ],
            total: 2,
        };
        let text = results_summary(&r);
        assert!(
            text.contains("recap: ok=2 changed=0 unreachable=0 failed=1"),
            "{text}"
        );
        assert!(text.contains("failed [web1] boom"), "{text}");
        assert!(text.contains("no such file"), "{text}");
        assert!(!text.contains("fine") && !text.contains('\u{1b}'), "{text}");
    }
}
