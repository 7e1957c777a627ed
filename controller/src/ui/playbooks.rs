//! Playbooks: the list, one playbook's YAML with its SHA-256, and uploading a new version
//! (admins), which gives it a new file and a new hash.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use maud::html;
use outpost_api::{PageQuery, PlaybookPatchRequest, PlaybookView};
use serde::Deserialize;

use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::ApiError;
use crate::http::error::Path;
use crate::http::WebState;
use crate::model::PlaybookId;
use crate::service;

/// GET /playbooks
pub async fn list(State(st): State<Arc<WebState>>, Extension(v): Extension<Viewer>) -> PageResult {
    let page = or_page(
        service::playbooks::list(
            &st.core,
            &(PageQuery {
                limit: Some(1000),
                offset: Some(0),
            }),
        )
        .await,
    )?;
    let body = html! {
        @if page.items.is_empty() {
            p.muted { "No playbook yet. Add one with " code { "outpost playbook add site.yml" } "." }
        } @else {
            div.scroll {
                table {
                    thead { tr { th scope="col" { "name" } th scope="col" { "description" } th scope="col" { "SHA-256" } th scope="col" { "updated" } th scope="col" { "active" } } }
                    tbody {
                        @for p in &page.items {
                            tr class=[(!p.is_active).then_some("inactive")] {
                                td { a href=(format!("/playbooks/{}", p.id)) { (p.name) } }
                                td { (p.description.as_deref().unwrap_or("")) }
                                td { code { (&p.file_hash[..12.min(p.file_hash.len())]) "…" } }
                                td { (layout::time(Some(p.updated_at))) }
                                td { @if p.is_active { "yes" } @else { "no" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&v, Area::Playbooks, "Playbooks", body).into_response())
}

fn render(v: &Viewer, p: &PlaybookView, error: Option<&str>, draft: Option<&str>) -> maud::Markup {
    let content = p.content.as_deref().unwrap_or("");
    layout::page(
        v,
        Area::Playbooks,
        &format!("Playbook {}", p.name),
        html! {
            section.card {
                dl.facts {
                    dt { "SHA-256" } dd { code #playbook-hash { (p.file_hash) } }
                    dt { "File" } dd { code { (p.file_path) } }
                    dt { "Updated" } dd { (layout::time(Some(p.updated_at))) }
                    @if let Some(d) = &p.description { dt { "Description" } dd { (d) } }
                }
                @if v.may("POST", "/api/v1/jobs") {
                    p.actions { a.button href="/jobs/new" { "Launch" } }
                }
                pre.code #playbook-content { (content) }
            }
            @if v.may("PATCH", "/api/v1/playbooks/{id}") {
                section.card {
                    h2 { "Upload a new version" }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    form #upload method="post" action=(format!("/playbooks/{}", p.id)) {
                        (layout::csrf(v))
                        label for="file" { "From a file" }
                        input #file type="file" accept=".yml,.yaml,text/yaml" data-fill="content";
                        label for="content" { "YAML" }
                        textarea #content name="content" rows="16" spellcheck="false" required { (draft.unwrap_or(content)) }
                        button type="submit" { "Save as the new version" }
                    }
                }
            }
        },
    )
}

/// GET /playbooks/{id}
pub async fn show(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<PlaybookId>,
) -> PageResult {
    let p = or_page(service::playbooks::get(&st.core, id).await)?;
    Ok(render(&v, &p, None, None).into_response())
}

#[derive(Debug, Deserialize)]
pub struct UploadForm {
    content: String,
}

/// POST /playbooks/{id}: the new YAML, checked and stored by the API's handler.
pub async fn upload(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<PlaybookId>,
    Form(f): Form<UploadForm>,
) -> PageResult {
    // A browser sends a textarea's lines ending in CRLF: store the file as it was written.
    let content = f.content.replace("\r\n", "\n");
    let patch = PlaybookPatchRequest {
        content: Some(content),
        ..Default::default()
    };
    let changed = service::playbooks::update(&st.core, &v.caller, id, patch).await;
    match changed.map_err(ApiError::from) {
        Ok(_) => Ok(Redirect::to(&format!("/playbooks/{id}")).into_response()),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            let p = or_page(service::playbooks::get(&st.core, id).await)?;
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                render(&v, &p, Some(&e.message), Some(&f.content)),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}
