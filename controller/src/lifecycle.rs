//! The end of a job's life: recording its outcome, and opening a ticket when it failed.

use crate::metrics;
use crate::model::{Job, JobStatus, TicketPriority};
use crate::store::audit::Actor;
use crate::store::jobs::Outcome;
use crate::store::tickets::NewTicket;
use crate::store::{Result, Store};

/// Moves the job to its final state; a failure opens a ticket on behalf of the user who
/// launched the job. Returns false when the job was already final (nothing is done twice).
pub async fn finish(store: &Store, job: &Job, outcome: &Outcome) -> Result<bool> {
    if !store.finish_job(job.id, outcome, &Actor::system()).await? {
        return Ok(false);
    }
    metrics::global().jobs_finished.inc();
    if outcome.status == JobStatus::Failed {
        open_failure_ticket(store, job, outcome).await?;
    }
    Ok(true)
}

async fn open_failure_ticket(store: &Store, job: &Job, outcome: &Outcome) -> Result<()> {
    let playbook = store.get_playbook(job.playbook_id).await?;
    let server = store.get_server(job.server_id).await?;
    let errors = store.last_error_lines(job.id, 5).await?;
    let exit = outcome
        .exit_code
        .map(|c| format!("exit code {c}"))
        .unwrap_or_else(|| "no exit code".into());
    let title = format!(
        "Job failed: {} on {} ({exit})",
        playbook.name, server.hostname
    );
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
    let ticket = NewTicket {
        job_id: job.id,
        created_by: job.user_id,
        title,
        description: Some(description),
        priority: TicketPriority::for_environment(server.environment.as_deref()),
    };
    let t = store.create_ticket(&ticket, &Actor::system()).await?;
    tracing::info!(job = %job.job_id, ticket = %t.ticket_id, "opened a ticket for a failed job");
    Ok(())
}
