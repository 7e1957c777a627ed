//! `/api/v1/users`: accounts, roles and passwords. Only admins manage accounts; everyone may
//! change their own password (with the current one, checked under the account's login
//! throttle). A password an admin sets must be changed at its owner's next login; a new
//! password must differ from the old; none is ever echoed, logged or audited.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use outpost_api::{
    NewUserRequest, Page, PasswordChangeRequest, UserPatchRequest, UserQuery, UserView,
};

use super::auth::{Caller, ThrottleKey};
use super::error::{ApiError, ApiResult, Json, Path, Query};
use super::{views, ApiState};
use crate::model::{Paging, Role, UserId};
use crate::store::users::{NewUser, UserPatch};

#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(UserQuery),
    responses((status = 200, body = Page<UserView>)))]
pub async fn list(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<UserQuery>,
) -> ApiResult<Json<Page<UserView>>> {
    let page = st
        .store
        .list_users(q.role, q.active, paging(q.limit, q.offset))
        .await?;
    Ok(Json(views::page(page, |u| {
        views::user(u, st.password_expired(u))
    })))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUserRequest,
    responses((status = 201, body = UserView), (status = 409, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody)))]
pub async fn create(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<NewUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let user = st
        .store
        .create_user(
            &NewUser {
                username: req.username,
                email: req.email,
                password: req.password,
                role: req.role.unwrap_or(Role::Viewer),
                must_change_password: true,
            },
            &caller.actor(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(views::user(&user, st.password_expired(&user))),
    ))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = i32, Path)),
    responses((status = 200, body = UserView), (status = 404, body = outpost_api::ErrorBody)))]
pub async fn get(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<i32>,
) -> ApiResult<Json<UserView>> {
    let user = st.store.get_user(UserId(id)).await?;
    Ok(Json(views::user(&user, st.password_expired(&user))))
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = i32, Path)),
    request_body = UserPatchRequest,
    responses((status = 200, body = UserView), (status = 404, body = outpost_api::ErrorBody), (status = 409, body = outpost_api::ErrorBody)))]
pub async fn update(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i32>,
    Json(req): Json<UserPatchRequest>,
) -> ApiResult<Json<UserView>> {
    let id = UserId(id);
    let target = st.store.get_user(id).await?;
    let demoted = req.role.is_some_and(|r| r != Role::Admin);
    let deactivated = req.is_active == Some(false);
    if target.role == Role::Admin && target.is_active && (demoted || deactivated) {
        let admins = st
            .store
            .list_users(Some(Role::Admin), Some(true), Paging::new(2, 0))
            .await?;
        if admins.total <= 1 {
            return Err(ApiError::conflict(format!(
                "{} is the last active admin: make another admin first",
                target.username
            )));
        }
    }
    let user = st
        .store
        .update_user(
            id,
            &UserPatch {
                email: req.email,
                password: None,
                role: req.role,
                is_active: req.is_active,
            },
            &caller.actor(),
        )
        .await?;
    if deactivated {
        st.store.delete_user_tokens(id, None).await?;
    }
    Ok(Json(views::user(&user, st.password_expired(&user))))
}

#[utoipa::path(post, path = "/api/v1/users/{id}/password", tag = "users", params(("id" = i32, Path)),
    request_body = PasswordChangeRequest,
    responses((status = 200, body = UserView), (status = 403, body = outpost_api::ErrorBody), (status = 422, body = outpost_api::ErrorBody),
              (status = 429, body = outpost_api::ErrorBody)))]
pub async fn password(
    State(st): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<i32>,
    Json(req): Json<PasswordChangeRequest>,
) -> ApiResult<Json<UserView>> {
    let id = UserId(id);
    let own = caller.user.id == id;
    if own {
        let current = req.current_password.as_deref().ok_or_else(|| {
            ApiError::unprocessable("current_password is required to change your own password")
        })?;
        // Whoever holds a session (a stolen token, an unlocked screen) must not get unlimited
        // guesses at the password here: the check shares the account's login throttle.
        let attempt = st
            .throttle
            .begin(vec![ThrottleKey::account(id)])
            .map_err(|wait| {
                ApiError::too_many(
                    format!("too many wrong passwords for this account; try again in {wait} s"),
                    wait,
                )
            })?;
        if !st.store.password_matches(&caller.user, current).await {
            attempt.failed();
            return Err(ApiError::forbidden("current_password is wrong"));
        }
        attempt.succeeded();
    }
    // Someone else's password, set by an admin, must be changed by its owner.
    let user = st
        .store
        .set_password(id, &req.new_password, !own, &caller.actor())
        .await?;
    // Every other session of that account ends with the old password.
    st.store
        .delete_user_tokens(id, own.then_some(caller.token_id))
        .await?;
    Ok(Json(views::user(&user, st.password_expired(&user))))
}

/// A listing's paging from its query (default 50, at most 1,000).
pub fn paging(limit: Option<i64>, offset: Option<i64>) -> Paging {
    Paging::new(limit.unwrap_or(50), offset.unwrap_or(0))
}
