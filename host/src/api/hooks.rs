//! `POST /hooks/{workflow}`: webhook triggers, authenticated by an
//! HMAC-SHA256 signature with the workflow's webhook secret.
//!
//! Signature header (Stripe-style):
//!
//! ```text
//! X-OmniFlow-Signature: t=<unix seconds>,v1=<hex hmac-sha256(secret, "<t>.<raw body>")>
//! ```
//!
//! A signature is accepted once, within [`REPLAY_WINDOW`] of `t` (either
//! side, for clock skew); the same signature again is `409 replayed`. The
//! secret is the one `PUT /api/v1/workflows/{name}/webhook` returned or,
//! failing that, the secret named by the workflow's
//! `"trigger": {"type": "webhook", "secret_env": "NAME"}`.
//!
//! The body becomes `trigger.payload` (parsed JSON, else the text; empty is
//! null). `?wait=true` (or `?wait=30s`) answers with the finished run, else
//! `202` with the run id.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use super::names::WorkflowName;
use super::openapi::ErrorBody;
use super::runs::{finished_or_accepted, new_run};
use super::wait::{run_summary, wait_for_run};
use super::{ApiError, ApiState, Body};
use crate::store::Priority;
use crate::workflow::{Trigger, Workflow};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-omniflow-signature";

/// How far `t` may be from now.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);

/// The default wait for `?wait=true`.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The header value for `body` sent at `unix_seconds`: `t=...,v1=...`.
pub fn sign_webhook(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac(secret, unix_seconds, body).finalize().into_bytes())
    )
}

fn mac(secret: &str, unix_seconds: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Query of `POST /hooks/{workflow}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HookQuery {
    /// `true`, `false` or a duration (`30s`).
    wait: Option<String>,
}

/// Parse `t=<unix>,v1=<hex>[,v1=<hex>...]`.
fn parse_signature(header: &str) -> Option<(u64, Vec<Vec<u8>>)> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        match key {
            "t" => t = Some(value.parse().ok()?),
            "v1" => signatures.push(hex::decode(value).ok()?),
            _ => {} // future schemes
        }
    }
    Some((t?, signatures)).filter(|(_, s)| !s.is_empty())
}

async fn secret_for(state: &ApiState, name: &str) -> Result<Option<String>, ApiError> {
    if let Some(secret) = state.store().webhook_secret(name).await? {
        return Ok(Some(secret));
    }
    let Some(stored) = state.store().get_workflow(name, None).await? else {
        return Ok(None);
    };
    let env = Workflow::from_json(&stored.definition.to_string())
        .ok()
        .and_then(|w| match w.trigger {
            Some(Trigger::Webhook { secret_env }) => secret_env,
            _ => None,
        });
    Ok(env.and_then(|name| {
        state
            .executor()
            .config
            .secrets
            .get(&name)
            .map(|s| s.expose_secret().to_owned())
    }))
}

/// The signature's time and the matching signature, or why it is refused.
fn verify(
    headers: &HeaderMap,
    secret: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<(u64, Vec<u8>), ApiError> {
    let header = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::BadSignature(
            "missing X-OmniFlow-Signature header",
        ))?;
    let (t, signatures) = parse_signature(header).ok_or(ApiError::BadSignature(
        "malformed X-OmniFlow-Signature: expected t=<unix seconds>,v1=<hex>",
    ))?;
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if now_s.abs_diff(t) > REPLAY_WINDOW.as_secs() {
        return Err(ApiError::BadSignature(
            "the signature timestamp is outside the 5-minute window",
        ));
    }
    let expected = mac(secret, t, body);
    let matched = signatures
        .into_iter()
        .find(|sig| expected.clone().verify_slice(sig).is_ok())
        .ok_or(ApiError::BadSignature("the signature does not match"))?;
    Ok((t, matched))
}

/// `POST /hooks/{workflow}`.
#[utoipa::path(post, path = "/hooks/{workflow}", tag = "webhooks", security(()), params(("workflow" = String, Path, description = "Workflow name"), ("wait" = Option<String>, Query, description = "`true` or a duration: answer with the finished run"), ("X-OmniFlow-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>`")), request_body(content = serde_json::Value, description = "Any JSON (else text): `trigger.payload`"), responses((status = 200, description = "The finished run (sync)", body = serde_json::Value), (status = 202, description = "Queued: the run id", body = serde_json::Value), (status = 401, description = "Bad or missing signature", body = ErrorBody), (status = 409, description = "Signature replayed", body = ErrorBody), (status = 404, description = "No such resource", body = ErrorBody)))]
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
    let secret = secret_for(&state, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no webhook for workflow {name:?}")))?;
    // Bad signatures count as failed authentication for the sender's
    // address (`429` after too many), like bad bearer tokens.
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    if let Some(peer) = peer {
        state.auth_failures().check(peer)?;
    }
    let now = SystemTime::now();
    let (t, matched) = match verify(&headers, &secret, &body.0, now) {
        Ok(verified) => verified,
        Err(e) => {
            if let Some(peer) = peer {
                state.auth_failures().record(peer);
            }
            return Err(e);
        }
    };
    let fresh = state
        .store()
        .record_delivery(
            &format!("{name}:{t}:{}", hex::encode(matched)),
            &name,
            now,
            now - 2 * REPLAY_WINDOW,
        )
        .await?;
    if !fresh {
        return Err(ApiError::Replayed);
    }
    let payload = if body.0.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body.0)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body.0).into_owned()))
    };
    let workflow = state
        .store()
        .get_workflow(&name, None)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workflow {name:?}")))?;
    let run = state
        .store()
        .create_run(new_run(
            &workflow,
            "webhook",
            payload,
            Default::default(),
            Priority::Normal,
        ))
        .await?;
    state.queue().wake();
    match wait {
        None => Ok((StatusCode::ACCEPTED, Json(run_summary(&run))).into_response()),
        Some(wait) => {
            let run = wait_for_run(&state, run.id, wait.min(state.config().max_wait)).await?;
            finished_or_accepted(&state, &run).await
        }
    }
}
