//! Driving one run: the scheduler loop over the DAG.
//!
//! Readiness rule (README, "A workflow": handles): a step becomes ready when every step it
//! depends on is final. A dependency is *met* when that step succeeded and,
//! for `needs: ["x.h"]`, chose handle `h`. The step is skipped when it has
//! dependencies and none is met (skip propagates), or when any dependency
//! that names a handle is unmet (an unchosen branch). So a join after a
//! branch (`needs: ["a", "b"]`, one of them skipped) runs on the other.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::step::{StepPlan, run_step};
use super::{EngineError, Executor, RunEvent};
use crate::store::{
    ClaimedRun, Lease, RunRecord, RunStatus, StepRecord, StepStatus, StoreError, now_rfc3339,
    rfc3339,
};
use crate::workflow::{
    Dependency, RunContext, StepContext, TemplateContext, ValidatedWorkflow, Workflow, validate,
};

#[derive(Debug, Clone)]
enum Slot {
    Pending,
    Running,
    /// A retry later, or a held success (`$wait_until`), at this time.
    Waiting(Box<StepRecord>, SystemTime),
    Done(Box<StepRecord>),
}

fn met(dep_record: &StepRecord, handle: Option<&str>) -> bool {
    if dep_record.status != StepStatus::Succeeded {
        return false;
    }
    match handle {
        None => true,
        Some(h) => {
            dep_record
                .output
                .as_ref()
                .and_then(|o| o.get("handle"))
                .and_then(|v| v.as_str())
                == Some(h)
        }
    }
}

/// Whether a ready step runs; `Err(reason)` when it is skipped.
fn should_run(deps: &[Dependency], slots: &[Slot], ids: &[String]) -> Result<(), String> {
    if deps.is_empty() {
        return Ok(());
    }
    // Group by step: needs ["c.then", "c.else"] means "either handle".
    let mut by_step: BTreeMap<usize, Vec<Option<&str>>> = BTreeMap::new();
    for dep in deps {
        by_step
            .entry(dep.step)
            .or_default()
            .push(dep.handle.as_deref());
    }
    let mut any_met = false;
    for (step, handles) in &by_step {
        let Slot::Done(record) = &slots[*step] else {
            unreachable!("dependencies are final before a step is ready")
        };
        let this_met = handles.iter().any(|h| met(record, *h));
        if !this_met && handles.iter().any(Option::is_some) {
            let wanted: Vec<&str> = handles.iter().flatten().copied().collect();
            return Err(format!(
                "branch not taken: steps[{}] did not choose {}",
                ids[*step],
                wanted.join(" or ")
            ));
        }
        any_met |= this_met;
    }
    if any_met {
        Ok(())
    } else {
        Err("every step it needs was skipped".into())
    }
}

fn skipped(step_id: &str, reason: String) -> StepRecord {
    let now = now_rfc3339();
    StepRecord {
        step_id: step_id.to_string(),
        status: StepStatus::Skipped,
        input: None,
        output: None,
        error_class: None,
        error_message: Some(reason),
        logs: String::new(),
        attempts: 0,
        fuel_used: 0,
        duration_ms: 0,
        started_at: None,
        finished_at: Some(now),
        wake_at: None,
        tries: 0,
    }
}

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

pub(super) fn step_context(record: &StepRecord) -> StepContext {
    StepContext {
        output: record.output.clone().unwrap_or(serde_json::Value::Null),
        status: record.status.as_str().to_string(),
    }
}

/// The run's pinned workflow version, validated. Versions never change, so
/// a validated one is kept (per executor, whose piece registry is fixed).
async fn load_workflow(exec: &Executor, run: &RunRecord) -> Result<Arc<ValidatedWorkflow>, String> {
    let key = (run.workflow_name.clone(), run.workflow_version);
    if let Some(hit) = exec.validated_cache().get(&key) {
        return Ok(hit.clone());
    }
    let validated = Arc::new(load_and_validate(exec, run).await?);
    let mut cache = exec.validated_cache();
    if cache.len() >= VALIDATED_CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key, validated.clone());
    Ok(validated)
}

/// Validated workflow versions kept by [`load_workflow`] (then it starts over).
const VALIDATED_CACHE_LIMIT: usize = 1024;

async fn load_and_validate(exec: &Executor, run: &RunRecord) -> Result<ValidatedWorkflow, String> {
    let stored = exec
        .store
        .get_workflow(&run.workflow_name, Some(run.workflow_version))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "workflow {} version {} is missing",
                run.workflow_name, run.workflow_version
            )
        })?;
    let workflow =
        Workflow::from_json(&stored.definition.to_string()).map_err(|e| e.to_string())?;
    exec.prepare_pieces(&workflow)
        .await
        .map_err(|e| e.to_string())?;
    validate(&workflow, exec.registry.as_ref()).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// How [`drive`] left a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driven {
    /// The run reached this terminal status.
    Finished(RunStatus),
    /// Only waits were left: the run is queued again and is not claimed
    /// before `until` (only when driving with parking allowed).
    Parked {
        /// When a worker may claim it again.
        until: SystemTime,
    },
}

fn parse_time(text: Option<&str>) -> SystemTime {
    text.and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .unwrap_or_else(SystemTime::now)
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

/// Drive a run claimed under `claimed.lease` to its end (or, with `park`,
/// until only long waits are left). Every write carries the lease
/// (fencing): once one is refused ([`StoreError::LeaseLost`]), or `lost`
/// is cancelled (the lease renewal found it gone), the run is no longer
/// ours and this returns that error without writing anything more. Any
/// other store error also stops the run (steps in flight are cancelled)
/// and is returned, so the caller stops renewing the lease and the run
/// is taken over once it expires.
pub(super) async fn drive(
    exec: &Executor,
    claimed: ClaimedRun,
    cancel: CancellationToken,
    lost: CancellationToken,
    park: bool,
) -> Result<Driven, EngineError> {
    // Just claimed: the claim returned the row (and whether it has steps),
    // no need to read them again. The claim set it `running`.
    let fresh = !claimed.has_steps;
    let lease = claimed.lease;
    let run_id = claimed.run.id;
    let run = Arc::new(claimed.run);
    let lease_lost = || EngineError::Store(StoreError::LeaseLost { run: run_id });
    let validated = match load_workflow(exec, &run).await {
        Ok(v) => v,
        Err(message) => {
            let error = crate::runtime::cap_error_message(format!("cannot run: {message}"));
            exec.store
                .finish_run(&lease, RunStatus::Failed, Some(&error))
                .await?;
            exec.emit(RunEvent::RunFinished {
                run: run_id,
                status: RunStatus::Failed,
                error: Some(error),
            });
            return Ok(Driven::Finished(RunStatus::Failed));
        }
    };
    let steps = &validated.workflow.steps;
    let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
    let index: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();

    // Resume: final records are kept, waiting ones wait on, anything else
    // runs (again).
    let mut slots = vec![Slot::Pending; steps.len()];
    let mut prior_attempts = vec![0u32; steps.len()];
    let mut resumed: Vec<Option<StepRecord>> = vec![None; steps.len()];
    let records = if fresh {
        Vec::new()
    } else {
        exec.store.steps(run_id).await?
    };
    for record in records {
        let Some(&i) = index.get(record.step_id.as_str()) else {
            continue;
        };
        prior_attempts[i] = record.attempts;
        match record.status {
            StepStatus::Succeeded | StepStatus::Skipped | StepStatus::Failed => {
                slots[i] = Slot::Done(Box::new(record));
            }
            StepStatus::Waiting => {
                let until = parse_time(record.wake_at.as_deref());
                slots[i] = Slot::Waiting(Box::new(record), until);
            }
            // Left `running`/`pending` by a crash or a manual retry: it runs
            // again, carrying its retry budget, logs and fuel on.
            _ => resumed[i] = Some(record),
        }
    }
    let already_done = slots.iter().filter(|s| matches!(s, Slot::Done(_))).count();
    exec.emit(RunEvent::RunStarted {
        run: run_id,
        steps: steps.len(),
        already_done,
    });

    let run_cancel = cancel.child_token();
    // The run's budget counts from its first start, across parks and resumes.
    let first_start = parse_time(run.started_at.as_deref());
    let deadline = exec.config.run_timeout.map(|t| first_start + t);
    let mut running: JoinSet<(usize, Result<StepRecord, EngineError>)> = JoinSet::new();
    let mut failure: Option<String> = slots.iter().find_map(|s| match s {
        Slot::Done(r) if r.status == StepStatus::Failed => Some(step_failed(r)),
        _ => None,
    });
    let mut store_error: Option<EngineError> = None;
    let mut timed_out = false;
    let handle = ExecHandle::new(exec, lease.clone());
    let mut starting: Vec<(usize, StepPlan)> = Vec::new();

    loop {
        let scheduling = failure.is_none() && !run_cancel.is_cancelled();
        // Waits whose time came: a hold succeeds, a retry runs again.
        let now = SystemTime::now();
        for i in 0..slots.len() {
            if !scheduling || running.len() + starting.len() >= exec.config.max_parallel_steps {
                break;
            }
            let Slot::Waiting(record, until) = &slots[i] else {
                continue;
            };
            if *until > now {
                continue;
            }
            let record = (**record).clone();
            if record.error_class.is_none() && record.output.is_some() {
                let done = super::step::finish_hold(&handle, record).await?;
                slots[i] = Slot::Done(Box::new(done));
                continue;
            }
            let deps = &validated.dag.deps[i];
            let plan = StepPlan {
                run: run.clone(),
                workflow: validated.clone(),
                index: i,
                context: dep_context(&run, &validated, deps, &slots, &ids),
                prior_attempts: record.attempts,
                previous: Some(record),
                cancel: run_cancel.clone(),
            };
            starting.push((i, plan));
            slots[i] = Slot::Running;
        }

        // Schedule everything that is ready, in topological order.
        let mut progressed = true;
        while progressed && failure.is_none() && !run_cancel.is_cancelled() {
            progressed = false;
            for &i in &validated.dag.order {
                if !matches!(slots[i], Slot::Pending) {
                    continue;
                }
                let deps = &validated.dag.deps[i];
                if !deps.iter().all(|d| matches!(slots[d.step], Slot::Done(_))) {
                    continue;
                }
                if let Err(reason) = should_run(deps, &slots, &ids) {
                    let record = skipped(&ids[i], reason);
                    handle.record_step(&record, None).await?;
                    exec.emit(RunEvent::StepFinished {
                        run: run_id,
                        step: ids[i].clone(),
                        status: StepStatus::Skipped,
                        attempts: 0,
                        duration_ms: 0,
                        error: None,
                    });
                    slots[i] = Slot::Done(Box::new(record));
                    progressed = true;
                    continue;
                }
                if running.len() + starting.len() >= exec.config.max_parallel_steps {
                    continue;
                }
                let plan = StepPlan {
                    run: run.clone(),
                    workflow: validated.clone(),
                    index: i,
                    context: dep_context(&run, &validated, deps, &slots, &ids),
                    prior_attempts: prior_attempts[i],
                    previous: resumed[i].take(),
                    cancel: run_cancel.clone(),
                };
                starting.push((i, plan));
                slots[i] = Slot::Running;
                progressed = true;
            }
        }

        // A lone step with nothing else running or waiting (a chain) runs
        // inline in this task: no spawn, no cross-thread wake-up to join it.
        let waits = slots.iter().any(|s| matches!(s, Slot::Waiting(..)));
        if let [_] = starting.as_slice()
            && running.is_empty()
            && !waits
            && let Some((i, plan)) = starting.pop()
        {
            // A panic is caught as a spawned task's would be.
            let step = std::panic::AssertUnwindSafe(run_step(&handle, plan)).catch_unwind();
            tokio::pin!(step);
            let result = tokio::select! {
                result = &mut step => result,
                () = sleep_until_opt(deadline), if !timed_out => {
                    timed_out = true;
                    run_cancel.cancel();
                    step.await
                }
            };
            match result {
                Ok(result) => {
                    settle(i, result, &mut slots, &mut failure, &mut store_error);
                    if store_error.is_some() {
                        run_cancel.cancel();
                    }
                }
                Err(_) => {
                    failure.get_or_insert_with(|| "internal error in a step: it panicked".into());
                }
            }
            continue;
        }
        for (i, plan) in starting.drain(..) {
            let handle = handle.clone();
            running.spawn(async move { (i, run_step(&handle, plan).await) });
        }

        // (With every slot busy, a due wait is taken up after the next join.)
        let next_wake = if failure.is_none()
            && !run_cancel.is_cancelled()
            && running.len() < exec.config.max_parallel_steps
        {
            slots
                .iter()
                .filter_map(|s| match s {
                    Slot::Waiting(_, until) => Some(*until),
                    _ => None,
                })
                .min()
        } else {
            None
        };
        if running.is_empty() {
            let Some(wake) = next_wake else { break };
            let left = wake.duration_since(SystemTime::now()).unwrap_or_default();
            if park
                && left >= exec.config.park_after
                && deadline.is_none_or(|d| wake < d)
                && !run_cancel.is_cancelled()
            {
                // Nothing runs, everything left waits: free the worker.
                exec.store.park_run(&lease, wake).await?;
                exec.emit(RunEvent::RunParked {
                    run: run_id,
                    until: rfc3339(wake),
                });
                return Ok(Driven::Parked { until: wake });
            }
            tokio::select! {
                () = sleep_until_opt(Some(wake)) => {}
                () = sleep_until_opt(deadline) => {
                    timed_out = true;
                    run_cancel.cancel();
                }
                () = run_cancel.cancelled() => {}
            }
            continue;
        }
        let joined = tokio::select! {
            joined = running.join_next() => joined,
            () = sleep_until_opt(next_wake) => continue,
            () = sleep_until_opt(deadline), if !timed_out => {
                timed_out = true;
                run_cancel.cancel();
                continue;
            }
        };
        let Some(joined) = joined else { break };
        let (i, result) = match joined {
            Ok(pair) => pair,
            Err(join_error) => {
                // A panicking step task is a host bug; fail the run loudly.
                failure.get_or_insert(format!("internal error in a step task: {join_error}"));
                continue;
            }
        };
        settle(i, result, &mut slots, &mut failure, &mut store_error);
        if store_error.is_some() {
            // The run's state cannot be written (or is no longer ours):
            // stop the steps in flight, write nothing more.
            run_cancel.cancel();
        }
    }

    if lost.is_cancelled() {
        return Err(lease_lost());
    }
    if let Some(err) = store_error {
        return Err(err);
    }
    let (status, error) = if timed_out {
        (RunStatus::Failed, Some("run timed out".to_string()))
    } else if cancel.is_cancelled() {
        (RunStatus::Cancelled, Some("cancelled".to_string()))
    } else if let Some(f) = failure {
        (
            RunStatus::Failed,
            Some(crate::runtime::cap_error_message(f)),
        )
    } else {
        (RunStatus::Succeeded, None)
    };
    // Steps never started (or left waiting) are recorded so the run reads completely.
    for (i, slot) in slots.iter().enumerate() {
        let record = match slot {
            Slot::Pending => {
                let mut record = skipped(&ids[i], format!("not run: the run {}", status.as_str()));
                if status == RunStatus::Cancelled {
                    record.status = StepStatus::Cancelled;
                }
                record
            }
            Slot::Waiting(waiting, _) => {
                let mut record = (**waiting).clone();
                record.status = StepStatus::Cancelled;
                record.wake_at = None;
                record.finished_at = Some(now_rfc3339());
                record.error_message = Some(format!(
                    "stopped while waiting: the run {}",
                    status.as_str()
                ));
                record
            }
            _ => continue,
        };
        handle.record_step(&record, None).await?;
    }

    if lost.is_cancelled() {
        return Err(lease_lost());
    }
    super::step::run_handler(&handle, &run, &validated, status, error.as_deref()).await;

    exec.store
        .finish_run(&lease, status, error.as_deref())
        .await?;
    exec.emit(RunEvent::RunFinished {
        run: run_id,
        status,
        error,
    });
    Ok(Driven::Finished(status))
}

/// Why the run failed, for a failed step.
fn step_failed(record: &StepRecord) -> String {
    format!(
        "step {} failed: {}",
        record.step_id,
        record.error_message.clone().unwrap_or_default()
    )
}

/// Take a step task's result into the run's state.
fn settle(
    i: usize,
    result: Result<StepRecord, EngineError>,
    slots: &mut [Slot],
    failure: &mut Option<String>,
    store_error: &mut Option<EngineError>,
) {
    match result {
        Ok(record) if record.status == StepStatus::Waiting => {
            let until = parse_time(record.wake_at.as_deref());
            slots[i] = Slot::Waiting(Box::new(record), until);
        }
        Ok(record) => {
            if record.status == StepStatus::Failed && failure.is_none() {
                *failure = Some(step_failed(&record));
            }
            slots[i] = Slot::Done(Box::new(record));
        }
        Err(err) => {
            // The store failed: stop scheduling, leave the run resumable.
            failure.get_or_insert(format!("store error: {err}"));
            store_error.get_or_insert(err);
            slots[i] = Slot::Pending;
        }
    }
}

/// The template context of a step: the run plus its dependencies' records.
fn dep_context(
    run: &RunRecord,
    validated: &ValidatedWorkflow,
    deps: &[Dependency],
    slots: &[Slot],
    ids: &[String],
) -> TemplateContext {
    template_context(
        run,
        &validated.workflow,
        deps.iter().filter_map(|d| match &slots[d.step] {
            Slot::Done(r) => Some((ids[d.step].clone(), step_context(r))),
            _ => None,
        }),
    )
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
    fn new(exec: &Executor, lease: Lease) -> Self {
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
