//! For admins: credentials (SSH keys, become and vault passwords) — listed with where they are
//! used, stored from a form, their secret replaced, renamed, deleted when nothing uses them.
//! A secret goes from the form to the service once and is never rendered back: not on any
//! page, and not in a form shown again after a mistake (its fields come back empty).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use maud::{html, Markup};
use outpost_api::{
    CredentialPatchRequest, CredentialUsage, CredentialView, NewCredentialRequest, PageQuery,
};
use serde::Deserialize;
use zeroize::Zeroize;

use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::{ApiError, Path};
use crate::http::WebState;
use crate::model::{CredentialId, CredentialKind};
use crate::service;

/// The kinds in the order the form offers them, with what people call them.
const KINDS: [(CredentialKind, &str); 3] = [
    (CredentialKind::BecomePassword, "Become password"),
    (CredentialKind::VaultPassword, "Vault password"),
    (CredentialKind::SshKey, "SSH private key"),
];

const PER_PAGE: i64 = 1000;

/// What a credential's form posts. Its secrets are wiped when it is dropped, and it has no
/// `Debug`, so no log line can hold them.
#[derive(Deserialize, Default)]
pub struct CredentialForm {
    /// On a credential's page: which of its forms was sent (`secret` or `details`).
    change: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    vault_id: Option<String>,
    description: Option<String>,
    /// An SSH key's text (a textarea).
    key: Option<String>,
    /// A become or vault password (a password field).
    password: Option<String>,
    passphrase: Option<String>,
}

impl Drop for CredentialForm {
    fn drop(&mut self) {
        self.key.zeroize();
        self.password.zeroize();
        self.passphrase.zeroize();
    }
}

/// A form field as typed, `None` when left empty.
fn filled(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A secret field, taken out of the form as typed (a password's spaces are its own); `None`
/// when empty.
fn take_secret(v: &mut Option<String>) -> Option<String> {
    v.take().filter(|s| !s.is_empty())
}

impl CredentialForm {
    /// The secret for a credential of `kind`: a key from the key field, a password from the
    /// password field; the other field must be empty, so a password is never stored as a key
    /// (or the reverse) by a slip.
    fn secret(&mut self, kind: CredentialKind) -> Result<String, String> {
        let key = take_secret(&mut self.key);
        let password = take_secret(&mut self.password);
        match (kind, key, password) {
            (CredentialKind::SshKey, Some(k), None) => Ok(k),
            (CredentialKind::SshKey, _, Some(_)) => {
                Err("An SSH key goes in the key field; leave the password field empty.".into())
            }
            (_, None, Some(p)) => Ok(p),
            (_, Some(_), _) => Err(format!(
                "A {} goes in the password field; leave the key field empty.",
                kind.as_str().replace('_', " ")
            )),
            (CredentialKind::SshKey, None, None) => {
                Err("Paste the private key into the key field.".into())
            }
            (_, None, None) => Err("Type the password.".into()),
        }
    }
}

/// What the create form shows again after a mistake: never a secret.
#[derive(Debug, Default)]
struct Typed {
    name: String,
    kind: Option<CredentialKind>,
    vault_id: String,
    description: String,
}

impl Typed {
    fn from(f: &CredentialForm, kind: Option<CredentialKind>) -> Typed {
        Typed {
            name: f.name.clone().unwrap_or_default(),
            kind,
            vault_id: f.vault_id.clone().unwrap_or_default(),
            description: f.description.clone().unwrap_or_default(),
        }
    }
}

/// How many places use a credential, as a short phrase ("2 servers, 1 project").
fn usage_counts(u: &CredentialUsage) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let servers = u.ssh_servers.len() + u.become_servers.len();
    let projects = u.git_projects.len() + u.vault_projects.len();
    let mut parts = Vec::new();
    if servers > 0 {
        parts.push(plural(servers, "server", "servers"));
    }
    if projects > 0 {
        parts.push(plural(projects, "project", "projects"));
    }
    if u.active_jobs > 0 {
        parts.push(plural(u.active_jobs as usize, "active job", "active jobs"));
    }
    parts.join(", ")
}

fn kind_name(k: CredentialKind) -> &'static str {
    KINDS
        .iter()
        .find(|(kind, _)| *kind == k)
        .map(|(_, name)| *name)
        .unwrap_or("credential")
}

fn href(id: i32) -> String {
    format!("/admin/credentials/{id}")
}

async fn list_page(
    st: Arc<WebState>,
    v: &Viewer,
    typed: Typed,
    error: Option<String>,
) -> PageResult {
    let page = or_page(
        service::credentials::list(
            &st.core,
            &PageQuery {
                limit: Some(PER_PAGE),
                offset: Some(0),
            },
        )
        .await,
    )?;
    // The listing carries no usage; each credential's is read (admins keep a handful).
    let mut rows = Vec::with_capacity(page.items.len());
    for c in &page.items {
        let usage = or_page(service::credentials::get(&st.core, CredentialId(c.id)).await)?
            .usage
            .unwrap_or_default();
        rows.push((c, usage_counts(&usage)));
    }
    let body = html! {
        @if let Some(e) = &error { p.error #credential-error role="alert" { (e) } }
        @if rows.is_empty() {
            p.muted { "No credential yet." }
        } @else {
            div.scroll {
                table #credentials {
                    thead { tr {
                        th scope="col" { "name" } th scope="col" { "kind" } th scope="col" { "vault id" }
                        th scope="col" { "public key" } th scope="col" { "used by" } th scope="col" { "updated" }
                    } }
                    tbody {
                        @for (c, used) in &rows {
                            tr data-credential=(c.id) {
                                td { a href=(href(c.id)) { (c.name) } }
                                td { (kind_name(c.kind)) }
                                td { @if let Some(id) = &c.vault_id { code { (id) } } }
                                td { @if let Some(p) = &c.public_info { code { (p) } } }
                                td.usage { @if used.is_empty() { span.muted { "nothing" } } @else { (used) } }
                                td { (layout::time(Some(c.updated_at))) }
                            }
                        }
                    }
                }
            }
        }
        @if v.may("POST", "/api/v1/credentials") { (create_form(v, &typed)) }
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        layout::page(v, Area::Credentials, "Credentials", body),
    )
        .into_response())
}

/// The secret fields for `kinds` (the create form offers all of them, a credential's page
/// those of its kind): empty, always — nothing typed into them is ever sent back.
fn secret_fields(prefix: &str, kinds: &[CredentialKind]) -> Markup {
    let password = kinds.iter().any(|k| *k != CredentialKind::SshKey);
    let key = kinds.contains(&CredentialKind::SshKey);
    let one = kinds.len() == 1;
    html! {
        div.row {
            @if password {
                div {
                    label for=(format!("{prefix}-password")) {
                        @if one { "New password" } @else { "Password (become and vault passwords)" }
                    }
                    input id=(format!("{prefix}-password")) name="password" type="password" autocomplete="new-password" maxlength="1024";
                }
            }
            @if key {
                div {
                    label for=(format!("{prefix}-passphrase")) { "Key passphrase (SSH keys that have one)" }
                    input id=(format!("{prefix}-passphrase")) name="passphrase" type="password" autocomplete="new-password" maxlength="1024";
                }
            }
        }
        @if key {
            label for=(format!("{prefix}-key")) {
                @if one { "New SSH private key (OpenSSH or PEM)" } @else { "SSH private key (OpenSSH or PEM)" }
            }
            textarea id=(format!("{prefix}-key")) name="key" rows="6" autocomplete="off" spellcheck="false"
                placeholder="-----BEGIN OPENSSH PRIVATE KEY-----" {}
        }
    }
}

fn create_form(v: &Viewer, typed: &Typed) -> Markup {
    let all: Vec<CredentialKind> = KINDS.iter().map(|(k, _)| *k).collect();
    html! {
        section.card {
            h2 { "Add a credential" }
            p.muted { "The secret is checked, stored sealed and never shown again, here or anywhere." }
            form #credential-form method="post" action="/admin/credentials" autocomplete="off" {
                (layout::csrf(v))
                div.row {
                    div { label for="c-name" { "Name" } input #c-name name="name" required value=(typed.name) autocomplete="off"; }
                    div {
                        label for="c-kind" { "Kind" }
                        select #c-kind name="kind" {
                            @for (k, label) in KINDS { option value=(k.as_str()) selected[typed.kind == Some(k)] { (label) } }
                        }
                    }
                    div { label for="c-vault-id" { "Vault id (vault passwords; default: default)" } input #c-vault-id name="vault_id" value=(typed.vault_id) autocomplete="off"; }
                    div { label for="c-description" { "Description" } input #c-description name="description" value=(typed.description) autocomplete="off"; }
                }
                (secret_fields("c", &all))
                button.primary type="submit" { "Store credential" }
            }
        }
    }
}

/// GET /admin/credentials
pub async fn list(State(st): State<Arc<WebState>>, Extension(v): Extension<Viewer>) -> PageResult {
    list_page(st, &v, Typed::default(), None).await
}

/// POST /admin/credentials
pub async fn create(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Form(mut f): Form<CredentialForm>,
) -> PageResult {
    let kind = match f
        .kind
        .as_deref()
        .unwrap_or_default()
        .parse::<CredentialKind>()
    {
        Ok(k) => k,
        Err(e) => return list_page(st, &v, Typed::from(&f, None), Some(e.to_string())).await,
    };
    let typed = Typed::from(&f, Some(kind));
    let secret = match f.secret(kind) {
        Ok(s) => s,
        Err(e) => return list_page(st, &v, typed, Some(e)).await,
    };
    let req = NewCredentialRequest {
        name: f.name.clone().unwrap_or_default().trim().to_owned(),
        kind,
        description: filled(&f.description),
        vault_id: filled(&f.vault_id),
        secret,
        passphrase: take_secret(&mut f.passphrase),
    };
    match service::credentials::create(&st.core, &v.caller, req)
        .await
        .map_err(ApiError::from)
    {
        Ok(c) => Ok(Redirect::to(&href(c.id)).into_response()),
        Err(e) if e.status.is_client_error() => list_page(st, &v, typed, Some(e.message)).await,
        Err(e) => Err(e.into()),
    }
}

/// The links to where a credential is used.
fn usage_list(u: &CredentialUsage) -> Markup {
    html! {
        @if u.is_unused() {
            p.muted #usage { "Used nowhere: it may be deleted." }
        } @else {
            ul #usage {
                @for s in &u.ssh_servers { li { "SSH key of server " a href=(format!("/jobs?server={}", s.id)) { (s.name) } } }
                @for s in &u.become_servers { li { "Become password of server " a href=(format!("/jobs?server={}", s.id)) { (s.name) } } }
                @for p in &u.git_projects { li { "Git key of project " a href=(format!("/projects/{}", p.id)) { (p.name) } } }
                @for p in &u.vault_projects { li { "Vault password of project " a href=(format!("/projects/{}", p.id)) { (p.name) } } }
                @if u.active_jobs > 0 { li { (u.active_jobs) " pending or running job(s) named it at launch" } }
            }
        }
    }
}

async fn credential_page(
    st: Arc<WebState>,
    v: &Viewer,
    id: CredentialId,
    refusal: Option<(StatusCode, String)>,
) -> PageResult {
    let c: CredentialView = or_page(service::credentials::get(&st.core, id).await)?;
    let usage = c.usage.clone().unwrap_or_default();
    let action = href(c.id);
    let vault = c.kind == CredentialKind::VaultPassword;
    let body = html! {
        @if let Some((_, e)) = &refusal { p.error #credential-error role="alert" { (e) } }
        section.card #credential {
            dl.facts {
                dt { "Kind" } dd #credential-kind { (kind_name(c.kind)) }
                @if let Some(id) = &c.vault_id { dt { "Vault id" } dd { code { (id) } } }
                @if let Some(p) = &c.public_info { dt { "Public key" } dd { code #public-info { (p) } } }
                @if let Some(d) = &c.description { dt { "Description" } dd { (d) } }
                dt { "Created" } dd {
                    (layout::time(Some(c.created_at)))
                    @if let Some(u) = c.created_by { " by user " (u) }
                }
                dt { "Secret changed" } dd { (layout::time(Some(c.updated_at))) }
            }
        }
        section.card {
            h2 { "Where it is used" }
            (usage_list(&usage))
        }
        @if v.may("PATCH", "/api/v1/credentials/{id}") {
            section.card {
                h2 { "Replace the secret" }
                p.muted { "Jobs launched from now on get the new secret; where it is attached stays." }
                form #replace method="post" action=(action) autocomplete="off" {
                    (layout::csrf(v))
                    input type="hidden" name="change" value="secret";
                    (secret_fields("r", &[c.kind]))
                    button type="submit" { "Replace the secret" }
                }
            }
            section.card {
                h2 { "Name and description" }
                form #details method="post" action=(action) autocomplete="off" {
                    (layout::csrf(v))
                    input type="hidden" name="change" value="details";
                    div.row {
                        div { label for="d-name" { "Name" } input #d-name name="name" required value=(c.name); }
                        @if vault {
                            div { label for="d-vault-id" { "Vault id" } input #d-vault-id name="vault_id" value=(c.vault_id.as_deref().unwrap_or_default()); }
                        }
                        div { label for="d-description" { "Description" } input #d-description name="description" value=(c.description.as_deref().unwrap_or_default()); }
                    }
                    button type="submit" { "Save" }
                }
            }
        }
        @if v.may("DELETE", "/api/v1/credentials/{id}") {
            form.actions #delete method="post" action=(format!("{action}/delete"))
                data-confirm=(format!("Delete the credential {}? Its secret is gone for good.", c.name)) {
                (layout::csrf(v))
                // Left enabled while in use: what is attached can change before the click,
                // and the refusal says why.
                button.danger type="submit" { "Delete" }
                @if !usage.is_unused() { span.muted { "Refused while it is used: detach it everywhere first." } }
            }
        }
    };
    let status = refusal.map(|(s, _)| s).unwrap_or(StatusCode::OK);
    let title = format!("Credential {}", c.name);
    Ok((status, layout::page(v, Area::Credentials, &title, body)).into_response())
}

/// GET /admin/credentials/{id}
pub async fn show(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<CredentialId>,
) -> PageResult {
    credential_page(st, &v, id, None).await
}

/// POST /admin/credentials/{id}: a new secret (`change=secret`), or a new name, description or
/// vault id (`change=details`).
pub async fn update(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<CredentialId>,
    Form(mut f): Form<CredentialForm>,
) -> PageResult {
    let old = or_page(service::credentials::get(&st.core, id).await)?;
    let mut req = CredentialPatchRequest::default();
    match f.change.as_deref() {
        Some("secret") => match f.secret(old.kind) {
            Ok(s) => {
                req.secret = Some(s);
                req.passphrase = take_secret(&mut f.passphrase);
            }
            Err(e) => {
                let refusal = (StatusCode::UNPROCESSABLE_ENTITY, e);
                return credential_page(st, &v, id, Some(refusal)).await;
            }
        },
        Some("details") => {
            req.name = filled(&f.name).filter(|n| *n != old.name);
            // An emptied description clears it; an unchanged one is left alone.
            let description = f.description.clone().unwrap_or_default();
            if description.trim() != old.description.as_deref().unwrap_or_default() {
                req.description = Some(description.trim().to_owned());
            }
            req.vault_id = filled(&f.vault_id).filter(|i| Some(i) != old.vault_id.as_ref());
        }
        _ => {
            let refusal = (
                StatusCode::UNPROCESSABLE_ENTITY,
                "This form is not one of this page's: reload it.".to_owned(),
            );
            return credential_page(st, &v, id, Some(refusal)).await;
        }
    }
    match service::credentials::update(&st.core, &v.caller, id, req)
        .await
        .map_err(ApiError::from)
    {
        Ok(c) => Ok(Redirect::to(&href(c.id)).into_response()),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            credential_page(st, &v, id, Some((e.status, e.message))).await
        }
        Err(e) => Err(e.into()),
    }
}

/// POST /admin/credentials/{id}/delete: refused (409, with the reason, on the credential's
/// page) while anything uses it.
pub async fn delete(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<CredentialId>,
) -> PageResult {
    match service::credentials::delete(&st.core, &v.caller, id)
        .await
        .map_err(ApiError::from)
    {
        Ok(_) => Ok(Redirect::to("/admin/credentials").into_response()),
        Err(e) if e.status == StatusCode::CONFLICT => {
            credential_page(st, &v, id, Some((e.status, e.message))).await
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(key: Option<&str>, password: Option<&str>) -> CredentialForm {
        let mut f = CredentialForm::default();
        f.key = key.map(str::to_owned);
        f.password = password.map(str::to_owned);
        f
    }

    #[test]
    fn a_secret_comes_from_the_field_of_its_kind_only() {
        let k = CredentialKind::SshKey;
        let b = CredentialKind::BecomePassword;
        assert_eq!(form(Some("KEY"), Some("")).secret(k).as_deref(), Ok("KEY"));
        assert_eq!(
            form(Some(""), Some(" pw ")).secret(b).as_deref(),
            Ok(" pw ")
        );
        let wrong = form(None, Some("pw")).secret(k).unwrap_err();
        assert!(wrong.contains("key field"), "{wrong}");
        let wrong = form(Some("KEY"), None).secret(b).unwrap_err();
        assert!(wrong.contains("password field"), "{wrong}");
        for (e, kind) in [
            (form(None, None).secret(b), b),
            (form(None, None).secret(k), k),
        ] {
            assert!(e.is_err(), "{kind} without a secret");
        }
        // No refusal quotes what was typed.
        let e = form(Some("TOPSECRET"), Some("TOPSECRET"))
            .secret(k)
            .unwrap_err();
        assert!(!e.contains("TOPSECRET"), "{e}");
    }

    #[test]
    fn usage_reads_as_counts() {
        let r = |n: &str| outpost_api::NameRef {
            id: 1,
            name: n.into(),
        };
        let u = CredentialUsage {
            ssh_servers: vec![r("a"), r("b")],
            vault_projects: vec![r("p")],
            active_jobs: 1,
            ..Default::default()
        };
        assert_eq!(usage_counts(&u), "2 servers, 1 project, 1 active job");
        assert_eq!(usage_counts(&CredentialUsage::default()), "");
    }
}
