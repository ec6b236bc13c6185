//! Step records: [`RunStore::record_step`] and, fenced by the lease epoch,
//! [`RunStore::record_leased_step`].
//!
//! Each write is one transaction: (fenced: lock the run row `FOR SHARE` and
//! check it is still `running` under the writer's epoch), upsert the step
//! row, upsert the attempt row. The shared row lock keeps claims, re-queues
//! and the final status (which update the run row) out until the write has
//! committed, so a write that passed the check cannot land after the lease
//! moved on. A stale write changes nothing ([`StoreError::LeaseLost`]); a
//! write for an unknown run is [`StoreError::NotFound`] (the foreign key).
//! Unlike SQLite, writers do not queue behind one another: concurrent
//! writes of different runs proceed in parallel, so no group commit.
//!
//! [`RunStore::record_step`]: crate::store::RunStore::record_step
//! [`RunStore::record_leased_step`]: crate::store::RunStore::record_leased_step

use sqlx::types::Json;

use super::PgStore;
use super::rows::{get, is_foreign_key_violation, saturating_i64, sql_error};
use crate::store::{AttemptRecord, RunId, StepRecord, StoreError};

impl PgStore {
    /// Store `step` (and `attempt`) of `run` in one transaction; with
    /// `epoch`, only while the run is `running` under it.
    pub(super) async fn write_step(
        &self,
        run: RunId,
        epoch: Option<i64>,
        step: &StepRecord,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError> {
        let op = "record step";
        let not_found = |e: sqlx::Error| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound(format!("run {run}"))
            } else {
                sql_error(op)(e)
            }
        };
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        if let Some(epoch) = epoch {
            let row = sqlx::query(
                "SELECT status = 'running' AS running, lease_epoch FROM runs \
                 WHERE id = $1::uuid FOR SHARE",
            )
            .bind(run.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql_error(op))?
            .ok_or_else(|| StoreError::NotFound(format!("run {run}")))?;
            let running: bool = get(&row, "running")?;
            let current: i64 = get(&row, "lease_epoch")?;
            if !running || current != epoch {
                // Dropping `tx` rolls it back: nothing was written.
                return Err(StoreError::LeaseLost { run });
            }
        }
        sqlx::query(
            "INSERT INTO step_runs (run_id, step_id, status, input, output, error_class, \
             error_message, logs, attempts, fuel_used, duration_ms, started_at, finished_at, \
             wake_at, tries) \
             VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::timestamptz, \
             $13::timestamptz, $14::timestamptz, $15) \
             ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status, \
             input = excluded.input, output = excluded.output, error_class = excluded.error_class, \
             error_message = excluded.error_message, logs = excluded.logs, \
             attempts = excluded.attempts, fuel_used = excluded.fuel_used, \
             duration_ms = excluded.duration_ms, started_at = excluded.started_at, \
             finished_at = excluded.finished_at, wake_at = excluded.wake_at, tries = excluded.tries",
        )
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
        .execute(&mut *tx)
        .await
        .map_err(not_found)?;
        if let Some(attempt) = attempt {
            insert_attempt(&mut tx, run, &step.step_id, attempt)
                .await
                .map_err(not_found)?;
        }
        tx.commit().await.map_err(sql_error(op))
    }
}

/// Upsert `attempt` of step `step_id` (replacing an existing attempt keeps
/// re-recording idempotent: execution is at-least-once).
async fn insert_attempt(
    conn: &mut sqlx::PgConnection,
    run: RunId,
    step_id: &str,
    attempt: &AttemptRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO attempts (run_id, step_id, attempt, status, input, output, error_class, \
         error_message, logs, fuel_used, duration_ms, started_at, finished_at) \
         VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::timestamptz, \
         $13::timestamptz) \
         ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET status = excluded.status, \
         input = excluded.input, output = excluded.output, error_class = excluded.error_class, \
         error_message = excluded.error_message, logs = excluded.logs, \
         fuel_used = excluded.fuel_used, duration_ms = excluded.duration_ms, \
         started_at = excluded.started_at, finished_at = excluded.finished_at",
    )
    .bind(run.to_string())
    .bind(step_id)
    .bind(i64::from(attempt.attempt))
    .bind(attempt.status.as_str())
    .bind(attempt.input.as_ref().map(Json))
    .bind(attempt.output.as_ref().map(Json))
    .bind(attempt.error_class.as_deref())
    .bind(attempt.error_message.as_deref())
    .bind(attempt.logs.as_str())
    .bind(saturating_i64(attempt.fuel_used))
    .bind(saturating_i64(attempt.duration_ms))
    .bind(attempt.started_at.as_str())
    .bind(attempt.finished_at.as_str())
    .execute(conn)
    .await
    .map(|_| ())
}
