//! SQL for [`QueueStore`]: the run queue (claims, leases, re-queues,
//! cancellation, retries, stats).
//!
//! The claim is one `UPDATE ... WHERE id IN (SELECT ... ORDER BY priority
//! DESC, created_at LIMIT n) ... RETURNING` under this process's write
//! turn: SQLite has one writer at a time, so two workers can never take the
//! same run (PostgreSQL's claim, `postgres/queue.rs`, locks the rows it
//! takes `FOR UPDATE SKIP LOCKED` instead).
//!
//! Every claim increments the run's `lease_epoch`; the worker's later
//! writes (park, release, lease extension, final status, step records)
//! are conditioned on `status = 'running' AND lease_epoch = ?` in the same
//! statement, so a worker that lost its lease cannot overwrite the next
//! one's work ([`StoreError::LeaseLost`]).

use std::collections::BTreeMap;
use std::time::SystemTime;

use sqlx::{QueryBuilder, Sqlite};

use super::SqliteStore;
use super::direct::rows;
use super::rows::{RUN_COLUMNS, get, parse_text, run_from_row, sql_error};
use super::runs::{insert_run, new_record, unknown_workflow};
use crate::store::decode::{
    Columns, claimed_from_row, count, counts_by_priority, counts_by_status, not_claimable, run_ids,
};
use crate::store::{
    ClaimedRun, Lease, NewRun, QueueStats, QueueStore, RunId, RunRecord, RunStatus, ServerLock,
    StoreError, elapsed_ms, now_rfc3339, rfc3339,
};

/// What a claim returns: the run, its new lease epoch, and whether it has
/// step records.
const CLAIMED_COLUMNS: &str = "id, workflow_name, workflow_version, status, priority, trigger, vars, \
    simulated, created_at, started_at, finished_at, total_time_ms, error, lease_epoch, \
    EXISTS (SELECT 1 FROM step_runs s WHERE s.run_id = runs.id) AS has_steps";

/// The condition "no live process holds this run" at the time bound as
/// parameter `now` (`?4`): queued and not parked for later, or running with
/// an expired lease or none.
fn claimable(now: &str) -> String {
    format!(
        "((status = 'queued' AND (wake_at IS NULL OR wake_at <= {now})) \
         OR (status = 'running' AND (lease_until IS NULL OR lease_until < {now})))"
    )
}

impl SqliteStore {
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
        let run = lease.run.to_string();
        let wake_at = wake_at.map(rfc3339);
        let done = self
            .direct(op, |conn| {
                conn.prepare_cached(
                    "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_until = NULL, \
                     wake_at = COALESCE(?2, wake_at) \
                     WHERE id = ?1 AND status = 'running' AND lease_epoch = ?3",
                )?
                .execute(rusqlite::params![run, wake_at, lease.epoch])
            })
            .await?;
        if done > 0 {
            return Ok(());
        }
        self.lease_lost(lease.run).await
    }
}

#[async_trait::async_trait]
impl QueueStore for SqliteStore {
    async fn create_runs(&self, runs: Vec<NewRun>) -> Result<Vec<RunRecord>, StoreError> {
        let records: Vec<RunRecord> = runs.into_iter().map(|run| new_record(run, false)).collect();
        let Some(first) = records.first() else {
            return Ok(records);
        };
        self.direct("create runs", |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for record in &records {
                insert_run(&tx, record, None)?;
            }
            tx.commit()
        })
        .await
        .map_err(unknown_workflow(first))?;
        Ok(records)
    }

    async fn claim_next_runs(
        &self,
        worker: &str,
        lease_until: SystemTime,
        limit: usize,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let now = now_rfc3339();
        // One statement (atomic on its own, one round trip) under this
        // process's write turn.
        let sql = format!(
            "UPDATE runs SET status = 'running', lease_owner = ?1, lease_until = ?2, \
             lease_epoch = lease_epoch + 1, started_at = COALESCE(started_at, ?3), wake_at = NULL \
             WHERE id IN (SELECT id FROM runs WHERE status = 'queued' AND (wake_at IS NULL OR wake_at <= ?3) \
                          ORDER BY priority DESC, created_at, id LIMIT ?4) \
             AND status = 'queued' \
             RETURNING {CLAIMED_COLUMNS}"
        );
        let until = rfc3339(lease_until);
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        // One statement (atomic on its own) under this process's write turn.
        let mut runs = self
            .direct("claim runs", |conn| {
                rows(
                    conn,
                    &sql,
                    rusqlite::params![worker, until, now, limit],
                    |row| claimed_from_row(row, worker),
                )
            })
            .await?
            .into_iter()
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
        let now = now_rfc3339();
        let sql = format!(
            "UPDATE runs SET status = 'running', lease_owner = ?2, lease_until = ?3, \
             lease_epoch = lease_epoch + 1, started_at = COALESCE(started_at, ?4), wake_at = NULL \
             WHERE id = ?1 AND {} \
             RETURNING {CLAIMED_COLUMNS}",
            claimable("?4")
        );
        let (id_text, until) = (id.to_string(), rfc3339(lease_until));
        let claimed = self
            .direct("claim run", |conn| {
                rows(
                    conn,
                    &sql,
                    rusqlite::params![id_text, worker, until, now],
                    |row| claimed_from_row(row, worker),
                )
            })
            .await?;
        if let Some(claimed) = claimed.into_iter().next() {
            return claimed;
        }
        // Say why not.
        let row =
            sqlx::query("SELECT status, lease_owner, lease_until, wake_at FROM runs WHERE id = ?1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_error("claim run"))?
                .ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        Err(not_claimable(id, &row)?)
    }

    async fn create_claimed_run(
        &self,
        run: NewRun,
        worker: &str,
        lease_until: SystemTime,
    ) -> Result<ClaimedRun, StoreError> {
        let run = new_record(run, true);
        let until = rfc3339(lease_until);
        self.direct("create run", |conn| {
            insert_run(conn, &run, Some((worker, &until)))
        })
        .await
        .map_err(unknown_workflow(&run))?;
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
            "SELECT {RUN_COLUMNS} FROM runs WHERE {} ORDER BY created_at, id",
            claimable("?1")
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
        let sql = format!(
            "UPDATE runs SET lease_until = ? WHERE status = 'running' AND (id, lease_epoch) IN (VALUES {}) \
             RETURNING id",
            vec!["(?, ?)"; leases.len()].join(", ")
        );
        let mut values = vec![rusqlite::types::Value::Text(rfc3339(lease_until))];
        for lease in leases {
            values.push(rusqlite::types::Value::Text(lease.run.to_string()));
            values.push(rusqlite::types::Value::Integer(lease.epoch));
        }
        let ids = self
            .direct("extend leases", |conn| {
                rows(
                    conn,
                    &sql,
                    rusqlite::params_from_iter(values.iter()),
                    |row| row.parsed::<RunId>("id"),
                )
            })
            .await?;
        ids.into_iter().collect()
    }

    async fn release_run(&self, lease: &Lease) -> Result<(), StoreError> {
        self.requeue_leased(lease, None, "release run").await
    }

    async fn park_run(&self, lease: &Lease, wake_at: SystemTime) -> Result<(), StoreError> {
        self.requeue_leased(lease, Some(wake_at), "park run").await
    }

    async fn requeue_expired_leases(&self, now: SystemTime) -> Result<u64, StoreError> {
        let now = rfc3339(now);
        let done = self
            .direct("requeue expired leases", |conn| {
                conn.prepare_cached(
                    "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_until = NULL \
                     WHERE status = 'running' AND (lease_until IS NULL OR lease_until < ?1)",
                )?
                .execute([&now])
            })
            .await?;
        Ok(done as u64)
    }

    async fn lock_for_server(&self) -> Result<ServerLock, StoreError> {
        self.take_server_lock().await
    }

    async fn server_holding_lock(&self) -> Result<Option<String>, StoreError> {
        self.probe_server_lock().await
    }

    async fn request_cancel(&self, id: RunId) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("request cancel").await?;
        let changed = sqlx::query(
            "UPDATE runs SET cancel_requested = 1 \
             WHERE id = ?1 AND status IN ('queued', 'running')",
        )
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(sql_error("request cancel"))?
        .rows_affected();
        tx.commit().await.map_err(sql_error("request cancel"))?;
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
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT id FROM runs WHERE cancel_requested = 1 AND id IN (",
        );
        let mut ids = query.separated(", ");
        for run in runs {
            ids.push_bind(run.to_string());
        }
        query.push(")");
        let rows: Vec<String> = query
            .build_query_scalar()
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error("read cancel requests"))?;
        run_ids(&rows)
    }

    async fn cancel_queued_run(&self, id: RunId) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("cancel run").await?;
        let row = sqlx::query("SELECT status, created_at FROM runs WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql_error("cancel run"))?
            .ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        let status: RunStatus = parse_text(&row, "status")?;
        if status != RunStatus::Queued {
            return Ok(false);
        }
        let created_at: String = get(&row, "created_at")?;
        let now = now_rfc3339();
        sqlx::query(
            "UPDATE runs SET status = 'cancelled', error = 'cancelled', finished_at = ?2, total_time_ms = ?3 \
             WHERE id = ?1",
        )
        .bind(id.to_string())
        .bind(&now)
        .bind(elapsed_ms(&created_at, &now))
        .execute(&mut *tx)
        .await
        .map_err(sql_error("cancel run"))?;
        // A parked run's waiting steps (and any left pending) end with it.
        sqlx::query(
            "UPDATE step_runs SET status = 'cancelled', wake_at = NULL, finished_at = ?2 \
             WHERE run_id = ?1 AND status IN ('waiting', 'pending', 'running')",
        )
        .bind(id.to_string())
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(sql_error("cancel run"))?;
        tx.commit().await.map_err(sql_error("cancel run"))?;
        Ok(true)
    }

    async fn requeue_for_retry(&self, id: RunId) -> Result<RunRecord, StoreError> {
        let mut tx = self.begin_write("retry run").await?;
        let row = sqlx::query("SELECT status FROM runs WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql_error("retry run"))?
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
             WHERE run_id = ?1 AND status IN ('failed', 'skipped', 'cancelled') \
             AND substr(step_id, 1, 1) <> '$'",
        )
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(sql_error("retry run"))?;
        let row = sqlx::query(&format!(
            "UPDATE runs SET status = 'queued', error = NULL, finished_at = NULL, total_time_ms = NULL, \
             lease_owner = NULL, lease_until = NULL, wake_at = NULL WHERE id = ?1 RETURNING {RUN_COLUMNS}"
        ))
        .bind(id.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_error("retry run"))?;
        let record = run_from_row(&row)?;
        tx.commit().await.map_err(sql_error("retry run"))?;
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
        let rows = sqlx::query(
            "SELECT priority, COUNT(*) AS n FROM runs WHERE status = 'queued' \
             AND (?1 OR simulated = 0) GROUP BY priority",
        )
        .bind(include_test)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("queue stats"))?;
        stats.queued_by_priority = counts_by_priority(
            rows.iter()
                .map(|row| Ok((get(row, "priority")?, get(row, "n")?))),
        )?;
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM runs WHERE (?1 OR simulated = 0) GROUP BY status",
        )
        .bind(include_test)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("queue stats"))?;
        stats.runs_by_status = counts_by_status(
            rows.iter()
                .map(|row| Ok((get(row, "status")?, get(row, "n")?))),
        )?;
        for status in RunStatus::ALL.iter().filter(|s| s.is_terminal()) {
            stats.finished_since.insert(status.as_str().to_owned(), 0);
        }
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM runs WHERE finished_at >= ?1 \
             AND (?2 OR simulated = 0) GROUP BY status",
        )
        .bind(rfc3339(since))
        .bind(include_test)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("queue stats"))?;
        for row in &rows {
            let status: String = get(row, "status")?;
            stats.finished_since.insert(status, count(get(row, "n")?));
        }
        let fuel_query = if include_test {
            "SELECT SUM(fuel_used) FROM step_runs"
        } else {
            "SELECT SUM(s.fuel_used) FROM step_runs s JOIN runs r ON r.id = s.run_id \
             WHERE r.simulated = 0"
        };
        let fuel: Option<i64> = sqlx::query_scalar(fuel_query)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error("queue stats"))?;
        stats.fuel_used_total = count(fuel.unwrap_or(0));
        Ok(stats)
    }
}

impl SqliteStore {
    /// [`QueueStore::prune_runs`]: steps and attempts go by `ON DELETE CASCADE`;
    /// freed pages are returned to the file system when the database was
    /// created with incremental auto-vacuum (every database this version
    /// creates), else reused by SQLite.
    pub(super) async fn prune(
        &self,
        before: SystemTime,
        statuses: &[RunStatus],
        limit: usize,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        let op = "prune runs";
        let terminal: Vec<&str> = statuses
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.as_str())
            .collect();
        if terminal.is_empty() {
            return Ok(0);
        }
        let marks = vec!["?"; terminal.len()].join(", ");
        let filter = format!("FROM runs WHERE finished_at < ? AND status IN ({marks})");
        if dry_run {
            let count = format!("SELECT COUNT(*) {filter}");
            let mut query = sqlx::query_scalar::<_, i64>(&count).bind(rfc3339(before));
            for status in &terminal {
                query = query.bind(*status);
            }
            let n = query.fetch_one(&self.pool).await.map_err(sql_error(op))?;
            return Ok(n as u64);
        }
        let sql = format!(
            "DELETE FROM runs WHERE id IN (SELECT id {filter} ORDER BY finished_at LIMIT {})",
            limit.max(1)
        );
        let mut tx = self.begin_write(op).await?;
        let mut query = sqlx::query(&sql).bind(rfc3339(before));
        for status in &terminal {
            query = query.bind(*status);
        }
        let deleted = query
            .execute(&mut *tx)
            .await
            .map_err(sql_error(op))?
            .rows_affected();
        tx.commit().await.map_err(sql_error(op))?;
        if deleted > 0 {
            // A no-op unless the file was created with incremental auto-vacuum.
            let _ = sqlx::query("PRAGMA incremental_vacuum")
                .execute(&self.pool)
                .await;
        }
        Ok(deleted)
    }
}
