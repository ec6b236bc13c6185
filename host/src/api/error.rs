//! [`ApiError`]: the one error type of the HTTP boundary, and the body
//! parsers that turn malformed input into it (never axum's plain-text
//! rejections).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::engine::EngineError;
use crate::store::StoreError;
use crate::triggers::TriggerError;
use crate::workflow::ValidationError;

/// Everything an API call can answer instead of success. Rendered as
/// `{"error": {"code": "...", "message": "..."}}` with the status below.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed_body`: the body is not valid JSON of the expected
    /// shape (syntax, wrong type, unknown or missing field). The caller's.
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    /// 400 `invalid_request`: a path or query parameter is wrong. The caller's.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `invalid_name`: a workflow, piece or secret name in the path
    /// breaks the name grammar ([`crate::names`]); the message states the
    /// rule. The caller's.
    #[error(transparent)]
    InvalidName(#[from] crate::names::NameError),
    /// 422 `invalid_workflow`: the workflow does not validate; every problem
    /// is listed. The workflow author's.
    #[error("the workflow is invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidWorkflow(Vec<ValidationError>),
    /// 422 `reserved_name`: the name belongs to the server's own
    /// configuration (`OMNIFLOW_*`) and can never be a secret. The caller's.
    #[error("{0}")]
    ReservedName(String),
    /// 422 `invalid_field`: a body field is well-formed JSON but its value
    /// is not acceptable (`simulate_failures: 1.5`, `seed` without
    /// `simulate_failures`); `field` names it. The caller's.
    #[error("{field}: {message}")]
    InvalidField {
        /// The field's name in the body.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// 401 `unauthorized`: no bearer token, or an unknown or revoked one. The caller's.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 401 `bad_signature`: a webhook whose signature is missing, malformed,
    /// stale or wrong. The sender's.
    #[error("{0}")]
    BadSignature(&'static str),
    /// 404 `not_found`: no such workflow, run, piece or route. The caller's.
    #[error("not found: {0}")]
    NotFound(String),
    /// 405 `method_not_allowed`: the route exists but not with this method. The caller's.
    #[error("this route does not take that method")]
    MethodNotAllowed,
    /// 409 `conflict`: the resource is not in a state that allows this
    /// (retrying a succeeded run, creating a workflow that exists). The caller's.
    #[error("{0}")]
    Conflict(String),
    /// 409 `replayed`: this webhook signature was already accepted. The sender's.
    #[error("this webhook delivery was already received (replayed signature)")]
    Replayed,
    /// 413 `payload_too_large`: the body exceeds the limit. The caller's.
    #[error("the request body is too large (limit {limit} bytes)")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// 408 `request_timeout`: the body did not arrive in time. The caller's.
    #[error("the request body did not arrive within {timeout:?}")]
    RequestTimeout {
        /// The configured body read timeout.
        timeout: std::time::Duration,
    },
    /// 429 `too_many_requests`: this client failed authentication too often;
    /// `Retry-After` says when it may try again. The caller's.
    #[error(
        "too many failed authentication attempts from this address; retry after {retry_after_secs} s"
    )]
    TooManyRequests {
        /// Seconds until the client's window ends.
        retry_after_secs: u64,
    },
    /// 422 with a code per reason (`not_wasm`, `core_module`,
    /// `malformed_component`, `forbidden_import`, `wrong_world`,
    /// `invalid_info`, `compile_limit`): an uploaded piece the loader
    /// refused. The caller's; nothing was stored.
    #[error("{message}")]
    InvalidPiece {
        /// The reason's code.
        code: &'static str,
        /// The loader's message.
        message: String,
    },
    /// 503 `unavailable`: the database is busy or down, or the server is
    /// shutting down. Ours; retryable.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 500 `internal`: a bug or corrupt data. Ours; the details are logged,
    /// not sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody(_) | ApiError::InvalidRequest(_) | ApiError::InvalidName(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::InvalidWorkflow(_)
            | ApiError::ReservedName(_)
            | ApiError::InvalidField { .. }
            | ApiError::InvalidPiece { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) | ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::Replayed => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedBody(_) => "malformed_body",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidName(_) => "invalid_name",
            ApiError::InvalidWorkflow(_) => "invalid_workflow",
            ApiError::ReservedName(_) => "reserved_name",
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::BadSignature(_) => "bad_signature",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Replayed => "replayed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::InvalidPiece { code, .. } => code,
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error answering an API call");
        }
        let mut error = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        if let ApiError::InvalidWorkflow(problems) = &self {
            error["problems"] = problems_json(problems);
        }
        let mut response =
            (self.status(), Json(serde_json::json!({ "error": error }))).into_response();
        if let ApiError::TooManyRequests { retry_after_secs } = &self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_secs),
            );
        }
        response
    }
}

/// `[{"at": "steps[x]", "message": "..."}]`
pub(crate) fn problems_json(problems: &[ValidationError]) -> serde_json::Value {
    problems
        .iter()
        .map(|p| serde_json::json!({ "at": p.at, "message": p.message }))
        .collect()
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::InvalidTransition { run, from, to } => {
                ApiError::Conflict(format!("run {run} is {from} and cannot become {to}"))
            }
            StoreError::Unavailable(message) => ApiError::Unavailable(message),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        match error {
            EngineError::Invalid(problems) => ApiError::InvalidWorkflow(problems),
            EngineError::NotFound(what) => ApiError::NotFound(what),
            EngineError::Store(e) => e.into(),
            EngineError::Piece(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<TriggerError> for ApiError {
    fn from(error: TriggerError) -> ApiError {
        match error {
            TriggerError::NoWorkflow(name) => ApiError::NotFound(format!("workflow {name:?}")),
            TriggerError::NoWebhook(name) => {
                ApiError::NotFound(format!("no webhook for workflow {name:?}"))
            }
            TriggerError::BadSignature(e) => ApiError::BadSignature(e.message()),
            TriggerError::Replayed => ApiError::Replayed,
            TriggerError::Store(e) => e.into(),
        }
    }
}

/// A body-buffering failure (the body limit, a broken connection) as an [`ApiError`].
pub(crate) fn body_rejection(
    rejection: axum::extract::rejection::BytesRejection,
    limit: usize,
) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::MalformedBody(rejection.body_text())
    }
}

/// Parse a JSON body into `T` (request types reject unknown fields). An
/// empty body is `T::default()` when `empty_ok`.
pub(crate) fn parse_json<T: DeserializeOwned + Default>(
    body: &Bytes,
    empty_ok: bool,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(T::default())
        } else {
            Err(ApiError::MalformedBody(
                "the body is empty; a JSON object was expected".into(),
            ))
        };
    }
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedBody(e.to_string()))
}
