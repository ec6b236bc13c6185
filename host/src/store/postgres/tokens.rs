//! SQL for [`TokenStore`]: API tokens (hashes only).

use sqlx::postgres::PgRow;

use super::PgStore;
use super::rows::{get, sql_error};
use std::time::SystemTime;

use crate::store::{ApiToken, StoreError, TokenStore, now_rfc3339, rfc3339};

const TOKEN_COLUMNS: &str = concat!(
    "id, name, ",
    ts!("", "created_at"),
    ", ",
    ts!("", "revoked_at")
);

fn token_from_row(row: &PgRow) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: get(row, "id")?,
        name: get(row, "name")?,
        created_at: get(row, "created_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

/// Insert a token through `executor`.
async fn insert_token<'e, E>(
    executor: E,
    name: &str,
    token_hash: &str,
) -> Result<PgRow, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    sqlx::query(&format!(
        "INSERT INTO api_tokens (name, token_hash, created_at) VALUES ($1, $2, $3::timestamptz) \
         RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(name)
    .bind(token_hash)
    .bind(now_rfc3339())
    .fetch_one(executor)
    .await
}

#[async_trait::async_trait]
impl TokenStore for PgStore {
    async fn create_token(&self, name: &str, token_hash: &str) -> Result<ApiToken, StoreError> {
        let row = insert_token(&self.pool, name, token_hash)
            .await
            .map_err(sql_error("create token"))?;
        token_from_row(&row)
    }

    async fn create_first_token(
        &self,
        name: &str,
        token_hash: &str,
    ) -> Result<Option<ApiToken>, StoreError> {
        let op = "create first token";
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        // Two first starts at once: the second waits here, then sees the
        // first one's token (readers are not blocked).
        sqlx::query("LOCK TABLE api_tokens IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(sql_error(op))?;
        let active: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL")
                .fetch_one(&mut *tx)
                .await
                .map_err(sql_error(op))?;
        if active > 0 {
            return Ok(None);
        }
        let row = insert_token(&mut *tx, name, token_hash)
            .await
            .map_err(sql_error(op))?;
        let token = token_from_row(&row)?;
        tx.commit().await.map_err(sql_error(op))?;
        Ok(Some(token))
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list tokens"))?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2::timestamptz WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(sql_error("revoke token"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn active_token(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error("check token"))?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn create_session(
        &self,
        session_hash: &str,
        token_id: i64,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        let op = "create console session";
        let now = now_rfc3339();
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1::timestamptz")
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(sql_error(op))?;
        sqlx::query(
            "INSERT INTO console_sessions (session_hash, token_id, created_at, expires_at) \
             VALUES ($1, $2, $3::timestamptz, $4::timestamptz)",
        )
        .bind(session_hash)
        .bind(token_id)
        .bind(&now)
        .bind(rfc3339(expires_at))
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        tx.commit().await.map_err(sql_error(op))
    }

    async fn active_session(
        &self,
        session_hash: &str,
        now: SystemTime,
    ) -> Result<Option<ApiToken>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT t.id, t.name, {}, {} \
             FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id \
             WHERE s.session_hash = $1 AND s.expires_at > $2::timestamptz AND t.revoked_at IS NULL",
            ts!("t.", "created_at"),
            ts!("t.", "revoked_at")
        ))
        .bind(session_hash)
        .bind(rfc3339(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error("check console session"))?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn delete_session(&self, session_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE session_hash = $1")
            .bind(session_hash)
            .execute(&self.pool)
            .await
            .map_err(sql_error("sign out"))?;
        Ok(done.rows_affected() > 0)
    }
}
