//! SQL for [`WebhookStore`]: webhook secrets and the replay log.

use std::time::SystemTime;

use super::PgStore;
use super::rows::sql_error;
use crate::store::{StoreError, WebhookStore, now_rfc3339, rfc3339};

#[async_trait::async_trait]
impl WebhookStore for PgStore {
    async fn set_webhook_secret(&self, name: &str, secret: &str) -> Result<(), StoreError> {
        let op = "set webhook secret";
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        // Hold the workflow's row: a concurrent delete waits for us (and
        // then drops this secret with the workflow).
        let exists: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM workflows WHERE name = $1 AND deleted_at IS NULL FOR SHARE",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("workflow {name:?}")));
        }
        sqlx::query(
            "INSERT INTO webhooks (workflow_name, secret, created_at) VALUES ($1, $2, $3::timestamptz) \
             ON CONFLICT (workflow_name) DO UPDATE SET secret = excluded.secret, \
             created_at = excluded.created_at",
        )
        .bind(name)
        .bind(secret)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        tx.commit().await.map_err(sql_error(op))
    }

    async fn webhook_secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT secret FROM webhooks WHERE workflow_name = $1")
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
        let op = "record webhook delivery";
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < $1::timestamptz")
            .bind(rfc3339(forget_before))
            .execute(&mut *tx)
            .await
            .map_err(sql_error(op))?;
        // A concurrent delivery of the same signature waits on the unique
        // key, then does nothing: exactly one of them is not a replay.
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (signature, workflow_name, received_at) \
             VALUES ($1, $2, $3::timestamptz) ON CONFLICT (signature) DO NOTHING",
        )
        .bind(signature)
        .bind(workflow)
        .bind(rfc3339(now))
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?
        .rows_affected();
        tx.commit().await.map_err(sql_error(op))?;
        Ok(inserted > 0)
    }
}
