//! Audit records exported to the archive by id range, in the job archives' format (one JSON
//! record a line, keyed by the record's id), verified and recorded in `audit_archives`.
//! Audit rows are never deleted here (the database refuses it, migration 0021): they go only
//! when a whole partition that an export covers is dropped, and [`covered`] says whether one is.

use std::time::Duration;

use chrono::Utc;

use super::format::Writer;
use super::{Archive, ArchiveError};
use crate::store::archives::AuditArchive;
use crate::store::Store;

const BATCH: i64 = 1_000;

/// The key of an export of audit records `first..=last`.
pub fn audit_key(first: i64, last: i64) -> String {
    format!("audit/{first:020}-{last:020}.olog")
}

/// Exports the audit records with ids in `first..=last`, verifies the object and records it.
pub async fn export_audit_range(
    store: &Store,
    archive: &Archive,
    first: i64,
    last: i64,
    label: &str,
) -> Result<AuditArchive, ArchiveError> {
    if first > last {
        return Err(ArchiveError::Settings(format!(
            "audit export: empty range {first}..{last}"
        )));
    }
    let key = audit_key(first, last);
    let mut w = Writer::new();
    let mut after = first - 1;
    loop {
        let rows = store.audit_range(after, last, BATCH).await?;
        let Some(end) = rows.last().map(|r| r.id.0) else {
            break;
        };
        for r in &rows {
            let json = serde_json::to_vec(r).map_err(|_| ArchiveError::Encode(r.id.0))?;
            w.push(r.id.0, &json)
                .map_err(|e| ArchiveError::format(&key, e))?;
        }
        after = end;
    }
    let (object, index) = w.finish().map_err(|e| ArchiveError::format(&key, e))?;
    let bytes = object.len() as i64;
    archive.put_verified(&key, object, &index).await?;
    let mut row = AuditArchive {
        id: 0,
        first_id: first,
        last_id: last,
        label: label.chars().take(100).collect(),
        location: key,
        row_count: index.records as i64,
        bytes,
        sha256: index.sha256_hex(),
        archived_at: Utc::now(),
    };
    row.id = store.insert_audit_archive(&row).await?;
    Ok(row)
}

/// Exports the audit records older than `retention` that no export covers yet (none: `None`).
pub async fn export_expired_audit(
    store: &Store,
    archive: &Archive,
    retention: Duration,
) -> Result<Option<AuditArchive>, ArchiveError> {
    let age = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(36_500));
    let Some(cutoff) = Utc::now().checked_sub_signed(age) else {
        return Ok(None);
    };
    let Some((first, last)) = store.audit_unexported_before(cutoff).await? else {
        return Ok(None);
    };
    let label = format!("before {}", cutoff.format("%Y-%m-%d"));
    export_audit_range(store, archive, first, last, &label)
        .await
        .map(Some)
}

/// Whether verified exports cover every id in `first..=last` (a partition holding those ids
/// may then be dropped).
pub async fn covered(store: &Store, first: i64, last: i64) -> crate::store::Result<bool> {
    let mut next = first;
    for a in store.audit_archives().await? {
        if a.first_id <= next && a.last_id >= next {
            next = a.last_id + 1;
        }
        if next > last {
            return Ok(true);
        }
    }
    Ok(next > last)
}
