//! The store's trait families. The engine, CLI, API and server talk to
//! these (through [`Store`], all of them at once) and never see a query;
//! each backend implements every family.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::{
    ApiToken, AttemptRecord, ClaimedRun, Lease, NewRun, PieceRecord, PieceWrite, QueueStats,
    RunFilter, RunId, RunRecord, RunStatus, ScheduleRecord, SealedSecret, ServerLock, Signal,
    StepRecord, StoreError, StoredWorkflow,
};

/// Workflow definitions and their versions.
#[async_trait::async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Save a definition without pins ([`WorkflowStore::save_pinned_workflow`]).
    async fn save_workflow(
        &self,
        name: &str,
        definition: &serde_json::Value,
    ) -> Result<StoredWorkflow, StoreError> {
        self.save_pinned_workflow(name, definition, None).await
    }

    /// Save a definition with the pieces it was resolved to (`pins`, see
    /// [`StoredWorkflow::pins`]); creates the workflow or a new version. If
    /// the newest version's definition is identical (compared as canonical
    /// JSON text: object keys sorted) and so are its pins (or none are
    /// given), returns that version instead of creating a new one.
    async fn save_pinned_workflow(
        &self,
        name: &str,
        definition: &serde_json::Value,
        pins: Option<&serde_json::Value>,
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
    /// Insert the run with status queued, atomically (a run is never
    /// half-written). [`StoreError::NotFound`] if the
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

    /// Every attempt of every step of `run` in one query, as `(step id,
    /// attempt)` by step id then attempt number (a run document reads them
    /// all at once, not one query per step).
    async fn run_attempts(&self, run: RunId) -> Result<Vec<(String, AttemptRecord)>, StoreError>;

    /// [`RunStore::run_attempts`] grouped by step id.
    async fn attempts_by_step(
        &self,
        run: RunId,
    ) -> Result<std::collections::HashMap<String, Vec<AttemptRecord>>, StoreError> {
        let mut by_step: std::collections::HashMap<String, Vec<AttemptRecord>> =
            std::collections::HashMap::new();
        for (step, attempt) in self.run_attempts(run).await? {
            by_step.entry(step).or_default().push(attempt);
        }
        Ok(by_step)
    }

    /// Runs by status name (every status present, 0 when none), of one
    /// workflow or of all.
    async fn run_counts(&self, workflow: Option<&str>)
    -> Result<BTreeMap<String, u64>, StoreError>;

    /// Runs that became terminal at or after `since`, per UTC minute
    /// (`2026-12-03T10:15`), oldest first; minutes without any are left out.
    async fn finished_per_minute(
        &self,
        since: SystemTime,
    ) -> Result<Vec<(String, u64)>, StoreError>;

    /// Running runs per lease owner (the worker executing them), by owner.
    async fn running_by_owner(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Queued runs by priority name (every priority present, 0 when none),
    /// test runs included: an index count, for the console's queue page.
    async fn queued_by_priority(&self) -> Result<BTreeMap<String, u64>, StoreError>;
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
    /// until `lease_until`, atomically (no queue worker can take it
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

    /// Retention: delete up to `limit` finished runs (`statuses`, terminal
    /// ones only: a queued, running or parked run is never touched) that
    /// finished before `before`, oldest first, with their step records and
    /// attempts, in one transaction; returns how many. With `dry_run`, only
    /// counts (all of them, not `limit`).
    async fn prune_runs(
        &self,
        before: SystemTime,
        statuses: &[RunStatus],
        limit: usize,
        dry_run: bool,
    ) -> Result<u64, StoreError>;

    /// Ask whoever executes run `id` to cancel it: records the request
    /// (seen by that process's heartbeat, [`QueueStore::cancel_requested`])
    /// and, on a shared backend, signals it at once ([`Signal::Cancel`]).
    /// False when the run is already finished.
    async fn request_cancel(&self, id: RunId) -> Result<bool, StoreError>;

    /// Which of `runs` someone asked to cancel ([`QueueStore::request_cancel`]).
    async fn cancel_requested(&self, runs: &[RunId]) -> Result<Vec<RunId>, StoreError>;

    /// Signals from the processes sharing this database (new runs, finished
    /// runs, cancel requests), or None for a backend only one process
    /// uses at a time (SQLite: that process wakes itself). Each call is a
    /// new subscriber; the first starts listening.
    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        None
    }

    /// Mark this database as served by this process, for as long as the
    /// returned lock lives (it goes with the process however that ends).
    /// A single-node backend makes it exclusive
    /// ([`SqliteStore`](super::SqliteStore): an OS lock on a file next to
    /// the database; a second server gets [`StoreError::Locked`] naming the
    /// holder); a shared backend ([`PgStore`](super::PgStore): a shared
    /// advisory lock) lets any number of servers and workers hold it and
    /// relies on SKIP LOCKED claims and fencing; backends without one
    /// return [`ServerLock::none`].
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

    /// Queue depth, totals, and runs finished since `since`; test runs
    /// (`simulated`, failure simulation) and their steps' fuel count only
    /// when `include_test`.
    async fn queue_stats(
        &self,
        since: SystemTime,
        include_test: bool,
    ) -> Result<QueueStats, StoreError>;
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

    /// Store a web console session (the hex SHA-256 of its cookie) signed
    /// in with token `token_id`, valid until `expires_at`. Expired sessions
    /// are deleted on the way.
    async fn create_session(
        &self,
        session_hash: &str,
        token_id: i64,
        expires_at: SystemTime,
    ) -> Result<(), StoreError>;

    /// The token behind a session with this hash that has not expired at
    /// `now`, signed out, or had its token revoked.
    async fn active_session(
        &self,
        session_hash: &str,
        now: SystemTime,
    ) -> Result<Option<ApiToken>, StoreError>;

    /// Sign a session out; false when there was none.
    async fn delete_session(&self, session_hash: &str) -> Result<bool, StoreError>;
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
    WorkflowStore
    + RunStore
    + QueueStore
    + TokenStore
    + WebhookStore
    + ScheduleStore
    + SecretStore
    + PieceStore
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
        + PieceStore
{
}

/// Installed pieces: one row per name@version, the bytes once per digest
/// (every process sharing the database can load any installed piece).
#[async_trait::async_trait]
pub trait PieceStore: Send + Sync {
    /// Store `piece` and its `bytes` (whose sha256 is `piece.digest`). The
    /// same name@version with the same digest changes nothing
    /// ([`PieceWrite::Unchanged`]); with other bytes it is
    /// [`StoreError::Conflict`] unless `replace` (then the row points at
    /// the new bytes and `replaced_at` records it; versions pinned to the
    /// old digest keep loading the old bytes).
    async fn put_piece(
        &self,
        piece: &PieceRecord,
        bytes: &[u8],
        replace: bool,
    ) -> Result<PieceWrite, StoreError>;

    /// Every installed piece, by name then version (as text).
    async fn list_pieces(&self) -> Result<Vec<PieceRecord>, StoreError>;

    /// The bytes with this sha256 digest (hex), if stored.
    async fn piece_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The workflows (names, deleted ones left out) with a version that
    /// pins `name@version`.
    async fn workflows_pinning(&self, name: &str, version: &str)
    -> Result<Vec<String>, StoreError>;

    /// Remove `name@version` (false: not installed). Refused with
    /// [`StoreError::Conflict`] naming the workflows that pin it, unless
    /// `force`. Its bytes go too (unless another name@version has them), so
    /// versions pinning them then fail with piece-missing.
    async fn remove_piece(
        &self,
        name: &str,
        version: &str,
        force: bool,
    ) -> Result<bool, StoreError>;
}
