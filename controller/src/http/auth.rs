//! Who is calling: the bearer token or the web session's cookie (with its CSRF token on a
//! change) turned into a [`Caller`] by [`service::sessions`], held to the access table and the
//! password policy; and the routes that sign in and out.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use outpost_api::{LoginRequest, LoginResponse, Whoami};
use sha2::{Digest, Sha256};

use super::error::{ApiError, ApiResult, Json};
use super::WebState;
use crate::model::UserId;
use crate::service::access::{self as roles, Access};
pub use crate::service::Caller;
use crate::service::{self, views};
use crate::text::fit_chars;

/// The client's address, put on every request by the server loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The client's User-Agent, as the audit trail keeps it.
pub fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| fit_chars(s, 255).into_owned())
}
/// POST /api/v1/auth/login
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = outpost_api::ErrorBody),
              (status = 429, body = outpost_api::ErrorBody)))]
pub async fn login(
    State(st): State<Arc<WebState>>,
    axum::Extension(addr): axum::Extension<ClientAddr>,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let signed_in =
        service::sessions::sign_in(&st.core, addr.0.ip(), user_agent(&headers), &req).await?;
    Ok(Json(signed_in))
}

/// POST /api/v1/auth/logout: ends the token of this request.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = outpost_api::ErrorBody)))]
pub async fn logout(
    State(st): State<Arc<WebState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> ApiResult<StatusCode> {
    service::sessions::sign_out(&st.core, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/v1/auth/whoami
#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "auth",
    responses((status = 200, body = Whoami), (status = 401, body = outpost_api::ErrorBody)))]
pub async fn whoami(
    State(st): State<Arc<WebState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> ApiResult<Json<Whoami>> {
    Ok(Json(Whoami {
        user: views::user(&caller.user, st.core.password_expired(&caller.user)),
        token_expires_at: caller.token_expires_at,
    }))
}

/// The authorization layer: finds the route's rule, checks the bearer token, the password
/// policy and the role, and puts the [`Caller`] on the request.
pub async fn authorize(
    State(st): State<Arc<WebState>>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    use axum::response::IntoResponse;
    match admit(&st, matched, &mut req).await {
        Ok(()) => next.run(req).await,
        Err(e) => {
            // Refused before the handler read the body: read a small one first, so the client
            // gets this answer rather than a connection reset under a request it still sends.
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            super::error::drain_small_body(req.into_body(), declared).await;
            e.into_response()
        }
    }
}

/// The checks of [`authorize`]: `Ok` lets the request through (with its [`Caller`] on it
/// where the route needs one).
async fn admit(
    st: &WebState,
    matched: Option<MatchedPath>,
    req: &mut Request,
) -> Result<(), ApiError> {
    let Some(path) = matched.map(|m| m.as_str().to_owned()) else {
        return Ok(()); // no route: the fallback answers 404
    };
    let Some(access) = roles::rule(req.method(), &path) else {
        tracing::error!(method = %req.method(), %path, "a route without an access rule");
        return Err(ApiError::forbidden("this route has no access rule"));
    };
    if access == Access::Public {
        return Ok(());
    }
    let token = match bearer(req.headers()) {
        Some(t) => t.to_owned(),
        // The web UI's pages call the API with their session cookie; a change made that way
        // must also carry the page's CSRF token, which another site cannot read.
        None => {
            let t = session_cookie(req.headers()).ok_or_else(|| {
                ApiError::unauthorized(
                    "sign in first: send Authorization: Bearer <token> (POST /api/v1/auth/login)",
                )
            })?;
            let safe = matches!(
                *req.method(),
                axum::http::Method::GET | axum::http::Method::HEAD
            );
            let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !safe && sent.is_none_or(|c| !csrf_matches(&t, c)) {
                return Err(ApiError::forbidden(
                    "a change made with the session cookie needs the page's X-CSRF-Token",
                ));
            }
            t
        }
    };
    let ip = req.extensions().get::<ClientAddr>().map(|a| a.0.ip());
    let caller = service::sessions::caller_for(&st.core, &token, user_agent(req.headers()), ip).await?.ok_or_else(|| {
        ApiError::unauthorized("the token is unknown, expired or revoked, or its account is deactivated: sign in again")
    })?;
    let own_password_route =
        access == Access::SelfOrAdmin && path_id(req.uri().path()) == Some(caller.user.id);
    if access != Access::Session && !own_password_route && st.core.password_expired(&caller.user) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "password_expired",
            format!(
                "the password of {} must be changed first: POST /api/v1/users/{}/password",
                caller.user.username, caller.user.id
            ),
        ));
    }
    if !roles::allows(access, caller.user.role) {
        return Err(ApiError::forbidden(format!(
            "{} {} needs a higher role than {}",
            req.method(),
            path,
            caller.user.role
        )));
    }
    if access == Access::SelfOrAdmin && !own_password_route && !caller.is_admin() {
        return Err(ApiError::forbidden("only an admin may act on another user"));
    }
    req.extensions_mut().insert(caller);
    Ok(())
}

/// The web UI's session cookie: it holds an API token, like a bearer token.
pub const SESSION_COOKIE: &str = "outpost_session";
/// The header that carries the CSRF token of a cookie session.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 200)
}

/// The token in the session cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|t| !t.is_empty() && t.len() <= 200)
}

/// The CSRF token of a session: derived from its secret, so it needs no storage, and useless
/// to anyone who cannot already read the session's pages.
pub fn csrf_token(session_token: &str) -> String {
    let digest = Sha256::digest(format!("outpost-csrf/1:{session_token}").as_bytes());
    hex::encode(&digest[..16])
}

/// Whether `sent` is the CSRF token of `session_token` (compared in constant time).
pub fn csrf_matches(session_token: &str, sent: &str) -> bool {
    let want = csrf_token(session_token);
    want.len() == sent.len()
        && want
            .bytes()
            .zip(sent.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The numeric id after `/users/` in a path.
fn path_id(path: &str) -> Option<UserId> {
    let rest = path.strip_prefix("/api/v1/users/")?;
    rest.split('/').next()?.parse().ok().map(UserId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let t = csrf_token("opat_a");
        assert!(csrf_matches("opat_a", &t));
        assert!(!csrf_matches("opat_b", &t));
        assert!(!csrf_matches("opat_a", &t[1..]));
        assert!(!csrf_matches("opat_a", ""));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "theme=dark; outpost_session=opat_x ; other=1"
                .parse()
                .unwrap(),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("opat_x"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn user_ids_are_read_from_password_paths() {
        assert_eq!(path_id("/api/v1/users/7/password"), Some(UserId(7)));
        assert_eq!(path_id("/api/v1/users/x/password"), None);
    }
}
