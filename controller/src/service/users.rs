//! Accounts, roles and passwords. Only admins manage accounts; everyone may change their own
//! password (with the current one, checked under the account's login throttle). A password an
//! admin sets must be changed at its owner's next login; a new password must differ from the
//! old; none is ever echoed, logged or audited.

use outpost_api::{
    NewUserRequest, Page, PasswordChangeRequest, UserPatchRequest, UserQuery, UserView,
};

use super::{paging, views, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::{Paging, Role, User, UserId};
use crate::store::users::{NewUser, UserPatch};
use crate::throttle::ThrottleKey;

fn view(core: &Core, u: &User) -> UserView {
    views::user(u, core.password_expired(u))
}

pub async fn list(core: &Core, q: &UserQuery) -> Result<Page<UserView>> {
    let page = core
        .store
        .list_users(q.role, q.active, paging(q.limit, q.offset))
        .await?;
    Ok(views::page(page, |u| view(core, u)))
}

/// A new account, whose password its owner must change at the first login.
pub async fn create(core: &Core, caller: &Caller, req: NewUserRequest) -> Result<UserView> {
    let user = core
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
    Ok(view(core, &user))
}

pub async fn get(core: &Core, id: UserId) -> Result<UserView> {
    let user = core.store.get_user(id).await?;
    Ok(view(core, &user))
}

/// Changes an account's email, role or activity; the last active admin stays one, and a
/// deactivated account's sessions end.
pub async fn update(
    core: &Core,
    caller: &Caller,
    id: UserId,
    req: UserPatchRequest,
) -> Result<UserView> {
    let target = core.store.get_user(id).await?;
    let demoted = req.role.is_some_and(|r| r != Role::Admin);
    let deactivated = req.is_active == Some(false);
    if target.role == Role::Admin && target.is_active && (demoted || deactivated) {
        let admins = core
            .store
            .list_users(Some(Role::Admin), Some(true), Paging::new(2, 0))
            .await?;
        if admins.total <= 1 {
            return Err(ServiceError::conflict(format!(
                "{} is the last active admin: make another admin first",
                target.username
            )));
        }
    }
    let user = core
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
        core.store.delete_user_tokens(id, None).await?;
    }
    Ok(view(core, &user))
}

/// Sets the password of `id`: one's own with the current password, anyone's as an admin (who
/// may reach here only through the access table's self-or-admin rule).
pub async fn set_password(
    core: &Core,
    caller: &Caller,
    id: UserId,
    req: &PasswordChangeRequest,
) -> Result<UserView> {
    let own = caller.user.id == id;
    if !own && !caller.is_admin() {
        return Err(ServiceError::forbidden(
            "only an admin may act on another user",
        ));
    }
    if own {
        let current = req.current_password.as_deref().ok_or_else(|| {
            ServiceError::unprocessable("current_password is required to change your own password")
        })?;
        // Whoever holds a session (a stolen token, an unlocked screen) must not get unlimited
        // guesses at the password here: the check shares the account's login throttle.
        let attempt = core
            .throttle
            .begin(vec![ThrottleKey::account(id)])
            .map_err(|wait| {
                ServiceError::too_many(
                    format!("too many wrong passwords for this account; try again in {wait} s"),
                    wait,
                )
            })?;
        if !core.store.password_matches(&caller.user, current).await {
            attempt.failed();
            return Err(ServiceError::forbidden("current_password is wrong"));
        }
        attempt.succeeded();
    }
    // Someone else's password, set by an admin, must be changed by its owner.
    let user = core
        .store
        .set_password(id, &req.new_password, !own, &caller.actor())
        .await?;
    // Every other session of that account ends with the old password.
    core.store
        .delete_user_tokens(id, own.then_some(caller.token_id))
        .await?;
    Ok(view(core, &user))
}
