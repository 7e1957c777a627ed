//! Signing in and who is calling: login (bcrypt, throttled per account and per address, a slot
//! taken before the password is checked), bearer tokens (256 random bits, only their SHA-256
//! stored), logout, whoami, and the layer that turns a token into a [`Caller`] and holds it to
//! the access table and the password policy.

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

/// Failed password checks, per account and per address. An attempt takes a slot *before* its
/// password is checked, atomically under the map's mutex, so that however many requests race
/// for one account at most [`FREE_FAILURES`] bcrypt checks run before it is locked. After the
/// free allowance the key is locked for a time that doubles with each further failure, up to
/// [`MAX_LOCK`], with one try allowed each time the lock runs out. A success clears the
/// account; an address is only released (a success there would let someone with an account of
/// their own reset the address they spray from). Any key's failures are forgotten after
/// [`FORGET_AFTER`] without another. One controller's memory: several controllers each
/// throttle on their own.
#[derive(Default)]
pub struct Throttle {
    keys: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Attempts holding a slot whose password check has not answered yet.
    in_flight: u32,
    locked_until: Option<Instant>,
    last_failure: Option<Instant>,
}

const FREE_FAILURES: u32 = 5;
const FREE_FAILURES_PER_ADDRESS: u32 = 20;
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Failures of a key that is not locked are forgotten after this long without another, so the
/// typos of everyone behind one NAT do not add up for ever.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

/// What one attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleKey {
    name: String,
    free: u32,
    /// A success forgets this key's failures (accounts), or only releases its slot (addresses).
    cleared_by_success: bool,
}

impl ThrottleKey {
    /// An account that exists, by id: on MySQL/MariaDB the collation makes `ádmin`, `ADMIN `
    /// and `admin` one account, and it must have one counter however its name is typed.
    pub fn account(id: UserId) -> ThrottleKey {
        ThrottleKey {
            name: format!("user:{}", id.0),
            free: FREE_FAILURES,
            cleared_by_success: true,
        }
    }

    /// The name or email as typed, trimmed and lower-cased: an unknown name is throttled like
    /// a known one (so the throttle does not tell which exist), and a known one is counted
    /// under its spelling too. Only a hash is kept, in case a password was typed there.
    pub fn typed(login: &str) -> ThrottleKey {
        let normal = login.trim().to_lowercase();
        ThrottleKey {
            name: format!("name:{}", hex::encode(Sha256::digest(normal.as_bytes()))),
            free: FREE_FAILURES,
            cleared_by_success: true,
        }
    }

    /// The client's address: IPv4 as it is, IPv6 by its /64 (one host usually has a whole
    /// /64 to pick from), an IPv4-mapped IPv6 address as the IPv4 address it is.
    pub fn address(ip: IpAddr) -> ThrottleKey {
        let name = match ip.to_canonical() {
            IpAddr::V4(v4) => format!("ip:{v4}"),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        };
        ThrottleKey {
            name,
            free: FREE_FAILURES_PER_ADDRESS,
            cleared_by_success: false,
        }
    }
}

/// A slot taken by [`Throttle::begin`]: say how the check went with [`Attempt::succeeded`] or
/// [`Attempt::failed`]. Dropped without either (the client went away while bcrypt ran), it
/// counts as a failure: the check may well have run, and nobody proved to know the password.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    keys: Vec<ThrottleKey>,
}

impl Attempt<'_> {
    /// The password was right: accounts are cleared, addresses released.
    pub fn succeeded(mut self) {
        let keys = std::mem::take(&mut self.keys);
        self.throttle.settle(&keys, true);
    }

    /// The password was wrong: every key counts a failure.
    pub fn failed(mut self) {
        let keys = std::mem::take(&mut self.keys);
        self.throttle.settle(&keys, false);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.keys.is_empty() {
            self.throttle.settle(&self.keys, false);
        }
    }
}

impl Failures {
    const NONE: Failures = Failures {
        count: 0,
        in_flight: 0,
        locked_until: None,
        last_failure: None,
    };

    /// Seconds until this key may try again, or `None` if it may try now.
    fn wait(&mut self, free: u32, now: Instant) -> Option<u64> {
        if let Some(until) = self.locked_until.filter(|u| *u > now) {
            return Some((until - now).as_secs_f64().ceil() as u64);
        }
        let stale = self
            .last_failure
            .is_none_or(|t| now.saturating_duration_since(t) > FORGET_AFTER);
        if stale && self.in_flight == 0 {
            self.count = 0;
        }
        // Below the allowance, as many checks as are left of it may run at once; past it,
        // one at a time, each time the lock runs out.
        let slots = free.saturating_sub(self.count).max(1);
        // Checks still running will decide: a bcrypt check takes well under a second.
        (self.in_flight >= slots).then_some(1)
    }
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds to wait before an attempt on `keys` could start, if it could not now.
    #[cfg(test)]
    fn wait(&self, keys: &[ThrottleKey]) -> Option<u64> {
        let now = Instant::now();
        let mut map = self.lock();
        keys.iter()
            .filter_map(|k| map.get_mut(&k.name)?.wait(k.free, now))
            .max()
    }

    /// Takes a slot on every key at once, or none: `Err(seconds to wait)` when any key is
    /// locked or its allowance is taken by failures and checks still running. Only with a
    /// slot may a password be checked.
    pub fn begin(&self, keys: Vec<ThrottleKey>) -> Result<Attempt<'_>, u64> {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() > 100_000 {
            // Bounded memory under a spray of names or addresses: forget keys that neither
            // are locked nor have a check running.
            map.retain(|_, f| f.in_flight > 0 || f.locked_until.is_some_and(|u| u > now));
        }
        let wait = keys
            .iter()
            .filter_map(|k| map.get_mut(&k.name)?.wait(k.free, now))
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        for k in &keys {
            map.entry(k.name.clone())
                .or_insert(Failures::NONE)
                .in_flight += 1;
        }
        drop(map);
        Ok(Attempt {
            throttle: self,
            keys,
        })
    }

    fn settle(&self, keys: &[ThrottleKey], success: bool) {
        let now = Instant::now();
        let mut map = self.lock();
        for k in keys {
            if success && k.cleared_by_success {
                map.remove(&k.name);
                continue;
            }
            // The entry may have been cleared meanwhile by another attempt's success; a
            // failure still counts.
            let f = map.entry(k.name.clone()).or_insert(Failures::NONE);
            f.in_flight = f.in_flight.saturating_sub(1);
            if success {
                continue;
            }
            f.count = f.count.saturating_add(1);
            f.last_failure = Some(now);
            if f.count >= k.free {
                let exp = (f.count - k.free).min(20);
                let lock = Duration::from_secs(1u64 << exp).min(MAX_LOCK);
                f.locked_until = Some(now + lock);
            }
        }
    }
}

/// The refusal of a login while its account, name or address is throttled.
fn too_many_logins(wait: u64) -> ApiError {
    ApiError::too_many(
        format!("too many failed logins; try again in {wait} s"),
        wait,
    )
}

/// Whether `password` is the password of `user`, by one bcrypt check on the blocking pool
/// whether or not there is a user, so that timing does not tell unknown names from known.
async fn check_password(st: &ApiState, user: Option<&User>, password: &str) -> bool {
    match user {
        Some(u) => st.store.password_matches(u, password).await,
        None => {
            let pw = password.to_owned();
            let _ = tokio::task::spawn_blocking(move || bcrypt::verify(pw, dummy_hash())).await;
            false
        }
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
    // The account is looked up before the throttle is asked, even for a refusal: only with
    // all its keys can the throttle say how long the wait really is.
    let user = match &req.email {
        Some(e) => st.store.get_user_by_email(e).await,
        None => st.store.get_user_by_username(&given).await,
    };
    let user = match user {
        Ok(u) => Some(u),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut keys = vec![
        ThrottleKey::typed(&given),
        ThrottleKey::address(addr.0.ip()),
    ];
    if let Some(u) = &user {
        keys.push(ThrottleKey::account(u.id));
    }
    // The slot is taken before bcrypt runs: requests racing for one account cannot all get
    // past the throttle while the first checks are still running.
    let attempt = st.throttle.begin(keys).map_err(too_many_logins)?;
    // The password is checked for a deactivated account too, and only then is it refused:
    // the refusal takes as long as any other.
    let matches = check_password(&st, user.as_ref(), &req.password).await;
    let ok = matches && user.as_ref().is_some_and(|u| u.is_active);
    let actor = Actor {
        user_id: user.as_ref().filter(|_| ok).map(|u| u.id),
        ip_address: Some(addr.0.ip().to_string()),
        user_agent: user_agent(&headers),
    };
    let user = match user {
        Some(u) if ok => u,
        other => {
            attempt.failed();
            // Nothing typed is recorded: people type their password into the name field. The
            // account, when there is one, is named by id; the address and agent (on the row)
            // tie a spray of unknown names together.
            let (account, reason) = match &other {
                Some(u) if matches => (Some(u.id.0), "deactivated"),
                Some(u) => (Some(u.id.0), "wrong_password"),
                None => (None, "unknown_account"),
            };
            let _ = st
                .store
                .record_audit(&NewAudit {
                    actor: &actor,
                    action: "LOGIN_FAILED",
                    resource_type: "user",
                    resource_id: account,
                    details: Some(serde_json::json!({ "reason": reason })),
                })
                .await;
            return Err(ApiError::unauthorized(
                "wrong username, email or password, or the account is deactivated",
            ));
        }
    };
    attempt.succeeded();
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

    fn account(n: i32) -> ThrottleKey {
        ThrottleKey::account(UserId(n))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failures_lock_an_account_for_longer_each_time() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES - 1 {
            t.begin(vec![account(1)]).unwrap().failed();
        }
        assert_eq!(t.wait(&[account(1)]), None, "the first failures are free");
        t.begin(vec![account(1)]).unwrap().failed();
        assert_eq!(t.wait(&[account(1)]), Some(1));
        assert_eq!(t.begin(vec![account(1)]).err(), Some(1), "locked");
        assert_eq!(t.wait(&[account(2)]), None, "another account is not");
    }

    #[test]
    fn racing_attempts_get_no_more_checks_than_the_allowance() {
        let t = Throttle::default();
        let keys = || vec![account(1), ThrottleKey::address(ip("192.0.2.1"))];
        let barrier = std::sync::Barrier::new(128);
        // 128 threads ask at once and hold what they get until all have asked, as requests
        // whose bcrypt checks are still running do.
        let granted = std::thread::scope(|s| {
            let handles: Vec<_> = (0..128)
                .map(|_| {
                    s.spawn(|| {
                        let attempt = t.begin(keys());
                        barrier.wait();
                        let got = attempt.is_ok();
                        if let Ok(a) = attempt {
                            a.failed();
                        }
                        got
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|got| *got)
                .count()
        });
        assert_eq!(granted, FREE_FAILURES as usize);
        assert_eq!(
            t.begin(keys()).err(),
            Some(1),
            "the allowance spent: locked"
        );
    }

    #[test]
    fn checks_still_running_hold_their_slots() {
        let t = Throttle::default();
        let held: Vec<_> = (0..FREE_FAILURES)
            .map(|_| t.begin(vec![account(1)]).unwrap())
            .collect();
        assert!(t.begin(vec![account(1)]).is_err(), "no slot left");
        assert!(t.wait(&[account(1)]).is_some());
        // One check turns out right: the account is cleared, the others' slots with it.
        let mut held = held.into_iter();
        held.next().unwrap().succeeded();
        assert!(t.begin(vec![account(1)]).is_ok());
        // A slot dropped without an answer (the client went away) counts as a failure.
        let t = Throttle::default();
        drop(t.begin(vec![account(1)]).unwrap());
        for _ in 0..FREE_FAILURES - 1 {
            t.begin(vec![account(1)]).unwrap().failed();
        }
        assert_eq!(t.wait(&[account(1)]), Some(1));
    }

    #[test]
    fn a_success_clears_the_account_and_not_the_address() {
        let t = Throttle::default();
        let addr = || ThrottleKey::address(ip("192.0.2.1"));
        for n in 0..FREE_FAILURES_PER_ADDRESS - FREE_FAILURES {
            // Failures on many accounts from one address.
            t.begin(vec![account(n as i32), addr()]).unwrap().failed();
        }
        for _ in 0..FREE_FAILURES - 1 {
            t.begin(vec![account(100), addr()]).unwrap().failed();
        }
        // The address has one free failure left; the right password for account 100 is
        // given (its owner, or someone spraying from an account of their own).
        t.begin(vec![account(100), addr()]).unwrap().succeeded();
        assert_eq!(t.wait(&[account(100)]), None, "the account is cleared");
        for _ in 0..FREE_FAILURES - 1 {
            t.begin(vec![account(100)]).unwrap().failed();
        }
        assert_eq!(t.wait(&[account(100)]), None, "from zero again");
        t.begin(vec![account(200), addr()]).unwrap().failed();
        assert!(
            t.begin(vec![account(201), addr()]).is_err(),
            "the address kept its failures through the success"
        );
    }

    #[test]
    fn after_a_lock_one_try_at_a_time() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES {
            t.begin(vec![account(1)]).unwrap().failed();
        }
        std::thread::sleep(Duration::from_millis(1100));
        let probe = t.begin(vec![account(1)]).expect("the lock ran out");
        assert!(t.begin(vec![account(1)]).is_err(), "one at a time");
        probe.failed();
        assert_eq!(t.wait(&[account(1)]), Some(2), "twice as long");
    }

    #[test]
    fn old_failures_are_forgotten() {
        let now = Instant::now();
        let mut f = Failures {
            count: FREE_FAILURES - 1,
            in_flight: 0,
            locked_until: None,
            last_failure: Some(now),
        };
        assert_eq!(f.wait(FREE_FAILURES, now), None);
        f.in_flight = 1;
        assert_eq!(
            f.wait(FREE_FAILURES, now),
            Some(1),
            "the last slot is taken"
        );
        f.in_flight = 0;
        assert_eq!(
            f.wait(FREE_FAILURES, now + FORGET_AFTER + Duration::from_secs(1)),
            None
        );
        assert_eq!(f.count, 0);
    }

    #[test]
    fn addresses_are_keyed_by_host_and_ipv6_by_its_64() {
        let key = |s: &str| ThrottleKey::address(ip(s)).name;
        assert_eq!(key("192.0.2.1"), "ip:192.0.2.1");
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"), "IPv4-mapped");
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(key("2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        // Spraying from every address of one /64 is one address.
        let t = Throttle::default();
        for n in 0..FREE_FAILURES_PER_ADDRESS {
            let a = ip(&format!("2001:db8:1:2::{:x}", n + 1));
            t.begin(vec![account(n as i32), ThrottleKey::address(a)])
                .unwrap()
                .failed();
        }
        let other = ThrottleKey::address(ip("2001:db8:1:2:abcd::9"));
        assert!(t.begin(vec![account(999), other]).is_err());
    }

    #[test]
    fn typed_names_are_trimmed_lowercased_and_never_kept() {
        let key = |s: &str| ThrottleKey::typed(s).name;
        assert_eq!(key(" Admin "), key("admin"));
        assert_ne!(key("admin"), key("admln"));
        assert!(!key("Hunter2-secret").to_lowercase().contains("hunter2"));
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
