//! The durable store: workflow definitions, runs, step results and attempts.
//!
//! This module owns every line of SQL in the crate (architecture invariant):
//! the engine, CLI and API talk to the narrow traits (`traits.rs`: one
//! family per concern, [`Store`] is all of them) and never see a query.
//! The records and domain enums they exchange are in `records.rs`,
//! [`StoreError`] in `error.rs`, the stored spelling of time in `time.rs`;
//! everything is re-exported here, so `crate::store::X` names each of them.
//! One submodule per backend holds the SQL for that backend:
//!
//! - [`sqlite::SqliteStore`]: the embedded default (one file, WAL mode).
//! - [`postgres::PgStore`]: PostgreSQL, for scale-out (several processes
//!   share one database; claims with `FOR UPDATE SKIP LOCKED`).
//!
//! Open a store with [`open`], which picks the backend from the URL:
//!
//! ```no_run
//! # async fn demo() -> Result<(), omniflow::store::StoreError> {
//! use omniflow::store::{self, NewRun, Priority, RunStatus};
//!
//! let store = store::open("./omniflow.db").await?;
//! let flow = store.save_workflow("greet", &serde_json::json!({"steps": []})).await?;
//! let run = store
//!     .create_run(NewRun::manual(&flow.name, flow.version, serde_json::Value::Null))
//!     .await?;
//! store.set_run_status(run.id, RunStatus::Running, None).await?;
//! store.set_run_status(run.id, RunStatus::Succeeded, None).await?;
//! # Ok(()) }
//! ```
//!
//! Conventions shared by every backend: run ids are UUID v7 (they sort by
//! creation time), timestamps are RFC 3339 UTC text with milliseconds
//! (`2026-11-23T19:30:07.123Z`, see [`now_rfc3339`]) so they sort lexically,
//! statuses are lowercase text, priorities integers (higher = sooner).
//!
//! This module must not know the engine's types (it stores JSON, not
//! `Workflow`s), the CLI or HTTP.

mod canonical;
mod decode;
mod error;
mod migrate;
pub mod postgres;
mod records;
mod signals;
pub mod sqlite;
mod time;
mod traits;

use std::sync::Arc;

pub(crate) use canonical::same_version;
pub use error::StoreError;
pub use migrate::{MigrationReport, migrate};
pub use postgres::PgStore;
pub use records::{
    ApiToken, AttemptRecord, ClaimedRun, Lease, NewRun, ParseEnumError, PieceRecord, PieceWrite,
    Priority, QueueStats, RunFilter, RunId, RunRecord, RunStatus, ScheduleRecord, SealedSecret,
    ServerLock, StepRecord, StepStatus, StoredWorkflow,
};
pub use signals::Signal;
pub(crate) use signals::{CANCEL_CHANNEL, QUEUE_CHANNEL, RUN_CHANNEL};
pub use sqlite::SqliteStore;
pub(crate) use time::elapsed_ms;
pub use time::{now_rfc3339, rfc3339};
pub use traits::{
    PieceStore, QueueStore, RunStore, ScheduleStore, SecretStore, Store, TokenStore, WebhookStore,
    WorkflowStore,
};

/// Open (creating and migrating if needed) the store at `url_or_path`:
///
/// - `sqlite://path/to/omniflow.db` or `sqlite:path` (sqlx URL syntax, query
///   options such as `?mode=ro` allowed);
/// - a bare file path such as `./omniflow.db`;
/// - `sqlite::memory:` (one private in-memory database, for tests);
/// - `postgres://...` / `postgresql://...`: a PostgreSQL database (which
///   must exist; the tables are created on first open).
pub async fn open(url_or_path: &str) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres_url(url_or_path) {
        return Ok(Arc::new(PgStore::open(url_or_path).await?));
    }
    Ok(Arc::new(SqliteStore::open(url_or_path).await?))
}

/// Whether `url_or_path` names a PostgreSQL database.
pub(crate) fn is_postgres_url(url_or_path: &str) -> bool {
    url_or_path.starts_with("postgres://") || url_or_path.starts_with("postgresql://")
}
