//! [`StoreError`]: why a store operation failed, whatever the backend.

use super::{RunId, RunStatus};

/// Why a store operation failed. Each variant says whose fault it is and
/// whether trying again can help ([`StoreError::is_retryable`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, busy or locked beyond the busy timeout,
    /// or failed an I/O. Ours or the operator's (disk, network, load);
    /// **retryable**.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Migrations could not be applied (or the database was migrated by a
    /// newer OmniFlow). The operator's; not retryable.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// The database URL or options are invalid. The operator's; not retryable.
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// A run that is already terminal was asked to change status. The
    /// caller's bug; not retryable.
    #[error("run {run} is already {from} and cannot become {to}")]
    InvalidTransition {
        /// The run.
        run: RunId,
        /// Its current (terminal) status.
        from: RunStatus,
        /// The refused new status.
        to: RunStatus,
    },
    /// The database refused a write that breaks a constraint (e.g. an
    /// attempt for a step that was never recorded). The caller's bug; not
    /// retryable.
    #[error("rejected by the database: {0}")]
    Constraint(String),
    /// Stored data did not decode (unknown status, invalid JSON, bad id).
    /// Ours (or someone edited the database by hand); not retryable.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The operator asked for a backend this build does not have. Not retryable.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A referenced row (run, workflow version) does not exist. The
    /// caller's; not retryable.
    #[error("not found: {0}")]
    NotFound(String),
    /// A write by the worker executing a run was refused: the run is no
    /// longer running under that worker's claim (its lease expired and it
    /// was re-queued, or another worker claimed it since: a newer lease
    /// epoch). Nothing was written; the worker must stop driving the run.
    /// Not retryable.
    #[error(
        "lease lost: run {run} is no longer held by this worker (its lease expired and it was \
         re-queued or claimed by another worker); this worker stops executing it"
    )]
    LeaseLost {
        /// The run.
        run: RunId,
    },
    /// A run could not be claimed for execution here: a live process holds
    /// its lease, it is parked until later, or it is finished. Not retryable
    /// as is.
    #[error("run {run} cannot be executed here: {reason}")]
    NotClaimable {
        /// The run.
        run: RunId,
        /// Why, for humans.
        reason: String,
    },
    /// Another live server holds the database
    /// ([`QueueStore::lock_for_server`](super::QueueStore::lock_for_server)).
    /// The operator's; not retryable while it runs.
    #[error("{0}")]
    Locked(String),
    /// The write contradicts what is stored (the same piece name@version
    /// with other bytes; removing a piece workflows pin). The caller's; not
    /// retryable as is.
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    /// True if the same call may succeed later (only [`StoreError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}
