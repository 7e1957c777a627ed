//! The audit trail, newest first, for admins.

use outpost_api::{AuditQuery, AuditView, Page};

use super::{keyset_paging, views, Result};
use crate::core::Core;
use crate::model::UserId;
use crate::store::audit::AuditFilter;
use crate::store::Store;

/// A page of the trail, from the read replica while it is good.
pub async fn list(core: &Core, q: &AuditQuery) -> Result<Page<AuditView>> {
    core.store.read(|store| list_from(store, q)).await
}

async fn list_from(store: Store, q: &AuditQuery) -> Result<Page<AuditView>> {
    let f = AuditFilter {
        user_id: q.user.map(UserId),
        action: q.action.clone(),
        resource_type: q.resource_type.clone(),
        resource_id: q.resource_id,
        since: q.since,
        until: q.until,
    };
    let paging = keyset_paging(q.limit, q.offset, q.after.as_deref())?;
    let page = store.list_audit(&f, paging).await?;
    Ok(views::page(page, views::audit))
}
