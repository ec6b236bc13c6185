//! The wire documents: what the API answers on success (and the SSE stream
//! sends), as typed structs deriving `Serialize` and `utoipa::ToSchema`, so
//! the OpenAPI document describes exactly what is sent. The CLI's
//! `--json` run document is [`RunDocument`] too.
//!
//! Each is built from the store's records (or the engine's events) here and
//! nowhere else; a test checks the step, attempt and event documents keep
//! the fields of the records they mirror.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::engine::{ItemOf, RunEvent};
use crate::runtime::LoadedPiece;
use crate::store::{
    AttemptRecord, Priority, RunId, RunRecord, RunStatus, StepRecord, StepStatus, Store,
    StoreError, StoredWorkflow,
};

/// A run, short: `POST /workflows/{name}/runs` (queued), `GET /runs`,
/// batch, retry, cancel of a queued run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RunSummary {
    /// Run id (UUID v7).
    #[schema(value_type = String, format = "uuid")]
    pub id: RunId,
    /// Workflow name.
    pub workflow: String,
    /// The pinned workflow version.
    pub workflow_version: i64,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = String, example = "succeeded")]
    pub status: RunStatus,
    /// `critical`, `high`, `normal` or `low`.
    #[schema(value_type = String, example = "normal")]
    pub priority: Priority,
    /// What started it: `manual`, `batch`, `webhook` or `schedule`.
    #[schema(example = "manual")]
    pub trigger_type: Option<String>,
    /// When it was queued (RFC 3339).
    pub created_at: String,
    /// When it first started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// `finished_at - started_at` (or `- created_at`), in ms.
    pub total_time_ms: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// A test run (failure simulation, `trigger.simulate`): left out of
    /// stats and `runs:retry-failed` unless asked for.
    pub test: bool,
}

impl From<&RunRecord> for RunSummary {
    fn from(run: &RunRecord) -> RunSummary {
        RunSummary {
            id: run.id,
            workflow: run.workflow_name.clone(),
            workflow_version: run.workflow_version,
            status: run.status,
            priority: run.priority,
            trigger_type: run
                .trigger
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_owned),
            created_at: run.created_at.clone(),
            started_at: run.started_at.clone(),
            finished_at: run.finished_at.clone(),
            total_time_ms: run.total_time_ms,
            error: run.error.clone(),
            test: run.simulated,
        }
    }
}

/// A run, whole: `GET /runs/{id}`, a waited-for trigger or webhook, and
/// `omniflow run --json` / `omniflow runs show --json`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RunDocument {
    /// The summary's fields.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// What started it: `{"type": "...", "payload": ...}`.
    pub trigger: Value,
    /// Its variable values.
    pub vars: Value,
    /// Every recorded step (handlers' ids start with `$`).
    pub steps: Vec<StepDocument>,
    /// The output of the last step, in definition order, that succeeded.
    pub output: Value,
    /// Every succeeded step's output by step id.
    #[schema(value_type = Object)]
    pub outputs: Map<String, Value>,
}

impl RunDocument {
    /// The document of `run`: its steps and attempts read from `store`.
    pub async fn read(store: &dyn Store, run: &RunRecord) -> Result<RunDocument, StoreError> {
        let records = store.steps(run.id).await?;
        let order: Vec<String> = store
            .get_workflow(&run.workflow_name, Some(run.workflow_version))
            .await?
            .and_then(|w| w.definition.get("steps").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let mut attempts_by_step = store.attempts_by_step(run.id).await?;
        let mut outputs = Map::new();
        let mut steps = Vec::with_capacity(records.len());
        for step in records {
            let attempts = attempts_by_step.remove(&step.step_id).unwrap_or_default();
            if step.status == StepStatus::Succeeded
                && !step.step_id.starts_with('$')
                && let Some(output) = &step.output
            {
                outputs.insert(step.step_id.clone(), output.clone());
            }
            steps.push(StepDocument::new(step, attempts));
        }
        let output = order
            .iter()
            .rev()
            .find_map(|id| outputs.get(id))
            .cloned()
            .unwrap_or(Value::Null);
        Ok(RunDocument {
            summary: RunSummary::from(run),
            trigger: run.trigger.clone(),
            vars: run.vars.clone(),
            steps,
            output,
            outputs,
        })
    }
}

/// One step of a run with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StepDocument {
    /// The step's id within the workflow (`$on_failure`, `$on_success` for handlers).
    pub step_id: String,
    /// `pending`, `running`, `waiting`, `succeeded`, `failed`, `skipped` or `cancelled`.
    #[schema(value_type = String, example = "succeeded")]
    pub status: StepStatus,
    /// The evaluated input of the latest attempt.
    pub input: Option<Value>,
    /// The output once succeeded.
    pub output: Option<Value>,
    /// The class of the latest failure (`retryable`, `fatal`, `out-of-fuel`, ...).
    pub error_class: Option<String>,
    /// The message of the latest failure.
    pub error_message: Option<String>,
    /// Log lines of the step.
    pub logs: String,
    /// Attempts made.
    pub attempts: u32,
    /// Fuel consumed, summed over attempts.
    pub fuel_used: u64,
    /// Execution time, summed over attempts, in ms.
    pub duration_ms: u64,
    /// When the first attempt started.
    pub started_at: Option<String>,
    /// When it reached a final status.
    pub finished_at: Option<String>,
    /// While `waiting`: when it continues.
    pub wake_at: Option<String>,
    /// Attempts made in the current retry budget.
    pub tries: u32,
    /// Every attempt, oldest first.
    pub attempt_details: Vec<AttemptDocument>,
}

impl StepDocument {
    /// The document of `step` with its `attempts`.
    pub fn new(step: StepRecord, attempts: Vec<AttemptRecord>) -> StepDocument {
        StepDocument {
            step_id: step.step_id,
            status: step.status,
            input: step.input,
            output: step.output,
            error_class: step.error_class,
            error_message: step.error_message,
            logs: step.logs,
            attempts: step.attempts,
            fuel_used: step.fuel_used,
            duration_ms: step.duration_ms,
            started_at: step.started_at,
            finished_at: step.finished_at,
            wake_at: step.wake_at,
            tries: step.tries,
            attempt_details: attempts.into_iter().map(AttemptDocument::from).collect(),
        }
    }
}

/// One attempt of one step.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AttemptDocument {
    /// 1-based attempt number.
    pub attempt: u32,
    /// `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = String, example = "failed")]
    pub status: StepStatus,
    /// The evaluated input.
    pub input: Option<Value>,
    /// The output, when it succeeded.
    pub output: Option<Value>,
    /// The error class, when it failed.
    pub error_class: Option<String>,
    /// The error message, when it failed.
    pub error_message: Option<String>,
    /// Log lines of this attempt.
    pub logs: String,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Execution time, in ms.
    pub duration_ms: u64,
    /// When it started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: String,
}

impl From<AttemptRecord> for AttemptDocument {
    fn from(a: AttemptRecord) -> AttemptDocument {
        AttemptDocument {
            attempt: a.attempt,
            status: a.status,
            input: a.input,
            output: a.output,
            error_class: a.error_class,
            error_message: a.error_message,
            logs: a.logs,
            fuel_used: a.fuel_used,
            duration_ms: a.duration_ms,
            started_at: a.started_at,
            finished_at: a.finished_at,
        }
    }
}

/// `GET /runs`: newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunList {
    /// The page of runs.
    pub runs: Vec<RunSummary>,
    /// The page size used.
    pub limit: u32,
    /// Runs skipped before this page.
    pub offset: u32,
}

/// `POST /runs:batch`: every run queued.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchAccepted {
    /// In the order of the request.
    pub runs: Vec<RunSummary>,
}

/// `POST /runs:retry-failed`: the runs queued again.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RetriedRuns {
    /// Their ids.
    #[schema(value_type = Vec<String>)]
    pub retried: Vec<RunId>,
}

/// `POST /runs/{id}/cancel` of a running run: being interrupted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Cancelling {
    /// Run id.
    #[schema(value_type = String, format = "uuid")]
    pub id: RunId,
    /// Always `cancelling`.
    #[schema(example = "cancelling")]
    pub status: &'static str,
}

/// One saved version of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkflowDocument {
    /// Workflow name.
    pub name: String,
    /// 1 for the first save, +1 per changed definition.
    pub version: i64,
    /// When this version was saved (RFC 3339).
    pub created_at: String,
    /// The definition as saved.
    pub definition: Value,
    /// What each piece reference resolved to when this version was saved
    /// (`{"transform@^0.1": {"name", "version", "digest"}}`): its runs
    /// always load those bytes. `{}` for a version saved without pins.
    #[schema(value_type = Object)]
    pub pins: Value,
}

impl From<&StoredWorkflow> for WorkflowDocument {
    fn from(w: &StoredWorkflow) -> WorkflowDocument {
        WorkflowDocument {
            name: w.name.clone(),
            version: w.version,
            created_at: w.created_at.clone(),
            definition: w.definition.clone(),
            pins: w
                .pins
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default())),
        }
    }
}

/// `GET /workflows`: the newest version of each.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowList {
    /// Newest versions.
    pub workflows: Vec<WorkflowDocument>,
}

/// `GET /workflows/{name}/versions`: oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowVersions {
    /// Workflow name.
    pub name: String,
    /// Every saved version.
    pub versions: Vec<WorkflowDocument>,
}

/// One action of a piece.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ActionDocument {
    /// Name used in a step's `action`.
    pub name: String,
    /// One line.
    pub description: String,
    /// JSON Schema of the input.
    pub input_schema: Value,
    /// JSON Schema of the output.
    pub output_schema: Value,
}

/// One installed piece version.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PieceDocument {
    /// Piece name.
    pub name: String,
    /// Semantic version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// One line.
    pub description: String,
    /// sha256 of the component, hex.
    pub digest: String,
    /// Actions with their schemas.
    pub actions: Vec<ActionDocument>,
    /// HTTP destinations it expects to be granted.
    pub http_destinations: Vec<String>,
    /// Secrets it expects the host to place.
    pub secrets: Vec<String>,
}

impl From<&LoadedPiece> for PieceDocument {
    fn from(piece: &LoadedPiece) -> PieceDocument {
        let info = piece.info();
        PieceDocument {
            name: info.name.clone(),
            version: info.version.to_string(),
            description: info.description.clone(),
            digest: piece.digest().hex().to_owned(),
            actions: info
                .actions
                .iter()
                .map(|a| ActionDocument {
                    name: a.name.clone(),
                    description: a.description.clone(),
                    input_schema: a.input_schema.clone(),
                    output_schema: a.output_schema.clone(),
                })
                .collect(),
            http_destinations: info.http_destinations.clone(),
            secrets: info.secrets.clone(),
        }
    }
}

/// `GET /pieces`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PieceList {
    /// Every installed piece version.
    pub pieces: Vec<PieceDocument>,
}

/// `GET /pieces/{name}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PieceVersions {
    /// Piece name.
    pub name: String,
    /// Every installed version.
    pub versions: Vec<PieceDocument>,
}

/// Which `for_each` item of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct ItemDocument {
    /// 0-based position of the item.
    pub index: usize,
    /// Items in the step.
    pub count: usize,
}

impl From<ItemOf> for ItemDocument {
    fn from(item: ItemOf) -> ItemDocument {
        ItemDocument {
            index: item.index,
            count: item.count,
        }
    }
}

/// One server-sent event of `GET /runs/{id}/events` (its `data`; the SSE
/// event name is `event`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEventDocument {
    /// The run started (or resumed).
    RunStarted {
        /// Run id.
        #[schema(value_type = String, format = "uuid")]
        run: RunId,
        /// Steps in the workflow.
        steps: usize,
        /// Steps already finished before this start (resume).
        already_done: usize,
    },
    /// An attempt of a step started.
    StepStarted {
        /// Run id.
        #[schema(value_type = String, format = "uuid")]
        run: RunId,
        /// Step id.
        step: String,
        /// Attempt number over the whole step (1-based).
        attempt: u32,
        /// The try within the current retry budget (1 for a first try).
        tries: u32,
        /// The `for_each` item, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        item: Option<ItemDocument>,
    },
    /// An attempt failed and will be retried after `delay_ms`.
    StepRetrying {
        /// Run id.
        #[schema(value_type = String, format = "uuid")]
        run: RunId,
        /// Step id.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// The `for_each` item, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        item: Option<ItemDocument>,
        /// Wait before the next attempt.
        delay_ms: u64,
        /// Error class and message.
        error: String,
    },
    /// A step is held until `until` (a piece's `$wait_until`).
    StepWaiting {
        /// Run id.
        #[schema(value_type = String, format = "uuid")]
        run: RunId,
        /// Step id.
        step: String,
        /// When it continues (RFC 3339).
        until: String,
    },
    /// The run went back to the queue until `until`.
    RunParked {
        /// Run id.
        #[schema(value_type = String, format = "uuid")]
        run: RunId,
        /// When it is claimed again (RFC 3339).
        until: String,
    },
    /// A step reached a final status.
    StepFinished {
        /// Run id.
        #[schema(value_type = String, format = "uuid")]
        run: RunId,
        /// Step id.
        step: String,
        /// Final status.
        #[schema(value_type = String, example = "succeeded")]
        status: StepStatus,
        /// Attempts made.
        attempts: u32,
        /// Duration of the step, all attempts.
        duration_ms: u64,
        /// Error class and message, when it failed.
        error: Option<String>,
    },
    /// The run reached a final status (the last event).
    RunFinished {
        /// Run id.
        #[schema(value_type = String, format = "uuid")]
        run: RunId,
        /// Final status.
        #[schema(value_type = String, example = "succeeded")]
        status: RunStatus,
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

impl RunEventDocument {
    /// The SSE event name (`run_started`, ..., `run_finished`).
    pub fn name(&self) -> &'static str {
        match self {
            RunEventDocument::RunStarted { .. } => "run_started",
            RunEventDocument::StepStarted { .. } => "step_started",
            RunEventDocument::StepRetrying { .. } => "step_retrying",
            RunEventDocument::StepWaiting { .. } => "step_waiting",
            RunEventDocument::RunParked { .. } => "run_parked",
            RunEventDocument::StepFinished { .. } => "step_finished",
            RunEventDocument::RunFinished { .. } => "run_finished",
        }
    }
}

impl From<&RunEvent> for RunEventDocument {
    fn from(event: &RunEvent) -> RunEventDocument {
        match event.clone() {
            RunEvent::RunStarted {
                run,
                steps,
                already_done,
            } => RunEventDocument::RunStarted {
                run,
                steps,
                already_done,
            },
            RunEvent::StepStarted {
                run,
                step,
                attempt,
                tries,
                item,
            } => RunEventDocument::StepStarted {
                run,
                step,
                attempt,
                tries,
                item: item.map(ItemDocument::from),
            },
            RunEvent::StepRetrying {
                run,
                step,
                attempt,
                item,
                delay_ms,
                error,
            } => RunEventDocument::StepRetrying {
                run,
                step,
                attempt,
                item: item.map(ItemDocument::from),
                delay_ms,
                error,
            },
            RunEvent::StepWaiting { run, step, until } => {
                RunEventDocument::StepWaiting { run, step, until }
            }
            RunEvent::RunParked { run, until } => RunEventDocument::RunParked { run, until },
            RunEvent::StepFinished {
                run,
                step,
                status,
                attempts,
                duration_ms,
                error,
            } => RunEventDocument::StepFinished {
                run,
                step,
                status,
                attempts,
                duration_ms,
                error,
            },
            RunEvent::RunFinished { run, status, error } => {
                RunEventDocument::RunFinished { run, status, error }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step() -> StepRecord {
        StepRecord {
            input: Some(json!({"a": 1})),
            output: Some(json!("out")),
            error_class: Some("retryable".into()),
            error_message: Some("once".into()),
            logs: "line\n".into(),
            attempts: 2,
            fuel_used: 7,
            duration_ms: 3,
            started_at: Some("2026-01-01T00:00:00Z".into()),
            finished_at: Some("2026-01-01T00:00:01Z".into()),
            wake_at: Some("2026-01-01T00:00:02Z".into()),
            tries: 1,
            ..StepRecord::pending("s")
        }
    }

    fn attempt() -> AttemptRecord {
        AttemptRecord {
            attempt: 1,
            status: StepStatus::Failed,
            input: Some(json!(1)),
            output: None,
            error_class: Some("retryable".into()),
            error_message: Some("x".into()),
            logs: String::new(),
            fuel_used: 1,
            duration_ms: 2,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:01Z".into(),
        }
    }

    #[test]
    fn step_and_attempt_documents_keep_every_field_of_their_records() {
        let mut expected = serde_json::to_value(step()).unwrap();
        expected["attempt_details"] = json!([serde_json::to_value(attempt()).unwrap()]);
        let doc = serde_json::to_value(StepDocument::new(step(), vec![attempt()])).unwrap();
        assert_eq!(doc, expected);
    }

    #[test]
    fn event_documents_are_the_engine_events_on_the_wire() {
        let run = RunId::now_v7();
        let events = [
            RunEvent::RunStarted {
                run,
                steps: 2,
                already_done: 0,
            },
            RunEvent::StepStarted {
                run,
                step: "s".into(),
                attempt: 1,
                tries: 1,
                item: Some(ItemOf { index: 0, count: 2 }),
            },
            RunEvent::StepStarted {
                run,
                step: "s".into(),
                attempt: 1,
                tries: 1,
                item: None,
            },
            RunEvent::StepRetrying {
                run,
                step: "s".into(),
                attempt: 1,
                item: None,
                delay_ms: 5,
                error: "retryable: x".into(),
            },
            RunEvent::StepWaiting {
                run,
                step: "s".into(),
                until: "t".into(),
            },
            RunEvent::RunParked {
                run,
                until: "t".into(),
            },
            RunEvent::StepFinished {
                run,
                step: "s".into(),
                status: StepStatus::Succeeded,
                attempts: 1,
                duration_ms: 1,
                error: None,
            },
            RunEvent::RunFinished {
                run,
                status: RunStatus::Failed,
                error: Some("e".into()),
            },
        ];
        for event in &events {
            let doc = RunEventDocument::from(event);
            let wire = serde_json::to_value(&doc).unwrap();
            assert_eq!(wire, serde_json::to_value(event).unwrap());
            assert_eq!(wire["event"], doc.name());
        }
    }
}
