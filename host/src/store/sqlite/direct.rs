//! The direct write connection: a synchronous SQLite connection
//! (`rusqlite`) used for the hot writes (step records, claims, run
//! creation and status) straight from the calling task, inside this
//! process's write turn.
//!
//! Why not sqlx here: sqlx runs each SQLite connection on a thread of its
//! own and every statement is a round trip to it (a channel send, a thread
//! wake-up, the answer back, the task woken): 80–100 µs on this project's
//! VMs, several times the statement itself (a WAL append with
//! `synchronous=NORMAL`, no fsync, is ≈ 10–30 µs). A workflow step writes
//! once, so that hand-off was most of a trivial step's cost. A statement
//! here runs on the tokio worker that asked for it and returns before the
//! task goes on.
//!
//! What keeps that safe:
//! - **No await inside a transaction.** Each write is one synchronous
//!   closure; a transaction begun in it is committed or rolled back (on
//!   error, or by `rusqlite::Transaction`'s drop) before the closure
//!   returns, so a cancelled caller can never leave one open.
//! - **No blocking wait for another process.** The connection's busy
//!   timeout is 0: when another process holds SQLite's write lock the
//!   statement fails at once with `SQLITE_BUSY`, and [`with_direct`]
//!   sleeps asynchronously and tries again, up to [`super::BUSY_TIMEOUT`].
//!   Inside this process the write turn orders writers, so that only
//!   happens with a second process on the file (a CLI command).
//! - **Prepared statements are cached** per connection (`prepare_cached`).
//!
//! A second direct connection, [`Reader`], serves the hot reads (a run,
//! its steps, its attempts, a workflow version: what a run document and a
//! trigger read) when no other task is using it, and the pool otherwise.
//! Everything else (the other reads, and the cold writes through
//! [`super::conn`]) stays on sqlx; both write connections are behind the
//! same write turn.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::rows::json_text;
use crate::store::StoreError;
use crate::store::decode::Columns;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// The direct connection.
pub(crate) struct Direct(Connection);

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Direct(..)")
    }
}

impl Direct {
    /// Open `file` (already created and migrated by the pool) for writing.
    pub(super) fn open(file: &Path) -> Result<Direct, StoreError> {
        let conn = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(error("open the write connection"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // The journal mode (WAL) is the file's, set when the pool created it.
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 0;",
        )
        .map_err(error("open the write connection"))?;
        Ok(Direct(conn))
    }
}

/// Run `write` on `direct`, trying again while another process holds
/// SQLite's write lock (see the module docs). `write` must leave no
/// transaction open when it returns, which `rusqlite::Transaction` does.
pub(super) async fn with_direct<T>(
    direct: &mut Direct,
    op: &'static str,
    mut write: impl FnMut(&mut Connection) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    let deadline = Instant::now() + super::BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match write(&mut direct.0) {
            Ok(value) => return Ok(value),
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(error(op)(e)),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Classify a rusqlite error for `op`, as `rows::sql_error` does for sqlx's.
pub(super) fn error(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| {
        let message = format!("{op}: {e}");
        match &e {
            rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    StoreError::Corrupt(message)
                }
                ErrorCode::ConstraintViolation => StoreError::Constraint(message),
                // Busy, locked, I/O, full disk, cannot open, ...
                _ => StoreError::Unavailable(message),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::InvalidColumnName(_)
            | rusqlite::Error::InvalidColumnIndex(_)
            | rusqlite::Error::Utf8Error(_) => StoreError::Corrupt(message),
            _ => StoreError::Unavailable(message),
        }
    }
}

fn column<T: rusqlite::types::FromSql>(
    row: &rusqlite::Row<'_>,
    name: &str,
) -> Result<T, StoreError> {
    row.get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, name: &str) -> Result<String, StoreError> {
        column(self, name)
    }
    fn text_opt(&self, name: &str) -> Result<Option<String>, StoreError> {
        column(self, name)
    }
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        column(self, name)
    }
    fn int_opt(&self, name: &str) -> Result<Option<i64>, StoreError> {
        column(self, name)
    }
    fn flag(&self, name: &str) -> Result<bool, StoreError> {
        column(self, name)
    }
    fn json(&self, name: &str) -> Result<serde_json::Value, StoreError> {
        json_text(name, &column::<String>(self, name)?)
    }
    fn json_opt(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        column::<Option<String>>(self, name)?
            .map(|text| json_text(name, &text))
            .transpose()
    }
}

/// Every row `statement` returns for `params`, decoded by `decode`; a
/// decoding error is kept apart from SQLite's, which stop the query.
pub(super) fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> rusqlite::Result<Vec<Result<T, StoreError>>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row));
    }
    Ok(out)
}

/// A parameter of a hot read ([`super::SqliteStore::read_rows`]), bound by
/// whichever connection runs it.
#[derive(Debug, Clone)]
pub(super) enum Param {
    Text(String),
    OptInt(Option<i64>),
    Flag(bool),
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(text) => text.to_sql(),
            Param::OptInt(int) => int.to_sql(),
            Param::Flag(flag) => flag.to_sql(),
        }
    }
}

/// The direct read connection: hot reads (a run, its steps and attempts, a
/// workflow version) run on it synchronously when it is free, without
/// sqlx's thread hand-off; when another task holds it, on the pool.
#[derive(Debug)]
pub(super) struct Reader(std::sync::Mutex<Direct>);

impl Reader {
    pub(super) fn open(file: &Path) -> Result<Reader, StoreError> {
        let direct = Direct::open(file)?;
        direct
            .0
            .execute_batch("PRAGMA query_only = ON;")
            .map_err(error("open the read connection"))?;
        Ok(Reader(std::sync::Mutex::new(direct)))
    }

    /// Every row of `sql` with `params`, decoded; `None` when the reader is
    /// busy (another task) or SQLite is (recovery): read elsewhere.
    pub(super) fn try_rows<T>(
        &self,
        op: &'static str,
        sql: &str,
        params: &[Param],
        decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<Vec<T>, StoreError>> {
        let direct = self.0.try_lock().ok()?;
        match rows(&direct.0, sql, rusqlite::params_from_iter(params), decode) {
            Ok(rows) => Some(rows.into_iter().collect()),
            Err(e) if is_busy(&e) => None,
            Err(e) => Some(Err(error(op)(e))),
        }
    }
}
