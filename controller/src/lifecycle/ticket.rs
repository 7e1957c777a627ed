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
}
