//! The web UI, on the API's port at `/`: server-rendered pages (maud, compiled with the
//! binary), one small script and one stylesheet embedded in the binary, live parts over
//! Server-Sent Events. No Node toolchain is involved anywhere.
//!
//! Pages do what the API does by calling the same handlers with the signed-in [`Caller`]
//! (so validation, audit and errors are the API's), and each page is held to the API rule of
//! the route it stands for ([`access`]). The log viewer's script reads the API directly with
//! the session cookie.
//!
//! - [`access`]: sessions, CSRF, and which API rule each page follows; [`viewer`]: who looks;
//! - [`layout`]: the page shell and small pieces shared by pages;
//! - [`chart`]: charts drawn on the server as SVG (pure geometry, then markup);
//! - one module per area: [`dashboard`] (with its charts, [`trends`]), [`jobs`], [`runs`] (a
//!   launch's jobs as a whole, live), [`launch`], [`templates`] (surveys as
//!   forms), [`tickets`], [`fleet`]
//!   (servers and agents), [`playbooks`], [`projects`], [`admin`] (users and the audit log),
//!   [`credentials`] (stored secrets, never shown back), [`notifications`] (channels, rules, the
//!   delivery log), [`schedules`] (and blackouts), [`account`] (sign in and out, password).
//!
//! [`Caller`]: crate::http::auth::Caller

pub mod access;
pub mod account;
pub mod admin;
pub mod chart;
pub mod credentials;
pub mod dashboard;
pub mod fleet;
pub mod jobs;
pub mod launch;
pub mod layout;
pub mod notifications;
pub mod playbooks;
pub mod projects;
pub mod runs;
pub mod schedules;
pub mod templates;
pub mod tickets;
pub mod trends;
pub mod viewer;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::http::WebState;

/// The stylesheet and the script, compiled into the binary.
const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// GET /static/{file}
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Every page of the UI, behind the session guard. Each route here must have a row in
/// [`access::PAGES`]; the guard refuses one that has not.
pub fn router(state: Arc<WebState>) -> Router<Arc<WebState>> {
    Router::new()
        .route("/static/{file}", get(asset))
        .route("/login", get(account::login_page).post(account::login))
        .route("/logout", post(account::logout))
        .route(
            "/account/password",
            get(account::password_page).post(account::change_password),
        )
        .route("/", get(dashboard::page))
        .route("/events/dashboard", get(dashboard::events))
        .route("/jobs", get(jobs::list).post(launch::submit))
        .route("/jobs/new", get(launch::form))
        .route("/jobs/preview", get(launch::preview))
        .route("/jobs/{job_id}", get(jobs::show))
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/jobs/{job_id}/log.txt", get(jobs::download))
        .route("/runs", get(runs::list))
        .route("/runs/{run_id}", get(runs::show))
        .route("/events/runs/{run_id}", get(runs::events))
        .route("/runs/{run_id}/cancel", post(runs::cancel))
        .route("/runs/{run_id}/approve", post(runs::approve))
        .route("/runs/{run_id}/relaunch", post(runs::relaunch))
        .route("/templates", get(templates::list).post(templates::create))
        .route("/templates/new", get(templates::new_form))
        .route(
            "/templates/{id}/launch",
            get(templates::launch_form).post(templates::launch),
        )
        .route(
            "/templates/{id}/edit",
            get(templates::edit_form).post(templates::update),
        )
        .route("/servers", get(fleet::servers))
        .route("/agents", get(fleet::agents))
        .route("/agents/{id}/revoke", post(fleet::revoke))
        .route("/agents/tokens", post(fleet::create_token))
        .route("/agents/bundles", post(fleet::create_bundle))
        .route("/playbooks", get(playbooks::list))
        .route(
            "/playbooks/{id}",
            get(playbooks::show).post(playbooks::upload),
        )
        .route("/projects", get(projects::list))
        .route("/projects/{id}", get(projects::show))
        .route("/projects/{id}/sync", post(projects::sync))
        .route("/schedules", get(schedules::list).post(schedules::create))
        .route("/schedules/preview", post(schedules::preview))
        .route("/schedules/{id}", get(schedules::show))
        .route("/blackouts", post(schedules::create_blackout))
        .route("/blackouts/{id}/delete", post(schedules::delete_blackout))
        .route("/tickets", get(tickets::board))
        .route("/tickets/{ticket_id}", post(tickets::update))
        .route("/users", get(admin::users).post(admin::create_user))
        .route("/users/{id}", post(admin::update_user))
        .route("/audit", get(admin::audit))
        .route(
            "/admin/credentials",
            get(credentials::list).post(credentials::create),
        )
        .route(
            "/admin/credentials/{id}",
            get(credentials::show).post(credentials::update),
        )
        .route("/admin/credentials/{id}/delete", post(credentials::delete))
        .route("/admin/notifications", get(notifications::page))
        .route(
            "/admin/notifications/channels/{id}/test",
            post(notifications::test),
        )
        .layer(axum::middleware::from_fn_with_state(state, access::guard))
}
