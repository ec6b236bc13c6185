//! The workflow engine: turns a stored run into step attempts on the piece
//! runtime, in dependency order and in parallel, persisting every step's
//! record before its dependents start.
//!
//! - [`Executor::save_workflow`] validates a workflow and saves it as a
//!   version; [`Executor::submit`] queues a run a trigger built for it
//!   (`crate::triggers` is the one place runs are built and started).
//! - [`Executor::execute`] runs (or resumes) a run to its end: steps whose
//!   record is already terminal are not run again.
//!
//! A run is always driven under a claim (a lease with an epoch, see
//! [`crate::store::Lease`]): every write carries it, and once one is refused
//! as stale ("lease lost") the run is no longer this process's and the
//! engine stops it without writing anything more.
//!
//! Must not know: SQL (that is `store`), HTTP frameworks, the CLI.

mod context;
mod defaults;
mod driver;
mod events;
mod failure;
mod handler;
mod pieces;
mod queue;
mod registry;
mod run;
pub mod simulate;
mod step;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use defaults::LlmDefaults;
pub use driver::Driven;
pub use events::{ItemOf, RunEvent};
pub use pieces::{CompileGuard, INSTALL_COMPILE_LIMIT};
pub use queue::{NoWorkers, RunQueue};
pub use registry::PieceRegistry;
pub use simulate::Simulation;

use crate::capabilities::secrets::Secrets;
use crate::runtime::{Runtime, StepLimits};
use crate::store::{ClaimedRun, Lease, NewRun, RunId, RunStatus, Store, StoreError};
use crate::workflow::ValidationError;

/// Why the engine could not accept or drive a run.
///
/// Whose fault: `Invalid` is the workflow author's (fix the file; not
/// retryable); `NotFound` the caller's; `Store` is the database's
/// (retryable when the store says so); `Piece` is a built-in piece that
/// failed to compile (ours, not retryable).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The workflow does not validate; every problem is listed.
    #[error("the workflow is invalid:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ValidationError>),
    /// No such run or workflow.
    #[error("not found: {0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A piece the workflow needs could not be compiled.
    #[error(transparent)]
    Piece(#[from] crate::runtime::RuntimeError),
}

impl EngineError {
    /// Whether trying again may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, EngineError::Store(e) if e.is_retryable())
    }
}

/// Knobs of the executor.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Steps of one run that may execute at once.
    pub max_parallel_steps: usize,
    /// Limits for steps that do not set their own (`REQUEST_TIMEOUT` sets
    /// the timeout).
    pub default_limits: StepLimits,
    /// `retry.max_attempts` of steps with no `retry` (`MAX_RETRIES`; 3).
    pub default_max_attempts: u32,
    /// What `llm` steps that leave out providers get (`USE_OLLAMA`,
    /// `OLLAMA_URL`).
    pub llm_defaults: LlmDefaults,
    /// Whole-run wall-clock budget (`None`: unbounded).
    pub run_timeout: Option<Duration>,
    /// Values for `${secret:NAME}` placeholders in granted HTTP requests.
    pub secrets: Secrets,
    /// With [`Executor::execute_claimed`]: when nothing runs and every step
    /// left waits (a retry delay, a `delay` step), a wait at least this
    /// long parks the run in the queue instead of holding the worker.
    pub park_after: Duration,
    /// The lease under which this executor runs what it executes itself
    /// ([`Executor::execute`], [`Executor::execute_leased`]: `omniflow run`,
    /// `runs resume`), renewed every third of it while the run executes. A
    /// process that dies leaves the run to be taken over once it expires.
    pub lease: Duration,
    /// Longest an uploaded component may take to compile when installed
    /// ([`Executor::install_piece`]; default [`INSTALL_COMPILE_LIMIT`]).
    pub install_compile_limit: Duration,
    /// Run on an uploaded component before this process compiles it, under
    /// the same time limit (`serve` compiles it in a child process with a
    /// memory limit first, so a compile bomb cannot exhaust the server).
    pub compile_guard: Option<CompileGuard>,
    /// Bounds of the executor's caches.
    pub cache_capacity: CacheCapacity,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_parallel_steps: 16,
            default_limits: StepLimits::default(),
            default_max_attempts: crate::workflow::RetryPolicy::default().max_attempts,
            llm_defaults: LlmDefaults::default(),
            run_timeout: None,
            secrets: Secrets::empty(),
            park_after: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            install_compile_limit: INSTALL_COMPILE_LIMIT,
            compile_guard: None,
            cache_capacity: CacheCapacity::default(),
        }
    }
}

/// Events buffered per subscriber of [`Executor::subscribe`] (a slower
/// one skips ahead: `Lagged`), so subscribers cost a bounded amount each.
const EVENT_BUFFER: usize = 4096;

/// Runs workflows on the piece runtime with a store.
pub struct Executor {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) registry: Arc<PieceRegistry>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: ExecutorConfig,
    events: broadcast::Sender<RunEvent>,
    /// Validated workflow versions by (name, version) (`run.rs::load_workflow`).
    validated: std::sync::Mutex<ValidatedCache>,
    validators: Arc<ValidatorCache>,
    /// The lease owner of runs this executor executes itself
    /// (`local-<pid>-<uuid>`; a queue worker has its own).
    local_worker: String,
    /// Built-in digests already registered in the store (`pieces.rs`).
    registered_builtins: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Compiled input schemas by (piece digest, action), least recently used
/// dropped beyond [`ExecutorConfig::cache_capacity`].
pub(crate) type ValidatorCache = std::sync::Mutex<
    hashlink::LruCache<(crate::runtime::PieceDigest, String), Arc<crate::workflow::InputValidator>>,
>;

/// Validated workflow versions by (name, version), least recently used
/// dropped beyond [`ExecutorConfig::cache_capacity`].
type ValidatedCache = hashlink::LruCache<(String, i64), Arc<crate::workflow::ValidatedWorkflow>>;

/// How many entries the executor's caches keep (each drops its least
/// recently used entry beyond it). A dropped entry is rebuilt on next need
/// (a version read and validated again, a schema compiled again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCapacity {
    /// Validated workflow versions (a run loads its pinned version from it).
    pub validated_workflows: usize,
    /// Compiled input schemas, by piece digest and action.
    pub input_validators: usize,
}

impl Default for CacheCapacity {
    fn default() -> Self {
        CacheCapacity {
            validated_workflows: 1024,
            input_validators: 512,
        }
    }
}

/// One cache of the process: its entries now and its bound (capacity 0:
/// bounded by something else, see [`Executor::cache_sizes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSize {
    /// `validated_workflows`, `input_validators`, `loaded_pieces`, ...
    pub name: &'static str,
    /// Entries now.
    pub entries: usize,
    /// Most entries kept.
    pub capacity: usize,
}

impl Executor {
    /// An executor over these parts.
    pub fn new(
        runtime: Arc<Runtime>,
        registry: Arc<PieceRegistry>,
        store: Arc<dyn Store>,
        config: ExecutorConfig,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let capacity = config.cache_capacity;
        // Save-time validation checks steps' limits against this runtime's.
        registry.set_limit_maxima(&runtime.max_limits());
        Executor {
            runtime,
            registry,
            store,
            config,
            events,
            validated: std::sync::Mutex::new(hashlink::LruCache::new(
                capacity.validated_workflows.max(1),
            )),
            validators: Arc::new(std::sync::Mutex::new(hashlink::LruCache::new(
                capacity.input_validators.max(1),
            ))),
            local_worker: format!(
                "local-{}-{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ),
            registered_builtins: std::sync::Mutex::default(),
        }
    }

    fn registered_builtins(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.registered_builtins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn validated_cache(&self) -> std::sync::MutexGuard<'_, ValidatedCache> {
        self.validated.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The size and bound of every cache that grows with use in this
    /// executor and its runtime and registry (reported in `/metrics`).
    /// Piece registry entries are bounded by the pieces installed in the
    /// store (an admin's action, not a run's), and event subscribers by the
    /// server's connection limit; both are reported with capacity 0 when
    /// they have no bound of their own.
    pub fn cache_sizes(&self) -> Vec<CacheSize> {
        let capacity = self.config.cache_capacity;
        let validated = self.validated_cache().len();
        let validators = self
            .validators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        vec![
            CacheSize {
                name: "validated_workflows",
                entries: validated,
                capacity: capacity.validated_workflows.max(1),
            },
            CacheSize {
                name: "input_validators",
                entries: validators,
                capacity: capacity.input_validators.max(1),
            },
            CacheSize {
                name: "loaded_pieces",
                entries: self.runtime.loaded_pieces(),
                capacity: crate::runtime::LOADED_PIECES_CAPACITY,
            },
            CacheSize {
                name: "piece_registry",
                entries: self.registry.loaded_count(),
                capacity: 0,
            },
            CacheSize {
                name: "event_subscribers",
                entries: self.events.receiver_count(),
                capacity: 0,
            },
        ]
    }

    /// The store runs are kept in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Secret values for granted HTTP requests (shared: setting a stored
    /// secret here is seen by every later step).
    pub fn secrets(&self) -> &crate::capabilities::secrets::Secrets {
        &self.config.secrets
    }

    /// The installed pieces.
    pub fn registry(&self) -> &Arc<PieceRegistry> {
        &self.registry
    }

    /// Live events of every run this executor drives.
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, event: RunEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Compile every built-in piece not compiled yet (several at once).
    pub async fn prepare_all_pieces(&self) -> Result<(), EngineError> {
        self.registry
            .prepare_all(&self.runtime)
            .await
            .map_err(EngineError::from)
    }

    /// Queue `run` (built by a trigger: [`crate::triggers::new_run`]).
    pub async fn submit(&self, run: NewRun) -> Result<RunId, EngineError> {
        Ok(self.store.create_run(run).await?.id)
    }

    /// Like [`Executor::submit`], but the run is created already claimed by
    /// this executor (running under its lease, so no queue worker of any
    /// process can take it): for [`Executor::execute_leased`] next.
    pub async fn submit_claimed(&self, run: NewRun) -> Result<ClaimedRun, EngineError> {
        Ok(self
            .store
            .create_claimed_run(
                run,
                &self.local_worker,
                SystemTime::now() + self.config.lease,
            )
            .await?)
    }

    /// Run (or resume) `run` to its end in this process and return its
    /// final status: it is claimed under this executor's lease first
    /// ([`StoreError::NotClaimable`] when a live process holds it or it is
    /// parked for later; a finished run just returns its status), then
    /// driven as [`Executor::execute_leased`] does.
    pub async fn execute(
        &self,
        run: RunId,
        cancel: CancellationToken,
    ) -> Result<RunStatus, EngineError> {
        let record = self
            .store
            .get_run(run)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {run}")))?;
        if record.status.is_terminal() {
            return Ok(record.status);
        }
        let claimed = self
            .store
            .claim_run(
                run,
                &self.local_worker,
                SystemTime::now() + self.config.lease,
            )
            .await?;
        self.execute_leased(claimed, cancel).await
    }

    /// Drive a run this executor claimed to its end, renewing the lease
    /// every third of [`ExecutorConfig::lease`] meanwhile. Waits (retry
    /// delays, `delay` steps) are slept here: the process is the worker.
    /// When the lease is found lost (another process took the run over),
    /// the run stops at once with [`StoreError::LeaseLost`].
    pub async fn execute_leased(
        &self,
        claimed: ClaimedRun,
        cancel: CancellationToken,
    ) -> Result<RunStatus, EngineError> {
        let lost = CancellationToken::new();
        let cancel = cancel.child_token();
        let stop = CancellationToken::new();
        let renew = tokio::spawn(renew_lease(
            self.store.clone(),
            claimed.lease.clone(),
            self.config.lease,
            stop.clone(),
            lost.clone(),
            cancel.clone(),
        ));
        let driven = driver::drive(self, claimed, cancel, lost, false).await;
        stop.cancel();
        let _ = renew.await;
        match driven? {
            Driven::Finished(status) => Ok(status),
            // Not asked to park, so it never does.
            Driven::Parked { .. } => Ok(RunStatus::Queued),
        }
    }

    /// Like [`Executor::execute_leased`] for a run a queue worker just
    /// claimed, whose lease the worker renews: a run left with only waits
    /// of at least [`ExecutorConfig::park_after`] goes back to the queue
    /// with a wake-up time ([`Driven::Parked`]) instead of holding the
    /// worker until then. The worker cancels `lost` (and `cancel`) when it
    /// finds the lease lost; the run then ends with [`StoreError::LeaseLost`]
    /// and writes nothing more.
    pub async fn execute_claimed(
        &self,
        claimed: ClaimedRun,
        cancel: CancellationToken,
        lost: CancellationToken,
    ) -> Result<Driven, EngineError> {
        driver::drive(self, claimed, cancel, lost, true).await
    }

    /// Resume the runs left behind by processes that are gone: runs
    /// [`QueueStore::resumable_runs`] lists (running with an expired or no
    /// lease; queued and not parked for later). Never a run whose lease a
    /// live process holds, nor one parked until later. Each is claimed
    /// first; one taken by someone else meanwhile is left alone.
    ///
    /// [`QueueStore::resumable_runs`]: crate::store::QueueStore::resumable_runs
    pub async fn resume_unfinished(&self) -> Result<Vec<(RunId, RunStatus)>, EngineError> {
        let mut done = Vec::new();
        for run in self.store.resumable_runs(SystemTime::now()).await? {
            let claimed = match self
                .store
                .claim_run(
                    run.id,
                    &self.local_worker,
                    SystemTime::now() + self.config.lease,
                )
                .await
            {
                Ok(claimed) => claimed,
                Err(StoreError::NotClaimable { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let status = self
                .execute_leased(claimed, CancellationToken::new())
                .await?;
            done.push((run.id, status));
        }
        Ok(done)
    }
}

/// Renew `lease` every third of `lease_for` until `stop`; when it is found
/// lost, cancel `lost` and `cancel` (the run stops). A failed renewal is
/// only logged: the lease then runs out unless a later renewal succeeds.
async fn renew_lease(
    store: Arc<dyn Store>,
    lease: Lease,
    lease_for: Duration,
    stop: CancellationToken,
    lost: CancellationToken,
    cancel: CancellationToken,
) {
    let every = (lease_for / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match store
            .extend_leases(std::slice::from_ref(&lease), SystemTime::now() + lease_for)
            .await
        {
            Ok(extended) if extended.contains(&lease.run) => {}
            Ok(_) => {
                tracing::warn!(run = %lease.run, "lease lost: another process took the run over");
                lost.cancel();
                cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(run = %lease.run, "renewing the lease: {e}"),
        }
    }
}
