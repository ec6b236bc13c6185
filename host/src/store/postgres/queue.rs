//! SQL for [`QueueStore`]: the run queue (claims, leases, re-queues,
//! cancellation, retries, stats).
//!
//! A claim is one statement: a CTE picks up to `n` queued runs in queue
//! order (priority, then age) and locks them `FOR NO KEY UPDATE SKIP
//! LOCKED`, the `UPDATE` takes them. Concurrent claimers (other workers,
//! other machines) skip the rows another one is taking instead of waiting
//! for it, and never take the same run twice. (`NO KEY`: the lock an
//! `UPDATE` of non-key columns takes anyway; unlike plain `FOR UPDATE` it
//! does not conflict with the `KEY SHARE` locks of foreign-key checks, so
//! a step being inserted for a run neither hides it from claimers nor
//! deadlocks with a cancel. Row locks taken to read-then-write here are
//! the same kind.)
//!
//! Every claim increments the run's `lease_epoch`; the worker's later
//! writes (park, release, lease extension, final status, step records)
//! are conditioned on `status = 'running' AND lease_epoch = $n` in the same
//! statement or transaction, so a worker that lost its lease cannot
//! overwrite the next one's work ([`StoreError::LeaseLost`]).

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::PgStore;
use super::rows::{RUN_COLUMNS, get, parse_text, run_from_row, sql_error};
use super::runs::insert_run;
use crate::store::decode::{
    claimed_from_row, count, counts_by_priority, counts_by_status, not_claimable, run_ids,
};
use crate::store::{
    CANCEL_CHANNEL, ClaimedRun, Lease, NewRun, QUEUE_CHANNEL, QueueStats, QueueStore, RUN_CHANNEL,
    RunId, RunRecord, RunStatus, ServerLock, Signal, StoreError, elapsed_ms, now_rfc3339, rfc3339,
};

/// What a claim returns besides [`RUN_COLUMNS`]: the new lease epoch, and
/// whether the run has step records.
const CLAIMED_EXTRA: &str = "runs.lease_epoch, \
    EXISTS (SELECT 1 FROM step_runs s WHERE s.run_id = runs.id) AS has_steps";

/// The condition "no live process holds this run" at the time bound as
/// parameter `now` (e.g. `$4`): queued and not parked for later, or running
/// with an expired lease or none.
fn claimable(now: &str) -> String {
    format!(
        "((status = 'queued' AND (wake_at IS NULL OR wake_at <= {now}::timestamptz)) \
         OR (status = 'running' AND (lease_until IS NULL OR lease_until < {now}::timestamptz)))"
    )
}

impl PgStore {
    /// Put the run held under `lease` back in the queue (its lease
    /// cleared), parked until `wake_at` when given (otherwise its `wake_at`
    /// is left as it is): one statement, fenced by the lease epoch. `op`
    /// names the operation in errors.
    async fn requeue_leased(
        &self,
        lease: &Lease,
        wake_at: Option<SystemTime>,
        op: &'static str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_until = NULL, \
             wake_at = COALESCE($2::timestamptz, wake_at) \
             WHERE id = $1::uuid AND status = 'running' AND lease_epoch = $3",
        )
        .bind(lease.run.to_string())
        .bind(wake_at.map(rfc3339))
        .bind(lease.epoch)
        .execute(&self.pool)
        .await
        .map_err(sql_error(op))?;
        if done.rows_affected() > 0 {
            if wake_at.is_none() {
                self.announce(QUEUE_CHANNEL, "").await;
            }
            return Ok(());
        }
        self.lease_lost(lease.run).await
    }

    /// Why `id` could not be claimed ([`StoreError::NotClaimable`]), or
    /// [`StoreError::NotFound`].
    async fn not_claimable(&self, id: RunId) -> StoreError {
        let row = sqlx::query(concat!(
            "SELECT status, lease_owner, ",
            ts!("", "lease_until"),
            ", ",
            ts!("", "wake_at"),
            " FROM runs WHERE id = $1::uuid"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await;
        let row = match row {
            Ok(Some(row)) => row,
            Ok(None) => return StoreError::NotFound(format!("run {id}")),
            Err(e) => return sql_error("claim run")(e),
        };
        not_claimable(id, &row).unwrap_or_else(|e| e)
    }
}

#[async_trait::async_trait]
impl QueueStore for PgStore {
    async fn create_runs(&self, runs: Vec<NewRun>) -> Result<Vec<RunRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(sql_error("create runs"))?;
        let mut records = Vec::with_capacity(runs.len());
        for run in runs {
            records.push(insert_run(&mut *tx, run, None).await?);
        }
        tx.commit().await.map_err(sql_error("create runs"))?;
        if !records.is_empty() {
            self.announce(QUEUE_CHANNEL, "").await;
        }
        Ok(records)
    }

    async fn claim_next_runs(
        &self,
        worker: &str,
        lease_until: SystemTime,
        limit: usize,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let rows = sqlx::query(&format!(
            "WITH picked AS ( \
                 SELECT id FROM runs \
                 WHERE status = 'queued' AND (wake_at IS NULL OR wake_at <= $3::timestamptz) \
                 ORDER BY priority DESC, created_at, id LIMIT $4 \
                 FOR NO KEY UPDATE SKIP LOCKED) \
             UPDATE runs SET status = 'running', lease_owner = $1, lease_until = $2::timestamptz, \
             lease_epoch = runs.lease_epoch + 1, \
             started_at = COALESCE(runs.started_at, $3::timestamptz), wake_at = NULL \
             FROM picked WHERE runs.id = picked.id AND runs.status = 'queued' \
             RETURNING {RUN_COLUMNS}, {CLAIMED_EXTRA}"
        ))
        .bind(worker)
        .bind(rfc3339(lease_until))
        .bind(now_rfc3339())
        .bind(i64::try_from(limit.max(1)).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("claim runs"))?;
        let mut runs = rows
            .iter()
            .map(|row| claimed_from_row(row, worker))
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING has no order: queue order again.
        runs.sort_by(|a, b| {
            let (a, b) = (&a.run, &b.run);
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.created_at.cmp(&b.created_at))
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(runs)
    }

    async fn claim_run(
        &self,
        id: RunId,
        worker: &str,
        lease_until: SystemTime,
    ) -> Result<ClaimedRun, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE runs SET status = 'running', lease_owner = $2, lease_until = $3::timestamptz, \
             lease_epoch = lease_epoch + 1, started_at = COALESCE(started_at, $4::timestamptz), \
             wake_at = NULL \
             WHERE id = $1::uuid AND {} \
             RETURNING {RUN_COLUMNS}, {CLAIMED_EXTRA}",
            claimable("$4")
        ))
        .bind(id.to_string())
        .bind(worker)
        .bind(rfc3339(lease_until))
        .bind(now_rfc3339())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error("claim run"))?;
        match row {
            Some(row) => claimed_from_row(&row, worker),
            None => Err(self.not_claimable(id).await),
        }
    }

    async fn create_claimed_run(
        &self,
        run: NewRun,
        worker: &str,
        lease_until: SystemTime,
    ) -> Result<ClaimedRun, StoreError> {
        let run = insert_run(&self.pool, run, Some((worker, lease_until))).await?;
        Ok(ClaimedRun {
            lease: Lease {
                run: run.id,
                owner: worker.to_owned(),
                epoch: 1,
            },
            run,
            has_steps: false,
        })
    }

    async fn resumable_runs(&self, now: SystemTime) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE {} ORDER BY runs.created_at, runs.id",
            claimable("$1")
        ))
        .bind(rfc3339(now))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("resumable runs"))?;
        rows.iter().map(run_from_row).collect()
    }

    async fn extend_leases(
        &self,
        leases: &[Lease],
        lease_until: SystemTime,
    ) -> Result<Vec<RunId>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = leases.iter().map(|l| l.run.to_string()).collect();
        let epochs: Vec<i64> = leases.iter().map(|l| l.epoch).collect();
        let rows = sqlx::query(
            "UPDATE runs SET lease_until = $1::timestamptz \
             FROM UNNEST($2::text[], $3::bigint[]) AS held (id, epoch) \
             WHERE runs.id = held.id::uuid AND runs.lease_epoch = held.epoch \
             AND runs.status = 'running' \
             RETURNING runs.id::text AS id",
        )
        .bind(rfc3339(lease_until))
        .bind(ids)
        .bind(epochs)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("extend leases"))?;
        rows.iter().map(|row| parse_text(row, "id")).collect()
    }

    async fn release_run(&self, lease: &Lease) -> Result<(), StoreError> {
        self.requeue_leased(lease, None, "release run").await
    }

    async fn park_run(&self, lease: &Lease, wake_at: SystemTime) -> Result<(), StoreError> {
        self.requeue_leased(lease, Some(wake_at), "park run").await
    }

    async fn requeue_expired_leases(&self, now: SystemTime) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_until = NULL \
             WHERE status = 'running' AND (lease_until IS NULL OR lease_until < $1::timestamptz)",
        )
        .bind(rfc3339(now))
        .execute(&self.pool)
        .await
        .map_err(sql_error("requeue expired leases"))?;
        if done.rows_affected() > 0 {
            self.announce(QUEUE_CHANNEL, "").await;
        }
        Ok(done.rows_affected())
    }

    async fn lock_for_server(&self) -> Result<ServerLock, StoreError> {
        self.take_server_lock().await
    }

    async fn server_holding_lock(&self) -> Result<Option<String>, StoreError> {
        self.probe_server_lock().await
    }

    async fn request_cancel(&self, id: RunId) -> Result<bool, StoreError> {
        let op = "request cancel";
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        let changed = sqlx::query(
            "UPDATE runs SET cancel_requested = TRUE \
             WHERE id = $1::uuid AND status IN ('queued', 'running')",
        )
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?
        .rows_affected();
        tx.commit().await.map_err(sql_error(op))?;
        if changed > 0 {
            self.announce(CANCEL_CHANNEL, &id.to_string()).await;
        }
        Ok(changed > 0)
    }

    async fn prune_runs(
        &self,
        before: SystemTime,
        statuses: &[RunStatus],
        limit: usize,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        self.prune(before, statuses, limit, dry_run).await
    }

    async fn cancel_requested(&self, runs: &[RunId]) -> Result<Vec<RunId>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = runs.iter().map(RunId::to_string).collect();
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT id::text FROM runs WHERE cancel_requested AND id = ANY($1::uuid[])",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("read cancel requests"))?;
        run_ids(&rows)
    }

    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        Some(self.subscribe())
    }

    async fn cancel_queued_run(&self, id: RunId) -> Result<bool, StoreError> {
        let op = "cancel run";
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        // The row lock keeps claims (which skip locked rows) away.
        let row = sqlx::query(concat!(
            "SELECT status, ",
            ts!("", "created_at"),
            " FROM runs WHERE id = $1::uuid FOR NO KEY UPDATE"
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_error(op))?
        .ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        let status: RunStatus = parse_text(&row, "status")?;
        if status != RunStatus::Queued {
            return Ok(false);
        }
        let created_at: String = get(&row, "created_at")?;
        let now = now_rfc3339();
        sqlx::query(
            "UPDATE runs SET status = 'cancelled', error = 'cancelled', \
             finished_at = $2::timestamptz, total_time_ms = $3 WHERE id = $1::uuid",
        )
        .bind(id.to_string())
        .bind(&now)
        .bind(elapsed_ms(&created_at, &now))
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        // A parked run's waiting steps (and any left pending) end with it.
        sqlx::query(
            "UPDATE step_runs SET status = 'cancelled', wake_at = NULL, finished_at = $2::timestamptz \
             WHERE run_id = $1::uuid AND status IN ('waiting', 'pending', 'running')",
        )
        .bind(id.to_string())
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        tx.commit().await.map_err(sql_error(op))?;
        self.announce(RUN_CHANNEL, &id.to_string()).await;
        Ok(true)
    }

    async fn requeue_for_retry(&self, id: RunId) -> Result<RunRecord, StoreError> {
        let op = "retry run";
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        let row = sqlx::query("SELECT status FROM runs WHERE id = $1::uuid FOR NO KEY UPDATE")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql_error(op))?
            .ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        let from: RunStatus = parse_text(&row, "status")?;
        if !matches!(from, RunStatus::Failed | RunStatus::Cancelled) {
            return Err(StoreError::InvalidTransition {
                run: id,
                from,
                to: RunStatus::Queued,
            });
        }
        // Handler records (`$on_failure`) are history, not steps to re-run.
        sqlx::query(
            "UPDATE step_runs SET status = 'pending', finished_at = NULL, wake_at = NULL, tries = 0 \
             WHERE run_id = $1::uuid AND status IN ('failed', 'skipped', 'cancelled') \
             AND substr(step_id, 1, 1) <> '$'",
        )
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        let row = sqlx::query(&format!(
            "UPDATE runs SET status = 'queued', error = NULL, finished_at = NULL, \
             total_time_ms = NULL, lease_owner = NULL, lease_until = NULL, wake_at = NULL \
             WHERE id = $1::uuid RETURNING {RUN_COLUMNS}"
        ))
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_error(op))?;
        let record = run_from_row(&row)?;
        tx.commit().await.map_err(sql_error(op))?;
        self.announce(QUEUE_CHANNEL, "").await;
        Ok(record)
    }

    async fn queue_stats(
        &self,
        since: SystemTime,
        include_test: bool,
    ) -> Result<QueueStats, StoreError> {
        let mut stats = QueueStats {
            queued_by_priority: BTreeMap::new(),
            runs_by_status: BTreeMap::new(),
            finished_since: BTreeMap::new(),
            fuel_used_total: 0,
        };
        let op = "queue stats";
        let rows = sqlx::query(
            "SELECT priority, COUNT(*) AS n FROM runs WHERE status = 'queued' \
             AND ($1::boolean OR NOT simulated) GROUP BY priority",
        )
        .bind(include_test)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error(op))?;
        stats.queued_by_priority = counts_by_priority(
            rows.iter()
                .map(|row| Ok((get(row, "priority")?, get(row, "n")?))),
        )?;
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM runs WHERE ($1::boolean OR NOT simulated) \
             GROUP BY status",
        )
        .bind(include_test)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error(op))?;
        stats.runs_by_status = counts_by_status(
            rows.iter()
                .map(|row| Ok((get(row, "status")?, get(row, "n")?))),
        )?;
        for status in RunStatus::ALL.iter().filter(|s| s.is_terminal()) {
            stats.finished_since.insert(status.as_str().to_owned(), 0);
        }
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM runs WHERE finished_at >= $1::timestamptz \
             AND ($2::boolean OR NOT simulated) GROUP BY status",
        )
        .bind(rfc3339(since))
        .bind(include_test)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error(op))?;
        for row in &rows {
            let status: String = get(row, "status")?;
            stats.finished_since.insert(status, count(get(row, "n")?));
        }
        let fuel_query = if include_test {
            "SELECT SUM(fuel_used)::bigint FROM step_runs"
        } else {
            "SELECT SUM(s.fuel_used)::bigint FROM step_runs s JOIN runs r ON r.id = s.run_id \
             WHERE NOT r.simulated"
        };
        let fuel: Option<i64> = sqlx::query_scalar(fuel_query)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error(op))?;
        stats.fuel_used_total = count(fuel.unwrap_or(0));
        Ok(stats)
    }
}

impl PgStore {
    /// [`QueueStore::prune_runs`]: steps and attempts go by `ON DELETE CASCADE`.
    pub(super) async fn prune(
        &self,
        before: SystemTime,
        statuses: &[RunStatus],
        limit: usize,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        let op = "prune runs";
        let terminal: Vec<String> = statuses
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.as_str().to_owned())
            .collect();
        if terminal.is_empty() {
            return Ok(0);
        }
        const FILTER: &str = "FROM runs WHERE finished_at < $1::timestamptz AND status = ANY($2)";
        if dry_run {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) {FILTER}"))
                .bind(rfc3339(before))
                .bind(&terminal)
                .fetch_one(&self.pool)
                .await
                .map_err(sql_error(op))?;
            return Ok(n as u64);
        }
        let deleted = sqlx::query(&format!(
            "DELETE FROM runs WHERE id IN (SELECT id {FILTER} ORDER BY finished_at LIMIT $3 \
             FOR UPDATE SKIP LOCKED)"
        ))
        .bind(rfc3339(before))
        .bind(&terminal)
        .bind(i64::try_from(limit.max(1)).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map_err(sql_error(op))?
        .rows_affected();
        Ok(deleted)
    }
}
