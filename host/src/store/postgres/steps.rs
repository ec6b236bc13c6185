//! Step records: [`RunStore::record_step`] and, fenced by the lease epoch,
//! [`RunStore::record_leased_step`].
//!
//! Each write is ONE statement (atomic on its own, one round trip): a CTE
//! locks the run row `FOR SHARE` (fenced writes only) and reads its status
//! and epoch; the step upsert and the attempt upsert, two more CTEs, insert
//! only if the write is unfenced or the run is still `running` under the
//! writer's epoch; the final `SELECT` returns what the fence saw, to answer
//! the caller. The shared row lock keeps claims, re-queues and the final
//! status (which update the run row) out until the write has committed, so a
//! write that passed the check cannot land after the lease moved on. A stale
//! write changes nothing ([`StoreError::LeaseLost`]); a write for an unknown
//! run is [`StoreError::NotFound`] (fenced: no row to lock; unfenced: the
//! foreign key refuses it). Unlike SQLite, writers do not queue behind one
//! another (concurrent writes of different runs proceed in parallel), so
//! there is no group commit.
//!
//! [`RunStore::record_step`]: crate::store::RunStore::record_step
//! [`RunStore::record_leased_step`]: crate::store::RunStore::record_leased_step

use sqlx::types::Json;

use super::PgStore;
use super::rows::{get, is_foreign_key_violation, saturating_i64, sql_error};
use crate::store::{AttemptRecord, RunId, StepRecord, StoreError};

/// The write: `$1` run, `$2`..`$15` the step, `$16` the writer's epoch
/// (NULL: unfenced), `$17` whether an attempt follows in `$18`..`$29`.
/// (The attempt's row inserted in the same statement as its step row
/// passes the foreign key: constraints are checked at the statement's end.
/// Both inserts run whether or not the final `SELECT` reads them.)
const WRITE_STEP: &str = "\
    WITH run AS ( \
        SELECT status = 'running' AS running, lease_epoch FROM runs \
        WHERE id = $1::uuid AND $16::bigint IS NOT NULL FOR SHARE), \
    allowed AS ( \
        SELECT 1 WHERE $16::bigint IS NULL \
        OR EXISTS (SELECT 1 FROM run WHERE running AND lease_epoch = $16::bigint)), \
    step AS ( \
        INSERT INTO step_runs (run_id, step_id, status, input, output, error_class, \
        error_message, logs, attempts, fuel_used, duration_ms, started_at, finished_at, \
        wake_at, tries) \
        SELECT $1::uuid, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9, $10, $11, \
        $12::timestamptz, $13::timestamptz, $14::timestamptz, $15 FROM allowed \
        ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status, \
        input = excluded.input, output = excluded.output, error_class = excluded.error_class, \
        error_message = excluded.error_message, logs = excluded.logs, \
        attempts = excluded.attempts, fuel_used = excluded.fuel_used, \
        duration_ms = excluded.duration_ms, started_at = excluded.started_at, \
        finished_at = excluded.finished_at, wake_at = excluded.wake_at, tries = excluded.tries \
        RETURNING 1), \
    attempt AS ( \
        INSERT INTO attempts (run_id, step_id, attempt, status, input, output, error_class, \
        error_message, logs, fuel_used, duration_ms, started_at, finished_at) \
        SELECT $1::uuid, $2, $18, $19, $20::jsonb, $21::jsonb, $22, $23, $24, $25, $26, \
        $27::timestamptz, $28::timestamptz FROM allowed WHERE $17 \
        ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET status = excluded.status, \
        input = excluded.input, output = excluded.output, error_class = excluded.error_class, \
        error_message = excluded.error_message, logs = excluded.logs, \
        fuel_used = excluded.fuel_used, duration_ms = excluded.duration_ms, \
        started_at = excluded.started_at, finished_at = excluded.finished_at \
        RETURNING 1) \
    SELECT EXISTS (SELECT 1 FROM run) AS found, \
        COALESCE((SELECT running FROM run), FALSE) AS running, \
        (SELECT lease_epoch FROM run) AS lease_epoch";

impl PgStore {
    /// Store `step` (and `attempt`) of `run` in one statement; with
    /// `epoch`, only while the run is `running` under it.
    pub(super) async fn write_step(
        &self,
        run: RunId,
        epoch: Option<i64>,
        step: &StepRecord,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError> {
        let row = sqlx::query(WRITE_STEP)
            .bind(run.to_string())
            .bind(step.step_id.as_str())
            .bind(step.status.as_str())
            .bind(step.input.as_ref().map(Json))
            .bind(step.output.as_ref().map(Json))
            .bind(step.error_class.as_deref())
            .bind(step.error_message.as_deref())
            .bind(step.logs.as_str())
            .bind(i64::from(step.attempts))
            .bind(saturating_i64(step.fuel_used))
            .bind(saturating_i64(step.duration_ms))
            .bind(step.started_at.as_deref())
            .bind(step.finished_at.as_deref())
            .bind(step.wake_at.as_deref())
            .bind(i64::from(step.tries))
            .bind(epoch)
            .bind(attempt.is_some())
            .bind(attempt.map(|a| i64::from(a.attempt)))
            .bind(attempt.map(|a| a.status.as_str()))
            .bind(attempt.and_then(|a| a.input.as_ref()).map(Json))
            .bind(attempt.and_then(|a| a.output.as_ref()).map(Json))
            .bind(attempt.and_then(|a| a.error_class.as_deref()))
            .bind(attempt.and_then(|a| a.error_message.as_deref()))
            .bind(attempt.map(|a| a.logs.as_str()))
            .bind(attempt.map(|a| saturating_i64(a.fuel_used)))
            .bind(attempt.map(|a| saturating_i64(a.duration_ms)))
            .bind(attempt.map(|a| a.started_at.as_str()))
            .bind(attempt.map(|a| a.finished_at.as_str()))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound(format!("run {run}"))
                } else {
                    sql_error("record step")(e)
                }
            })?;
        let Some(epoch) = epoch else {
            return Ok(());
        };
        let found: bool = get(&row, "found")?;
        let running: bool = get(&row, "running")?;
        let current: Option<i64> = get(&row, "lease_epoch")?;
        if !found {
            Err(StoreError::NotFound(format!("run {run}")))
        } else if running && current == Some(epoch) {
            Ok(())
        } else {
            Err(StoreError::LeaseLost { run })
        }
    }
}
