//! The fleet: agents and their revocation, one-time enrolment tokens for new agents (the
//! token's text is shown once; only its hash is kept), and install bundles that carry such a
//! token.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom};

use outpost_api::{
    AgentView, EnrollmentTokenCreated, EnrollmentTokenView, NewAgentBundleRequest,
    NewEnrollmentTokenRequest, Page, PageQuery,
};

use super::{paging, views, Caller, Kind, Result, ServiceError};
use crate::bundle::{self, BundleError, BundleRequest};
use crate::core::Core;
use crate::model::AgentId;

/// An install bundle written whole to an unnamed file, ready to be sent.
pub struct Bundle {
    pub file: std::fs::File,
    pub file_name: String,
    pub len: u64,
}

pub async fn list(core: &Core, q: &PageQuery) -> Result<Page<AgentView>> {
    let page = core.store.list_agents(paging(q.limit, q.offset)).await?;
    Ok(views::page(page, views::agent))
}

pub async fn get(core: &Core, id: AgentId) -> Result<AgentView> {
    Ok(views::agent(&core.store.get_agent(id).await?))
}

pub async fn revoke(core: &Core, caller: &Caller, id: AgentId) -> Result<AgentView> {
    let agent = core.store.revoke_agent(id, &caller.actor()).await?;
    core.lifecycle.settle_revoked(&agent).await?;
    Ok(views::agent(&agent))
}

pub async fn list_tokens(core: &Core, q: &PageQuery) -> Result<Page<EnrollmentTokenView>> {
    let page = core
        .store
        .list_enrollment_tokens(paging(q.limit, q.offset))
        .await?;
    Ok(views::page(page, views::enrollment_token))
}

pub async fn create_token(
    core: &Core,
    caller: &Caller,
    r: NewEnrollmentTokenRequest,
) -> Result<EnrollmentTokenCreated> {
    let ttl = ttl_of(r.ttl_hours)?;
    let labels = labels_of(&r.labels)?;
    let issued = crate::enroll::issue_token(
        &core.store,
        &core.ca.fingerprint(),
        &r.name,
        &labels,
        ttl,
        &caller.actor(),
    )
    .await?;
    Ok(EnrollmentTokenCreated {
        token: issued.token.encode(),
        record: views::enrollment_token(&issued.record),
    })
}

pub async fn delete_token(core: &Core, caller: &Caller, id: i32) -> Result<()> {
    core.store
        .delete_enrollment_token(id, &caller.actor())
        .await?;
    Ok(())
}

pub async fn create_bundle(
    core: &Core,
    caller: &Caller,
    r: NewAgentBundleRequest,
) -> Result<Bundle> {
    let req = BundleRequest {
        ttl: ttl_of(r.ttl_hours)?,
        labels: labels_of(&r.labels)?,
        name: r.name,
        hosts: r.addresses,
    };
    let bundle = bundle::prepare(&core.store, &core.bundle_origin, req, &caller.actor())
        .await
        .map_err(bundle_error)?;
    let (token_id, file_name, summary) = (bundle.token_id, bundle.file_name(), bundle.summary());
    // Written whole before the first byte is sent: a failure is an error response, not a
    // truncated download. The file has no name and is gone when the response is.
    let written =
        tokio::task::spawn_blocking(move || -> std::result::Result<std::fs::File, BundleError> {
            let mut f = bundle.write(tempfile::tempfile()?)?;
            f.seek(SeekFrom::Start(0))?;
            Ok(f)
        })
        .await
        .map_err(|e| ServiceError::internal(format!("the bundle's writer failed: {e}")))
        .and_then(|r| r.map_err(bundle_error));
    let file = match written {
        Ok(f) => f,
        Err(e) => {
            let _ = core
                .store
                .delete_enrollment_token(token_id, &caller.actor())
                .await;
            return Err(e);
        }
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    tracing::info!(user = %caller.user.username, %len, "{summary}");
    Ok(Bundle {
        file,
        file_name,
        len,
    })
}

fn bundle_error(e: BundleError) -> ServiceError {
    match e {
        BundleError::Name(_) | BundleError::NoAddress | BundleError::NotInCertificate { .. } => {
            ServiceError::unprocessable(e.to_string())
        }
        BundleError::AgentBinary { .. } | BundleError::NoAgentBinary { .. } => {
            ServiceError::new(Kind::Unavailable, e.to_string())
        }
        BundleError::Store(s) => s.into(),
        BundleError::Write(_) => {
            tracing::error!(error = %e, "cannot write an install bundle");
            ServiceError::internal("the controller could not write the bundle")
        }
    }
}

/// A token's lifetime: 1 hour to 30 days, 24 hours unless asked.
fn ttl_of(hours: Option<u32>) -> Result<chrono::Duration> {
    let h = hours.unwrap_or(24);
    if !(1..=24 * 30).contains(&h) {
        return Err(ServiceError::unprocessable("ttl_hours must be 1 to 720"));
    }
    Ok(chrono::Duration::hours(i64::from(h)))
}

/// A request's labels, each checked as an agent's label must be.
pub(crate) fn labels_of(labels: &BTreeMap<String, String>) -> Result<Vec<(String, String)>> {
    labels
        .iter()
        .map(|(k, v)| {
            outpost_protocol::message::parse_label(&format!("{k}={v}"))
                .map_err(|e| ServiceError::unprocessable(format!("label {k}={v}: {e}")))
        })
        .collect()
}
