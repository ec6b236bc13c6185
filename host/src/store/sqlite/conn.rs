//! The write path's connection handling: one write turn per process
//! ([`Gate`]), the dedicated write connection ([`WriteConn`]) and write
//! transactions on it ([`WriteTx`]).

use std::sync::Arc;

use sqlx::SqlitePool;

use super::rows::sql_error;
use crate::store::StoreError;

/// The write turn and, for a file, the dedicated write connection.
pub(super) type Gate = Arc<tokio::sync::Mutex<Option<sqlx::SqliteConnection>>>;

/// A connection to write on while holding the write turn: the dedicated one
/// (no pool acquire/release: sqlx pings every connection returned to a pool,
/// one more round trip to its thread per statement), or a pooled one for an
/// in-memory database.
pub(crate) enum WriteConn {
    /// The dedicated connection, inside the turn.
    Own(tokio::sync::OwnedMappedMutexGuard<Option<sqlx::SqliteConnection>, sqlx::SqliteConnection>),
    /// The turn (held, never read) and a pooled connection.
    Pooled(
        #[allow(dead_code)] tokio::sync::OwnedMutexGuard<Option<sqlx::SqliteConnection>>,
        sqlx::pool::PoolConnection<sqlx::Sqlite>,
    ),
}

impl WriteConn {
    /// The write connection for a held turn.
    pub(crate) async fn from_turn(
        turn: tokio::sync::OwnedMutexGuard<Option<sqlx::SqliteConnection>>,
        pool: &SqlitePool,
    ) -> Result<WriteConn, StoreError> {
        match tokio::sync::OwnedMutexGuard::try_map(turn, Option::as_mut) {
            Ok(own) => Ok(WriteConn::Own(own)),
            Err(turn) => {
                let pooled = pool.acquire().await.map_err(sql_error("write"))?;
                Ok(WriteConn::Pooled(turn, pooled))
            }
        }
    }

    /// Wait for the turn, then the connection.
    pub(crate) async fn take(gate: &Gate, pool: &SqlitePool) -> Result<WriteConn, StoreError> {
        WriteConn::from_turn(gate.clone().lock_owned().await, pool).await
    }
}

impl std::ops::Deref for WriteConn {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        match self {
            WriteConn::Own(conn) => conn,
            WriteConn::Pooled(_, conn) => conn,
        }
    }
}

impl std::ops::DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            WriteConn::Own(conn) => &mut *conn,
            WriteConn::Pooled(_, conn) => &mut *conn,
        }
    }
}

/// A write transaction on the write connection, inside this process's
/// write turn; derefs to the connection, so `&mut *tx` works as with a
/// plain transaction.
///
/// `BEGIN IMMEDIATE` / `COMMIT` / `ROLLBACK` are sent as plain statements,
/// not through sqlx's `Transaction`: sqlx counts the transaction depth
/// itself and, when a failed `COMMIT` (a full disk) had already ended the
/// transaction, its rollback fails and the count stays at 1, after which
/// every `begin` on that connection is refused ("begin at non-zero
/// transaction depth") until restart. Here a failed commit is rolled back
/// at once, and a transaction dropped before its commit (an early return,
/// a cancelled request) is rolled back by a task that holds the write turn
/// until it is done, so the next writer always starts on a clean connection.
pub(crate) struct WriteTx {
    conn: Option<WriteConn>,
}

impl WriteTx {
    /// `BEGIN IMMEDIATE` on `conn`. A transaction found open (left by a
    /// runtime that shut down mid-write, so never committed) is rolled
    /// back first.
    pub(super) async fn begin(mut conn: WriteConn) -> Result<WriteTx, sqlx::Error> {
        match sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("within a transaction") => {
                rollback_quietly(&mut conn).await;
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            }
            Err(e) => return Err(e),
        }
        Ok(WriteTx { conn: Some(conn) })
    }

    /// Commit (rolled back when the commit fails); the write turn ends with `self`.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        let done = sqlx::query("COMMIT").execute(&mut *conn).await;
        if done.is_err() {
            rollback_quietly(&mut conn).await;
        }
        done.map(|_| ())
    }
}

/// `ROLLBACK`, ignoring "no transaction is active" (the failed statement
/// or commit already ended it) and any other failure.
pub(crate) async fn rollback_quietly(conn: &mut sqlx::SqliteConnection) {
    let _ = sqlx::query("ROLLBACK").execute(conn).await;
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // Not committed: roll back before the turn (held by `conn`) ends.
        // Without a runtime (it is shutting down) the next `begin` finds
        // the transaction open and rolls it back then.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { rollback_quietly(&mut conn).await });
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        self.conn
            .as_deref()
            .expect("a WriteTx has its connection until dropped")
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.conn
            .as_deref_mut()
            .expect("a WriteTx has its connection until dropped")
    }
}
