//! Triggers: the one way a run starts. Every run is built here
//! ([`new_run`]) from a typed [`RunRequest`] whose [`TriggerKind`] is
//! recorded with the run (`runs.trigger`: `{"type": "<kind>", "payload": ...}`):
//!
//! - [`start`] / [`start_claimed`]: validate and save a workflow definition,
//!   then queue a run of that version (`omniflow run`, benchmarks, tests);
//! - [`start_saved`]: a run of the newest saved version of a workflow
//!   (`POST /workflows/{name}/runs`); [`start_batch`] many at once, all or
//!   none (`POST /runs:batch`);
//! - [`webhook`]: signature check, replay log and the run of a
//!   `POST /hooks/{workflow}` delivery;
//! - [`schedule`]: the cron [`Scheduler`](schedule::Scheduler), one run per
//!   fire time even with several schedulers on one database;
//! - [`retry`] / [`retry_failed`]: a failed or cancelled run queued again
//!   from its failed step (the same run, its trigger unchanged).
//!
//! The HTTP handlers and the CLI are thin adapters over these functions.
//! Knows the engine, the store, the workflow model and the engine's
//! [`RunQueue`](crate::engine::RunQueue); never the server or HTTP.

pub mod schedule;
pub mod webhook;

use std::collections::HashMap;

use serde_json::{Map, Value};

pub use crate::engine::Simulation;
use crate::engine::{EngineError, Executor};
use crate::store::{
    ClaimedRun, NewRun, Priority, RunFilter, RunId, RunRecord, RunStatus, Store, StoreError,
    StoredWorkflow,
};
use crate::workflow::Workflow;

/// What started a run. Stored as [`TriggerKind::as_str`] in the run's
/// `trigger.type`; runs started through `POST /workflows/{name}/runs` are
/// `manual`, as those started by `omniflow run`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TriggerKind {
    /// `omniflow run`, `POST /api/v1/workflows/{name}/runs`.
    #[default]
    Manual,
    /// One item of `POST /api/v1/runs:batch`.
    Batch,
    /// A signed `POST /hooks/{workflow}`.
    Webhook,
    /// A cron fire time.
    Schedule,
}

impl TriggerKind {
    /// Every kind.
    pub const ALL: [TriggerKind; 4] = [
        TriggerKind::Manual,
        TriggerKind::Batch,
        TriggerKind::Webhook,
        TriggerKind::Schedule,
    ];

    /// The stored name (`manual`, `batch`, `webhook`, `schedule`).
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Manual => "manual",
            TriggerKind::Batch => "batch",
            TriggerKind::Webhook => "webhook",
            TriggerKind::Schedule => "schedule",
        }
    }

    /// The kind a stored `trigger` document names, if any.
    pub fn of(trigger: &Value) -> Option<TriggerKind> {
        let name = trigger.get("type").and_then(Value::as_str)?;
        TriggerKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for TriggerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a trigger asks for: a run of some workflow version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRequest {
    /// What started it (default: manual).
    pub kind: TriggerKind,
    /// `trigger.payload` for templates.
    pub payload: Value,
    /// Overrides of the workflow's `vars`.
    pub vars: Map<String, Value>,
    /// Queue priority.
    pub priority: Priority,
    /// Failure simulation: a *test* run (`runs.simulated`) whose attempts
    /// get injected faults (`trigger.simulate`), SPEC §6.
    pub simulate: Option<Simulation>,
}

impl RunRequest {
    /// A request of `kind` with `payload`, no variables, normal priority.
    pub fn new(kind: TriggerKind, payload: Value) -> RunRequest {
        RunRequest {
            kind,
            payload,
            ..RunRequest::default()
        }
    }
}

/// Why a trigger could not start (or restart) a run.
///
/// Whose fault: `NoWorkflow`, `NoWebhook` the caller's (not retryable);
/// `BadSignature` and `Replayed` the webhook sender's; `Store` the
/// database's (retryable when the store says so).
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No saved workflow of that name.
    #[error("no workflow {0:?}")]
    NoWorkflow(String),
    /// The workflow has no webhook secret (stored, or named by its trigger).
    #[error("no webhook for workflow {0:?}")]
    NoWebhook(String),
    /// The delivery's signature is missing, malformed, stale or wrong.
    #[error(transparent)]
    BadSignature(#[from] webhook::SignatureError),
    /// This signature was accepted before.
    #[error("this webhook delivery was already received (replayed signature)")]
    Replayed,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The run `request` asks for, of `workflow`'s version: the one place a
/// [`NewRun`] is built. A request with a simulation is a test run: flagged
/// `simulated`, its parameters in `trigger.simulate`.
pub fn new_run(workflow: &StoredWorkflow, request: RunRequest) -> NewRun {
    let mut trigger =
        serde_json::json!({ "type": request.kind.as_str(), "payload": request.payload });
    if let Some(simulation) = &request.simulate {
        trigger["simulate"] = simulation.to_json();
    }
    NewRun {
        workflow_name: workflow.name.clone(),
        workflow_version: workflow.version,
        priority: request.priority,
        trigger,
        vars: Value::Object(request.vars),
        simulated: request.simulate.is_some(),
    }
}

/// Validate `workflow`, save it (a new version if it changed) and queue a
/// run of that version.
pub async fn start(
    executor: &Executor,
    workflow: &Workflow,
    request: RunRequest,
) -> Result<RunId, EngineError> {
    let stored = executor.save_workflow(workflow).await?;
    executor.submit(new_run(&stored, request)).await
}

/// Like [`start`], but the run is created already claimed by `executor`
/// (running under its lease, so no queue worker takes it): for
/// [`Executor::execute_leased`] next (`omniflow run`).
pub async fn start_claimed(
    executor: &Executor,
    workflow: &Workflow,
    request: RunRequest,
) -> Result<ClaimedRun, EngineError> {
    let stored = executor.save_workflow(workflow).await?;
    executor.submit_claimed(new_run(&stored, request)).await
}

/// The newest saved version of workflow `name`.
pub async fn newest(store: &dyn Store, name: &str) -> Result<StoredWorkflow, TriggerError> {
    store
        .get_workflow(name, None)
        .await?
        .ok_or_else(|| TriggerError::NoWorkflow(name.to_owned()))
}

/// Queue a run of the newest saved version of workflow `name`. The caller
/// wakes the queue.
pub async fn start_saved(
    store: &dyn Store,
    name: &str,
    request: RunRequest,
) -> Result<RunRecord, TriggerError> {
    let workflow = newest(store, name).await?;
    Ok(store.create_run(new_run(&workflow, request)).await?)
}

/// Queue one run per `(workflow name, request)`, each of that workflow's
/// newest version, in one transaction: all or none. The caller wakes the queue.
pub async fn start_batch(
    store: &dyn Store,
    requests: Vec<(String, RunRequest)>,
) -> Result<Vec<RunRecord>, TriggerError> {
    let mut workflows: HashMap<String, StoredWorkflow> = HashMap::new();
    let mut runs = Vec::with_capacity(requests.len());
    for (name, request) in requests {
        let workflow = match workflows.get(&name) {
            Some(workflow) => workflow,
            None => {
                let workflow = newest(store, &name).await?;
                workflows.entry(name).or_insert(workflow)
            }
        };
        runs.push(new_run(workflow, request));
    }
    Ok(store.create_runs(runs).await?)
}

/// Queue a failed or cancelled run again from its failed step (succeeded
/// steps are kept; the run keeps its trigger). The caller wakes the queue.
pub async fn retry(store: &dyn Store, run: RunId) -> Result<RunRecord, StoreError> {
    store.requeue_for_retry(run).await
}

/// [`retry`] up to `limit` failed runs (of `workflow`, if given), newest
/// first; test runs (failure simulation) only when `include_test`. A run
/// retried by someone else meanwhile is skipped. Returns the runs queued
/// again. The caller wakes the queue.
pub async fn retry_failed(
    store: &dyn Store,
    workflow: Option<String>,
    limit: u32,
    include_test: bool,
) -> Result<Vec<RunId>, StoreError> {
    let filter = RunFilter {
        workflow,
        status: Some(RunStatus::Failed),
        since: None,
        limit,
        offset: 0,
        test: if include_test { None } else { Some(false) },
        ..RunFilter::default()
    };
    let mut retried = Vec::new();
    for run in store.list_runs(&filter).await? {
        match store.requeue_for_retry(run.id).await {
            Ok(run) => retried.push(run.id),
            // Retried by someone else in between: not an error for a bulk call.
            Err(StoreError::InvalidTransition { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(retried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_their_stored_names() {
        let names: Vec<&str> = TriggerKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ["manual", "batch", "webhook", "schedule"]);
        for kind in TriggerKind::ALL {
            let trigger = serde_json::json!({ "type": kind.as_str(), "payload": null });
            assert_eq!(TriggerKind::of(&trigger), Some(kind));
        }
        assert_eq!(TriggerKind::of(&serde_json::json!({"type": "other"})), None);
        assert_eq!(RunRequest::default().kind, TriggerKind::Manual);
    }

    #[test]
    fn a_run_records_its_kind_payload_and_vars() {
        let workflow = StoredWorkflow {
            pins: None,
            name: "w".into(),
            version: 3,
            definition: serde_json::json!({}),
            created_at: String::new(),
        };
        let mut request = RunRequest::new(TriggerKind::Webhook, serde_json::json!({"a": 1}));
        request.vars.insert("x".into(), serde_json::json!(2));
        request.priority = Priority::High;
        let run = new_run(&workflow, request);
        assert_eq!(run.workflow_name, "w");
        assert_eq!(run.workflow_version, 3);
        assert_eq!(run.priority, Priority::High);
        assert_eq!(
            run.trigger,
            serde_json::json!({"type": "webhook", "payload": {"a": 1}})
        );
        assert_eq!(run.vars, serde_json::json!({"x": 2}));
        assert!(!run.simulated);
        assert_eq!(Simulation::from_trigger(&run.trigger), None);
        // The store's own helper builds the same manual run.
        let manual = new_run(&workflow, RunRequest::default());
        assert_eq!(
            manual,
            NewRun::manual("w", 3, Value::Null),
            "a manual run with no vars"
        );
    }

    #[test]
    fn a_simulated_request_is_a_test_run_carrying_its_parameters() {
        let workflow = StoredWorkflow {
            pins: None,
            name: "w".into(),
            version: 1,
            definition: serde_json::json!({}),
            created_at: String::new(),
        };
        let simulation = Simulation::new(0.3, 7).unwrap();
        let request = RunRequest {
            simulate: Some(simulation),
            ..RunRequest::default()
        };
        let run = new_run(&workflow, request);
        assert!(run.simulated);
        assert_eq!(
            run.trigger,
            serde_json::json!({"type": "manual", "payload": null,
                               "simulate": {"failure_rate": 0.3, "seed": 7}})
        );
        assert_eq!(Simulation::from_trigger(&run.trigger), Some(simulation));
    }
}
