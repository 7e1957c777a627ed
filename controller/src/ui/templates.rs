//! Job templates in the browser: the list (everyone), a launch page generated from the
//! survey — one input per question, of its kind, a password input for a secret, each refusal
//! shown beside its field and what was typed kept (never a secret) — and, for admins, a
//! template written as YAML or JSON in a text area.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Extension;
use maud::{html, Markup};
use outpost_api::{
    PageQuery, Question, QuestionKind, TemplateLaunchRequest, TemplateSpec, TemplateView,
};
use serde_json::Value;

use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::ApiError;
use crate::http::WebState;
use crate::service;

/// What a form holds, as typed: field name → values (a multi-choice sends several).
type Typed = HashMap<String, Vec<String>>;
/// Refusals by field ("" for the form as a whole).
type Errors = HashMap<String, String>;

fn parse(body: &[u8]) -> Typed {
    let mut f = Typed::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        f.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    f
}

fn first<'a>(f: &'a Typed, k: &str) -> &'a str {
    f.get(k)
        .and_then(|v| v.first())
        .map(String::as_str)
        .unwrap_or("")
}

fn field_error(errors: &Errors, field: &str) -> Markup {
    html! {
        @if let Some(e) = errors.get(field) {
            p.field-error role="alert" id=(format!("err-{field}")) { (e) }
        }
    }
}

/// GET /templates
pub async fn list(State(st): State<Arc<WebState>>, Extension(v): Extension<Viewer>) -> PageResult {
    let page = or_page(
        service::templates::list(
            &st.core,
            &PageQuery {
                limit: Some(1000),
                offset: Some(0),
            },
        )
        .await,
    )?;
    let may_launch = v.may("POST", "/api/v1/templates/{id_or_name}/launch");
    let may_write = v.may("POST", "/api/v1/templates");
    let body = html! {
        @if may_write { p { a.button href="/templates/new" { "New template" } } }
        @if page.items.is_empty() {
            p.muted { "No template yet." }
        } @else {
            div.scroll { table #templates {
                thead { tr {
                    th scope="col" { "name" } th scope="col" { "runs" } th scope="col" { "questions" }
                    th scope="col" { "description" } th scope="col" { "updated" } th scope="col" {}
                } }
                tbody { @for t in &page.items {
                    tr data-template=(t.id) {
                        td { (t.name) }
                        td { (runs(t)) }
                        td { (t.survey.len()) }
                        td { (t.description.as_deref().unwrap_or("")) }
                        td { (layout::time(Some(t.updated_at))) }
                        td {
                            @if may_launch { a href=(format!("/templates/{}/launch", t.id)) { "Launch" } }
                            @if may_write { " " a href=(format!("/templates/{}/edit", t.id)) { "Edit" } }
                        }
                    }
                } }
            } }
        }
    };
    Ok(layout::page(&v, Area::Templates, "Templates", body).into_response())
}

fn runs(t: &TemplateView) -> String {
    match (&t.playbook, &t.project, &t.playbook_path) {
        (Some(p), _, _) => p.name.clone(),
        (None, Some(p), Some(path)) => format!("{}: {path}", p.name),
        _ => "-".into(),
    }
}

/// One question's input, of its kind, with what was typed (never a secret's).
fn question(q: &Question, typed: &Typed, errors: &Errors) -> Markup {
    let id = format!("q-{}", q.name);
    let label = q.label.clone().unwrap_or_else(|| q.name.clone());
    let default = q.default.as_ref().map(|d| match d {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let value = typed
        .get(&q.name)
        .and_then(|v| v.first().cloned())
        .or(default.clone())
        .unwrap_or_default();
    let err = format!("err-{}", q.name);
    html! {
        div.question data-question=(q.name) {
            @if q.kind == QuestionKind::MultiChoice {
                fieldset {
                    legend { (label) @if q.required { " *" } }
                    @for c in &q.choices {
                        @let picked = typed.get(&q.name).map(|v| v.contains(c)).unwrap_or_else(|| {
                            q.default.as_ref().and_then(Value::as_array).is_some_and(|d| d.iter().any(|x| x.as_str() == Some(c)))
                        });
                        label { input type="checkbox" name=(q.name) value=(c) checked[picked]; " " (c) }
                    }
                }
            } @else {
                label for=(id) { (label) @if q.required { " *" } }
                @match q.kind {
                    QuestionKind::Multiline => textarea id=(id) name=(q.name) rows="4" aria-describedby=(err) { (value) },
                    QuestionKind::Secret => input id=(id) name=(q.name) type="password" autocomplete="off" aria-describedby=(err);,
                    QuestionKind::Integer => input id=(id) name=(q.name) type="number" value=(value) min=[q.min] max=[q.max] aria-describedby=(err);,
                    QuestionKind::Choice => select id=(id) name=(q.name) aria-describedby=(err) {
                        @if !q.required { option value="" { "—" } }
                        @for c in &q.choices { option value=(c) selected[value == *c] { (c) } }
                    },
                    _ => input id=(id) name=(q.name) type="text" value=(value) maxlength=[q.max_length] aria-describedby=(err);,
                }
            }
            @if let Some(h) = &q.help { p.muted { (h) } }
            (field_error(errors, &q.name))
        }
    }
}

fn launch_page(v: &Viewer, t: &TemplateView, typed: &Typed, errors: &Errors) -> PageResult {
    let body = html! {
        p { "Runs " strong { (runs(t)) } @if let Some(d) = &t.description { " — " (d) } }
        @if let Some(e) = errors.get("") { p.error role="alert" { (e) } }
        form.card #template-launch method="post" action=(format!("/templates/{}/launch", t.id)) novalidate {
            (layout::csrf(v))
            @for q in &t.survey { (question(q, typed, errors)) }
            button.primary type="submit" { "Launch" }
        }
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((
        status,
        layout::page(v, Area::Templates, &format!("Launch {}", t.name), body),
    )
        .into_response())
}

/// GET /templates/{id}/launch
pub async fn launch_form(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i32>,
) -> PageResult {
    let t = or_page(service::templates::get(&st.core, &id.to_string()).await)?;
    launch_page(&v, &t, &Typed::new(), &Errors::new())
}

/// POST /templates/{id}/launch: the API's launch; on success the job (one server) or the jobs.
pub async fn launch(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i32>,
    body: Bytes,
) -> PageResult {
    let t = or_page(service::templates::get(&st.core, &id.to_string()).await)?;
    let typed = parse(&body);
    let mut answers = serde_json::Map::new();
    for q in &t.survey {
        let Some(values) = typed.get(&q.name) else {
            continue;
        };
        let value = if q.kind == QuestionKind::MultiChoice {
            Value::Array(values.iter().cloned().map(Value::String).collect())
        } else {
            Value::String(first(&typed, &q.name).to_owned())
        };
        answers.insert(q.name.clone(), value);
    }
    let req = TemplateLaunchRequest {
        answers,
        rollout: None,
    };
    match service::templates::launch(&st.core, &v.caller, &id.to_string(), &req).await {
        Ok(resp) => match resp.jobs.as_slice() {
            [one] => Ok(Redirect::to(&format!("/jobs/{}", one.id)).into_response()),
            _ => Ok(Redirect::to("/jobs").into_response()),
        },
        Err(e) if !e.fields.is_empty() => {
            let errors = e
                .fields
                .iter()
                .map(|f| (f.field.clone(), f.message.clone()))
                .collect();
            launch_page(&v, &t, &typed, &errors)
        }
        Err(e) => {
            let e = ApiError::from(e);
            if !e.status.is_client_error() {
                return Err(e.into());
            }
            let errors = Errors::from([(String::new(), e.message)]);
            launch_page(&v, &t, &typed, &errors)
        }
    }
}

/// The editor: a template as YAML (JSON is YAML too).
fn edit_page(v: &Viewer, action: &str, title: &str, text: &str, errors: &Errors) -> PageResult {
    let body = html! {
        @if let Some(e) = errors.get("") { p.error role="alert" { (e) } }
        @if !errors.is_empty() {
            ul.field-errors { @for (k, m) in errors { @if !k.is_empty() { li { code { (k) } ": " (m) } } } }
        }
        form.card #template-edit method="post" action=(action) novalidate {
            (layout::csrf(v))
            label for="spec" { "Template (YAML or JSON)" }
            textarea #spec name="spec" rows="24" spellcheck="false" { (text) }
            button.primary type="submit" { "Save" }
        }
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, layout::page(v, Area::Templates, title, body)).into_response())
}

const EXAMPLE: &str = "name: deploy\nplaybook: site\nservers: [web1]\nsurvey:\n  - name: version\n    type: text\n    required: true\n";

/// GET /templates/new
pub async fn new_form(Extension(v): Extension<Viewer>) -> PageResult {
    edit_page(&v, "/templates", "New template", EXAMPLE, &Errors::new())
}

/// GET /templates/{id}/edit
pub async fn edit_form(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i32>,
) -> PageResult {
    let t = or_page(service::templates::get(&st.core, &id.to_string()).await)?;
    let spec = serde_json::json!({
        "name": t.name, "description": t.description,
        "playbook": t.playbook.as_ref().map(|p| p.name.clone()),
        "project": t.project.as_ref().map(|p| p.name.clone()),
        "playbook_path": t.playbook_path, "servers": t.servers, "filter": t.filter,
        "extra_vars": t.extra_vars, "options": t.options, "time_limit_secs": t.time_limit_secs,
        "survey": t.survey,
    });
    let mut spec = spec;
    if let Some(o) = spec.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    let text = serde_json::to_string_pretty(&spec).unwrap_or_default();
    edit_page(
        &v,
        &format!("/templates/{id}/edit"),
        &format!("Edit {}", t.name),
        &text,
        &Errors::new(),
    )
}

fn read_spec(typed: &Typed) -> Result<TemplateSpec, String> {
    let text = first(typed, "spec");
    let value = outpost_api::yaml::parse_one(text, outpost_api::yaml::Limits::VARS)
        .map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| format!("not a template: {e}"))
}

/// POST /templates (create) and POST /templates/{id}/edit (replace).
async fn save(st: &WebState, v: &Viewer, id: Option<i32>, body: &[u8]) -> PageResult {
    let typed = parse(body);
    let (action, title) = match id {
        Some(id) => (format!("/templates/{id}/edit"), "Edit template"),
        None => ("/templates".to_owned(), "New template"),
    };
    let text = first(&typed, "spec").to_owned();
    let spec = match read_spec(&typed) {
        Ok(s) => s,
        Err(e) => {
            return edit_page(
                v,
                &action,
                title,
                &text,
                &Errors::from([(String::new(), e)]),
            )
        }
    };
    let saved = match id {
        Some(id) => service::templates::update(&st.core, &v.caller, &id.to_string(), spec).await,
        None => service::templates::create(&st.core, &v.caller, spec).await,
    };
    match saved {
        Ok(_) => Ok(Redirect::to("/templates").into_response()),
        Err(e) if !e.fields.is_empty() => {
            let errors = e
                .fields
                .iter()
                .map(|f| (f.field.clone(), f.message.clone()))
                .collect();
            edit_page(v, &action, title, &text, &errors)
        }
        Err(e) => {
            let e = ApiError::from(e);
            if !e.status.is_client_error() {
                return Err(e.into());
            }
            edit_page(
                v,
                &action,
                title,
                &text,
                &Errors::from([(String::new(), e.message)]),
            )
        }
    }
}

/// POST /templates
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    body: Bytes,
) -> PageResult {
    save(&st, &v, None, &body).await
}

/// POST /templates/{id}/edit
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i32>,
    body: Bytes,
) -> PageResult {
    save(&st, &v, Some(id), &body).await
}
