//! SQL for [`WorkflowStore`]: definitions, versions, soft deletes.
//!
//! Saving creates the workflow's row if needed, then updates it (clearing
//! a deletion), which holds the row's lock until the commit: concurrent
//! saves of one name take versions one after the other.

use sqlx::types::Json;

use super::PgStore;
use super::rows::{WORKFLOW_COLUMNS, sql_error, workflow_from_row};
use crate::store::{StoreError, StoredWorkflow, WorkflowStore, now_rfc3339, same_version};

impl PgStore {
    /// A deleted workflow is only found with `include_deleted`.
    async fn workflow_row<'e, E>(
        executor: E,
        name: &str,
        version: Option<i64>,
        include_deleted: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Postgres>,
    {
        let row = sqlx::query(&format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflow_versions v \
             WHERE v.workflow_name = $1 AND ($2::bigint IS NULL OR v.version = $2) \
             AND ($3 OR NOT EXISTS (SELECT 1 FROM workflows w \
                                    WHERE w.name = v.workflow_name AND w.deleted_at IS NOT NULL)) \
             ORDER BY v.version DESC LIMIT 1"
        ))
        .bind(name)
        .bind(version)
        .bind(include_deleted)
        .fetch_optional(executor)
        .await
        .map_err(sql_error("read workflow"))?;
        row.as_ref().map(workflow_from_row).transpose()
    }
}

#[async_trait::async_trait]
impl WorkflowStore for PgStore {
    async fn save_pinned_workflow(
        &self,
        name: &str,
        definition: &serde_json::Value,
        pins: Option<&serde_json::Value>,
    ) -> Result<StoredWorkflow, StoreError> {
        let op = "save workflow";
        let now = now_rfc3339();
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        // Create the workflow if new; the UPDATE below then holds its row
        // until the commit: one save at a time per name.
        sqlx::query(
            "INSERT INTO workflows (name, created_at) VALUES ($1, $2::timestamptz) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        // Saving a deleted workflow brings it back.
        sqlx::query("UPDATE workflows SET deleted_at = NULL WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(sql_error(op))?;
        let newest = PgStore::workflow_row(&mut *tx, name, None, true).await?;
        if let Some(newest) = &newest
            && same_version(newest, definition, pins)
        {
            tx.commit().await.map_err(sql_error(op))?;
            return Ok(newest.clone());
        }
        let version = newest.map_or(1, |w| w.version + 1);
        sqlx::query(
            "INSERT INTO workflow_versions (workflow_name, version, definition, created_at, pins) \
             VALUES ($1, $2, $3, $4::timestamptz, $5)",
        )
        .bind(name)
        .bind(version)
        .bind(Json(definition))
        .bind(&now)
        .bind(pins.map(Json))
        .execute(&mut *tx)
        .await
        .map_err(sql_error("save workflow version"))?;
        tx.commit().await.map_err(sql_error(op))?;
        Ok(StoredWorkflow {
            name: name.to_owned(),
            version,
            definition: definition.clone(),
            created_at: now,
            pins: pins.cloned(),
        })
    }

    async fn get_workflow(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        // A pinned version stays readable after a delete (runs need it).
        PgStore::workflow_row(&self.pool, name, version, version.is_some()).await
    }

    async fn list_workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflow_versions v \
             JOIN workflows w ON w.name = v.workflow_name AND w.deleted_at IS NULL \
             WHERE v.version = (SELECT MAX(version) FROM workflow_versions WHERE workflow_name = v.workflow_name) \
             ORDER BY v.workflow_name COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list workflows"))?;
        rows.iter().map(workflow_from_row).collect()
    }

    async fn workflow_versions(&self, name: &str) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflow_versions v \
             JOIN workflows w ON w.name = v.workflow_name AND w.deleted_at IS NULL \
             WHERE v.workflow_name = $1 ORDER BY v.version"
        ))
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list workflow versions"))?;
        rows.iter().map(workflow_from_row).collect()
    }

    async fn delete_workflow(&self, name: &str) -> Result<bool, StoreError> {
        let op = "delete workflow";
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        let deleted = sqlx::query(
            "UPDATE workflows SET deleted_at = $2::timestamptz WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(name)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?
        .rows_affected()
            > 0;
        for table in ["webhooks", "schedules"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE workflow_name = $1"))
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(sql_error(op))?;
        }
        tx.commit().await.map_err(sql_error(op))?;
        Ok(deleted)
    }
}
