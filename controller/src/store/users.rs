//! store::users — accounts, their roles and passwords (bcrypt, cost ≥ 12; hashing runs on the
//! blocking pool so it never stalls the async workers).

use serde_json::json;

use super::audit::{insert_audit, Actor, NewAudit};
use super::{now, on_pool, page, InsertedId, Result, Store, StoreError, WritePool};
use crate::model::{Page, Paging, Role, User, UserId};

pub(crate) const COLUMNS: &str =
    "id, username, email, password_hash, role, is_active, created_at, \
     updated_at, last_login, password_changed_at, must_change_password";

/// The shortest password accepted for a new account or a change.
pub const MIN_PASSWORD_LEN: usize = 8;

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password: String,
    pub role: Role,
    /// The password was chosen by someone else (an admin): it must be changed at first login.
    pub must_change_password: bool,
}

/// A change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub email: Option<String>,
    pub password: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

fn check_username(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 80 {
        return Err(StoreError::invalid(
            "username",
            "must be 1 to 80 characters",
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(StoreError::invalid("username", "must not contain spaces"));
    }
    Ok(())
}

/// Lower-cases and checks an email address.
fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.chars().count() <= 120
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !valid {
        return Err(StoreError::invalid(
            "email",
            "must look like name@example.com (at most 120 characters)",
        ));
    }
    Ok(email)
}

async fn hash_password(password: &str, cost: u32) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(StoreError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    // bcrypt only reads the first 72 bytes: refuse longer rather than silently ignore the tail.
    if password.len() > 72 {
        return Err(StoreError::invalid("password", "must be at most 72 bytes"));
    }
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| StoreError::invalid("password", format!("hashing task failed: {e}")))?
        .map_err(|e| StoreError::invalid("password", e.to_string()))
}

impl Store {
    pub async fn create_user(&self, new: &NewUser, actor: &Actor) -> Result<User> {
        check_username(&new.username)?;
        let email = normalize_email(&new.email)?;
        let hash = hash_password(&new.password, self.bcrypt_cost).await?;
        let ts = now();
        let id = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let res = sqlx::query(
                "INSERT INTO users (username, email, password_hash, role, is_active, created_at, updated_at, \
                 password_changed_at, must_change_password) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.username)
            .bind(&email)
            .bind(&hash)
            .bind(new.role.as_str())
            .bind(true)
            .bind(ts)
            .bind(ts)
            .bind(ts)
            .bind(new.must_change_password)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::on_write(e, || format!("a user named '{}' or with email {email}", new.username)))?;
            let id = res.inserted_id() as i32;
            insert_audit!(&mut *tx, &NewAudit {
                actor,
                action: "CREATE",
                resource_type: "user",
                resource_id: Some(id),
                details: Some(json!({"username": new.username, "email": email, "role": new.role})),
            })?;
            tx.commit().await?;
            id
        });
        self.get_user(UserId(id)).await
    }

    pub async fn get_user(&self, id: UserId) -> Result<User> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = ?");
        let user =
            on_pool!(self, p => sqlx::query_as::<_, User>(&sql).bind(id).fetch_optional(p).await?);
        user.ok_or_else(|| StoreError::NotFound(format!("user {id}")))
    }

    pub async fn get_user_by_username(&self, username: &str) -> Result<User> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE username = ?");
        let user = on_pool!(self, p => sqlx::query_as::<_, User>(&sql).bind(username).fetch_optional(p).await?);
        user.ok_or_else(|| StoreError::NotFound(format!("user '{username}'")))
    }

    pub async fn get_user_by_email(&self, email: &str) -> Result<User> {
        let email = email.trim().to_lowercase();
        let sql = format!("SELECT {COLUMNS} FROM users WHERE email = ?");
        let user = on_pool!(self, p => sqlx::query_as::<_, User>(&sql).bind(&email).fetch_optional(p).await?);
        user.ok_or_else(|| StoreError::NotFound(format!("user with email {email}")))
    }

    /// Whether `password` is the user's password (bcrypt, on the blocking pool).
    pub async fn password_matches(&self, user: &User, password: &str) -> bool {
        let (pw, hash) = (password.to_owned(), user.password_hash.clone());
        tokio::task::spawn_blocking(move || bcrypt::verify(pw, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
    }

    /// Sets a new password, which must differ from the current one. `must_change` marks it as
    /// chosen by someone else (an admin's reset): the user must change it at next login.
    pub async fn set_password(
        &self,
        id: UserId,
        password: &str,
        must_change: bool,
        actor: &Actor,
    ) -> Result<User> {
        let user = self.get_user(id).await?;
        if self.password_matches(&user, password).await {
            return Err(StoreError::invalid(
                "new_password",
                "must differ from the current password",
            ));
        }
        let hash = hash_password(password, self.bcrypt_cost).await?;
        let ts = now();
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("UPDATE users SET password_hash = ?, password_changed_at = ?, must_change_password = ?, updated_at = ? WHERE id = ?")
                .bind(&hash).bind(ts).bind(must_change).bind(ts).bind(id).execute(&mut *tx).await?;
            // The audit says that it changed and who changed it, never the password.
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "PASSWORD", resource_type: "user", resource_id: Some(id.0),
                details: Some(json!({"username": user.username, "reset_by_other": must_change})),
            })?;
            tx.commit().await?;
        });
        self.get_user(id).await
    }

    /// Stamps a successful login.
    pub async fn stamp_login(&self, id: UserId) -> Result<()> {
        on_pool!(self, p => {
            sqlx::query("UPDATE users SET last_login = ? WHERE id = ?").bind(now()).bind(id).execute(p).await?;
        });
        Ok(())
    }

    /// Users ordered by id; `role` and `active` filter when given.
    pub async fn list_users(
        &self,
        role: Option<Role>,
        active: Option<bool>,
        paging: Paging,
    ) -> Result<Page<User>> {
        let role = role.map(Role::as_str);
        Ok(
            page!(self, User, select: COLUMNS, from: "users", order: "id", paging: paging,
            filters: [("role", role), ("is_active", active)]),
        )
    }

    pub async fn update_user(&self, id: UserId, patch: &UserPatch, actor: &Actor) -> Result<User> {
        let current = self.get_user(id).await?;
        let email = match &patch.email {
            Some(e) => normalize_email(e)?,
            None => current.email.clone(),
        };
        let hash = match &patch.password {
            Some(pw) => hash_password(pw, self.bcrypt_cost).await?,
            None => current.password_hash.clone(),
        };
        let role = patch.role.unwrap_or(current.role);
        let active = patch.is_active.unwrap_or(current.is_active);
        // Only the names of changed fields are audited: the password never is, hashed or not.
        let mut changed = serde_json::Map::new();
        if email != current.email {
            changed.insert("email".into(), json!({"old": current.email, "new": email}));
        }
        if role != current.role {
            changed.insert("role".into(), json!({"old": current.role, "new": role}));
        }
        if active != current.is_active {
            changed.insert(
                "is_active".into(),
                json!({"old": current.is_active, "new": active}),
            );
        }
        if patch.password.is_some() {
            changed.insert("password".into(), json!("changed"));
        }
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("UPDATE users SET email = ?, password_hash = ?, role = ?, is_active = ?, updated_at = ? WHERE id = ?")
                .bind(&email).bind(&hash).bind(role.as_str()).bind(active).bind(now()).bind(id)
                .execute(&mut *tx).await
                .map_err(|e| StoreError::on_write(e, || format!("a user with email {email}")))?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "UPDATE", resource_type: "user", resource_id: Some(id.0),
                details: Some(serde_json::Value::Object(changed)),
            })?;
            tx.commit().await?;
        });
        self.get_user(id).await
    }

    /// Checks a login. Returns the user and stamps `last_login` when the password matches an
    /// active account; `None` otherwise, without saying which part was wrong.
    pub async fn verify_login(&self, username: &str, password: &str) -> Result<Option<User>> {
        let user = match self.get_user_by_username(username).await {
            Ok(u) => u,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (pw, hash) = (password.to_owned(), user.password_hash.clone());
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pw, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if !ok || !user.is_active {
            return Ok(None);
        }
        let ts = now();
        on_pool!(self, p => {
            sqlx::query("UPDATE users SET last_login = ? WHERE id = ?").bind(ts).bind(user.id).execute(p).await?;
        });
        self.get_user(user.id).await.map(Some)
    }

    /// Deletes an account that nothing refers to; one with jobs or tickets must be
    /// deactivated instead.
    pub async fn delete_user(&self, id: UserId, actor: &Actor) -> Result<()> {
        let user = self.get_user(id).await?;
        let jobs: i64 = on_pool!(self, p => sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM jobs WHERE user_id = ?) + (SELECT COUNT(*) FROM tickets WHERE created_by = ?)")
            .bind(id).bind(id).fetch_one(p).await?);
        if jobs > 0 {
            return Err(StoreError::InUse {
                what: format!("user {}", user.username),
                count: jobs,
                dependents: "jobs or tickets",
                hint: "deactivate the account instead",
            });
        }
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("DELETE FROM users WHERE id = ?").bind(id).execute(&mut *tx).await?;
            insert_audit!(&mut *tx, &NewAudit {
                actor, action: "DELETE", resource_type: "user", resource_id: Some(id.0),
                details: Some(json!({"username": user.username})),
            })?;
            tx.commit().await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            normalize_email(" Ops@Example.COM ").unwrap(),
            "ops@example.com"
        );
        assert!(normalize_email("no-at-sign").is_err());
        assert!(normalize_email("a@b@c").is_err());
        assert!(normalize_email("@example.com").is_err());
    }

    #[test]
    fn usernames_are_checked() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("a b").is_err());
        assert!(check_username(&"x".repeat(81)).is_err());
    }
}
