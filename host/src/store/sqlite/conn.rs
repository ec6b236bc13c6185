//! The write path's connection handling: one write turn per process
//! ([`Gate`]) holding this process's two write connections ([`Writers`]):
//! the direct one for hot writes (`direct.rs`) and a sqlx one for the rest
//! ([`WriteConn`], and write transactions on it, [`WriteTx`]).

use std::sync::Arc;

use super::direct::Direct;

/// This process's write connections, held with the write turn.
#[derive(Debug)]
pub(crate) struct Writers {
    /// Hot writes: step records, claims, run creation and status.
    pub(super) direct: Direct,
    /// Every other write (workflows, pieces, tokens, cancels, ...), through
    /// sqlx like the reads.
    pub(super) sqlx: sqlx::SqliteConnection,
}

/// The write turn and the connections it holds.
pub(super) type Gate = Arc<tokio::sync::Mutex<Writers>>;

/// The sqlx write connection while holding the write turn (no pool
/// acquire/release: sqlx pings every connection returned to a pool, one
/// more round trip to its thread per statement).
pub(crate) struct WriteConn(tokio::sync::OwnedMappedMutexGuard<Writers, sqlx::SqliteConnection>);

impl WriteConn {
    /// Wait for the turn, then the connection.
    pub(crate) async fn take(gate: &Gate) -> WriteConn {
        let turn = gate.clone().lock_owned().await;
        WriteConn(tokio::sync::OwnedMutexGuard::map(turn, |writers| {
            &mut writers.sqlx
        }))
    }
}

impl std::ops::Deref for WriteConn {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
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
