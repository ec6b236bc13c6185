//! Following one run for `GET /runs/{id}/events` (SSE), wherever it executes.
//!
//! Events come from two sources, merged without repeats:
//! - this process's executor (every event, as it happens, when the run
//!   executes here);
//! - the store, re-read when nothing came from the executor for
//!   [`RECHECK`] or when another process signals the run finished
//!   ([`Signal::Finished`], PostgreSQL `NOTIFY`): a step record newly
//!   finished becomes `step_finished`, a terminal run `run_finished`. So a
//!   client following a run that a worker on another machine executes sees
//!   each step finish and the run end (`step_started` and `step_retrying`
//!   exist only where the run executes: they are not stored as events).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use super::ApiState;
use super::wait::{event_run, next_signal};
use crate::engine::RunEvent;
use crate::store::{RunId, RunRecord, Signal, StepRecord, StepStatus};

/// How long a follower waits for an event before reading the store.
const RECHECK: Duration = Duration::from_millis(250);

/// The `run_finished` event of a terminal run.
pub(super) fn finished_event(run: &RunRecord) -> RunEvent {
    RunEvent::RunFinished {
        run: run.id,
        status: run.status,
        error: run.error.clone(),
    }
}

fn is_final(status: StepStatus) -> bool {
    !matches!(
        status,
        StepStatus::Pending | StepStatus::Running | StepStatus::Waiting
    )
}

fn step_finished(run: RunId, step: &StepRecord) -> RunEvent {
    let error = match (&step.error_class, &step.error_message) {
        (Some(class), Some(message)) => Some(format!("{class}: {message}")),
        (Some(class), None) => Some(class.clone()),
        (None, message) => message.clone(),
    };
    RunEvent::StepFinished {
        run,
        step: step.step_id.clone(),
        status: step.status,
        attempts: step.attempts,
        duration_ms: step.duration_ms,
        error,
    }
}

/// One follower of one run.
pub(super) struct Follow {
    state: ApiState,
    id: RunId,
    events: broadcast::Receiver<RunEvent>,
    signals: Option<broadcast::Receiver<Signal>>,
    /// Step statuses already sent (from either source).
    sent: HashMap<String, StepStatus>,
    /// Events ready to send, in order.
    ready: std::collections::VecDeque<RunEvent>,
    done: bool,
}

impl Follow {
    /// Follow run `id`; subscribe before reading it so nothing falls between.
    pub(super) fn new(state: ApiState, id: RunId) -> Follow {
        Follow {
            events: state.executor().subscribe(),
            signals: state.store().signals(),
            state,
            id,
            sent: HashMap::new(),
            ready: Default::default(),
            done: false,
        }
    }

    /// The next event, or None once the run finished (or the server stops).
    pub(super) async fn next(&mut self) -> Option<RunEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                if let RunEvent::StepFinished { step, status, .. } = &event
                    && self.sent.get(step) == Some(status)
                {
                    continue; // both sources saw it
                }
                self.note(&event);
                return Some(event);
            }
            if self.done {
                return None;
            }
            let recheck = tokio::time::sleep(RECHECK);
            tokio::select! {
                event = self.events.recv() => match event {
                    Ok(event) if event_run(&event) == self.id => self.ready.push_back(event),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => self.read_store().await,
                    Err(RecvError::Closed) => return None,
                },
                signal = next_signal(&mut self.signals) => match signal {
                    // Finished here, or possibly missed something: re-read.
                    Some(Signal::Finished(run)) if run == self.id => self.read_store().await,
                    Some(Signal::Resync) | None => self.read_store().await,
                    Some(_) => {}
                },
                () = recheck => self.read_store().await,
                () = self.state.shutdown().cancelled() => return None,
            }
        }
    }

    /// Whether the run's end was sent.
    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// The run's end was sent (from elsewhere): nothing follows.
    pub(super) fn finish(&mut self) {
        self.done = true;
    }

    /// Remember what `event` reported, so the store does not repeat it.
    fn note(&mut self, event: &RunEvent) {
        match event {
            RunEvent::StepFinished { step, status, .. } => {
                self.sent.insert(step.clone(), *status);
            }
            RunEvent::StepStarted { step, .. } => {
                self.sent.remove(step);
            }
            RunEvent::RunFinished { .. } => self.done = true,
            _ => {}
        }
    }

    /// Queue what the store shows that was not sent yet.
    async fn read_store(&mut self) {
        let store = self.state.store();
        let Ok(Some(run)) = store.get_run(self.id).await else {
            return;
        };
        if let Ok(steps) = store.steps(self.id).await {
            for step in steps.iter().filter(|s| is_final(s.status)) {
                if self.sent.get(&step.step_id) != Some(&step.status) {
                    self.ready.push_back(step_finished(self.id, step));
                }
            }
        }
        if run.status.is_terminal() {
            self.ready.push_back(finished_event(&run));
        }
    }
}
