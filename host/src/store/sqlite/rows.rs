//! Reading rows and classifying errors: the column lists, the decoders
//! from a row to a record, and [`sql_error`].

use std::str::FromStr;

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::store::StoreError;
use crate::store::decode::Columns;
pub(super) use crate::store::decode::{
    attempt_from_row, run_from_row, saturating_i64, step_from_row, workflow_from_row,
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

/// JSON stored as text in column `name` (either SQLite client's rows).
pub(super) fn json_text(name: &str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("column {name} is not JSON: {e}")))
}

/// A JSON text column.
pub(super) fn json(row: &SqliteRow, name: &str) -> Result<serde_json::Value, StoreError> {
    json_text(name, &get::<String>(row, name)?)
}

/// A nullable JSON text column.
pub(super) fn json_opt(
    row: &SqliteRow,
    name: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    get::<Option<String>>(row, name)?
        .map(|text| json_text(name, &text))
        .transpose()
}

impl Columns for SqliteRow {
    fn text(&self, name: &str) -> Result<String, StoreError> {
        get(self, name)
    }
    fn text_opt(&self, name: &str) -> Result<Option<String>, StoreError> {
        get(self, name)
    }
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        get(self, name)
    }
    fn int_opt(&self, name: &str) -> Result<Option<i64>, StoreError> {
        get(self, name)
    }
    fn flag(&self, name: &str) -> Result<bool, StoreError> {
        get(self, name)
    }
    fn json(&self, name: &str) -> Result<serde_json::Value, StoreError> {
        json(self, name)
    }
    fn json_opt(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        json_opt(self, name)
    }
}
