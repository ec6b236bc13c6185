//! `POST /pieces` (install a component) and `DELETE /pieces/{name}/{version}`.
//!
//! An upload goes through the one loader every piece goes through (header,
//! component, import allow-list, world, `info()` under limits), compiled
//! within [`crate::engine::INSTALL_COMPILE_LIMIT`]; each refusal has its own
//! code and nothing is stored for it.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::TokenId;
use super::openapi::ErrorBody;
use super::{ApiError, ApiState};
use crate::engine::EngineError;
use crate::runtime::RuntimeError;
use crate::store::{PieceRecord, PieceWrite};

/// `?replace=true` / `?force=true`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PieceFlags {
    /// Install over the same name@version with other bytes (recorded).
    #[serde(default)]
    replace: bool,
    /// Remove even though workflow versions pin it.
    #[serde(default)]
    force: bool,
}

/// What an install did.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Installed {
    /// `installed`, `unchanged` (the same bytes were installed) or `replaced`.
    status: &'static str,
    /// The stored piece: name, version, digest, size, info, capabilities.
    #[schema(value_type = Object)]
    piece: PieceRecord,
}

fn refused(error: RuntimeError) -> ApiError {
    let code = match &error {
        RuntimeError::NotWasm(_) => "not_wasm",
        RuntimeError::CoreModule => "core_module",
        RuntimeError::Malformed(_) => "malformed_component",
        RuntimeError::ForbiddenImport { .. } => "forbidden_import",
        RuntimeError::WrongWorld { .. } => "wrong_world",
        RuntimeError::InvalidInfo(_) => "invalid_info",
        RuntimeError::CompileLimit(_) => "compile_limit",
        _ => return ApiError::Internal(error.to_string()),
    };
    ApiError::InvalidPiece {
        code,
        message: error.to_string(),
    }
}

/// `POST /pieces`: install the component in the body (`application/wasm`,
/// at most 64 MiB): `201` (new), `200` (the same bytes were installed),
/// `409` (the same name@version with other bytes, unless `?replace=true`).
#[utoipa::path(post, path = "/api/v1/pieces", tag = "pieces", params(("replace" = Option<bool>, Query, description = "Replace the same name@version's bytes")), request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component"), responses((status = 201, description = "Installed", body = Installed), (status = 200, description = "These bytes were installed already", body = Installed), (status = 409, description = "The same name@version is installed with other bytes", body = ErrorBody), (status = 413, description = "Larger than 64 MiB", body = ErrorBody), (status = 422, description = "Not a valid piece (code says why)", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn install(
    State(state): State<ApiState>,
    Query(flags): Query<PieceFlags>,
    request: Request,
) -> Result<Response, ApiError> {
    let installed_by = request.extensions().get::<TokenId>().map(|t| t.0);
    let limit = state.config().piece_limit;
    let timeout = state.config().body_read_timeout;
    let bytes =
        match tokio::time::timeout(timeout, axum::body::to_bytes(request.into_body(), limit)).await
        {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => return Err(ApiError::PayloadTooLarge { limit }),
            Err(_) => return Err(ApiError::RequestTimeout { timeout }),
        };
    if bytes.is_empty() {
        return Err(ApiError::InvalidPiece {
            code: "not_wasm",
            message: "the body is empty: send the component's bytes (application/wasm)".into(),
        });
    }
    let (piece, write) = match state
        .executor()
        .install_piece(&bytes, flags.replace, installed_by)
        .await
    {
        Ok(done) => done,
        Err(EngineError::Piece(error)) => return Err(refused(error)),
        Err(other) => return Err(other.into()),
    };
    let (status, word) = match write {
        PieceWrite::Installed => (StatusCode::CREATED, "installed"),
        PieceWrite::Replaced => (StatusCode::CREATED, "replaced"),
        PieceWrite::Unchanged => (StatusCode::OK, "unchanged"),
    };
    Ok((
        status,
        Json(Installed {
            status: word,
            piece,
        }),
    )
        .into_response())
}

/// `DELETE /pieces/{name}/{version}`: `204`; `409` naming the workflows
/// that pin it unless `?force=true`; `404` when not installed.
#[utoipa::path(delete, path = "/api/v1/pieces/{name}/{version}", tag = "pieces", params(("name" = String, Path, description = "Piece name"), ("version" = String, Path, description = "Exact version"), ("force" = Option<bool>, Query, description = "Remove even if pinned")), responses((status = 204, description = "Removed"), (status = 409, description = "Workflow versions pin it (named)", body = ErrorBody), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn remove(
    State(state): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
    Query(flags): Query<PieceFlags>,
) -> Result<StatusCode, ApiError> {
    crate::names::check(crate::names::NameKind::Piece, &name).map_err(ApiError::InvalidName)?;
    let version: semver::Version = version
        .parse()
        .map_err(|e| ApiError::InvalidRequest(format!("version {version:?}: {e}")))?;
    if state
        .executor()
        .remove_piece(&name, &version, flags.force)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("piece {name}@{version}")))
    }
}
