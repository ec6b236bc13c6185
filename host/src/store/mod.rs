//! The durable store: workflow definitions, runs, step results and attempts.
//!
//! This module owns every line of SQL in the crate (architecture invariant):
//! the engine, CLI and API talk to the narrow traits below and never see a
//! query. One submodule per backend holds the SQL for that backend:
//!
//! - [`sqlite::SqliteStore`]: the embedded default (one file, WAL mode).
//! - PostgreSQL (scale-out) plugs in later behind the same traits; its schema
//!   already lives in `migrations/postgres/`.
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

pub mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use sqlite::SqliteStore;

/// A run's id: a UUID v7, so ids sort by creation time.
pub type RunId = uuid::Uuid;

/// Where a run is in its life. Stored as lowercase text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker is executing it.
    Running,
    /// Every step finished without an unhandled failure.
    Succeeded,
    /// A step failed for good (or the run could not be executed).
    Failed,
    /// Cancelled by a user before it finished.
    Cancelled,
}

impl RunStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The stored (and displayed) spelling: `"queued"`, `"running"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// True once the run can no longer change: succeeded, failed or cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                ParseEnumError::new("run status", s, &RunStatus::ALL.map(RunStatus::as_str))
            })
    }
}

/// Where a step is within a run. Stored as lowercase text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not started yet (its dependencies have not finished).
    Pending,
    /// An attempt is executing.
    Running,
    /// Parked until a wake-up time: a retry delay or the `delay` piece.
    Waiting,
    /// Finished with an output.
    Succeeded,
    /// Failed for good (attempts exhausted, or a non-retryable error).
    Failed,
    /// Not executed: its `when` was false or its branch was not taken.
    Skipped,
    /// Interrupted because the run was cancelled.
    Cancelled,
}

impl StepStatus {
    /// Every status.
    pub const ALL: [StepStatus; 7] = [
        StepStatus::Pending,
        StepStatus::Running,
        StepStatus::Waiting,
        StepStatus::Succeeded,
        StepStatus::Failed,
        StepStatus::Skipped,
        StepStatus::Cancelled,
    ];

    /// The stored (and displayed) spelling: `"pending"`, `"running"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Waiting => "waiting",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }

    /// True once the step will not run again in this run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Cancelled
        )
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepStatus {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                ParseEnumError::new("step status", s, &StepStatus::ALL.map(StepStatus::as_str))
            })
    }
}

/// How soon a queued run is picked: `critical` > `high` > `normal` > `low`,
/// FIFO within a priority. Stored as an integer (3, 2, 1, 0; higher = sooner).
///
/// Ordering follows urgency: `Priority::Critical > Priority::Low`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Stored as 3.
    Critical,
    /// Stored as 2.
    High,
    /// Stored as 1; the default.
    #[default]
    Normal,
    /// Stored as 0.
    Low,
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_i64().cmp(&other.as_i64())
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The user-facing spelling: `"critical"`, `"high"`, `"normal"`, `"low"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The stored integer: higher = sooner.
    pub fn as_i64(self) -> i64 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
            Priority::Critical => 3,
        }
    }

    /// The priority stored as `value`, if it is one.
    pub fn from_i64(value: i64) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_i64() == value)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ParseEnumError::new("priority", s, &Priority::ALL.map(Priority::as_str)))
    }
}

/// A status or priority spelled in a way we don't know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}; expected one of: {expected}")]
pub struct ParseEnumError {
    what: &'static str,
    given: String,
    expected: String,
}

impl ParseEnumError {
    fn new(what: &'static str, given: &str, expected: &[&str]) -> ParseEnumError {
        ParseEnumError {
            what,
            given: given.to_owned(),
            expected: expected.join(", "),
        }
    }
}

/// One saved version of a workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredWorkflow {
    /// The workflow's name (unique).
    pub name: String,
    /// 1 for the first save, +1 for every changed definition.
    pub version: i64,
    /// The definition as JSON, as saved.
    pub definition: serde_json::Value,
    /// When this version was saved (RFC 3339).
    pub created_at: String,
}

/// What [`RunStore::create_run`] needs to queue a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    /// Which workflow ...
    pub workflow_name: String,
    /// ... and which saved version of it (the run pins it).
    pub workflow_version: i64,
    /// How soon a worker should pick it.
    pub priority: Priority,
    /// What started it, e.g. `{"type": "manual", "payload": ...}`.
    pub trigger: serde_json::Value,
    /// Values for the workflow's variables.
    pub vars: serde_json::Value,
    /// A failure-simulation ("sandbox test") run, never mixed with production runs.
    pub simulated: bool,
}

impl NewRun {
    /// A manual, normal-priority, non-simulated run with no variables.
    pub fn manual(
        workflow_name: &str,
        workflow_version: i64,
        payload: serde_json::Value,
    ) -> NewRun {
        NewRun {
            workflow_name: workflow_name.to_owned(),
            workflow_version,
            priority: Priority::Normal,
            trigger: serde_json::json!({"type": "manual", "payload": payload}),
            vars: serde_json::json!({}),
            simulated: false,
        }
    }
}

/// A run as stored (the `runs` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// UUID v7.
    pub id: RunId,
    /// The workflow's name.
    pub workflow_name: String,
    /// The pinned workflow version.
    pub workflow_version: i64,
    /// Where the run is.
    pub status: RunStatus,
    /// How soon it is picked.
    pub priority: Priority,
    /// What started it (JSON).
    pub trigger: serde_json::Value,
    /// Variable values (JSON).
    pub vars: serde_json::Value,
    /// A failure-simulation run.
    pub simulated: bool,
    /// When it was queued (RFC 3339).
    pub created_at: String,
    /// When it first became `running`.
    pub started_at: Option<String>,
    /// When it became terminal.
    pub finished_at: Option<String>,
    /// `finished_at - started_at` (or `- created_at` if it never started), in ms.
    pub total_time_ms: Option<i64>,
    /// Why it failed, for humans.
    pub error: Option<String>,
}

/// One step of one run, as stored (the `step_runs` table). Written whole by
/// [`RunStore::record_step`]; the latest write wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's id within the workflow.
    pub step_id: String,
    /// Where the step is.
    pub status: StepStatus,
    /// The evaluated input of the latest attempt (JSON).
    pub input: Option<serde_json::Value>,
    /// The output once succeeded (JSON).
    pub output: Option<serde_json::Value>,
    /// The error class of the latest failure (`retryable`, `fatal`, `out-of-fuel`, ...).
    pub error_class: Option<String>,
    /// The error message of the latest failure.
    pub error_message: Option<String>,
    /// Log lines of the step (all attempts or the latest; the caller decides).
    pub logs: String,
    /// How many attempts have been made.
    pub attempts: u32,
    /// Fuel consumed, summed over attempts.
    pub fuel_used: u64,
    /// Execution time, summed over attempts, in ms.
    pub duration_ms: u64,
    /// When the first attempt started (RFC 3339).
    pub started_at: Option<String>,
    /// When the step reached a terminal status.
    pub finished_at: Option<String>,
    /// While `waiting`: when it continues (RFC 3339): its next attempt, or,
    /// when `output` is set, its success (a piece's `$wait_until`).
    pub wake_at: Option<String>,
    /// Attempts made in the current retry budget (0 again after a manual retry).
    pub tries: u32,
}

impl StepRecord {
    /// A step that has not started.
    pub fn pending(step_id: &str) -> StepRecord {
        StepRecord {
            step_id: step_id.to_owned(),
            status: StepStatus::Pending,
            input: None,
            output: None,
            error_class: None,
            error_message: None,
            logs: String::new(),
            attempts: 0,
            fuel_used: 0,
            duration_ms: 0,
            started_at: None,
            finished_at: None,
            wake_at: None,
            tries: 0,
        }
    }
}

/// One attempt of one step (the `attempts` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: u32,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: StepStatus,
    /// The evaluated input (JSON).
    pub input: Option<serde_json::Value>,
    /// The output, when it succeeded (JSON).
    pub output: Option<serde_json::Value>,
    /// The error class, when it failed.
    pub error_class: Option<String>,
    /// The error message, when it failed.
    pub error_message: Option<String>,
    /// Log lines of this attempt.
    pub logs: String,
    /// Fuel consumed by this attempt.
    pub fuel_used: u64,
    /// Execution time of this attempt, in ms.
    pub duration_ms: u64,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
}

/// Which runs [`RunStore::list_runs`] returns. Every `Some` narrows the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs created at or after this instant (compared as an instant:
    /// stored times are fixed-width UTC text, [`rfc3339`], which sorts).
    pub since: Option<SystemTime>,
    /// At most this many runs (default 50; 0 also means the default).
    pub limit: u32,
    /// Skip this many runs first (paging).
    pub offset: u32,
}

impl RunFilter {
    /// The limit used when none (0) is given.
    pub const DEFAULT_LIMIT: u32 = 50;
}

impl Default for RunFilter {
    fn default() -> RunFilter {
        RunFilter {
            workflow: None,
            status: None,
            since: None,
            limit: RunFilter::DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

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
    /// Another live server holds the database (the lock file next to a
    /// SQLite file). The operator's; not retryable while it runs.
    #[error("{0}")]
    Locked(String),
}

impl StoreError {
    /// True if the same call may succeed later (only [`StoreError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Workflow definitions and their versions.
#[async_trait::async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Save a definition; creates the workflow or a new version. If the
    /// newest version's definition is identical (compared as canonical JSON
    /// text: object keys sorted), returns that version instead of creating a
    /// new one.
    async fn save_workflow(
        &self,
        name: &str,
        definition: &serde_json::Value,
    ) -> Result<StoredWorkflow, StoreError>;

    /// A version, or the newest when `version` is None.
    async fn get_workflow(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredWorkflow>, StoreError>;

    /// The newest version of each workflow, by name (deleted workflows left out).
    async fn list_workflows(&self) -> Result<Vec<StoredWorkflow>, StoreError>;

    /// Every saved version of `name`, oldest first (empty when unknown or deleted).
    async fn workflow_versions(&self, name: &str) -> Result<Vec<StoredWorkflow>, StoreError>;

    /// Hide `name`: [`WorkflowStore::get_workflow`] with no version and
    /// [`WorkflowStore::list_workflows`] stop returning it, its webhook secret
    /// and schedule are dropped. Runs keep their pinned version; saving the
    /// workflow again brings it back. False when there was nothing to delete.
    async fn delete_workflow(&self, name: &str) -> Result<bool, StoreError>;
}

/// Runs, their steps and the steps' attempts.
#[async_trait::async_trait]
pub trait RunStore: Send + Sync {
    /// Insert the run with status queued (one transaction; later the queue
    /// row goes in the same transaction). [`StoreError::NotFound`] if the
    /// workflow version does not exist.
    async fn create_run(&self, run: NewRun) -> Result<RunRecord, StoreError>;

    /// The run, if it exists.
    async fn get_run(&self, id: RunId) -> Result<Option<RunRecord>, StoreError>;

    /// Runs matching `filter`, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;

    /// Change a run's status. Running → sets started_at if unset; terminal →
    /// sets finished_at and total_time_ms (finished - started, or finished -
    /// created when never started). `error` is stored as given (None clears
    /// it). Refuses ([`StoreError::InvalidTransition`]) to change a run that
    /// is already terminal; [`StoreError::NotFound`] for an unknown run.
    /// Unfenced, for tools and tests: a run set `running` here has no lease,
    /// so the lease sweep ([`QueueStore::requeue_expired_leases`]) puts it
    /// back in the queue. The engine claims runs and ends them with
    /// [`RunStore::finish_run`] instead.
    async fn set_run_status(
        &self,
        id: RunId,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Runs left queued or running (e.g. after a crash), oldest first.
    async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError>;

    /// Upsert the step row keyed (run, step_id) and, if given, insert (or
    /// replace) the attempt row, in ONE transaction so a step record is
    /// never half-written. [`StoreError::NotFound`] for an unknown run.
    /// Unfenced: for tools and tests; the engine writes through
    /// [`RunStore::record_leased_step`].
    async fn record_step(
        &self,
        run: RunId,
        step: &StepRecord,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError>;

    /// [`RunStore::record_step`] by the worker holding `lease`: in the same
    /// transaction, the write happens only if the run is still `running`
    /// under `lease.epoch`; otherwise nothing is written and the answer is
    /// [`StoreError::LeaseLost`] ([`StoreError::NotFound`] for an unknown run).
    async fn record_leased_step(
        &self,
        lease: &Lease,
        step: &StepRecord,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError>;

    /// End the run held under `lease` with the terminal `status` (times as
    /// [`RunStore::set_run_status`]) and clear its lease, if it is still
    /// `running` under `lease.epoch`; else [`StoreError::LeaseLost`].
    /// [`StoreError::InvalidTransition`] when `status` is not terminal.
    async fn finish_run(
        &self,
        lease: &Lease,
        status: RunStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The run's steps, ordered by started_at (not-started steps last), then step_id.
    async fn steps(&self, run: RunId) -> Result<Vec<StepRecord>, StoreError>;

    /// One step's attempts, by attempt number.
    async fn attempts(&self, run: RunId, step_id: &str) -> Result<Vec<AttemptRecord>, StoreError>;
}

/// Queue depth and totals, for `GET /stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Queued runs by priority name (`critical`, `high`, `normal`, `low`; all present).
    pub queued_by_priority: BTreeMap<String, u64>,
    /// Every run by status name (all statuses present).
    pub runs_by_status: BTreeMap<String, u64>,
    /// Runs that became terminal since the `since` time given, by status name.
    pub finished_since: BTreeMap<String, u64>,
    /// Fuel used by every step ever recorded.
    pub fuel_used_total: u64,
}

/// One claim on one running run: who holds it and which claim it is.
///
/// Every claim of a run increments its lease epoch, so `(run, epoch)` names
/// exactly one claim. Writes by the worker executing the run carry its
/// `Lease` and are refused ([`StoreError::LeaseLost`]) once the run is no
/// longer running under that epoch (fencing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The run.
    pub run: RunId,
    /// The lease owner (a worker id such as `serve-<pid>-<uuid>`).
    pub owner: String,
    /// The run's lease epoch this claim set.
    pub epoch: i64,
}

/// A run as a claim returned it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRun {
    /// The run, now `running` under the claimer's lease.
    pub run: RunRecord,
    /// Whether it has step records already (a resumed, retried or parked
    /// run); a fresh run has none, so its steps need not be read.
    pub has_steps: bool,
    /// The claim: owner and epoch.
    pub lease: Lease,
}

/// What a server holds while it runs on a database: for a SQLite file, an
/// exclusive OS advisory lock on `<database file>.lock` (released when this
/// is dropped or the process ends, however it ends). See
/// [`QueueStore::lock_for_server`].
#[derive(Debug)]
pub struct ServerLock {
    _file: Option<std::fs::File>,
}

impl ServerLock {
    /// A lock that holds nothing (in-memory databases, backends that rely
    /// on fencing alone).
    pub fn none() -> ServerLock {
        ServerLock { _file: None }
    }

    pub(crate) fn file(file: std::fs::File) -> ServerLock {
        ServerLock { _file: Some(file) }
    }
}

/// The durable run queue: runs are claimed with a lease that the worker
/// extends while it works; an expired lease puts the run back in the queue.
#[async_trait::async_trait]
pub trait QueueStore: Send + Sync {
    /// Create several queued runs in ONE transaction: all or none.
    /// [`StoreError::NotFound`] if a workflow version does not exist.
    async fn create_runs(&self, runs: Vec<NewRun>) -> Result<Vec<RunRecord>, StoreError>;

    /// Atomically take the most urgent queued run (priority, then age; runs
    /// with a future wake-up time wait): it becomes `running`, leased by
    /// `worker` until `lease_until`. None when the queue is empty.
    async fn claim_next_run(
        &self,
        worker: &str,
        lease_until: SystemTime,
    ) -> Result<Option<RunRecord>, StoreError> {
        Ok(self
            .claim_next_runs(worker, lease_until, 1)
            .await?
            .into_iter()
            .next()
            .map(|claimed| claimed.run))
    }

    /// Like [`QueueStore::claim_next_run`], up to `limit` runs at once (in
    /// queue order), in one atomic step.
    async fn claim_next_runs(
        &self,
        worker: &str,
        lease_until: SystemTime,
        limit: usize,
    ) -> Result<Vec<ClaimedRun>, StoreError>;

    /// Claim the one run `id` for `worker` until `lease_until` (a new lease
    /// epoch), if no live process holds it: it is `queued` and not parked
    /// for later (`wake_at` unset or past), or `running` with its lease
    /// expired or without a lease. [`StoreError::NotClaimable`] (saying
    /// why) otherwise, [`StoreError::NotFound`] when unknown.
    async fn claim_run(
        &self,
        id: RunId,
        worker: &str,
        lease_until: SystemTime,
    ) -> Result<ClaimedRun, StoreError>;

    /// Create a run that is `running` from the start, claimed by `worker`
    /// until `lease_until` (one statement: no queue worker can take it
    /// first). For a process that executes the run it creates (`omniflow
    /// run`). [`StoreError::NotFound`] if the workflow version does not exist.
    async fn create_claimed_run(
        &self,
        run: NewRun,
        worker: &str,
        lease_until: SystemTime,
    ) -> Result<ClaimedRun, StoreError>;

    /// Runs [`QueueStore::claim_run`] would take at `now` (queued and not
    /// parked for later; running with an expired or no lease), oldest first.
    async fn resumable_runs(&self, now: SystemTime) -> Result<Vec<RunRecord>, StoreError>;

    /// Extend to `lease_until` each of `leases` that is still current (the
    /// run is `running` under that epoch); returns the runs whose lease was
    /// extended. A lease missing from the answer was lost.
    async fn extend_leases(
        &self,
        leases: &[Lease],
        lease_until: SystemTime,
    ) -> Result<Vec<RunId>, StoreError>;

    /// Give the run held under `lease` back to the queue (graceful
    /// shutdown, or the worker cannot go on). [`StoreError::LeaseLost`]
    /// when it is no longer running under that lease.
    async fn release_run(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Park the run held under `lease` until `wake_at` (a step waits for a
    /// retry or a piece's `$wait_until`): it goes back to `queued` with its
    /// lease cleared and is not claimed before that time.
    /// [`StoreError::LeaseLost`] when it is no longer running under that lease.
    async fn park_run(&self, lease: &Lease, wake_at: SystemTime) -> Result<(), StoreError>;

    /// Put running runs whose lease expired before `now`, and running runs
    /// without a lease (nothing renews them), back in the queue; returns how
    /// many. Runs under a live lease are left alone, whoever holds them.
    async fn requeue_expired_leases(&self, now: SystemTime) -> Result<u64, StoreError>;

    /// Hold this database for one server process: a second server on the
    /// same SQLite file gets [`StoreError::Locked`] with a message naming
    /// the holder. For a file, an exclusive OS advisory lock on
    /// `<database file>.lock` (the file stays; the lock goes with the
    /// process). Backends without one return [`ServerLock::none`] and rely
    /// on fencing.
    async fn lock_for_server(&self) -> Result<ServerLock, StoreError>;

    /// Whether a live server holds this database ([`QueueStore::lock_for_server`]):
    /// a description of the holder, or None.
    async fn server_holding_lock(&self) -> Result<Option<String>, StoreError>;

    /// Cancel `id` if it is still queued (atomic with respect to claims).
    /// False when it is not queued (running or terminal);
    /// [`StoreError::NotFound`] when unknown.
    async fn cancel_queued_run(&self, id: RunId) -> Result<bool, StoreError>;

    /// Queue a failed or cancelled run again, from where it failed: steps
    /// that are failed, skipped or cancelled become pending (their attempt
    /// counts are kept, so attempt numbers continue); succeeded steps are
    /// kept and not re-run. [`StoreError::InvalidTransition`] unless the run
    /// is failed or cancelled.
    async fn requeue_for_retry(&self, id: RunId) -> Result<RunRecord, StoreError>;

    /// Queue depth, totals, and runs finished since `since`.
    async fn queue_stats(&self, since: SystemTime) -> Result<QueueStats, StoreError>;
}

/// An API token as stored: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Row id (what `omniflow token revoke ID` takes).
    pub id: i64,
    /// A label for humans (`admin`, `ci`).
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was revoked; a revoked token no longer authenticates.
    pub revoked_at: Option<String>,
}

/// API tokens (hashes only).
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    /// Store a token's hash (hex SHA-256) under `name`.
    async fn create_token(&self, name: &str, token_hash: &str) -> Result<ApiToken, StoreError>;

    /// Store a token's hash only if no active token exists (first start), in
    /// one transaction. None when a token already existed.
    async fn create_first_token(
        &self,
        name: &str,
        token_hash: &str,
    ) -> Result<Option<ApiToken>, StoreError>;

    /// Every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError>;

    /// Revoke token `id`; false when unknown or already revoked.
    async fn revoke_token(&self, id: i64) -> Result<bool, StoreError>;

    /// The active (not revoked) token with this hash.
    async fn active_token(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError>;
}

/// Webhook secrets and the replay log.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync {
    /// Set (replace) the webhook secret of workflow `name`.
    /// [`StoreError::NotFound`] when the workflow does not exist.
    async fn set_webhook_secret(&self, name: &str, secret: &str) -> Result<(), StoreError>;

    /// The webhook secret of workflow `name`, if one was set.
    async fn webhook_secret(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Remember an accepted signature; false if it was seen before (a
    /// replay). Signatures received before `forget_before` are pruned first.
    async fn record_delivery(
        &self,
        signature: &str,
        workflow: &str,
        now: SystemTime,
        forget_before: SystemTime,
    ) -> Result<bool, StoreError>;
}

/// A workflow's cron trigger as stored (the `schedules` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The workflow it starts.
    pub workflow_name: String,
    /// The cron expression (`0 */6 * * *`).
    pub cron: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// Missed-fire policy: `run_once` or `skip`.
    pub missed: String,
    /// The next fire time (RFC 3339 UTC).
    pub next_fire_at: String,
    /// The fire time handled last, if any.
    pub last_fired_at: Option<String>,
}

/// Cron schedules. Each fire time is handled by exactly one caller:
/// [`ScheduleStore::fire_schedule`] is a compare-and-set on `next_fire_at`.
#[async_trait::async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Make the stored schedule of `workflow` match: `None` deletes it;
    /// an unchanged cron + timezone + policy keeps the stored next fire
    /// time, a changed one stores `next_fire_at`.
    async fn sync_schedule(
        &self,
        workflow: &str,
        schedule: Option<(&str, &str, &str, SystemTime)>,
    ) -> Result<(), StoreError>;

    /// Schedules whose next fire time is at or before `now`.
    async fn due_schedules(&self, now: SystemTime) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Every schedule, by workflow name.
    async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// If `workflow`'s next fire time is still `fire_at` (RFC 3339 text as
    /// read), move it to `next` and, when `run` is given, queue that run, in
    /// ONE transaction. None when another scheduler handled this fire time
    /// (or no run was asked for).
    async fn fire_schedule(
        &self,
        workflow: &str,
        fire_at: &str,
        next: SystemTime,
        run: Option<NewRun>,
    ) -> Result<Option<RunRecord>, StoreError>;
}

/// An encrypted secret as stored (the store never sees clear values).
#[derive(Debug, Clone)]
pub struct SealedSecret {
    /// Secret name (`HUGGINGFACE_TOKEN`).
    pub name: String,
    /// AEAD nonce.
    pub nonce: Vec<u8>,
    /// AEAD ciphertext + tag.
    pub ciphertext: Vec<u8>,
    /// RFC 3339.
    pub updated_at: String,
}

/// Secrets set through the API, encrypted by the caller.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// Insert or replace.
    async fn put_secret(&self, secret: &SealedSecret) -> Result<(), StoreError>;
    /// Delete; false when there was none.
    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError>;
    /// Every stored secret, by name.
    async fn sealed_secrets(&self) -> Result<Vec<SealedSecret>, StoreError>;
}

/// Everything the engine and the server need from storage.
pub trait Store:
    WorkflowStore + RunStore + QueueStore + TokenStore + WebhookStore + ScheduleStore + SecretStore
{
}

impl<T> Store for T where
    T: WorkflowStore
        + RunStore
        + QueueStore
        + TokenStore
        + WebhookStore
        + ScheduleStore
        + SecretStore
{
}

/// Open (creating and migrating if needed) the store at `url_or_path`:
///
/// - `sqlite://path/to/omniflow.db` or `sqlite:path` (sqlx URL syntax, query
///   options such as `?mode=ro` allowed);
/// - a bare file path such as `./omniflow.db`;
/// - `sqlite::memory:` (one private in-memory database, for tests);
/// - `postgres://...` / `postgresql://...`: [`StoreError::Unsupported`] for now.
pub async fn open(url_or_path: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url_or_path.starts_with("postgres://") || url_or_path.starts_with("postgresql://") {
        return Err(StoreError::Unsupported(
            "PostgreSQL storage is not built yet; use a SQLite file such as `omniflow.db`"
                .to_owned(),
        ));
    }
    Ok(Arc::new(SqliteStore::open(url_or_path).await?))
}

/// Now, as RFC 3339 UTC with milliseconds: `2026-11-23T19:30:07.123Z`.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `time` as RFC 3339 UTC with milliseconds, the stored spelling.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Milliseconds from `start` to `end` (RFC 3339 texts), if both parse.
fn elapsed_ms(start: &str, end: &str) -> Option<i64> {
    let start = humantime::parse_rfc3339_weak(start).ok()?;
    let end = humantime::parse_rfc3339_weak(end).ok()?;
    let ms = match end.duration_since(start) {
        Ok(d) => i64::try_from(d.as_millis()).ok()?,
        // Clock went backwards between the two writes: report 0, not garbage.
        Err(_) => 0,
    };
    Some(ms)
}

/// `value` as JSON text with object keys sorted at every level, so two
/// definitions that differ only in key order compare equal (whatever
/// serde_json's `preserve_order` feature says).
fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}
