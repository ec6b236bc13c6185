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
//!
//! Single node: a SQLite database is shared only by the processes of one
//! machine, and this backend leans on that where the traits only promise
//! atomicity. One writer at a time (SQLite's write lock, and in front of
//! it one write turn per process, `conn.rs`) is what makes a claim
//! exclusive (`queue.rs`) and a group of step writes one transaction
//! (`steps.rs`); one server per file is an OS file lock (`lock.rs`).
//!
//! One file per trait family: `workflows.rs`, `runs.rs` (+ `steps.rs`, the
//! group commit of step records), `queue.rs` (claims, leases, re-queues),
//! `lock.rs` (the server lock), `tokens.rs`, `webhooks.rs`, `schedules.rs`,
//! `secrets.rs`; `conn.rs` (the write connection and transactions) and
//! `rows.rs` (row decoding, error classification) serve them all.

mod conn;
mod direct;
mod lock;
mod pieces;
mod queue;
mod rows;
mod runs;
mod schedules;
mod secrets;
mod steps;
mod tokens;
mod webhooks;
mod workflows;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::migrate::{self, MigrationReport};
use super::{RunId, RunStore, StoreError};
use conn::{Gate, WriteConn, WriteTx, Writers};
use rows::sql_error;

/// Attempts at opening a file another process is opening too (see `open_with`).
const OPEN_RETRIES: u64 = 20;

/// How long a connection waits for SQLite's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool for a file database. SQLite has one writer at a
/// time anyway; more connections only help concurrent readers.
const MAX_CONNECTIONS: u32 = 8;

/// The SQLite-backed [`Store`](super::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One writer at a time inside this process: writers queue here instead
    /// of in SQLite's busy handler, which sleeps in 1–100 ms steps.
    /// The turn holds this process's two write connections (`conn.rs`).
    write_gate: Gate,
    /// Hot reads without a thread hand-off (`direct.rs`).
    reader: Arc<direct::Reader>,
    /// Group commit for step records (`steps.rs`).
    steps: steps::StepWriter,
    /// The database file (`None` in memory): its server lock file is
    /// `<file>.lock` (`lock.rs`).
    file: Option<std::path::PathBuf>,
    /// For `sqlite::memory:`, the private file standing in for it.
    _private: Option<Arc<PrivateFile>>,
    /// The migrations applied when it was opened.
    migrated: MigrationReport,
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
async fn migrate(pool: &SqlitePool) -> Result<MigrationReport, StoreError> {
    let migrator = sqlx::migrate!("../migrations/sqlite");
    let before = applied_versions(pool).await;
    migrate::refuse_newer(&migrator, &before)?;
    let mut tries_left = migrator.iter().count() + 1;
    loop {
        match migrator.run(pool).await {
            Ok(()) => {
                let after = applied_versions(pool).await;
                return Ok(migrate::report("sqlite", &migrator, &before, &after));
            }
            Err(e) if tries_left == 0 => return Err(StoreError::Migration(e.to_string())),
            Err(e) => {
                tracing::debug!("migration failed, retrying (another opener?): {e}");
                tries_left -= 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The migration versions applied to the database (none when it is new).
async fn applied_versions(pool: &SqlitePool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
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
        // `sqlite::memory:` (tests): a private file in the temp directory,
        // removed with the store, so the direct write connection
        // (`direct.rs`) and the pool see one database.
        let in_memory = options
            .get_filename()
            .to_string_lossy()
            .starts_with("file:sqlx-in-memory-");
        let private = in_memory.then(|| Arc::new(PrivateFile::new()));
        let options = match &private {
            Some(private) => SqliteConnectOptions::new().filename(&private.0),
            None => options,
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Pages freed by pruning go back to the file system
            // (`PRAGMA incremental_vacuum`); takes effect for new files.
            .auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental);
        let path = options.get_filename().to_path_buf();
        let file = (!in_memory).then(|| path.clone());
        let pool_options = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
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
        let migrated = migrate(&pool).await?;
        let writers = Writers {
            direct: direct::Direct::open(&path)?,
            sqlx: pool
                .acquire()
                .await
                .map_err(sql_error("open the write connection"))?
                .detach(),
        };
        let reader = Arc::new(direct::Reader::open(&path)?);
        let write_gate: Gate = Arc::new(tokio::sync::Mutex::new(writers));
        Ok(SqliteStore {
            steps: steps::StepWriter::start(Arc::clone(&write_gate)),
            pool,
            reader,
            write_gate,
            file,
            _private: private,
            migrated,
        })
    }

    /// What opening this store applied ([`super::migrate`]).
    pub fn migration_report(&self) -> MigrationReport {
        self.migrated.clone()
    }

    /// Close the pool's connections, waiting for them to be returned. Later
    /// reads and cold writes fail with [`StoreError::Unavailable`]; the
    /// direct write connection (`direct.rs`) closes when the last clone of
    /// the store is dropped.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Start a write transaction holding SQLite's write lock (see module
    /// docs), on the write connection, inside the write turn.
    async fn begin_write(&self, op: &'static str) -> Result<WriteTx, StoreError> {
        let conn = WriteConn::take(&self.write_gate).await;
        WriteTx::begin(conn).await.map_err(sql_error(op))
    }

    /// The rows of a hot read (`sql` with `params`): on the direct reader
    /// when it is free, else on the pool. `direct` and `pooled` decode the
    /// same columns from either connection's rows.
    async fn read_rows<T>(
        &self,
        op: &'static str,
        sql: &str,
        params: &[direct::Param],
        direct: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
        pooled: impl Fn(&sqlx::sqlite::SqliteRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        if let Some(rows) = self.reader.try_rows(op, sql, params, direct) {
            return rows;
        }
        let mut query = sqlx::query(sql);
        for param in params {
            query = match param {
                direct::Param::Text(text) => query.bind(text.clone()),
                direct::Param::OptInt(int) => query.bind(*int),
                direct::Param::Flag(flag) => query.bind(*flag),
            };
        }
        let rows = query.fetch_all(&self.pool).await.map_err(sql_error(op))?;
        rows.iter().map(pooled).collect()
    }

    /// Run `write` on the direct write connection inside the write turn
    /// (see `direct.rs`: synchronous, no transaction left open).
    async fn direct<T>(
        &self,
        op: &'static str,
        write: impl FnMut(&mut rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut turn = self.write_gate.lock().await;
        direct::with_direct(&mut turn.direct, op, write).await
    }

    /// Why a fenced write changed nothing: [`StoreError::NotFound`] for an
    /// unknown run, else [`StoreError::LeaseLost`].
    async fn lease_lost<T>(&self, run: RunId) -> Result<T, StoreError> {
        match self.get_run(run).await? {
            None => Err(StoreError::NotFound(format!("run {run}"))),
            Some(_) => Err(StoreError::LeaseLost { run }),
        }
    }
}

/// The private database file of a `sqlite::memory:` store; removed (with
/// its WAL and shared-memory files) when the last clone of the store goes.
#[derive(Debug)]
struct PrivateFile(std::path::PathBuf);

impl PrivateFile {
    fn new() -> PrivateFile {
        PrivateFile(
            std::env::temp_dir().join(format!("omniflow-private-{}.db", uuid::Uuid::now_v7())),
        )
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.0.as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(std::path::PathBuf::from(name));
        }
    }
}
