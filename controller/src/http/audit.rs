//! `/api/v1/audit`: the audit trail, newest first, for admins.

use std::sync::Arc;

use axum::extract::State;
use outpost_api::{AuditQuery, AuditView, Page};

use super::error::{ApiResult, Json, Query};
use super::WebState;
use crate::service;

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    description = "Newest first. Page on with `after` set to the previous page's `next` \
        (`offset` still works, but reads every row it skips). `total` counts at most 10,000 \
        matches: `total_exact` says whether it is the count or a lower bound.",
    responses((status = 200, body = Page<AuditView>),
              (status = 422, description = "a malformed `after`, or `after` with `offset`", body = outpost_api::ErrorBody)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Page<AuditView>>> {
    Ok(Json(service::audit::list(&st.core, &q).await?))
}
