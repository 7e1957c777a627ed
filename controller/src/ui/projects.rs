//! Projects: the list with each one's source and sync state, and one project's page (its
//! facts, revisions and playbooks), where an admin starts a sync of a git project. A failed
//! sync's error is shown as the text it is, so the person who reads it can fix the repository.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect};
use axum::Extension;
use maud::{html, Markup};
use outpost_api::{PageQuery, ProjectKind, ProjectView, RevisionView, SyncState};
use serde::Deserialize;

use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::{Path, Query};
use crate::http::WebState;
use crate::service;

const PER_PAGE: i64 = 50;
const REVISIONS_PER_PAGE: i64 = 20;

#[derive(Debug, Default, Deserialize)]
pub struct OffsetQuery {
    offset: Option<i64>,
}

/// The first 12 characters of a commit or digest: enough to tell them apart on a page.
fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

/// A size as people read it: "812 B", "4.0 KiB", "12.5 MiB".
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{} B", n.max(0));
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

fn sync_state(s: SyncState) -> Markup {
    html! { span class=(format!("badge sync-{}", s.as_str())) data-sync=(s.as_str()) { (s.as_str()) } }
}

/// Where the project's tree comes from.
fn source(p: &ProjectView) -> Markup {
    html! {
        @match p.kind {
            ProjectKind::Git => {
                code.git-url { (p.git_url.as_deref().unwrap_or("")) }
                " @ "
                @match &p.git_ref {
                    Some(r) => code { (r) },
                    None => span.muted { "default branch" },
                }
            }
            ProjectKind::Archive => "uploaded archive",
            ProjectKind::File => "one playbook",
        }
    }
}

/// A revision in a line: its commit (git projects) and its digest, each shortened.
fn revision_ref(r: Option<&RevisionView>) -> Markup {
    html! {
        @match r {
            Some(r) => {
                @if let Some(c) = &r.commit { "commit " code title=(c) { (short(c)) } " " }
                "digest " code title=(r.digest) { (short(&r.digest)) }
            }
            None => span.muted { "none yet" },
        }
    }
}

/// GET /projects
pub async fn list(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<OffsetQuery>,
) -> PageResult {
    let offset = q.offset.unwrap_or(0).max(0);
    let page = or_page(
        service::projects::list(
            &st.core,
            &PageQuery {
                limit: Some(PER_PAGE),
                offset: Some(offset),
            },
        )
        .await,
    )?;
    let body = html! {
        @if page.items.is_empty() {
            p.muted { "No project yet. Add a git repository with " code { "outpost project add" } "." }
        } @else {
            div.scroll {
                table #projects {
                    thead { tr {
                        th scope="col" { "name" } th scope="col" { "kind" } th scope="col" { "source" }
                        th scope="col" { "sync" } th scope="col" { "revision" } th scope="col" { "synced" }
                    } }
                    tbody {
                        @for p in &page.items {
                            tr class=[(!p.is_active).then_some("inactive")] data-project=(p.id) {
                                td { a href=(format!("/projects/{}", p.id)) { (p.name) } }
                                td { (p.kind.as_str()) }
                                td { (source(p)) }
                                td.sync {
                                    (sync_state(p.sync_state))
                                    @if p.sync_state == SyncState::Failed {
                                        @if let Some(e) = &p.sync_error { div.error.sync-error { (e) } }
                                    }
                                }
                                td.revision { (revision_ref(p.current_revision.as_ref())) }
                                td { (layout::time(p.synced_at)) }
                            }
                        }
                    }
                }
            }
            (layout::pager("/projects", offset, PER_PAGE, page.total))
        }
    };
    Ok(layout::page(&v, Area::Projects, "Projects", body).into_response())
}

/// GET /projects/{id}
pub async fn show(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
    Query(q): Query<OffsetQuery>,
) -> PageResult {
    let p = or_page(service::projects::get(&st.core, &id).await)?;
    let offset = q.offset.unwrap_or(0).max(0);
    let revisions = or_page(
        service::projects::revisions(
            &st.core,
            &p.id.to_string(),
            &PageQuery {
                limit: Some(REVISIONS_PER_PAGE),
                offset: Some(offset),
            },
        )
        .await,
    )?;
    let current = p.current_revision.as_ref().map(|r| r.digest.as_str());
    let playbooks = p.playbooks.as_deref().unwrap_or_default();
    let may_sync = p.kind == ProjectKind::Git && v.may("POST", "/api/v1/projects/{id}/sync");
    let may_launch = v.may("POST", "/api/v1/jobs");
    let body = html! {
        section.card #project data-sync=(p.sync_state.as_str()) {
            dl.facts {
                dt { "Kind" } dd #project-kind { (p.kind.as_str()) }
                dt { "Source" } dd #project-source { (source(&p)) }
                @if let Some(inv) = &p.inventory_path { dt { "Inventory" } dd { code { (inv) } } }
                @if let Some(c) = &p.git_credential { dt { "Git credential" } dd #git-credential { (credential_ref(&v, c)) } }
                @if !p.vault_credentials.is_empty() {
                    dt { "Vault credentials" }
                    dd #vault-credentials { @for (i, c) in p.vault_credentials.iter().enumerate() { @if i > 0 { ", " } (credential_ref(&v, c)) } }
                }
                @if let Some(d) = &p.description { dt { "Description" } dd { (d) } }
                dt { "Sync" } dd #sync-state { (sync_state(p.sync_state)) }
                @if p.sync_state == SyncState::Syncing {
                    dt { "Sync started" } dd { (layout::time(p.sync_started_at)) }
                }
                dt { "Synced" } dd #synced-at { (layout::time(p.synced_at)) }
                dt { "Revision" } dd #current-revision { (revision_ref(p.current_revision.as_ref())) }
                dt { "Active" } dd { @if p.is_active { "yes" } @else { "no" } }
                dt { "Created" } dd { (layout::time(Some(p.created_at))) }
            }
            @if p.sync_state == SyncState::Failed {
                @if let Some(e) = &p.sync_error {
                    // The previous revision (if any) stays current; this says why the new one did not come.
                    h2 { "Why the last sync failed" }
                    pre.wrap.error #sync-error role="alert" { (e) }
                }
            }
            @if p.sync_state == SyncState::Syncing {
                p.muted { "A sync is running. " a href=(format!("/projects/{}", p.id)) { "Reload" } " to see how it ended." }
            }
            @if may_sync {
                form.actions #sync method="post" action=(format!("/projects/{}/sync", p.id)) {
                    (layout::csrf(&v))
                    button type="submit" disabled[p.sync_state == SyncState::Syncing] { "Sync now" }
                }
            }
        }
        section.card {
            h2 { "Playbooks" }
            @if playbooks.is_empty() {
                p.muted { "No playbook yet: a sync finds the playbooks of the project's tree." }
            } @else {
                div.scroll {
                    table #project-playbooks {
                        thead { tr {
                            th scope="col" { "name" } th scope="col" { "path" } th scope="col" { "active" }
                            @if may_launch { th scope="col" { "launch" } }
                        } }
                        tbody {
                            @for pb in playbooks {
                                tr class=[(!pb.is_active).then_some("inactive")] data-playbook=(pb.id) {
                                    td { a href=(format!("/playbooks/{}", pb.id)) { (pb.name) } }
                                    td { code { (pb.file_path) } }
                                    td { @if pb.is_active { "yes" } @else { "no" } }
                                    @if may_launch {
                                        td { @if pb.is_active { a.launch href=(format!("/jobs/new?playbook={}", pb.id)) { "Launch" } } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Revisions" }
            @if revisions.items.is_empty() {
                p.muted { "No revision yet." }
            } @else {
                div.scroll {
                    table #revisions {
                        thead { tr {
                            th scope="col" { "commit" } th scope="col" { "digest" } th scope="col" { "size" }
                            th scope="col" { "entries" } th scope="col" { "created" }
                        } }
                        tbody {
                            @for r in &revisions.items {
                                tr data-digest=(r.digest) class=[(current == Some(r.digest.as_str())).then_some("current")] {
                                    td { @match &r.commit { Some(c) => code title=(c) { (short(c)) }, None => span.muted { "—" } } }
                                    td {
                                        code title=(r.digest) { (short(&r.digest)) }
                                        @if current == Some(r.digest.as_str()) { " " span.label { "current" } }
                                    }
                                    td { (bytes(r.size_bytes)) }
                                    td { (r.entries) }
                                    td { (layout::time(Some(r.created_at))) }
                                }
                            }
                        }
                    }
                }
                (layout::pager(&format!("/projects/{}", p.id), offset, REVISIONS_PER_PAGE, revisions.total))
            }
        }
    };
    Ok(layout::page(&v, Area::Projects, &format!("Project {}", p.name), body).into_response())
}

/// A credential's name, linked to its page for those who may read it (admins).
fn credential_ref(v: &Viewer, c: &outpost_api::NameRef) -> Markup {
    html! {
        @if v.may("GET", "/api/v1/credentials/{id}") {
            a href=(format!("/admin/credentials/{}", c.id)) { (c.name) }
        } @else {
            (c.name)
        }
    }
}

/// POST /projects/{id}/sync: starts the sync (it runs in the background) and shows the
/// project, syncing; a sync already running is refused by the service and shown as such.
pub async fn sync(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<String>,
) -> PageResult {
    let p = or_page(service::projects::sync(&st.core, &v.caller, &id).await)?;
    Ok(Redirect::to(&format!("/projects/{}", p.id)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(12 * 1024 * 1024 + 512 * 1024), "12.5 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
