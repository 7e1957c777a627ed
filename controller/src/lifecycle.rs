//! The end of a job's life: recording its outcome and, when it failed, opening a ticket in the
//! same transaction — a crash can never leave a failed job without its ticket.

use crate::metrics;
use crate::model::{Job, JobStatus, TicketPriority};
use crate::store::audit::Actor;
use crate::store::jobs::Outcome;
use crate::store::tickets::NewTicket;
use crate::store::{Result, Store};

/// Moves the job to its final state; a failure opens a ticket on behalf of the user who
/// launched the job. Returns false when the job was already final (nothing is done twice).
pub async fn finish(store: &Store, job: &Job, outcome: &Outcome) -> Result<bool> {
    let ticket = match outcome.status {
        JobStatus::Failed => Some(failure_ticket(store, job, outcome).await?),
        _ => None,
    };
    let moved = store
        .finish_job_with_ticket(job.id, outcome, &Actor::system(), ticket.as_ref())
        .await?;
    if moved {
        metrics::global().jobs_finished.inc();
        if ticket.is_some() {
            tracing::info!(job = %job.job_id, "opened a ticket for a failed job");
        }
    }
    Ok(moved)
}

/// The ticket for a failed job: which playbook, which server, the exit status and the last
/// error lines; priority from the server's environment.
async fn failure_ticket(store: &Store, job: &Job, outcome: &Outcome) -> Result<NewTicket> {
    let playbook = store.get_playbook(job.playbook_id).await?;
    let server = store.get_server(job.server_id).await?;
    let errors = store.last_error_lines(job.id, 5).await?;
    let exit = outcome
        .exit_code
        .map(|c| format!("exit code {c}"))
        .unwrap_or_else(|| "no exit code".into());
    let mut description = format!(
        "Job {} running playbook '{}' on server {} ({}) failed with {exit}.\n",
        job.job_id, playbook.name, server.hostname, server.ip_address
    );
    if let Some(e) = &outcome.error_message {
        description.push_str(&format!("\nError: {e}\n"));
    }
    if !errors.is_empty() {
        description.push_str("\nLast error lines:\n");
        for l in &errors {
            description.push_str(l);
            description.push('\n');
        }
    }
    Ok(NewTicket {
        job_id: job.id,
        created_by: job.user_id,
        title: format!(
            "Job failed: {} on {} ({exit})",
            playbook.name, server.hostname
        ),
        description: Some(description),
        priority: TicketPriority::for_environment(server.environment.as_deref()),
    })
}
