//! The ticket a failed job opens: which playbook, which server, the exit status and the last
//! error lines; priority from the server's environment. Every part is cut to its column, so a
//! failure that printed megabytes still records (its whole output stays in the job's log).

use crate::model::{Job, Playbook, Server, TicketPriority};
use crate::store::tickets::NewTicket;
use crate::text::{fit_bytes, fit_chars, TEXT_BYTES, VARCHAR_255};

use super::Outcome;

/// Each error line quoted in a ticket is cut to this many characters.
const QUOTED_LINE_CHARS: usize = 2_000;

pub(super) fn failure_ticket(
    job: &Job,
    playbook: &Playbook,
    server: &Server,
    outcome: &Outcome,
    error_lines: &[String],
) -> NewTicket {
    let exit = outcome
        .exit_code
        .map(|c| format!("exit code {c}"))
        .unwrap_or_else(|| "no exit code".into());
    let mut description = format!(
        "Job {} running playbook '{}' on server {} ({}) failed with {exit}.\n",
        job.job_id, playbook.name, server.hostname, server.ip_address
    );
    if let Some(e) = &outcome.error_message {
        description.push_str(&format!("\nError: {}\n", fit_chars(e, QUOTED_LINE_CHARS)));
    }
    if !error_lines.is_empty() {
        description.push_str("\nLast error lines:\n");
        for l in error_lines {
            description.push_str(&fit_chars(l, QUOTED_LINE_CHARS));
            description.push('\n');
        }
    }
    NewTicket {
        job_id: job.id,
        created_by: job.user_id,
        title: fit_chars(
            &format!(
                "Job failed: {} on {} ({exit})",
                playbook.name, server.hostname
            ),
            VARCHAR_255,
        )
        .into_owned(),
        description: Some(fit_bytes(&description, TEXT_BYTES).into_owned()),
        priority: TicketPriority::for_environment(server.environment.as_deref()),
    }
}

/// A failed server of a run, as its ticket lists it.
#[derive(Debug, Clone)]
pub(crate) struct FailedServer {
    pub job: crate::model::JobId,
    pub hostname: String,
    pub environment: Option<String>,
    pub unreachable: bool,
    pub error: Option<String>,
}

/// What a failed run's ticket says.
pub(crate) struct RunFailure<'a> {
    pub run_uuid: &'a str,
    pub playbook: &'a str,
    pub user: crate::model::UserId,
    pub total: u32,
    pub status: crate::model::RunStatus,
    pub stop_reason: Option<&'a str>,
    pub servers: &'a [FailedServer],
}

/// Servers listed by name in a run's ticket; the rest are counted.
const LISTED_SERVERS: usize = 200;

/// The one ticket of a failed run: which playbook, how many of its servers failed and which
/// (each with its error's first line), why it stopped; priority from the most important
/// environment among them. Attached to the first failed job. `None` with no failed server.
pub(crate) fn run_ticket(r: &RunFailure<'_>) -> Option<NewTicket> {
    let first = r.servers.first()?;
    let unreachable = r.servers.iter().filter(|s| s.unreachable).count();
    let failed = r.servers.len() - unreachable;
    let mut counted = format!("{failed} failed");
    if unreachable > 0 {
        counted.push_str(&format!(", {unreachable} unreachable"));
    }
    let title = format!(
        "Run failed: {} on {counted} of {} servers",
        r.playbook, r.total
    );
    let mut d = format!(
        "Run {} of playbook '{}' ended {} with {counted} of {} servers.\n",
        r.run_uuid, r.playbook, r.status, r.total
    );
    if let Some(reason) = r.stop_reason {
        d.push_str(&format!("Stopped: {reason}\n"));
    }
    d.push_str("\nFailed servers:\n");
    for s in r.servers.iter().take(LISTED_SERVERS) {
        let error = s
            .error
            .as_deref()
            .and_then(|e| e.lines().next())
            .map(|e| fit_chars(e, 300).into_owned())
            .unwrap_or_default();
        let kind = if s.unreachable {
            "unreachable"
        } else {
            "failed"
        };
        d.push_str(&format!("- {} ({kind}) {error}\n", s.hostname));
    }
    if r.servers.len() > LISTED_SERVERS {
        d.push_str(&format!(
            "… and {} more (see the run)\n",
            r.servers.len() - LISTED_SERVERS
        ));
    }
    let priority = r
        .servers
        .iter()
        .map(|s| TicketPriority::for_environment(s.environment.as_deref()))
        .max()
        .unwrap_or(TicketPriority::Low);
    Some(NewTicket {
        job_id: first.job,
        created_by: r.user,
        title: fit_chars(&title, VARCHAR_255).into_owned(),
        description: Some(fit_bytes(&d, TEXT_BYTES).into_owned()),
        priority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::samples;

    #[test]
    fn a_ticket_for_a_long_failure_fits_its_columns() {
        let job = samples::job(serde_json::json!({}));
        let mut server = samples::server(serde_json::json!({}));
        server.environment = Some("production".into());
        server.hostname = "h".repeat(255);
        let pb = samples::playbook(serde_json::json!({}));
        let outcome = Outcome {
            status: crate::lifecycle::Final::Failed,
            exit_code: Some(3),
            error_message: Some("e".repeat(40_000)),
            unreachable: false,
            started: true,
        };
        let lines = vec!["fatal: ".to_owned() + &"x".repeat(40_000); 5];
        let t = failure_ticket(&job, &pb, &server, &outcome, &lines);
        assert!(t.title.chars().count() <= VARCHAR_255);
        let d = t.description.unwrap();
        assert!(d.len() <= TEXT_BYTES, "{}", d.len());
        assert!(d.contains("exit code 3") && d.contains("fatal: xxx"));
        assert_eq!(
            d.matches("fatal: ").count(),
            5,
            "every error line is quoted, each cut"
        );
        assert_eq!(t.priority, TicketPriority::High);
    }

    #[test]
    fn a_run_ticket_lists_its_failed_servers() {
        let servers: Vec<FailedServer> = (0..4)
            .map(|i| FailedServer {
                job: crate::model::JobId(10 + i),
                hostname: format!("web-{i}"),
                environment: Some(if i == 2 { "production" } else { "staging" }.into()),
                unreachable: i == 3,
                error: Some("non-zero return code\nmore".into()),
            })
            .collect();
        let t = run_ticket(&RunFailure {
            run_uuid: "r-1",
            playbook: "site",
            user: crate::model::UserId(7),
            total: 30,
            status: crate::model::RunStatus::StoppedByBudget,
            stop_reason: Some("failure budget spent: 4 of 30 failed (budget 3)"),
            servers: &servers,
        })
        .unwrap();
        assert_eq!(
            t.title,
            "Run failed: site on 3 failed, 1 unreachable of 30 servers"
        );
        let d = t.description.unwrap();
        for i in 0..4 {
            assert!(d.contains(&format!("- web-{i} (")), "{d}");
        }
        assert!(
            d.contains("web-3 (unreachable) non-zero return code\n"),
            "{d}"
        );
        assert!(!d.contains("more"), "{d}");
        assert!(d.contains("budget 3"));
        assert_eq!(t.job_id, crate::model::JobId(10));
        assert_eq!(t.created_by, crate::model::UserId(7));
        assert_eq!(
            t.priority,
            TicketPriority::for_environment(Some("production"))
        );
        let none = RunFailure {
            servers: &[],
            ..RunFailure {
                run_uuid: "r",
                playbook: "p",
                user: crate::model::UserId(1),
                total: 2,
                status: crate::model::RunStatus::Succeeded,
                stop_reason: None,
                servers: &[],
            }
        };
        assert!(run_ticket(&none).is_none());
    }
}
