//! Webhook triggers: a delivery to `POST /hooks/{workflow}`, authenticated
//! by an HMAC-SHA256 signature with the workflow's webhook secret. The
//! HTTP handler (`api/hooks.rs`) is a thin adapter over this module.
//!
//! Signature header (Stripe-style):
//!
//! ```text
//! X-OmniFlow-Signature: t=<unix seconds>,v1=<hex hmac-sha256(secret, "<t>.<raw body>")>
//! ```
//!
//! A signature is accepted once, within [`REPLAY_WINDOW`] of `t` (either
//! side, for clock skew); the same signature again is
//! [`TriggerError::Replayed`]. The secret is the one stored for the workflow
//! (`PUT /api/v1/workflows/{name}/webhook`) or, failing that, the secret
//! named by the workflow's `"trigger": {"type": "webhook", "secret_env": "NAME"}`.
//!
//! The body becomes `trigger.payload` (parsed JSON, else the text; empty is
//! null).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde_json::Value;
use sha2::Sha256;

use super::{RunRequest, TriggerError, TriggerKind, start_saved};
use crate::capabilities::secrets::Secrets;
use crate::store::{RunRecord, Store, StoreError};
use crate::workflow::{Trigger, Workflow};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-omniflow-signature";

/// How far `t` may be from now.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(300);

/// Why a delivery's signature is refused. The sender's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header.
    #[error("missing X-OmniFlow-Signature header")]
    Missing,
    /// The header is not `t=<unix seconds>,v1=<hex>`.
    #[error("malformed X-OmniFlow-Signature: expected t=<unix seconds>,v1=<hex>")]
    Malformed,
    /// `t` is further from now than [`REPLAY_WINDOW`].
    #[error("the signature timestamp is outside the 5-minute window")]
    OutsideWindow,
    /// No `v1` signature matches.
    #[error("the signature does not match")]
    Mismatch,
}

impl SignatureError {
    /// The message, as a static string.
    pub fn message(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing X-OmniFlow-Signature header",
            SignatureError::Malformed => {
                "malformed X-OmniFlow-Signature: expected t=<unix seconds>,v1=<hex>"
            }
            SignatureError::OutsideWindow => {
                "the signature timestamp is outside the 5-minute window"
            }
            SignatureError::Mismatch => "the signature does not match",
        }
    }
}

/// A signature that matched: its time and its bytes (the delivery's
/// identity in the replay log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed time (unix seconds).
    pub t: u64,
    /// The matching `v1` signature.
    pub signature: Vec<u8>,
}

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

/// The webhook secret of workflow `name`: the stored one, else the secret
/// its definition's trigger names (`secret_env`) among `secrets`; `None`
/// when it has neither (or does not exist).
pub async fn secret_for(
    store: &dyn Store,
    secrets: &Secrets,
    name: &str,
) -> Result<Option<String>, StoreError> {
    if let Some(secret) = store.webhook_secret(name).await? {
        return Ok(Some(secret));
    }
    let Some(stored) = store.get_workflow(name, None).await? else {
        return Ok(None);
    };
    let env = Workflow::from_json(&stored.definition.to_string())
        .ok()
        .and_then(|w| match w.trigger {
            Some(Trigger::Webhook { secret_env }) => secret_env,
            _ => None,
        });
    Ok(env.and_then(|name| secrets.get(&name).map(|s| s.expose_secret().to_owned())))
}

/// Check the signature `header` (the value of [`SIGNATURE_HEADER`], if
/// sent) of `body` with `secret` at `now`.
pub fn verify(
    header: Option<&str>,
    secret: &str,
    body: &[u8],
    now: SystemTime,
) -> Result<Verified, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let (t, signatures) = parse_signature(header).ok_or(SignatureError::Malformed)?;
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if now_s.abs_diff(t) > REPLAY_WINDOW.as_secs() {
        return Err(SignatureError::OutsideWindow);
    }
    let expected = mac(secret, t, body);
    let signature = signatures
        .into_iter()
        .find(|sig| expected.clone().verify_slice(sig).is_ok())
        .ok_or(SignatureError::Mismatch)?;
    Ok(Verified { t, signature })
}

/// `trigger.payload` of a delivery: the body as JSON, else as text; an
/// empty (or blank) body is null.
pub fn payload(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    }
}

/// Accept a verified delivery to workflow `name`: record it in the replay
/// log (refused as [`TriggerError::Replayed`] when seen before) and queue a
/// webhook run of the workflow's newest version with the body as payload.
/// The caller wakes the queue.
pub async fn accept(
    store: &dyn Store,
    name: &str,
    verified: &Verified,
    body: &[u8],
    now: SystemTime,
) -> Result<RunRecord, TriggerError> {
    let fresh = store
        .record_delivery(
            &format!("{name}:{}:{}", verified.t, hex::encode(&verified.signature)),
            name,
            now,
            now - 2 * REPLAY_WINDOW,
        )
        .await?;
    if !fresh {
        return Err(TriggerError::Replayed);
    }
    start_saved(
        store,
        name,
        RunRequest::new(TriggerKind::Webhook, payload(body)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    #[test]
    fn a_signature_verifies_once_in_its_window_and_names_what_is_wrong() {
        let now = 1_800_000_000;
        let header = sign_webhook("s3cret", now, b"{\"a\":1}");
        let verified = verify(Some(&header), "s3cret", b"{\"a\":1}", at(now + 10)).unwrap();
        assert_eq!(verified.t, now);
        assert_eq!(
            verify(None, "s3cret", b"", at(now)),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some("t=1"), "s3cret", b"", at(now)),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some(&header), "s3cret", b"{\"a\":1}", at(now + 301)),
            Err(SignatureError::OutsideWindow)
        );
        assert_eq!(
            verify(Some(&header), "other", b"{\"a\":1}", at(now)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), "s3cret", b"{\"a\":2}", at(now)),
            Err(SignatureError::Mismatch)
        );
        for e in [
            SignatureError::Missing,
            SignatureError::Malformed,
            SignatureError::OutsideWindow,
            SignatureError::Mismatch,
        ] {
            assert_eq!(e.message(), e.to_string());
        }
    }

    #[test]
    fn the_body_becomes_the_payload() {
        assert_eq!(payload(b" \n"), Value::Null);
        assert_eq!(payload(b"{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(payload(b"plain text"), Value::String("plain text".into()));
    }
}
