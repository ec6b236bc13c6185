//! SQL for [`SecretStore`]: sealed secrets (the store never sees clear values).

use super::PgStore;
use super::rows::{get, sql_error};
use crate::store::{SealedSecret, SecretStore, StoreError};

#[async_trait::async_trait]
impl SecretStore for PgStore {
    async fn put_secret(&self, secret: &SealedSecret) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO secrets (name, nonce, ciphertext, updated_at) \
             VALUES ($1, $2, $3, $4::timestamptz) \
             ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, \
             ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(&secret.name)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .bind(&secret.updated_at)
        .execute(&self.pool)
        .await
        .map_err(sql_error("store secret"))?;
        Ok(())
    }

    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM secrets WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(sql_error("delete secret"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn sealed_secrets(&self) -> Result<Vec<SealedSecret>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT name, nonce, ciphertext, ",
            ts!("", "updated_at"),
            " FROM secrets ORDER BY name COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list secrets"))?;
        rows.iter()
            .map(|row| {
                Ok(SealedSecret {
                    name: get(row, "name")?,
                    nonce: get(row, "nonce")?,
                    ciphertext: get(row, "ciphertext")?,
                    updated_at: get(row, "updated_at")?,
                })
            })
            .collect()
    }
}
