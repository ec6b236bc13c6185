//! The workflow engine: turns a stored run into step attempts on the piece
//! runtime, in dependency order and in parallel, persisting every step's
//! record before its dependents start.
//!
//! - [`Executor::submit`] validates a workflow, saves it as a version and
//!   creates a queued run pinned to that version.
//! - [`Executor::execute`] runs (or resumes) a run to its end: steps whose
//!   record is already terminal are not run again.
//!
//! Must not know: SQL (that is `store`), HTTP frameworks, the CLI.

mod events;
mod registry;
mod run;
mod step;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use events::RunEvent;
pub use registry::PieceRegistry;
pub use run::Driven;

use crate::capabilities::secrets::Secrets;
use crate::runtime::{Runtime, StepLimits};
use crate::store::{ClaimedRun, NewRun, Priority, RunId, RunStatus, Store, StoreError};
use crate::workflow::{ValidationError, Workflow, validate};

/// Why the engine could not accept or drive a run.
///
/// Whose fault: `Invalid` is the workflow author's (fix the file; not
/// retryable); `NotFound` the caller's; `Store` is the database's
/// (retryable when the store says so).
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
    /// Limits for steps that do not set their own.
    pub default_limits: StepLimits,
    /// Whole-run wall-clock budget (`None`: unbounded).
    pub run_timeout: Option<Duration>,
    /// Values for `${secret:NAME}` placeholders in granted HTTP requests.
    pub secrets: Secrets,
    /// With [`Executor::execute_claimed`]: when nothing runs and every step
    /// left waits (a retry delay, a `delay` step), a wait at least this
    /// long parks the run in the queue instead of holding the worker.
    pub park_after: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_parallel_steps: 16,
            default_limits: StepLimits::default(),
            run_timeout: None,
            secrets: Secrets::empty(),
            park_after: Duration::from_secs(1),
        }
    }
}

/// Inputs for a new run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// `trigger.payload` for templates.
    pub payload: serde_json::Value,
    /// Trigger type recorded with the run (`manual`, `schedule`, `webhook`).
    pub trigger_type: String,
    /// Overrides of the workflow's `vars`.
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// Queue priority.
    pub priority: Priority,
}

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
}

/// Compiled input schemas by (piece digest, action).
pub(crate) type ValidatorCache = std::sync::Mutex<
    std::collections::HashMap<
        (crate::runtime::PieceDigest, String),
        Arc<crate::workflow::InputValidator>,
    >,
>;

type ValidatedCache =
    std::collections::HashMap<(String, i64), Arc<crate::workflow::ValidatedWorkflow>>;

impl Executor {
    /// An executor over these parts.
    pub fn new(
        runtime: Arc<Runtime>,
        registry: Arc<PieceRegistry>,
        store: Arc<dyn Store>,
        config: ExecutorConfig,
    ) -> Self {
        let (events, _) = broadcast::channel(4096);
        // Save-time validation checks steps' limits against this runtime's.
        registry.set_limit_maxima(&runtime.max_limits());
        Executor {
            runtime,
            registry,
            store,
            config,
            events,
            validated: std::sync::Mutex::default(),
            validators: Arc::default(),
        }
    }

    fn validated_cache(&self) -> std::sync::MutexGuard<'_, ValidatedCache> {
        self.validated.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Validate `workflow`, save it (a new version if it changed) and create
    /// a queued run pinned to that version.
    pub async fn submit(
        &self,
        workflow: &Workflow,
        request: RunRequest,
    ) -> Result<RunId, EngineError> {
        validate(workflow, self.registry.as_ref()).map_err(EngineError::Invalid)?;
        let definition = serde_json::from_str::<serde_json::Value>(&workflow.to_json())
            .map_err(|e| EngineError::NotFound(format!("workflow does not serialize: {e}")))?;
        let stored = self
            .store
            .save_workflow(&workflow.name, &definition)
            .await?;
        let trigger_type = if request.trigger_type.is_empty() {
            "manual".to_string()
        } else {
            request.trigger_type
        };
        let run = self
            .store
            .create_run(NewRun {
                workflow_name: stored.name,
                workflow_version: stored.version,
                priority: request.priority,
                trigger: serde_json::json!({ "type": trigger_type, "payload": request.payload }),
                vars: serde_json::Value::Object(request.vars),
                simulated: false,
            })
            .await?;
        Ok(run.id)
    }

    /// Run (or resume) `run` to its end and return its final status. Waits
    /// (retry delays, `delay` steps) are slept here: this is the local
    /// `omniflow run`, where the process is the worker.
    pub async fn execute(
        &self,
        run: RunId,
        cancel: CancellationToken,
    ) -> Result<RunStatus, EngineError> {
        match run::drive(self, run, cancel, None).await? {
            Driven::Finished(status) => Ok(status),
            // Not asked to park, so it never does; the run is queued again.
            Driven::Parked { .. } => Ok(RunStatus::Queued),
        }
    }

    /// Like [`Executor::execute`] for a run a queue worker just claimed
    /// (`claimed` as the claim returned it, so it is not read again): a run
    /// left with only waits of at least [`ExecutorConfig::park_after`] goes
    /// back to the queue with a wake-up time ([`Driven::Parked`]) instead of
    /// holding the worker until then.
    pub async fn execute_claimed(
        &self,
        claimed: ClaimedRun,
        cancel: CancellationToken,
    ) -> Result<Driven, EngineError> {
        run::drive(self, claimed.run.id, cancel, Some(claimed)).await
    }

    /// Resume every run left queued or running (e.g. after a crash).
    pub async fn resume_unfinished(&self) -> Result<Vec<(RunId, RunStatus)>, EngineError> {
        let mut done = Vec::new();
        for run in self.store.unfinished_runs().await? {
            let status = self.execute(run.id, CancellationToken::new()).await?;
            done.push((run.id, status));
        }
        Ok(done)
    }
}
