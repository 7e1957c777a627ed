//! Signing in and out of the web UI, and changing one's password when the policy asks for it.
//! Sign-in goes through the API's own login (throttling, audit, token); the token lands in an
//! HttpOnly, Secure, SameSite=Strict cookie that scripts cannot read. The password change goes
//! through the API's too, so its current-password check shares the account's login throttle.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use outpost_api::{LoginRequest, PasswordChangeRequest};
use serde::Deserialize;

use super::layout::{self, Area};
use super::viewer::Viewer;
use crate::http::auth::{self, ClientAddr, SESSION_COOKIE};
use crate::http::error::ApiError;
use crate::http::WebState;
use crate::service;

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a path on this site may be where sign-in leads, anything else leads to `/`.
///
/// A path here is one `/` then neither `/` nor `\`, with no `\` or control character, as sent
/// and percent-decoded once more: browsers read `\` as `/` and drop tabs and newlines from a
/// URL, so `/\evil.example` and `/<TAB>/evil.example` are both `//evil.example`, another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if is_local_path(n) && is_local_path(&percent_decode(n)) => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn is_local_path(p: &str) -> bool {
    let mut chars = p.chars();
    chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && !p.chars().any(|c| c == '\\' || c.is_control())
}

/// `%XX` escapes decoded (an invalid one is kept as it is); bytes that are not UTF-8 become
/// U+FFFD, which [`is_local_path`] lets through: it is no separator.
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((hi, lo)) => {
                // Two hex digits: below 256.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn login_form(next: &str, error: Option<&str>, username: &str) -> maud::Markup {
    layout::bare(
        "Sign in",
        html! {
            form.card.narrow method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                @if let Some(e) = error { p.error role="alert" { (e) } }
                label for="username" { "Username or email" }
                input #username name="username" autocomplete="username" required autofocus value=(username);
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// GET /login
pub async fn login_page(Query(q): Query<NextQuery>) -> Response {
    login_form(&safe_next(q.next.as_deref()), None, "").into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

/// POST /login
pub async fn login(
    State(st): State<Arc<WebState>>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref());
    let (username, email) = if f.username.contains('@') {
        (None, Some(f.username.clone()))
    } else {
        (Some(f.username.clone()), None)
    };
    let req = LoginRequest {
        username,
        email,
        password: f.password,
    };
    let signed_in =
        service::sessions::sign_in(&st.core, addr.0.ip(), auth::user_agent(&headers), &req).await;
    match signed_in.map_err(ApiError::from) {
        Ok(resp) => {
            let max_age = (resp.expires_at - chrono::Utc::now()).num_seconds().max(0);
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}",
                resp.token
            );
            let to = if resp.user.must_change_password {
                "/account/password".to_owned()
            } else {
                next
            };
            ([(header::SET_COOKIE, cookie)], Redirect::to(&to)).into_response()
        }
        Err(e) => {
            let retry = retry_after(&e);
            let page = login_form(&next, Some(&e.message), &f.username);
            (e.status, retry, page).into_response()
        }
    }
}

/// The Retry-After header of a throttled refusal, for the page that shows it.
fn retry_after(e: &ApiError) -> Option<[(header::HeaderName, String); 1]> {
    e.retry_after
        .map(|secs| [(header::RETRY_AFTER, secs.to_string())])
}

/// POST /logout: ends the session's token and clears the cookie.
pub async fn logout(State(st): State<Arc<WebState>>, Extension(v): Extension<Viewer>) -> Response {
    let _ = service::sessions::sign_out(&st.core, &v.caller).await;
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}

fn password_form(v: &Viewer, error: Option<&str>, expired: bool) -> maud::Markup {
    layout::page(
        v,
        Area::Account,
        "Change your password",
        html! {
            @if expired {
                p.notice { "Your password must be changed before you go on." }
            }
            form.card.narrow method="post" action="/account/password" {
                (layout::csrf(v))
                @if let Some(e) = error { p.error role="alert" { (e) } }
                label for="current" { "Current password" }
                input #current name="current_password" type="password" autocomplete="current-password" required;
                label for="new" { "New password (8 to 72 bytes)" }
                input #new name="new_password" type="password" autocomplete="new-password" minlength="8" required;
                button type="submit" { "Change password" }
            }
        },
    )
}

/// GET /account/password
pub async fn password_page(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
) -> Response {
    let expired = st.core.password_expired(&v.caller.user);
    password_form(&v, None, expired).into_response()
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    current_password: String,
    new_password: String,
}

/// POST /account/password
pub async fn change_password(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Form(f): Form<PasswordForm>,
) -> Response {
    let req = PasswordChangeRequest {
        current_password: Some(f.current_password),
        new_password: f.new_password,
    };
    let id = v.caller.user.id;
    let changed = service::users::set_password(&st.core, &v.caller, id, &req).await;
    match changed.map_err(ApiError::from) {
        // The API ends the account's other sessions and keeps this one.
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => {
            // A throttled check keeps its 429 and says when to try again.
            let status = if e.status.is_server_error() || e.status == StatusCode::TOO_MANY_REQUESTS
            {
                e.status
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let retry = retry_after(&e);
            // On one's own account the only refusal is the current password's; the API's
            // wording names a JSON field, which a person filling in this form never sees.
            let message = if e.status == StatusCode::FORBIDDEN {
                "The current password is wrong."
            } else {
                e.message.as_str()
            };
            let page = password_form(&v, Some(message), st.core.password_expired(&v.caller.user));
            (status, retry, page).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_leads_only_to_this_site() {
        assert_eq!(
            safe_next(Some("/jobs?status=failed")),
            "/jobs?status=failed"
        );
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn sign_in_never_leads_off_site_however_the_path_is_disguised() {
        // As the form or query arrives, already decoded once by axum: the tab of
        // `next=/%09/evil.example` is a tab here.
        for evil in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/\\evil.example",
            "\\/evil.example",
            "/x\\..\\\\evil.example",
            "//evil.example",
            "///evil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/%09/evil.example",
            "/%0a/evil.example",
            "/jobs%00",
            "/jobs\u{7f}",
            "/jobs\u{85}",
            "/jobs%C2%85",
            "https://evil.example/",
            " //evil.example",
            "evil.example",
            "",
        ] {
            assert_eq!(safe_next(Some(evil)), "/", "{evil:?} was let through");
        }
        for fine in [
            "/",
            "/jobs",
            "/jobs?status=failed&page=2",
            "/jobs/7f0c?x=%20y",
            "/servers?tag=dc%3Dfra1",
            "/jobs?q=100%",
            "/jobs?q=%zz",
            "/caf\u{e9}",
        ] {
            assert_eq!(safe_next(Some(fine)), fine);
        }
    }
}
