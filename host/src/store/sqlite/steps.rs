//! Group commit for step records: a [`RunStore::record_step`] that finds
//! another write in progress goes to one writer task, which takes whatever
//! writes are waiting (up to [`MAX_BATCH`]) and stores them with one
//! multi-row upsert per table, in one transaction (an uncontended write is
//! done at once by its caller). Steps finishing together (a fan-out, many runs at once)
//! then cost one round trip to SQLite's connection thread instead of one
//! each. Every write, batched or lone, is one multi-statement query (see
//! `write_batch`), so a lone write is one round trip as well.
//!
//! Order: a caller's `await` returns only after its write committed, so one
//! step's writes (always made one after another) are applied in order. Writes
//! of different callers may be reordered (a direct write can overtake queued
//! ones); within a batch the newest record per step (and per attempt) wins,
//! as it would one by one.
//!
//! Fencing: a write by the worker executing the run ([`RunStore::record_leased_step`])
//! carries that worker's lease epoch. Its rows are inserted only `WHERE`
//! the run is still `running` under that epoch, in the same transaction
//! (and statement) as the write, and the batch reads the epochs of its
//! runs first, inside the transaction, to tell each caller whether its
//! write happened ([`StoreError::LeaseLost`] if not). A stale member writes
//! nothing; the other members of its batch commit.
//!
//! [`RunStore::record_step`]: crate::store::RunStore::record_step
//! [`RunStore::record_leased_step`]: crate::store::RunStore::record_leased_step

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::conn::{Gate, WriteConn, rollback_quietly};
use super::rows::{saturating_i64, sql_error};
use crate::store::{AttemptRecord, Lease, RunId, StepRecord, StoreError};

/// Most writes stored together (15 bound values each, far below SQLite's limit).
const MAX_BATCH: usize = 64;

struct StepWrite {
    run: RunId,
    /// The writer's lease epoch (fenced write), or None (unfenced).
    epoch: Option<i64>,
    step: StepRecord,
    attempt: Option<AttemptRecord>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The sending side; cheap to clone. The task ends with the last clone.
#[derive(Debug, Clone)]
pub(super) struct StepWriter {
    queue: mpsc::UnboundedSender<StepWrite>,
    pool: SqlitePool,
    gate: Gate,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("record step: the step writer stopped".into())
}

impl StepWriter {
    /// Start the writer task (on the current tokio runtime). It takes
    /// `gate`, the in-process write turn, for each batch.
    pub(super) fn start(pool: SqlitePool, gate: Gate) -> StepWriter {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(pool.clone(), gate.clone(), receiver));
        StepWriter { queue, pool, gate }
    }

    /// Store `step` (and `attempt`) of `run`; returns once committed.
    pub(super) async fn write(
        &self,
        run: RunId,
        step: &StepRecord,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError> {
        self.send(run, None, step, attempt).await
    }

    /// Like [`StepWriter::write`], only while the run is `running` under
    /// `lease` (else [`StoreError::LeaseLost`], nothing written).
    pub(super) async fn write_leased(
        &self,
        lease: &Lease,
        step: &StepRecord,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError> {
        self.send(lease.run, Some(lease.epoch), step, attempt).await
    }

    async fn send(
        &self,
        run: RunId,
        epoch: Option<i64>,
        step: &StepRecord,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError> {
        let write = |done| StepWrite {
            run,
            epoch,
            step: step.clone(),
            attempt: attempt.cloned(),
            done,
        };
        // Nobody writing: write here and now (no hop through the writer
        // task). Only writes that would wait for the turn are grouped.
        if let Ok(turn) = self.gate.clone().try_lock_owned() {
            let (done, _) = oneshot::channel();
            let mut conn = WriteConn::from_turn(turn, &self.pool).await?;
            let one = [write(done)];
            // In a task of its own: see `write_batch`.
            let task = tokio::spawn(async move { write_batch(&mut conn, &one).await });
            return match task.await {
                Ok(result) => result.and_then(|mut each| each.pop().unwrap_or(Ok(()))),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Err(stopped()),
            };
        }
        let (done, answer) = oneshot::channel();
        self.queue.send(write(done)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_loop(
    pool: SqlitePool,
    gate: Gate,
    mut receiver: mpsc::UnboundedReceiver<StepWrite>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let mut conn = match WriteConn::take(&gate, &pool).await {
            Ok(conn) => conn,
            Err(e) => {
                let message = e.to_string();
                for write in batch.drain(..) {
                    let _ = write
                        .done
                        .send(Err(StoreError::Unavailable(message.clone())));
                }
                continue;
            }
        };
        match write_batch(&mut conn, &batch).await {
            Ok(each) => {
                for (write, result) in batch.drain(..).zip(each) {
                    let _ = write.done.send(result);
                }
            }
            Err(_) if batch.len() > 1 => {
                // One bad write (an unknown run) must not fail the others:
                // write them one by one, so each caller gets its own answer.
                for write in batch.drain(..) {
                    let result = write_batch(&mut conn, std::slice::from_ref(&write))
                        .await
                        .and_then(|mut each| each.pop().unwrap_or(Ok(())));
                    let _ = write.done.send(result);
                }
            }
            Err(e) => {
                if let Some(write) = batch.pop() {
                    let _ = write.done.send(Err(e));
                }
            }
        }
    }
}

/// The newest item per key, in first-seen order of those newest items.
fn newest_per_key<'a, K: Eq + std::hash::Hash, T>(
    items: impl DoubleEndedIterator<Item = &'a T>,
    key: impl Fn(&T) -> K,
) -> Vec<&'a T>
where
    T: 'a,
{
    let mut seen = HashSet::new();
    let mut kept: Vec<&T> = items.rev().filter(|t| seen.insert(key(t))).collect();
    kept.reverse();
    kept
}

/// Store `batch` in one transaction sent as one multi-statement query
/// (`BEGIN IMMEDIATE; [read fenced runs' epochs;] upsert steps; [upsert
/// attempts;] COMMIT`): one round trip to SQLite's connection thread
/// instead of four. sqlx numbers the anonymous `?` parameters across the
/// statements of one query. Should a statement fail, the transaction is
/// rolled back before the turn ends. `Ok` holds each write's own answer
/// (a fenced write whose lease is stale: [`StoreError::LeaseLost`]).
///
/// Callers must not drop this future midway (sqlx would stop sending the
/// query's statements, leaving a transaction open on the shared write
/// connection): the writer task never is, and a direct write runs it in a
/// task of its own.
async fn write_batch(
    conn: &mut WriteConn,
    batch: &[StepWrite],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut result = try_write_batch(conn, batch).await;
    if matches!(&result, Err(StoreError::Unavailable(m)) if m.contains("within a transaction")) {
        // A transaction left open (a runtime shut down mid-write) was
        // never committed: roll it back and write again.
        rollback_quietly(conn).await;
        result = try_write_batch(conn, batch).await;
    }
    if result.is_err() {
        // Fails harmlessly ("no transaction is active") when BEGIN itself
        // failed or the failed statement already ended the transaction.
        rollback_quietly(conn).await;
    }
    result
}

/// The fence condition on a `VALUES` row whose run id is `columnR` and
/// epoch `columnE`: unfenced (NULL epoch), or the run still runs under it.
fn fenced(run_column: usize, epoch_column: usize) -> String {
    format!(
        " WHERE column{epoch_column} IS NULL OR EXISTS (SELECT 1 FROM runs r \
         WHERE r.id = column{run_column} AND r.status = 'running' AND r.lease_epoch = column{epoch_column})"
    )
}

async fn try_write_batch(
    conn: &mut WriteConn,
    batch: &[StepWrite],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let not_found = |e: sqlx::Error| match sql_error("record step")(e) {
        StoreError::Constraint(msg) if msg.contains("FOREIGN KEY") => match batch {
            [one] => StoreError::NotFound(format!("run {}", one.run)),
            _ => StoreError::NotFound("run".into()),
        },
        other => other,
    };
    // Writes of different claims of one run are different writes (only
    // one of them can pass the fence).
    let steps = newest_per_key(batch.iter(), |w| (w.run, w.epoch, w.step.step_id.clone()));
    let attempts: Vec<(&StepWrite, &AttemptRecord)> =
        newest_per_key(batch.iter().filter(|w| w.attempt.is_some()), |w| {
            let n = w.attempt.as_ref().map_or(0, |a| a.attempt);
            (w.run, w.epoch, w.step.step_id.clone(), n)
        })
        .into_iter()
        .filter_map(|w| w.attempt.as_ref().map(|a| (w, a)))
        .collect();
    let fenced_runs: Vec<RunId> = {
        let mut seen = HashSet::new();
        batch
            .iter()
            .filter(|w| w.epoch.is_some() && seen.insert(w.run))
            .map(|w| w.run)
            .collect()
    };

    let mut query: QueryBuilder<'_, Sqlite> = QueryBuilder::new("BEGIN IMMEDIATE; ");
    if !fenced_runs.is_empty() {
        // Read inside the transaction (the write lock is held): exactly
        // the state the fenced inserts below see.
        query.push("SELECT id, status = 'running' AS running, lease_epoch FROM runs WHERE id IN (");
        let mut ids = query.separated(", ");
        for run in &fenced_runs {
            ids.push_bind(run.to_string());
        }
        query.push("); ");
    }
    push_step_upsert(&mut query, &steps);
    if !attempts.is_empty() {
        push_attempt_upsert(&mut query, &attempts);
    }
    query.push(" COMMIT");
    let rows = query
        .build()
        .fetch_all(&mut **conn)
        .await
        .map_err(not_found)?;
    answers(batch, &rows)
}

/// Append the fenced multi-row upsert of `steps` (the newest record of each).
fn push_step_upsert<'a>(query: &mut QueryBuilder<'a, Sqlite>, steps: &[&'a StepWrite]) {
    query.push(
        "INSERT INTO step_runs (run_id, step_id, status, input, output, error_class, \
         error_message, logs, attempts, fuel_used, duration_ms, started_at, finished_at, wake_at, tries) \
         SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, \
         column10, column11, column12, column13, column14, column15 FROM (",
    );
    query.push_values(steps, |mut row, w| {
        let step = &w.step;
        row.push_bind(w.run.to_string())
            .push_bind(step.step_id.as_str())
            .push_bind(step.status.as_str())
            .push_bind(step.input.as_ref().map(serde_json::Value::to_string))
            .push_bind(step.output.as_ref().map(serde_json::Value::to_string))
            .push_bind(step.error_class.as_deref())
            .push_bind(step.error_message.as_deref())
            .push_bind(step.logs.as_str())
            .push_bind(i64::from(step.attempts))
            .push_bind(saturating_i64(step.fuel_used))
            .push_bind(saturating_i64(step.duration_ms))
            .push_bind(step.started_at.as_deref())
            .push_bind(step.finished_at.as_deref())
            .push_bind(step.wake_at.as_deref())
            .push_bind(i64::from(step.tries))
            .push_bind(w.epoch);
    });
    query.push(")");
    query.push(fenced(1, 16));
    query.push(
        " ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status, input = excluded.input, \
         output = excluded.output, error_class = excluded.error_class, error_message = excluded.error_message, \
         logs = excluded.logs, attempts = excluded.attempts, fuel_used = excluded.fuel_used, \
         duration_ms = excluded.duration_ms, started_at = excluded.started_at, \
         finished_at = excluded.finished_at, wake_at = excluded.wake_at, tries = excluded.tries;",
    );
}

/// Append the fenced multi-row upsert of `attempts` (each with its write).
fn push_attempt_upsert<'a>(
    query: &mut QueryBuilder<'a, Sqlite>,
    attempts: &[(&'a StepWrite, &'a AttemptRecord)],
) {
    query.push(
        " INSERT INTO attempts (run_id, step_id, attempt, status, input, output, error_class, \
         error_message, logs, fuel_used, duration_ms, started_at, finished_at) \
         SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, \
         column10, column11, column12, column13 FROM (",
    );
    query.push_values(attempts, |mut row, (w, attempt)| {
        row.push_bind(w.run.to_string())
            .push_bind(w.step.step_id.as_str())
            .push_bind(i64::from(attempt.attempt))
            .push_bind(attempt.status.as_str())
            .push_bind(attempt.input.as_ref().map(serde_json::Value::to_string))
            .push_bind(attempt.output.as_ref().map(serde_json::Value::to_string))
            .push_bind(attempt.error_class.as_deref())
            .push_bind(attempt.error_message.as_deref())
            .push_bind(attempt.logs.as_str())
            .push_bind(saturating_i64(attempt.fuel_used))
            .push_bind(saturating_i64(attempt.duration_ms))
            .push_bind(attempt.started_at.as_str())
            .push_bind(attempt.finished_at.as_str())
            .push_bind(w.epoch);
    });
    query.push(")");
    query.push(fenced(1, 14));
    // Replacing an existing attempt keeps re-recording idempotent
    // (execution is at-least-once).
    query.push(
        " ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET status = excluded.status, \
         input = excluded.input, output = excluded.output, error_class = excluded.error_class, \
         error_message = excluded.error_message, logs = excluded.logs, fuel_used = excluded.fuel_used, \
         duration_ms = excluded.duration_ms, started_at = excluded.started_at, \
         finished_at = excluded.finished_at;",
    );
}

/// Each write's own answer, from the rows the batch's query returned (only
/// its SELECT returns rows: the fenced runs' state at write time).
fn answers(
    batch: &[StepWrite],
    rows: &[sqlx::sqlite::SqliteRow],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut current: HashMap<String, (bool, i64)> = HashMap::new();
    for row in rows {
        let get = |e: sqlx::Error| StoreError::Corrupt(format!("record step: {e}"));
        current.insert(
            row.try_get("id").map_err(get)?,
            (
                row.try_get("running").map_err(get)?,
                row.try_get("lease_epoch").map_err(get)?,
            ),
        );
    }
    Ok(batch
        .iter()
        .map(|w| match w.epoch {
            None => Ok(()),
            Some(epoch) => match current.get(&w.run.to_string()) {
                None => Err(StoreError::NotFound(format!("run {}", w.run))),
                Some(&(true, current)) if current == epoch => Ok(()),
                Some(_) => Err(StoreError::LeaseLost { run: w.run }),
            },
        })
        .collect())
}
