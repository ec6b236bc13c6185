//! Group commit for step records and runs' final statuses: a
//! [`RunStore::record_step`] or [`RunStore::finish_run`] that finds another
//! write in progress goes to one writer task, which takes whatever writes
//! are waiting (up to [`MAX_BATCH`]) and stores them in one transaction:
//! one multi-row upsert per step table, one `UPDATE` per finished run (an
//! uncontended write is done at once by its caller, on the direct
//! connection, `direct.rs`). Steps finishing together (a fan-out, many runs
//! at once) and runs finishing together then share one commit, and the
//! pages they change (the runs' index pages above all) are written once.
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
//! A final status is fenced the same way (`WHERE ... lease_epoch = ?`): its
//! caller learns whether it changed the row.
//!
//! [`RunStore::record_step`]: crate::store::RunStore::record_step
//! [`RunStore::finish_run`]: crate::store::RunStore::finish_run
//! [`RunStore::record_leased_step`]: crate::store::RunStore::record_leased_step

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::conn::Gate;
use super::direct::with_direct;
use super::rows::saturating_i64;
use crate::store::{AttemptRecord, Lease, RunId, RunStatus, StepRecord, StoreError};

/// Most writes stored together (15 bound values each, far below SQLite's limit).
const MAX_BATCH: usize = 64;

/// One caller's write: borrowed when its caller writes it at once, owned
/// when it waits for the writer task.
struct StepWrite<'a> {
    run: RunId,
    /// `run` as text, as the tables hold it.
    run_id: String,
    /// The writer's lease epoch (fenced write), or None (unfenced).
    epoch: Option<i64>,
    step: Cow<'a, StepRecord>,
    attempt: Option<Cow<'a, AttemptRecord>>,
    /// The waiting caller (none when the caller writes it itself).
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// A run's final status, by the worker that executed it.
struct FinishWrite {
    run_id: String,
    epoch: i64,
    status: RunStatus,
    error: Option<String>,
    finished_at: String,
    /// The waiting caller: whether the (fenced) update changed the run.
    done: Option<oneshot::Sender<Result<bool, StoreError>>>,
}

/// What waits for the writer task. (Not boxed: a queued step write would
/// pay an allocation for it, and finishes are the rarer kind.)
#[allow(clippy::large_enum_variant)]
enum Queued {
    Step(StepWrite<'static>),
    Finish(FinishWrite),
}

/// The final status update; `?5` is the finishing worker's lease epoch.
const FINISH_RUN: &str = "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4, \
     total_time_ms = MAX(0, CAST(ROUND( \
         (julianday(?4) - julianday(COALESCE(started_at, created_at))) * 86400000.0) AS INTEGER)), \
     lease_owner = NULL, lease_until = NULL \
     WHERE id = ?1 AND status = 'running' AND lease_epoch = ?5";

/// The sending side; cheap to clone. The task ends with the last clone.
#[derive(Debug, Clone)]
pub(super) struct StepWriter {
    queue: mpsc::UnboundedSender<Queued>,
    gate: Gate,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("record step: the step writer stopped".into())
}

impl StepWriter {
    /// Start the writer task (on the current tokio runtime). It takes
    /// `gate`, the in-process write turn, for each batch.
    pub(super) fn start(gate: Gate) -> StepWriter {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(gate.clone(), receiver));
        StepWriter { queue, gate }
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
        // Nobody writing: write here and now, on this task (no hop through
        // the writer task, and no copy of the records). Only writes that
        // would wait for the turn are grouped.
        if let Ok(mut turn) = self.gate.try_lock() {
            let one = [StepWrite {
                run,
                run_id: run.to_string(),
                epoch,
                step: Cow::Borrowed(step),
                attempt: attempt.map(Cow::Borrowed),
                done: None,
            }];
            let (mut each, _) = write_batch(&mut turn.direct, &one, &[]).await?;
            return each.pop().unwrap_or(Ok(()));
        }
        let (done, answer) = oneshot::channel();
        let write = StepWrite {
            run,
            run_id: run.to_string(),
            epoch,
            step: Cow::Owned(step.clone()),
            attempt: attempt.cloned().map(Cow::Owned),
            done: Some(done),
        };
        self.queue
            .send(Queued::Step(write))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Set the final `status` (and `error`) of the run `lease` executes,
    /// finished at `finished_at`; `Ok(false)` if the run is no longer
    /// running under that lease (nothing written).
    pub(super) async fn finish(
        &self,
        lease: &Lease,
        status: RunStatus,
        error: Option<&str>,
        finished_at: String,
    ) -> Result<bool, StoreError> {
        let mut write = FinishWrite {
            run_id: lease.run.to_string(),
            epoch: lease.epoch,
            status,
            error: error.map(str::to_owned),
            finished_at,
            done: None,
        };
        if let Ok(mut turn) = self.gate.try_lock() {
            let (_, mut each) =
                write_batch(&mut turn.direct, &[], std::slice::from_ref(&write)).await?;
            return Ok(each.pop().unwrap_or(false));
        }
        let (done, answer) = oneshot::channel();
        write.done = Some(done);
        self.queue
            .send(Queued::Finish(write))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_loop(gate: Gate, mut receiver: mpsc::UnboundedReceiver<Queued>) {
    let mut steps = Vec::with_capacity(MAX_BATCH);
    let mut finishes = Vec::new();
    while let Some(first) = receiver.recv().await {
        take(first, &mut steps, &mut finishes);
        while steps.len() + finishes.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(queued) => take(queued, &mut steps, &mut finishes),
                Err(_) => break,
            }
        }
        let mut turn = gate.lock().await;
        match write_batch(&mut turn.direct, &steps, &finishes).await {
            Ok((each_step, each_finish)) => {
                for (write, result) in steps.drain(..).zip(each_step) {
                    answer(write.done, result);
                }
                for (write, result) in finishes.drain(..).zip(each_finish) {
                    answer(write.done, Ok(result));
                }
            }
            Err(_) if steps.len() + finishes.len() > 1 => {
                // One bad write (an unknown run) must not fail the others:
                // write them one by one, so each caller gets its own answer.
                for write in steps.drain(..) {
                    let result = write_batch(&mut turn.direct, std::slice::from_ref(&write), &[])
                        .await
                        .and_then(|(mut each, _)| each.pop().unwrap_or(Ok(())));
                    answer(write.done, result);
                }
                for write in finishes.drain(..) {
                    let result = write_batch(&mut turn.direct, &[], std::slice::from_ref(&write))
                        .await
                        .map(|(_, mut each)| each.pop().unwrap_or(false));
                    answer(write.done, result);
                }
            }
            Err(e) => {
                if let Some(write) = steps.pop() {
                    answer(write.done, Err(e));
                } else if let Some(write) = finishes.pop() {
                    answer(write.done, Err(e));
                }
            }
        }
    }
}

/// Sort a queued write into its batch.
fn take(queued: Queued, steps: &mut Vec<StepWrite<'static>>, finishes: &mut Vec<FinishWrite>) {
    match queued {
        Queued::Step(write) => steps.push(write),
        Queued::Finish(write) => finishes.push(write),
    }
}

fn answer<T>(done: Option<oneshot::Sender<Result<T, StoreError>>>, result: Result<T, StoreError>) {
    if let Some(done) = done {
        let _ = done.send(result);
    }
}

/// The newest item per key, in first-seen order of those newest items.
fn newest_per_key<'a, K: Eq + std::hash::Hash, T>(
    items: impl DoubleEndedIterator<Item = &'a T>,
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T>
where
    T: 'a,
{
    let mut seen = HashSet::with_capacity(items.size_hint().0);
    let mut kept: Vec<&T> = items.rev().filter(|t| seen.insert(key(t))).collect();
    kept.reverse();
    kept
}

/// Store `batch` in one transaction (`BEGIN IMMEDIATE; [read the fenced
/// runs' epochs;] upsert steps; [upsert attempts;] COMMIT`) on the direct
/// connection. `Ok` holds each write's own answer (a fenced write whose
/// lease is stale: [`StoreError::LeaseLost`]); a failed statement rolls
/// the whole batch back.
async fn write_batch(
    direct: &mut super::direct::Direct,
    batch: &[StepWrite<'_>],
    finishes: &[FinishWrite],
) -> Result<(Vec<Result<(), StoreError>>, Vec<bool>), StoreError> {
    // Writes of different claims of one run are different writes (only
    // one of them can pass the fence).
    let steps = newest_per_key(batch.iter(), |w| (w.run, w.epoch, w.step.step_id.as_str()));
    let attempts: Vec<(&StepWrite<'_>, &AttemptRecord)> =
        newest_per_key(batch.iter().filter(|w| w.attempt.is_some()), |w| {
            let n = w.attempt.as_ref().map_or(0, |a| a.attempt);
            (w.run, w.epoch, w.step.step_id.as_str(), n)
        })
        .into_iter()
        .filter_map(|w| w.attempt.as_deref().map(|a| (w, a)))
        .collect();
    let fenced_runs: Vec<&str> = {
        let mut seen = HashSet::with_capacity(batch.len());
        batch
            .iter()
            .filter(|w| w.epoch.is_some() && seen.insert(w.run))
            .map(|w| w.run_id.as_str())
            .collect()
    };
    let step_values = step_values(&steps);
    let attempt_values = attempt_values(&attempts);
    let op = if batch.is_empty() {
        "finish run"
    } else {
        "record step"
    };
    let (current, finished) = with_direct(direct, op, |conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read inside the transaction (the write lock is held): exactly
        // the state the fenced inserts below see.
        let current = fenced_state(&tx, &fenced_runs)?;
        if !steps.is_empty() {
            tx.prepare_cached(&STEP_UPSERT.get(steps.len(), step_upsert))?
                .execute(rusqlite::params_from_iter(step_values.iter()))?;
        }
        if !attempts.is_empty() {
            tx.prepare_cached(&ATTEMPT_UPSERT.get(attempts.len(), attempt_upsert))?
                .execute(rusqlite::params_from_iter(attempt_values.iter()))?;
        }
        let mut finished = Vec::with_capacity(finishes.len());
        for f in finishes {
            let changed = tx.prepare_cached(FINISH_RUN)?.execute(rusqlite::params![
                f.run_id,
                f.status.as_str(),
                f.error,
                f.finished_at,
                f.epoch
            ])?;
            finished.push(changed > 0);
        }
        tx.commit()?;
        Ok((current, finished))
    })
    .await
    .map_err(|e| match e {
        StoreError::Constraint(msg) if msg.contains("FOREIGN KEY") => match batch {
            [one] => StoreError::NotFound(format!("run {}", one.run)),
            _ => StoreError::NotFound("run".into()),
        },
        other => other,
    })?;
    Ok((answers(batch, &current), finished))
}

/// SQL text by the number of rows a statement carries, built once per
/// count (most writes are one row): neither formatted nor looked up by a
/// freshly built string per write.
struct SqlByRows([OnceLock<String>; MAX_BATCH]);

impl SqlByRows {
    const fn new() -> SqlByRows {
        SqlByRows([const { OnceLock::new() }; MAX_BATCH])
    }

    fn get(&self, rows: usize, build: fn(usize) -> String) -> Cow<'_, str> {
        match rows.checked_sub(1).and_then(|at| self.0.get(at)) {
            Some(cell) => Cow::Borrowed(cell.get_or_init(|| build(rows))),
            None => Cow::Owned(build(rows)),
        }
    }
}

static STEP_UPSERT: SqlByRows = SqlByRows::new();
static ATTEMPT_UPSERT: SqlByRows = SqlByRows::new();
static FENCE_READ: SqlByRows = SqlByRows::new();

/// Whether each of `runs` is running, and under which lease epoch.
fn fenced_state(
    conn: &Connection,
    runs: &[&str],
) -> rusqlite::Result<HashMap<String, (bool, i64)>> {
    let mut current = HashMap::with_capacity(runs.len());
    if runs.is_empty() {
        return Ok(current);
    }
    let sql = FENCE_READ.get(runs.len(), |n| {
        format!(
            "SELECT id, status = 'running', lease_epoch FROM runs WHERE id IN ({})",
            placeholders(1, n)
        )
    });
    let mut statement = conn.prepare_cached(&sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(runs.iter()))?;
    while let Some(row) = rows.next()? {
        current.insert(row.get(0)?, (row.get(1)?, row.get(2)?));
    }
    Ok(current)
}

/// `(?, ?, ...)` rows of `width` placeholders, `n` of them, comma-separated.
fn placeholders(width: usize, n: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    vec![row; n].join(", ")
}

/// A bound text, borrowed from the record.
fn text(value: &str) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(ValueRef::Text(value.as_bytes()))
}

fn text_opt(value: Option<&str>) -> ToSqlOutput<'_> {
    value.map_or(ToSqlOutput::Owned(Value::Null), text)
}

fn json(value: Option<&serde_json::Value>) -> ToSqlOutput<'static> {
    ToSqlOutput::Owned(value.map_or(Value::Null, |json| Value::Text(json.to_string())))
}

fn integer(value: i64) -> ToSqlOutput<'static> {
    ToSqlOutput::Owned(Value::Integer(value))
}

fn epoch(write: &StepWrite<'_>) -> ToSqlOutput<'static> {
    ToSqlOutput::Owned(write.epoch.map_or(Value::Null, Value::Integer))
}

/// The fence condition on a `VALUES` row whose run id is `columnR` and
/// epoch `columnE`: unfenced (NULL epoch), or the run still runs under it.
fn fenced(run_column: usize, epoch_column: usize) -> String {
    format!(
        " WHERE column{epoch_column} IS NULL OR EXISTS (SELECT 1 FROM runs r \
         WHERE r.id = column{run_column} AND r.status = 'running' AND r.lease_epoch = column{epoch_column})"
    )
}

/// The fenced multi-row upsert of `rows` step records.
fn step_upsert(rows: usize) -> String {
    format!(
        "INSERT INTO step_runs (run_id, step_id, status, input, output, error_class, \
         error_message, logs, attempts, fuel_used, duration_ms, started_at, finished_at, wake_at, tries) \
         SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, \
         column10, column11, column12, column13, column14, column15 FROM (VALUES {}){} \
         ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status, input = excluded.input, \
         output = excluded.output, error_class = excluded.error_class, error_message = excluded.error_message, \
         logs = excluded.logs, attempts = excluded.attempts, fuel_used = excluded.fuel_used, \
         duration_ms = excluded.duration_ms, started_at = excluded.started_at, \
         finished_at = excluded.finished_at, wake_at = excluded.wake_at, tries = excluded.tries",
        placeholders(16, rows),
        fenced(1, 16)
    )
}

/// The values of [`step_upsert`] for `steps` (the newest record of each).
fn step_values<'a>(steps: &[&'a StepWrite<'_>]) -> Vec<ToSqlOutput<'a>> {
    let mut values = Vec::with_capacity(steps.len() * 16);
    for w in steps {
        let step: &StepRecord = &w.step;
        values.extend([
            text(&w.run_id),
            text(&step.step_id),
            text(step.status.as_str()),
            json(step.input.as_ref()),
            json(step.output.as_ref()),
            text_opt(step.error_class.as_deref()),
            text_opt(step.error_message.as_deref()),
            text(&step.logs),
            integer(i64::from(step.attempts)),
            integer(saturating_i64(step.fuel_used)),
            integer(saturating_i64(step.duration_ms)),
            text_opt(step.started_at.as_deref()),
            text_opt(step.finished_at.as_deref()),
            text_opt(step.wake_at.as_deref()),
            integer(i64::from(step.tries)),
            epoch(w),
        ]);
    }
    values
}

/// The fenced multi-row upsert of `rows` attempts.
fn attempt_upsert(rows: usize) -> String {
    // Replacing an existing attempt keeps re-recording idempotent
    // (execution is at-least-once).
    format!(
        "INSERT INTO attempts (run_id, step_id, attempt, status, input, output, error_class, \
         error_message, logs, fuel_used, duration_ms, started_at, finished_at) \
         SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, \
         column10, column11, column12, column13 FROM (VALUES {}){} \
         ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET status = excluded.status, \
         input = excluded.input, output = excluded.output, error_class = excluded.error_class, \
         error_message = excluded.error_message, logs = excluded.logs, fuel_used = excluded.fuel_used, \
         duration_ms = excluded.duration_ms, started_at = excluded.started_at, \
         finished_at = excluded.finished_at",
        placeholders(14, rows),
        fenced(1, 14)
    )
}

/// The values of [`attempt_upsert`] for `attempts` (each with its write).
fn attempt_values<'a>(attempts: &[(&'a StepWrite<'_>, &'a AttemptRecord)]) -> Vec<ToSqlOutput<'a>> {
    let mut values = Vec::with_capacity(attempts.len() * 14);
    for (w, attempt) in attempts {
        values.extend([
            text(&w.run_id),
            text(&w.step.step_id),
            integer(i64::from(attempt.attempt)),
            text(attempt.status.as_str()),
            json(attempt.input.as_ref()),
            json(attempt.output.as_ref()),
            text_opt(attempt.error_class.as_deref()),
            text_opt(attempt.error_message.as_deref()),
            text(&attempt.logs),
            integer(saturating_i64(attempt.fuel_used)),
            integer(saturating_i64(attempt.duration_ms)),
            text(&attempt.started_at),
            text(&attempt.finished_at),
            epoch(w),
        ]);
    }
    values
}

/// Each write's own answer, from the fenced runs' state at write time.
fn answers(
    batch: &[StepWrite<'_>],
    current: &HashMap<String, (bool, i64)>,
) -> Vec<Result<(), StoreError>> {
    batch
        .iter()
        .map(|w| match w.epoch {
            None => Ok(()),
            Some(epoch) => match current.get(w.run_id.as_str()) {
                None => Err(StoreError::NotFound(format!("run {}", w.run))),
                Some(&(true, current)) if current == epoch => Ok(()),
                Some(_) => Err(StoreError::LeaseLost { run: w.run }),
            },
        })
        .collect()
}
