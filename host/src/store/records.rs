//! The store's records and domain enums: what the traits take and return.
//! Plain data (serde, no SQL); every backend stores and reads these.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

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
    /// The exact piece each `name@req` of the definition resolved to when
    /// this version was saved: `{"transform@^0.1": {"version": "0.1.0",
    /// "digest": "<sha256 hex>"}}`; its runs load exactly those bytes.
    /// None for versions saved without pins (before pinning, or by tools).
    pub pins: Option<serde_json::Value>,
}

/// What [`RunStore::create_run`](super::RunStore::create_run) needs to queue a run.
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
/// [`RunStore::record_step`](super::RunStore::record_step); the latest write wins.
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

/// Which runs [`RunStore::list_runs`](super::RunStore::list_runs) returns. Every `Some` narrows the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFilter {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs created at or after this instant (compared as an instant:
    /// stored times are fixed-width UTC text, [`rfc3339`](super::rfc3339), which sorts).
    pub since: Option<SystemTime>,
    /// Only runs created before this instant.
    pub until: Option<SystemTime>,
    /// Only runs whose error contains this text (case-insensitive for ASCII).
    pub error_contains: Option<String>,
    /// Keyset paging: only runs listed after this one (older, in the
    /// newest-first order), however many runs came before it.
    pub before: Option<RunId>,
    /// At most this many runs (default 50; 0 also means the default).
    pub limit: u32,
    /// Skip this many runs first (paging).
    pub offset: u32,
    /// Only test runs (`Some(true)`: failure simulation, `runs.simulated`)
    /// or only the others (`Some(false)`).
    #[serde(default)]
    pub test: Option<bool>,
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
            until: None,
            error_contains: None,
            test: None,
            before: None,
            limit: RunFilter::DEFAULT_LIMIT,
            offset: 0,
        }
    }
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
/// `Lease` and are refused ([`StoreError::LeaseLost`](super::StoreError::LeaseLost)) once the run is no
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

/// What a server holds while it runs on a database, so that no second
/// server runs on it; released when this is dropped or the process ends,
/// however it ends. See
/// [`QueueStore::lock_for_server`](super::QueueStore::lock_for_server)
/// (for a SQLite file: an OS lock on `<database file>.lock`; for
/// PostgreSQL: the session holding an advisory lock).
#[derive(Debug)]
pub struct ServerLock {
    /// The lock file, or the database session, that holds the lock.
    _held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl ServerLock {
    /// A lock that holds nothing (in-memory databases, backends that rely
    /// on fencing alone).
    pub fn none() -> ServerLock {
        ServerLock { _held: None }
    }

    pub(crate) fn file(file: std::fs::File) -> ServerLock {
        ServerLock::held(file)
    }

    /// A lock that lasts as long as `holder` (a database session holding
    /// an advisory lock) is kept.
    pub(crate) fn held(holder: impl std::any::Any + Send + Sync) -> ServerLock {
        ServerLock {
            _held: Some(Box::new(holder)),
        }
    }
}

/// An installed piece as stored (`pieces`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceRecord {
    /// `sentiment`
    pub name: String,
    /// `0.1.0` (semver text)
    pub version: String,
    /// sha256 of the component bytes, lowercase hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// What the loader read from it: description and actions with their
    /// input and output schemas.
    pub info: serde_json::Value,
    /// What it asks for: `{"http": [...], "secrets": [...]}`.
    pub capabilities: serde_json::Value,
    /// Embedded in the binary (registered when a workflow pins it).
    pub builtin: bool,
    /// When it was installed (RFC 3339).
    pub installed_at: String,
    /// The API token that installed it (None: the CLI, or a built-in).
    pub installed_by: Option<i64>,
    /// When other bytes replaced this version's (`?replace=true`).
    pub replaced_at: Option<String>,
}

/// What [`PieceStore::put_piece`](super::PieceStore::put_piece) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceWrite {
    /// A new name@version.
    Installed,
    /// The same bytes were already installed under that name@version.
    Unchanged,
    /// Other bytes replaced that name@version's.
    Replaced,
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
