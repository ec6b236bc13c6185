//! SQL for [`RunStore`]: runs, their status changes, and reading steps
//! and attempts (step writes are in `steps.rs`).

use sqlx::types::Json;

use super::PgStore;
use super::rows::{
    ATTEMPT_COLUMNS, RUN_COLUMNS, STEP_COLUMNS, attempt_from_row, get, is_foreign_key_violation,
    run_from_row, sql_error, step_from_row,
};
use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::store::decode::{Columns, count, counts_by_priority, counts_by_status};
use crate::store::{
    AttemptRecord, Lease, NewRun, QUEUE_CHANNEL, RUN_CHANNEL, RunFilter, RunId, RunRecord,
    RunStatus, RunStore, StepRecord, StoreError, now_rfc3339, rfc3339,
};

/// `total_time_ms` of a run ending at parameter `$4` (finished - started,
/// or finished - created when never started; never negative).
const TOTAL_TIME_MS: &str = "GREATEST(0, ROUND(EXTRACT(EPOCH FROM \
     ($4::timestamptz - COALESCE(started_at, created_at))) * 1000))::bigint";

#[async_trait::async_trait]
impl RunStore for PgStore {
    async fn create_run(&self, run: NewRun) -> Result<RunRecord, StoreError> {
        let record = insert_run(&self.pool, run, None).await?;
        self.announce(QUEUE_CHANNEL, "").await;
        Ok(record)
    }

    async fn get_run(&self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1::uuid"
        ))
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
        // Only the conditions asked for, so the planner can use the indexes.
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE TRUE"
        ));
        if let Some(workflow) = &filter.workflow {
            q.push(" AND workflow_name = ").push_bind(workflow.clone());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(since) = filter.since {
            q.push(" AND created_at >= ")
                .push_bind(rfc3339(since))
                .push("::timestamptz");
        }
        if let Some(until) = filter.until {
            q.push(" AND created_at < ")
                .push_bind(rfc3339(until))
                .push("::timestamptz");
        }
        if let Some(text) = &filter.error_contains {
            q.push(" AND strpos(lower(error), lower(")
                .push_bind(text.clone())
                .push(")) > 0");
        }
        if let Some(test) = filter.test {
            q.push(" AND simulated = ").push_bind(test);
        }
        if let Some(before) = filter.before {
            q.push(" AND (runs.created_at, runs.id) < (SELECT b.created_at, b.id FROM runs b WHERE b.id = ")
                .push_bind(before.to_string())
                .push("::uuid)");
        }
        q.push(" ORDER BY runs.created_at DESC, runs.id DESC LIMIT ")
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
        // One statement: the transition check and the times are computed
        // by the database (the row is locked while it is updated).
        let updated = sqlx::query(&format!(
            "UPDATE runs SET status = $2, error = $3, \
             started_at = CASE WHEN $2 = 'running' THEN COALESCE(started_at, $4::timestamptz) \
                          ELSE started_at END, \
             finished_at = CASE WHEN $5 THEN $4::timestamptz END, \
             total_time_ms = CASE WHEN $5 THEN {TOTAL_TIME_MS} END, \
             lease_owner = CASE WHEN $5 THEN NULL ELSE lease_owner END, \
             lease_until = CASE WHEN $5 THEN NULL ELSE lease_until END \
             WHERE id = $1::uuid AND status NOT IN ('succeeded', 'failed', 'cancelled')"
        ))
        .bind(id.to_string())
        .bind(status.as_str())
        .bind(error)
        .bind(now_rfc3339())
        .bind(status.is_terminal())
        .execute(&self.pool)
        .await
        .map_err(sql_error("set run status"))?
        .rows_affected();
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
            "SELECT {RUN_COLUMNS} FROM runs WHERE status IN ('queued', 'running') ORDER BY runs.created_at, runs.id"
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
        self.write_step(run, None, step, attempt).await
    }

    async fn record_leased_step(
        &self,
        lease: &Lease,
        step: &StepRecord,
        attempt: Option<&AttemptRecord>,
    ) -> Result<(), StoreError> {
        self.write_step(lease.run, Some(lease.epoch), step, attempt)
            .await
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
        let updated = sqlx::query(&format!(
            "UPDATE runs SET status = $2, error = $3, finished_at = $4::timestamptz, \
             total_time_ms = {TOTAL_TIME_MS}, lease_owner = NULL, lease_until = NULL \
             WHERE id = $1::uuid AND status = 'running' AND lease_epoch = $5"
        ))
        .bind(lease.run.to_string())
        .bind(status.as_str())
        .bind(error)
        .bind(now_rfc3339())
        .bind(lease.epoch)
        .execute(&self.pool)
        .await
        .map_err(sql_error("finish run"))?
        .rows_affected();
        if updated > 0 {
            self.announce(RUN_CHANNEL, &lease.run.to_string()).await;
            return Ok(());
        }
        self.lease_lost(lease.run).await
    }

    async fn steps(&self, run: RunId) -> Result<Vec<StepRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STEP_COLUMNS} FROM step_runs WHERE run_id = $1::uuid \
             ORDER BY step_runs.started_at IS NULL, step_runs.started_at, step_id COLLATE \"C\""
        ))
        .bind(run.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read steps"))?;
        rows.iter().map(step_from_row).collect()
    }

    async fn attempts(&self, run: RunId, step_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1::uuid AND step_id = $2 \
             ORDER BY attempt"
        ))
        .bind(run.to_string())
        .bind(step_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read attempts"))?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn run_attempts(&self, run: RunId) -> Result<Vec<(String, AttemptRecord)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT step_id, {ATTEMPT_COLUMNS} FROM attempts WHERE run_id = $1::uuid ORDER BY step_id, attempt"
        ))
        .bind(run.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read attempts"))?;
        rows.iter()
            .map(|row| Ok((row.text("step_id")?, attempt_from_row(row)?)))
            .collect()
    }

    async fn run_counts(
        &self,
        workflow: Option<&str>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        // Without a workflow the status index answers alone (no `OR NULL`
        // condition that would make the planner scan the table).
        let query = match workflow {
            Some(name) => sqlx::query(
                "SELECT status, COUNT(*) AS n FROM runs WHERE workflow_name = $1 GROUP BY status",
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
            "SELECT to_char(date_trunc('minute', finished_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD\"T\"HH24:MI') AS minute, \
             COUNT(*) AS n FROM runs WHERE finished_at >= $1::timestamptz GROUP BY minute ORDER BY minute",
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

/// Insert `run` through `executor` (the pool, or a transaction): queued,
/// or, given `(owner, until)`, running under that lease (epoch 1, started
/// now). [`StoreError::NotFound`] when the workflow version does not exist.
pub(super) async fn insert_run<'e, E>(
    executor: E,
    run: NewRun,
    lease: Option<(&str, std::time::SystemTime)>,
) -> Result<RunRecord, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
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
        "INSERT INTO runs (id, workflow_name, workflow_version, status, priority, trigger, vars, \
         simulated, created_at, started_at, lease_owner, lease_until, lease_epoch) \
         VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9::timestamptz, $10::timestamptz, $11, \
         $12::timestamptz, $13)",
    )
    .bind(record.id.to_string())
    .bind(&record.workflow_name)
    .bind(record.workflow_version)
    .bind(record.status.as_str())
    .bind(record.priority.as_i64())
    .bind(Json(&record.trigger))
    .bind(Json(&record.vars))
    .bind(record.simulated)
    .bind(&record.created_at)
    .bind(record.started_at.as_deref())
    .bind(lease.map(|(owner, _)| owner))
    .bind(lease.map(|(_, until)| rfc3339(until)))
    .bind(if lease.is_some() { 1_i64 } else { 0 })
    .execute(executor)
    .await
    .map_err(|e| {
        if is_foreign_key_violation(&e) {
            StoreError::NotFound(format!(
                "workflow {:?} version {}",
                record.workflow_name, record.workflow_version
            ))
        } else {
            sql_error("create run")(e)
        }
    })?;
    Ok(record)
}
