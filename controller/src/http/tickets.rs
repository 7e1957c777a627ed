//! `/api/v1/tickets`: tickets, most opened by failed jobs; operators work them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{NewTicketRequest, Page, TicketPatchRequest, TicketQuery, TicketView};

use super::error::{ApiResult, Json, Path, Query};
use super::WebState;
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/tickets", tag = "tickets", params(TicketQuery),
    responses((status = 200, body = Page<TicketView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<TicketQuery>,
) -> ApiResult<Json<Page<TicketView>>> {
    Ok(Json(service::tickets::list(&st.core, &q).await?))
}

#[utoipa::path(post, path = "/api/v1/tickets", tag = "tickets", request_body = NewTicketRequest,
    responses((status = 201, body = TicketView), (status = 404, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewTicketRequest>,
) -> ApiResult<(StatusCode, Json<TicketView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::tickets::create(&st.core, &caller, r).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/tickets/{ticket_id}", tag = "tickets", params(("ticket_id" = String, Path)),
    responses((status = 200, body = TicketView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<WebState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<TicketView>> {
    Ok(Json(service::tickets::get(&st.core, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/tickets/{ticket_id}", tag = "tickets", params(("ticket_id" = String, Path)),
    request_body = TicketPatchRequest,
    responses((status = 200, body = TicketView), (status = 404, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(r): Json<TicketPatchRequest>,
) -> ApiResult<Json<TicketView>> {
    Ok(Json(
        service::tickets::update(&st.core, &caller, &id, r).await?,
    ))
}
