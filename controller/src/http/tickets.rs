//! `/api/v1/tickets`: tickets, most opened by failed jobs; operators work them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{NewTicketRequest, Page, TicketPatchRequest, TicketQuery, TicketView};

use super::auth::Caller;
use super::error::{ApiError, ApiResult, Json, Path, Query};
use super::jobs::by_uuid;
use super::users::paging;
use super::{views, ApiState};
use crate::model::{JobId, Ticket, TicketPriority};
use crate::store::tickets::{NewTicket, TicketFilter, TicketPatch};
use crate::store::Store;

async fn view(
    store: &Store,
    t: &Ticket,
    jobs: &mut std::collections::HashMap<JobId, String>,
) -> ApiResult<TicketView> {
    let uuid = match jobs.get(&t.job_id) {
        Some(u) => u.clone(),
        None => {
            let u = store.get_job(t.job_id).await?.job_id;
            jobs.insert(t.job_id, u.clone());
            u
        }
    };
    Ok(views::ticket(t, uuid))
}

async fn by_uuid_ticket(store: &Store, id: &str) -> ApiResult<Ticket> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::not_found(format!("ticket {id}: not a ticket id")));
    }
    Ok(store.get_ticket_by_uuid(id).await?)
}

#[utoipa::path(get, path = "/api/v1/tickets", tag = "tickets", params(TicketQuery),
    responses((status = 200, body = Page<TicketView>)))]
pub async fn list(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<TicketQuery>,
) -> ApiResult<Json<Page<TicketView>>> {
    let f = TicketFilter {
        status: q.status,
        priority: q.priority,
        job_id: None,
    };
    let page = st.store.list_tickets(&f, paging(q.limit, q.offset)).await?;
    let mut jobs = Default::default();
    let mut items = Vec::with_capacity(page.items.len());
    for t in &page.items {
        items.push(view(&st.store, t, &mut jobs).await?);
    }
    Ok(Json(Page {
        items,
        total: page.total,
        limit: page.limit,
        offset: page.offset,
    }))
}

#[utoipa::path(post, path = "/api/v1/tickets", tag = "tickets", request_body = NewTicketRequest,
    responses((status = 201, body = TicketView), (status = 404, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewTicketRequest>,
) -> ApiResult<(StatusCode, Json<TicketView>)> {
    let job = by_uuid(&st.store, &r.job_id).await?;
    if r.title.trim().is_empty() || r.title.chars().count() > 255 {
        return Err(ApiError::unprocessable("title must be 1 to 255 characters"));
    }
    if r.description
        .as_ref()
        .is_some_and(|d| d.len() > crate::text::TEXT_BYTES)
    {
        return Err(ApiError::unprocessable(
            "description must be at most 65,535 bytes",
        ));
    }
    let t = st
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
    Ok((StatusCode::CREATED, Json(views::ticket(&t, job.job_id))))
}

#[utoipa::path(get, path = "/api/v1/tickets/{ticket_id}", tag = "tickets", params(("ticket_id" = String, Path)),
    responses((status = 200, body = TicketView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<TicketView>> {
    let t = by_uuid_ticket(&st.store, &id).await?;
    Ok(Json(view(&st.store, &t, &mut Default::default()).await?))
}

#[utoipa::path(patch, path = "/api/v1/tickets/{ticket_id}", tag = "tickets", params(("ticket_id" = String, Path)),
    request_body = TicketPatchRequest,
    responses((status = 200, body = TicketView), (status = 404, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(r): Json<TicketPatchRequest>,
) -> ApiResult<Json<TicketView>> {
    let t = by_uuid_ticket(&st.store, &id).await?;
    let t = st
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
    Ok(Json(view(&st.store, &t, &mut Default::default()).await?))
}
