//! SQL for [`WebhookStore`]: webhook secrets and the replay log.

use std::time::SystemTime;

use super::SqliteStore;
use super::rows::sql_error;
use crate::store::{StoreError, WebhookStore, now_rfc3339, rfc3339};

#[async_trait::async_trait]
impl WebhookStore for SqliteStore {
    async fn set_webhook_secret(&self, name: &str, secret: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write("set webhook secret").await?;
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM workflows WHERE name = ?1 AND deleted_at IS NULL",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_error("set webhook secret"))?;
        if exists == 0 {
            return Err(StoreError::NotFound(format!("workflow {name:?}")));
        }
        sqlx::query(
            "INSERT INTO webhooks (workflow_name, secret, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (workflow_name) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at",
        )
        .bind(name)
        .bind(secret)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(sql_error("set webhook secret"))?;
        tx.commit().await.map_err(sql_error("set webhook secret"))
    }

    async fn webhook_secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT secret FROM webhooks WHERE workflow_name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error("read webhook secret"))
    }

    async fn record_delivery(
        &self,
        signature: &str,
        workflow: &str,
        now: SystemTime,
        forget_before: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("record webhook delivery").await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < ?1")
            .bind(rfc3339(forget_before))
            .execute(&mut *tx)
            .await
            .map_err(sql_error("record webhook delivery"))?;
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (signature, workflow_name, received_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (signature) DO NOTHING",
        )
        .bind(signature)
        .bind(workflow)
        .bind(rfc3339(now))
        .execute(&mut *tx)
        .await
        .map_err(sql_error("record webhook delivery"))?
        .rows_affected();
        tx.commit()
            .await
            .map_err(sql_error("record webhook delivery"))?;
        Ok(inserted > 0)
    }
}
