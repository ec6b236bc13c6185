//! Rows to records, once for every backend: a backend says how to read one
//! column of each kind ([`Columns`]); which column fills which field, and
//! the checks on the values, are here.

use std::str::FromStr;

use super::{
    AttemptRecord, ClaimedRun, Lease, PieceRecord, Priority, RunId, RunRecord, RunStatus,
    StepRecord, StepStatus, StoreError, StoredWorkflow,
};

/// One row of a backend, read column by column (missing or mistyped
/// columns are [`StoreError::Corrupt`]).
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, name: &str) -> Result<String, StoreError>;
    /// A nullable text column.
    fn text_opt(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// An integer column.
    fn int(&self, name: &str) -> Result<i64, StoreError>;
    /// A nullable integer column.
    fn int_opt(&self, name: &str) -> Result<Option<i64>, StoreError>;
    /// A boolean column.
    fn flag(&self, name: &str) -> Result<bool, StoreError>;
    /// A JSON column.
    fn json(&self, name: &str) -> Result<serde_json::Value, StoreError>;
    /// A nullable JSON column.
    fn json_opt(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError>;

    /// A text column parsed with `FromStr` (statuses, ids).
    fn parsed<T>(&self, name: &str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.text(name)?
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
    }

    /// An integer column that must fit an unsigned type.
    fn unsigned<T: TryFrom<i64>>(&self, name: &str) -> Result<T, StoreError> {
        let value = self.int(name)?;
        T::try_from(value)
            .map_err(|_| StoreError::Corrupt(format!("column {name} out of range: {value}")))
    }
}

pub(crate) fn workflow_from_row(row: &impl Columns) -> Result<StoredWorkflow, StoreError> {
    Ok(StoredWorkflow {
        name: row.text("workflow_name")?,
        version: row.int("version")?,
        definition: row.json("definition")?,
        created_at: row.text("created_at")?,
        pins: row.json_opt("pins")?,
    })
}

pub(crate) fn piece_from_row(row: &impl Columns) -> Result<PieceRecord, StoreError> {
    Ok(PieceRecord {
        name: row.text("name")?,
        version: row.text("version")?,
        digest: row.text("digest")?,
        size: row.unsigned("size")?,
        info: row.json("info")?,
        capabilities: row.json("capabilities")?,
        builtin: row.flag("builtin")?,
        installed_at: row.text("installed_at")?,
        installed_by: row.int_opt("installed_by")?,
        replaced_at: row.text_opt("replaced_at")?,
    })
}

/// Run ids read as text.
pub(crate) fn run_ids(rows: &[String]) -> Result<Vec<RunId>, StoreError> {
    rows.iter()
        .map(|id| {
            id.parse()
                .map_err(|_| StoreError::Corrupt(format!("run id {id:?}")))
        })
        .collect()
}

/// What storing `piece` does given the digest stored under its
/// name@version (`stored`): the decision both backends make before writing.
pub(crate) fn piece_write(
    stored: Option<&str>,
    piece: &super::PieceRecord,
    replace: bool,
) -> Result<super::PieceWrite, StoreError> {
    use super::PieceWrite;
    match stored {
        Some(digest) if digest == piece.digest => Ok(PieceWrite::Unchanged),
        Some(digest) if !replace => Err(other_bytes(
            &piece.name,
            &piece.version,
            digest,
            &piece.digest,
        )),
        Some(_) => Ok(PieceWrite::Replaced),
        None => Ok(PieceWrite::Installed),
    }
}

/// The message of a piece write refused because `name@version` holds
/// other bytes.
pub(crate) fn other_bytes(name: &str, version: &str, stored: &str, given: &str) -> StoreError {
    StoreError::Conflict(format!(
        "piece {name}@{version} is installed with other bytes (sha256 {stored}, this is \
         {given}): publish a new version, or replace it explicitly (?replace=true, --replace)"
    ))
}

/// The message of a removal refused because workflows pin the piece.
pub(crate) fn pinned_by(name: &str, version: &str, workflows: &[String]) -> StoreError {
    StoreError::Conflict(format!(
        "piece {name}@{version} is pinned by workflow(s) {}: save them against another \
         version first, or force the removal (their runs would then fail with piece-missing)",
        workflows.join(", ")
    ))
}

pub(crate) fn run_from_row(row: &impl Columns) -> Result<RunRecord, StoreError> {
    let priority = row.int("priority")?;
    Ok(RunRecord {
        id: row.parsed("id")?,
        workflow_name: row.text("workflow_name")?,
        workflow_version: row.int("workflow_version")?,
        status: row.parsed("status")?,
        priority: Priority::from_i64(priority).ok_or_else(|| {
            StoreError::Corrupt(format!("column priority: unknown value {priority}"))
        })?,
        trigger: row.json("trigger")?,
        vars: row.json("vars")?,
        simulated: row.flag("simulated")?,
        created_at: row.text("created_at")?,
        started_at: row.text_opt("started_at")?,
        finished_at: row.text_opt("finished_at")?,
        total_time_ms: row.int_opt("total_time_ms")?,
        error: row.text_opt("error")?,
    })
}

pub(crate) fn step_from_row(row: &impl Columns) -> Result<StepRecord, StoreError> {
    Ok(StepRecord {
        step_id: row.text("step_id")?,
        status: row.parsed::<StepStatus>("status")?,
        input: row.json_opt("input")?,
        output: row.json_opt("output")?,
        error_class: row.text_opt("error_class")?,
        error_message: row.text_opt("error_message")?,
        logs: row.text("logs")?,
        attempts: row.unsigned("attempts")?,
        fuel_used: row.unsigned("fuel_used")?,
        duration_ms: row.unsigned("duration_ms")?,
        started_at: row.text_opt("started_at")?,
        finished_at: row.text_opt("finished_at")?,
        wake_at: row.text_opt("wake_at")?,
        tries: row.unsigned("tries")?,
    })
}

pub(crate) fn attempt_from_row(row: &impl Columns) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        attempt: row.unsigned("attempt")?,
        status: row.parsed::<StepStatus>("status")?,
        input: row.json_opt("input")?,
        output: row.json_opt("output")?,
        error_class: row.text_opt("error_class")?,
        error_message: row.text_opt("error_message")?,
        logs: row.text("logs")?,
        fuel_used: row.unsigned("fuel_used")?,
        duration_ms: row.unsigned("duration_ms")?,
        started_at: row.text("started_at")?,
        finished_at: row.text("finished_at")?,
    })
}

/// A run just claimed by `worker`: the run's columns plus `lease_epoch`
/// and `has_steps`.
pub(crate) fn claimed_from_row(row: &impl Columns, worker: &str) -> Result<ClaimedRun, StoreError> {
    let run = run_from_row(row)?;
    Ok(ClaimedRun {
        lease: Lease {
            run: run.id,
            owner: worker.to_owned(),
            epoch: row.int("lease_epoch")?,
        },
        has_steps: row.flag("has_steps")?,
        run,
    })
}

/// Why run `id` could not be claimed, from its `status`, `lease_owner`,
/// `lease_until` and `wake_at` columns: [`StoreError::NotClaimable`].
pub(crate) fn not_claimable(id: RunId, row: &impl Columns) -> Result<StoreError, StoreError> {
    let owner = row.text_opt("lease_owner")?;
    let until = row.text_opt("lease_until")?;
    let wake_at = row.text_opt("wake_at")?;
    let reason = match row.parsed::<RunStatus>("status")? {
        RunStatus::Running => format!(
            "it is running in another process ({}) whose lease is live until {}",
            owner.as_deref().unwrap_or("unknown"),
            until.as_deref().unwrap_or("?")
        ),
        RunStatus::Queued => format!(
            "it is parked until {} (a wait or retry delay); a server continues it then",
            wake_at.as_deref().unwrap_or("?")
        ),
        finished => format!("it is already {finished}"),
    };
    Ok(StoreError::NotClaimable { run: id, reason })
}

/// A count read as a signed integer (never negative in practice).
pub(crate) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Counters are u64 in Rust, 64-bit signed integers in SQL; no real run
/// gets near the limit.
pub(crate) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `(status, count)` rows as a map holding every run status (0 when absent).
pub(crate) fn counts_by_status(
    rows: impl Iterator<Item = Result<(String, i64), StoreError>>,
) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
    let mut counts: std::collections::BTreeMap<String, u64> = RunStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for row in rows {
        let (status, n) = row?;
        counts.insert(status, count(n));
    }
    Ok(counts)
}

/// `(priority, count)` rows as a map holding every priority name (0 when
/// absent); a priority number no [`Priority`] has is left out.
pub(crate) fn counts_by_priority(
    rows: impl Iterator<Item = Result<(i64, i64), StoreError>>,
) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
    let mut counts: std::collections::BTreeMap<String, u64> = Priority::ALL
        .iter()
        .map(|p| (p.as_str().to_owned(), 0))
        .collect();
    for row in rows {
        let (priority, n) = row?;
        if let Some(p) = Priority::from_i64(priority) {
            counts.insert(p.as_str().to_owned(), count(n));
        }
    }
    Ok(counts)
}
