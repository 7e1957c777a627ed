//! `/api/v1/audit`: the audit trail, newest first, for admins.

use std::sync::Arc;

use axum::extract::State;
use outpost_api::{AuditQuery, AuditView, Page};

use super::error::{ApiResult, Json, Query};
use super::WebState;
use crate::service;

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditView>)))]
pub async fn list(
    State(st): State<Arc<WebState>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Page<AuditView>>> {
    Ok(Json(service::audit::list(&st.core, &q).await?))
}
