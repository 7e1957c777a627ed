//! The fleet: servers (filter by environment and tag) and agents (online, labels, versions,
//! certificate expiry; revoke; make an enrolment token and show the command to paste on the
//! bastion, or download an install bundle that carries one).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use chrono::Utc;
use maud::{html, Markup};
use outpost_api::{
    EnrollmentTokenCreated, NewAgentBundleRequest, NewEnrollmentTokenRequest, PageQuery,
    ServerQuery,
};
use serde::Deserialize;

use super::launch::parse_selector;
use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::ApiError;
use crate::http::error::{Path, Query};
use crate::http::WebState;
use crate::model::AgentId;
use crate::service;

const PER_PAGE: i64 = 100;

#[derive(Debug, Default, Deserialize)]
pub struct ServersQuery {
    environment: Option<String>,
    tag: Option<String>,
    offset: Option<i64>,
}

/// GET /servers
pub async fn servers(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<ServersQuery>,
) -> PageResult {
    let environment = q.environment.clone().filter(|e| !e.trim().is_empty());
    let tag = q.tag.clone().filter(|t| !t.trim().is_empty());
    let offset = q.offset.unwrap_or(0).max(0);
    let page = or_page(
        service::servers::list(
            &st.core,
            &(ServerQuery {
                environment: environment.clone(),
                tag: tag.clone(),
                active: None,
                limit: Some(PER_PAGE),
                offset: Some(offset),
            }),
        )
        .await,
    )?;
    let base = layout::with_filters(
        "/servers",
        &[
            ("environment", environment.as_deref()),
            ("tag", tag.as_deref()),
        ],
    );
    let body = html! {
        form.filters method="get" action="/servers" {
            label { "Environment " input name="environment" value=(environment.as_deref().unwrap_or("")) placeholder="production"; }
            label { "Tag " input name="tag" value=(tag.as_deref().unwrap_or("")) placeholder="dc=fra1"; }
            button type="submit" { "Filter" }
        }
        @if page.items.is_empty() {
            p.muted { "No server matches. Add servers with " code { "outpost server add" } " or " code { "outpost server import inventory.ini" } "." }
        } @else {
            div.scroll {
                table {
                    thead { tr { th scope="col" { "hostname" } th scope="col" { "address" } th scope="col" { "environment" } th scope="col" { "tags" } th scope="col" { "os" } th scope="col" { "ssh" } th scope="col" { "active" } } }
                    tbody {
                        @for s in &page.items {
                            tr class=[(!s.is_active).then_some("inactive")] {
                                td { a href=(format!("/jobs?server={}", s.id)) { (s.hostname) } }
                                td { (s.ip_address) }
                                td { (s.environment.as_deref().unwrap_or("—")) }
                                td { (layout::labels(s.tags.as_ref())) }
                                td { (s.os_type) " " (s.os_version.as_deref().unwrap_or("")) }
                                td { (s.ssh_user) "@:" (s.ssh_port) }
                                td { @if s.is_active { "yes" } @else { "no" } }
                            }
                        }
                    }
                }
            }
        }
        (layout::pager(&base, offset, PER_PAGE, page.total))
    };
    Ok(layout::page(&v, Area::Servers, "Servers", body).into_response())
}

/// The host part of the address the browser used, for the command to paste.
fn host_of(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("controller.example.com");
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_owned(),
        _ => host.to_owned(),
    }
}

async fn agents_page(
    st: Arc<WebState>,
    v: &Viewer,
    headers: &HeaderMap,
    created: Option<EnrollmentTokenCreated>,
    error: Option<String>,
) -> PageResult {
    let page = or_page(
        service::agents::list(
            &st.core,
            &(PageQuery {
                limit: Some(1000),
                offset: Some(0),
            }),
        )
        .await,
    )?;
    let admin = v.may("POST", "/api/v1/agents/{id}/revoke");
    let now = Utc::now();
    let enroll = format!(
        "{}:{}",
        host_of(headers),
        st.core.settings.enroll_listen.port()
    );
    let body = html! {
        @if let Some(c) = &created {
            section.card.notice #new-token {
                h2 { "Token for " (c.record.name) }
                p { "Shown only now. On the bastion, save it to a file readable only by the agent's user, then enrol:" }
                pre.wrap #token-value { (c.token) }
                pre.wrap #enroll-command {
                    "install -m 0600 -o outpost /dev/null /var/lib/outpost-agent/token\n"
                    "cat > /var/lib/outpost-agent/token   # paste the token, then Ctrl-D\n"
                    "sudo -u outpost outpost-agent enroll --state-dir /var/lib/outpost-agent \\\n"
                    "    --controller " (enroll) " --token-file /var/lib/outpost-agent/token\n"
                    "rm /var/lib/outpost-agent/token"
                }
                p.muted { "It expires " (layout::time(Some(c.record.expires_at))) " and can be used once." }
            }
        }
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        @if page.items.is_empty() {
            p.muted { "No agent is enrolled yet." }
        } @else {
            div.scroll {
                table.agents {
                    thead { tr { th scope="col" { "agent" } th scope="col" { "state" } th scope="col" { "labels" } th scope="col" { "version" } th scope="col" { "host" } th scope="col" { "ansible" } th scope="col" { "certificate expires" } th scope="col" { "last seen" } @if admin { th scope="col" { span.sr { "actions" } } } } }
                    tbody {
                        @for a in &page.items {
                            tr {
                                td { (a.name) }
                                td {
                                    @if a.revoked { span.badge.st-failed { "revoked" } }
                                    @else if a.online { span.badge.st-success { "online" } }
                                    @else { span.badge.st-cancelled { "offline" } }
                                }
                                td { (layout::labels(a.labels.as_ref())) }
                                td { (a.version.as_deref().unwrap_or("—")) }
                                td { (a.hostname.as_deref().unwrap_or("—")) }
                                td { (a.ansible_version.as_deref().unwrap_or("—")) }
                                td class=[a.cert_expires_at.is_some_and(|e| e - now < chrono::Duration::days(2)).then_some("warn")] {
                                    @if let Some(e) = a.cert_expires_at { (e.format("%Y-%m-%d %H:%M UTC").to_string()) } @else { "—" }
                                }
                                td { (layout::time(a.last_seen)) }
                                @if admin {
                                    td {
                                        @if !a.revoked {
                                            form method="post" action=(format!("/agents/{}/revoke", a.id)) data-confirm=(format!("Revoke {}? It is disconnected at once and cannot come back.", a.name)) {
                                                (layout::csrf(v))
                                                button.danger type="submit" { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if v.may("POST", "/api/v1/enrollment-tokens") { (token_form(v)) }
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, layout::page(v, Area::Agents, "Agents", body)).into_response())
}

fn token_form(v: &Viewer) -> Markup {
    html! {
        section.card {
            h2 { "Enrol an agent" }
            form #token-form method="post" action="/agents/tokens" {
                (layout::csrf(v))
                div.row {
                    div { label for="t-name" { "Agent name" } input #t-name name="name" required placeholder="bastion-fra1"; }
                    div { label for="t-labels" { "Labels (key=value, comma separated)" } input #t-labels name="labels" placeholder="dc=fra1"; }
                    div { label for="t-ttl" { "Valid for (hours)" } input #t-ttl name="ttl_hours" type="number" min="1" max="720" value="24"; }
                }
                @if v.may("POST", "/api/v1/agent-bundles") {
                    div.row {
                        div {
                            label for="t-addresses" { "For a bundle: controller addresses (comma separated; default: its certificate's names)" }
                            input #t-addresses name="addresses" placeholder="ctl.example.com";
                        }
                    }
                }
                button type="submit" { "Make a one-time token" }
                @if v.may("POST", "/api/v1/agent-bundles") {
                    " "
                    button #bundle-submit type="submit" formaction="/agents/bundles" title="A tar.gz with the agent, its unit, the token and install.yml: tar xzf it, then ansible-playbook -i BASTION, install.yml" {
                        "Download an install bundle"
                    }
                }
            }
        }
    }
}

/// GET /agents
pub async fn agents(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    headers: HeaderMap,
) -> PageResult {
    agents_page(st, &v, &headers, None, None).await
}

/// POST /agents/{id}/revoke
pub async fn revoke(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<AgentId>,
) -> PageResult {
    or_page(service::agents::revoke(&st.core, &v.caller, id).await)?;
    Ok(Redirect::to("/agents").into_response())
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    name: String,
    labels: Option<String>,
    ttl_hours: Option<String>,
    /// Only for bundles.
    addresses: Option<String>,
}

impl TokenForm {
    /// The labels and lifetime typed in, or what is wrong with them.
    fn parse(&self) -> Result<(std::collections::BTreeMap<String, String>, Option<u32>), String> {
        let labels = parse_selector(self.labels.as_deref().unwrap_or(""))
            .map_err(|e| format!("Labels: {e}"))?
            .into_iter()
            .collect();
        let ttl_hours = match self
            .ttl_hours
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            None => None,
            Some(t) => Some(
                t.parse()
                    .map_err(|_| "Valid for: a number of hours".to_owned())?,
            ),
        };
        Ok((labels, ttl_hours))
    }
}

/// POST /agents/tokens: makes the token and shows it once, with the enrol command.
pub async fn create_token(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> PageResult {
    let (labels, ttl_hours) = match f.parse() {
        Ok(p) => p,
        Err(e) => return agents_page(st, &v, &headers, None, Some(e)).await,
    };
    let req = NewEnrollmentTokenRequest {
        name: f.name,
        labels,
        ttl_hours,
    };
    match service::agents::create_token(&st.core, &v.caller, req)
        .await
        .map_err(ApiError::from)
    {
        Ok(created) => agents_page(st, &v, &headers, Some(created), None).await,
        Err(e) => refused(st, &v, &headers, e).await,
    }
}

/// POST /agents/bundles: the install bundle itself, as a download; a mistake shows the page
/// again with what was wrong.
pub async fn create_bundle(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> PageResult {
    let (labels, ttl_hours) = match f.parse() {
        Ok(p) => p,
        Err(e) => return agents_page(st, &v, &headers, None, Some(e)).await,
    };
    let addresses = f
        .addresses
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let req = NewAgentBundleRequest {
        name: f.name,
        labels,
        ttl_hours,
        addresses,
    };
    match service::agents::create_bundle(&st.core, &v.caller, req)
        .await
        .map_err(ApiError::from)
    {
        Ok(bundle) => Ok(crate::http::download::bundle(bundle)?),
        Err(e) => refused(st, &v, &headers, e).await,
    }
}

/// A refusal the user can mend is shown next to the form; anything else is an error page.
async fn refused(
    st: Arc<WebState>,
    v: &Viewer,
    headers: &HeaderMap,
    e: crate::http::error::ApiError,
) -> PageResult {
    if e.status.is_client_error() {
        agents_page(st, v, headers, None, Some(e.message)).await
    } else {
        Err(e.into())
    }
}
