//! Signing in and who is calling: login (bcrypt, throttled per account and per address), bearer
//! tokens (256 random bits, only their SHA-256 stored), logout, whoami, and the layer that
//! turns a token into a [`Caller`] and holds it to the access table and the password policy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use outpost_api::{LoginRequest, LoginResponse, Whoami};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::{ApiError, ApiResult, Json};
use super::roles::{self, Access};
use super::views;
use super::ApiState;
use crate::model::{User, UserId};
use crate::store::audit::{Actor, NewAudit};
use crate::store::StoreError;
use crate::text::fit_chars;

/// The client's address, put on every request by the server loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// The signed-in user behind a request, with where the request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub token_id: i32,
    pub token_expires_at: chrono::DateTime<Utc>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Caller {
    /// The caller as the audit trail names it.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user.id),
            ip_address: self.ip.map(|i| i.to_string()),
            user_agent: self.user_agent.clone(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == crate::model::Role::Admin
    }
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| fit_chars(s, 255).into_owned())
}

/// SHA-256 of a bearer token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Failed logins, per account and per address. After [`FREE_FAILURES`] in a row the key is
/// locked for a time that doubles with each further failure, up to [`MAX_LOCK`]; a success
/// clears the account. One controller's memory: several controllers each throttle on their own.
#[derive(Default)]
pub struct Throttle {
    keys: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
}

const FREE_FAILURES: u32 = 5;
const FREE_FAILURES_PER_ADDRESS: u32 = 20;
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds to wait before `key` may try again, if it is locked.
    fn wait(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let until = self.lock().get(key)?.locked_until?;
        (until > now).then(|| (until - now).as_secs_f64().ceil() as u64)
    }

    fn fail(&self, key: &str, free: u32) {
        let mut keys = self.lock();
        if keys.len() > 100_000 {
            // Bounded memory under a spray of addresses: forget unlocked keys.
            let now = Instant::now();
            keys.retain(|_, f| f.locked_until.is_some_and(|u| u > now));
        }
        let f = keys.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            locked_until: None,
        });
        f.count += 1;
        if f.count >= free {
            let exp = (f.count - free).min(20);
            let lock = Duration::from_secs(1u64 << exp).min(MAX_LOCK);
            f.locked_until = Some(Instant::now() + lock);
        }
    }

    fn clear(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// POST /api/v1/auth/login
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = outpost_api::ErrorBody),
              (status = 429, body = outpost_api::ErrorBody)))]
pub async fn login(
    State(st): State<Arc<ApiState>>,
    axum::Extension(addr): axum::Extension<ClientAddr>,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let given = match (&req.username, &req.email) {
        (Some(u), None) => u.clone(),
        (None, Some(e)) => e.clone(),
        _ => {
            return Err(ApiError::unprocessable(
                "give either username or email, and password",
            ))
        }
    };
    let account_key = format!("user:{}", given.trim().to_lowercase());
    let ip_key = format!("ip:{}", addr.0.ip());
    if let Some(wait) = st
        .throttle
        .wait(&account_key)
        .max(st.throttle.wait(&ip_key))
    {
        return Err(ApiError::too_many(
            format!("too many failed logins; try again in {wait} s"),
            wait,
        ));
    }
    let user = match &req.email {
        Some(e) => st.store.get_user_by_email(e).await,
        None => st.store.get_user_by_username(&given).await,
    };
    let user = match user {
        Ok(u) => Some(u),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let ok = match &user {
        Some(u) => u.is_active && st.store.password_matches(u, &req.password).await,
        None => {
            // Spend the same time as a real check, so timing does not tell which names exist.
            let _ = tokio::task::spawn_blocking(|| bcrypt::verify("x", dummy_hash())).await;
            false
        }
    };
    let actor = Actor {
        user_id: user.as_ref().filter(|_| ok).map(|u| u.id),
        ip_address: Some(addr.0.ip().to_string()),
        user_agent: user_agent(&headers),
    };
    let Some(user) = user.filter(|_| ok) else {
        st.throttle.fail(&account_key, FREE_FAILURES);
        st.throttle.fail(&ip_key, FREE_FAILURES_PER_ADDRESS);
        let _ = st
            .store
            .record_audit(&NewAudit {
                actor: &actor,
                action: "LOGIN_FAILED",
                resource_type: "user",
                resource_id: None,
                details: Some(serde_json::json!({"login": fit_chars(&given, 120)})),
            })
            .await;
        return Err(ApiError::unauthorized(
            "wrong username, email or password, or the account is deactivated",
        ));
    };
    st.throttle.clear(&account_key);
    st.throttle.clear(&ip_key);
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!("opat_{}", hex::encode(secret));
    let expires_at = Utc::now()
        + chrono::Duration::from_std(st.settings.api_token_ttl)
            .unwrap_or(chrono::Duration::hours(12));
    st.store
        .create_api_token(
            user.id,
            &token_hash(&token),
            &user_agent(&headers).unwrap_or_else(|| "login".into()),
            expires_at,
        )
        .await?;
    st.store.stamp_login(user.id).await?;
    st.store
        .record_audit(&NewAudit {
            actor: &actor,
            action: "LOGIN",
            resource_type: "user",
            resource_id: Some(user.id.0),
            details: None,
        })
        .await?;
    let user = st.store.get_user(user.id).await?;
    let view = views::user(&user, st.password_expired(&user));
    Ok(Json(LoginResponse {
        token,
        expires_at,
        user: view,
    }))
}

/// A bcrypt hash (cost 12) of nothing in particular, made once: checking a password against it
/// takes as long as a real check, so a refusal does not tell whether the name exists.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("not a password", 12).unwrap_or_default())
}

/// POST /api/v1/auth/logout: ends the token of this request.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = outpost_api::ErrorBody)))]
pub async fn logout(
    State(st): State<Arc<ApiState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> ApiResult<StatusCode> {
    st.store.delete_api_token(caller.token_id).await?;
    st.store
        .record_audit(&NewAudit {
            actor: &caller.actor(),
            action: "LOGOUT",
            resource_type: "user",
            resource_id: Some(caller.user.id.0),
            details: None,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/v1/auth/whoami
#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "auth",
    responses((status = 200, body = Whoami), (status = 401, body = outpost_api::ErrorBody)))]
pub async fn whoami(
    State(st): State<Arc<ApiState>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> ApiResult<Json<Whoami>> {
    Ok(Json(Whoami {
        user: views::user(&caller.user, st.password_expired(&caller.user)),
        token_expires_at: caller.token_expires_at,
    }))
}

/// The authorization layer: finds the route's rule, checks the bearer token, the password
/// policy and the role, and puts the [`Caller`] on the request.
pub async fn authorize(
    State(st): State<Arc<ApiState>>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(path) = matched.map(|m| m.as_str().to_owned()) else {
        return Ok(next.run(req).await); // no route: the fallback answers 404
    };
    let Some(access) = roles::rule(req.method(), &path) else {
        tracing::error!(method = %req.method(), %path, "a route without an access rule");
        return Err(ApiError::forbidden("this route has no access rule"));
    };
    if access == Access::Public {
        return Ok(next.run(req).await);
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
    let caller = caller_for(&st, &token, req.headers(), ip).await?.ok_or_else(|| {
        ApiError::unauthorized("the token is unknown, expired or revoked, or its account is deactivated: sign in again")
    })?;
    let own_password_route =
        access == Access::SelfOrAdmin && path_id(req.uri().path()) == Some(caller.user.id);
    if access != Access::Session && !own_password_route && st.password_expired(&caller.user) {
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
    Ok(next.run(req).await)
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

/// The signed-in user behind `token`, or `None` when the token is unknown, expired or its
/// account deactivated. Marks the token used.
pub async fn caller_for(
    st: &ApiState,
    token: &str,
    headers: &HeaderMap,
    ip: Option<IpAddr>,
) -> Result<Option<Caller>, ApiError> {
    let Some(owner) = st.store.token_owner(&token_hash(token)).await? else {
        return Ok(None);
    };
    let _ = st.store.touch_api_token(owner.token_id).await;
    Ok(Some(Caller {
        ip,
        user_agent: user_agent(headers),
        token_id: owner.token_id,
        token_expires_at: owner.expires_at,
        user: owner.user,
    }))
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
    fn failures_lock_an_account_for_longer_each_time() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES - 1 {
            t.fail("user:a", FREE_FAILURES);
        }
        assert_eq!(t.wait("user:a"), None, "the first failures are free");
        t.fail("user:a", FREE_FAILURES);
        assert_eq!(t.wait("user:a"), Some(1));
        t.fail("user:a", FREE_FAILURES);
        assert_eq!(t.wait("user:a"), Some(2));
        t.clear("user:a");
        assert_eq!(t.wait("user:a"), None);
        assert_eq!(t.wait("user:b"), None);
    }

    #[test]
    fn the_dummy_hash_is_a_bcrypt_hash() {
        assert_eq!(bcrypt::verify("x", dummy_hash()).ok(), Some(false));
    }

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
