//! Reading rows and classifying errors: the column lists, the decoders
//! from a row to a record, and [`sql_error`].

use std::str::FromStr;

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::store::{
    AttemptRecord, Priority, RunRecord, StepRecord, StepStatus, StoreError, StoredWorkflow,
};

/// The columns of `runs`, in the order [`run_from_row`] reads them.
pub(super) const RUN_COLUMNS: &str = "id, workflow_name, workflow_version, status, priority, trigger, vars, simulated, \
                           created_at, started_at, finished_at, total_time_ms, error";
/// The columns of `step_runs`, in the order [`step_from_row`] reads them.
pub(super) const STEP_COLUMNS: &str = "step_id, status, input, output, error_class, error_message, logs, attempts, \
                            fuel_used, duration_ms, started_at, finished_at, wake_at, tries";
/// The columns of `attempts`, in the order [`attempt_from_row`] reads them.
pub(super) const ATTEMPT_COLUMNS: &str = "attempt, status, input, output, error_class, error_message, logs, fuel_used, \
                               duration_ms, started_at, finished_at";

/// Classify a sqlx error for `op` (a few words naming the operation).
pub(super) fn sql_error(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |error| {
        let message = format!("{op}: {error}");
        match &error {
            sqlx::Error::Database(db) => {
                // SQLite reports extended result codes; the primary code is the low byte.
                let primary = db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .map(|c| c & 0xff);
                match primary {
                    // SQLITE_CORRUPT, SQLITE_NOTADB
                    Some(11 | 26) => StoreError::Corrupt(message),
                    // SQLITE_CONSTRAINT
                    Some(19) => StoreError::Constraint(message),
                    // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, ...
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
            // Io, PoolTimedOut, PoolClosed, WorkerCrashed, Protocol, ...
            _ => StoreError::Unavailable(message),
        }
    }
}

/// Column `name` of `row`, decoded as `T`.
pub(super) fn get<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// A text column parsed with `FromStr` (statuses, ids).
pub(super) fn parse_text<T>(row: &SqliteRow, name: &str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = get(row, name)?;
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// A JSON text column.
pub(super) fn json(row: &SqliteRow, name: &str) -> Result<serde_json::Value, StoreError> {
    let text: String = get(row, name)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("column {name} is not JSON: {e}")))
}

/// A nullable JSON text column.
pub(super) fn json_opt(
    row: &SqliteRow,
    name: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    let text: Option<String> = get(row, name)?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("column {name} is not JSON: {e}")))
}

/// An INTEGER column that must fit an unsigned type.
pub(super) fn unsigned<T: TryFrom<i64>>(row: &SqliteRow, name: &str) -> Result<T, StoreError> {
    let value: i64 = get(row, name)?;
    T::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("column {name} out of range: {value}")))
}

/// Counters are u64 in Rust, INTEGER (i64) in SQL; no real run gets near the limit.
pub(super) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn workflow_from_row(row: &SqliteRow) -> Result<StoredWorkflow, StoreError> {
    Ok(StoredWorkflow {
        name: get(row, "workflow_name")?,
        version: get(row, "version")?,
        definition: json(row, "definition")?,
        created_at: get(row, "created_at")?,
    })
}

pub(super) fn run_from_row(row: &SqliteRow) -> Result<RunRecord, StoreError> {
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

pub(super) fn step_from_row(row: &SqliteRow) -> Result<StepRecord, StoreError> {
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

pub(super) fn attempt_from_row(row: &SqliteRow) -> Result<AttemptRecord, StoreError> {
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
