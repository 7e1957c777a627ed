//! `/api/v1/audit`: the audit trail, newest first, for admins.

use std::sync::Arc;

use axum::extract::State;
use outpost_api::{AuditQuery, AuditView, Page};

use super::error::{ApiResult, Json, Query};
use super::users::paging;
use super::{views, ApiState};
use crate::model::UserId;
use crate::store::audit::AuditFilter;

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditView>)))]
pub async fn list(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Page<AuditView>>> {
    let f = AuditFilter {
        user_id: q.user.map(UserId),
        action: q.action,
        resource_type: q.resource_type,
        resource_id: q.resource_id,
        since: q.since,
        until: q.until,
    };
    let page = st.store.list_audit(&f, paging(q.limit, q.offset)).await?;
    Ok(Json(views::page(page, views::audit)))
}
