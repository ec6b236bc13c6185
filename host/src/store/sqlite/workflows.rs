//! SQL for [`WorkflowStore`]: definitions, versions, soft deletes.

use super::SqliteStore;
use super::direct::{Param, rows};
use super::rows::{sql_error, workflow_from_row};
use crate::store::decode::Columns;
use crate::store::{StoreError, StoredWorkflow, WorkflowStore, now_rfc3339, same_version};

/// The newest version of workflow `?1` (or version `?2`), a deleted one
/// only when `?3`.
const WORKFLOW_ROW: &str = "SELECT workflow_name, version, definition, created_at, pins FROM workflow_versions \
     WHERE workflow_name = ?1 AND (?2 IS NULL OR version = ?2) \
     AND (?3 OR NOT EXISTS (SELECT 1 FROM workflows w \
                            WHERE w.name = workflow_name AND w.deleted_at IS NOT NULL)) \
     ORDER BY version DESC LIMIT 1";

#[async_trait::async_trait]
impl WorkflowStore for SqliteStore {
    async fn save_pinned_workflow(
        &self,
        name: &str,
        definition: &serde_json::Value,
        pins: Option<&serde_json::Value>,
    ) -> Result<StoredWorkflow, StoreError> {
        // One synchronous transaction on the direct connection (`direct.rs`):
        // `omniflow run` saves its workflow on every run.
        let definition_text = definition.to_string();
        let pins_text = pins.map(ToString::to_string);
        self.direct("save workflow", |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                // An unchanged save (`omniflow run` saves before every run)
                // is found by comparing the stored text with this one: both
                // are serde_json's text of a value, so the same text is the
                // same definition, and the stored one need not be parsed.
                // Any other row is decoded and compared as canonical JSON.
                let newest = rows(
                    &tx,
                    WORKFLOW_ROW,
                    rusqlite::params![name, Option::<i64>::None, true],
                    |row| {
                        let same_text = row.text("definition")? == definition_text
                            && (pins_text.is_none() || row.text_opt("pins")? == pins_text);
                        if !same_text {
                            return Ok((workflow_from_row(row)?, false));
                        }
                        let stored = StoredWorkflow {
                            name: row.text("workflow_name")?,
                            version: row.int("version")?,
                            definition: definition.clone(),
                            created_at: row.text("created_at")?,
                            pins: match pins {
                                Some(pins) => Some(pins.clone()),
                                None => row.json_opt("pins")?,
                            },
                        };
                        Ok((stored, true))
                    },
                )?
                .into_iter()
                .next();
                // Saving a deleted workflow brings it back.
                tx.prepare_cached(
                    "UPDATE workflows SET deleted_at = NULL WHERE name = ?1 AND deleted_at IS NOT NULL",
                )?
                .execute([name])?;
                let newest = match newest {
                    Some(Ok((newest, same_text)))
                        if same_text || same_version(&newest, definition, pins) =>
                    {
                        tx.commit()?;
                        return Ok(Ok(newest));
                    }
                    Some(Err(corrupt)) => return Ok(Err(corrupt)),
                    Some(Ok((newest, _))) => Some(newest),
                    None => None,
                };
                let now = now_rfc3339();
                let version = newest.map_or(1, |w| w.version + 1);
                tx.prepare_cached(
                    "INSERT INTO workflows (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                )?
                .execute(rusqlite::params![name, now])?;
                tx.prepare_cached(
                    "INSERT INTO workflow_versions (workflow_name, version, definition, created_at, pins) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(rusqlite::params![name, version, definition_text, now, pins_text])?;
                tx.commit()?;
                Ok(Ok(StoredWorkflow {
                    name: name.to_owned(),
                    version,
                    definition: definition.clone(),
                    created_at: now,
                    pins: pins.cloned(),
                }))
            })
            .await?
    }

    async fn get_workflow(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        // A pinned version stays readable after a delete (runs need it).
        let found = self
            .read_rows(
                "read workflow",
                WORKFLOW_ROW,
                &[
                    Param::Text(name.to_owned()),
                    Param::OptInt(version),
                    Param::Flag(version.is_some()),
                ],
                |row| workflow_from_row(row),
                workflow_from_row,
            )
            .await?;
        Ok(found.into_iter().next())
    }

    async fn list_workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.workflow_name, v.version, v.definition, v.created_at, v.pins FROM workflow_versions v \
             JOIN workflows w ON w.name = v.workflow_name AND w.deleted_at IS NULL \
             WHERE v.version = (SELECT MAX(version) FROM workflow_versions WHERE workflow_name = v.workflow_name) \
             ORDER BY v.workflow_name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list workflows"))?;
        rows.iter().map(workflow_from_row).collect()
    }

    async fn workflow_versions(&self, name: &str) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.workflow_name, v.version, v.definition, v.created_at, v.pins FROM workflow_versions v \
             JOIN workflows w ON w.name = v.workflow_name AND w.deleted_at IS NULL \
             WHERE v.workflow_name = ?1 ORDER BY v.version",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list workflow versions"))?;
        rows.iter().map(workflow_from_row).collect()
    }

    async fn delete_workflow(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("delete workflow").await?;
        let deleted = sqlx::query(
            "UPDATE workflows SET deleted_at = ?2 WHERE name = ?1 AND deleted_at IS NULL",
        )
        .bind(name)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(sql_error("delete workflow"))?
        .rows_affected()
            > 0;
        for table in ["webhooks", "schedules"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE workflow_name = ?1"))
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(sql_error("delete workflow"))?;
        }
        tx.commit().await.map_err(sql_error("delete workflow"))?;
        Ok(deleted)
    }
}
