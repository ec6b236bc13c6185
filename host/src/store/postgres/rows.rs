//! Reading rows and classifying errors: the column lists (ids and times
//! read back as the text the records hold), the decoders from a row to a
//! record, and [`sql_error`].

use std::str::FromStr;

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use crate::store::StoreError;
use crate::store::decode::Columns;
pub(super) use crate::store::decode::{
    attempt_from_row, run_from_row, saturating_i64, step_from_row, workflow_from_row,
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
    "v.workflow_name, v.version, v.definition, v.pins, ",
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

impl Columns for PgRow {
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
