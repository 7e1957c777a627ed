//! Tickets, most opened by failed jobs; operators work them.

use outpost_api::{NewTicketRequest, Page, TicketPatchRequest, TicketQuery, TicketView};

use super::jobs::by_uuid;
use super::{paging, views, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::{JobId, JobUuid, Ticket, TicketPriority};
use crate::store::tickets::{NewTicket, TicketFilter, TicketPatch};
use crate::store::Store;

async fn view(
    store: &Store,
    t: &Ticket,
    jobs: &mut std::collections::HashMap<JobId, JobUuid>,
) -> Result<TicketView> {
    let uuid = match jobs.get(&t.job_id) {
        Some(u) => *u,
        None => {
            let u = store.get_job(t.job_id).await?.job_id;
            jobs.insert(t.job_id, u);
            u
        }
    };
    Ok(views::ticket(t, uuid))
}

async fn by_uuid_ticket(store: &Store, id: &str) -> Result<Ticket> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ServiceError::not_found(format!(
            "ticket {id}: not a ticket id"
        )));
    }
    Ok(store.get_ticket_by_uuid(id).await?)
}

pub async fn list(core: &Core, q: &TicketQuery) -> Result<Page<TicketView>> {
    let f = TicketFilter {
        status: q.status,
        priority: q.priority,
        job_id: None,
    };
    let page = core
        .store
        .list_tickets(&f, paging(q.limit, q.offset))
        .await?;
    let mut jobs = Default::default();
    let mut items = Vec::with_capacity(page.items.len());
    for t in &page.items {
        items.push(view(&core.store, t, &mut jobs).await?);
    }
    Ok(Page {
        items,
        total: page.total,
        total_exact: page.total_exact,
        limit: page.limit,
        offset: page.offset,
        next: None,
    })
}

pub async fn create(core: &Core, caller: &Caller, r: NewTicketRequest) -> Result<TicketView> {
    let job = by_uuid(&core.store, &r.job_id).await?;
    if r.title.trim().is_empty() || r.title.chars().count() > 255 {
        return Err(ServiceError::unprocessable(
            "title must be 1 to 255 characters",
        ));
    }
    if r.description
        .as_ref()
        .is_some_and(|d| d.len() > crate::text::TEXT_BYTES)
    {
        return Err(ServiceError::unprocessable(
            "description must be at most 65,535 bytes",
        ));
    }
    let t = core
        .store
        .create_ticket(
            &NewTicket {
                job_id: job.id,
                created_by: caller.user.id,
                title: r.title,
                description: r.description,
                priority: r.priority.unwrap_or(TicketPriority::Medium),
            },
            &caller.actor(),
        )
        .await?;
    Ok(views::ticket(&t, job.job_id))
}

pub async fn get(core: &Core, id: &str) -> Result<TicketView> {
    let t = by_uuid_ticket(&core.store, id).await?;
    view(&core.store, &t, &mut Default::default()).await
}

pub async fn update(
    core: &Core,
    caller: &Caller,
    id: &str,
    r: TicketPatchRequest,
) -> Result<TicketView> {
    let t = by_uuid_ticket(&core.store, id).await?;
    let t = core
        .store
        .update_ticket(
            t.id,
            &TicketPatch {
                status: r.status,
                priority: r.priority,
                title: r.title,
                description: r.description,
            },
            &caller.actor(),
        )
        .await?;
    view(&core.store, &t, &mut Default::default()).await
}
