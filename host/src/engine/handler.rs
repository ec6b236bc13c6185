//! The run's handlers: `on_failure` / `on_success`, run once the run's
//! status is known, before it is written.

use std::time::Instant;

use super::context::{ExecHandle, step_context, template_context};
use super::failure::FailureClass;
use crate::capabilities::http::HttpGrants;
use crate::runtime::{StepCall, cap_error_message};
use crate::store::{RunRecord, RunStatus, StepRecord, StepStatus, now_rfc3339};
use crate::workflow::{Scope, ValidatedWorkflow, render_input};

/// Run `on_failure` / `on_success` (recorded as a step named after the
/// handler). Its own failure is recorded but does not change the run status.
pub(super) async fn run_handler(
    exec: &ExecHandle,
    run: &RunRecord,
    validated: &ValidatedWorkflow,
    status: RunStatus,
    error: Option<&str>,
) {
    let (name, handler, resolved) = match status {
        RunStatus::Failed => (
            "on_failure",
            &validated.workflow.on_failure,
            &validated.on_failure,
        ),
        RunStatus::Succeeded => (
            "on_success",
            &validated.workflow.on_success,
            &validated.on_success,
        ),
        _ => return,
    };
    let (Some(handler), Some(resolved)) = (handler, resolved) else {
        return;
    };
    let Some(piece) = exec.registry.by_digest(&resolved.digest) else {
        return;
    };
    let mut context = template_context(run, &validated.workflow, std::iter::empty());
    if let Ok(records) = exec.store.steps(run.id).await {
        for r in &records {
            context.steps.insert(r.step_id.clone(), step_context(r));
        }
    }
    let mut scope_context = context;
    scope_context.trigger = serde_json::json!({
        "type": run.trigger.get("type"),
        "payload": run.trigger.get("payload"),
        "status": status.as_str(),
        "error": error,
    });
    let started = Instant::now();
    let started_at = now_rfc3339();
    let scope = Scope::new(&scope_context);
    let mut record = StepRecord {
        status: StepStatus::Running,
        started_at: Some(started_at),
        ..StepRecord::pending(&format!("${name}"))
    };
    match render_input(&handler.input, &scope) {
        Err(e) => {
            record.status = StepStatus::Failed;
            record.error_class = Some(FailureClass::TemplateError.as_str().into());
            record.error_message = Some(cap_error_message(e.to_string()));
        }
        Ok(input) => {
            let input = exec.config.llm_defaults.fill(&piece.info().name, input);
            record.input = Some(input.clone());
            let mut call = StepCall::new(&run.id.to_string(), name, &handler.action, input);
            call.limits = exec.config.default_limits.clone();
            match HttpGrants::from_workflow(handler.grants.as_ref(), &exec.config.secrets) {
                Ok(http) => call.http = http.for_run(&validated.workflow),
                Err(e) => tracing::warn!(run = %run.id, "{name}: {e}"),
            }
            let report = exec.runtime.run(&piece, call).await;
            record.attempts = 1;
            record.fuel_used = report.fuel_used;
            record.logs = report.log;
            match report.outcome {
                Ok(output) => {
                    record.status = StepStatus::Succeeded;
                    record.output = Some(output);
                }
                Err(f) => {
                    record.status = StepStatus::Failed;
                    record.error_class = Some(f.class());
                    record.error_message = Some(f.message());
                }
            }
        }
    }
    record.duration_ms = started.elapsed().as_millis() as u64;
    record.finished_at = Some(now_rfc3339());
    if let Err(e) = exec.record_step(&record, None).await {
        tracing::warn!(run = %run.id, "could not record {name}: {e}");
    }
}
