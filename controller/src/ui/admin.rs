//! For admins: users (add, change role, deactivate) and the audit trail with its filters.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Form};
use maud::html;
use outpost_api::{AuditQuery, NewUserRequest, UserPatchRequest, UserQuery};
use serde::Deserialize;

use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::ApiError;
use crate::http::error::{Path, Query};
use crate::http::WebState;
use crate::model::{Role, UserId};
use crate::service;

const ROLES: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

async fn users_page(st: Arc<WebState>, v: &Viewer, error: Option<String>) -> PageResult {
    let page = or_page(
        service::users::list(
            &st.core,
            &(UserQuery {
                limit: Some(1000),
                offset: Some(0),
                ..Default::default()
            }),
        )
        .await,
    )?;
    let body = html! {
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        div.scroll {
            table {
                thead { tr { th scope="col" { "user" } th scope="col" { "email" } th scope="col" { "role" } th scope="col" { "active" } th scope="col" { "last login" } } }
                tbody {
                    @for u in &page.items {
                        tr class=[(!u.is_active).then_some("inactive")] {
                            td { (u.username) @if u.must_change_password { " " span.label { "must change password" } } }
                            td { (u.email) }
                            td {
                                form.inline method="post" action=(format!("/users/{}", u.id)) {
                                    (layout::csrf(v))
                                    label.sr for=(format!("role-{}", u.id)) { "Role" }
                                    select id=(format!("role-{}", u.id)) name="role" {
                                        @for r in ROLES { option value=(r.as_str()) selected[r == u.role] { (r.as_str()) } }
                                    }
                                    label { input type="checkbox" name="is_active" value="true" checked[u.is_active]; " active" }
                                    button type="submit" { "Save" }
                                }
                            }
                            td { @if u.is_active { "yes" } @else { "no" } }
                            td { (layout::time(u.last_login)) }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Add a user" }
            form #user-form method="post" action="/users" {
                (layout::csrf(v))
                div.row {
                    div { label for="u-name" { "Username" } input #u-name name="username" required autocomplete="off"; }
                    div { label for="u-email" { "Email" } input #u-email name="email" type="email" required autocomplete="off"; }
                    div { label for="u-role" { "Role" } select #u-role name="role" { @for r in ROLES { option value=(r.as_str()) { (r.as_str()) } } } }
                    div { label for="u-pass" { "First password (changed at first sign-in)" } input #u-pass name="password" type="password" minlength="8" required autocomplete="new-password"; }
                }
                button type="submit" { "Add user" }
            }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, layout::page(v, Area::Users, "Users", body)).into_response())
}

/// GET /users
pub async fn users(State(st): State<Arc<WebState>>, Extension(v): Extension<Viewer>) -> PageResult {
    users_page(st, &v, None).await
}

#[derive(Debug, Deserialize)]
pub struct NewUserForm {
    username: String,
    email: String,
    role: Option<Role>,
    password: String,
}

/// POST /users
pub async fn create_user(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Form(f): Form<NewUserForm>,
) -> PageResult {
    let req = NewUserRequest {
        username: f.username,
        email: f.email,
        password: f.password,
        role: f.role,
    };
    match service::users::create(&st.core, &v.caller, req)
        .await
        .map_err(ApiError::from)
    {
        Ok(_) => Ok(Redirect::to("/users").into_response()),
        Err(e) if e.status.is_client_error() => users_page(st, &v, Some(e.message)).await,
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    role: Option<Role>,
    is_active: Option<String>,
}

/// POST /users/{id}
pub async fn update_user(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<UserId>,
    Form(f): Form<UserForm>,
) -> PageResult {
    let req = UserPatchRequest {
        role: f.role,
        is_active: Some(f.is_active.is_some()),
        email: None,
    };
    match service::users::update(&st.core, &v.caller, id, req)
        .await
        .map_err(ApiError::from)
    {
        Ok(_) => Ok(Redirect::to("/users").into_response()),
        Err(e) if e.status.is_client_error() => users_page(st, &v, Some(e.message)).await,
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditForm {
    action: Option<String>,
    resource_type: Option<String>,
    user: Option<String>,
    /// Links made before cursors page by offset; they still work.
    offset: Option<i64>,
    after: Option<String>,
}

const PER_PAGE: i64 = 100;

/// GET /audit
pub async fn audit(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Query(q): Query<AuditForm>,
) -> PageResult {
    let nonempty = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let action = nonempty(&q.action);
    let resource_type = nonempty(&q.resource_type);
    let user: Option<i32> = nonempty(&q.user).and_then(|u| u.parse().ok());
    let after = q.after.clone().filter(|a| !a.is_empty());
    let page = or_page(
        service::audit::list(
            &st.core,
            &(AuditQuery {
                user,
                action: action.clone(),
                resource_type: resource_type.clone(),
                limit: Some(PER_PAGE),
                offset: q.offset.filter(|_| after.is_none()),
                after: after.clone(),
                ..Default::default()
            }),
        )
        .await,
    )?;
    let user_text = user.map(|u| u.to_string());
    let base = layout::with_filters(
        "/audit",
        &[
            ("action", action.as_deref()),
            ("resource_type", resource_type.as_deref()),
            ("user", user_text.as_deref()),
        ],
    );
    let body = html! {
        form.filters method="get" action="/audit" {
            label { "Action " input name="action" value=(action.as_deref().unwrap_or("")) placeholder="LAUNCH"; }
            label { "Resource " input name="resource_type" value=(resource_type.as_deref().unwrap_or("")) placeholder="job"; }
            label { "User id " input name="user" value=(user.map(|u| u.to_string()).unwrap_or_default()) inputmode="numeric"; }
            button type="submit" { "Filter" }
        }
        div.scroll {
            table.audit {
                thead { tr { th scope="col" { "when" } th scope="col" { "user" } th scope="col" { "action" } th scope="col" { "resource" } th scope="col" { "details" } th scope="col" { "from" } } }
                tbody {
                    @for a in &page.items {
                        tr {
                            td { (layout::time(Some(a.timestamp))) }
                            td { (a.user_id.map(|u| u.to_string()).unwrap_or_else(|| "system".into())) }
                            td { code { (a.action) } }
                            td { (a.resource_type) @if let Some(id) = a.resource_id { " " (id) } }
                            td.clip { @if let Some(d) = &a.details { code { (d.to_string()) } } }
                            td { (a.ip_address.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        (layout::cursor_pager(&base, &page, after.is_some()))
    };
    Ok(layout::page(&v, Area::Audit, "Audit log", body).into_response())
}
