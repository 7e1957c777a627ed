//! Launching a playbook from the browser: choose it (or arrive with it chosen, from a
//! project's page), choose servers by name or by environment and tags (with a preview of which
//! servers match), give extra vars as YAML or JSON and the run options; a mistake is shown next
//! to its field and nothing typed is lost.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use maud::{html, Markup};
use outpost_api::{IdOrName, LaunchRequest, ServerSelector};
use serde::Deserialize;

use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::ApiError;
use crate::http::error::Query;
use crate::http::WebState;
use crate::model::{JsonObject, Paging, Server};
use crate::service;
use crate::store::servers::ServerFilter;

/// What the form holds, as typed.
#[derive(Debug, Default, Clone)]
pub struct LaunchForm {
    playbook: String,
    target: String,
    servers: Vec<String>,
    environment: String,
    selector: String,
    extra_vars: String,
    tags: String,
    skip_tags: String,
    check: bool,
    diff: bool,
    verbosity: String,
    preview: bool,
}

impl LaunchForm {
    fn parse(body: &[u8]) -> LaunchForm {
        let mut f = LaunchForm::default();
        for (k, v) in url::form_urlencoded::parse(body) {
            let v = v.into_owned();
            match k.as_ref() {
                "playbook" => f.playbook = v,
                "target" => f.target = v,
                "server" => f.servers.push(v),
                "environment" => f.environment = v,
                "selector" => f.selector = v,
                "extra_vars" => f.extra_vars = v,
                "tags" => f.tags = v,
                "skip_tags" => f.skip_tags = v,
                "check" => f.check = true,
                "diff" => f.diff = true,
                "verbosity" => f.verbosity = v,
                "preview" => f.preview = true,
                _ => {}
            }
        }
        f
    }
}

/// Mistakes by field name ("" for the form as a whole).
type Errors = HashMap<&'static str, String>;

/// `dc=fra1, role=web` → pairs, each read as the protocol reads a label (spaces around `=`
/// allowed); a piece without `=` is an error naming it.
pub fn parse_selector(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = outpost_protocol::message::parse_label(p).map_err(|e| e.to_string())?;
            match k.trim() {
                "" => Err(format!(
                    "'{p}' is not a label; write key=value, e.g. dc=fra1"
                )),
                k => Ok((k.to_owned(), v.trim().to_owned())),
            }
        })
        .collect()
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Extra vars as YAML or JSON (JSON is YAML too) → a JSON object; empty text is none. Read
/// within [`Limits::VARS`](outpost_api::yaml::Limits::VARS): size, depth and expanded nodes are
/// checked before the value is built, so a few hundred bytes of aliases cannot grow the
/// controller.
pub fn parse_vars(text: &str) -> Result<Option<JsonObject>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let value = outpost_api::yaml::parse_one(t, outpost_api::yaml::Limits::VARS)
        .map_err(|e| e.to_string())?;
    match value {
        serde_json::Value::Object(o) => Ok(Some(o)),
        _ => Err("must be a mapping of names to values, e.g. greeting: hi".into()),
    }
}

/// The active servers a selector matches (at most 1,000 listed).
async fn matching(
    st: &WebState,
    environment: &str,
    selector: &[(String, String)],
) -> Result<(Vec<Server>, i64), crate::store::StoreError> {
    let f = ServerFilter {
        active: Some(true),
        environment: Some(environment.trim().to_owned()).filter(|e| !e.is_empty()),
        tags: selector.to_vec(),
    };
    let page = st.core.store.list_servers(&f, Paging::new(1000, 0)).await?;
    Ok((page.items, page.total))
}

fn preview_list(servers: &[Server], total: i64) -> Markup {
    html! {
        @if servers.is_empty() {
            p.error { "No active server matches." }
        } @else {
            p { (total) " server" @if total != 1 { "s" } " match:" }
            ul.inline {
                @for s in servers.iter().take(100) { li { (s.hostname) } }
                @if total > 100 { li.muted { "and " (total - 100) " more" } }
            }
        }
    }
}

fn field_error(errors: &Errors, field: &str) -> Markup {
    html! {
        @if let Some(e) = errors.get(field) {
            p.field-error role="alert" id=(format!("err-{field}")) { (e) }
        }
    }
}

async fn render(
    st: &WebState,
    v: &Viewer,
    f: &LaunchForm,
    errors: &Errors,
    preview: Option<Markup>,
) -> PageResult {
    let playbooks = or_page(
        st.core
            .store
            .list_playbooks(Some(true), Paging::new(1000, 0))
            .await,
    )?;
    let servers = or_page(
        st.core
            .store
            .list_servers(
                &ServerFilter {
                    active: Some(true),
                    ..Default::default()
                },
                Paging::new(1000, 0),
            )
            .await,
    )?;
    let by_filter = f.target == "filter";
    let body = html! {
        @if let Some(e) = errors.get("") { p.error role="alert" { (e) } }
        form.card.launch #launch method="post" action="/jobs" novalidate {
            (layout::csrf(v))
            label for="playbook" { "Playbook" }
            select #playbook name="playbook" required {
                @for p in &playbooks.items {
                    option value=(p.id.0) selected[f.playbook == p.id.0.to_string()] { (p.name) }
                }
            }
            (field_error(errors, "playbook"))
            fieldset {
                legend { "Servers" }
                label { input type="radio" name="target" value="servers" checked[!by_filter]; " By name" }
                label { input type="radio" name="target" value="filter" checked[by_filter]; " By environment and tags" }
                div.by-name {
                    label for="servers" { "Servers (hold Ctrl or Shift to choose several)" }
                    select #servers name="server" multiple size="6" {
                        @for s in &servers.items {
                            option value=(s.hostname) selected[f.servers.contains(&s.hostname)] { (s.hostname) @if let Some(e) = &s.environment { " (" (e) ")" } }
                        }
                    }
                }
                div.by-filter {
                    label for="environment" { "Environment" }
                    input #environment name="environment" value=(f.environment) placeholder="production";
                    label for="selector" { "Tags (key=value, comma separated)" }
                    input #selector name="selector" value=(f.selector) placeholder="dc=fra1, role=web";
                    button #preview-button type="submit" name="preview" value="1" formnovalidate { "Preview" }
                    div #preview aria-live="polite" { @if let Some(p) = &preview { (p) } }
                }
                (field_error(errors, "target"))
            }
            label for="extra_vars" { "Extra vars (YAML or JSON)" }
            textarea #extra_vars name="extra_vars" rows="5" spellcheck="false" placeholder="greeting: hello" aria-describedby="err-extra_vars" { (f.extra_vars) }
            (field_error(errors, "extra_vars"))
            div.row {
                div { label for="tags" { "Tags (--tags)" } input #tags name="tags" value=(f.tags); }
                div { label for="skip_tags" { "Skip tags (--skip-tags)" } input #skip_tags name="skip_tags" value=(f.skip_tags); }
                div { label for="verbosity" { "Verbosity" }
                    select #verbosity name="verbosity" {
                        @for n in 0..=4u8 { option value=(n) selected[f.verbosity == n.to_string()] { @if n == 0 { "normal" } @else { "-" ("v".repeat(n.into())) } } }
                    }
                }
            }
            (field_error(errors, "options"))
            label { input type="checkbox" name="check" checked[f.check]; " Check mode (a dry run: --check)" }
            label { input type="checkbox" name="diff" checked[f.diff]; " Show differences (--diff)" }
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
        layout::page(v, Area::Jobs, "Launch a playbook", body),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct FormQuery {
    /// The playbook chosen already (its id), as a project's page links to it.
    playbook: Option<String>,
}

/// GET /jobs/new
pub async fn form(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<FormQuery>,
) -> PageResult {
    let f = LaunchForm {
        playbook: q.playbook.unwrap_or_default(),
        ..LaunchForm::default()
    };
    render(&st, &v, &f, &Errors::new(), None).await
}

#[derive(Debug, Default, Deserialize)]
pub struct PreviewQuery {
    environment: Option<String>,
    selector: Option<String>,
}

/// GET /jobs/preview: which servers a selector matches, as a fragment for the form's script.
pub async fn preview(State(st): State<Arc<WebState>>, Query(q): Query<PreviewQuery>) -> Response {
    match parse_selector(q.selector.as_deref().unwrap_or("")) {
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, html! { p.error { (e) } }).into_response(),
        Ok(sel) => match matching(&st, q.environment.as_deref().unwrap_or(""), &sel).await {
            Ok((servers, total)) => preview_list(&servers, total).into_response(),
            Err(e) => layout::api_refusal(e.into()),
        },
    }
}

/// POST /jobs: launches through the API's own handler; on success the job's page (one
/// server) or the list of the new jobs.
pub async fn submit(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    body: Bytes,
) -> PageResult {
    let f = LaunchForm::parse(&body);
    let mut errors = Errors::new();
    let selector = parse_selector(&f.selector).unwrap_or_else(|e| {
        errors.insert("target", format!("Tags: {e}"));
        Vec::new()
    });
    if f.preview {
        let p = match matching(&st, &f.environment, &selector).await {
            Ok((s, total)) => Some(preview_list(&s, total)),
            Err(e) => return Err(e.into()),
        };
        return render(&st, &v, &f, &errors, p).await.map(|r| {
            let (mut parts, body) = r.into_parts();
            parts.status = StatusCode::OK;
            Response::from_parts(parts, body)
        });
    }
    // Bounded, but still CPU work: kept off the async workers.
    let text = f.extra_vars.clone();
    let parsed = tokio::task::spawn_blocking(move || parse_vars(&text))
        .await
        .unwrap_or_else(|_| Err("could not be read".into()));
    let extra_vars = parsed.unwrap_or_else(|e| {
        errors.insert("extra_vars", format!("Extra vars: {e}"));
        None
    });
    let playbook: Option<i64> = f.playbook.trim().parse().ok();
    if playbook.is_none() {
        errors.insert("playbook", "Choose a playbook.".into());
    }
    let verbosity: u8 = f.verbosity.trim().parse().unwrap_or(0);
    let (servers, filter) = if f.target == "filter" {
        if f.environment.trim().is_empty() && selector.is_empty() && !errors.contains_key("target")
        {
            errors.insert(
                "target",
                "Give an environment or tags, or choose servers by name.".into(),
            );
        }
        (
            None,
            Some(ServerSelector {
                environment: Some(f.environment.trim().to_owned()).filter(|e| !e.is_empty()),
                tags: selector.into_iter().collect(),
            }),
        )
    } else {
        if f.servers.is_empty() {
            errors.insert("target", "Choose at least one server.".into());
        }
        (
            Some(
                f.servers
                    .iter()
                    .map(|s| IdOrName::Name(s.clone()))
                    .collect(),
            ),
            None,
        )
    };
    if !errors.is_empty() {
        return render(&st, &v, &f, &errors, None).await;
    }
    let req = LaunchRequest {
        playbook: Some(IdOrName::Id(playbook.unwrap_or_default())),
        project: None,
        playbook_path: None,
        servers,
        filter,
        extra_vars,
        tags: list(&f.tags),
        skip_tags: list(&f.skip_tags),
        check: f.check,
        diff: f.diff,
        verbosity,
        credentials: Vec::new(),
        rollout: None,
    };
    match service::jobs::launch(&st.core, &v.caller, req)
        .await
        .map_err(ApiError::from)
    {
        Ok(resp) => match resp.jobs.as_slice() {
            [one] => Ok(Redirect::to(&format!("/jobs/{}", one.id)).into_response()),
            _ => Ok(Redirect::to(&format!(
                "/jobs?playbook={}",
                resp.jobs.first().map(|j| j.playbook.id).unwrap_or_default()
            ))
            .into_response()),
        },
        Err(e) if e.status.is_client_error() => {
            let m = e.message.to_lowercase();
            let field = if m.starts_with("extra var") {
                "extra_vars"
            } else if m.starts_with("playbook") {
                "playbook"
            } else if m.contains("server") || m.contains("filter") {
                "target"
            } else if m.contains("tag") || m.contains("verbosity") {
                "options"
            } else {
                ""
            };
            errors.insert(field, e.message);
            render(&st, &v, &f, &errors, None).await
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_vars_are_read_as_yaml_or_json() {
        let y = parse_vars("greeting: hi\ncount: 3\nlist: [a, b]")
            .unwrap()
            .unwrap();
        assert_eq!(y["greeting"], "hi");
        assert_eq!(y["count"], 3);
        assert_eq!(y["list"][1], "b");
        let j = parse_vars(r#"{"a": {"b": true}}"#).unwrap().unwrap();
        assert_eq!(j["a"]["b"], true);
        assert_eq!(parse_vars("  ").unwrap(), None);
        assert!(parse_vars("- a\n- b").unwrap_err().contains("mapping"));
        assert!(parse_vars("{\"a\": ").unwrap_err().contains("YAML"));
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n";
        assert!(parse_vars(laughs)
            .unwrap_err()
            .contains("expands to more than"));
        assert!(parse_vars("a: [unclosed").unwrap_err().contains("YAML"));
    }

    #[test]
    fn selectors_are_key_value_pairs() {
        assert_eq!(
            parse_selector("dc=fra1, role = web").unwrap(),
            vec![("dc".into(), "fra1".into()), ("role".into(), "web".into())]
        );
        assert!(parse_selector("dc").unwrap_err().contains("'dc'"));
        assert_eq!(parse_selector("").unwrap(), vec![]);
    }

    #[test]
    fn repeated_server_fields_are_all_kept() {
        let f = LaunchForm::parse(b"playbook=1&server=a&server=b&check=on&extra_vars=x%3A+1");
        assert_eq!(f.servers, ["a", "b"]);
        assert!(f.check && !f.diff);
        assert_eq!(f.extra_vars, "x: 1");
    }
}
