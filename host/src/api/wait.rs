//! Waiting for a run to finish (trigger `wait`, sync webhooks).

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::dto::RunDocument;
use super::{ApiError, ApiState};
use crate::engine::RunEvent;
use crate::store::{RunId, RunRecord, Signal};

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
    // Another process may execute it: its finish is signalled (PostgreSQL).
    let mut signals = state.store().signals();
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
                signal = next_signal(&mut signals) => match signal {
                    Some(Signal::Finished(run)) if run == id => break,
                    Some(Signal::Resync) | None => break,
                    Some(_) => continue,
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

/// The next signal; None when one may have been missed (lagged) or the
/// channel closed (then the store is read, and signals are off). Pending
/// forever without signals.
pub(super) async fn next_signal(
    signals: &mut Option<tokio::sync::broadcast::Receiver<Signal>>,
) -> Option<Signal> {
    let Some(receiver) = signals.as_mut() else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(signal) => Some(signal),
        Err(RecvError::Lagged(_)) => None,
        Err(RecvError::Closed) => {
            *signals = None;
            None
        }
    }
}

/// The whole run as the API sends it (see [`RunDocument::read`]).
pub(super) async fn run_document(
    state: &ApiState,
    run: &RunRecord,
) -> Result<RunDocument, ApiError> {
    Ok(RunDocument::read(state.store().as_ref(), run).await?)
}
