//! store::tokens — API bearer tokens. Only their SHA-256 is stored; a token stops working when
//! it expires, when it is revoked (logout), or at once when its user is deactivated.

use chrono::{DateTime, Utc};

use super::{now, on_pool, InsertedId, Result, Store};
use crate::model::{User, UserId};

/// A token found by its hash, with its user.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub token_id: i32,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

impl Store {
    pub async fn create_api_token(
        &self,
        user: UserId,
        token_hash: &str,
        name: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<i32> {
        Ok(on_pool!(self, p => {
            let res = sqlx::query(
                "INSERT INTO api_tokens (token_hash, user_id, name, expires_at, created_at) VALUES (?, ?, ?, ?, ?)")
                .bind(token_hash).bind(user).bind(crate::text::fit_chars(name, crate::text::VARCHAR_255))
                .bind(expires_at.naive_utc()).bind(now())
                .execute(p).await?;
            res.inserted_id() as i32
        }))
    }

    /// The live token with this hash and its active user; `None` for an unknown, expired or
    /// revoked token, or a deactivated user.
    pub async fn token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>> {
        use sqlx::{FromRow, Row};
        // The user's columns keep their names (a `User` reads them); the token's are renamed.
        // One statement: every API request pays it.
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let user_columns = super::users::COLUMNS
                .split(',')
                .map(|c| format!("u.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "SELECT t.id AS token_id, t.expires_at AS token_expires_at, {user_columns} \
                 FROM api_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = ? AND t.expires_at > ?"
            )
        });
        let found = on_pool!(self, p => match sqlx::query(SQL.as_str()).bind(token_hash).bind(now()).fetch_optional(p).await? {
            Some(row) => Some(TokenOwner {
                token_id: row.try_get("token_id")?,
                expires_at: row.try_get("token_expires_at")?,
                user: User::from_row(&row)?,
            }),
            None => None,
        });
        Ok(found.filter(|o| o.user.is_active))
    }

    /// Notes that a token was used, at most once a minute per token.
    pub async fn touch_api_token(&self, token_id: i32) -> Result<()> {
        let ts = now();
        let stale = ts - chrono::Duration::seconds(60);
        on_pool!(self, p => {
            sqlx::query("UPDATE api_tokens SET last_used = ? WHERE id = ? AND (last_used IS NULL OR last_used < ?)")
                .bind(ts).bind(token_id).bind(stale).execute(p).await?;
        });
        Ok(())
    }

    /// Ends a token (logout).
    pub async fn delete_api_token(&self, token_id: i32) -> Result<()> {
        on_pool!(self, p => {
            sqlx::query("DELETE FROM api_tokens WHERE id = ?").bind(token_id).execute(p).await?;
        });
        Ok(())
    }

    /// Which of `tokens` (ids) are still live: not expired, not revoked, their user active.
    /// One query for all of them (live streams ask this every few seconds).
    pub async fn live_tokens(&self, tokens: &[i32]) -> Result<Vec<i32>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        Ok(on_pool!(self, p => {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT t.id FROM api_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE u.is_active = TRUE AND t.expires_at > ",
            );
            qb.push_bind(now()).push(" AND t.id");
            super::push_in(&mut qb, tokens);
            qb.build_query_scalar::<i32>().persistent(false).fetch_all(p).await?
        }))
    }

    /// Ends every token of a user (password changed, account deactivated).
    pub async fn delete_user_tokens(&self, user: UserId, except: Option<i32>) -> Result<u64> {
        Ok(
            on_pool!(self, p => sqlx::query("DELETE FROM api_tokens WHERE user_id = ? AND id <> ?")
            .bind(user).bind(except.unwrap_or(-1)).execute(p).await?.rows_affected()),
        )
    }
}
