//! Waiting for a run to finish (trigger `wait`, sync webhooks) and the run
//! document every run endpoint returns.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, ApiState};
use crate::engine::RunEvent;
use crate::store::{RunId, RunRecord, StepStatus};

/// How often a waiter re-reads the store even without an event (the run
/// may be executed by another process, or our receiver lagged).
const RECHECK: Duration = Duration::from_secs(1);

/// The run whose id an event is about.
pub(super) fn event_run(event: &RunEvent) -> RunId {
    match event {
        RunEvent::RunStarted { run, .. }
        | RunEvent::StepStarted { run, .. }
        | RunEvent::StepRetrying { run, .. }
        | RunEvent::StepFinished { run, .. }
        | RunEvent::StepWaiting { run, .. }
        | RunEvent::RunParked { run, .. }
        | RunEvent::RunFinished { run, .. } => *run,
    }
}

/// Wait until run `id` is terminal, `timeout` passes or the server shuts
/// down; returns the run as it is then (never an empty timeout).
pub(super) async fn wait_for_run(
    state: &ApiState,
    id: RunId,
    timeout: Duration,
) -> Result<RunRecord, ApiError> {
    // Subscribe before reading, so a finish between the two is not missed.
    let mut events = state.executor().subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let run = state
            .store()
            .get_run(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("run {id}")))?;
        if run.status.is_terminal() || tokio::time::Instant::now() >= deadline {
            return Ok(run);
        }
        let recheck = tokio::time::Instant::now() + RECHECK;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(RunEvent::RunFinished { run, .. }) if run == id => break,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => {
                        tokio::time::sleep_until(recheck.min(deadline)).await;
                        break;
                    }
                },
                () = tokio::time::sleep_until(recheck.min(deadline)) => break,
                () = state.shutdown().cancelled() => {
                    return state.store().get_run(id).await?
                        .ok_or_else(|| ApiError::NotFound(format!("run {id}")));
                }
            }
        }
    }
}

/// The short form: id, workflow, status, priority, times, error.
pub(super) fn run_summary(run: &RunRecord) -> Value {
    json!({
        "id": run.id,
        "workflow": run.workflow_name,
        "workflow_version": run.workflow_version,
        "status": run.status,
        "priority": run.priority,
        "trigger_type": run.trigger.get("type"),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "total_time_ms": run.total_time_ms,
        "error": run.error,
    })
}

/// The full run: record, every step with its attempts, and `output` (the
/// output of the last step, in definition order, that succeeded) plus
/// `outputs` (every succeeded step's output by step id).
pub(super) async fn run_document(state: &ApiState, run: &RunRecord) -> Result<Value, ApiError> {
    let store = state.store();
    let steps = store.steps(run.id).await?;
    let order: Vec<String> = store
        .get_workflow(&run.workflow_name, Some(run.workflow_version))
        .await?
        .and_then(|w| w.definition.get("steps").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let mut outputs = serde_json::Map::new();
    let mut step_docs = Vec::with_capacity(steps.len());
    for step in &steps {
        let attempts = store.attempts(run.id, &step.step_id).await?;
        if step.status == StepStatus::Succeeded
            && !step.step_id.starts_with('$')
            && let Some(output) = &step.output
        {
            outputs.insert(step.step_id.clone(), output.clone());
        }
        let mut doc = serde_json::to_value(step).map_err(|e| ApiError::Internal(e.to_string()))?;
        doc["attempt_details"] =
            serde_json::to_value(&attempts).map_err(|e| ApiError::Internal(e.to_string()))?;
        step_docs.push(doc);
    }
    let output = order
        .iter()
        .rev()
        .find_map(|id| outputs.get(id))
        .cloned()
        .unwrap_or(Value::Null);
    let mut doc = run_summary(run);
    doc["trigger"] = run.trigger.clone();
    doc["vars"] = run.vars.clone();
    doc["steps"] = Value::Array(step_docs);
    doc["output"] = output;
    doc["outputs"] = Value::Object(outputs);
    Ok(doc)
}
