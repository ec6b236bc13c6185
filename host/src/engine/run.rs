//! One run's state and rules, without the driving (that is `driver.rs`):
//! the slot of each step, the readiness rule, the records the run writes
//! for steps it skips, and the run's pinned workflow version.
//!
//! Readiness rule (README, "A workflow": handles): a step becomes ready when every step it
//! depends on is final. A dependency is *met* when that step succeeded and,
//! for `needs: ["x.h"]`, chose handle `h`. The step is skipped when it has
//! dependencies and none is met (skip propagates), or when any dependency
//! that names a handle is unmet (an unchosen branch). So a join after a
//! branch (`needs: ["a", "b"]`, one of them skipped) runs on the other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::Executor;
use super::context::{step_context, template_context};
use crate::store::{RunRecord, StepRecord, StepStatus, now_rfc3339};
use crate::workflow::{Dependency, TemplateContext, ValidatedWorkflow};

/// Where a step of the run is.
#[derive(Debug, Clone)]
pub(super) enum Slot {
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
pub(super) fn should_run(
    deps: &[Dependency],
    slots: &[Slot],
    ids: &[String],
) -> Result<(), String> {
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

/// The record of a step that does not run.
pub(super) fn skipped(step_id: &str, reason: String) -> StepRecord {
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

/// The run's pinned workflow version, validated. Versions never change, so
/// a validated one is kept (per executor, whose piece registry is fixed).
/// Why a run's pinned workflow version could not be loaded.
#[derive(Debug)]
pub(super) enum LoadFailure {
    /// The database failed in a way worth retrying (a dropped connection):
    /// the run goes back to the queue, unchanged.
    Store(super::EngineError),
    /// The version is missing or no longer valid: the run fails with this.
    Invalid(String),
}

impl LoadFailure {
    /// A store or engine error: retryable ones give the run back, the rest fail it.
    pub(super) fn of(e: impl Into<super::EngineError>) -> LoadFailure {
        let e = e.into();
        if e.is_retryable() {
            LoadFailure::Store(e)
        } else {
            LoadFailure::Invalid(e.to_string())
        }
    }
}

pub(super) async fn load_workflow(
    exec: &Executor,
    run: &RunRecord,
) -> Result<Arc<ValidatedWorkflow>, LoadFailure> {
    let key = (run.workflow_name.clone(), run.workflow_version);
    if let Some(hit) = exec.validated_cache().get(&key) {
        return Ok(hit.clone());
    }
    let validated = Arc::new(load_and_validate(exec, run).await?);
    // Bounded: the least recently used version goes beyond the capacity.
    exec.validated_cache().insert(key, validated.clone());
    Ok(validated)
}

async fn load_and_validate(
    exec: &Executor,
    run: &RunRecord,
) -> Result<ValidatedWorkflow, LoadFailure> {
    let stored = exec
        .store
        .get_workflow(&run.workflow_name, Some(run.workflow_version))
        .await
        .map_err(LoadFailure::of)?
        .ok_or_else(|| {
            LoadFailure::Invalid(format!(
                "workflow {} version {} is missing",
                run.workflow_name, run.workflow_version
            ))
        })?;
    exec.validate_stored(&stored).await
}

/// A stored time, or now when absent or unreadable.
pub(super) fn parse_time(text: Option<&str>) -> SystemTime {
    text.and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .unwrap_or_else(SystemTime::now)
}

/// Why the run failed, for a failed step.
pub(super) fn step_failed(record: &StepRecord) -> String {
    format!(
        "step {} failed: {}",
        record.step_id,
        record.error_message.clone().unwrap_or_default()
    )
}

/// The template context of a step: the run plus its dependencies' records.
pub(super) fn dep_context(
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
