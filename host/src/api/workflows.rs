//! `/api/v1/workflows...`: create, read, update (new version), delete,
//! versions, validate, webhook secret.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::dto::{WorkflowDocument, WorkflowList, WorkflowVersions};
use super::dto_system::{ScheduleList, ValidationReport, WebhookSecret};
use super::names::WorkflowName;
use super::openapi::ErrorBody;
use super::{ApiError, ApiState, Body};
use crate::engine::EngineError;
use crate::store::StoredWorkflow;
use crate::triggers::schedule::{self, SyncError};
use crate::workflow::{ValidatedWorkflow, ValidationError, Workflow};

fn body_text(body: &Body) -> Result<&str, ApiError> {
    std::str::from_utf8(&body.0)
        .map_err(|_| ApiError::MalformedBody("the body is not UTF-8".into()))
}

/// Parse and validate a workflow body (its pieces resolved, its trigger checked).
async fn checked_workflow(state: &ApiState, body: &Body) -> Result<ValidatedWorkflow, ApiError> {
    let workflow = Workflow::from_json(body_text(body)?)
        .map_err(|e| ApiError::MalformedBody(e.to_string()))?;
    let validated = state.executor().validate_workflow(&workflow).await?;
    schedule::check_trigger(&workflow).map_err(|e| {
        ApiError::InvalidWorkflow(vec![ValidationError {
            at: "trigger".into(),
            message: e.to_string(),
        }])
    })?;
    Ok(validated)
}

/// Store the saved workflow's schedule (or drop it).
async fn sync_schedule(state: &ApiState, stored: &StoredWorkflow) -> Result<(), ApiError> {
    let now = state.scheduler().clock().now();
    match schedule::sync_workflow(state.store().as_ref(), stored, now).await {
        Ok(()) => Ok(()),
        Err(SyncError::Store(e)) => Err(e.into()),
        Err(SyncError::Schedule(e)) => Err(ApiError::InvalidWorkflow(vec![ValidationError {
            at: "trigger".into(),
            message: e.to_string(),
        }])),
    }
}

/// `GET /schedules`: every cron trigger with its next fire time.
#[utoipa::path(get, path = "/api/v1/schedules", tag = "workflows", responses((status = 200, description = "Cron triggers with their next fire time", body = ScheduleList), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn schedules(
    State(state): State<ApiState>,
) -> Result<Json<ScheduleList>, ApiError> {
    let schedules = state.store().list_schedules().await?;
    Ok(Json(ScheduleList {
        schedules: schedules.into_iter().map(Into::into).collect(),
    }))
}

/// `POST /workflows`: create; 409 when the name exists (use PUT).
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows", request_body(content = serde_json::Value, description = "A workflow definition (README, \"A workflow\")"), responses((status = 201, description = "Saved as version 1", body = WorkflowDocument), (status = 409, description = "A workflow of that name exists", body = ErrorBody), (status = 422, description = "The workflow does not validate; every problem listed", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn create(
    State(state): State<ApiState>,
    body: Body,
) -> Result<Response, ApiError> {
    let validated = checked_workflow(&state, &body).await?;
    let workflow = &validated.workflow;
    if state
        .store()
        .get_workflow(&workflow.name, None)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(format!(
            "workflow {:?} exists; PUT /api/v1/workflows/{} saves a new version",
            workflow.name, workflow.name
        )));
    }
    // Saved with its pins: every piece reference resolved to exact bytes.
    let stored = state.executor().save_validated(&validated).await?;
    sync_schedule(&state, &stored).await?;
    Ok((StatusCode::CREATED, Json(WorkflowDocument::from(&stored))).into_response())
}

/// `PUT /workflows/{name}`: save a new version (or create); the body's name must match.
#[utoipa::path(put, path = "/api/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name")), request_body(content = serde_json::Value, description = "The new definition; saved as a new version if it changed"), responses((status = 200, description = "Saved (a new version when changed)", body = WorkflowDocument), (status = 201, description = "Created", body = WorkflowDocument), (status = 422, description = "The workflow does not validate", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn update(
    State(state): State<ApiState>,
    WorkflowName(name): WorkflowName,
    body: Body,
) -> Result<Response, ApiError> {
    let validated = checked_workflow(&state, &body).await?;
    let workflow = &validated.workflow;
    if workflow.name != name {
        return Err(ApiError::InvalidRequest(format!(
            "the body names workflow {:?} but the path says {name:?}",
            workflow.name
        )));
    }
    let existed = state.store().get_workflow(&name, None).await?.is_some();
    // Saving again re-resolves the pins (a new version when one changed).
    let stored = state.executor().save_validated(&validated).await?;
    sync_schedule(&state, &stored).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(WorkflowDocument::from(&stored))).into_response())
}

/// `GET /workflows`: the newest version of each workflow.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", responses((status = 200, description = "Newest version of every workflow", body = WorkflowList), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<WorkflowList>, ApiError> {
    let workflows = state.store().list_workflows().await?;
    Ok(Json(WorkflowList {
        workflows: workflows.iter().map(WorkflowDocument::from).collect(),
    }))
}

/// `GET /workflows/{name}`: the newest version.
#[utoipa::path(get, path = "/api/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name")), responses((status = 200, description = "The newest version", body = WorkflowDocument), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn get_one(
    State(state): State<ApiState>,
    WorkflowName(name): WorkflowName,
) -> Result<Json<WorkflowDocument>, ApiError> {
    let stored = state
        .store()
        .get_workflow(&name, None)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workflow {name:?}")))?;
    Ok(Json(WorkflowDocument::from(&stored)))
}

/// `GET /workflows/{name}/versions`: every version, oldest first.
#[utoipa::path(get, path = "/api/v1/workflows/{name}/versions", tag = "workflows", params(("name" = String, Path, description = "Workflow name")), responses((status = 200, description = "Every saved version", body = WorkflowVersions), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn versions(
    State(state): State<ApiState>,
    WorkflowName(name): WorkflowName,
) -> Result<Json<WorkflowVersions>, ApiError> {
    let versions = state.store().workflow_versions(&name).await?;
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!("workflow {name:?}")));
    }
    Ok(Json(WorkflowVersions {
        name,
        versions: versions.iter().map(WorkflowDocument::from).collect(),
    }))
}

/// `DELETE /workflows/{name}`: hide it (runs keep their pinned version).
#[utoipa::path(delete, path = "/api/v1/workflows/{name}", tag = "workflows", params(("name" = String, Path, description = "Workflow name")), responses((status = 204, description = "Hidden (runs keep their pinned version)"), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    WorkflowName(name): WorkflowName,
) -> Result<StatusCode, ApiError> {
    if state.store().delete_workflow(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("workflow {name:?}")))
    }
}

/// `POST /workflows:validate`: 200 with `{"valid": bool, "problems": [...]}`.
#[utoipa::path(post, path = "/api/v1/workflows:validate", tag = "workflows", request_body(content = serde_json::Value, description = "A workflow definition"), responses((status = 200, description = "`{valid, problems}`", body = ValidationReport), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn validate_only(
    State(state): State<ApiState>,
    body: Body,
) -> Result<Json<ValidationReport>, ApiError> {
    let problems = match Workflow::from_json(body_text(&body)?) {
        Err(e) => vec![ValidationError {
            at: "workflow".into(),
            message: e.to_string(),
        }],
        Ok(workflow) => match state.executor().validate_workflow(&workflow).await {
            Ok(_) => Vec::new(),
            Err(EngineError::Invalid(problems)) => problems,
            Err(other) => return Err(other.into()),
        },
    };
    Ok(Json(ValidationReport {
        valid: problems.is_empty(),
        problems: problems.iter().map(Into::into).collect(),
    }))
}

/// `PUT /workflows/{name}/webhook`: a new webhook secret, shown this once.
#[utoipa::path(put, path = "/api/v1/workflows/{name}/webhook", tag = "workflows", params(("name" = String, Path, description = "Workflow name")), responses((status = 200, description = "A new webhook secret, shown once", body = WebhookSecret), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn set_webhook(
    State(state): State<ApiState>,
    WorkflowName(name): WorkflowName,
) -> Result<Json<WebhookSecret>, ApiError> {
    let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()));
    state.store().set_webhook_secret(&name, &secret).await?;
    Ok(Json(WebhookSecret {
        url: format!("/hooks/{name}"),
        workflow: name,
        secret,
        signature_header: super::SIGNATURE_HEADER.to_string(),
    }))
}
