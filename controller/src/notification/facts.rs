//! The events of jobs, runs and tickets, made from what their transaction reads: a job that
//! ended failed (with the ticket it opened) or succeeded after a failure, a run on several
//! servers that ended with failures, a ticket opened by hand.

use super::{labels_of, Event, JobRef, NotificationEvent, TicketRef};
use crate::model::{JobStatus, JsonObject, TicketPriority};

/// What a job's transaction reads about it for its notification.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobFacts {
    pub job_uuid: String,
    pub playbook_id: i32,
    pub server_id: i32,
    pub playbook: String,
    pub server: String,
    pub environment: Option<String>,
    pub tags: Option<sqlx::types::Json<JsonObject>>,
    pub error_message: Option<String>,
}

/// Reads [`JobFacts`] of one job (`?` = its row id).
pub const JOB_FACTS_SQL: &str = "SELECT j.job_id AS job_uuid, j.playbook_id, j.server_id, \
     p.name AS playbook, s.hostname AS server, s.environment, s.tags, j.error_message \
     FROM jobs j JOIN playbooks p ON p.id = j.playbook_id JOIN servers s ON s.id = j.server_id \
     WHERE j.id = ?";

/// The status of the final job before this one of the same playbook on the same server
/// (`?` = playbook, server, this job's id).
pub const PREVIOUS_FINAL_SQL: &str =
    "SELECT status FROM jobs WHERE playbook_id = ? AND server_id = ? \
     AND id <> ? AND status IN ('success', 'failed', 'cancelled') AND completed_at IS NOT NULL \
     ORDER BY completed_at DESC, id DESC LIMIT 1";

/// The event of a job that ended `status`: failed (with the ticket it opened), or succeeded
/// when the previous final run of it had failed. Other endings tell nobody.
pub fn job_event(
    f: &JobFacts,
    status: JobStatus,
    ticket: Option<TicketRef>,
    previous_failed: bool,
) -> Option<Event> {
    let kind = match status {
        JobStatus::Failed => NotificationEvent::JobFailed,
        JobStatus::Success if previous_failed => NotificationEvent::JobRecovered,
        _ => return None,
    };
    let priority = ticket
        .as_ref()
        .map(|t| t.priority)
        .unwrap_or_else(|| TicketPriority::for_environment(f.environment.as_deref()));
    let summary = match kind {
        NotificationEvent::JobFailed => format!("{} failed on {}", f.playbook, f.server),
        _ => format!("{} succeeded again on {}", f.playbook, f.server),
    };
    let mut e = Event::new(kind, priority, summary);
    e.environment = f.environment.clone();
    e.labels = labels_of(f.tags.as_ref().map(|t| &t.0));
    e.opened_ticket = ticket.is_some();
    e.job = Some(JobRef {
        id: f.job_uuid.clone(),
        playbook: f.playbook.clone(),
        server: f.server.clone(),
        status: status.as_str().to_owned(),
        error: f
            .error_message
            .clone()
            .filter(|_| status == JobStatus::Failed),
    });
    e.ticket = ticket;
    e.link = format!("/jobs/{}", f.job_uuid);
    Some(e)
}

/// What a run's last transaction reads about it for its notification.
pub struct RunFacts<'a> {
    pub run_uuid: &'a str,
    pub playbook: &'a str,
    pub total: u32,
    pub failed: u32,
    pub unreachable: u32,
    pub stop_reason: Option<&'a str>,
    /// The environments of the servers that failed (one entry per server).
    pub environments: Vec<Option<String>>,
}

fn rank(p: TicketPriority) -> u8 {
    match p {
        TicketPriority::Low => 0,
        TicketPriority::Medium => 1,
        TicketPriority::High => 2,
        TicketPriority::Critical => 3,
    }
}

/// The one event of a run on several servers that ended with failures. Its jobs tell nobody
/// on their own: a broken playbook on 300 servers is one message with its one ticket, not
/// 300. It is routed as `job_failed`, at the priority of the most critical environment hit.
pub fn run_event(f: &RunFacts<'_>, ticket: Option<TicketRef>) -> Event {
    let environment = f
        .environments
        .iter()
        .max_by_key(|e| rank(TicketPriority::for_environment(e.as_deref())))
        .cloned()
        .flatten();
    let priority = ticket
        .as_ref()
        .map(|t| t.priority)
        .unwrap_or_else(|| TicketPriority::for_environment(environment.as_deref()));
    let mut summary = format!(
        "{} failed on {} of {} servers",
        f.playbook, f.failed, f.total
    );
    if f.unreachable > 0 {
        summary.push_str(&format!(", {} unreachable", f.unreachable));
    }
    if let Some(reason) = f.stop_reason {
        summary.push_str(&format!(" ({reason})"));
    }
    let mut e = Event::new(NotificationEvent::JobFailed, priority, summary);
    e.environment = environment;
    e.opened_ticket = ticket.is_some();
    e.ticket = ticket;
    e.link = format!("/runs/{}", f.run_uuid);
    e
}

/// The event of a ticket opened by a person, about a job whose facts are `f`.
pub fn ticket_event(f: &JobFacts, ticket: TicketRef) -> Event {
    let mut e = Event::new(
        NotificationEvent::TicketOpened,
        ticket.priority,
        format!("ticket opened: {}", ticket.title),
    );
    e.environment = f.environment.clone();
    e.labels = labels_of(f.tags.as_ref().map(|t| &t.0));
    e.opened_ticket = true;
    e.link = format!("/tickets/{}", ticket.id);
    e.job = Some(JobRef {
        id: f.job_uuid.clone(),
        playbook: f.playbook.clone(),
        server: f.server.clone(),
        status: String::new(),
        error: None,
    });
    e.ticket = Some(ticket);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> JobFacts {
        let mut tags = JsonObject::new();
        tags.insert("dc".into(), "fra1".into());
        tags.insert("rack".into(), 7.into());
        JobFacts {
            job_uuid: "j-1".into(),
            playbook_id: 1,
            server_id: 2,
            playbook: "site.yml".into(),
            server: "web1".into(),
            environment: Some("production".into()),
            tags: Some(sqlx::types::Json(tags)),
            error_message: Some("fatal: boom".into()),
        }
    }

    #[test]
    fn a_failure_carries_its_ticket_and_the_ticket_priority() {
        let t = TicketRef {
            id: "t-1".into(),
            title: "x".into(),
            priority: TicketPriority::Critical,
        };
        let e = job_event(&facts(), JobStatus::Failed, Some(t), false).unwrap();
        assert_eq!(e.kind, NotificationEvent::JobFailed);
        assert_eq!(e.priority, TicketPriority::Critical);
        assert!(e.opened_ticket);
        assert_eq!(e.labels.get("dc").map(String::as_str), Some("fra1"));
        assert!(!e.labels.contains_key("rack"), "only string tags route");
        assert_eq!(e.link, "/jobs/j-1");
        assert_eq!(e.job.unwrap().error.as_deref(), Some("fatal: boom"));
    }

    #[test]
    fn success_tells_only_after_a_failure() {
        assert!(job_event(&facts(), JobStatus::Success, None, false).is_none());
        assert!(job_event(&facts(), JobStatus::Cancelled, None, true).is_none());
        let e = job_event(&facts(), JobStatus::Success, None, true).unwrap();
        assert_eq!(e.kind, NotificationEvent::JobRecovered);
        assert_eq!(e.priority, TicketPriority::High, "production's priority");
        assert_eq!(e.job.unwrap().error, None);
    }

    #[test]
    fn a_run_tells_once_at_its_most_critical_environment() {
        let f = RunFacts {
            run_uuid: "r-1",
            playbook: "deploy",
            total: 300,
            failed: 5,
            unreachable: 1,
            stop_reason: Some("failure budget spent: 5 of 300 failed (budget 4)"),
            environments: vec![Some("staging".into()), None, Some("production".into())],
        };
        let e = run_event(&f, None);
        assert_eq!(e.kind, NotificationEvent::JobFailed);
        assert_eq!(e.priority, TicketPriority::High);
        assert_eq!(e.environment.as_deref(), Some("production"));
        assert_eq!(e.link, "/runs/r-1");
        assert!(
            e.summary
                .starts_with("deploy failed on 5 of 300 servers, 1 unreachable ("),
            "{}",
            e.summary
        );
        let t = TicketRef {
            id: "t".into(),
            title: "x".into(),
            priority: TicketPriority::Critical,
        };
        let e = run_event(&f, Some(t));
        assert!(e.opened_ticket);
        assert_eq!(e.priority, TicketPriority::Critical);
    }
}
