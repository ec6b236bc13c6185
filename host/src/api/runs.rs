//! `/api/v1/.../runs`: trigger (with optional wait), batch, list, get, live
//! events (SSE), cancel, retry from the failed step, retry every failed run.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::dto::{
    BatchAccepted, Cancelling, RetriedRuns, RunDocument, RunEventDocument, RunList, RunSummary,
};
use super::error::parse_json;
use super::follow::{Follow, finished_event};
use super::names::WorkflowName;
use super::openapi::ErrorBody;
use super::wait::{run_document, wait_for_run};
use super::{ApiError, ApiState, Body};
use crate::engine::RunEvent;
use crate::store::{Priority, RunFilter, RunId, RunRecord, RunStatus};
use crate::triggers::{self, RunRequest, Simulation, TriggerKind};

/// Most runs one `POST /runs:batch` may create.
const MAX_BATCH: usize = 1000;

/// Body of `POST /workflows/{name}/runs` (every field optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerBody {
    /// Overrides of the workflow's `vars`.
    #[serde(default)]
    #[schema(value_type = Object)]
    vars: Map<String, Value>,
    /// `trigger.payload` for templates.
    #[serde(default)]
    payload: Value,
    /// `critical`, `high`, `normal` (default) or `low`.
    #[serde(default)]
    #[schema(value_type = String, example = "normal")]
    priority: Priority,
    /// Wait up to this long for the run to finish.
    #[serde(default)]
    wait_ms: Option<u64>,
    /// Failure simulation (a *test* run): inject retryable faults into this
    /// fraction (0 to 1) of attempts, never the last one a step's retry
    /// policy allows.
    #[serde(default)]
    #[schema(example = 0.3)]
    simulate_failures: Option<f64>,
    /// Which attempts get the faults (default 0): the same seed, the same
    /// attempts. Only with `simulate_failures`.
    #[serde(default)]
    #[schema(example = 7)]
    seed: Option<u64>,
}

/// Query of `POST /workflows/{name}/runs`: `?wait=30s`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerQuery {
    wait: Option<String>,
}

/// One item of `POST /runs:batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchItem {
    /// Workflow name (its newest version is pinned).
    workflow: String,
    /// Overrides of the workflow's `vars`.
    #[serde(default)]
    #[schema(value_type = Object)]
    vars: Map<String, Value>,
    /// `trigger.payload` for templates.
    #[serde(default)]
    payload: Value,
    /// `critical`, `high`, `normal` (default) or `low`.
    #[serde(default)]
    #[schema(value_type = String, example = "normal")]
    priority: Priority,
}

/// Body of `POST /runs:batch`: all or nothing.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    /// At most 1000 runs.
    runs: Vec<BatchItem>,
}

/// Query of `GET /runs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
    test: Option<bool>,
}

/// Body of `POST /runs:retry-failed` (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryFailedBody {
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// At most this many runs (default 100, at most 1000).
    limit: Option<u32>,
    /// Retry test runs (failure simulation) too (default false).
    #[serde(default)]
    include_test: bool,
}

/// The failure simulation a trigger body asks for: `simulate_failures`
/// (0 to 1), `seed` (default 0, only with `simulate_failures`).
fn simulation(
    simulate_failures: Option<f64>,
    seed: Option<u64>,
) -> Result<Option<Simulation>, ApiError> {
    match (simulate_failures, seed) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(ApiError::InvalidField {
            field: "seed",
            message:
                "a seed only applies to a failure simulation; add \"simulate_failures\" (0 to 1)"
                    .into(),
        }),
        (Some(rate), seed) => {
            Simulation::new(rate, seed.unwrap_or(0))
                .map(Some)
                .map_err(|message| ApiError::InvalidField {
                    field: "simulate_failures",
                    message,
                })
        }
    }
}

pub(super) fn run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::InvalidRequest(format!("{text:?} is not a run id (a UUID)")))
}

fn query<T: serde::de::DeserializeOwned + Default>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::InvalidRequest(e.body_text()))
}

/// The answer for a run that may or may not have finished: 200 with the
/// whole run when terminal, else 202 with its id and current status.
pub(super) async fn finished_or_accepted(
    state: &ApiState,
    run: &RunRecord,
) -> Result<Response, ApiError> {
    if run.status.is_terminal() {
        Ok((StatusCode::OK, Json(run_document(state, run).await?)).into_response())
    } else {
        Ok((StatusCode::ACCEPTED, Json(RunSummary::from(run))).into_response())
    }
}

/// `POST /workflows/{name}/runs`: queue a run; with `wait_ms` (or `?wait=30s`)
/// wait for it.
#[utoipa::path(post, path = "/api/v1/workflows/{name}/runs", tag = "runs", params(("name" = String, Path, description = "Workflow name"), ("wait" = Option<String>, Query, description = "Wait up to this long (`30s`) for the run to finish")), request_body(content = TriggerBody, description = "Every field optional"), responses((status = 200, description = "The finished run (when waited for)", body = RunDocument), (status = 202, description = "Queued (or still running when the wait ended): id and status", body = RunSummary), (status = 404, description = "No such resource", body = ErrorBody), (status = 422, description = "`simulate_failures` outside 0 to 1, or `seed` without it (`invalid_field`)", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn trigger(
    State(state): State<ApiState>,
    WorkflowName(name): WorkflowName,
    q: Result<Query<TriggerQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let body: TriggerBody = parse_json(&body.0, true)?;
    let wait = match (&q.wait, body.wait_ms) {
        (Some(text), _) => Some(
            humantime::parse_duration(text)
                .map_err(|e| ApiError::InvalidRequest(format!("wait={text:?}: {e}")))?,
        ),
        (None, Some(ms)) => Some(Duration::from_millis(ms)),
        (None, None) => None,
    };
    let request = RunRequest {
        kind: TriggerKind::Manual,
        payload: body.payload,
        vars: body.vars,
        priority: body.priority,
        simulate: simulation(body.simulate_failures, body.seed)?,
    };
    let run = triggers::start_saved(state.store().as_ref(), &name, request).await?;
    state.queue().wake();
    match wait {
        None => Ok((StatusCode::ACCEPTED, Json(RunSummary::from(&run))).into_response()),
        Some(wait) => {
            let run = wait_for_run(&state, run.id, wait.min(state.config().max_wait)).await?;
            finished_or_accepted(&state, &run).await
        }
    }
}

/// `POST /runs:batch`: queue many runs in one transaction (all or none).
#[utoipa::path(post, path = "/api/v1/runs:batch", tag = "runs", request_body = BatchBody, responses((status = 202, description = "Every run queued, in one transaction", body = BatchAccepted), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn batch(State(state): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let body: BatchBody = parse_json(&body.0, false)?;
    if body.runs.is_empty() || body.runs.len() > MAX_BATCH {
        return Err(ApiError::InvalidRequest(format!(
            "a batch holds 1 to {MAX_BATCH} runs, not {}",
            body.runs.len()
        )));
    }
    let requests = body
        .runs
        .into_iter()
        .map(|item| {
            let request = RunRequest {
                kind: TriggerKind::Batch,
                payload: item.payload,
                vars: item.vars,
                priority: item.priority,
                simulate: None,
            };
            (item.workflow, request)
        })
        .collect();
    let runs = triggers::start_batch(state.store().as_ref(), requests).await?;
    state.queue().wake();
    let runs = runs.iter().map(RunSummary::from).collect();
    Ok((StatusCode::ACCEPTED, Json(BatchAccepted { runs })).into_response())
}

/// `GET /runs?workflow=&status=&since=&limit=&offset=&test=`: newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(("workflow" = Option<String>, Query), ("status" = Option<String>, Query, description = "queued, running, succeeded, failed or cancelled"), ("since" = Option<String>, Query, description = "RFC 3339 time"), ("limit" = Option<u32>, Query), ("offset" = Option<u32>, Query), ("test" = Option<bool>, Query, description = "true: only test runs (failure simulation); false: only the others; absent: both")), responses((status = 200, description = "Runs, newest first", body = RunList), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<ApiState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RunList>, ApiError> {
    let q = query(q)?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let since = q
        .since
        .as_deref()
        .map(|text| parse_instant("since", text))
        .transpose()?;
    let filter = RunFilter {
        workflow: q.workflow,
        status,
        since,
        limit: q.limit.unwrap_or(RunFilter::DEFAULT_LIMIT).clamp(1, 1000),
        offset: q.offset.unwrap_or(0),
        test: q.test,
        ..RunFilter::default()
    };
    let runs = state.store().list_runs(&filter).await?;
    Ok(Json(RunList {
        runs: runs.iter().map(RunSummary::from).collect(),
        limit: filter.limit,
        offset: filter.offset,
    }))
}

/// An RFC 3339 time with any offset (`2026-12-02T10:00:00+02:00`, `…Z`)
/// as the instant it names; `param` names the query parameter in the error.
pub(super) fn parse_instant(param: &str, text: &str) -> Result<SystemTime, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(SystemTime::from)
        .map_err(|e| {
            ApiError::InvalidRequest(format!(
                "{param}={text:?} is not an RFC 3339 time such as \"2026-12-02T10:00:00Z\" or \"2026-12-02T12:00:00+02:00\": {e}"
            ))
        })
}

pub(super) async fn existing(state: &ApiState, id: RunId) -> Result<RunRecord, ApiError> {
    state
        .store()
        .get_run(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {id}")))
}

/// `GET /runs/{id}`: the run with its steps, attempts and output.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", params(("id" = String, Path, description = "Run id (UUID)")), responses((status = 200, description = "The run with its steps (input, output, error, logs, attempts, timings)", body = RunDocument), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<RunDocument>, ApiError> {
    let run = existing(&state, run_id(&id)?).await?;
    Ok(Json(run_document(&state, &run).await?))
}

fn sse_event(event: &RunEvent) -> Event {
    let doc = RunEventDocument::from(event);
    let data = serde_json::to_string(&doc).unwrap_or_else(|_| "null".to_owned());
    Event::default().event(doc.name()).data(data)
}

/// `GET /runs/{id}/events`: server-sent events until the run finishes
/// (`run_started`, `step_started`, `step_retrying`, `step_waiting`,
/// `step_finished`, `run_parked`, `run_finished`). A finished run gets its `run_finished` event at once.
#[utoipa::path(get, path = "/api/v1/runs/{id}/events", tag = "runs", params(("id" = String, Path, description = "Run id (UUID)")), responses((status = 200, description = "Server-sent events until `run_finished`; each event's data", content_type = "text/event-stream", body = RunEventDocument), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn events(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = run_id(&id)?;
    // Subscribe before reading the status so nothing falls in between.
    let follow = Follow::new(state.clone(), id);
    let run = existing(&state, id).await?;
    let first = run.status.is_terminal().then(|| finished_event(&run));
    let stream = futures::stream::unfold((first, follow), |(mut first, mut follow)| async move {
        let event = match first.take() {
            Some(event) => Some(event),
            None if follow.is_done() => None,
            None => follow.next().await,
        }?;
        if matches!(event, RunEvent::RunFinished { .. }) {
            follow.finish();
        }
        Some((Ok(sse_event(&event)), (first, follow)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `POST /runs/{id}/cancel`: a queued run is cancelled at once (200); a
/// running one is interrupted (202, it ends `cancelled`).
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path, description = "Run id (UUID)")), responses((status = 200, description = "A queued run, cancelled", body = RunSummary), (status = 202, description = "A running run, being interrupted", body = Cancelling), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = run_id(&id)?;
    if state.queue().cancel(id) {
        return Ok((StatusCode::ACCEPTED, Json(cancelling(id))).into_response());
    }
    if state.store().cancel_queued_run(id).await? {
        let run = existing(&state, id).await?;
        state.executor().emit(finished_event(&run));
        return Ok((StatusCode::OK, Json(RunSummary::from(&run))).into_response());
    }
    let run = existing(&state, id).await?;
    if run.status.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "run {id} is already {}",
            run.status
        )));
    }
    // Executing in another process (it learns from the store, at once on
    // PostgreSQL), or claimed here between our two checks (the pool cancels
    // it as it registers it).
    if !state.store().request_cancel(id).await? {
        let run = existing(&state, id).await?;
        return Err(ApiError::Conflict(format!(
            "run {id} is already {}",
            run.status
        )));
    }
    state.queue().request_cancel(id);
    Ok((StatusCode::ACCEPTED, Json(cancelling(id))).into_response())
}

fn cancelling(id: RunId) -> Cancelling {
    Cancelling {
        id,
        status: "cancelling",
    }
}

/// `POST /runs/{id}/retry`: queue a failed or cancelled run again from the
/// failed step (succeeded steps are kept).
#[utoipa::path(post, path = "/api/v1/runs/{id}/retry", tag = "runs", params(("id" = String, Path, description = "Run id (UUID)")), responses((status = 202, description = "Queued again from the failed step", body = RunSummary), (status = 409, description = "The run is not failed or cancelled", body = ErrorBody), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn retry(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = triggers::retry(state.store().as_ref(), run_id(&id)?).await?;
    state.queue().wake();
    Ok((StatusCode::ACCEPTED, Json(RunSummary::from(&run))).into_response())
}

/// `POST /runs:retry-failed`: retry every failed run (optionally of one
/// workflow); test runs only with `include_test`.
#[utoipa::path(post, path = "/api/v1/runs:retry-failed", tag = "runs", request_body(content = RetryFailedBody, description = "Optional"), responses((status = 202, description = "The runs queued again", body = RetriedRuns), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn retry_failed(
    State(state): State<ApiState>,
    body: Body,
) -> Result<Response, ApiError> {
    let body: RetryFailedBody = parse_json(&body.0, true)?;
    let limit = body.limit.unwrap_or(100).clamp(1, 1000);
    let retried = triggers::retry_failed(
        state.store().as_ref(),
        body.workflow,
        limit,
        body.include_test,
    )
    .await?;
    state.queue().wake();
    Ok((StatusCode::ACCEPTED, Json(RetriedRuns { retried })).into_response())
}
