//! Signing in and out: a login is checked with bcrypt under the [`Throttle`](crate::throttle::Throttle) (a slot taken
//! before the password is checked) and answered with a bearer token of 256 random bits, of
//! which only the SHA-256 is stored; a token is turned back into a [`Caller`].

use std::net::IpAddr;

use chrono::Utc;
use outpost_api::{LoginRequest, LoginResponse};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{views, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::User;
use crate::store::audit::{Actor, NewAudit};
use crate::store::StoreError;
use crate::throttle::ThrottleKey;

/// SHA-256 of a bearer token, as stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The refusal of a login while its account, name or address is throttled.
fn too_many_logins(wait: u64) -> ServiceError {
    ServiceError::too_many(
        format!("too many failed logins; try again in {wait} s"),
        wait,
    )
}

/// Whether `password` is the password of `user`, by one bcrypt check on the blocking pool
/// whether or not there is a user, so that timing does not tell unknown names from known.
async fn check_password(core: &Core, user: Option<&User>, password: &str) -> bool {
    match user {
        Some(u) => core.store.password_matches(u, password).await,
        None => {
            let pw = password.to_owned();
            let _ = tokio::task::spawn_blocking(move || bcrypt::verify(pw, dummy_hash())).await;
            false
        }
    }
}

/// Signs a user in from `addr`: a new token, or the one refusal whatever was wrong.
pub async fn sign_in(
    core: &Core,
    addr: IpAddr,
    user_agent: Option<String>,
    req: &LoginRequest,
) -> Result<LoginResponse> {
    let given = match (&req.username, &req.email) {
        (Some(u), None) => u.clone(),
        (None, Some(e)) => e.clone(),
        _ => {
            return Err(ServiceError::unprocessable(
                "give either username or email, and password",
            ))
        }
    };
    // The account is looked up before the throttle is asked, even for a refusal: only with
    // all its keys can the throttle say how long the wait really is.
    let user = match &req.email {
        Some(e) => core.store.get_user_by_email(e).await,
        None => core.store.get_user_by_username(&given).await,
    };
    let user = match user {
        Ok(u) => Some(u),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut keys = vec![ThrottleKey::typed(&given), ThrottleKey::address(addr)];
    if let Some(u) = &user {
        keys.push(ThrottleKey::account(u.id));
    }
    // The slot is taken before bcrypt runs: requests racing for one account cannot all get
    // past the throttle while the first checks are still running.
    let attempt = core.throttle.begin(keys).map_err(too_many_logins)?;
    // The password is checked for a deactivated account too, and only then is it refused:
    // the refusal takes as long as any other.
    let matches = check_password(core, user.as_ref(), &req.password).await;
    let ok = matches && user.as_ref().is_some_and(|u| u.is_active);
    let actor = Actor {
        user_id: user.as_ref().filter(|_| ok).map(|u| u.id),
        ip_address: Some(addr.to_string()),
        user_agent: user_agent.clone(),
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
            let _ = core
                .store
                .record_audit(&NewAudit {
                    actor: &actor,
                    action: "LOGIN_FAILED",
                    resource_type: "user",
                    resource_id: account,
                    details: Some(serde_json::json!({ "reason": reason })),
                })
                .await;
            return Err(ServiceError::unauthorized(
                "wrong username, email or password, or the account is deactivated",
            ));
        }
    };
    attempt.succeeded();
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!("opat_{}", hex::encode(secret));
    let expires_at = Utc::now()
        + chrono::Duration::from_std(core.settings.api_token_ttl)
            .unwrap_or(chrono::Duration::hours(12));
    core.store
        .create_api_token(
            user.id,
            &token_hash(&token),
            user_agent.as_deref().unwrap_or("login"),
            expires_at,
        )
        .await?;
    core.store.stamp_login(user.id).await?;
    core.store
        .record_audit(&NewAudit {
            actor: &actor,
            action: "LOGIN",
            resource_type: "user",
            resource_id: Some(user.id.0),
            details: None,
        })
        .await?;
    let user = core.store.get_user(user.id).await?;
    let view = views::user(&user, core.password_expired(&user));
    Ok(LoginResponse {
        token,
        expires_at,
        user: view,
    })
}

/// A bcrypt hash (cost 12) of nothing in particular, made once: checking a password against it
/// takes as long as a real check, so a refusal does not tell whether the name exists.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("not a password", 12).unwrap_or_default())
}

/// Ends the caller's token.
pub async fn sign_out(core: &Core, caller: &Caller) -> Result<()> {
    core.store.delete_api_token(caller.token_id).await?;
    core.store
        .record_audit(&NewAudit {
            actor: &caller.actor(),
            action: "LOGOUT",
            resource_type: "user",
            resource_id: Some(caller.user.id.0),
            details: None,
        })
        .await?;
    Ok(())
}

/// The signed-in user behind `token`, or `None` when the token is unknown, expired or its
/// account deactivated. Marks the token used.
pub async fn caller_for(
    core: &Core,
    token: &str,
    user_agent: Option<String>,
    ip: Option<IpAddr>,
) -> Result<Option<Caller>> {
    let Some(owner) = core.store.token_owner(&token_hash(token)).await? else {
        return Ok(None);
    };
    // Off the request's path: the note is a write (a commit) once a minute per token, which
    // every request would otherwise wait for or at least ask about.
    if core.token_uses.due(owner.token_id) {
        let store = core.store.clone();
        let id = owner.token_id;
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_token(id).await {
                tracing::debug!(token = id, error = %e, "cannot note a token's use");
            }
        });
    }
    Ok(Some(Caller {
        ip,
        user_agent,
        token_id: owner.token_id,
        token_expires_at: owner.expires_at,
        user: owner.user,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_is_a_bcrypt_hash() {
        assert_eq!(bcrypt::verify("x", dummy_hash()).ok(), Some(false));
    }
}
