//! Reading rows and classifying errors: the column lists (ids and times
//! read back as the text the records hold), the decoders from a row to a
//! record, and [`sql_error`].

use std::str::FromStr;

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use crate::store::{
    AttemptRecord, Priority, RunRecord, StepRecord, StepStatus, StoreError, StoredWorkflow,
};

/// The columns of `runs`, in the order [`run_from_row`] reads them
/// (qualified: they also follow `UPDATE runs ... FROM`).
pub(super) const RUN_COLUMNS: &str = concat!(
    "runs.id::text AS id, runs.workflow_name, runs.workflow_version, runs.status, runs.priority, \
     runs.trigger, runs.vars, runs.simulated, ",
    ts!("runs.", "created_at"),
    ", ",
    ts!("runs.", "started_at"),
    ", ",
    ts!("runs.", "finished_at"),
    ", runs.total_time_ms, runs.error"
);
/// The columns of `step_runs`, in the order [`step_from_row`] reads them.
pub(super) const STEP_COLUMNS: &str = concat!(
    "step_id, status, input, output, error_class, error_message, logs, attempts, fuel_used, \
     duration_ms, ",
    ts!("", "started_at"),
    ", ",
    ts!("", "finished_at"),
    ", ",
    ts!("", "wake_at"),
    ", tries"
);
/// The columns of `attempts`, in the order [`attempt_from_row`] reads them.
pub(super) const ATTEMPT_COLUMNS: &str = concat!(
    "attempt, status, input, output, error_class, error_message, logs, fuel_used, duration_ms, ",
    ts!("", "started_at"),
    ", ",
    ts!("", "finished_at")
);
/// The columns of `workflow_versions` (as `v`), for [`workflow_from_row`].
pub(super) const WORKFLOW_COLUMNS: &str = concat!(
    "v.workflow_name, v.version, v.definition, ",
    ts!("v.", "created_at")
);

/// Classify a sqlx error for `op` (a few words naming the operation), by
/// SQLSTATE class for database errors.
pub(super) fn sql_error(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |error| {
        let message = format!("{op}: {error}");
        match &error {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                match code.get(..2).unwrap_or_default() {
                    // Integrity constraint violation (foreign key, unique,
                    // check, not null); data exception (a value the column
                    // cannot hold, such as a NUL character in text or JSON).
                    "23" | "22" => StoreError::Constraint(message),
                    // Invalid authorization, unknown database.
                    "28" | "3D" => StoreError::Config(message),
                    // Data corrupted, index corrupted.
                    "XX" if code != "XX000" => StoreError::Corrupt(message),
                    // Connection exceptions, serialization failures and
                    // deadlocks, insufficient resources, shutdown, ...
                    _ => StoreError::Unavailable(message),
                }
            }
            sqlx::Error::Configuration(_) => StoreError::Config(message),
            sqlx::Error::Migrate(_) => StoreError::Migration(message),
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(message),
            // Io, Tls, PoolTimedOut, PoolClosed, Protocol, ...
            _ => StoreError::Unavailable(message),
        }
    }
}

/// True if `error` is a foreign key violation (a referenced row is missing).
pub(super) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23503"))
}

/// Column `name` of `row`, decoded as `T`.
pub(super) fn get<'r, T>(row: &'r PgRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// A text column parsed with `FromStr` (statuses, ids).
pub(super) fn parse_text<T>(row: &PgRow, name: &str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = get(row, name)?;
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// A JSONB column.
pub(super) fn json(row: &PgRow, name: &str) -> Result<serde_json::Value, StoreError> {
    get::<Json<serde_json::Value>>(row, name).map(|Json(value)| value)
}

/// A nullable JSONB column.
pub(super) fn json_opt(row: &PgRow, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
    get::<Option<Json<serde_json::Value>>>(row, name).map(|value| value.map(|Json(v)| v))
}

/// A BIGINT column that must fit an unsigned type.
pub(super) fn unsigned<T: TryFrom<i64>>(row: &PgRow, name: &str) -> Result<T, StoreError> {
    let value: i64 = get(row, name)?;
    T::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("column {name} out of range: {value}")))
}

/// Counters are u64 in Rust, BIGINT (i64) in SQL; no real run gets near the limit.
pub(super) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn workflow_from_row(row: &PgRow) -> Result<StoredWorkflow, StoreError> {
    Ok(StoredWorkflow {
        name: get(row, "workflow_name")?,
        version: get(row, "version")?,
        definition: json(row, "definition")?,
        created_at: get(row, "created_at")?,
    })
}

pub(super) fn run_from_row(row: &PgRow) -> Result<RunRecord, StoreError> {
    let priority: i64 = get(row, "priority")?;
    Ok(RunRecord {
        id: parse_text(row, "id")?,
        workflow_name: get(row, "workflow_name")?,
        workflow_version: get(row, "workflow_version")?,
        status: parse_text(row, "status")?,
        priority: Priority::from_i64(priority).ok_or_else(|| {
            StoreError::Corrupt(format!("column priority: unknown value {priority}"))
        })?,
        trigger: json(row, "trigger")?,
        vars: json(row, "vars")?,
        simulated: get(row, "simulated")?,
        created_at: get(row, "created_at")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        total_time_ms: get(row, "total_time_ms")?,
        error: get(row, "error")?,
    })
}

pub(super) fn step_from_row(row: &PgRow) -> Result<StepRecord, StoreError> {
    Ok(StepRecord {
        step_id: get(row, "step_id")?,
        status: parse_text::<StepStatus>(row, "status")?,
        input: json_opt(row, "input")?,
        output: json_opt(row, "output")?,
        error_class: get(row, "error_class")?,
        error_message: get(row, "error_message")?,
        logs: get(row, "logs")?,
        attempts: unsigned(row, "attempts")?,
        fuel_used: unsigned(row, "fuel_used")?,
        duration_ms: unsigned(row, "duration_ms")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        wake_at: get(row, "wake_at")?,
        tries: unsigned(row, "tries")?,
    })
}

pub(super) fn attempt_from_row(row: &PgRow) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        attempt: unsigned(row, "attempt")?,
        status: parse_text::<StepStatus>(row, "status")?,
        input: json_opt(row, "input")?,
        output: json_opt(row, "output")?,
        error_class: get(row, "error_class")?,
        error_message: get(row, "error_message")?,
        logs: get(row, "logs")?,
        fuel_used: unsigned(row, "fuel_used")?,
        duration_ms: unsigned(row, "duration_ms")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
    })
}
