//! Bearer-token authentication.
//!
//! Tokens are random (`of_` + 64 hex digits); only their SHA-256 is stored.
//! A presented token is hashed and looked up by hash, so the secret itself
//! is never compared byte by byte: timing reveals at most something about
//! a digest the caller cannot steer, which is the usual constant-time
//! argument for hashed API keys.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};

/// A new random API token: `of_` followed by 64 hex digits (256 bits).
pub fn generate_token() -> String {
    format!("of_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// The stored form of a token: hex SHA-256 of its text.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Middleware: let the request through only with an active bearer token.
pub(super) async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`",
        ))?;
    match state.store().active_token(&hash_token(token)).await? {
        Some(_) => Ok(next.run(request).await),
        None => Err(ApiError::Unauthorized("unknown or revoked token")),
    }
}
