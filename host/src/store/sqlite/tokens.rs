//! SQL for [`TokenStore`]: API tokens (hashes only).

use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use super::rows::{get, sql_error};
use std::time::SystemTime;

use crate::store::{ApiToken, StoreError, TokenStore, now_rfc3339, rfc3339};

const TOKEN_COLUMNS: &str = "id, name, created_at, revoked_at";

fn token_from_row(row: &SqliteRow) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: get(row, "id")?,
        name: get(row, "name")?,
        created_at: get(row, "created_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

#[async_trait::async_trait]
impl TokenStore for SqliteStore {
    async fn create_token(&self, name: &str, token_hash: &str) -> Result<ApiToken, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens (name, token_hash, created_at) VALUES (?1, ?2, ?3) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(token_hash)
        .bind(now_rfc3339())
        .fetch_one(&self.pool)
        .await
        .map_err(sql_error("create token"))?;
        token_from_row(&row)
    }

    async fn create_first_token(
        &self,
        name: &str,
        token_hash: &str,
    ) -> Result<Option<ApiToken>, StoreError> {
        let mut tx = self.begin_write("create first token").await?;
        let active: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL")
                .fetch_one(&mut *tx)
                .await
                .map_err(sql_error("create first token"))?;
        if active > 0 {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens (name, token_hash, created_at) VALUES (?1, ?2, ?3) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(token_hash)
        .bind(now_rfc3339())
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_error("create first token"))?;
        let token = token_from_row(&row)?;
        tx.commit().await.map_err(sql_error("create first token"))?;
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
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
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
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?1 AND revoked_at IS NULL"
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
        let mut tx = self.begin_write(op).await?;
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= ?1")
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(sql_error(op))?;
        sqlx::query(
            "INSERT INTO console_sessions (session_hash, token_id, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4)",
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
        let row = sqlx::query(
            "SELECT t.id, t.name, t.created_at, t.revoked_at \
             FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id \
             WHERE s.session_hash = ?1 AND s.expires_at > ?2 AND t.revoked_at IS NULL",
        )
        .bind(session_hash)
        .bind(rfc3339(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error("check console session"))?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn delete_session(&self, session_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM console_sessions WHERE session_hash = ?1")
            .bind(session_hash)
            .execute(&self.pool)
            .await
            .map_err(sql_error("sign out"))?;
        Ok(done.rows_affected() > 0)
    }
}
