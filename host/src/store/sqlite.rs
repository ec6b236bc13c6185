//! [`SqliteStore`]: the embedded default backend, one file in WAL mode.
//!
//! Why these settings:
//! - **WAL** lets readers (the API, `runs list`) proceed while a worker writes;
//!   `synchronous=NORMAL` is durable against process crashes in WAL mode and
//!   only risks the last commits on power loss, the usual trade-off.
//! - **busy_timeout 5s**: SQLite has one writer at a time; concurrent writers
//!   wait for the lock instead of failing with "database is locked".
//! - Every transaction that writes starts with `BEGIN IMMEDIATE`, taking the
//!   write lock up front. A deferred transaction that reads and then writes
//!   can fail with `SQLITE_BUSY` at once (no busy wait) when another writer
//!   committed in between.
//! - Foreign keys are on, so a step can't be recorded for a run that doesn't exist.
//!
//! Migrations (`migrations/sqlite/`) are embedded at build time and applied on open.

mod server;
mod steps;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::{
    AttemptRecord, Lease, NewRun, Priority, RunFilter, RunId, RunRecord, RunStatus, RunStore,
    StepRecord, StepStatus, StoreError, StoredWorkflow, WorkflowStore, canonical_json, now_rfc3339,
};

/// Attempts at opening a file another process is opening too (see `open_with`).
const OPEN_RETRIES: u64 = 20;

/// How long a connection waits for SQLite's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool for a file database. SQLite has one writer at a
/// time anyway; more connections only help concurrent readers.
const MAX_CONNECTIONS: u32 = 8;

/// The columns of `runs`, in the order [`run_from_row`] reads them.
const RUN_COLUMNS: &str = "id, workflow_name, workflow_version, status, priority, trigger, vars, simulated, \
                           created_at, started_at, finished_at, total_time_ms, error";
/// The columns of `step_runs`, in the order [`step_from_row`] reads them.
const STEP_COLUMNS: &str = "step_id, status, input, output, error_class, error_message, logs, attempts, \
                            fuel_used, duration_ms, started_at, finished_at, wake_at, tries";
/// The columns of `attempts`, in the order [`attempt_from_row`] reads them.
const ATTEMPT_COLUMNS: &str = "attempt, status, input, output, error_class, error_message, logs, fuel_used, \
                               duration_ms, started_at, finished_at";

/// The SQLite-backed [`Store`](super::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One writer at a time inside this process: writers queue here instead
    /// of in SQLite's busy handler, which sleeps in 1–100 ms steps.
    /// The turn holds this process's dedicated write connection (`None`
    /// for an in-memory database, whose one pooled connection is used).
    write_gate: Gate,
    /// Group commit for step records (`steps.rs`).
    steps: steps::StepWriter,
    /// The database file (`None` in memory): its server lock file is
    /// `<file>.lock` (`server.rs`).
    file: Option<std::path::PathBuf>,
}

/// The write turn and, for a file, the dedicated write connection.
type Gate = Arc<tokio::sync::Mutex<Option<sqlx::SqliteConnection>>>;

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
    async fn begin(mut conn: WriteConn) -> Result<WriteTx, sqlx::Error> {
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

/// Apply the embedded migrations.
///
/// Several processes may open one file at once (`serve` and `omniflow runs
/// list`, a test polling a database a child process is creating). sqlx takes
/// no lock for SQLite, so two openers can both see migration N as pending;
/// the second one's transaction then fails (e.g. "duplicate column") and
/// rolls back whole. Running the migrator again re-reads
/// `_sqlx_migrations`, sees N applied and carries on, so a failure is retried
/// once per migration before it counts.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let migrator = sqlx::migrate!("../migrations/sqlite");
    let mut tries_left = migrator.iter().count() + 1;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if tries_left == 0 => return Err(StoreError::Migration(e.to_string())),
            Err(e) => {
                tracing::debug!("migration failed, retrying (another opener?): {e}");
                tries_left -= 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl SqliteStore {
    /// Open (creating if missing) and migrate the database at `url_or_path`:
    /// `sqlite://path`, `sqlite:path`, a bare path, or `sqlite::memory:`.
    pub async fn open(url_or_path: &str) -> Result<SqliteStore, StoreError> {
        let options = if url_or_path.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url_or_path)
                .map_err(|e| StoreError::Config(format!("{url_or_path:?}: {e}")))?
        } else {
            SqliteConnectOptions::new().filename(url_or_path)
        };
        SqliteStore::open_with(options).await
    }

    /// Open (creating if missing) and migrate the database described by
    /// `options`; journal mode, synchronous, busy timeout and foreign keys
    /// are set here whatever `options` said.
    pub async fn open_with(options: SqliteConnectOptions) -> Result<SqliteStore, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = options
            .get_filename()
            .to_string_lossy()
            .starts_with("file:sqlx-in-memory-");
        let file = (!in_memory).then(|| options.get_filename().to_path_buf());
        let pool_options = if in_memory {
            // An in-memory database lives as long as one of its connections:
            // keep exactly one, forever.
            SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS)
        }
        // sqlx pings a connection on every acquire by default: one more
        // round trip to the connection's thread per statement. A local
        // file connection does not go stale like a network one.
        .test_before_acquire(false);
        // A fresh file switching to WAL needs SQLite's exclusive lock, and
        // that pragma runs before the busy timeout applies: a concurrent
        // opener (another process) can get SQLITE_BUSY at once. Try again.
        let mut tries = 0u64;
        let pool = loop {
            match pool_options.clone().connect_with(options.clone()).await {
                Ok(pool) => break pool,
                Err(e) => match sql_error("open database")(e) {
                    StoreError::Unavailable(why) if tries < OPEN_RETRIES => {
                        tracing::debug!("opening the database, retrying: {why}");
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(10 * tries)).await;
                    }
                    other => return Err(other),
                },
            }
        };
        migrate(&pool).await?;
        let own = if in_memory {
            None
        } else {
            Some(
                pool.acquire()
                    .await
                    .map_err(sql_error("open the write connection"))?
                    .detach(),
            )
        };
        let write_gate: Gate = Arc::new(tokio::sync::Mutex::new(own));
        Ok(SqliteStore {
            steps: steps::StepWriter::start(pool.clone(), Arc::clone(&write_gate)),
            pool,
            write_gate,
            file,
        })
    }

    /// Close every connection, waiting for them to be returned. Later calls fail
    /// with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Start a write transaction holding SQLite's write lock (see module
    /// docs), on the write connection, inside the write turn.
    async fn begin_write(&self, op: &'static str) -> Result<WriteTx, StoreError> {
        let conn = WriteConn::take(&self.write_gate, &self.pool).await?;
        WriteTx::begin(conn).await.map_err(sql_error(op))
    }

    /// Why a fenced write changed nothing: [`StoreError::NotFound`] for an
    /// unknown run, else [`StoreError::LeaseLost`].
    async fn lease_lost<T>(&self, run: RunId) -> Result<T, StoreError> {
        match self.get_run(run).await? {
            None => Err(StoreError::NotFound(format!("run {run}"))),
            Some(_) => Err(StoreError::LeaseLost { run }),
        }
    }

    /// The newest version of `name` (or `version`), with its definition text.
    /// A deleted workflow is only found with `include_deleted`.
    async fn workflow_row<'e, E>(
        executor: E,
        name: &str,
        version: Option<i64>,
        include_deleted: bool,
    ) -> Result<Option<StoredWorkflow>, StoreError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    {
        let row = sqlx::query(
            "SELECT workflow_name, version, definition, created_at FROM workflow_versions \
             WHERE workflow_name = ?1 AND (?2 IS NULL OR version = ?2) \
             AND (?3 OR NOT EXISTS (SELECT 1 FROM workflows w \
                                    WHERE w.name = workflow_name AND w.deleted_at IS NOT NULL)) \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(name)
        .bind(version)
        .bind(include_deleted)
        .fetch_optional(executor)
        .await
        .map_err(sql_error("read workflow"))?;
        row.as_ref().map(workflow_from_row).transpose()
    }
}

#[async_trait::async_trait]
impl WorkflowStore for SqliteStore {
    async fn save_workflow(
        &self,
        name: &str,
        definition: &serde_json::Value,
    ) -> Result<StoredWorkflow, StoreError> {
        let mut tx = self.begin_write("save workflow").await?;
        let newest = SqliteStore::workflow_row(&mut *tx, name, None, true).await?;
        // Saving a deleted workflow brings it back.
        sqlx::query(
            "UPDATE workflows SET deleted_at = NULL WHERE name = ?1 AND deleted_at IS NOT NULL",
        )
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(sql_error("save workflow"))?;
        if let Some(newest) = &newest
            && canonical_json(&newest.definition) == canonical_json(definition)
        {
            tx.commit().await.map_err(sql_error("save workflow"))?;
            return Ok(newest.clone());
        }
        let now = now_rfc3339();
        let version = newest.map_or(1, |w| w.version + 1);
        sqlx::query("INSERT INTO workflows (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(sql_error("save workflow"))?;
        sqlx::query(
            "INSERT INTO workflow_versions (workflow_name, version, definition, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(name)
        .bind(version)
        .bind(definition.to_string())
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(sql_error("save workflow version"))?;
        tx.commit().await.map_err(sql_error("save workflow"))?;
        Ok(StoredWorkflow {
            name: name.to_owned(),
            version,
            definition: definition.clone(),
            created_at: now,
        })
    }

    async fn get_workflow(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        // A pinned version stays readable after a delete (runs need it).
        SqliteStore::workflow_row(&self.pool, name, version, version.is_some()).await
    }

    async fn list_workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.workflow_name, v.version, v.definition, v.created_at FROM workflow_versions v \
             JOIN workflows w ON w.name = v.workflow_name AND w.deleted_at IS NULL \
             WHERE v.version = (SELECT MAX(version) FROM workflow_versions WHERE workflow_name = v.workflow_name) \
             ORDER BY v.workflow_name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list workflows"))?;
        rows.iter().map(workflow_from_row).collect()
    }

    async fn workflow_versions(&self, name: &str) -> Result<Vec<StoredWorkflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.workflow_name, v.version, v.definition, v.created_at FROM workflow_versions v \
             JOIN workflows w ON w.name = v.workflow_name AND w.deleted_at IS NULL \
             WHERE v.workflow_name = ?1 ORDER BY v.version",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list workflow versions"))?;
        rows.iter().map(workflow_from_row).collect()
    }

    async fn delete_workflow(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("delete workflow").await?;
        let deleted = sqlx::query(
            "UPDATE workflows SET deleted_at = ?2 WHERE name = ?1 AND deleted_at IS NULL",
        )
        .bind(name)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(sql_error("delete workflow"))?
        .rows_affected()
            > 0;
        for table in ["webhooks", "schedules"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE workflow_name = ?1"))
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(sql_error("delete workflow"))?;
        }
        tx.commit().await.map_err(sql_error("delete workflow"))?;
        Ok(deleted)
    }
}

#[async_trait::async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, run: NewRun) -> Result<RunRecord, StoreError> {
        // One statement is atomic on its own: no BEGIN/COMMIT round trips.
        let mut conn = WriteConn::take(&self.write_gate, &self.pool).await?;
        insert_run(&mut conn, run, None).await
    }

    async fn get_run(&self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error("get run"))?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let limit = if filter.limit == 0 {
            RunFilter::DEFAULT_LIMIT
        } else {
            filter.limit
        };
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs \
             WHERE (?1 IS NULL OR workflow_name = ?1) AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR created_at >= ?3) \
             ORDER BY created_at DESC, id DESC LIMIT ?4 OFFSET ?5"
        ))
        .bind(filter.workflow.as_deref())
        .bind(filter.status.map(RunStatus::as_str))
        .bind(filter.since.map(super::rfc3339))
        .bind(i64::from(limit))
        .bind(i64::from(filter.offset))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list runs"))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn set_run_status(
        &self,
        id: RunId,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        // One statement (one round trip to the connection thread): the
        // transition check and the times are computed by SQLite.
        let now = now_rfc3339();
        let updated = {
            let mut conn = WriteConn::take(&self.write_gate, &self.pool).await?;
            sqlx::query(
                "UPDATE runs SET status = ?2, error = ?3, \
                 started_at = CASE WHEN ?2 = 'running' THEN COALESCE(started_at, ?4) ELSE started_at END, \
                 finished_at = CASE WHEN ?5 THEN ?4 END, \
                 total_time_ms = CASE WHEN ?5 THEN MAX(0, CAST(ROUND( \
                     (julianday(?4) - julianday(COALESCE(started_at, created_at))) * 86400000.0) AS INTEGER)) END, \
                 lease_owner = CASE WHEN ?5 THEN NULL ELSE lease_owner END, \
                 lease_until = CASE WHEN ?5 THEN NULL ELSE lease_until END \
                 WHERE id = ?1 AND status NOT IN ('succeeded', 'failed', 'cancelled')",
            )
            .bind(id.to_string())
            .bind(status.as_str())
            .bind(error)
            .bind(&now)
            .bind(status.is_terminal())
            .execute(&mut *conn)
            .await
            .map_err(sql_error("set run status"))?
            .rows_affected()
        };
        if updated > 0 {
            return Ok(());
        }
        // Nothing changed: say why.
        match self.get_run(id).await? {
            None => Err(StoreError::NotFound(format!("run {id}"))),
            Some(run) => Err(StoreError::InvalidTransition {
                run: id,
                from: run.status,
                to: status,
            }),
        }
    }

    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE status IN ('queued', 'running') ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("unfinished runs"))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn record_step(
        &self,
        run: RunId,
        step: &StepRecord,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError> {
        self.steps.write(run, step, attempt).await
    }

    async fn record_leased_step(
        &self,
        lease: &Lease,
        step: &StepRecord,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError> {
        self.steps.write_leased(lease, step, attempt).await
    }

    async fn finish_run(
        &self,
        lease: &Lease,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        if !status.is_terminal() {
            return Err(StoreError::InvalidTransition {
                run: lease.run,
                from: RunStatus::Running,
                to: status,
            });
        }
        let now = now_rfc3339();
        let updated = {
            let mut conn = WriteConn::take(&self.write_gate, &self.pool).await?;
            sqlx::query(
                "UPDATE runs SET status = ?2, error = ?3, finished_at = ?4, \
                 total_time_ms = MAX(0, CAST(ROUND( \
                     (julianday(?4) - julianday(COALESCE(started_at, created_at))) * 86400000.0) AS INTEGER)), \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE id = ?1 AND status = 'running' AND lease_epoch = ?5",
            )
            .bind(lease.run.to_string())
            .bind(status.as_str())
            .bind(error)
            .bind(&now)
            .bind(lease.epoch)
            .execute(&mut *conn)
            .await
            .map_err(sql_error("finish run"))?
            .rows_affected()
        };
        if updated > 0 {
            return Ok(());
        }
        self.lease_lost(lease.run).await
    }

    async fn steps(&self, run: RunId) -> Result<Vec<StepRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = ?1 \
             ORDER BY started_at IS NULL, started_at, step_id"
        ))
        .bind(run.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read steps"))?;
        rows.iter().map(step_from_row).collect()
    }

    async fn attempts(&self, run: RunId, step_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ?1 AND step_id = ?2 ORDER BY attempt"
        ))
        .bind(run.to_string())
        .bind(step_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read attempts"))?;
        rows.iter().map(attempt_from_row).collect()
    }
}

/// Insert `run` inside `tx`: queued, or, given `(owner, until)`, running
/// under that lease (epoch 1, started now).
async fn insert_run(
    tx: &mut sqlx::SqliteConnection,
    run: NewRun,
    lease: Option<(&str, std::time::SystemTime)>,
) -> Result<RunRecord, StoreError> {
    let now = now_rfc3339();
    let record = RunRecord {
        id: uuid::Uuid::now_v7(),
        workflow_name: run.workflow_name,
        workflow_version: run.workflow_version,
        status: if lease.is_some() {
            RunStatus::Running
        } else {
            RunStatus::Queued
        },
        priority: run.priority,
        trigger: run.trigger,
        vars: run.vars,
        simulated: run.simulated,
        started_at: lease.is_some().then(|| now.clone()),
        created_at: now,
        finished_at: None,
        total_time_ms: None,
        error: None,
    };
    sqlx::query(
        "INSERT INTO runs (id, workflow_name, workflow_version, status, priority, trigger, vars, simulated, \
         created_at, started_at, lease_owner, lease_until, lease_epoch) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .bind(record.id.to_string())
    .bind(&record.workflow_name)
    .bind(record.workflow_version)
    .bind(record.status.as_str())
    .bind(record.priority.as_i64())
    .bind(record.trigger.to_string())
    .bind(record.vars.to_string())
    .bind(record.simulated)
    .bind(&record.created_at)
    .bind(record.started_at.as_deref())
    .bind(lease.map(|(owner, _)| owner))
    .bind(lease.map(|(_, until)| super::rfc3339(until)))
    .bind(if lease.is_some() { 1_i64 } else { 0 })
    .execute(&mut *tx)
    .await
    .map_err(|e| match sql_error("create run")(e) {
        StoreError::Constraint(_) => StoreError::NotFound(format!(
            "workflow {:?} version {}",
            record.workflow_name, record.workflow_version
        )),
        other => other,
    })?;
    Ok(record)
}

/// Classify a sqlx error for `op` (a few words naming the operation).
fn sql_error(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
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
/// The upsert of one step record.
fn get<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// A text column parsed with `FromStr` (statuses, ids).
fn parse_text<T>(row: &SqliteRow, name: &str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = get(row, name)?;
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// A JSON text column.
fn json(row: &SqliteRow, name: &str) -> Result<serde_json::Value, StoreError> {
    let text: String = get(row, name)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("column {name} is not JSON: {e}")))
}

/// A nullable JSON text column.
fn json_opt(row: &SqliteRow, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
    let text: Option<String> = get(row, name)?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("column {name} is not JSON: {e}")))
}

/// An INTEGER column that must fit an unsigned type.
fn unsigned<T: TryFrom<i64>>(row: &SqliteRow, name: &str) -> Result<T, StoreError> {
    let value: i64 = get(row, name)?;
    T::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("column {name} out of range: {value}")))
}

/// Counters are u64 in Rust, INTEGER (i64) in SQL; no real run gets near the limit.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn workflow_from_row(row: &SqliteRow) -> Result<StoredWorkflow, StoreError> {
    Ok(StoredWorkflow {
        name: get(row, "workflow_name")?,
        version: get(row, "version")?,
        definition: json(row, "definition")?,
        created_at: get(row, "created_at")?,
    })
}

fn run_from_row(row: &SqliteRow) -> Result<RunRecord, StoreError> {
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

fn step_from_row(row: &SqliteRow) -> Result<StepRecord, StoreError> {
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

fn attempt_from_row(row: &SqliteRow) -> Result<AttemptRecord, StoreError> {
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
