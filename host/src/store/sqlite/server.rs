//! SQLite SQL for the server: the run queue (claims, leases, re-queues),
//! API tokens, webhook deliveries and cron schedules.
//!
//! The claim is one `UPDATE ... WHERE id = (SELECT ... ORDER BY priority
//! DESC, created_at LIMIT 1) ... RETURNING` inside a `BEGIN IMMEDIATE`
//! transaction: SQLite has one writer at a time, so two workers can never
//! take the same run (PostgreSQL will add `FOR UPDATE SKIP LOCKED`).
//!
//! Every claim increments the run's `lease_epoch`; the worker's later
//! writes (park, release, lease extension, final status, step records)
//! are conditioned on `status = 'running' AND lease_epoch = ?` in the same
//! statement, so a worker that lost its lease cannot overwrite the next
//! one's work ([`StoreError::LeaseLost`]).
//!
//! One server per file: [`QueueStore::lock_for_server`] takes an exclusive
//! OS advisory lock (`flock`, std's `File::try_lock`) on `<database
//! file>.lock`; it goes with the process however that ends.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite};

use super::{
    RUN_COLUMNS, SqliteStore, WriteConn, get, insert_run, parse_text, run_from_row, sql_error,
};
use crate::store::{
    ApiToken, ClaimedRun, Lease, NewRun, Priority, QueueStats, QueueStore, RunId, RunRecord,
    RunStatus, ScheduleRecord, ScheduleStore, ServerLock, StoreError, TokenStore, WebhookStore,
    elapsed_ms, now_rfc3339, rfc3339,
};

const TOKEN_COLUMNS: &str = "id, name, created_at, revoked_at";

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

fn claimed_from_row(row: &SqliteRow, worker: &str) -> Result<ClaimedRun, StoreError> {
    let run = run_from_row(row)?;
    Ok(ClaimedRun {
        lease: Lease {
            run: run.id,
            owner: worker.to_owned(),
            epoch: get(row, "lease_epoch")?,
        },
        has_steps: get::<bool>(row, "has_steps")?,
        run,
    })
}

/// Take the exclusive lock on `lock_path` for a server on `db` (a few tries:
/// a CLI probing the lock holds a shared lock for an instant) and write our
/// pid into it for the message a second server gets.
fn lock_file(lock_path: &Path, db: &Path) -> Result<ServerLock, StoreError> {
    let mut file = open_lock_file(lock_path)?;
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if tries < 10 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(format!(
                    "another OmniFlow server ({}) is running on the database {}: stop it first, \
                     or start this one with another --db (lock file {})",
                    holder(lock_path),
                    db.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "locking {}: {e}",
                    lock_path.display()
                )));
            }
        }
    }
    // Best effort: the pid is only for the message above.
    let _ = file.set_len(0);
    let _ = write!(file, "pid {}", std::process::id());
    let _ = file.flush();
    Ok(ServerLock::file(file))
}

/// Who holds the lock at `lock_path`, if anyone (a shared lock taken and
/// dropped at once).
fn probe_lock(lock_path: &Path) -> Result<Option<String>, StoreError> {
    let file = open_lock_file(lock_path)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(None),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Some(holder(lock_path))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
            "probing {}: {e}",
            lock_path.display()
        ))),
    }
}

fn open_lock_file(lock_path: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(lock_path)
        .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", lock_path.display())))
}

/// The holder as its lock file names it (`pid 1234`).
fn holder(lock_path: &Path) -> String {
    match std::fs::read_to_string(lock_path) {
        Ok(text) if !text.trim().is_empty() => text.trim().chars().take(40).collect(),
        _ => "pid unknown".to_owned(),
    }
}

impl SqliteStore {
    /// `<database file>.lock`, for a file database.
    fn lock_path(&self) -> Option<PathBuf> {
        self.file.as_ref().map(|file| {
            let mut name = file.as_os_str().to_owned();
            name.push(".lock");
            PathBuf::from(name)
        })
    }
}

fn token_from_row(row: &SqliteRow) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: get(row, "id")?,
        name: get(row, "name")?,
        created_at: get(row, "created_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[async_trait::async_trait]
impl QueueStore for SqliteStore {
    async fn create_runs(&self, runs: Vec<NewRun>) -> Result<Vec<RunRecord>, StoreError> {
        let mut tx = self.begin_write("create runs").await?;
        let mut records = Vec::with_capacity(runs.len());
        for run in runs {
            records.push(insert_run(&mut tx, run, None).await?);
        }
        tx.commit().await.map_err(sql_error("create runs"))?;
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
        let rows = {
            let mut conn = WriteConn::take(&self.write_gate, &self.pool).await?;
            sqlx::query(&format!(
                "UPDATE runs SET status = 'running', lease_owner = ?1, lease_until = ?2, \
                 lease_epoch = lease_epoch + 1, started_at = COALESCE(started_at, ?3), wake_at = NULL \
                 WHERE id IN (SELECT id FROM runs WHERE status = 'queued' AND (wake_at IS NULL OR wake_at <= ?3) \
                              ORDER BY priority DESC, created_at, id LIMIT ?4) \
                 AND status = 'queued' \
                 RETURNING {CLAIMED_COLUMNS}"
            ))
            .bind(worker)
            .bind(rfc3339(lease_until))
            .bind(&now)
            .bind(i64::try_from(limit.max(1)).unwrap_or(i64::MAX))
            .fetch_all(&mut *conn)
            .await
            .map_err(sql_error("claim runs"))?
        };
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
        let now = now_rfc3339();
        let row = {
            let mut conn = WriteConn::take(&self.write_gate, &self.pool).await?;
            sqlx::query(&format!(
                "UPDATE runs SET status = 'running', lease_owner = ?2, lease_until = ?3, \
                 lease_epoch = lease_epoch + 1, started_at = COALESCE(started_at, ?4), wake_at = NULL \
                 WHERE id = ?1 AND {} \
                 RETURNING {CLAIMED_COLUMNS}",
                claimable("?4")
            ))
            .bind(id.to_string())
            .bind(worker)
            .bind(rfc3339(lease_until))
            .bind(&now)
            .fetch_optional(&mut *conn)
            .await
            .map_err(sql_error("claim run"))?
        };
        if let Some(row) = row {
            return claimed_from_row(&row, worker);
        }
        // Say why not.
        let row =
            sqlx::query("SELECT status, lease_owner, lease_until, wake_at FROM runs WHERE id = ?1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_error("claim run"))?
                .ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        let status: RunStatus = parse_text(&row, "status")?;
        let owner: Option<String> = get(&row, "lease_owner")?;
        let until: Option<String> = get(&row, "lease_until")?;
        let wake_at: Option<String> = get(&row, "wake_at")?;
        let reason = match status {
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
        Err(StoreError::NotClaimable { run: id, reason })
    }

    async fn create_claimed_run(
        &self,
        run: NewRun,
        worker: &str,
        lease_until: SystemTime,
    ) -> Result<ClaimedRun, StoreError> {
        let mut conn = WriteConn::take(&self.write_gate, &self.pool).await?;
        let run = insert_run(&mut conn, run, Some((worker, lease_until))).await?;
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
        let mut query: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("UPDATE runs SET lease_until = ");
        query.push_bind(rfc3339(lease_until));
        query.push(" WHERE status = 'running' AND (id, lease_epoch) IN (");
        query.push_values(leases, |mut row, lease| {
            row.push_bind(lease.run.to_string()).push_bind(lease.epoch);
        });
        query.push(") RETURNING id");
        let rows = {
            let mut conn = WriteConn::take(&self.write_gate, &self.pool).await?;
            query
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(sql_error("extend leases"))?
        };
        rows.iter().map(|row| parse_text(row, "id")).collect()
    }

    async fn release_run(&self, lease: &Lease) -> Result<(), StoreError> {
        let done = {
            let mut conn = WriteConn::take(&self.write_gate, &self.pool).await?;
            sqlx::query(
                "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_until = NULL \
                 WHERE id = ?1 AND status = 'running' AND lease_epoch = ?2",
            )
            .bind(lease.run.to_string())
            .bind(lease.epoch)
            .execute(&mut *conn)
            .await
            .map_err(sql_error("release run"))?
        };
        if done.rows_affected() > 0 {
            return Ok(());
        }
        self.lease_lost(lease.run).await
    }

    async fn park_run(&self, lease: &Lease, wake_at: SystemTime) -> Result<(), StoreError> {
        let done = {
            let mut conn = WriteConn::take(&self.write_gate, &self.pool).await?;
            sqlx::query(
                "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_until = NULL, wake_at = ?2 \
                 WHERE id = ?1 AND status = 'running' AND lease_epoch = ?3",
            )
            .bind(lease.run.to_string())
            .bind(rfc3339(wake_at))
            .bind(lease.epoch)
            .execute(&mut *conn)
            .await
            .map_err(sql_error("park run"))?
        };
        if done.rows_affected() > 0 {
            return Ok(());
        }
        self.lease_lost(lease.run).await
    }

    async fn requeue_expired_leases(&self, now: SystemTime) -> Result<u64, StoreError> {
        let mut conn = WriteConn::take(&self.write_gate, &self.pool).await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_until = NULL \
             WHERE status = 'running' AND (lease_until IS NULL OR lease_until < ?1)",
        )
        .bind(rfc3339(now))
        .execute(&mut *conn)
        .await
        .map_err(sql_error("requeue expired leases"))?;
        Ok(done.rows_affected())
    }

    async fn lock_for_server(&self) -> Result<ServerLock, StoreError> {
        let Some(lock_path) = self.lock_path() else {
            return Ok(ServerLock::none());
        };
        let db = self.file.clone().unwrap_or_default();
        tokio::task::spawn_blocking(move || lock_file(&lock_path, &db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("locking the database: {e}")))?
    }

    async fn server_holding_lock(&self) -> Result<Option<String>, StoreError> {
        let Some(lock_path) = self.lock_path() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || probe_lock(&lock_path))
            .await
            .map_err(|e| StoreError::Unavailable(format!("probing the database lock: {e}")))?
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

    async fn queue_stats(&self, since: SystemTime) -> Result<QueueStats, StoreError> {
        let mut stats = QueueStats {
            queued_by_priority: Priority::ALL
                .iter()
                .map(|p| (p.as_str().to_owned(), 0))
                .collect(),
            runs_by_status: RunStatus::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), 0))
                .collect(),
            finished_since: BTreeMap::new(),
            fuel_used_total: 0,
        };
        let rows = sqlx::query(
            "SELECT priority, COUNT(*) AS n FROM runs WHERE status = 'queued' GROUP BY priority",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("queue stats"))?;
        for row in &rows {
            let priority: i64 = get(row, "priority")?;
            if let Some(p) = Priority::from_i64(priority) {
                stats
                    .queued_by_priority
                    .insert(p.as_str().to_owned(), count(get(row, "n")?));
            }
        }
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
            .fetch_all(&self.pool)
            .await
            .map_err(sql_error("queue stats"))?;
        for row in &rows {
            let status: String = get(row, "status")?;
            stats.runs_by_status.insert(status, count(get(row, "n")?));
        }
        for status in RunStatus::ALL.iter().filter(|s| s.is_terminal()) {
            stats.finished_since.insert(status.as_str().to_owned(), 0);
        }
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM runs WHERE finished_at >= ?1 GROUP BY status",
        )
        .bind(rfc3339(since))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("queue stats"))?;
        for row in &rows {
            let status: String = get(row, "status")?;
            stats.finished_since.insert(status, count(get(row, "n")?));
        }
        let fuel: Option<i64> = sqlx::query_scalar("SELECT SUM(fuel_used) FROM step_runs")
            .fetch_one(&self.pool)
            .await
            .map_err(sql_error("queue stats"))?;
        stats.fuel_used_total = count(fuel.unwrap_or(0));
        Ok(stats)
    }
}

#[async_trait::async_trait]
impl TokenStore for SqliteStore {
    async fn create_token(&self, name: &str, token_hash: &str) -> Result<ApiToken, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens (name, token_hash, created_at) VALUES (?1, ?2, ?3) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(token_hash)
        .bind(now_rfc3339())
        .fetch_one(&self.pool)
        .await
        .map_err(sql_error("create token"))?;
        token_from_row(&row)
    }

    async fn create_first_token(
        &self,
        name: &str,
        token_hash: &str,
    ) -> Result<Option<ApiToken>, StoreError> {
        let mut tx = self.begin_write("create first token").await?;
        let active: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NULL")
                .fetch_one(&mut *tx)
                .await
                .map_err(sql_error("create first token"))?;
        if active > 0 {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens (name, token_hash, created_at) VALUES (?1, ?2, ?3) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(token_hash)
        .bind(now_rfc3339())
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_error("create first token"))?;
        let token = token_from_row(&row)?;
        tx.commit().await.map_err(sql_error("create first token"))?;
        Ok(Some(token))
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list tokens"))?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(sql_error("revoke token"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn active_token(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?1 AND revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error("check token"))?;
        row.as_ref().map(token_from_row).transpose()
    }
}

#[async_trait::async_trait]
impl WebhookStore for SqliteStore {
    async fn set_webhook_secret(&self, name: &str, secret: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write("set webhook secret").await?;
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM workflows WHERE name = ?1 AND deleted_at IS NULL",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_error("set webhook secret"))?;
        if exists == 0 {
            return Err(StoreError::NotFound(format!("workflow {name:?}")));
        }
        sqlx::query(
            "INSERT INTO webhooks (workflow_name, secret, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (workflow_name) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at",
        )
        .bind(name)
        .bind(secret)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(sql_error("set webhook secret"))?;
        tx.commit().await.map_err(sql_error("set webhook secret"))
    }

    async fn webhook_secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT secret FROM webhooks WHERE workflow_name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error("read webhook secret"))
    }

    async fn record_delivery(
        &self,
        signature: &str,
        workflow: &str,
        now: SystemTime,
        forget_before: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("record webhook delivery").await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < ?1")
            .bind(rfc3339(forget_before))
            .execute(&mut *tx)
            .await
            .map_err(sql_error("record webhook delivery"))?;
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (signature, workflow_name, received_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (signature) DO NOTHING",
        )
        .bind(signature)
        .bind(workflow)
        .bind(rfc3339(now))
        .execute(&mut *tx)
        .await
        .map_err(sql_error("record webhook delivery"))?
        .rows_affected();
        tx.commit()
            .await
            .map_err(sql_error("record webhook delivery"))?;
        Ok(inserted > 0)
    }
}

fn schedule_from_row(row: &SqliteRow) -> Result<ScheduleRecord, StoreError> {
    Ok(ScheduleRecord {
        workflow_name: get(row, "workflow_name")?,
        cron: get(row, "cron")?,
        timezone: get(row, "timezone")?,
        missed: get(row, "missed")?,
        next_fire_at: get(row, "next_fire_at")?,
        last_fired_at: get(row, "last_fired_at")?,
    })
}

const SCHEDULE_COLUMNS: &str = "workflow_name, cron, timezone, missed, next_fire_at, last_fired_at";

#[async_trait::async_trait]
impl ScheduleStore for SqliteStore {
    async fn sync_schedule(
        &self,
        workflow: &str,
        schedule: Option<(&str, &str, &str, SystemTime)>,
    ) -> Result<(), StoreError> {
        let Some((cron, timezone, missed, next)) = schedule else {
            sqlx::query("DELETE FROM schedules WHERE workflow_name = ?1")
                .bind(workflow)
                .execute(&self.pool)
                .await
                .map_err(sql_error("delete schedule"))?;
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO schedules (workflow_name, cron, timezone, missed, next_fire_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (workflow_name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, \
             missed = excluded.missed, next_fire_at = excluded.next_fire_at \
             WHERE schedules.cron <> excluded.cron OR schedules.timezone <> excluded.timezone \
             OR schedules.missed <> excluded.missed",
        )
        .bind(workflow)
        .bind(cron)
        .bind(timezone)
        .bind(missed)
        .bind(rfc3339(next))
        .execute(&self.pool)
        .await
        .map_err(|e| match sql_error("save schedule")(e) {
            StoreError::Constraint(_) => StoreError::NotFound(format!("workflow {workflow:?}")),
            other => other,
        })?;
        Ok(())
    }

    async fn due_schedules(&self, now: SystemTime) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE next_fire_at <= ?1 ORDER BY next_fire_at"
        ))
        .bind(rfc3339(now))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("due schedules"))?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY workflow_name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list schedules"))?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn fire_schedule(
        &self,
        workflow: &str,
        fire_at: &str,
        next: SystemTime,
        run: Option<NewRun>,
    ) -> Result<Option<RunRecord>, StoreError> {
        let mut tx = self.begin_write("fire schedule").await?;
        let moved = sqlx::query(
            "UPDATE schedules SET next_fire_at = ?3, last_fired_at = ?2 \
             WHERE workflow_name = ?1 AND next_fire_at = ?2",
        )
        .bind(workflow)
        .bind(fire_at)
        .bind(rfc3339(next))
        .execute(&mut *tx)
        .await
        .map_err(sql_error("fire schedule"))?
        .rows_affected();
        if moved == 0 {
            return Ok(None);
        }
        let record = match run {
            Some(run) => Some(insert_run(&mut tx, run, None).await?),
            None => None,
        };
        tx.commit().await.map_err(sql_error("fire schedule"))?;
        Ok(record)
    }
}

#[async_trait::async_trait]
impl crate::store::SecretStore for SqliteStore {
    async fn put_secret(&self, secret: &crate::store::SealedSecret) -> Result<(), StoreError> {
        let mut tx = self.begin_write("store secret").await?;
        sqlx::query(
            "INSERT INTO secrets (name, nonce, ciphertext, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, \
             ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(&secret.name)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .bind(&secret.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(sql_error("store secret"))?;
        tx.commit().await.map_err(sql_error("store secret"))
    }

    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write("delete secret").await?;
        let done = sqlx::query("DELETE FROM secrets WHERE name = ?1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(sql_error("delete secret"))?;
        tx.commit().await.map_err(sql_error("delete secret"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn sealed_secrets(&self) -> Result<Vec<crate::store::SealedSecret>, StoreError> {
        let rows =
            sqlx::query("SELECT name, nonce, ciphertext, updated_at FROM secrets ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(sql_error("list secrets"))?;
        rows.iter()
            .map(|row| {
                Ok(crate::store::SealedSecret {
                    name: get(row, "name")?,
                    nonce: get(row, "nonce")?,
                    ciphertext: get(row, "ciphertext")?,
                    updated_at: get(row, "updated_at")?,
                })
            })
            .collect()
    }
}
