//! [`PgStore`]: the PostgreSQL backend (scale-out: several processes, on
//! several machines, share one database).
//!
//! Same tables and behaviour as the SQLite backend, with native types
//! (`migrations/postgres/`, embedded and applied on open; sqlx's migrator
//! takes an advisory lock, so concurrent openers apply them once). Ids are
//! `UUID`, times `TIMESTAMPTZ`, documents `JSONB`; the SQL reads ids and
//! times back as the text the records hold (`ts!`: RFC 3339 UTC with
//! milliseconds, the spelling SQLite stores), so records are equal
//! whatever the backend. Times are computed by the process (like SQLite),
//! not by the server's clock.
//!
//! Concurrency comes from the database, not from one writer per process:
//! - claims lock the runs they take with `FOR NO KEY UPDATE SKIP LOCKED`
//!   (`queue.rs`), so concurrent claimers take different runs without waiting;
//! - every write of the worker executing a run is fenced by its lease epoch
//!   in the same statement or transaction (`status = 'running' AND
//!   lease_epoch = $n`; step records lock the run row `FOR SHARE` first,
//!   `steps.rs`), so a worker that lost its lease writes nothing
//!   ([`StoreError::LeaseLost`]);
//! - read-then-write operations lock what they read (`FOR NO KEY UPDATE` on the
//!   run or workflow row, a table lock for the first API token).
//!
//! One server per database is a session-level advisory lock held by a
//! dedicated connection (`lock.rs`).
//!
//! One file per trait family, as for SQLite: `workflows.rs`, `runs.rs`
//! (+ `steps.rs`, step records), `queue.rs`, `lock.rs`, `tokens.rs`,
//! `webhooks.rs`, `schedules.rs`, `secrets.rs`; `rows.rs` (columns, row
//! decoding, error classification) serves them all.

/// The expression reading time column `table.col` (`table` is `""` or
/// `"alias."`) as the stored spelling of time (`2026-11-23T19:30:07.123Z`),
/// named `col`. A literal, so column lists can be `concat!`ed constants.
macro_rules! ts {
    ($table:literal, $col:literal) => {
        concat!(
            "to_char(",
            $table,
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS ",
            $col
        )
    };
}

mod listen;
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::migrate::{self, MigrationReport};
use super::{RunId, RunStore, Signal, StoreError};
use rows::sql_error;

/// Connections in the pool of one process.
const MAX_CONNECTIONS: u32 = 10;
/// How long a caller waits for a pooled connection (or a new one) before
/// [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL-backed [`Store`](super::Store).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// How to connect: the server lock opens a connection of its own (`lock.rs`).
    options: PgConnectOptions,
    /// The broadcast of `LISTEN` signals while anyone subscribes (`listen.rs`).
    signals: Arc<Mutex<Option<broadcast::Sender<Signal>>>>,
    /// The migrations applied when it was opened.
    migrated: MigrationReport,
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://user@host:port/db`,
    /// `postgresql://...`, with sqlx's query options) and apply the migrations.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("{}: {e}", redacted(url))))?;
        PgStore::open_with(options).await
    }

    /// Connect with `options` and apply the migrations.
    pub async fn open_with(options: PgConnectOptions) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(sql_error("connect to PostgreSQL"))?;
        let migrator = sqlx::migrate!("../migrations/postgres");
        let before = applied_versions(&pool).await?;
        migrate::refuse_newer(&migrator, &before)?;
        migrator
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let after = applied_versions(&pool).await?;
        Ok(PgStore {
            migrated: migrate::report("postgres", &migrator, &before, &after),
            pool,
            options,
            signals: Arc::default(),
        })
    }

    /// What opening this store applied ([`super::migrate`]).
    pub fn migration_report(&self) -> MigrationReport {
        self.migrated.clone()
    }

    /// Close every connection, waiting for them to be returned. Later calls fail
    /// with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.pool.close().await;
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

/// The migration versions applied to the database (none when it is new).
async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(sql_error("read the schema version"))?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .map_err(sql_error("read the schema version"))
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "the PostgreSQL URL".to_owned(),
    }
}
