//! What the run driver and the step code share: the [`ExecHandle`] a step
//! task runs with, the template context of a run and its steps, and a
//! sleep that may be forever. Imported by `driver.rs`, `run.rs`, `step.rs`
//! and `handler.rs`; imports none of them.

use std::sync::Arc;
use std::time::SystemTime;

use super::{Executor, RunEvent};
use crate::store::{Lease, RunRecord, StepRecord, StoreError};
use crate::workflow::{RunContext, StepContext, TemplateContext, Workflow};

/// The template context of `run`: its trigger, its vars (the workflow's,
/// overridden by the run's) and the given steps' records.
pub(super) fn template_context(
    run: &RunRecord,
    workflow: &Workflow,
    steps: impl IntoIterator<Item = (String, StepContext)>,
) -> TemplateContext {
    let mut vars = workflow.vars.clone();
    if let Some(overrides) = run.vars.as_object() {
        for (k, v) in overrides {
            vars.insert(k.clone(), v.clone());
        }
    }
    TemplateContext {
        trigger: run.trigger.clone(),
        vars,
        steps: steps.into_iter().collect(),
        run: RunContext {
            id: run.id.to_string(),
            workflow: run.workflow_name.clone(),
        },
    }
}

/// What templates see of a step's record (`steps.<id>.output|status`).
pub(super) fn step_context(record: &StepRecord) -> StepContext {
    StepContext {
        output: record.output.clone().unwrap_or(serde_json::Value::Null),
        status: record.status.as_str().to_string(),
    }
}

/// Sleep until `t`, or forever when `None`.
pub(super) async fn sleep_until_opt(t: Option<SystemTime>) {
    match t {
        Some(t) => {
            let left = t.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

/// What a step task needs from the executor (cheap clones, `'static`),
/// for one run driven under `lease`.
#[derive(Clone)]
pub(super) struct ExecHandle {
    pub(super) runtime: Arc<crate::runtime::Runtime>,
    pub(super) registry: Arc<super::PieceRegistry>,
    pub(super) store: Arc<dyn crate::store::Store>,
    pub(super) config: super::ExecutorConfig,
    pub(super) events: tokio::sync::broadcast::Sender<RunEvent>,
    pub(super) validators: Arc<super::ValidatorCache>,
    /// The claim the run is driven under; every write carries it.
    lease: Lease,
}

impl ExecHandle {
    pub(super) fn new(exec: &Executor, lease: Lease) -> Self {
        ExecHandle {
            runtime: exec.runtime.clone(),
            registry: exec.registry.clone(),
            store: exec.store.clone(),
            config: exec.config.clone(),
            events: exec.events.clone(),
            validators: exec.validators.clone(),
            lease,
        }
    }

    /// The run being driven.
    pub(super) fn run(&self) -> crate::store::RunId {
        self.lease.run
    }

    /// Record a step of the run, fenced by the run's lease
    /// ([`StoreError::LeaseLost`] once another claim took it).
    pub(super) async fn record_step(
        &self,
        step: &StepRecord,
        attempt: Option<&crate::store::AttemptRecord>,
    ) -> Result<(), StoreError> {
        self.store
            .record_leased_step(&self.lease, step, attempt)
            .await
    }

    pub(super) fn emit(&self, event: RunEvent) {
        let _ = self.events.send(event);
    }

    /// The retry policy of `step`: its own, else the default one with
    /// [`super::ExecutorConfig::default_max_attempts`].
    pub(super) fn retry_policy(
        &self,
        step: &crate::workflow::Step,
    ) -> crate::workflow::RetryPolicy {
        step.retry
            .clone()
            .unwrap_or_else(|| crate::workflow::RetryPolicy {
                max_attempts: self.config.default_max_attempts,
                ..crate::workflow::RetryPolicy::default()
            })
    }

    /// A rendered input with the process's defaults for `piece` filled in
    /// (`llm` providers, see `defaults.rs`).
    pub(super) fn with_defaults(
        &self,
        piece: &crate::runtime::LoadedPiece,
        input: serde_json::Value,
    ) -> serde_json::Value {
        self.config.llm_defaults.fill(&piece.info().name, input)
    }

    /// The compiled input schema of `action` of `piece` (compiled once per
    /// piece digest and action, then shared).
    pub(super) fn input_validator(
        &self,
        piece: &crate::runtime::LoadedPiece,
        action: &str,
        schema: &serde_json::Value,
    ) -> Result<Arc<crate::workflow::InputValidator>, String> {
        let key = (piece.digest().clone(), action.to_owned());
        let lock = || self.validators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = lock().get(&key) {
            return Ok(hit.clone());
        }
        let compiled = Arc::new(crate::workflow::InputValidator::compile(schema)?);
        lock().insert(key, compiled.clone());
        Ok(compiled)
    }
}
