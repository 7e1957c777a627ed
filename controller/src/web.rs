//! The HTTPS port as one application: the API ([`crate::http`]) and the web UI
//! ([`crate::ui`]) side by side, the fallbacks that answer in each one's own form, and the
//! layers every answer passes (body limit, metrics, HSTS).
//!
//! It stands above both so that imports go one way: the UI uses the API's state and rules,
//! the API knows nothing of the UI, and only this module knows of both.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;

use crate::http::error::ApiError;
use crate::http::{edge, health, MissingRule, WebState, MAX_BODY};

/// The whole application: the API behind its authorization layer, the UI behind its session
/// guard, JSON 404s under `/api/` and an HTML page elsewhere, body limits, metrics and HSTS.
pub fn app(state: Arc<WebState>) -> Result<Router, MissingRule> {
    Ok(crate::http::api(state.clone())?
        .merge(crate::ui::router(state.clone()))
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path().starts_with("/api/") {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
            } else {
                crate::ui::layout::refusal(StatusCode::NOT_FOUND, "There is no such page.")
            }
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            health::observe,
        ))
        .layer(axum::middleware::map_response(edge::hsts))
        .layer(axum::middleware::from_fn(edge::close_after_unread_body))
        .with_state(state))
}
