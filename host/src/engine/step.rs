//! One step: `when`, `for_each`, input rendering and schema check, attempts
//! with retries, and the persisted record.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::RunEvent;
use super::context::{ExecHandle, sleep_until_opt};
use super::events::ItemOf;
use super::failure::{Failed, FailureClass};
use super::simulate::Simulation;
use crate::capabilities::http::HttpGrants;
use crate::runtime::{
    LoadedPiece, StepCall, StepFailure, StepLimits, StepReport, cap_error_message,
};
use crate::store::{AttemptRecord, RunId, RunRecord, StepRecord, StepStatus, now_rfc3339, rfc3339};
use crate::workflow::{
    RetryPolicy, Scope, Step, TemplateContext, ValidatedWorkflow, eval_for_each, eval_when,
    render_input,
};

pub(super) struct StepPlan {
    pub(super) run: Arc<RunRecord>,
    pub(super) workflow: Arc<ValidatedWorkflow>,
    pub(super) index: usize,
    /// What its templates read; `None` when the step reads no run data
    /// ([`crate::workflow::Step::reads_run_data`]).
    pub(super) context: Option<TemplateContext>,
    pub(super) prior_attempts: u32,
    /// The step's `waiting` record when this continues a retry wait: its
    /// retry budget, logs, fuel and times carry on.
    pub(super) previous: Option<StepRecord>,
    pub(super) cancel: CancellationToken,
    /// The run's failure simulation (a test run), read once from its trigger.
    pub(super) simulation: Option<Simulation>,
}

/// A step still going after this long gets a `running` record; a shorter
/// one writes only its final record (one write instead of two; a crash
/// in between re-runs it, as it would have anyway: execution is at-least-once).
const RUNNING_RECORD_AFTER: Duration = Duration::from_millis(50);

/// How a series of attempts ended.
enum Attempted {
    /// An attempt succeeded.
    Output(serde_json::Value),
    /// No (further) attempt: the step fails.
    Failed(Failed),
    /// An attempt failed retryably: try again at `until`.
    RetryAt {
        until: SystemTime,
        failed: Failed,
        attempt: Box<AttemptRecord>,
    },
    /// An attempt succeeded asking to be held (`$wait_until`) until `until`.
    Hold {
        until: SystemTime,
        output: serde_json::Value,
    },
}

/// Accumulates what a step did across items and attempts.
struct Progress {
    /// Attempt numbers handed out so far for this step (shared by items).
    numbering: Arc<std::sync::atomic::AtomicU32>,
    attempts: u32,
    /// Attempts made in the current retry budget.
    tries: u32,
    fuel_used: u64,
    logs: String,
    /// The successful attempt of a plain (not `for_each`) step, written in
    /// the same transaction as the step's final record (one write fewer).
    final_attempt: Option<AttemptRecord>,
}

fn limits_for(step: &Step, defaults: &StepLimits) -> StepLimits {
    let mut limits = defaults.clone();
    if let Some(l) = &step.limits {
        if let Some(fuel) = l.fuel {
            limits.fuel = fuel;
        }
        if let Some(mb) = l.memory_mb {
            limits.memory_bytes = (mb as usize).saturating_mul(1 << 20);
        }
        if let Some(kb) = l.output_kb {
            limits.output_bytes = (kb as usize).saturating_mul(1 << 10);
        }
    }
    if let Some(timeout) = step.timeout {
        limits.timeout = timeout;
    }
    limits
}

fn retry_delay(policy: &RetryPolicy, failed_attempt: u32, failure: &StepFailure) -> Duration {
    let jitter = if policy.jitter {
        rand::random::<f64>()
    } else {
        0.5
    };
    let delay = policy.delay_for(failed_attempt, jitter);
    // A piece's retry-after is a floor, never shortened by the policy.
    failure
        .retry_after()
        .map_or(delay, |floor| delay.max(floor))
}

/// `now + delay`, saturating at a far future instead of overflowing.
fn wake_time(delay: Duration) -> SystemTime {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = SystemTime::now();
    now.checked_add(delay.min(FAR)).unwrap_or(now)
}

/// Split a piece's `$wait_until` off its output: `Ok(None)` when absent.
fn take_wait_until(output: &mut serde_json::Value) -> Result<Option<SystemTime>, Failed> {
    let Some(value) = output.as_object_mut().and_then(|o| o.remove("$wait_until")) else {
        return Ok(None);
    };
    value
        .as_str()
        .and_then(|text| humantime::parse_rfc3339_weak(text).ok())
        .map(Some)
        .ok_or_else(|| {
            Failed::new(
                FailureClass::InvalidOutput,
                format!(
                    "`$wait_until` must be an RFC 3339 UTC time such as \"2026-12-24T18:00:00Z\", got {value}"
                ),
            )
        })
}

/// Sleep until `until` unless cancelled first (then `Err`).
async fn sleep_until(until: SystemTime, cancel: &CancellationToken) -> Result<(), Failed> {
    tokio::select! {
        () = sleep_until_opt(Some(until)) => Ok(()),
        () = cancel.cancelled() => Err(Failed::from(&StepFailure::Cancelled)),
    }
}

/// Times a step: a resumed step's duration carries on from its record.
struct StepClock {
    started: Instant,
    prior_duration_ms: u64,
}

impl StepClock {
    /// `record` ended with `status` (and `failed`): its error and times set.
    fn finish(
        &self,
        mut record: StepRecord,
        status: StepStatus,
        failed: Option<Failed>,
    ) -> StepRecord {
        record.status = status;
        if let Some(f) = failed {
            record.error_class = Some(f.class);
            // Template errors and `item i:` prefixes are ours; cap them too.
            record.error_message = Some(cap_error_message(f.message));
        }
        record.duration_ms = self.prior_duration_ms + self.started.elapsed().as_millis() as u64;
        if status != StepStatus::Waiting {
            record.finished_at = Some(now_rfc3339());
        }
        record
    }
}

/// Why a step ends before any attempt.
enum NoAttempt {
    /// Its `when` was false (the record's message).
    Skipped(String),
    Failed(Failed),
}

/// Run a step to a final record, or to a `waiting` one (a retry later, or
/// a piece's `$wait_until`) that the scheduler wakes; persisted before returning.
/// One step to its final record, inside a `step` tracing span (the run's
/// span around it), so every log line of the step carries both ids.
pub(super) async fn run_step(
    exec: &ExecHandle,
    plan: StepPlan,
) -> Result<StepRecord, super::EngineError> {
    use tracing::Instrument;
    // The run's id too: steps run in tasks of their own, outside the run's span.
    let span = tracing::info_span!(
        "step",
        run = %plan.run.id,
        step = %plan.workflow.workflow.steps[plan.index].id
    );
    async move {
        let record = run_step_traced(exec, plan).await;
        if let Ok(record) = &record {
            tracing::debug!(
                status = record.status.as_str(),
                attempts = record.attempts,
                "step finished"
            );
        }
        record
    }
    .instrument(span)
    .await
}

async fn run_step_traced(
    exec: &ExecHandle,
    plan: StepPlan,
) -> Result<StepRecord, super::EngineError> {
    let step = &plan.workflow.workflow.steps[plan.index];
    let previous = plan.previous.as_ref();
    let clock = StepClock {
        started: Instant::now(),
        prior_duration_ms: previous.map_or(0, |p| p.duration_ms),
    };
    let started_at = previous
        .and_then(|p| p.started_at.clone())
        .unwrap_or_else(now_rfc3339);
    let scope = plan.context.as_ref().map_or_else(Scope::empty, Scope::new);
    let mut record = StepRecord {
        status: StepStatus::Running,
        attempts: plan.prior_attempts,
        started_at: Some(started_at),
        ..StepRecord::pending(&step.id)
    };

    let piece = match before_attempts(exec, &plan, &scope) {
        Ok(piece) => piece,
        Err(NoAttempt::Failed(failed)) => {
            let record = clock.finish(record, StepStatus::Failed, Some(failed));
            return persist_final(exec, &plan, record).await;
        }
        Err(NoAttempt::Skipped(message)) => {
            let mut record = clock.finish(record, StepStatus::Skipped, None);
            record.error_message = Some(message);
            return persist_final(exec, &plan, record).await;
        }
    };
    // The `running` record is written only if the step is still going after
    // RUNNING_RECORD_AFTER (see below); it keeps what a resumed step did so
    // far, so a crash now loses neither its retry budget nor its logs.
    let mut running = record.clone();
    if let Some(p) = previous {
        running.tries = p.tries;
        running.logs = p.logs.clone();
        running.fuel_used = p.fuel_used;
        running.duration_ms = p.duration_ms;
    }

    let mut progress = Progress {
        numbering: Arc::new(std::sync::atomic::AtomicU32::new(plan.prior_attempts)),
        attempts: plan.prior_attempts,
        tries: running.tries,
        fuel_used: running.fuel_used,
        logs: running.logs.clone(),
        final_attempt: None,
    };
    let work = work(exec, &plan, &piece, &scope, &mut record, &mut progress);
    let outcome = with_running_record(exec, &running, work).await?;

    record.attempts = progress.attempts;
    record.tries = progress.tries;
    record.fuel_used = progress.fuel_used;
    record.logs = progress.logs;
    conclude(exec, &plan, &clock, record, progress.final_attempt, outcome).await
}

/// The step's piece, unless it is missing or the step's `when` says not to run.
fn before_attempts(
    exec: &ExecHandle,
    plan: &StepPlan,
    scope: &Scope,
) -> Result<Arc<LoadedPiece>, NoAttempt> {
    let step = &plan.workflow.workflow.steps[plan.index];
    let resolved = &plan.workflow.pieces[plan.index];
    let Some(piece) = exec.registry.by_digest(&resolved.digest) else {
        return Err(NoAttempt::Failed(Failed::new(
            FailureClass::PieceMissing,
            format!(
                "piece {}@{} (sha256 {}) is not installed",
                resolved.name, resolved.version, resolved.digest
            ),
        )));
    };
    if let Some(when) = &step.when {
        match eval_when(when, scope) {
            Ok(true) => {}
            Ok(false) => return Err(NoAttempt::Skipped(format!("`when` was false: {when}"))),
            Err(e) => {
                return Err(NoAttempt::Failed(Failed::new(
                    FailureClass::TemplateError,
                    format!("when: {e}"),
                )));
            }
        }
    }
    Ok(piece)
}

/// The step's input (or `for_each` items) rendered, and its attempts.
async fn work(
    exec: &ExecHandle,
    plan: &StepPlan,
    piece: &Arc<LoadedPiece>,
    scope: &Scope,
    record: &mut StepRecord,
    progress: &mut Progress,
) -> Attempted {
    let step = &plan.workflow.workflow.steps[plan.index];
    match &step.for_each {
        None => match render_input(&step.input, scope) {
            Ok(input) => {
                let input = exec.with_defaults(piece, input);
                record.input = Some(input.clone());
                attempts(exec, plan, piece, progress, input, None).await
            }
            Err(e) => Attempted::Failed(Failed::new(
                FailureClass::TemplateError,
                format!("input: {e}"),
            )),
        },
        Some(for_each) => match eval_for_each(for_each, scope) {
            Err(e) => Attempted::Failed(Failed::new(
                FailureClass::TemplateError,
                format!("for_each: {e}"),
            )),
            Ok(items) => match run_items(exec, plan, piece, scope, record, progress, items).await {
                Ok(output) => Attempted::Output(output),
                Err(failed) => Attempted::Failed(failed),
            },
        },
    }
}

/// `work` to its end; if it is still going after [`RUNNING_RECORD_AFTER`],
/// the `running` record is written meanwhile.
async fn with_running_record(
    exec: &ExecHandle,
    running: &StepRecord,
    work: impl std::future::Future<Output = Attempted>,
) -> Result<Attempted, crate::store::StoreError> {
    tokio::pin!(work);
    tokio::select! {
        biased;
        outcome = &mut work => Ok(outcome),
        () = tokio::time::sleep(RUNNING_RECORD_AFTER) => {
            let (written, outcome) = futures::join!(
                exec.record_step(running, None),
                &mut work,
            );
            written?;
            Ok(outcome)
        }
    }
}

/// The step's record after its attempts, persisted: final, or waiting (a
/// retry later, a hold).
async fn conclude(
    exec: &ExecHandle,
    plan: &StepPlan,
    clock: &StepClock,
    mut record: StepRecord,
    final_attempt: Option<AttemptRecord>,
    outcome: Attempted,
) -> Result<StepRecord, super::EngineError> {
    let record = match outcome {
        Attempted::Output(output) => {
            record.output = Some(output);
            clock.finish(record, StepStatus::Succeeded, None)
        }
        Attempted::Failed(failed) => {
            let status = if plan.cancel.is_cancelled() {
                StepStatus::Cancelled
            } else {
                StepStatus::Failed
            };
            clock.finish(record, status, Some(failed))
        }
        Attempted::RetryAt {
            until,
            failed,
            attempt,
        } => {
            record.wake_at = Some(rfc3339(until));
            let record = clock.finish(record, StepStatus::Waiting, Some(failed));
            exec.record_step(&record, Some(&attempt)).await?;
            return Ok(record);
        }
        Attempted::Hold { until, output } => {
            record.output = Some(output);
            record.wake_at = Some(rfc3339(until));
            let record = clock.finish(record, StepStatus::Waiting, None);
            exec.record_step(&record, final_attempt.as_ref()).await?;
            exec.emit(RunEvent::StepWaiting {
                run: plan.run.id,
                step: record.step_id.clone(),
                until: rfc3339(until),
            });
            return Ok(record);
        }
    };
    persist_final_with(exec, plan, record, final_attempt.as_ref()).await
}

/// A held step whose time came: it succeeds with the output it was held with.
pub(super) async fn finish_hold(
    exec: &ExecHandle,
    mut record: StepRecord,
) -> Result<StepRecord, super::EngineError> {
    record.status = StepStatus::Succeeded;
    record.wake_at = None;
    record.finished_at = Some(now_rfc3339());
    exec.record_step(&record, None).await?;
    emit_finished(exec, exec.run(), &record);
    Ok(record)
}

fn emit_finished(exec: &ExecHandle, run: RunId, record: &StepRecord) {
    exec.emit(RunEvent::StepFinished {
        run,
        step: record.step_id.clone(),
        status: record.status,
        attempts: record.attempts,
        duration_ms: record.duration_ms,
        error: record
            .error_class
            .as_ref()
            .map(|c| format!("{c}: {}", record.error_message.clone().unwrap_or_default())),
    });
}

async fn persist_final(
    exec: &ExecHandle,
    plan: &StepPlan,
    record: StepRecord,
) -> Result<StepRecord, super::EngineError> {
    persist_final_with(exec, plan, record, None).await
}

async fn persist_final_with(
    exec: &ExecHandle,
    plan: &StepPlan,
    record: StepRecord,
    attempt: Option<&AttemptRecord>,
) -> Result<StepRecord, super::EngineError> {
    exec.record_step(&record, attempt).await?;
    emit_finished(exec, plan.run.id, &record);
    Ok(record)
}

async fn run_items(
    exec: &ExecHandle,
    plan: &StepPlan,
    piece: &Arc<LoadedPiece>,
    scope: &Scope,
    record: &mut StepRecord,
    progress: &mut Progress,
    items: Vec<serde_json::Value>,
) -> Result<serde_json::Value, Failed> {
    let step = &plan.workflow.workflow.steps[plan.index];
    let mut inputs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let input = render_input(&step.input, &scope.with_item(item, i)).map_err(|e| {
            Failed::new(
                FailureClass::TemplateError,
                format!("input (item {i}): {e}"),
            )
        })?;
        inputs.push(exec.with_defaults(piece, input));
    }
    record.input = Some(serde_json::Value::Array(inputs.clone()));
    let concurrency = step.for_each_concurrency().max(1) as usize;
    let count = inputs.len();
    // Each item retries on its own, waiting in place (items are not parked);
    // attempts are numbered per step.
    let results: Vec<(Result<serde_json::Value, Failed>, Progress)> =
        futures::stream::iter(inputs.into_iter().enumerate())
            .map(|(i, input)| {
                let item_record = record.clone();
                let numbering = progress.numbering.clone();
                async move {
                    let mut p = Progress {
                        numbering,
                        attempts: 0,
                        tries: 0,
                        fuel_used: 0,
                        logs: String::new(),
                        final_attempt: None,
                    };
                    let item = ItemOf { index: i, count };
                    let r =
                        item_attempts(exec, plan, piece, item_record, &mut p, input, item).await;
                    (r, p)
                }
            })
            .buffered(concurrency)
            .collect()
            .await;
    let mut outputs = Vec::with_capacity(results.len());
    let mut first_failure = None;
    for (i, (result, p)) in results.into_iter().enumerate() {
        progress.attempts += p.attempts;
        progress.fuel_used += p.fuel_used;
        progress.logs.push_str(&p.logs);
        match result {
            Ok(output) => outputs.push(output),
            Err(f) => {
                first_failure.get_or_insert(Failed {
                    class: f.class,
                    message: format!("item {i}: {}", f.message),
                });
            }
        }
    }
    match first_failure {
        Some(f) => Err(f),
        None => Ok(serde_json::Value::Array(outputs)),
    }
}

/// One `for_each` item to its end: attempts, retry waits and holds in place,
/// each attempt recorded as it ends.
async fn item_attempts(
    exec: &ExecHandle,
    plan: &StepPlan,
    piece: &Arc<LoadedPiece>,
    mut snapshot: StepRecord,
    progress: &mut Progress,
    input: serde_json::Value,
    item: ItemOf,
) -> Result<serde_json::Value, Failed> {
    let host_error = |e: super::EngineError| Failed::new(FailureClass::HostError, e.to_string());
    loop {
        let outcome = attempts(exec, plan, piece, progress, input.clone(), Some(item)).await;
        // The attempt that ended, recorded now (items have no final write of their own).
        let (ended, waiting) = match &outcome {
            Attempted::RetryAt { attempt, .. } => (Some((**attempt).clone()), true),
            _ => (progress.final_attempt.take(), false),
        };
        if let Some(attempt) = ended {
            snapshot.attempts = attempt.attempt;
            snapshot.status = if waiting {
                StepStatus::Waiting
            } else {
                StepStatus::Running
            };
            exec.record_step(&snapshot, Some(&attempt))
                .await
                .map_err(|e| host_error(e.into()))?;
        }
        match outcome {
            Attempted::Output(output) => return Ok(output),
            Attempted::Failed(failed) => return Err(failed),
            Attempted::Hold { until, output } => {
                sleep_until(until, &plan.cancel).await?;
                return Ok(output);
            }
            Attempted::RetryAt { until, .. } => sleep_until(until, &plan.cancel).await?,
        }
    }
}

/// One attempt of one call (one item), with the retry policy deciding what
/// a failure means: the step fails, or it is tried again at a time
/// (returned, not slept: the caller waits or parks). The attempt's record
/// goes to `progress.final_attempt` (succeeded, or failed for good) or
/// comes back with [`Attempted::RetryAt`]; the caller writes it.
async fn attempts(
    exec: &ExecHandle,
    plan: &StepPlan,
    piece: &Arc<LoadedPiece>,
    progress: &mut Progress,
    input: serde_json::Value,
    item: Option<ItemOf>,
) -> Attempted {
    let step = &plan.workflow.workflow.steps[plan.index];
    if let Err(failed) = check_input(exec, piece, step, &input) {
        return Attempted::Failed(failed);
    }
    // Clamped to the runtime's ceilings: a version saved before they were
    // checked (or with larger ones) cannot ask for more.
    let limits = limits_for(step, &exec.config.default_limits).clamped(&exec.runtime.max_limits());
    let http = match HttpGrants::from_workflow(step.grants.as_ref(), &exec.config.secrets) {
        Ok(http) => http.for_run(&plan.workflow.workflow),
        Err(message) => {
            return Attempted::Failed(Failed::new(
                FailureClass::InvalidInput,
                format!("grants: {message}"),
            ));
        }
    };
    let idempotency_key = match item {
        None => format!("{}:{}", plan.run.id, step.id),
        Some(item) => format!("{}:{}:{}", plan.run.id, step.id, item.index),
    };
    let attempt = begin_attempt(exec, plan, progress, item);
    let attempt_started = now_rfc3339();
    // A test run's injected fault replaces the call: the piece does not run.
    let report = match simulated_fault(plan, progress.tries, attempt, item) {
        Some(fault) => fault,
        None => {
            let call = StepCall {
                run_id: plan.run.id.to_string(),
                step_id: step.id.clone(),
                attempt,
                idempotency_key,
                action: step.action.clone(),
                input: input.clone(),
                limits,
                cancel: plan.cancel.clone(),
                http,
            };
            exec.runtime.run(piece, call).await
        }
    };
    progress.fuel_used += report.fuel_used;
    if !report.log.is_empty() {
        progress.logs.push_str(&report.log);
    }
    let attempt_record = attempt_record(attempt, input, &report, attempt_started);
    match report.outcome {
        Ok(output) => succeeded(progress, attempt_record, output),
        Err(failure) => after_failure(exec, plan, progress, attempt_record, &failure, item),
    }
}

/// The report of an injected fault, when the run simulates failures and
/// this try draws one ([`Simulation::injects_into`]: never the policy's
/// last attempt): a retryable `simulated` failure, no fuel, no time.
fn simulated_fault(
    plan: &StepPlan,
    tries: u32,
    attempt: u32,
    item: Option<ItemOf>,
) -> Option<StepReport> {
    let simulation = plan.simulation?;
    let step = &plan.workflow.workflow.steps[plan.index];
    let index = item.map(|i| u32::try_from(i.index).unwrap_or(u32::MAX));
    let max_attempts = step.retry_policy().max_attempts;
    if !simulation.injects_into(&step.id, index, tries, max_attempts) {
        return None;
    }
    let seed = simulation.seed;
    let message = match index {
        None => format!("simulated fault (seed {seed}, attempt {attempt})"),
        Some(i) => format!("simulated fault (seed {seed}, item {i}, attempt {attempt})"),
    };
    Some(StepReport {
        log: format!("[host] {message}: injected before the piece was called\n"),
        outcome: Err(StepFailure::Simulated { message }),
        log_truncated: false,
        fuel_used: 0,
        duration: Duration::ZERO,
    })
}

/// `input` against the action's input schema (when the piece declares the action).
fn check_input(
    exec: &ExecHandle,
    piece: &LoadedPiece,
    step: &Step,
    input: &serde_json::Value,
) -> Result<(), Failed> {
    let Some(action) = piece.info().action(&step.action) else {
        return Ok(());
    };
    match exec.input_validator(piece, &step.action, &action.input_schema) {
        Ok(validator) => {
            let errors = validator.errors(input);
            if errors.is_empty() {
                Ok(())
            } else {
                Err(Failed::new(FailureClass::InvalidInput, errors.join("; ")))
            }
        }
        Err(schema_problem) => Err(Failed::new(
            FailureClass::InvalidInput,
            format!("the action's input schema is unusable: {schema_problem}"),
        )),
    }
}

/// Count a new attempt (numbered per step, across items) and announce it.
fn begin_attempt(
    exec: &ExecHandle,
    plan: &StepPlan,
    progress: &mut Progress,
    item: Option<ItemOf>,
) -> u32 {
    progress.tries += 1;
    let attempt = progress
        .numbering
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        + 1;
    progress.attempts += 1;
    exec.emit(RunEvent::StepStarted {
        run: plan.run.id,
        step: plan.workflow.workflow.steps[plan.index].id.clone(),
        attempt,
        tries: progress.tries,
        item,
    });
    attempt
}

/// The record of attempt `attempt` that `report` tells of.
fn attempt_record(
    attempt: u32,
    input: serde_json::Value,
    report: &StepReport,
    started_at: String,
) -> AttemptRecord {
    let failure = report.outcome.as_ref().err();
    AttemptRecord {
        attempt,
        status: match failure {
            None => StepStatus::Succeeded,
            Some(StepFailure::Cancelled) => StepStatus::Cancelled,
            Some(_) => StepStatus::Failed,
        },
        input: Some(input),
        output: report.outcome.as_ref().ok().cloned(),
        error_class: failure.map(StepFailure::class),
        error_message: failure.map(StepFailure::message),
        logs: report.log.clone(),
        fuel_used: report.fuel_used,
        duration_ms: report.duration.as_millis() as u64,
        started_at,
        finished_at: now_rfc3339(),
    }
}

/// An attempt that returned `output`: the step's output, or a hold when it
/// asks for one (`$wait_until`), or a failure when that is not a time.
fn succeeded(
    progress: &mut Progress,
    attempt_record: AttemptRecord,
    mut output: serde_json::Value,
) -> Attempted {
    // Written with the step's record by the caller.
    progress.final_attempt = Some(attempt_record);
    match take_wait_until(&mut output) {
        Ok(None) => Attempted::Output(output),
        Ok(Some(until)) => Attempted::Hold { until, output },
        Err(failed) => {
            // The attempt's record tells the same story as the step's.
            if let Some(attempt) = progress.final_attempt.as_mut() {
                attempt.status = StepStatus::Failed;
                attempt.error_class = Some(failed.class.clone());
                attempt.error_message = Some(cap_error_message(failed.message.clone()));
            }
            Attempted::Failed(failed)
        }
    }
}

/// An attempt that failed: the step fails, or (a retryable failure with
/// budget left, the run not cancelled) it is tried again after the
/// policy's delay.
fn after_failure(
    exec: &ExecHandle,
    plan: &StepPlan,
    progress: &mut Progress,
    attempt_record: AttemptRecord,
    failure: &StepFailure,
    item: Option<ItemOf>,
) -> Attempted {
    let step = &plan.workflow.workflow.steps[plan.index];
    let policy = exec.retry_policy(step);
    let retry = failure.is_retryable()
        && progress.tries < policy.max_attempts
        && !plan.cancel.is_cancelled();
    if !retry {
        // Written with the step's record by the caller.
        progress.final_attempt = Some(attempt_record);
        return Attempted::Failed(Failed::from(failure));
    }
    let delay = retry_delay(&policy, progress.tries, failure);
    exec.emit(RunEvent::StepRetrying {
        run: plan.run.id,
        step: step.id.clone(),
        attempt: attempt_record.attempt,
        item,
        delay_ms: delay.as_millis() as u64,
        error: format!("{}: {}", failure.class(), failure.message()),
    });
    Attempted::RetryAt {
        until: wake_time(delay),
        failed: Failed::from(failure),
        attempt: Box::new(attempt_record),
    }
}
