//! The worker pool: takes runs from the durable queue (the store) and
//! executes them, at most `workers` at once.
//!
//! One dispatcher task claims runs (`QueueStore::claim_next_runs`: priority,
//! then age; as many as there are free permits, in one statement) and
//! spawns one task per run; idle, it
//! sleeps until [`QueueHandle::wake`] (a new run) or the poll interval
//! (runs queued by another process). A run that parks (only waits left,
//! see [`Executor::execute_claimed`]) frees its permit at once; a timer
//! wakes the dispatcher when it is due. A heartbeat task
//! extends the leases of the runs executing here, and only those (a run
//! whose execution ended, e.g. because its state could not be written,
//! is no longer registered, so its lease runs out and the run is taken
//! over), and re-queues runs whose lease expired (or that have none). A
//! lease found lost (another worker claimed the run after it expired)
//! stops that execution at once ([`Executor::execute_claimed`]).
//!
//! Shutdown: stop claiming, let runs in flight finish within the grace
//! period, then abort the rest and give them back to the queue (their
//! finished steps are kept; the next start resumes them).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::{Driven, EngineError, Executor};
use crate::store::{ClaimedRun, Lease, RunId, Signal, StoreError, rfc3339};

/// Most runs one claim takes (bounded by the free permits).
const CLAIM_BATCH: usize = 64;

/// Knobs of the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Runs executed at once (each may run several steps in parallel);
    /// 0: none here (an API-only node, `serve --no-workers`: the pool
    /// claims nothing and other processes execute the runs).
    pub workers: usize,
    /// How long a claim is valid without a heartbeat.
    pub lease: Duration,
    /// Idle re-check of the queue.
    pub poll_interval: Duration,
    /// How long shutdown waits for runs in flight before releasing them.
    pub shutdown_grace: Duration,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            workers: 40,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What the API may ask of the pool. Cheap to clone.
#[derive(Clone)]
pub struct QueueHandle {
    shared: Arc<Shared>,
}

struct Shared {
    worker_id: String,
    capacity: usize,
    wake: Notify,
    /// Runs executing here, by run id.
    running: Mutex<HashMap<RunId, Execution>>,
    /// Numbers executions, so a finished one never unregisters a newer
    /// execution of the same run (parked and claimed again meanwhile).
    executions: std::sync::atomic::AtomicU64,
    /// Cancels asked for runs not (yet) registered here.
    cancel_requested: Mutex<HashSet<RunId>>,
    alive: AtomicBool,
}

/// One execution of a run in this pool.
#[derive(Clone)]
struct Execution {
    /// Its number (see `Shared::executions`).
    number: u64,
    /// Cancels the run (a user's cancel, or its lease was lost).
    token: CancellationToken,
    /// Cancelled when the heartbeat finds the lease lost.
    lost: CancellationToken,
    /// The claim the run executes under.
    lease: Lease,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl QueueHandle {
    /// There is new work: claim now instead of at the next poll.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Cancel run `id` if it executes here; false otherwise.
    pub fn cancel(&self, id: RunId) -> bool {
        match lock(&self.shared.running).get(&id) {
            Some(execution) => {
                execution.token.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancel run `id` as soon as this pool registers it (it was claimed
    /// but is not registered yet), or now if it already is.
    pub fn request_cancel(&self, id: RunId) {
        let running = lock(&self.shared.running);
        match running.get(&id) {
            Some(execution) => execution.token.cancel(),
            None => {
                lock(&self.shared.cancel_requested).insert(id);
            }
        }
    }

    /// Runs executing now.
    pub fn busy(&self) -> usize {
        lock(&self.shared.running).len()
    }

    /// Runs executed at most at once.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// This pool's lease owner id.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// False once the dispatcher stopped.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }
}

impl crate::engine::RunQueue for QueueHandle {
    fn wake(&self) {
        QueueHandle::wake(self)
    }
    fn cancel(&self, id: RunId) -> bool {
        QueueHandle::cancel(self, id)
    }
    fn request_cancel(&self, id: RunId) {
        QueueHandle::request_cancel(self, id)
    }
    fn busy(&self) -> usize {
        QueueHandle::busy(self)
    }
    fn capacity(&self) -> usize {
        QueueHandle::capacity(self)
    }
    fn is_alive(&self) -> bool {
        QueueHandle::is_alive(self)
    }
}

/// A running pool; [`WorkerPool::join`] waits for it to wind down after
/// its shutdown token is cancelled.
pub struct WorkerPool {
    handle: QueueHandle,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerPool {
    /// Start claiming and executing runs until `shutdown` is cancelled.
    pub fn start(
        executor: Arc<Executor>,
        config: PoolConfig,
        shutdown: CancellationToken,
    ) -> WorkerPool {
        let shared = Arc::new(Shared {
            worker_id: format!(
                "serve-{}-{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ),
            capacity: config.workers,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            executions: std::sync::atomic::AtomicU64::new(0),
            cancel_requested: Mutex::new(HashSet::new()),
            alive: AtomicBool::new(true),
        });
        let handle = QueueHandle { shared };
        if let Some(signals) = executor.store().signals() {
            tokio::spawn(forward_signals(signals, handle.clone(), shutdown.clone()));
        }
        let task = tokio::spawn(dispatch(executor, config, shutdown, handle.clone()));
        WorkerPool { handle, task }
    }

    /// The handle the API uses.
    pub fn handle(&self) -> QueueHandle {
        self.handle.clone()
    }

    /// Wait until the pool stopped (after its shutdown token was cancelled).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!("the worker pool task failed: {e}");
        }
    }
}

/// Act on what other processes sharing the database signal: new runs wake
/// the dispatcher, a cancel request stops the run if it executes here.
async fn forward_signals(
    mut signals: tokio::sync::broadcast::Receiver<Signal>,
    handle: QueueHandle,
    stop: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let signal = tokio::select! {
            () = stop.cancelled() => return,
            signal = signals.recv() => signal,
        };
        match signal {
            Ok(Signal::Queued | Signal::Resync) | Err(RecvError::Lagged(_)) => handle.wake(),
            Ok(Signal::Cancel(run)) => {
                if handle.cancel(run) {
                    tracing::info!(run = %run, "cancelled at another process's request");
                }
            }
            Ok(Signal::Finished(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// Forget execution `execution` of run `id` (not a newer one).
fn unregister(shared: &Shared, id: RunId, execution: u64) -> Option<Execution> {
    let mut running = lock(&shared.running);
    match running.get(&id) {
        Some(e) if e.number == execution => running.remove(&id),
        _ => None,
    }
}

async fn heartbeat(
    executor: Arc<Executor>,
    config: PoolConfig,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let every = (config.lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = SystemTime::now();
        let store = executor.store();
        // Only the runs executing here now: an execution that ended
        // (finished, parked, or stopped because its writes failed) is
        // unregistered and its lease is left to run out.
        let leases: Vec<Lease> = lock(&shared.running)
            .values()
            .map(|e| e.lease.clone())
            .collect();
        match store.extend_leases(&leases, now + config.lease).await {
            Ok(extended) => {
                let extended: HashSet<RunId> = extended.into_iter().collect();
                let running = lock(&shared.running);
                for lease in leases.iter().filter(|l| !extended.contains(&l.run)) {
                    if let Some(e) = running.get(&lease.run).filter(|e| e.lease == *lease) {
                        tracing::warn!(run = %lease.run, "lease lost: another worker took the run over; stopping it here");
                        e.lost.cancel();
                        e.token.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!("extending leases: {e}"),
        }
        // Cancels asked through another process (or missed signals).
        let ids: Vec<RunId> = leases.iter().map(|l| l.run).collect();
        match store.cancel_requested(&ids).await {
            Ok(cancelled) => {
                let running = lock(&shared.running);
                for id in cancelled {
                    if let Some(e) = running.get(&id) {
                        e.token.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!("reading cancel requests: {e}"),
        }
        match store.requeue_expired_leases(now).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                runs = n,
                "re-queued runs whose worker stopped renewing its lease"
            ),
            Err(e) => tracing::warn!("re-queueing expired leases: {e}"),
        }
    }
}

async fn dispatch(
    executor: Arc<Executor>,
    config: PoolConfig,
    shutdown: CancellationToken,
    handle: QueueHandle,
) {
    let shared = handle.shared.clone();
    if shared.capacity == 0 {
        // No workers here: other processes execute the runs.
        shutdown.cancelled().await;
        shared.alive.store(false, Ordering::SeqCst);
        return;
    }
    let permits = Arc::new(Semaphore::new(shared.capacity));
    let stop_heartbeat = CancellationToken::new();
    let beat = tokio::spawn(heartbeat(
        executor.clone(),
        config.clone(),
        shared.clone(),
        stop_heartbeat.clone(),
    ));
    let mut tasks: JoinSet<()> = JoinSet::new();

    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        if shutdown.is_cancelled() {
            break;
        }
        // Claim as many runs as there are free permits, in one statement.
        let mut granted = free_permits(&permits, permit);
        let claimed = executor
            .store()
            .claim_next_runs(
                &shared.worker_id,
                SystemTime::now() + config.lease,
                granted.len(),
            )
            .await;
        let runs = match claimed {
            Ok(runs) if !runs.is_empty() => runs,
            idle => {
                if let Err(e) = idle {
                    tracing::warn!("claiming a run: {e}");
                }
                drop(granted);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep(config.poll_interval) => {}
                }
                continue;
            }
        };
        // Unused permits go back with `granted`.
        for (claimed, permit) in runs.into_iter().zip(granted.drain(..)) {
            let execution = register(&shared, &claimed);
            // The engine's `run` span covers the execution.
            tasks.spawn(execute(
                executor.clone(),
                handle.clone(),
                claimed,
                execution,
                permit,
            ));
        }
    }

    shared.alive.store(false, Ordering::SeqCst);
    wind_down(&executor, &config, &shared, tasks).await;
    stop_heartbeat.cancel();
    let _ = beat.await;
}

/// `first` and every other permit free now, up to [`CLAIM_BATCH`].
fn free_permits(
    permits: &Arc<Semaphore>,
    first: OwnedSemaphorePermit,
) -> Vec<OwnedSemaphorePermit> {
    let mut granted = vec![first];
    while granted.len() < CLAIM_BATCH {
        match permits.clone().try_acquire_owned() {
            Ok(p) => granted.push(p),
            Err(_) => break,
        }
    }
    granted
}

/// Register a new execution of the run just claimed (cancelled at once
/// when a cancel was asked for it before); the registered entry, copied.
fn register(shared: &Shared, claimed: &ClaimedRun) -> Execution {
    let run = &claimed.run;
    let token = CancellationToken::new();
    let lost = CancellationToken::new();
    let lease = claimed.lease.clone();
    let number = shared.executions.fetch_add(1, Ordering::SeqCst);
    let mut running = lock(&shared.running);
    if lock(&shared.cancel_requested).remove(&run.id) {
        token.cancel();
    }
    let execution = Execution {
        number,
        token,
        lost,
        lease,
    };
    running.insert(run.id, execution.clone());
    execution
}

/// One claimed run's task: execute it (holding `permit`), then act on how
/// it ended, then unregister it.
async fn execute(
    executor: Arc<Executor>,
    handle: QueueHandle,
    claimed: ClaimedRun,
    execution: Execution,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let id = claimed.run.id;
    let Execution {
        number,
        token,
        lost,
        lease,
    } = execution;
    match executor.execute_claimed(claimed, token, lost).await {
        Ok(Driven::Finished(status)) => {
            tracing::debug!(run = %id, %status, "run finished");
        }
        Ok(Driven::Parked { until }) => parked(&executor, &handle, id, number, until).await,
        Err(EngineError::Store(StoreError::LeaseLost { .. })) => {
            // Another worker has it now: nothing more to do here.
            tracing::warn!(run = %id, "stopped: the run's lease was lost to another worker");
        }
        Err(e) => {
            // The store failed mid-run: give it back so it
            // resumes later. If even that fails, the lease
            // (no longer renewed) runs out and the sweep
            // re-queues it.
            tracing::warn!(run = %id, "run interrupted: {e}");
            if let Err(e) = executor.store().release_run(&lease).await {
                tracing::warn!(run = %id, "releasing the run: {e}");
            }
        }
    }
    unregister(&handle.shared, id, number);
}

/// Execution `execution` of run `id` parked until `until`.
async fn parked(
    executor: &Executor,
    handle: &QueueHandle,
    id: RunId,
    execution: u64,
    until: SystemTime,
) {
    tracing::debug!(run = %id, "run parked until {}", rfc3339(until));
    // A cancel that came while it was parking: it is
    // queued now, so cancel it there.
    // (Not a lease found "lost" because it was
    // parked just before the heartbeat looked.)
    let cancelled = unregister(&handle.shared, id, execution)
        .is_some_and(|e| e.token.is_cancelled() && !e.lost.is_cancelled());
    if cancelled && let Err(e) = executor.store().cancel_queued_run(id).await {
        tracing::warn!(run = %id, "cancelling the parked run: {e}");
    }
    // Claim it again on time rather than at the next poll.
    let wake = handle.clone();
    tokio::spawn(async move {
        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(left).await;
        wake.wake();
    });
}

/// Shutdown: let runs in flight finish within the grace period; then
/// abort the rest and give them back to the queue.
async fn wind_down(
    executor: &Executor,
    config: &PoolConfig,
    shared: &Shared,
    mut tasks: JoinSet<()>,
) {
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if drained {
        return;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let left: Vec<Lease> = lock(&shared.running)
        .drain()
        .map(|(_, e)| e.lease)
        .collect();
    for lease in left {
        let id = lease.run;
        match executor.store().release_run(&lease).await {
            Ok(()) => tracing::info!(run = %id, "released an unfinished run to the queue"),
            Err(e) => tracing::warn!(run = %id, "releasing the run: {e}"),
        }
    }
}
