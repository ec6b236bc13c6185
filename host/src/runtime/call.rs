//! Running one attempt of one action: fresh store, limits, classification.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::omniflow::piece::types::{StepContext, StepError};
use super::{HostBudget, LoadedPiece, Runtime, StepFailure, StepLimits};
use crate::capabilities::secrets::Redactor;

/// One attempt to run: who, what, with which input and limits.
#[derive(Debug, Clone)]
pub struct StepCall {
    /// Run id (UUID text).
    pub run_id: String,
    /// Step id as in the workflow.
    pub step_id: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Stable across attempts of this step.
    pub idempotency_key: String,
    /// Action name.
    pub action: String,
    /// Input JSON.
    pub input: serde_json::Value,
    /// Limits for this attempt.
    pub limits: StepLimits,
    /// Cancelling it interrupts the attempt within one epoch tick.
    pub cancel: CancellationToken,
    /// HTTP destinations (and secrets) this attempt may use; none by default.
    pub http: crate::capabilities::http::HttpGrants,
}

impl StepCall {
    /// A call with default limits, attempt 1 and a derived idempotency key.
    pub fn new(run_id: &str, step_id: &str, action: &str, input: serde_json::Value) -> Self {
        StepCall {
            run_id: run_id.into(),
            step_id: step_id.into(),
            attempt: 1,
            idempotency_key: format!("{run_id}:{step_id}"),
            action: action.into(),
            input,
            limits: StepLimits::default(),
            cancel: CancellationToken::new(),
            http: crate::capabilities::http::HttpGrants::deny_all(),
        }
    }
}

/// How an attempt ended, with everything the run record keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    /// Output JSON, or the classified failure.
    pub outcome: Result<serde_json::Value, StepFailure>,
    /// The step log (log import + stdout + stderr), capped.
    pub log: String,
    /// Whether the log hit its cap.
    pub log_truncated: bool,
    /// Fuel burned.
    pub fuel_used: u64,
    /// Wall time of the whole attempt.
    pub duration: Duration,
}

impl Runtime {
    /// Run one attempt. Never panics, never returns a host error: whatever
    /// happens inside the guest becomes a classified [`StepFailure`].
    ///
    /// Everything the report carries (output, log, error text) has every
    /// secret value of the run redacted (see [`Redactor`]): this is the one
    /// place where what an attempt produced is cleaned before it is stored
    /// or returned.
    pub async fn run(&self, piece: &LoadedPiece, call: StepCall) -> StepReport {
        let started = Instant::now();
        let limits = call.limits.clone();
        let deadline = started + limits.timeout;
        let redactor = call.http.redactor();
        let budget = Arc::new(HostBudget::new(limits.memory_bytes.max(MIN_HOST_BUDGET)));
        let mut store = Self::new_store(
            piece.pre.engine(),
            &call.step_id,
            &limits,
            deadline,
            call.cancel.clone(),
            call.http.clone(),
            super::state::AttemptGuards {
                redactor: redactor.clone(),
                budget: budget.clone(),
            },
        );
        let log = store.data().log.clone();
        let finish =
            |outcome: Result<serde_json::Value, StepFailure>,
             log: &crate::capabilities::log::StepLog,
             fuel_used: u64,
             started: Instant| { finish(outcome, log, fuel_used, started, &redactor) };

        let input = match serde_json::to_string(&call.input) {
            Ok(text) => text,
            Err(e) => {
                return finish(
                    Err(StepFailure::InvalidInput {
                        message: format!("input is not serializable: {e}"),
                    }),
                    &log,
                    0,
                    started,
                );
            }
        };
        let ctx = StepContext {
            run_id: call.run_id.clone(),
            step_id: call.step_id.clone(),
            attempt: call.attempt,
            idempotency_key: call.idempotency_key.clone(),
        };

        // The epoch callback enforces the deadline while wasm runs; this
        // outer timeout also bounds time spent awaiting host I/O.
        let guest = async {
            let instance = piece.pre.instantiate_async(&mut store).await?;
            instance
                .omniflow_piece_handler()
                .call_run(&mut store, &ctx, &call.action, &input)
                .await
        };
        let result = tokio::select! {
            r = tokio::time::timeout(limits.timeout + super::EPOCH_TICK * 5, guest) => Some(r),
            () = call.cancel.cancelled() => None,
        };
        let Some(result) = result else {
            return finish(Err(StepFailure::Cancelled), &log, 0, started);
        };
        let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let outcome = match result {
            Err(_elapsed) => Err(StepFailure::Timeout {
                timeout_ms: limits.timeout.as_millis() as u64,
            }),
            Ok(Err(err)) => {
                let (text, _) = log.snapshot();
                Err(StepFailure::from_call_error(&err, limits.fuel, &text))
            }
            Ok(Ok(Err(step_error))) => Err(match step_error {
                StepError::InvalidInput(message) => StepFailure::InvalidInput { message },
                StepError::Retryable(r) => StepFailure::Retryable {
                    message: r.message,
                    retry_after_ms: r.retry_after_ms,
                },
                StepError::Fatal(message) => StepFailure::Fatal { message },
            }),
            Ok(Ok(Ok(output))) => check_output(&output, limits.output_bytes),
        };
        // A budget breach the guest saw only as an error value still ends
        // the attempt, classified.
        let outcome = match budget.breach() {
            Some(message) if !matches!(outcome, Err(StepFailure::ResourceLimit { .. })) => {
                Err(StepFailure::ResourceLimit {
                    message: format!("resource limit: {message}"),
                })
            }
            _ => outcome,
        };
        // Dropping the store returns the instance slot to the pool.
        drop(store);
        let outcome = outcome.map_err(|failure| name_denial(failure, &log));
        finish(outcome, &log, fuel_used, started)
    }
}

/// The host's denial line ("HTTP request denied: … add \"https://x\" to the
/// step's grants.http"), appended to a piece's own failure message when the
/// attempt had a request refused: a piece only sees `http-request-denied`,
/// so without this the step's error could not name the grant to add.
fn name_denial(failure: StepFailure, log: &crate::capabilities::log::StepLog) -> StepFailure {
    const DENIED: &str = "[host] HTTP request denied: ";
    let (text, _) = log.snapshot();
    let Some(denial) = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(DENIED))
    else {
        return failure;
    };
    failure.map_piece_message(|message| {
        if message.contains(denial) {
            message
        } else {
            format!("{message} (host: HTTP request denied: {denial})")
        }
    })
}

fn check_output(output: &str, limit: usize) -> Result<serde_json::Value, StepFailure> {
    if output.len() > limit {
        return Err(StepFailure::OutputTooLarge {
            size: output.len(),
            limit,
        });
    }
    serde_json::from_str(output).map_err(|e| StepFailure::InvalidOutput {
        message: format!("the output is not JSON: {e}"),
    })
}

/// Host bytes an attempt may hold at least, whatever its memory limit (one
/// full-size response body must fit).
const MIN_HOST_BUDGET: usize = 16 << 20;

fn finish(
    outcome: Result<serde_json::Value, StepFailure>,
    log: &crate::capabilities::log::StepLog,
    fuel_used: u64,
    started: Instant,
    redactor: &Redactor,
) -> StepReport {
    let (log, log_truncated) = log.snapshot();
    let outcome = match outcome {
        Ok(mut output) => {
            redactor.redact_json(&mut output);
            Ok(output)
        }
        Err(failure) => Err(failure.redacted(redactor)),
    };
    StepReport {
        // Error text enters the host here (already redacted): capped before
        // anything keeps it.
        outcome: outcome.map_err(StepFailure::capped),
        log: redactor.redact_str(&log),
        log_truncated,
        fuel_used,
        duration: started.elapsed(),
    }
}
