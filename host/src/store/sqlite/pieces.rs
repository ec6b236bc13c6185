//! SQL for [`PieceStore`]: installed pieces and their bytes by digest.

use super::SqliteStore;
use super::rows::sql_error;
use crate::store::decode::{piece_from_row, piece_write, pinned_by};
use crate::store::{PieceRecord, PieceStore, PieceWrite, StoreError, now_rfc3339};

const PIECE_COLUMNS: &str = "name, version, digest, size, info, capabilities, builtin, \
     installed_at, installed_by, replaced_at";

/// Workflows (not deleted) with a version pinning `?1`@`?2`.
const PINNING: &str = "SELECT DISTINCT v.workflow_name FROM workflow_versions v, \
     json_each(v.pins) j JOIN workflows w ON w.name = v.workflow_name \
     WHERE v.pins IS NOT NULL AND w.deleted_at IS NULL \
     AND json_extract(j.value, '$.name') = ?1 AND json_extract(j.value, '$.version') = ?2 \
     ORDER BY v.workflow_name";

#[async_trait::async_trait]
impl PieceStore for SqliteStore {
    async fn put_piece(
        &self,
        piece: &PieceRecord,
        bytes: &[u8],
        replace: bool,
    ) -> Result<PieceWrite, StoreError> {
        let op = "install piece";
        let mut tx = self.begin_write(op).await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT digest FROM pieces WHERE name = ?1 AND version = ?2")
                .bind(&piece.name)
                .bind(&piece.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql_error(op))?;
        let write = piece_write(stored.as_deref(), piece, replace)?;
        if write == PieceWrite::Unchanged {
            return Ok(write);
        }
        sqlx::query(
            "INSERT INTO piece_blobs (digest, size, bytes) VALUES (?1, ?2, ?3) \
             ON CONFLICT (digest) DO NOTHING",
        )
        .bind(&piece.digest)
        .bind(piece.size as i64)
        .bind(bytes)
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        let now = now_rfc3339();
        sqlx::query(&format!(
            "INSERT INTO pieces ({PIECE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL) \
             ON CONFLICT (name, version) DO UPDATE SET digest = excluded.digest, \
             size = excluded.size, info = excluded.info, capabilities = excluded.capabilities, \
             builtin = excluded.builtin, installed_by = excluded.installed_by, replaced_at = ?8"
        ))
        .bind(&piece.name)
        .bind(&piece.version)
        .bind(&piece.digest)
        .bind(piece.size as i64)
        .bind(piece.info.to_string())
        .bind(piece.capabilities.to_string())
        .bind(piece.builtin)
        .bind(&now)
        .bind(piece.installed_by)
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        tx.commit().await.map_err(sql_error(op))?;
        Ok(write)
    }

    async fn list_pieces(&self) -> Result<Vec<PieceRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PIECE_COLUMNS} FROM pieces ORDER BY name, version"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list pieces"))?;
        rows.iter().map(piece_from_row).collect()
    }

    async fn piece_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT bytes FROM piece_blobs WHERE digest = ?1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error("read piece bytes"))
    }

    async fn workflows_pinning(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(PINNING)
            .bind(name)
            .bind(version)
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error("find pinning workflows"))
    }

    async fn remove_piece(
        &self,
        name: &str,
        version: &str,
        force: bool,
    ) -> Result<bool, StoreError> {
        let op = "remove piece";
        let mut tx = self.begin_write(op).await?;
        let installed: Option<String> =
            sqlx::query_scalar("SELECT digest FROM pieces WHERE name = ?1 AND version = ?2")
                .bind(name)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql_error(op))?;
        let Some(digest) = installed else {
            return Ok(false);
        };
        if !force {
            let pinning: Vec<String> = sqlx::query_scalar(PINNING)
                .bind(name)
                .bind(version)
                .fetch_all(&mut *tx)
                .await
                .map_err(sql_error(op))?;
            if !pinning.is_empty() {
                return Err(pinned_by(name, version, &pinning));
            }
        }
        let removed = sqlx::query("DELETE FROM pieces WHERE name = ?1 AND version = ?2")
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(sql_error(op))?
            .rows_affected();
        // Its bytes go unless another name@version is the same bytes:
        // versions that pinned it then fail with piece-missing (bytes kept
        // for pins are those a `replace` displaced, not removed ones).
        sqlx::query(
            "DELETE FROM piece_blobs WHERE digest = ?1 \
             AND NOT EXISTS (SELECT 1 FROM pieces WHERE digest = ?1)",
        )
        .bind(&digest)
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        tx.commit().await.map_err(sql_error(op))?;
        Ok(removed > 0)
    }
}
