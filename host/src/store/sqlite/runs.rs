//! SQL for [`RunStore`]: runs, their status changes, and reading steps
//! and attempts (step writes go through the group commit in `steps.rs`).

use super::SqliteStore;
use super::direct::Param;
use super::rows::{
    ATTEMPT_COLUMNS, RUN_COLUMNS, STEP_COLUMNS, attempt_from_row, get, run_from_row, sql_error,
    step_from_row,
};
use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::store::decode::{Columns, count, counts_by_priority, counts_by_status};
use crate::store::{
    AttemptRecord, Lease, NewRun, RunFilter, RunId, RunRecord, RunStatus, RunStore, StepRecord,
    StoreError, now_rfc3339, rfc3339,
};

#[async_trait::async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, run: NewRun) -> Result<RunRecord, StoreError> {
        // One statement is atomic on its own: no BEGIN/COMMIT.
        let record = new_record(run, false);
        self.direct("create run", |conn| insert_run(conn, &record, None))
            .await
            .map_err(unknown_workflow(&record))?;
        Ok(record)
    }

    async fn get_run(&self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
        let runs = self
            .read_rows(
                "get run",
                &sql,
                &[Param::Text(id.to_string())],
                |row| run_from_row(row),
                run_from_row,
            )
            .await?;
        Ok(runs.into_iter().next())
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let limit = if filter.limit == 0 {
            RunFilter::DEFAULT_LIMIT
        } else {
            filter.limit
        };
        // Only the conditions asked for, so the planner can use the
        // indexes (created_at, workflow_name/created_at, status/...).
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1"
        ));
        if let Some(workflow) = &filter.workflow {
            q.push(" AND workflow_name = ").push_bind(workflow.clone());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(since) = filter.since {
            q.push(" AND created_at >= ").push_bind(rfc3339(since));
        }
        if let Some(until) = filter.until {
            q.push(" AND created_at < ").push_bind(rfc3339(until));
        }
        if let Some(text) = &filter.error_contains {
            q.push(" AND instr(lower(error), lower(")
                .push_bind(text.clone())
                .push(")) > 0");
        }
        if let Some(test) = filter.test {
            q.push(" AND simulated = ").push_bind(test);
        }
        if let Some(before) = filter.before {
            let created: Option<String> =
                sqlx::query_scalar("SELECT created_at FROM runs WHERE id = ?1")
                    .bind(before.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(sql_error("list runs"))?;
            let Some(created) = created else {
                return Ok(Vec::new());
            };
            q.push(" AND created_at <= ").push_bind(created.clone());
            q.push(" AND (created_at < ").push_bind(created);
            q.push(" OR id < ").push_bind(before.to_string()).push(")");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit))
            .push(" OFFSET ")
            .push_bind(i64::from(filter.offset));
        let rows = q
            .build()
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
        let id_text = id.to_string();
        let updated = self
            .direct("set run status", |conn| {
                conn.prepare_cached(
                    "UPDATE runs SET status = ?2, error = ?3, \
                     started_at = CASE WHEN ?2 = 'running' THEN COALESCE(started_at, ?4) ELSE started_at END, \
                     finished_at = CASE WHEN ?5 THEN ?4 END, \
                     total_time_ms = CASE WHEN ?5 THEN MAX(0, CAST(ROUND( \
                         (julianday(?4) - julianday(COALESCE(started_at, created_at))) * 86400000.0) AS INTEGER)) END, \
                     lease_owner = CASE WHEN ?5 THEN NULL ELSE lease_owner END, \
                     lease_until = CASE WHEN ?5 THEN NULL ELSE lease_until END \
                     WHERE id = ?1 AND status NOT IN ('succeeded', 'failed', 'cancelled')",
                )?
                .execute(rusqlite::params![
                    id_text,
                    status.as_str(),
                    error,
                    now,
                    status.is_terminal()
                ])
            })
            .await?;
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
        let updated = self
            .steps
            .finish(lease, status, error, now_rfc3339())
            .await?;
        if updated {
            return Ok(());
        }
        self.lease_lost(lease.run).await
    }

    async fn steps(&self, run: RunId) -> Result<Vec<StepRecord>, StoreError> {
        let sql = format!(
            "SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = ?1 \
             ORDER BY started_at IS NULL, started_at, step_id"
        );
        self.read_rows(
            "read steps",
            &sql,
            &[Param::Text(run.to_string())],
            |row| step_from_row(row),
            step_from_row,
        )
        .await
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

    async fn run_attempts(&self, run: RunId) -> Result<Vec<(String, AttemptRecord)>, StoreError> {
        let sql = format!(
            "SELECT step_id, {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = ?1 ORDER BY step_id, attempt"
        );
        self.read_rows(
            "read attempts",
            &sql,
            &[Param::Text(run.to_string())],
            |row| Ok((row.text("step_id")?, attempt_from_row(row)?)),
            |row| Ok((row.text("step_id")?, attempt_from_row(row)?)),
        )
        .await
    }

    async fn run_counts(
        &self,
        workflow: Option<&str>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        // Without a workflow the status index answers alone (no `OR NULL`
        // condition that would make the planner scan the table).
        let query = match workflow {
            Some(name) => sqlx::query(
                "SELECT status, COUNT(*) AS n FROM runs WHERE workflow_name = ?1 GROUP BY status",
            )
            .bind(name),
            None => sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status"),
        };
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error("count runs"))?;
        counts_by_status(
            rows.iter()
                .map(|row| Ok((get(row, "status")?, get(row, "n")?))),
        )
    }

    async fn finished_per_minute(
        &self,
        since: SystemTime,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT substr(finished_at, 1, 16) AS minute, COUNT(*) AS n FROM runs \
             WHERE finished_at >= ?1 GROUP BY minute ORDER BY minute",
        )
        .bind(rfc3339(since))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("count finished runs"))?;
        rows.iter()
            .map(|row| Ok((get(row, "minute")?, count(get(row, "n")?))))
            .collect()
    }

    async fn running_by_owner(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT COALESCE(lease_owner, '') AS owner, COUNT(*) AS n FROM runs \
             WHERE status = 'running' GROUP BY owner ORDER BY owner",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("count running runs"))?;
        rows.iter()
            .map(|row| Ok((get(row, "owner")?, count(get(row, "n")?))))
            .collect()
    }

    async fn queued_by_priority(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows = sqlx::query(
            "SELECT priority, COUNT(*) AS n FROM runs WHERE status = 'queued' GROUP BY priority",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("count queued runs"))?;
        counts_by_priority(
            rows.iter()
                .map(|row| Ok((get(row, "priority")?, get(row, "n")?))),
        )
    }
}

/// The record of `run` as created now: queued, or, given a lease,
/// running under it (epoch 1, started now).
pub(super) fn new_record(run: NewRun, leased: bool) -> RunRecord {
    let now = now_rfc3339();
    RunRecord {
        id: uuid::Uuid::now_v7(),
        workflow_name: run.workflow_name,
        workflow_version: run.workflow_version,
        status: if leased {
            RunStatus::Running
        } else {
            RunStatus::Queued
        },
        priority: run.priority,
        trigger: run.trigger,
        vars: run.vars,
        simulated: run.simulated,
        started_at: leased.then(|| now.clone()),
        created_at: now,
        finished_at: None,
        total_time_ms: None,
        error: None,
    }
}

/// Insert `record` (from [`new_record`]); `lease` is `(owner, until)` of
/// a run created claimed.
pub(super) fn insert_run(
    conn: &rusqlite::Connection,
    record: &RunRecord,
    lease: Option<(&str, &str)>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO runs (id, workflow_name, workflow_version, status, priority, trigger, vars, simulated, \
         created_at, started_at, lease_owner, lease_until, lease_epoch) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(rusqlite::params![
        record.id.to_string(),
        record.workflow_name,
        record.workflow_version,
        record.status.as_str(),
        record.priority.as_i64(),
        record.trigger.to_string(),
        record.vars.to_string(),
        record.simulated,
        record.created_at,
        record.started_at,
        lease.map(|(owner, _)| owner),
        lease.map(|(_, until)| until),
        if lease.is_some() { 1_i64 } else { 0 },
    ])?;
    Ok(())
}

/// A failed [`insert_run`] of `record`: the foreign key names a workflow
/// version that does not exist.
pub(super) fn unknown_workflow(record: &RunRecord) -> impl Fn(StoreError) -> StoreError + '_ {
    move |e| match e {
        StoreError::Constraint(_) => StoreError::NotFound(format!(
            "workflow {:?} version {}",
            record.workflow_name, record.workflow_version
        )),
        other => other,
    }
}
