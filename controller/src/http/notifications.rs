//! `/api/v1/notifications/…`: channels (with "send a test"), routing rules and the delivery
//! log, admins only (the rules are [`service::notifications`]'s). A channel's URL and secret
//! go in and never come back out.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{
    ChannelPatchRequest, ChannelView, DeleteResult, DeliveryQuery, DeliveryView, NewChannelRequest,
    NewRuleRequest, Page, RuleView, TestQueued,
};

use super::error::{ApiResult, Json, Path, Query};
use super::WebState;
use crate::model::{ChannelId, RuleId};
use crate::service::{self, Caller};

#[utoipa::path(get, path = "/api/v1/notifications/channels", tag = "notifications",
    responses((status = 200, body = Vec<ChannelView>)))]
pub async fn list_channels(State(st): State<Arc<WebState>>) -> ApiResult<Json<Vec<ChannelView>>> {
    Ok(Json(service::notifications::list_channels(&st.core).await?))
}

#[utoipa::path(post, path = "/api/v1/notifications/channels", tag = "notifications", request_body = NewChannelRequest,
    responses((status = 201, body = ChannelView), (status = 409, body = outpost_api::ErrorBody),
              (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create_channel(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewChannelRequest>,
) -> ApiResult<(StatusCode, Json<ChannelView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::notifications::create_channel(&st.core, &caller, r).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/notifications/channels/{id}", tag = "notifications", params(("id" = i32, Path)),
    responses((status = 200, body = ChannelView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get_channel(
    State(st): State<Arc<WebState>>,
    Path(id): Path<ChannelId>,
) -> ApiResult<Json<ChannelView>> {
    Ok(Json(
        service::notifications::get_channel(&st.core, id).await?,
    ))
}

#[utoipa::path(patch, path = "/api/v1/notifications/channels/{id}", tag = "notifications", params(("id" = i32, Path)),
    request_body = ChannelPatchRequest,
    responses((status = 200, body = ChannelView), (status = 404, body = outpost_api::ErrorBody),
              (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn update_channel(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<ChannelId>,
    Json(r): Json<ChannelPatchRequest>,
) -> ApiResult<Json<ChannelView>> {
    Ok(Json(
        service::notifications::update_channel(&st.core, &caller, id, r).await?,
    ))
}

#[utoipa::path(delete, path = "/api/v1/notifications/channels/{id}", tag = "notifications", params(("id" = i32, Path)),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete_channel(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<ChannelId>,
) -> ApiResult<Json<DeleteResult>> {
    Ok(Json(
        service::notifications::delete_channel(&st.core, &caller, id).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/notifications/channels/{id}/test", tag = "notifications", params(("id" = i32, Path)),
    responses((status = 202, body = TestQueued), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn test_channel(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<ChannelId>,
) -> ApiResult<(StatusCode, Json<TestQueued>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(service::notifications::test_channel(&st.core, &caller, id).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/notifications/rules", tag = "notifications",
    responses((status = 200, body = Vec<RuleView>)))]
pub async fn list_rules(State(st): State<Arc<WebState>>) -> ApiResult<Json<Vec<RuleView>>> {
    Ok(Json(service::notifications::list_rules(&st.core).await?))
}

#[utoipa::path(post, path = "/api/v1/notifications/rules", tag = "notifications", request_body = NewRuleRequest,
    responses((status = 201, body = RuleView), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create_rule(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Json(r): Json<NewRuleRequest>,
) -> ApiResult<(StatusCode, Json<RuleView>)> {
    Ok((
        StatusCode::CREATED,
        Json(service::notifications::create_rule(&st.core, &caller, r).await?),
    ))
}

#[utoipa::path(delete, path = "/api/v1/notifications/rules/{id}", tag = "notifications", params(("id" = i32, Path)),
    responses((status = 200, body = DeleteResult), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn delete_rule(
    State(st): State<Arc<WebState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<RuleId>,
) -> ApiResult<Json<DeleteResult>> {
    Ok(Json(
        service::notifications::delete_rule(&st.core, &caller, id).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/notifications/deliveries", tag = "notifications", params(DeliveryQuery),
    responses((status = 200, body = Page<DeliveryView>)))]
pub async fn deliveries(
    State(st): State<Arc<WebState>>,
    Query(q): Query<DeliveryQuery>,
) -> ApiResult<Json<Page<DeliveryView>>> {
    Ok(Json(
        service::notifications::deliveries(&st.core, &q).await?,
    ))
}
