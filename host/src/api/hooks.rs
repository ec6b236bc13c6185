//! `POST /hooks/{workflow}`: the HTTP adapter of webhook triggers. The
//! signature check, the replay log and the run are
//! [`crate::triggers::webhook`]'s; this handler reads the request, counts
//! bad signatures as failed authentication of the sender's address, wakes
//! the queue and answers.
//!
//! `?wait=true` (or `?wait=30s`) answers with the finished run, else `202`
//! with the run id.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::dto::{RunDocument, RunSummary};
use super::names::WorkflowName;
use super::openapi::ErrorBody;
use super::runs::finished_or_accepted;
use super::wait::wait_for_run;
use super::{ApiError, ApiState, Body};
use crate::triggers::TriggerError;
use crate::triggers::webhook::{self, SIGNATURE_HEADER};

/// The default wait for `?wait=true`.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Query of `POST /hooks/{workflow}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HookQuery {
    /// `true`, `false` or a duration (`30s`).
    wait: Option<String>,
}

/// `POST /hooks/{workflow}`.
#[utoipa::path(post, path = "/hooks/{workflow}", tag = "webhooks", security(()), params(("workflow" = String, Path, description = "Workflow name"), ("wait" = Option<String>, Query, description = "`true` or a duration: answer with the finished run"), ("X-OmniFlow-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>`")), request_body(content = serde_json::Value, description = "Any JSON (else text): `trigger.payload`"), responses((status = 200, description = "The finished run (sync)", body = RunDocument), (status = 202, description = "Queued: the run id", body = RunSummary), (status = 401, description = "Bad or missing signature", body = ErrorBody), (status = 409, description = "Signature replayed", body = ErrorBody), (status = 404, description = "No such resource", body = ErrorBody)))]
pub(super) async fn receive(
    State(state): State<ApiState>,
    WorkflowName(name): WorkflowName,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    q: Result<Query<HookQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let q = q
        .map(|Query(q)| q)
        .map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let wait = match q.wait.as_deref() {
        None | Some("false") => None,
        Some("true") => Some(DEFAULT_WAIT),
        Some(text) => Some(
            humantime::parse_duration(text)
                .map_err(|e| ApiError::InvalidRequest(format!("wait={text:?}: {e}")))?,
        ),
    };
    let store = state.store().as_ref();
    let secret = webhook::secret_for(store, state.executor().secrets(), &name)
        .await?
        .ok_or_else(|| TriggerError::NoWebhook(name.clone()))?;
    // Bad signatures count as failed authentication for the sender's
    // address (`429` after too many), like bad bearer tokens.
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    if let Some(peer) = peer {
        state.auth_failures().check(peer)?;
    }
    let now = SystemTime::now();
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let verified = match webhook::verify(signature, &secret, &body.0, now) {
        Ok(verified) => verified,
        Err(e) => {
            if let Some(peer) = peer {
                state.auth_failures().record(peer);
            }
            return Err(TriggerError::from(e).into());
        }
    };
    let run = webhook::accept(store, &name, &verified, &body.0, now).await?;
    state.queue().wake();
    match wait {
        None => Ok((StatusCode::ACCEPTED, Json(RunSummary::from(&run))).into_response()),
        Some(wait) => {
            let run = wait_for_run(&state, run.id, wait.min(state.config().max_wait)).await?;
            finished_or_accepted(&state, &run).await
        }
    }
}
